"""WSGI apps behind the whole gate: `ConsentMiddleware(a2wsgi.WSGIMiddleware(app), config=...)`, for
Flask and for Django under WSGI. Inside the views `get_consent`, `@requires_consent` and the nonce
(Jinja2's `csp_nonce(request)`, Django's `{{ csp_nonce }}`) work on the framework's own request,
whose WSGI environ holds the ASGI scope; the app's cookies are filtered, its page gets the policy,
the banner and neutralised trackers, and a body it streams is passed on as it comes."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from a2wsgi import WSGIMiddleware
from django.core.wsgi import get_wsgi_application

from consent_banner import ConsentConfig, ConsentMiddleware, csp_nonce, get_consent

from .conftest import ORIGIN
from .support import frameworks
from .support.frameworks import COLLECT_PATHS, django_settings, flask_app


@pytest.fixture(params=["flask", "django"])
def framework(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "django":
        with django_settings():
            yield "django"
    else:
        yield "flask"


@pytest.fixture
async def app(framework: str, config: ConsentConfig) -> AsyncIterator[ConsentMiddleware]:
    wsgi = flask_app() if framework == "flask" else get_wsgi_application()
    mw = ConsentMiddleware(WSGIMiddleware(wsgi), config=config)  # type: ignore[arg-type]
    yield mw
    await mw.close()


@pytest.fixture
async def client(app: ConsentMiddleware) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN) as c:
        yield c


async def decide(c: httpx.AsyncClient, action: str) -> None:
    r = await c.post("/_consent", json={"action": action}, headers={"origin": ORIGIN})
    assert r.status_code == 200, r.text


def set_cookies(r: httpx.Response) -> dict[str, str]:
    return {v.split("=", 1)[0]: v for v in r.headers.get_list("set-cookie")}


async def test_views_read_the_consent_and_requires_consent_gates_them(
    client: httpx.AsyncClient, framework: str
) -> None:
    """R35: get_consent on Flask's and Django's WSGI request; @requires_consent answers 204 in the
    framework's response class, and either way the response is private (the mark reached the gate
    through the environ)."""
    r = await client.get("/whoami")
    assert r.json() == {"decided": False, "analytics": False, "marketing": False}
    assert "private" in r.headers["cache-control"] and "Cookie" in r.headers["vary"]
    # Django's every kind of view (async ones run by Django's WSGI handler in an event loop of its own).
    views = {"/collect": "flask", "/collect/async": "flask async"} if framework == "flask" else COLLECT_PATHS
    for path in views:
        refused = await client.get(path)
        assert refused.status_code == 204 and refused.content == b"", (path, refused.text)
        assert "private" in refused.headers["cache-control"]
    await decide(client, "accept_all")
    assert (await client.get("/whoami")).json() == {"decided": True, "analytics": True, "marketing": True}
    for path, kind in views.items():
        counted = await client.get(path)
        assert counted.json() == {"counted": kind}, path
        assert "private" in counted.headers["cache-control"]


async def test_the_page_is_gated_and_its_template_has_the_policys_nonce(client: httpx.AsyncClient) -> None:
    """R2, R3 under WSGI: trackers neutralised, the banner injected, the app's marketing cookie dropped;
    the app's own inline script carries the nonce of the policy sent with it."""
    r = await client.get("/?utm_source=mail")
    policy = r.headers["content-security-policy"]
    nonce = re.search(r"'nonce-([^']+)'", policy)
    assert nonce, policy
    assert f'<script nonce="{nonce.group(1)}">window.appInline = ' in r.text  # the app's inline script runs
    assert ' src="https://stats.example.net/s.js"' not in r.text
    assert 'data-consent-src="https://stats.example.net/s.js"' in r.text
    assert 'data-consent-src="https://ads.example.com/px.gif"' in r.text
    assert 'id="cb-banner"' in r.text  # injected before </body>
    cookies = set_cookies(r)
    assert "booking_session" in cookies and "_ads" not in cookies  # undecided: marketing's cookie dropped
    assert "private" in r.headers["cache-control"]


async def test_the_apps_marketing_cookie_passes_once_granted_and_is_expired_on_reject(
    client: httpx.AsyncClient,
) -> None:
    """R3, R16 under WSGI: the app's HttpOnly marketing cookie passes once granted; after Reject all
    the request that still carries it gets it expired."""
    await decide(client, "accept_all")
    granted = await client.get("/?utm_source=mail")
    assert "_ads" in set_cookies(granted) and "HttpOnly" in set_cookies(granted)["_ads"]
    client.cookies.set("_ads", "mail")  # what the browser keeps (the declared domain aside)
    await decide(client, "reject_all")
    r = await client.get("/?utm_source=again")
    expiries = [v for v in r.headers.get_list("set-cookie") if v.startswith("_ads=")]
    assert expiries and all("Max-Age=0" in v or "expires=Thu, 01 Jan 1970" in v for v in expiries), expiries


async def test_a_streamed_body_that_is_not_html_is_passed_on_as_it_comes(app: ConsentMiddleware) -> None:
    """The generator's second chunk waits until the first reached the client: a gate (or adapter)
    that buffered the body would see "held back" after STREAM_WAIT seconds instead."""
    frameworks.RELEASE.clear()
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and b"first chunk" in message.get("body", b""):
            frameworks.RELEASE.set()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": "/stream", "raw_path": b"/stream", "root_path": "", "query_string": b"",
        "headers": [(b"host", b"testserver")], "client": ("127.0.0.1", 1234), "server": ("testserver", 80),
    }
    await asyncio.wait_for(app(scope, receive, send), 3 * frameworks.STREAM_WAIT)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert body == b"first chunk\nreleased\n"
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200


def test_a_wsgi_environ_without_the_middleware_says_how_to_add_it() -> None:
    environ = {"wsgi.version": (1, 0), "REQUEST_METHOD": "GET", "PATH_INFO": "/"}
    with pytest.raises(RuntimeError, match=r"a2wsgi\.WSGIMiddleware"):
        get_consent(environ)


@pytest.mark.parametrize("ask", [get_consent, csp_nonce])
def test_something_that_is_no_request_is_named(ask: Callable[[Any], Any]) -> None:
    with pytest.raises(TypeError, match="not int"):
        ask(42)


async def test_a_bare_wsgi_app_reads_the_consent_from_its_environ(config: ConsentConfig) -> None:
    def bare(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        consent = get_consent(environ)
        start_response("200 OK", [("content-type", "text/plain")])
        return [b"decided" if consent.decided else b"undecided"]

    mw = ConsentMiddleware(WSGIMiddleware(bare), config=config)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=mw), base_url=ORIGIN) as c:
        r = await c.get("/")
        # A visitor's header cannot stand in for the scope: a2wsgi names headers HTTP_*.
        forged = await c.get("/", headers={"asgi.scope": "x", "wsgi.version": "x"})
    await mw.close()
    assert r.text == "undecided" and "private" in r.headers["cache-control"]
    assert forged.text == "undecided"
