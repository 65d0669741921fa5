"""The SQLite writer's thread, and waiting out another process's write lock on it.

The log's own writes do not go through aiosqlite: aiosqlite sends one statement per trip to its
thread, and each trip's answer waits behind every callback the event loop has queued. A batch is
a transaction of five statements or more, so as separate trips the thread sat idle while the loop
woke the previous batch's callers (31,000 decisions/s, one core busy). Sent as one trip, the
insert and the fsync run on the other core while the loop works. Reads still use aiosqlite.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from ..errors import LogUnavailable

T = TypeVar("T")
BUSY_TIMEOUT_MS = 5000  # SQLite waits this long for a lock by itself
WRITE_DEADLINE = 15.0  # seconds a write keeps retrying a busy database before failing closed


class WriterThread:
    """One sqlite3 connection used on one thread only; `run(fn, *args)` calls `fn(conn, *args)` there."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="consent-log-writer")
        self._conn: sqlite3.Connection | None = None

    async def open(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._conn = await self._call(connect)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._conn is None:
            raise LogUnavailable("the consent log is closed")
        return await self._call(fn, self._conn, *args)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await self._call(conn.close)
        self._pool.shutdown(wait=True)  # the thread is idle by now: this only joins it


def _busy(e: BaseException) -> bool:
    if not isinstance(e, sqlite3.OperationalError):
        return False
    code = getattr(e, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(e) or "busy" in str(e)


def retry_busy(fn: Callable[[], T]) -> T:
    """fn(), retried while the database is locked, until WRITE_DEADLINE (on the writer's thread)."""
    deadline = time.monotonic() + WRITE_DEADLINE
    delay = 0.002
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as e:
            if not _busy(e) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)


def begin_immediate(conn: sqlite3.Connection) -> None:
    """BEGIN IMMEDIATE, waiting out other writers (SQLite's busy timeout, then ours) up to a deadline."""
    try:
        retry_busy(lambda: conn.execute("BEGIN IMMEDIATE"))
    except sqlite3.OperationalError as e:
        if not _busy(e):
            raise
        raise LogUnavailable(
            f"the consent log stayed locked by another writer for {WRITE_DEADLINE:.0f} s"
        ) from None


def rollback(conn: sqlite3.Connection) -> None:
    # "no transaction is active" (the failure was BEGIN itself) is fine to ignore.
    with contextlib.suppress(Exception):
        conn.execute("ROLLBACK")
