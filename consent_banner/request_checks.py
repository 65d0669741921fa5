"""What a request to the consent endpoints must pass before it is read (R34): its origin and its size;
and which origin is this site's own (`SiteOrigins`), the one answer wherever the package needs it.

A decision is accepted from this site (an ``Origin`` that is this site's, or ``Sec-Fetch-Site:
same-origin``) or from one of the configured `allowed_origins` (an embedding site, answered with
CORS); anything else is refused before its body is read. Bodies are read up to a limit, and a
``Content-Length`` over it is refused without reading at all.

This site's origin is what the browser sees. Without `site_origins` it is the request's scheme and
Host; behind a TLS-terminating proxy those are the proxy's (``http``, ``app:8000``), so an operator
lists the origins the site is served at and they alone count: the ``Origin`` check, whether cookies
are Secure under ``__Host-`` names, which host expiries are written for, and 'self' in a merged CSP.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from starlette.requests import Request

from .errors import DecisionError

Scope = Mapping[str, Any]
_SECURE_SCHEMES = frozenset({"https", "wss"})


def _host_header(scope: Scope) -> str | None:
    for key, value in scope.get("headers") or ():
        if key == b"host":
            return str(value.decode("latin-1"))
    return None


def _hostname(host: str) -> str:
    """The host of a ``host[:port]`` (a Host header, an origin's authority), lower case."""
    name = host[: host.find("]") + 1] if host.startswith("[") else host.rpartition(":")[0] or host
    return name.lower().rstrip(".")


class SiteOrigins:
    """This site's own origins as the browser sees them: the configured `site_origins` (normalised by
    the config as browsers write ``Origin``), or, when there are none, the request's scheme and Host."""

    __slots__ = ("origins", "https", "_set", "_hosts", "_host_names")

    def __init__(self, site_origins: Collection[str] | None = None) -> None:
        self.origins: tuple[str, ...] = tuple(site_origins or ())
        self._set = frozenset(self.origins)
        self._hosts = {o: _hostname(o.split("://", 1)[1]) for o in self.origins}
        self._host_names = frozenset(self._hosts.values())
        # Every origin https: the browser is on https whatever scheme the app was told (a proxy that
        # terminates TLS, an ASGI server not told to trust it), so cookies are Secure and __Host-.
        self.https = bool(self.origins) and all(o.startswith("https://") for o in self.origins)

    def own(self, origin: str, scope: Scope) -> bool:
        """Is an ``Origin`` header value this site's? Configured: one of them, whatever the request's
        scheme and Host say (a rebound DNS name or a forged Host proves nothing)."""
        origin = origin.lower()
        if self._set:
            return origin in self._set
        return origin == f"{scope.get('scheme', 'http')}://{_host_header(scope) or ''}".lower()

    def secure(self, scope: Scope) -> bool:
        """Is the browser on https: every site origin is, or the request came over https (or wss)?"""
        return self.https or scope.get("scheme") in _SECURE_SCHEMES

    def host(self, scope: Scope) -> str | None:
        """The request's Host as far as cookies go (which parent ``Domain=`` an expiry may name); None,
        unknown, when site origins are configured and the Host is none of theirs (a proxy rewrote it):
        an expiry then names the declared domain too, and a browser not on it ignores that one."""
        host = _host_header(scope)
        if not self.origins or host is None:
            return host
        return host if _hostname(host) in self._host_names else None

    def origin(self, scope: Scope) -> str | None:
        """The page's origin ('self' of a Content-Security-Policy): configured, the one of the request's
        host (and scheme, if several), else the first listed; otherwise the request's scheme and Host."""
        host = _host_header(scope)
        scheme = scope.get("scheme", "http")
        if not self.origins:
            return f"{scheme}://{host}".lower() if host else None
        name = _hostname(host) if host else None
        mine = [o for o in self.origins if self._hosts[o] == name] or list(self.origins)
        return next((o for o in mine if o.startswith(f"{scheme}://")), mine[0])


class OriginPolicy:
    """Which origins may post decisions: this site, and the configured other ones."""

    __slots__ = ("allowed", "site")

    def __init__(self, allowed_origins: Collection[str], site: SiteOrigins | None = None) -> None:
        self.allowed = allowed_origins
        self.site = site or SiteOrigins()

    def cross_origin(self, request: Request) -> str | None:
        """The allowed foreign origin this request comes from, if any."""
        origin = request.headers.get("origin")
        if origin and origin in self.allowed and not self.site.own(origin, request.scope):
            return origin
        return None

    def check(self, request: Request) -> str | None:
        """None for a same-origin request, the origin for an allowed one; refuses everything else."""
        origin = request.headers.get("origin")
        if origin is not None:
            if self.site.own(origin, request.scope):
                return None
            if origin in self.allowed:
                return origin
            raise DecisionError(403, f"cross-site decision refused: origin {origin!r} is not allowed")
        site = request.headers.get("sec-fetch-site")
        if site == "same-origin":
            return None
        if site is not None:
            raise DecisionError(403, f"cross-site decision refused: Sec-Fetch-Site is {site!r}")
        raise DecisionError(403, "decision refused: the request carries neither Origin nor Sec-Fetch-Site")


def media_type(request: Request) -> str:
    """The request's Content-Type without its parameters, lowercased."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 past `limit` bytes (before reading, when the length says so)."""
    length = request.headers.get("content-length")
    if length is not None and (not (length.isascii() and length.isdigit()) or int(length) > limit):
        raise DecisionError(413, f"the body is limited to {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise DecisionError(413, f"the body is limited to {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
