"""`{prefix}/health`: whether this process can record a decision now, for load balancers and monitors.

200 when a decision would be recorded, 503 when it would be refused (the gate fails closed): the log
cannot be opened (`log_needs_migration` when it is of an older schema, waiting for `consent-banner
log migrate`), its writer stopped, the write lock cannot be taken within `PROBE_TIMEOUT`, the head
is not one this server may build on, the file is read-only, a commit failed in the last
`FAILURE_HOLDS` seconds, or a decision has been waiting longer than `STALL_AFTER`.

No credentials (a load balancer has none), so the answer holds only that verdict, a fixed reason
code and timings: no path, no address, no error text (that goes to the operator's log).

Probing is cheap and cannot be driven by a flood: a verdict is remembered for `TTL` seconds, and
while a probe runs every request waits for that same probe (at most `PROBE_TIMEOUT`). A commit that
succeeded within `TTL` is itself the proof, so a busy server does not probe at all. The probe takes
the write lock, reads the head as a write would and rolls back (`ConsentLog.probe`): nothing is
written.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .decisions import OpenLog
from .errors import LogError, LogNeedsMigration
from .log import ConsentLog

logger = logging.getLogger("consent_banner")

TTL = 1.0  # seconds a verdict is remembered
PROBE_TIMEOUT = 2.0  # seconds a probe may take (load balancers' checks usually time out after 5)
FAILURE_HOLDS = 10.0  # seconds a failed commit counts against a probe that passes
STALL_AFTER = 15.0  # seconds a decision may wait for its commit (sqlite_thread.WRITE_DEADLINE)


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str | None  # a fixed code, never an error's text
    at: float  # time.monotonic() when the check ended
    probe_seconds: float | None  # how long the probe took; None when none ran
    log: ConsentLog | None


class Health:
    """Answers `GET {prefix}/health`; one per middleware."""

    def __init__(self, open_log: OpenLog, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._open_log = open_log
        self._clock = clock
        self._last: Verdict | None = None
        self._probing: asyncio.Task[Verdict] | None = None

    async def endpoint(self, request: Request, consent: Any) -> Response:
        verdict = await self.verdict()
        now = self._clock()
        body: dict[str, Any] = {
            "status": "ok" if verdict.ok else "failing",
            "reason": verdict.reason,
            "checked_seconds_ago": round(now - verdict.at, 3),
            "probe_seconds": _round(verdict.probe_seconds),
        }
        if verdict.log is not None:
            s = verdict.log.commit_stats()
            body["last_commit"] = (
                None
                if s.last_commit_seconds is None
                else {
                    "ok": (s.last_ok_at or 0.0) >= (s.last_failed_at or 0.0),
                    "seconds_ago": _round(now - max(s.last_ok_at or 0.0, s.last_failed_at or 0.0)),
                    "took_seconds": _round(s.last_commit_seconds),
                }
            )
            body["oldest_pending_seconds"] = _round(s.oldest_wait)
        headers = {"cache-control": "no-store"}
        if not verdict.ok:
            headers["retry-after"] = "5"
        response = JSONResponse(body, status_code=200 if verdict.ok else 503, headers=headers)
        if request.method == "HEAD":
            response.body = b""  # the headers (Content-Length included) as GET's
        return response

    async def verdict(self) -> Verdict:
        """The remembered verdict while fresh, else the one probe in flight (started if none)."""
        last = self._last
        if last is not None and self._clock() - last.at < TTL:
            return last
        task = self._probing
        if task is None or task.get_loop() is not asyncio.get_running_loop():
            task = self._probing = asyncio.get_running_loop().create_task(self._probe())
            task.add_done_callback(self._probed)
        try:
            return await asyncio.wait_for(asyncio.shield(task), PROBE_TIMEOUT)
        except TimeoutError:
            # Remembered too, so a flood gets this answer at once instead of each waiting.
            logger.error("health: the consent log's probe took over %.0f s", PROBE_TIMEOUT)
            self._last = Verdict(False, "probe_timeout", self._clock(), None, None)
            return self._last

    def _probed(self, task: asyncio.Task[Verdict]) -> None:
        if self._probing is task:
            self._probing = None
        if not task.cancelled() and task.exception() is None:
            self._last = task.result()

    async def _probe(self) -> Verdict:
        # Fresh from when the probe ended: a slow probe is not followed at once by another.
        return replace(await self._check(), at=self._clock())

    async def _check(self) -> Verdict:
        started = self._clock()
        try:
            log = await self._open_log()
        except LogNeedsMigration as e:  # the operator's move, not the database's: say which
            logger.error("health: %s", e)
            return Verdict(False, "log_needs_migration", started, None, None)
        except (LogError, OSError) as e:
            logger.error("health: the consent log cannot be opened: %s", e)
            return Verdict(False, "log_unavailable", started, None, None)
        s = log.commit_stats()
        if s.oldest_wait > STALL_AFTER:
            return Verdict(False, "commit_stalled", started, None, log)
        failed_last = s.last_failed_at is not None and s.last_failed_at >= (s.last_ok_at or 0.0)
        if failed_last and started - (s.last_failed_at or 0.0) < FAILURE_HOLDS:
            return Verdict(False, "commit_failed", started, None, log)
        if not failed_last and s.last_ok_at is not None and started - s.last_ok_at < TTL:
            return Verdict(True, None, started, None, log)  # a commit just proved it
        try:
            await log.probe(PROBE_TIMEOUT * 0.75)  # the database gives up first: its error is logged
        except Exception as e:  # any failure of the probe, driver errors included, means "cannot write"
            logger.error("health: the consent log cannot be written: %s", e)
            return Verdict(False, "log_unwritable", started, self._clock() - started, log)
        return Verdict(True, None, started, self._clock() - started, log)


def _round(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 6)
