"""Bodies through the proxy: the request's from `receive` as the upstream takes it, the response's
to `send` chunk by chunk (or whole, for a page the gate may replay), and the client's leaving."""

from __future__ import annotations

import asyncio
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


async def pump(chunks: AsyncIterator[bytes], send: Send) -> None:
    async for chunk in chunks:
        if chunk:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
