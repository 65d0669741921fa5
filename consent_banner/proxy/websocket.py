"""The WebSocket half of `ProxyApp`: the upstream's handshake without redirects, and the relay.

websockets (the `proxy` extra) is imported when the first WebSocket comes, never at import.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from typing import TYPE_CHECKING

from starlette.types import Message, Receive, Send

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection, connect

# The handshake's own fields: the client library writes the upstream leg's.
WS_HANDSHAKE = frozenset(
    {b"sec-websocket-key", b"sec-websocket-version", b"sec-websocket-extensions", b"sec-websocket-protocol"}
)
WS_MAX_SIZE = 16 * 1024 * 1024  # bytes in one WebSocket message, uvicorn's own default
UNSENDABLE_CLOSE = {1005: 1000, 1006: 1014}  # "no status" is a normal close; an abnormal one, Bad Gateway


async def relay_websocket(upstream: ClientConnection, receive: Receive, send: Send) -> None:
    """Messages both ways until one side closes; its close code (and reason) is passed to the other."""
    from websockets.exceptions import ConnectionClosed

    async def from_client() -> None:
        while True:
            message: Message = await receive()
            if message["type"] == "websocket.receive":
                text = message.get("text")
                await upstream.send(text if text is not None else message.get("bytes") or b"")
            elif message["type"] == "websocket.disconnect":
                code = int(message.get("code") or 1000)
                await upstream.close(UNSENDABLE_CLOSE.get(code, code), str(message.get("reason") or ""))
                return

    async def from_upstream() -> None:
        try:
            async for data in upstream:
                if isinstance(data, str):
                    await send({"type": "websocket.send", "text": data})
                else:
                    await send({"type": "websocket.send", "bytes": data})
        except ConnectionClosed:
            pass
        frame = upstream.protocol.close_rcvd
        code = frame.code if frame is not None else 1006
        reason = frame.reason if frame is not None else ""
        await send({"type": "websocket.close", "code": UNSENDABLE_CLOSE.get(code, code), "reason": reason})

    tasks = [asyncio.ensure_future(from_client()), asyncio.ensure_future(from_upstream())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed, OSError):
                    await task
    for task in done:
        error = task.exception()
        if error is not None and not isinstance(error, ConnectionClosed | OSError):
            raise error


@functools.cache
def no_redirects() -> type[connect]:
    """`connect` without following redirects, made on first use: websockets is imported only then."""
    from websockets.asyncio.client import connect

    class NoRedirects(connect):
        """`connect` that never follows a redirect: the browser is told it, through the gate."""

        def process_redirect(self, exc: Exception) -> Exception | str:
            return exc

    return NoRedirects
