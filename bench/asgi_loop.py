"""Drive an ASGI app in-process, without a server or an HTTP client, to time the app itself."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any


def make_scope(
    path: str = "/", headers: list[tuple[bytes, bytes]] | None = None, method: str = "GET"
) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"bench.local"), *(headers or [])],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def one_request(app: Callable, scope: dict) -> tuple[int, int]:
    """One request through `app`: (its status, its body's length)."""
    status = 0
    size = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, size
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            size += len(message.get("body", b""))

    await app(dict(scope), receive, send)
    return status, size


def requests_per_second(
    app: Callable,
    scope: dict,
    *,
    seconds: float = 2.0,
    warmup: int = 200,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Sequential requests per second over about `seconds` of `clock`, after a warm-up.

    `clock=time.thread_time` counts only the CPU time this thread got: on a machine shared with
    other work, time spent waiting for a core no longer counts as time spent serving requests.
    """

    async def run() -> float:
        for _ in range(warmup):
            status, _ = await one_request(app, scope)
            assert status == 200, status
        n = 0
        start = clock()
        deadline = start + seconds
        while True:
            for _ in range(100):
                await one_request(app, scope)
            n += 100
            now = clock()
            if now >= deadline:
                return n / (now - start)

    return asyncio.run(run())


async def best_of_rounds(
    one_round: Callable[[Any, Any, float], Awaitable[float]],
    rows: Sequence[tuple[Any, Any]],
    seconds: float,
    rounds: int = 5,
) -> list[float]:
    """Requests/s of each (app, arg), the best of `rounds` interleaved rounds of `one_round(app, arg,
    seconds)`: interleaving spreads a busy moment of the machine over every row alike."""
    for app, arg in rows:  # warm the caches (consent decode, plans, policies, banner)
        await one_round(app, arg, 0.05)
    best = [0.0] * len(rows)
    for _ in range(rounds):
        for i, (app, arg) in enumerate(rows):
            best[i] = max(best[i], await one_round(app, arg, seconds / rounds))
    return best
