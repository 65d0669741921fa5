"""Bodies through the proxy: the request's from `receive` as the upstream takes it, the response's
to `send` chunk by chunk (or whole, for a page the gate may replay), and the client's leaving."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from starlette.types import Receive, Send

from ..gate.pages import MAX_PAGE

if TYPE_CHECKING:
    import httpx

HTML = (b"text/html", b"application/xhtml+xml")
WHOLE_PAGE = MAX_PAGE  # bytes: HTML up to this length (known) is read whole, so the gate can replay it


class ClientGone(Exception):
    """The client left while its request body was being sent on."""


class ClientStalled(Exception):
    """The client sent nothing of its request body for the idle time."""


class BodyReader:
    """The request body from `receive`, chunk by chunk, as the upstream takes it; `idle` seconds at
    most between two chunks (ClientStalled), so a client cannot hold an upstream connection open by
    trickling nothing (nginx's client_body_timeout)."""

    def __init__(self, receive: Receive, *, idle: float | None = None) -> None:
        self._receive = receive
        self._idle = idle
        self.done = False

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            try:
                message = await asyncio.wait_for(self._receive(), self._idle)
            except TimeoutError:
                raise ClientStalled from None
            if message["type"] == "http.disconnect":
                raise ClientGone
            body = message.get("body", b"")
            if body:
                yield body
            if not message.get("more_body", False):
                self.done = True
                return


def whole_page(headers: list[tuple[bytes, bytes]]) -> bool:
    """An HTML page of a known length the gate may remember: passed in one message, because the gate
    replays a page it has seen before only when it has the whole body at once (`gate/pages.py`)."""
    kind = length = None
    for k, v in headers:
        if k == b"content-type":
            kind = v.split(b";", 1)[0].strip().lower()
        elif k == b"content-length":
            length = v
    return kind in HTML and length is not None and length.isdigit() and int(length) <= WHOLE_PAGE


async def at_once(response: httpx.Response, send: Send) -> None:
    await send({"type": "http.response.body", "body": await response.aread()})


async def pump(chunks: AsyncIterator[bytes], send: Send, *, idle: float | None = None) -> None:
    """The response body to the client as it comes; a chunk the client takes nothing of for `idle`
    seconds (the server's flow control holds `send` while the client reads nothing) raises
    ClientStalled, so a client that stops reading cannot hold the upstream connection (nginx's
    send_timeout)."""
    async for chunk in chunks:
        if chunk:
            async with asyncio.timeout(idle):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


PIECE = 64 * 1024  # bytes of inflated body at most per message: a gzip bomb inflates a piece at a time


async def inflated(chunks: AsyncIterator[bytes], codings: list[bytes]) -> AsyncIterator[bytes]:
    """The body decoded from `codings` (gzip, x-gzip, deflate; in the order the upstream applied them),
    in pieces of at most PIECE bytes. httpx inflates each chunk it reads whole: 64 KB of a gzip bomb
    became 64 MB at once. A body that is not what it says raises httpx.DecodingError (the upstream
    broke it: the connection is ended)."""
    for coding in reversed(codings):
        chunks = _inflate(chunks, coding)
    async for piece in chunks:
        yield piece


async def _inflate(chunks: AsyncIterator[bytes], coding: bytes) -> AsyncIterator[bytes]:
    import httpx

    gzip = coding != b"deflate"
    decoder = zlib.decompressobj(zlib.MAX_WBITS | 16 if gzip else zlib.MAX_WBITS)
    started = False
    try:
        async for chunk in chunks:
            if not started and chunk and not gzip and not _zlib_header(chunk):
                decoder = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate, as some servers send it
            started = started or bool(chunk)
            data = chunk
            while data and not decoder.eof:
                piece = decoder.decompress(data, PIECE)
                data = decoder.unconsumed_tail
                if piece:
                    yield piece
                while len(piece) == PIECE and not data:  # output still held back: drained piece by piece
                    piece = decoder.decompress(b"", PIECE)
                    if piece:
                        yield piece
        if started and not decoder.eof:
            raise httpx.DecodingError(f"{coding.decode()} body: cut short")
    except zlib.error as e:
        raise httpx.DecodingError(f"{coding.decode()} body: {e}") from None


def _zlib_header(data: bytes) -> bool:
    """Whether `data` begins with a zlib header (RFC 1950): deflate as HTTP means it."""
    return len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
