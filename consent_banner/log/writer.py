"""Group commit: one writer task turns concurrent appends into one transaction.

Every `submit()` parks its item and a future; the writer task takes everything parked (up to
`max_batch`), commits it in one transaction through the backend's `commit` callable, and only
then resolves the futures. Items that arrive while a commit is running form the next batch, so
the batch size follows the load without any timer: one decision alone is committed at once,
ten thousand concurrent ones share a handful of fsyncs.

If a commit fails, the backend has rolled it back, and every caller of that batch gets its own
`LogUnavailable`: nothing was acknowledged that is not on disk, and nothing is half-written.
The writer itself keeps running and tries the next batch afresh.

Best-effort items (CSP reports) ride in a bounded side queue that is flushed when no decision
is waiting; when it is full, new ones are dropped and counted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, NamedTuple, TypeVar

from ..errors import LogError, LogUnavailable

logger = logging.getLogger("consent_banner.log")

T = TypeVar("T")
R = TypeVar("R")
S = TypeVar("S")


class WriterStats(NamedTuple):
    """What the writer has done so far, for health checks and metrics (times from time.monotonic())."""

    batches: int  # committed
    items: int  # decisions committed
    failed_batches: int
    side_dropped: int  # best-effort items dropped
    commit_seconds: float  # spent committing decision batches, failed ones included
    last_commit_seconds: float | None  # how long the last commit took
    last_ok_at: float | None  # when the last commit succeeded
    last_failed_at: float | None  # when the last commit failed
    oldest_wait: float  # seconds the oldest decision not yet answered has waited (0: none waits)


class GroupCommitWriter(Generic[T, R, S]):
    """Batches `submit()`ed items into `commit(items) -> results` calls, one at a time."""

    def __init__(
        self,
        commit: Callable[[list[T]], Awaitable[list[R]]],
        *,
        side_commit: Callable[[list[S]], Awaitable[None]] | None = None,
        max_batch: int = 5000,  # items per transaction
        side_capacity: int = 1000,  # best-effort items waiting at most
        name: str = "consent-log-writer",
    ) -> None:
        self._commit = commit
        self._side_commit = side_commit
        self._max_batch = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._side: deque[S] = deque()
        self._side_capacity = side_capacity
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._busy = False  # a commit is in flight
        self._accepting = False  # submit() takes items: started, not closing, task alive
        self._name = name
        # Public counters, for tests, stats and the benchmark.
        self.batches = 0
        self.items = 0
        self.failed_batches = 0
        self.side_dropped = 0
        # Commit lag, for health checks and metrics (`stats()`); one clock read per commit and per
        # batch begun, never per decision.
        self.commit_seconds = 0.0
        self.last_commit_seconds: float | None = None
        self.last_ok_at: float | None = None
        self.last_failed_at: float | None = None
        self._pending_since: float | None = None  # when the oldest parked item arrived
        self._batch_since: float | None = None  # when the oldest item of the commit in flight arrived

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self._name)
            self._task.add_done_callback(self._stopped)
            self._accepting = True

    def _stopped(self, task: asyncio.Task[None]) -> None:
        self._accepting = False

    @property
    def running(self) -> bool:
        return self._accepting

    async def submit(self, item: T) -> R:
        """Resolve once `item` is committed; raise LogUnavailable if its batch failed."""
        if not self._accepting:
            raise LogUnavailable("the consent log is closed")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        if not self._pending:
            self._pending_since = time.monotonic()
        self._pending.append((item, future))
        self._wake.set()
        return await future

    def stats(self) -> WriterStats:
        now = time.monotonic()
        since = [t for t in (self._batch_since, self._pending_since) if t is not None]
        return WriterStats(
            self.batches,
            self.items,
            self.failed_batches,
            self.side_dropped,
            self.commit_seconds,
            self.last_commit_seconds,
            self.last_ok_at,
            self.last_failed_at,
            now - min(since) if since else 0.0,
        )

    def offer(self, item: S) -> bool:
        """Queue a best-effort item; False when it was dropped (closed or queue full)."""
        if not self.running or len(self._side) >= self._side_capacity:
            self.side_dropped += 1
            return False
        self._side.append(item)
        self._wake.set()
        return True

    async def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything queued so far, best-effort items included, has been handled."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (self._pending or self._side or self._busy) and self.running and loop.time() < deadline:
            await asyncio.sleep(0.001)

    async def close(self) -> None:
        """Commit what is waiting, then stop."""
        if self._task is None:
            return
        self._closing = True
        self._accepting = False
        self._wake.set()
        try:
            await self._task
        finally:
            self._task = None

    async def _run(self) -> None:
        try:
            await self._loop()
        finally:
            # Cancelled or crashed: nobody may wait forever for a write that will not happen.
            pending, self._pending = self._pending, []
            for _, fut in pending:
                if not fut.done():
                    fut.set_exception(LogUnavailable("the consent log writer stopped"))

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._busy = True
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                # Items left parked arrived after these: counting them from the same time
                # overstates their wait by at most one commit.
                self._batch_since = self._pending_since
                if not self._pending:
                    self._pending_since = None
                try:
                    await self._commit_batch(batch)
                finally:
                    self._batch_since = None
            if self._side and self._side_commit is not None:
                side = [self._side.popleft() for _ in range(len(self._side))]
                try:
                    await self._side_commit(side)
                except Exception as e:  # best effort: a lost CSP report must not stop decisions
                    self.side_dropped += len(side)
                    logger.warning("consent log: %d blocked-attempt reports dropped: %s", len(side), e)
            self._busy = False
            if self._closing and not self._pending and not self._side:
                return

    async def _commit_batch(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        # A caller that gave up (request cancelled) before its batch began is not written:
        # it was never acknowledged, so there is nothing to prove.
        live = [(item, fut) for item, fut in batch if not fut.done()]
        if not live:
            return
        started = time.monotonic()
        try:
            results = await self._commit([item for item, _ in live])
        except Exception as e:
            self._timed(started, ok=False)
            self.failed_batches += 1
            reason = str(e) if isinstance(e, LogError) else f"{type(e).__name__}: {e}"
            logger.error("consent log: a batch of %d decisions was not written: %s", len(live), reason)
            for _, fut in live:
                if not fut.done():
                    # One exception object per caller: each is raised (and tracebacked) separately.
                    err = LogUnavailable(f"the consent log could not record the decision: {reason}")
                    err.__cause__ = e
                    fut.set_exception(err)
            return
        self._timed(started, ok=True)
        self.batches += 1
        self.items += len(live)
        for (_, fut), result in zip(live, results, strict=True):
            if not fut.done():
                fut.set_result(result)

    def _timed(self, started: float, *, ok: bool) -> None:
        now = time.monotonic()
        self.last_commit_seconds = now - started
        self.commit_seconds += now - started
        if ok:
            self.last_ok_at = now
        else:
            self.last_failed_at = now
