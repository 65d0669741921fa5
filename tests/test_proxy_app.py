"""`ProxyApp` behind ConsentMiddleware (issue 16, `consent-banner proxy`): real servers on loopback.

The upstream is a Starlette app under uvicorn (or, for what no well-behaved server sends, a raw
socket server); the proxy is `ConsentMiddleware(ProxyApp(...))` under uvicorn too, as the CLI runs it,
so headers, streaming, timeouts and WebSockets cross real sockets. Both run in threads of the test
process, so the memory of a 50 MB transfer both ways is measured with tracemalloc.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import socket
import textwrap
import threading
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.responses import StreamingResponse as Streaming
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from consent_banner import ConsentConfig, ConsentMiddleware
from consent_banner.proxy import ProxyApp

from .conftest import KEY, MODEL_TOML
from .support.servers import free_port, wait_for_port

MB = 1024 * 1024
TRACKER = '<script src="https://ads.example.com/t.js"></script>'
PAGE = f"<!doctype html><html lang=en><head><title>p</title>{TRACKER}</head><body><p>shop</p></body></html>"


# --- the upstream ---------------------------------------------------------------------------------------


class Seen:
    """What the upstream saw: request paths, and the close code of the last WebSocket."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.ws_close: int | None = None
        self.big_sent: list[int] = []  # per download: bytes the upstream sent before it ended


def upstream_app(seen: Seen, port: int) -> Starlette:
    async def headers(request: Request) -> JSONResponse:
        seen.paths.append(request.url.path)
        return JSONResponse({"headers": request.headers.items(), "path": request.scope["raw_path"].decode()})

    async def page(request: Request) -> HTMLResponse:
        seen.paths.append(request.url.path)
        r = HTMLResponse(PAGE)
        r.set_cookie("_ads", "campaign", httponly=True)  # marketing
        r.set_cookie("booking_session", "s1", httponly=True)  # necessary
        return r

    async def long_page(request: Request) -> HTMLResponse:
        filler = "<p>row</p>" * (int(request.query_params["kb"]) * 1024 // 10)
        return HTMLResponse(PAGE.replace("<p>shop</p>", filler))

    async def gzipped(request: Request) -> Response:  # compresses whatever it was asked
        return Response(
            gzip.compress(PAGE.encode()), media_type="text/html", headers={"content-encoding": "gzip"}
        )

    async def brotli(request: Request) -> Response:  # a coding the proxy does not decode
        return Response(
            b"\x8b\x02\x80not-really-br", media_type="text/html", headers={"content-encoding": "br"}
        )

    async def redirect(request: Request) -> Response:
        target = request.query_params["to"].replace("UPSTREAM", f"http://127.0.0.1:{port}")
        return RedirectResponse(target, status_code=302)

    async def big(request: Request) -> Streaming:
        size = int(request.query_params["mb"]) * MB

        async def chunks() -> AsyncIterator[bytes]:
            block, sent = bytes(range(256)) * 256, 0  # 64 KB
            try:
                for _ in range(size // len(block)):
                    if await request.is_disconnected():  # uvicorn's send to a gone peer just returns
                        break
                    yield block
                    sent += len(block)
            finally:
                seen.big_sent.append(sent)

        return Streaming(
            chunks(), media_type="application/octet-stream", headers={"content-length": str(size)}
        )

    async def upload(request: Request) -> JSONResponse:
        digest, size = hashlib.sha256(), 0
        async for chunk in request.stream():
            digest.update(chunk)
            size += len(chunk)
        return JSONResponse({"size": size, "sha256": digest.hexdigest()})

    async def slow(request: Request) -> PlainTextResponse:
        await asyncio.sleep(3)
        return PlainTextResponse("late")

    async def hop(request: Request) -> PlainTextResponse:
        return PlainTextResponse(
            "ok",
            headers={"connection": "x-up", "x-up": "secret", "keep-alive": "timeout=5", "proxy-agent": "u"},
        )

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept(
            headers=[(b"set-cookie", b"_ads=ws; Path=/"), (b"set-cookie", b"booking_session=ws; Path=/")]
        )
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    seen.ws_close = message.get("code")
                    return
                if message.get("text") == "close":
                    await websocket.close(4001, "bye")
                    return
                if message.get("text") is not None:
                    await websocket.send_text("echo:" + message["text"])
                else:
                    await websocket.send_bytes(message["bytes"][::-1])
        except WebSocketDisconnect as e:
            seen.ws_close = e.code

    async def refuse(websocket: WebSocket) -> None:
        await websocket.send_denial_response(PlainTextResponse("no entry", status_code=403))

    return Starlette(
        routes=[
            Route("/headers", headers, methods=["GET", "POST"]),
            Route("/{any:path}/headers", headers),
            Route("/page", page),
            Route("/long", long_page),
            Route("/gzip", gzipped),
            Route("/br", brotli),
            Route("/redirect", redirect),
            Route("/big", big),
            Route("/upload", upload, methods=["POST", "PUT"]),
            Route("/slow", slow),
            Route("/hop", hop),
            WebSocketRoute("/ws", echo),
            WebSocketRoute("/refuse", refuse),
        ]
    )


@contextmanager
def serving(app: Any, **options: Any) -> Iterator[str]:
    """uvicorn serving `app` on a free loopback port in a thread; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="error", lifespan="on", **options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for_port("127.0.0.1", port, server=thread)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> ConsentConfig:
    return _config(tmp_path_factory.mktemp("proxy"))


def _config(tmp: Path, **changes: Any) -> ConsentConfig:
    path = tmp / "consent.toml"
    path.write_text(textwrap.dedent(MODEL_TOML.format(db=tmp / "log.db")))
    base = ConsentConfig.from_toml(path)
    return ConsentConfig.from_dict({**base.model_dump(), **changes}) if changes else base


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, Seen]]:
    seen = Seen()
    port = free_port()
    app = upstream_app(seen, port)
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="error", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for_port("127.0.0.1", port, server=thread)
        yield f"http://127.0.0.1:{port}", seen
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def proxy(
    upstream: str, config: ConsentConfig, *, trusted: str = "127.0.0.1", **options: Any
) -> Iterator[str]:
    app = ConsentMiddleware(
        ProxyApp(upstream, site_origins=config.site_origins, **options), config=config, secret_keys=[KEY]
    )
    with serving(app, forwarded_allow_ips=trusted, server_header=False, date_header=False) as url:
        yield url


@pytest.fixture(scope="module")
def site(upstream: tuple[str, Seen], config: ConsentConfig) -> Iterator[str]:
    with proxy(upstream[0], config, read_timeout=1.0) as url:
        yield url


def fields(response: httpx.Response) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, v in response.json()["headers"]:
        out.setdefault(k, []).append(v)
    return out


# --- headers --------------------------------------------------------------------------------------------


def test_the_upstream_gets_the_public_host_and_the_forwarding_fields_the_proxy_saw(site: str) -> None:
    """The browser's Host passes (sites build links from it); X-Forwarded-For/-Proto/-Host and
    Forwarded say who the proxy served; identity encoding is asked for."""
    r = httpx.get(f"{site}/headers?q=1", headers={"host": "shop.example", "accept-encoding": "gzip, br"})
    seen = fields(r)
    assert seen["host"] == ["shop.example"]
    assert seen["x-forwarded-for"] == ["127.0.0.1"] and seen["x-forwarded-proto"] == ["http"]
    assert seen["x-forwarded-host"] == ["shop.example"]
    assert seen["forwarded"] == ['for=127.0.0.1;proto=http;host="shop.example"']
    assert seen["accept-encoding"] == ["identity"]
    assert "user-agent" in seen and not any("httpx" in v for v in seen.get("accept", []))
    assert r.json()["path"] == "/headers"


def test_a_hostile_client_cannot_forge_forwarding_fields(
    upstream: tuple[str, Seen], config: ConsentConfig
) -> None:
    """A client that is not a trusted proxy: its X-Forwarded-*, Forwarded and X-Real-IP never reach
    the upstream; the upstream is told the address the proxy saw."""
    forged = {
        "x-forwarded-for": "6.6.6.6",
        "x-forwarded-proto": "https",
        "x-forwarded-host": "bank.example",
        "forwarded": "for=6.6.6.6;proto=https",
        "x-real-ip": "6.6.6.6",
    }
    with proxy(upstream[0], config, trusted="10.9.9.9") as url:
        seen = fields(httpx.get(f"{url}/headers", headers=forged))
    assert seen["x-forwarded-for"] == ["127.0.0.1"] and seen["x-forwarded-proto"] == ["http"]
    assert seen["forwarded"] == ['for=127.0.0.1;proto=http;host="' + url.split("//")[1] + '"']
    assert "x-real-ip" not in seen and "6.6.6.6" not in json.dumps(seen)
    assert seen["x-forwarded-host"] == [url.split("//")[1]]


def test_a_trusted_front_servers_client_address_and_scheme_are_passed_on(site: str) -> None:
    """The peer is trusted (uvicorn's --forwarded-allow-ips): the client and scheme it reports are
    what the upstream is told, as the log and the rate limit count them."""
    headers = {"x-forwarded-for": "203.0.113.9", "x-forwarded-proto": "https", "host": "www.example.com"}
    seen = fields(httpx.get(f"{site}/headers", headers=headers))
    assert seen["x-forwarded-for"] == ["203.0.113.9"] and seen["x-forwarded-proto"] == ["https"]
    assert seen["forwarded"] == ['for=203.0.113.9;proto=https;host="www.example.com"']


def test_with_site_origins_a_forged_host_never_reaches_the_upstream(
    upstream: tuple[str, Seen], tmp_path: Path
) -> None:
    config = _config(tmp_path, site_origins=["https://www.example.com", "https://example.com"])
    with proxy(upstream[0], config, trusted="10.9.9.9") as url:
        forged = fields(httpx.get(f"{url}/headers", headers={"host": "evil.example"}))
        listed = fields(httpx.get(f"{url}/headers", headers={"host": "example.com"}))
    assert forged["host"] == ["www.example.com"] and forged["x-forwarded-proto"] == ["https"]
    assert listed["host"] == ["example.com"] and listed["x-forwarded-host"] == ["example.com"]


def test_hop_by_hop_fields_go_both_ways(site: str) -> None:
    """Connection and the fields it names, Keep-Alive, TE, Proxy-*: each connection's own."""
    sent = {
        "connection": "keep-alive, x-secret",
        "x-secret": "for-the-proxy",
        "keep-alive": "timeout=9",
        "te": "trailers",
        "proxy-authorization": "Basic eDp5",
    }
    seen = fields(httpx.get(f"{site}/headers", headers=sent))
    assert not {"x-secret", "keep-alive", "te", "proxy-authorization"} & set(seen)
    r = httpx.get(f"{site}/hop")
    assert r.text == "ok" and "x-up" not in r.headers and "proxy-agent" not in r.headers
    assert "keep-alive" not in r.headers


def test_one_visitors_cookies_never_reach_the_upstream_with_anothers_request(site: str) -> None:
    with httpx.Client(base_url=site) as first:
        first.get("/page")  # the upstream sets booking_session (necessary) for this visitor
        assert first.cookies.get("booking_session") == "s1"
    seen = fields(httpx.get(f"{site}/headers"))
    assert "cookie" not in seen


def test_the_consent_routes_are_answered_by_the_middleware_never_proxied(
    site: str, upstream: tuple[str, Seen]
) -> None:
    before = list(upstream[1].paths)
    state = httpx.get(f"{site}/_consent/state")
    assert state.status_code == 200 and state.json()["decided"] is False
    assert httpx.get(f"{site}/_consent/nothing").status_code == 404
    assert upstream[1].paths == before


# --- the gate on what comes back ------------------------------------------------------------------------


def test_the_gate_acts_on_the_upstreams_page(site: str) -> None:
    """R3 for any site: undecided, the upstream's marketing cookie is dropped, its tracker neutralised,
    the banner injected."""
    r = httpx.get(f"{site}/page")
    names = [v.split("=", 1)[0] for v in r.headers.get_list("set-cookie")]
    assert "_ads" not in names and "booking_session" in names
    assert 'type="text/plain"' in r.text and 'id="cb-banner"' in r.text
    assert "content-security-policy" in r.headers


def test_a_page_of_known_length_reaches_the_gate_whole_and_a_longer_one_streams(site: str) -> None:
    """Up to 512 KB the gate gets the page in one message (so it can replay a page it rewrote
    before) and sets the rewritten length; a longer page streams through it chunk by chunk."""
    short = httpx.get(f"{site}/long", params={"kb": 100})
    assert short.headers["content-length"] == str(len(short.content)) and 'type="text/plain"' in short.text
    long = httpx.get(f"{site}/long", params={"kb": 600})
    assert "content-length" not in long.headers and long.headers["transfer-encoding"] == "chunked"
    assert 'type="text/plain"' in long.text and len(long.content) > 600 * 1024


def test_compressed_html_is_decompressed_so_the_gate_reads_it(site: str) -> None:
    r = httpx.get(f"{site}/gzip")
    assert "content-encoding" not in r.headers
    assert 'type="text/plain"' in r.text and "<p>shop</p>" in r.text


def test_html_in_a_coding_the_proxy_does_not_decode_passes_untouched(site: str) -> None:
    """It is not rewritten, so the gate's policy admits only granted origins (none, undecided)."""
    r = httpx.get(f"{site}/br", headers={"accept-encoding": "br"})
    assert r.headers["content-encoding"] == "br"
    policy = r.headers["content-security-policy"]
    assert "ads.example.com" not in policy and "stats.example.net" not in policy


# --- redirects and failures -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("to", "location"),
    [
        ("UPSTREAM/next?x=1#top", "/next?x=1#top"),  # the upstream's own address: a path on this site
        ("/relative", "/relative"),
        ("https://accounts.example.org/login", "https://accounts.example.org/login"),
        ("http://127.0.0.1:1/other-port", "http://127.0.0.1:1/other-port"),
    ],
)
def test_redirects_are_passed_not_followed_and_only_the_upstreams_own_origin_is_rewritten(
    site: str, to: str, location: str
) -> None:
    r = httpx.get(f"{site}/redirect", params={"to": to})
    assert r.status_code == 302 and r.headers["location"] == location


@pytest.mark.parametrize("accept", ["text/html", "application/json"])
def test_an_upstream_that_is_down_gets_a_short_502(config: ConsentConfig, accept: str) -> None:
    port = free_port()
    with proxy(f"http://127.0.0.1:{port}", config) as url:
        r = httpx.get(f"{url}/anything", headers={"accept": accept})
    assert r.status_code == 502 and "no-store" in r.headers["cache-control"]
    assert "Traceback" not in r.text and str(port) not in r.text and "ConnectError" not in r.text
    if accept == "application/json":
        assert r.json() == {"error": "the site is not answering", "status": 502}
    else:
        assert "Bad Gateway" in r.text


def test_an_upstream_that_does_not_answer_in_time_gets_a_504(site: str) -> None:
    started = time.monotonic()
    r = httpx.get(f"{site}/slow", timeout=10)
    assert r.status_code == 504 and "Gateway Timeout" in r.text
    assert time.monotonic() - started < 2.5


@contextmanager
def raw_upstream(answer: bytes) -> Iterator[str]:
    """A server that answers every connection with `answer` and closes it: what uvicorn never sends."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                conn.sendall(answer)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def test_a_body_the_upstream_breaks_off_never_arrives_looking_complete(config: ConsentConfig) -> None:
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n"
        + b"x" * 10
    )
    with raw_upstream(answer) as up, proxy(up, config) as url:
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(f"{url}/file")


def test_an_upstream_that_answers_garbage_gets_a_502(config: ConsentConfig) -> None:
    with raw_upstream(b"SMTP ready\r\n\r\n") as up, proxy(up, config) as url:
        r = httpx.get(f"{url}/")
    assert r.status_code == 502


def test_response_hop_by_hop_fields_of_a_raw_upstream_are_dropped(config: ConsentConfig) -> None:
    answer = (
        b"HTTP/1.1 200 OK\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nTrailer: X-Sum\r\n"
        b"Proxy-Authenticate: Basic\r\nUpgrade: h2c\r\n"
        b"Content-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
    )
    with raw_upstream(answer) as up, proxy(up, config) as url:
        r = httpx.get(f"{url}/")
    assert r.text == "ok"
    assert not {"x-hop", "trailer", "proxy-authenticate", "upgrade"} & set(r.headers)


# --- streaming at constant memory ----------------------------------------------------------------------


def test_fifty_megabytes_stream_both_ways_at_constant_memory(site: str) -> None:
    """A 50 MB upload and a 50 MB download through the proxy; the upstream, the proxy and this client
    all run in this process, and its allocations never peak 16 MB above the start."""
    size = 50 * MB
    block = bytes(range(256)) * 256

    def body() -> Iterator[bytes]:
        for _ in range(size // len(block)):
            yield block

    expected = hashlib.sha256()
    for _ in range(size // len(block)):
        expected.update(block)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        with httpx.Client(timeout=60) as c:
            up = c.post(
                f"{site}/upload", content=body(), headers={"content-type": "application/octet-stream"}
            )
            received = 0
            with c.stream("GET", f"{site}/big", params={"mb": 50}) as down:
                for chunk in down.iter_raw():
                    received += len(chunk)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert up.json() == {"size": size, "sha256": expected.hexdigest()}
    assert down.headers["content-length"] == str(size) and received == size
    assert peak < 16 * MB, f"peak {peak / MB:.1f} MB"


def test_a_client_that_leaves_mid_download_stops_the_upstream_transfer(
    site: str, upstream: tuple[str, Seen]
) -> None:
    """The proxy notices the client gone and closes the upstream connection: a client that asks for
    a huge file and hangs up costs the upstream what was read, not the whole file."""
    seen = upstream[1]
    before = len(seen.big_sent)
    with httpx.Client(timeout=30) as c, c.stream("GET", f"{site}/big", params={"mb": 2000}) as r:
        received = 0
        for chunk in r.iter_raw():
            received += len(chunk)
            if received > 4 * MB:
                break
    deadline = time.monotonic() + 10
    while len(seen.big_sent) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(seen.big_sent) == before + 1, "the upstream is still sending"
    assert seen.big_sent[-1] < 200 * MB


def test_a_head_request_gets_the_headers_and_no_body(site: str) -> None:
    r = httpx.head(f"{site}/big", params={"mb": 1})
    assert r.status_code == 200 and r.headers["content-length"] == str(MB) and r.content == b""


def test_a_request_body_of_unknown_length_is_streamed_on(site: str) -> None:
    def body() -> Iterator[bytes]:
        yield b"a" * 100_000
        yield b"b" * 5

    r = httpx.put(f"{site}/upload", content=body())  # chunked: no Content-Length
    assert r.json()["size"] == 100_005


# --- WebSockets -----------------------------------------------------------------------------------------


def ws_url(site: str, path: str) -> str:
    return site.replace("http://", "ws://") + path


async def test_a_websocket_is_relayed_both_ways_with_its_close_codes(
    site: str, upstream: tuple[str, Seen]
) -> None:
    async with connect(ws_url(site, "/ws")) as ws:
        await ws.send("hello")
        assert await ws.recv() == "echo:hello"
        await ws.send(b"\x01\x02\x03")
        assert await ws.recv() == b"\x03\x02\x01"
        await ws.send("close")  # the upstream closes with 4001 "bye"
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    assert ws.close_code == 4001 and ws.close_reason == "bye"

    async with connect(ws_url(site, "/ws")) as ws:
        await ws.send("x")
        await ws.recv()
        await ws.close(4002, "leaving")
    for _ in range(100):
        if upstream[1].ws_close == 4002:
            break
        await asyncio.sleep(0.02)
    assert upstream[1].ws_close == 4002


async def test_the_websocket_handshake_obeys_the_cookie_gate(site: str) -> None:
    async with connect(ws_url(site, "/ws")) as ws:
        assert ws.response is not None
        names = [v.split("=", 1)[0] for k, v in ws.response.headers.raw_items() if k.lower() == "set-cookie"]
    assert names == ["booking_session"]  # _ads (marketing) dropped for an undecided visitor


async def test_a_websocket_the_upstream_refuses_is_refused_with_its_status(site: str) -> None:
    with pytest.raises(InvalidStatus) as e:
        async with connect(ws_url(site, "/refuse")):
            pass
    assert e.value.response.status_code == 403 and e.value.response.body == b"no entry"


async def test_a_websocket_to_an_upstream_that_is_down_is_refused_with_502(config: ConsentConfig) -> None:
    with proxy(f"http://127.0.0.1:{free_port()}", config) as url:
        with pytest.raises(InvalidStatus) as e:
            async with connect(ws_url(url, "/ws")):
                pass
    assert e.value.response.status_code == 502


def test_a_bad_upstream_url_is_refused_naming_it() -> None:
    for bad in ("ftp://x", "127.0.0.1:8080", "http://u:p@x", "http://x/?q=1", "http://x:99999"):
        with pytest.raises(ValueError, match="upstream"):
            ProxyApp(bad)


# --- the command ----------------------------------------------------------------------------------------


def test_the_command_names_a_bad_upstream(toml_path: Path) -> None:
    from click.testing import CliRunner

    from consent_banner.cli import cli

    r = CliRunner().invoke(cli, ["proxy", "--upstream", "ftp://files.example", "--config", str(toml_path)])
    assert r.exit_code == 2 and "--upstream" in r.output and "ftp://files.example" in r.output


def test_the_command_says_which_extra_to_install_when_it_is_missing(
    toml_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from click.testing import CliRunner

    from consent_banner.cli import cli

    monkeypatch.setitem(sys.modules, "websockets", None)  # as if not installed
    r = CliRunner().invoke(cli, ["proxy", "--upstream", "http://127.0.0.1:9", "--config", str(toml_path)])
    assert r.exit_code == 1 and "pip install 'consent-banner[proxy]'" in r.output


@pytest.mark.parametrize(
    "host", ['shop.example";for="6.6.6.6', "shop.example, evil.example", "a b", "x:80:1"]
)
def test_a_host_that_would_forge_the_forwarding_fields_is_refused(site: str, host: str) -> None:
    """Passed on as X-Forwarded-Host and quoted in Forwarded, a Host with a quote or a comma could
    make the upstream read another client or host: without site_origins it is a 400, never proxied."""
    r = httpx.get(f"{site}/headers", headers={"host": host})
    assert r.status_code == 400 and "6.6.6.6" not in r.text


def test_a_request_without_a_host_is_refused(site: str) -> None:
    with socket.create_connection(("127.0.0.1", int(site.rsplit(":", 1)[1]))) as s:
        s.sendall(b"GET /headers HTTP/1.0\r\n\r\n")
        assert s.recv(100).split(b" ", 2)[1] == b"400"


async def test_requests_spread_over_small_pools_and_give_their_place_back(upstream: tuple[str, Seen]) -> None:
    """24 connections are three pools of 8; each request goes to the least busy one and is counted
    there until its response is closed, read to the end or not, and a failed one at once."""
    app = ProxyApp(upstream[0], max_connections=24)
    client = app.client()
    pools = client._transport
    try:
        assert len(pools._pools) == 3  # type: ignore[attr-defined]
        async with client.stream("GET", f"{upstream[0]}/big", params={"mb": 1}) as first:
            async with client.stream("GET", f"{upstream[0]}/big", params={"mb": 1}) as second:
                assert pools._busy == [1, 1, 0]  # type: ignore[attr-defined]
                async for _ in second.aiter_raw():
                    break
            await first.aread()
        await asyncio.gather(*(client.get(f"{upstream[0]}/headers") for _ in range(10)))
        with pytest.raises(httpx.ReadTimeout):
            await client.get(f"{upstream[0]}/slow", timeout=httpx.Timeout(5, read=0.2))
        assert pools._busy == [0, 0, 0]  # type: ignore[attr-defined]
    finally:
        await app.aclose()
