"""A minimal ASGI client: one request straight into the app, no sockets and no httpx.

Ten thousand fuzzing examples per property only fit in CI time when a request costs a few
hundred microseconds; httpx's ASGITransport costs ten times that. The driver builds the scope a
server would (raw header bytes, as received: non-UTF-8 and duplicates included), feeds the body
in one message and collects what the app sends.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message

CLIENT = ("203.0.113.77", 41000)


@dataclass
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""

    def header_values(self, name: bytes) -> list[bytes]:
        return [v for k, v in self.headers if k.lower() == name]

    def set_cookie(self, cookie: str) -> str | None:
        """The value this answer sets for `cookie`, if any ("" when it expires it)."""
        prefix = cookie.encode() + b"="
        for v in self.header_values(b"set-cookie"):
            if v.startswith(prefix):
                return v.split(b";")[0][len(prefix) :].decode("latin-1")
        return None


async def call(
    app: ASGIApp,
    method: str,
    path: str,
    *,
    headers: Iterable[tuple[bytes, bytes]] = (),
    body: bytes = b"",
    host: bytes = b"testserver",
    query: bytes = b"",
    scheme: str = "http",
) -> Answer:
    """Send one HTTP request to `app`; the answer, or AssertionError if the app broke ASGI."""
    raw = [(b"host", host), *((k.lower(), v) for k, v in headers)]
    if body and not any(k == b"content-length" for k, _ in raw):
        raw.append((b"content-length", str(len(body)).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": scheme,
        "path": path,
        "raw_path": path.encode("latin-1", "replace"),
        "root_path": "",
        "query_string": query,
        "headers": raw,
        "client": CLIENT,
        "server": ("testserver", 80),
    }
    sent_body = False

    async def receive() -> Message:
        nonlocal sent_body
        if sent_body:
            return {"type": "http.disconnect"}
        sent_body = True
        return {"type": "http.request", "body": body, "more_body": False}

    answer: Answer | None = None
    chunks: list[bytes] = []

    async def send(message: Message) -> None:
        nonlocal answer
        if message["type"] == "http.response.start":
            assert answer is None, "http.response.start sent twice"
            answer = Answer(message["status"], list(message.get("headers", [])))
        elif message["type"] == "http.response.body":
            assert answer is not None, "body before http.response.start"
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    assert answer is not None, f"{method} {path}: the app sent no response"
    answer.body = b"".join(chunks)
    return answer
