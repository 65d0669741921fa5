"""Red team, issue 16 (every stack gets the gate): a hostile visitor and a hostile upstream against
`consent-banner proxy`, and odd WSGI apps behind the gate.

Real sockets on loopback: the proxy is `ConsentMiddleware(ProxyApp(...))` under uvicorn as the CLI runs
it (h11: httptools is not installed, and the h11 parser is the one these framing attacks meet), the
upstream a Starlette app under uvicorn or, for what no well-behaved server sends, a raw socket server.
WSGI apps go through a2wsgi as the README spells it.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from consent_banner import ConsentConfig, ConsentMiddleware

from ..conftest import KEY
from ..test_proxy_app import _config, proxy, serving

# --- the upstream -----------------------------------------------------------------------------------


class Seen:
    """What the upstream was asked: each HTTP request's method and path, each WebSocket's path, and
    the requests whose body ended early (the proxy gave up on them)."""

    def __init__(self) -> None:
        self.http: list[str] = []
        self.ws: list[str] = []
        self.cut: list[str] = []


def upstream_app(seen: Seen) -> Starlette:
    async def anything(request: Request) -> JSONResponse:
        seen.http.append(f"{request.method} {request.url.path}")
        size = 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
        except Exception:  # the proxy broke off the request body: ClientDisconnect
            seen.cut.append(request.url.path)
            raise
        return JSONResponse({"path": request.url.path, "size": size, "headers": request.headers.items()})

    async def any_ws(websocket: WebSocket) -> None:
        seen.ws.append(websocket.url.path)
        await websocket.accept()
        await websocket.send_text("upstream:" + websocket.url.path)
        await websocket.close()

    return Starlette(
        routes=[
            Route("/{p:path}", anything, methods=["GET", "POST", "PUT"]),
            WebSocketRoute("/{p:path}", any_ws),
        ]
    )


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> ConsentConfig:
    return _config(tmp_path_factory.mktemp("redteam16"))


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, Seen]]:
    seen = Seen()
    with serving(upstream_app(seen)) as url:
        yield url, seen


@pytest.fixture(scope="module")
def site(upstream: tuple[str, Seen], config: ConsentConfig) -> Iterator[str]:
    with proxy(upstream[0], config, read_timeout=1.0) as url:
        yield url


def ws(url: str, path: str) -> str:
    return url.replace("http://", "ws://") + path


def exchange(url: str, raw: bytes, *, seconds: float = 5.0) -> bytes:
    """Sends `raw` on one connection to `url` and reads until the server closes it or goes quiet."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=seconds) as s:
        s.sendall(raw)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except TimeoutError:
            pass
        return out


# --- a WebSocket under the consent prefix -----------------------------------------------------------


async def test_a_websocket_under_the_prefix_never_reaches_the_upstream(
    site: str, upstream: tuple[str, Seen]
) -> None:
    """A consent route is never the app's: the middleware routed the prefix for HTTP only, so a
    handshake to /_consent/... went on to the upstream (or any app), which could answer it as its own
    under the consent's path. Refused with 403, for the proxy and every other app."""
    for path in ("/_consent", "/_consent/", "/_consent/state", "/_consent/x/y"):
        with pytest.raises(InvalidStatus) as e:
            async with connect(ws(site, path)):
                pass
        assert e.value.response.status_code == 403, path
    assert upstream[1].ws == []
    async with connect(ws(site, "/_consentx")) as c:  # only the prefix itself and what is under it
        assert await c.recv() == "upstream:/_consentx"


async def test_a_websocket_under_the_prefix_never_reaches_a_plain_asgi_app(config: ConsentConfig) -> None:
    """The same for an app that is not the proxy, and under a root path (a front server strips it, uvicorn
    puts it back in the scope's path) the prefix is found after it."""
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            seen.append(scope["path"])
            await receive()
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": 1000})

    mw = ConsentMiddleware(app, config=config, secret_keys=[KEY])
    with serving(mw, root_path="/shop") as url:
        with pytest.raises(InvalidStatus) as e:
            async with connect(ws(url, "/_consent/live")):
                pass
        assert e.value.response.status_code == 403
        async with connect(ws(url, "/live")) as c:
            with pytest.raises(ConnectionClosed):
                await c.recv()
    assert seen == ["/shop/live"]
