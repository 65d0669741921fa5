"""The cookie gate for WebSocket handshakes.

A ``websocket.accept`` (and the ``websocket.http.response.start`` of a refused handshake) carries
headers like any HTTP response, ``Set-Cookie`` included, and the browser stores those cookies
just the same. They go through the same `CookieRules` as an HTTP response: cookies the visitor's
consent does not allow are dropped, and `extra` values (expiries of denied request cookies, the
middleware's own cookie upkeep) are added. Every other message passes untouched.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .cookies import CookieRules

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]

HANDSHAKE_RESPONSES = frozenset({"websocket.accept", "websocket.http.response.start"})


def gate_handshake(
    send: Send, rules: CookieRules, allowed_services: frozenset[str], extra: list[bytes]
) -> Send:
    """The `send` to hand the app for one WebSocket connection."""

    async def gated(message: Message) -> None:
        if message["type"] in HANDSHAKE_RESPONSES:
            headers = list(message.get("headers") or ())
            set_cookies = [v for k, v in headers if k.lower() == b"set-cookie"]
            if set_cookies or extra:
                kept, _ = rules.filter(set_cookies, allowed_services)
                message["headers"] = [
                    *((k, v) for k, v in headers if k.lower() != b"set-cookie"),
                    *((b"set-cookie", v) for v in (*extra, *kept)),
                ]
        await send(message)

    return gated
