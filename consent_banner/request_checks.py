"""What a request to the consent endpoints must pass before it is read (R34): its origin and its size.

A decision is accepted from this site (an ``Origin`` of this host, or ``Sec-Fetch-Site: same-origin``)
or from one of the configured `allowed_origins` (an embedding site, answered with CORS); anything else
is refused before its body is read. Bodies are read up to a limit, and a ``Content-Length`` over it is
refused without reading at all.
"""

from __future__ import annotations

from collections.abc import Collection

from starlette.requests import Request

from .errors import DecisionError


class OriginPolicy:
    """Which origins may post decisions: this site, and the configured other ones."""

    __slots__ = ("allowed",)

    def __init__(self, allowed_origins: Collection[str]) -> None:
        self.allowed = allowed_origins

    @staticmethod
    def own_origin(request: Request) -> str:
        return f"{request.url.scheme}://{request.headers.get('host', '')}".lower()

    def cross_origin(self, request: Request) -> str | None:
        """The allowed foreign origin this request comes from, if any."""
        origin = request.headers.get("origin")
        if origin and origin.lower() != self.own_origin(request) and origin in self.allowed:
            return origin
        return None

    def check(self, request: Request) -> str | None:
        """None for a same-origin request, the origin for an allowed one; refuses everything else."""
        origin = request.headers.get("origin")
        if origin is not None:
            if origin.lower() == self.own_origin(request):
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
