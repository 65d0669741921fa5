"""Webhook delivery: one loop per webhook per process, driven by the log's durable cursor.

A decision writes nothing for its webhooks: the loop reads the log after the webhook's cursor
(`ConsentLog.window`: only records the chain proves up to a signed anchor), POSTs each record of an
event the webhook takes, one at a time in seq order, and moves the cursor once they are
acknowledged (2xx). It wakes when this process records a decision and polls every `POLL` seconds
for the records of other processes and of `log purge` (a purge from the CLI goes out once a server
runs). At least once: the cursor moves after the receiver answered, so a crash re-sends at most
the records since the last move (`ADVANCE_EVERY`); `webhook-id` stays the same, for the receiver to
drop what it has seen.

A failure (a non-2xx answer, a timeout, a refused connection, a redirect) keeps the cursor where it
is, is recorded with the error and the next attempt (exponential backoff with jitter: RETRY_BASE
doubling up to RETRY_CAP), and is retried by whichever process holds the lease then, forever: an
event is never dropped. Several processes share a webhook through the cursor's lease (log/outbox.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..config import Webhook
from ..display import mask_passwords
from ..errors import ConfigError, ConsentBannerError
from ..log import ConsentLog
from ..log.canonical import Row
from ..log.outbox import WebhookCursor, now
from ..log.records import parse_at
from .payload import actions_of, body, event_of, message_id
from .signature import headers, secret_from_env

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger("consent_banner.events")

OpenLog = Callable[[], Awaitable[ConsentLog]]
POLL = 1.0  # seconds between two looks at the log when nothing woke the loop
LEASE = 30.0  # seconds a process holds a webhook without renewing (another takes over after)
BATCH = 10_000  # records handed out per window: a checkpoint interval, so each record is verified once
ADVANCE_EVERY = 1.0  # seconds: the cursor moves at least this often while a backlog goes out
RETRY_BASE = 1.0  # seconds before the first retry; doubled per failure in a row
RETRY_CAP = 600.0  # seconds: retries of a failing receiver at most every 10 minutes
TIMEOUT = 10.0  # seconds per POST (connect 5)
USER_AGENT = "consent-banner-webhooks"
MAX_ANSWER = 64 * 1024  # bytes of a receiver's answer read at most (more: the connection is dropped)


def retry_delay(attempts: int) -> float:
    """Seconds before retry number `attempts` (1, 2, ...): doubling, capped, with jitter (50-100%)
    so that receivers coming back are not met by every server at once."""
    delay: float = min(RETRY_CAP, RETRY_BASE * 2.0 ** min(attempts - 1, 30))
    return delay * random.uniform(0.5, 1.0)


@dataclass(frozen=True)
class Target:
    """A configured webhook with its secret, read from the environment at start."""

    hook: Webhook
    key: bytes
    actions: tuple[str, ...]  # the records' actions its events cover
    index: int  # its place in consent.toml, for messages

    @property
    def name(self) -> str:
        return self.hook.key


def targets(hooks: Sequence[Webhook]) -> list[Target]:
    """Every webhook with its secret; ConfigError naming `webhooks[i].secret_env` when one is missing
    or malformed (at start: a site never runs with a webhook it cannot sign for)."""
    found, problems = [], []
    for i, hook in enumerate(hooks):
        try:
            key = secret_from_env(hook.secret_env, f"webhooks[{i}].secret_env")
        except ConfigError as e:
            problems += e.problems
            continue
        found.append(Target(hook, key, actions_of(hook.events), i))
    if problems:
        raise ConfigError(problems)
    return found


class Failed(Exception):
    """A delivery that was not acknowledged: its reason, as the status shows it."""


class Delivery:
    """The loop of one webhook in this process."""

    def __init__(self, target: Target, log: OpenLog, client: httpx.AsyncClient, owner: str) -> None:
        self.target = target
        self.log = log
        self.client = client
        self.owner = owner
        self.wake = asyncio.Event()
        self.cursor: WebhookCursor | None = None  # while this process holds the lease
        self.sent = 0  # POSTs acknowledged by this process
        self._closing = False
        self._wakeable = True  # whether a recorded decision ends the current wait
        self._stop = asyncio.Event()

    async def run(self) -> None:
        pause = POLL
        while not self._closing:
            self._wakeable = True
            try:
                log = await self.log()
                pause = await self._turn(log)
            except (ConsentBannerError, OSError) as e:
                # The log cannot be read or written now: the cursor stays, delivery resumes after.
                logger.warning("webhook %s: the consent log is unavailable (%s)", self._shown, e)
                self.cursor = None
                pause = min(RETRY_CAP, max(pause * 2, POLL))
            except Exception:  # a database driver's own error: the loop must outlive it
                logger.exception("webhook %s: delivery stopped by an error; retrying", self._shown)
                self.cursor = None
                pause = min(RETRY_CAP, max(pause * 2, POLL))
            await self._sleep(pause)

    async def _turn(self, log: ConsentLog) -> float:
        """Hold the lease and deliver what the log holds after the cursor; the seconds to wait next."""
        c = self.cursor
        if c is None or _expiring(c):
            claimed = await log.claim_webhook(
                self.target.name, self.owner, lease=LEASE, from_start=self.target.hook.start == "beginning"
            )
            if isinstance(claimed, float):  # another process delivers, or a retry is not due
                self.cursor = None
                # Decisions do not cut this wait short: each would cost a claim under the write lock.
                self._wakeable = False
                return min(max(claimed, 0.05), LEASE)
            self.cursor = c = claimed
        while not self._closing:
            window = await log.window(c.seq, c.hash, limit=BATCH)
            if window.problem is not None:
                # Never sign what the chain does not prove: the cursor stays, an operator must look.
                await self._failed(log, c, f"the log's chain does not verify: {window.problem}")
                return POLL
            if not window.rows:
                return POLL
            moved = await self._deliver(log, c, window.rows)
            if moved is None:
                return POLL
            c = moved
        return POLL

    async def _deliver(self, log: ConsentLog, c: WebhookCursor, rows: list[Row]) -> WebhookCursor | None:
        """POST the rows' events in order; the cursor after them (None: failed or lease lost)."""
        last: Row | None = None
        since = time.monotonic()
        for row in rows:
            if row[3] in self.target.actions:
                try:
                    await self._post(log.log_id, row)
                except Failed as e:
                    if last is not None:
                        moved = await log.advance_webhook(c, last[0], last[15], lease=LEASE)
                        if moved is None:
                            self.cursor = None
                            return None
                        c = moved
                    await self._failed(log, c, str(e))
                    return None
                self.sent += 1
            last = row
            if time.monotonic() - since > ADVANCE_EVERY:
                moved = await log.advance_webhook(c, row[0], row[15], lease=LEASE)
                if moved is None:  # the lease ran out and another process took over: stop here
                    self.cursor = None
                    return None
                c, last, since = moved, None, time.monotonic()
        if last is not None:
            moved = await log.advance_webhook(c, last[0], last[15], lease=LEASE)
            self.cursor = moved
            return moved
        self.cursor = c
        return c

    async def _post(self, log_id: str, row: Row) -> None:
        import httpx

        content = body(log_id, row)
        sent = headers(self.target.key, message_id(log_id, int(row[0])), int(time.time()), content)
        sent["user-agent"] = USER_AGENT
        try:
            # httpx's timeouts are per read: a receiver trickling its headers a byte at a time would
            # hold the loop for ever without a deadline for the whole exchange.
            async with asyncio.timeout(2 * TIMEOUT):
                async with self.client.stream(
                    "POST", self.target.hook.url, content=content, headers=sent
                ) as r:
                    status = r.status_code  # the receiver's answer is its status; its body is read
                    read = 0  # (up to a bound) only so that the connection can carry the next POST
                    async for chunk in r.aiter_raw():
                        read += len(chunk)
                        if read > MAX_ANSWER:
                            break
        except httpx.HTTPError as e:
            raise Failed(f"{type(e).__name__}: {str(e)[:200] or 'no answer'}") from None
        except TimeoutError:
            raise Failed(f"no answer within {2 * TIMEOUT:.0f} s") from None
        if not 200 <= status < 300:
            raise Failed(f"HTTP {status} for record {row[0]} ({event_of(row[3])})")

    async def _failed(self, log: ConsentLog, c: WebhookCursor, error: str) -> None:
        delay = retry_delay(c.attempts + 1)
        attempts = await log.fail_webhook(c, error, delay)
        self.cursor = None  # the lease is released with the failure: any process retries when due
        logger.warning(
            "webhook %s: delivery after record %d failed (%s, %s in a row); retrying in %.0f s",
            self._shown,
            c.seq,
            error,
            attempts,
            delay,
        )

    @property
    def _shown(self) -> str:
        return mask_passwords(self.target.name)

    async def _sleep(self, seconds: float) -> None:
        if not self._wakeable:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), seconds)  # only a shutdown ends it early
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), seconds)
        self.wake.clear()

    async def stop(self, log: ConsentLog | None) -> None:
        """Stop after the current POST; give the lease up so another process takes over at once."""
        self._closing = True
        self.wake.set()
        self._stop.set()
        c, self.cursor = self.cursor, None
        if c is not None and log is not None:
            with contextlib.suppress(ConsentBannerError, OSError):
                await log.release_webhook(c)


def _expiring(c: WebhookCursor) -> bool:
    """Whether the lease has less than half its time left (then it is claimed again, renewed)."""
    return c.lease_until is None or (parse_at(c.lease_until) - now()).total_seconds() < LEASE / 2


class Webhooks:
    """Every webhook's loop in this process: started with the log, stopped before it closes."""

    def __init__(self, hooks: Sequence[Webhook]) -> None:
        self.targets = targets(hooks)  # ConfigError now, not at the first decision
        self.owner = secrets.token_hex(8)  # this process, in the cursors' leases
        self._deliveries: list[Delivery] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._client: Any = None
        if self.targets:
            try:
                import httpx  # noqa: F401
            except ImportError:
                raise ConfigError(
                    ["webhooks: sending them needs httpx: pip install 'consent-banner[webhooks]'"]
                ) from None

    @property
    def started(self) -> bool:
        return bool(self._tasks)

    def start(self, log: OpenLog) -> None:
        """Start the loops (once; inside the event loop)."""
        if self._tasks or not self.targets:
            return
        import httpx

        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(TIMEOUT, connect=5.0),
            follow_redirects=False,  # a redirect is not an acknowledgement
            limits=httpx.Limits(max_connections=4 * len(self.targets)),
        )
        for t in self.targets:
            d = Delivery(t, log, self._client, self.owner)
            self._deliveries.append(d)
            self._tasks.append(asyncio.get_running_loop().create_task(d.run(), name=f"webhook {t.index}"))

    def wake(self) -> None:
        """A decision was recorded here: look at the log now rather than at the next poll."""
        for d in self._deliveries:
            d.wake.set()

    async def close(self, log: ConsentLog | None) -> None:
        """Stop every loop (a POST under way gets 5 s), release the leases, close the client."""
        tasks, self._tasks = self._tasks, []
        for d in self._deliveries:
            d._closing = True
            d.wake.set()
            d._stop.set()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=5.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for d in self._deliveries:
            await d.stop(log)
        self._deliveries = []
        if self._client is not None:
            await self._client.aclose()
            self._client = None
