"""`ProxyApp`: the site behind `consent-banner proxy`, any HTTP server, reached as a streaming reverse proxy.

``ConsentMiddleware(ProxyApp(upstream, site_origins=config.site_origins), config=config)`` puts the
whole gate in front of a site in any language: the middleware answers the consent routes under the
prefix itself (they never reach the upstream) and gates what comes back; this app only carries bytes.

- **Bodies stream both ways** at constant memory (`bodies.py`): the request body is read from
  ``receive`` as the upstream takes it, the response is relayed chunk by chunk (``aiter_raw``) with
  the ASGI server's flow control; one httpx ``AsyncClient`` per app keeps upstream connections
  alive, in pools of 8 (`pools.py`: httpcore's per-request work grows with a pool's connections). An
  HTML page whose length is known and at most 512 KB is read whole and passed in one message: the
  gate replays a page it has rewritten before only from a whole body (`gate/pages.py`), at a
  fraction of the cost of parsing it again.
- **Headers.** Hop-by-hop fields go both ways (``Connection`` and those it names, ``Keep-Alive``,
  ``TE``, ``Trailer``, ``Transfer-Encoding``, ``Upgrade``, ``Proxy-*``). The upstream gets the public
  ``Host`` (the browser's, or with `site_origins` the listed one it matches, else the first): sites
  build links, redirects and cookie domains from it, and an upstream address in them would send the
  browser around the gate. It gets ``X-Forwarded-For/-Proto/-Host`` and ``Forwarded`` written from
  what this server resolved (the ASGI server's client and scheme: uvicorn takes them from a trusted
  front's headers, ``--forwarded-allow-ips``, and ignores anyone else's); a client's own forwarding
  fields (and ``X-Real-IP``) are dropped, never passed on. The browser's cookies pass; the client keeps
  no cookie jar, so nothing one visitor is sent reaches another.
- **Uncompressed HTML.** The upstream is asked for ``Accept-Encoding: identity`` (compression is the
  front server's job, after the gate). HTML an upstream compresses anyway with gzip or deflate is
  decompressed here, in pieces of at most 64 KB whatever the ratio (a gzip bomb stays small), so the
  gate sees and rewrites plain HTML; any other coding passes untouched and the gate gives it a policy
  admitting only granted origins. Other bodies pass as they are.
- **Redirects are not followed**: the browser follows them through the gate. A ``Location`` naming
  the upstream's own origin becomes a path on this site (that address is internal, and a browser
  sent there would bypass the gate); every other ``Location`` passes.
- **Failures.** A Host that is not a plain host[:port] (without `site_origins`): 400. A request body
  that stalls for the read timeout: 408, and the upstream request is abandoned (a slow client would
  otherwise hold an upstream connection for as long as it likes); a client that reads nothing of a
  response for the write timeout: the response is abandoned, the upstream transfer stopped. Upstream
  down, refused or broken before its headers: 502; no headers within the read timeout: 504; each a
  short page (HTML, or JSON for a client that asks for it), no traceback. A body broken midway
  ends the connection, so a truncated download never looks complete.
- **Not relayed**: response trailers (``TE`` is dropped, so the upstream knows they are not wanted)
  and ``Expect: 100-continue`` (the ASGI server answers 100 when the body is first read).
- **WebSockets** pass through (`websocket.py`, with `websockets`), both directions, close codes
  relayed; the middleware gates the handshake's cookies as for any app (`gate/handshake.py`). A
  handshake the upstream refuses is answered with its status and headers, redirects included,
  never followed.

Longer than about 400 lines: the HTTP relay and every header rule it applies are one contract with
the upstream, kept on one page; bodies, pools and the WebSocket relay are the modules beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
from collections.abc import Collection, Iterable
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from starlette.types import Receive, Scope, Send

from ..request_checks import SiteOrigins
from .bodies import (
    HTML,
    BodyReader,
    ClientGone,
    ClientStalled,
    at_once,
    disconnected,
    inflated,
    pump,
    whole_page,
)
from .pools import pools
from .websocket import WS_HANDSHAKE, WS_MAX_SIZE, no_redirects, relay_websocket

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger("consent_banner.proxy")

MISSING_EXTRA = "consent-banner proxy needs httpx and websockets: pip install 'consent-banner[proxy]'"

# Hop-by-hop fields (RFC 9110 7.6.1), and the forwarding fields only this proxy may write.
HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"te", b"trailer", b"transfer-encoding", b"upgrade", b"proxy-connection"}
)
FORWARDING = frozenset(
    {b"forwarded", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-real-ip"}
)
DECODED = frozenset({b"gzip", b"x-gzip", b"deflate"})  # decoded here with zlib, in bounded pieces (bodies.py)
# A Host this proxy passes on: a name or IPv4 address, or an IPv6 literal, and a port.
_HOST = re.compile(rb"(?:[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


class UpstreamBroken(Exception):
    """The upstream failed after the response started: the connection to the client is ended."""


class ProxyApp:
    """An ASGI app that answers every request from `upstream` (``http[s]://host[:port][/base]``).

    `site_origins`: the config's, to name the public Host (see the module docstring). Timeouts in
    seconds: `connect_timeout` to open a connection, `read_timeout` between bytes (also the wait for
    the response's headers: 504 after it; and between chunks of the client's request body: 408),
    `write_timeout` between bytes sent (to the upstream, and of the response to a client that
    stopped reading it: abandoned). `max_connections` to the upstream at once, `keepalive` of
    them kept open when idle.
    """

    def __init__(
        self,
        upstream: str,
        *,
        site_origins: Collection[str] | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        write_timeout: float = 60.0,
        max_connections: int = 100,
        keepalive: int = 100,
    ) -> None:
        try:
            import httpx  # noqa: F401
            import websockets  # noqa: F401
        except ModuleNotFoundError as e:
            raise ModuleNotFoundError(MISSING_EXTRA) from e
        self.upstream = _upstream(upstream)
        parts = urlsplit(self.upstream)
        self._scheme, self._netloc = parts.scheme, parts.netloc
        self._host, self._port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
        self._base = parts.path.rstrip("/").encode()
        self.site = SiteOrigins(site_origins)
        self._timeouts = (connect_timeout, read_timeout, write_timeout)
        self._limits = (max_connections, keepalive)
        self._client: httpx.AsyncClient | None = None

    # --- ASGI ---------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def aclose(self) -> None:
        """Closes the upstream connections (on lifespan shutdown; call it when there is none)."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def client(self) -> httpx.AsyncClient:
        """The one httpx client, made on first use (on the server's event loop)."""
        if self._client is None:
            import httpx

            connect, read, write = self._timeouts
            connections, keepalive = self._limits
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(connect=connect, read=read, write=write, pool=connect),
                transport=pools()(connections, keepalive),
                follow_redirects=False,
                trust_env=False,  # never an HTTP_PROXY of the environment between us and the upstream
                # A jar that keeps nothing: one visitor's cookie must never go out with another's request.
                cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
            )
            for name in ("user-agent", "accept"):  # httpx's defaults: the upstream gets the browser's only
                del self._client.headers[name]
        return self._client

    # --- HTTP ---------------------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        import httpx

        if self.bad_host(scope):
            await self._failure(scope, send, 400, "was asked for a host name that is not one")
            return
        headers = self.request_headers(scope)
        has_body = any(k in (b"content-length", b"transfer-encoding") for k, _ in scope["headers"])
        reader = BodyReader(receive, idle=self._timeouts[1])
        client = self.client()
        try:
            request = client.build_request(
                scope["method"],
                self.url(scope, ws=False),
                headers=headers,
                content=reader.chunks() if has_body else None,
            )
            response = await client.send(request, stream=True)
        except ClientGone:
            return
        except ClientStalled:
            await self._failure(scope, send, 408, "did not receive the rest of the request in time")
            return
        except httpx.ReadTimeout:
            await self._failure(scope, send, 504, "did not answer in time")
            return
        except (httpx.TransportError, httpx.InvalidURL) as e:
            logger.warning("upstream %s failed: %s %s", self.upstream, type(e).__name__, e)
            await self._failure(scope, send, 502, "is not answering")
            return
        try:
            await self._relay(scope, receive, send, response, reader.done or not has_body)
        finally:
            await response.aclose()

    async def _relay(
        self, scope: Scope, receive: Receive, send: Send, response: httpx.Response, read_all: bool
    ) -> None:
        import httpx

        headers, codings = self.response_headers(response.headers.raw)
        await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
        if not codings and whole_page(headers):
            stream = asyncio.ensure_future(at_once(response, send))
        else:
            stream = asyncio.ensure_future(
                pump(
                    inflated(response.aiter_raw(), codings) if codings else response.aiter_raw(),
                    send,
                    idle=self._timeouts[2],
                )
            )
        # Once the request body is read, the next message is the client leaving: stop reading then.
        gone = asyncio.ensure_future(disconnected(receive)) if read_all else None
        try:
            await asyncio.wait(
                [t for t in (stream, gone) if t is not None], return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for task in (stream, gone):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        if stream.cancelled():
            return  # the client left
        error = stream.exception()
        if isinstance(error, TimeoutError):
            # The client took nothing for the write timeout: the upstream transfer is dropped (the
            # response is closed on return) and the server ends the unfinished response.
            logger.info("a client read nothing of %s for %s s: abandoned", scope["path"], self._timeouts[2])
            return
        if isinstance(error, httpx.HTTPError):
            # The status and part of the body are out: ending the connection is the only honest answer.
            logger.warning(
                "upstream %s broke off a response: %s %s", self.upstream, type(error).__name__, error
            )
            raise UpstreamBroken(str(error)) from error
        if error is not None:
            raise error

    async def _failure(self, scope: Scope, send: Send, status: int, what: str) -> None:
        """A short page for a failed upstream: no traceback, no upstream address."""
        reasons = {400: "Bad Request", 408: "Request Timeout", 502: "Bad Gateway", 504: "Gateway Timeout"}
        reason = reasons[status]
        accept = _header(scope, b"accept") or b""
        if b"json" in accept.split(b",", 1)[0]:
            body = b'{"error": "the site %s", "status": %d}' % (what.encode(), status)
            kind = b"application/json"
        else:
            body = (
                b"<!doctype html><html lang=en><meta charset=utf-8><title>%d %s</title>"
                b"<h1>%s</h1><p>The site %s. Please try again in a moment.</p></html>"
                % (status, reason.encode(), reason.encode(), what.encode())
            )
            kind = b"text/html; charset=utf-8"
        headers = [
            (b"content-type", kind),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    # --- headers ------------------------------------------------------------------------------------

    def url(self, scope: Scope, *, ws: bool) -> str:
        """The upstream URL of a request: its path as the browser sent it, under the upstream's base."""
        path = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string") or b""
        target = self._base + path + (b"?" + query if query else b"")
        scheme = ("wss" if self._scheme == "https" else "ws") if ws else self._scheme
        return f"{scheme}://{self._netloc}{target.decode('latin-1')}"

    def public(self, scope: Scope) -> tuple[str, str]:
        """(scheme, Host) as the browser has them: with `site_origins`, the listed origin the Host names
        (else the first, so a forged Host never reaches the upstream); otherwise this request's."""
        scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
        host = (_header(scope, b"host") or b"").decode("latin-1")
        if self.site.origins:
            origin = self.site.origin({**scope, "scheme": scheme}) or self.site.origins[0]
            scheme, host = origin.split("://", 1)
        return scheme, host

    def bad_host(self, scope: Scope) -> bool:
        """Without `site_origins`, the Host is passed on (and quoted in ``Forwarded``): one that is not
        a plain host[:port] (a quote, a comma, a space) could forge the upstream's reading of either."""
        return not self.site.origins and _HOST.fullmatch(_header(scope, b"host") or b"") is None

    def request_headers(
        self, scope: Scope, *, drop: frozenset[bytes] = frozenset()
    ) -> list[tuple[bytes, bytes]]:
        """The request's fields for the upstream: hop-by-hop, forwarding and `drop` fields out, the
        public Host and this proxy's forwarding fields in, identity encoding asked for."""
        raw: list[tuple[bytes, bytes]] = scope["headers"]
        gone = _hop_by_hop(raw) | FORWARDING | drop | {b"host", b"accept-encoding", b"expect"}
        if any(k == b"transfer-encoding" for k, _ in raw):
            # The server framed the body by its chunks and ignored a Content-Length beside them (a
            # smuggler's pair): passed on, it would frame the upstream's copy instead (a 500 from httpx,
            # or a body cut to its length). Without it httpx frames the body anew.
            gone |= {b"content-length"}
        out = [(k, v) for k, v in raw if k not in gone and not k.startswith(b"proxy-")]
        scheme, host = self.public(scope)
        address = _address(scope.get("client"))
        node = f'"[{address}]"' if ":" in address else address  # RFC 7239: IPv6 quoted in brackets
        out += [
            (b"host", host.encode("latin-1")),
            (b"accept-encoding", b"identity"),
            (b"x-forwarded-for", address.encode("latin-1")),
            (b"x-forwarded-proto", scheme.encode()),
            (b"x-forwarded-host", host.encode("latin-1")),
            (b"forwarded", f'for={node};proto={scheme};host="{host}"'.encode("latin-1")),
        ]
        return out

    def response_headers(
        self, raw: Iterable[tuple[bytes, bytes]]
    ) -> tuple[list[tuple[bytes, bytes]], list[bytes]]:
        """The upstream's response fields for the client, and the codings to decode its body from, in
        the order applied (HTML compressed with gzip/deflate: the gate must read it, so it leaves
        uncompressed; none for any other body)."""
        fields = [(k.lower(), v) for k, v in raw]
        gone = _hop_by_hop(fields)
        out = [(k, v) for k, v in fields if k not in gone and not k.startswith(b"proxy-")]
        kind = next((v for k, v in out if k == b"content-type"), b"").split(b";", 1)[0].strip().lower()
        codings = [
            c.strip().lower() for k, v in out if k == b"content-encoding" for c in v.split(b",") if c.strip()
        ]
        codings = [c for c in codings if c != b"identity"]
        decode = kind in HTML and bool(codings) and all(c in DECODED for c in codings)
        if decode:
            out = [(k, v) for k, v in out if k not in (b"content-encoding", b"content-length")]
        return [(k, self._location(v) if k == b"location" else v) for k, v in out], codings if decode else []

    def _location(self, value: bytes) -> bytes:
        """A redirect to the upstream's own origin, as a path on this site; any other passes."""
        text = value.decode("latin-1").strip()
        try:
            parts = urlsplit(text)
            port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        except ValueError:
            return value
        if (parts.scheme.lower(), parts.hostname, port) != (self._scheme, self._host, self._port):
            return value
        path = parts.path or "/"
        if self._base and (path == self._base.decode() or path.startswith(self._base.decode() + "/")):
            path = path[len(self._base) :] or "/"
        if path[1:2] in ("/", "\\"):
            # `//host/x` (or `/\\host/x`, a backslash being a slash to a browser) alone would name another
            # host: an open redirect made of one that, unproxied, stayed on the upstream. `/.//host/x`
            # is the same path on this site.
            path = "/." + path
        return (
            path
            + (f"?{parts.query}" if parts.query else "")
            + (f"#{parts.fragment}" if parts.fragment else "")
        ).encode("latin-1")

    # --- WebSocket ----------------------------------------------------------------------------------

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        from websockets.exceptions import InvalidHandshake, InvalidStatus

        if (await receive())["type"] != "websocket.connect":
            return
        if self.bad_host(scope):
            await self._refused(scope, send, 400, [], b"")
            return
        scheme, host = self.public(scope)
        uri = (
            f"{'wss' if scheme == 'https' else 'ws'}://{host}"
            + self.url(scope, ws=True).split(self._netloc, 1)[1]
        )
        headers = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in self.request_headers(scope, drop=WS_HANDSHAKE)
            if k not in (b"host", b"accept-encoding")
        ]
        tls: dict[str, Any] = {"server_hostname": self._host} if self._scheme == "https" else {}
        connector = no_redirects()(
            uri,
            additional_headers=headers,
            subprotocols=list(scope.get("subprotocols") or ()) or None,
            user_agent_header=None,
            proxy=None,
            open_timeout=self._timeouts[0] + self._timeouts[1],
            max_size=WS_MAX_SIZE,
            host=self._host,
            port=self._port,
            **tls,
        )
        try:
            upstream = await connector
        except InvalidStatus as e:
            await self._refused(
                scope,
                send,
                e.response.status_code,
                e.response.headers.raw_items(),
                bytes(e.response.body or b""),
            )
            return
        except (OSError, TimeoutError, InvalidHandshake) as e:
            logger.warning("upstream %s refused a WebSocket: %s %s", self.upstream, type(e).__name__, e)
            await self._refused(scope, send, 502, [], b"")
            return
        async with upstream:
            assert upstream.response is not None  # the handshake is done
            kept = [
                (k.lower().encode("latin-1"), v.encode("latin-1"))
                for k, v in upstream.response.headers.raw_items()
                if k.lower()
                not in (
                    "connection",
                    "upgrade",
                    "sec-websocket-accept",
                    "sec-websocket-extensions",
                    "sec-websocket-protocol",
                )
            ]
            kept = [(k, v) for k, v in kept if k not in _hop_by_hop(kept)]
            await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol, "headers": kept})
            await relay_websocket(upstream, receive, send)

    async def _refused(
        self, scope: Scope, send: Send, status: int, headers: Iterable[tuple[str, str]], body: bytes
    ) -> None:
        """A handshake the upstream refused (or could not take): its status and headers when the server
        can send a response (the ASGI denial-response extension), else a plain close (403)."""
        if "websocket.http.response" not in (scope.get("extensions") or {}):
            await send({"type": "websocket.close", "code": 1014 if status >= 500 else 1008})
            return
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        fields, _ = self.response_headers(raw)
        fields = [(k, v) for k, v in fields if k not in (b"content-length", b"content-encoding")]
        await send({"type": "websocket.http.response.start", "status": status, "headers": fields})
        await send({"type": "websocket.http.response.body", "body": body})


# --- helpers --------------------------------------------------------------------------------------------


def _upstream(url: str) -> str:
    """The upstream URL, checked: http or https, a host, no query, fragment or user name."""
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError as e:
        raise ValueError(f"upstream {url!r} is not a URL: {e}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"upstream {url!r}: write http://host[:port] or https://host[:port]")
    if parts.query or parts.fragment or parts.username is not None or parts.password is not None:
        raise ValueError(f"upstream {url!r}: no user name, query or fragment")
    return url.strip().rstrip("/")


def _address(client: Any) -> str:
    """The client's IP address as the ASGI server resolved it, or ``unknown`` (a Unix socket, or a value
    that is no address: uvicorn trusting every client, ``--forwarded-allow-ips '*'``, takes the first
    X-Forwarded-For entry as it comes, and ``1.2.3.4;host=evil`` would add a field to ``Forwarded``)."""
    try:
        address = ipaddress.ip_address(client[0]) if client else None
    except ValueError:
        return "unknown"
    # An IPv6 scope (`fe80::1%zone`) is any text at all: an address with one is not passed on.
    return "unknown" if address is None or getattr(address, "scope_id", None) else str(address)


def _hop_by_hop(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """The hop-by-hop fields of a message: the fixed ones and those its Connection fields name."""
    named = {
        token.strip().lower()
        for k, v in headers
        if k.lower() == b"connection"
        for token in v.split(b",")
        if token.strip()
    }
    return HOP_BY_HOP | named


def _header(scope: Scope, name: bytes) -> bytes | None:
    for k, v in scope["headers"]:
        if k == name:
            return bytes(v)
    return None
