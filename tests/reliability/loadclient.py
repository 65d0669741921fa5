"""A small HTTP/1.1 keep-alive load client on asyncio streams, for the concurrency test and
bench/bench_load.py: httpx spends about 5 ms of CPU per request, which on 2 cores would measure the
client rather than the server. It speaks only what these tests send (POST with a JSON body,
answers with Content-Length), and reports every status, body and latency.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class LoadResult:
    statuses: dict[int, int] = field(default_factory=dict)
    consent_ids: list[str] = field(default_factory=list)  # from each 200
    errors: list[str] = field(default_factory=list)  # transport errors and non-200 answers
    latencies: list[float] = field(default_factory=list)  # seconds, of answered requests
    sent: int = 0
    elapsed: float = 0.0

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def request_bytes(host: str, port: int, path: str, body: bytes) -> bytes:
    # A brand-new visitor every time (no consent cookie), same-origin as a browser sends it.
    origin = f"http://{host}:{port}"
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nOrigin: {origin}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    return status, await reader.readexactly(length) if length else b""


async def post_load(
    host: str,
    port: int,
    *,
    bodies: Callable[[int], bytes],
    connections: int,
    total: int | None = None,
    seconds: float | None = None,
    path: str = "/_consent",
) -> LoadResult:
    """Post `bodies(i)` over `connections` keep-alive connections until `total` requests were sent
    or `seconds` have passed; a dropped connection is counted as an error and reopened."""
    result = LoadResult()
    counter = 0
    started = time.monotonic()
    stop_at = started + seconds if seconds is not None else None

    def next_index() -> int | None:
        nonlocal counter
        if total is not None and counter >= total:
            return None
        if stop_at is not None and time.monotonic() >= stop_at:
            return None
        counter += 1
        return counter - 1

    async def worker() -> None:
        writer: asyncio.StreamWriter | None = None
        reader: asyncio.StreamReader | None = None
        try:
            while (i := next_index()) is not None:
                if writer is None:
                    try:
                        reader, writer = await asyncio.open_connection(host, port)
                    except OSError as e:
                        result.errors.append(f"connect: {e}")
                        await asyncio.sleep(0.05)
                        continue
                assert reader is not None
                t0 = time.monotonic()
                result.sent += 1
                try:
                    writer.write(request_bytes(host, port, path, bodies(i)))
                    status, body = await _read_answer(reader)
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as e:
                    result.errors.append(f"{type(e).__name__}: {e}")
                    writer.close()
                    writer = None
                    continue
                result.latencies.append(time.monotonic() - t0)
                result.statuses[status] = result.statuses.get(status, 0) + 1
                if status == 200:
                    data: Any = json.loads(body)
                    result.consent_ids.append(data["consent_id"])
                else:
                    result.errors.append(f"{status}: {body[:200]!r}")
        finally:
            if writer is not None:
                writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    result.elapsed = time.monotonic() - started
    return result
