"""Issue 12 item 8: WebSocket handshakes get the visitor's consent and obey the cookie gate."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from consent_banner import ConsentConfig, ConsentMiddleware, get_consent, requires_consent

from .conftest import ORIGIN

ACCEPT_COOKIES = [
    (b"set-cookie", b"_ads=campaign; Path=/; Max-Age=3600"),  # marketing
    (b"set-cookie", b"_st_ses=1; Path=/"),  # analytics
    (b"set-cookie", b"booking_session=s; Path=/; HttpOnly"),  # necessary
]


async def chat(websocket: WebSocket) -> None:
    consent = get_consent(websocket)
    await websocket.accept(headers=ACCEPT_COOKIES)
    await websocket.send_json({"decided": consent.decided, "analytics": consent.allows("analytics")})
    await websocket.close()


@requires_consent("analytics")
async def live_stats(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("counting")
    await websocket.close()


async def refused(websocket: WebSocket) -> None:
    await websocket.send_denial_response(
        PlainTextResponse("no", status_code=403, headers={"set-cookie": "_ads=x; Path=/"})
    )


@pytest.fixture
def client(config: ConsentConfig):  # type: ignore[no-untyped-def]
    inner = Starlette(
        routes=[
            WebSocketRoute("/chat", chat),
            WebSocketRoute("/live", live_stats),
            WebSocketRoute("/no", refused),
        ]
    )
    with TestClient(ConsentMiddleware(inner, config=config), base_url=ORIGIN) as c:
        yield c


def decided(client: TestClient, action: str) -> str:
    r = client.post("/_consent", json={"action": action}, headers={"origin": ORIGIN})
    assert r.status_code == 200
    value = r.cookies["consent"]
    client.cookies.clear()
    return f"consent={value}"


def handshake_cookies(client: TestClient, path: str, cookie: str) -> tuple[list[str], dict]:
    with client.websocket_connect(path, headers={"cookie": cookie}) as ws:
        names = [v.decode().split("=", 1)[0] for k, v in ws.extra_headers or [] if k == b"set-cookie"]
        return names, ws.receive_json()


def test_handshake_after_reject_sets_no_denied_cookie(client: TestClient) -> None:
    names, state = handshake_cookies(client, "/chat", decided(client, "reject_all"))
    assert names == ["booking_session"]
    assert state == {"decided": True, "analytics": False}


def test_handshake_of_an_undecided_visitor_sets_only_necessary_cookies(client: TestClient) -> None:
    names, state = handshake_cookies(client, "/chat", "")
    assert names == ["booking_session"] and state == {"decided": False, "analytics": False}


def test_handshake_after_accept_sets_what_was_granted(client: TestClient) -> None:
    names, state = handshake_cookies(client, "/chat", decided(client, "accept_all"))
    assert names == ["_ads", "_st_ses", "booking_session"] and state == {"decided": True, "analytics": True}


def test_handshake_expires_denied_cookies_the_browser_still_sends(client: TestClient) -> None:
    cookie = decided(client, "reject_all") + "; _st_ses=1; _ads=2"
    with client.websocket_connect("/chat", headers={"cookie": cookie}) as ws:
        values = [v.decode() for k, v in ws.extra_headers or [] if k == b"set-cookie"]
    assert [v.split(";")[0] for v in values] == ["_st_ses=", "_ads=", "booking_session=s"]
    assert all("Max-Age=0" in v for v in values[:2])


def test_refused_handshake_response_is_gated_too(client: TestClient) -> None:
    with pytest.raises(WebSocketDenialResponse) as refusal:
        with client.websocket_connect("/no"):
            pass
    assert refusal.value.status_code == 403 and "set-cookie" not in refusal.value.headers


def test_requires_consent_refuses_the_handshake_without_consent(client: TestClient) -> None:
    with pytest.raises(WebSocketDisconnect) as refusal:
        with client.websocket_connect("/live", headers={"cookie": decided(client, "reject_all")}):
            pass
    assert refusal.value.code == 1008
    with client.websocket_connect("/live", headers={"cookie": decided(client, "accept_all")}) as ws:
        assert ws.receive_text() == "counting"
