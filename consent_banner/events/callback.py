"""`on_decision`: the site's own callable, called with each decision once it is durable in the log.

The visitor's answer never waits for it: a recorded decision is queued (bounded: `QUEUE` records)
and one task per middleware calls the callable with each in turn, in the order this process
recorded them, never two at once. A coroutine function is awaited on the event loop; a plain
function runs in a worker thread (`asyncio.to_thread`), so one that blocks delays no request.
Whatever it raises is logged with the consent id and the record's seq; the decision stays recorded
and answered. At most once and in-process: a record the full queue cannot take is dropped (logged,
with its consent id), and the queue is not kept across a restart; webhooks are the at-least-once way.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..log import LoggedRecord
from .payload import record_dict

logger = logging.getLogger("consent_banner.events")

OnDecision = Callable[[dict[str, Any]], Awaitable[object] | object]
QUEUE = 10_000  # decisions waiting for the callable at most; past it they are dropped, and logged
DRAIN = 5.0  # seconds a shutdown waits for the callable to catch up before it is cancelled


class DecisionCallback:
    """Calls `fn` with each recorded decision, off the request path (see the module's docstring)."""

    def __init__(self, fn: OnDecision, *, queue: int = QUEUE) -> None:
        if not callable(fn):
            raise TypeError("on_decision must be callable: on_decision(record: dict) (sync or async)")
        self.fn = fn
        self.is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004 (an object whose __call__ is async)
        )
        self._queue: asyncio.Queue[LoggedRecord] = asyncio.Queue(queue)
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        self.failed = 0

    def recorded(self, record: LoggedRecord) -> None:
        """Queue a durable record for the callable; never blocks, never raises."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="consent on_decision")
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            self.dropped += 1
            logger.error(
                "on_decision is %d decisions behind: the decision of consent id %s (record %d) is recorded "
                "but not passed to it",
                self._queue.qsize(),
                record.consent_id,
                record.seq,
            )

    async def _run(self) -> None:
        while True:
            record = await self._queue.get()
            try:
                await self._call(record)
            finally:
                self._queue.task_done()

    async def _call(self, record: LoggedRecord) -> None:
        data = record_dict(record.row())
        try:
            result = self.fn(data) if self.is_async else await asyncio.to_thread(self.fn, data)
            if inspect.isawaitable(result):
                await result
        except Exception:
            self.failed += 1
            logger.exception(
                "on_decision raised for consent id %s (record %d); the decision is recorded",
                record.consent_id,
                record.seq,
            )

    async def close(self) -> None:
        """Let the callable catch up (at most DRAIN seconds), then stop it."""
        task, self._task = self._task, None
        if task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), DRAIN)
        if self._queue.qsize():
            logger.error("on_decision: %d decisions not passed to it at shutdown", self._queue.qsize())
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
