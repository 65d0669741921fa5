"""Red team, issue 16 (every stack gets the gate): a hostile visitor and a hostile upstream against
`consent-banner proxy`, and odd WSGI apps behind the gate.

Real sockets on loopback: the proxy is `ConsentMiddleware(ProxyApp(...))` under uvicorn as the CLI runs
it (h11: httptools is not installed, and the h11 parser is the one these framing attacks meet), the
upstream a Starlette app under uvicorn or, for what no well-behaved server sends, a raw socket server.
WSGI apps go through a2wsgi as the README spells it.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import SplitResult, urljoin, urlsplit

import httpx
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
    out = b""
    with socket.create_connection((host, int(port)), timeout=seconds) as s:
        # A server refusing a request may close before reading all of it: a reset ends the exchange.
        with contextlib.suppress(TimeoutError, ConnectionResetError, BrokenPipeError):
            s.sendall(raw)
            while chunk := s.recv(65536):
                out += chunk
    return out


def browser_join(base: str, reference: str) -> SplitResult:
    """`reference` resolved against `base` as a browser does for http(s): tabs and newlines dropped,
    a backslash read as a slash (the WHATWG URL standard), then RFC 3986."""
    cleaned = re.sub(r"[\t\n\r]", "", reference).replace("\\", "/")
    return urlsplit(urljoin(base, cleaned))


@contextmanager
def raw_server(answer: Callable[[int], bytes], *, keep_open: float = 0.0) -> Iterator[str]:
    """A server answering each connection's first request with `answer(its own port)`, then closing it
    (after `keep_open` seconds): what no well-behaved server sends."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            with contextlib.suppress(OSError):
                conn.sendall(answer(port))
                stop.wait(keep_open)

    def run() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        thread.join(5)
        listener.close()


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


# --- a hostile visitor: framing ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "head",
    [
        # Which field frames the body is the smuggler's question (with both Content-Length and chunked,
        # the chunks do: test_content_length_beside_chunked_framing_is_not_passed_on).
        b"POST /a HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\n",
        b"POST /a HTTP/1.1\r\nHost: shop.example\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
        b"POST /a HTTP/1.1\r\nHost: shop.example\r\nTransfer-Encoding : chunked\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: shop.example\r\nX-A: 1\x00\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: shop.example\r\nX-A: 1\rX-B: 2\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: shop.example\r\nX-A: " + b"a" * 1024 * 1024 + b"\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: shop.example\r\n" + b"X-A: b\r\n" * 20_000 + b"\r\n",
    ],
    ids=["cl-cl", "te-list", "te-space", "nul", "bare-cr", "1mb-header", "many-headers"],
)
def test_an_ambiguous_or_oversized_request_is_refused_before_the_upstream(
    site: str, upstream: tuple[str, Seen], head: bytes
) -> None:
    """Held (uvicorn's h11 parser): a request whose framing two parsers could read two ways, a header
    with a control character, a 1 MB header or 20,000 headers is answered 4xx by the proxy's own server
    and the connection closed; nothing reaches the upstream, so no second request hides in a body."""
    before = list(upstream[1].http)
    answer = exchange(site, head + b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: shop.example\r\n\r\n")
    if answer:  # else the server reset the connection while the 1 MB was still coming: refused too
        assert answer.split(b" ", 2)[1].startswith(b"4"), answer[:200]
        assert answer.count(b"HTTP/1.1 ") == 1
    assert upstream[1].http == before


def test_content_length_beside_chunked_framing_is_not_passed_on(
    site: str, upstream: tuple[str, Seen]
) -> None:
    """h11 (uvicorn's parser) frames a body sent with both Transfer-Encoding: chunked and Content-Length by
    its chunks, as RFC 9112 6.3 says. The proxy passed the Content-Length on with the de-chunked body:
    httpx refused the mismatch midway (500, the upstream left holding a request cut short), and a body
    longer than the field would have been cut to it. Now the proxy frames the body itself: the upstream
    gets the chunks' bytes, all of them, and one request."""
    before = len(upstream[1].http)
    raw = (
        b"POST /cl-te HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"b\r\nhello world\r\n0\r\n\r\n"
    )
    answer = exchange(site, raw)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]
    assert b'"size":11' in answer
    assert upstream[1].http[before:] == ["POST /cl-te"]


def test_an_obs_folded_header_reaches_the_upstream_unfolded(site: str) -> None:
    """Held: a folded header line (obs-fold) is joined by the proxy's parser into one value and sent on
    unfolded: the upstream cannot read the continuation as a header of its own."""
    raw = b"GET /fold HTTP/1.1\r\nHost: shop.example\r\nX-A: 1\r\n X-B: 2\r\nConnection: close\r\n\r\n"
    answer = exchange(site, raw)
    assert answer.startswith(b"HTTP/1.1 200 ")
    body = answer.split(b"\r\n\r\n", 1)[1]
    assert b'["x-a","1 X-B: 2"]' in body and b'["x-b"' not in body


def test_pipelined_requests_are_answered_each_by_its_own_response(
    site: str, upstream: tuple[str, Seen]
) -> None:
    """Held: three requests in one write (one with a body) get three responses in order, each for its own
    path, and the upstream sees exactly those three."""
    raw = (
        b"GET /p1 HTTP/1.1\r\nHost: shop.example\r\n\r\n"
        b"POST /p2 HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 5\r\n\r\nhello"
        b"GET /p3 HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n"
    )
    answer = exchange(site, raw)
    assert answer.count(b"HTTP/1.1 200") == 3
    paths = [answer.index(b'"path":"/p%d"' % i) for i in (1, 2, 3)]
    assert paths == sorted(paths)
    assert b'"size":5' in answer
    assert upstream[1].http[-3:] == ["GET /p1", "POST /p2", "GET /p3"]


def test_http_1_0_keep_alive_is_not_passed_on_as_the_upstreams_connection_field(site: str) -> None:
    """Held: an HTTP/1.0 client's `Connection: keep-alive` (and what it names) is hop-by-hop: the upstream
    gets none of it, so the client cannot steer the proxy's connection to it."""
    raw = b"GET /h HTTP/1.0\r\nHost: shop.example\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\n\r\n"
    answer = exchange(site, raw, seconds=2)
    assert b" 200 " in answer.split(b"\r\n", 1)[0]
    body = answer.split(b"\r\n\r\n", 1)[1].lower()
    assert b"x-secret" not in body
    assert body.count(b'"connection"') == 1 and b'["connection","keep-alive"]' in body  # httpx's own hop


# --- a hostile visitor: slow and large bodies -----------------------------------------------------------


def test_a_request_body_that_stalls_is_answered_408_and_frees_the_upstream_connection(
    site: str, upstream: tuple[str, Seen]
) -> None:
    """Slow loris: headers announcing a body, a few bytes, then nothing. The proxy read the body with no
    deadline, holding an upstream connection as long as the client kept the socket open: a hundred such
    clients took every connection (max_connections) and everyone else got 502. Now a body that sends
    nothing for the read timeout (1 s here) gets 408 and the upstream request ends."""
    host, port = site.removeprefix("http://").split(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"POST /loris HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 100000\r\n\r\n" + b"x" * 10)
        answer = s.recv(65536)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert time.monotonic() - started < 5
    for _ in range(100):
        if "/loris" in upstream[1].cut:
            break
        time.sleep(0.05)
    assert "/loris" in upstream[1].cut


def test_a_slow_but_steady_upload_still_passes(site: str) -> None:
    """The deadline is between chunks, not on the whole body: an upload trickling in under it passes."""

    def trickle() -> Iterator[bytes]:
        for _ in range(4):
            time.sleep(0.4)
            yield b"y" * 1000

    r = httpx.post(f"{site}/steady", content=trickle(), timeout=10)
    assert r.status_code == 200 and r.json()["size"] == 4000


# --- a hostile upstream: redirects ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "location",
    [b"UP//evil.example/x", b"UP/\\evil.example/x", b"UP//evil.example"],
    ids=["double-slash", "backslash", "bare"],
)
def test_a_redirect_to_the_upstream_never_becomes_one_to_another_host(
    config: ConsentConfig, location: bytes
) -> None:
    """A Location naming the upstream's own origin becomes a path on this site. Its path `//evil.example/x`
    (or `/\\evil.example`) became a Location of `//evil.example/x`, which a
    browser reads as another host: the rewrite made an open redirect out of a redirect that, unproxied,
    stayed on the upstream. Now the path is kept a path (`/.//evil.example/x` resolves to the path
    `//evil.example/x` on this site)."""

    def answer(port: int) -> bytes:
        target = location.replace(b"UP", b"http://127.0.0.1:%d" % port)
        return b"HTTP/1.1 302 Found\r\nLocation: " + target + b"\r\nContent-Length: 0\r\n\r\n"

    with raw_server(answer) as up, proxy(up, config) as url:
        r = httpx.get(f"{url}/go")
    assert r.status_code == 302
    resolved = browser_join(f"{url}/go", r.headers["location"])
    assert (resolved.hostname, resolved.port) == ("127.0.0.1", int(url.rsplit(":", 1)[1])), resolved
    assert resolved.path.rstrip("/x").endswith("evil.example")


def test_a_location_with_a_control_character_is_a_502(config: ConsentConfig) -> None:
    """Held (httpx): a Location with a tab (which browsers drop, `/\t/evil.example` being `//evil.example`)
    or a bare CR is refused by the client before the proxy sees it: 502, nothing passed on."""
    for location in (b"/\t/evil.example/x", b"/x\rSet-Cookie: a=b"):

        def answer(port: int, location: bytes = location) -> bytes:
            return b"HTTP/1.1 302 Found\r\nLocation: " + location + b"\r\nContent-Length: 0\r\n\r\n"

        with raw_server(answer) as up, proxy(up, config) as url:
            r = httpx.get(f"{url}/go")
        assert r.status_code == 502 and "location" not in r.headers
        assert not [c for c in r.headers.get_list("set-cookie") if c.startswith("a=")]
