"""The webhooks' side of the log: durable delivery cursors, their leases, and verified windows of records.

A webhook's delivery is driven by a cursor over the records' seq (the `webhooks` table, schema 5):
the last record delivered and acknowledged, and its hash. A decision writes nothing for its webhooks:
the delivery loop (events/delivery.py) reads the log after the cursor.

Only records the chain proves are handed out (`window`): a window of records after a cursor ends at
a signed anchor, the head (signed at every commit) or the first checkpoint past the cursor, whose
HMAC this process checks with its own keys. Each record's hash is recomputed from its columns and
each links to the one before, so the last record is the anchor's and, by the hash's collision
resistance, every record of the window is the one that was written: whoever can write the database
but holds no key cannot make us sign an event that is not in the log (an inserted, edited or
reordered record breaks a link or the anchor). The cursor itself is not signed: such a person can
make deliveries repeat or skip ahead, never invent one.

Several processes deliver one webhook by leases: `claim` takes the row (FOR UPDATE on PostgreSQL;
SQLite's write transaction is the lock) when nobody else holds an unexpired lease; `advance` moves
the cursor only for the lease holder and only from the position it read (compare-and-set), so two
processes do not both deliver a range in the common case, and at worst one range twice (at least
once), never none.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from .canonical import Row
from .chain import GENESIS, record_hash
from .checkpoints import Checkpoint
from .head import SignedHead
from .plan import Exec, One, Plan
from .reads import LogReads
from .records import format_at, parse_at

T = TypeVar("T")
WEBHOOKS_SINCE = 5  # the schema version that added the cursors
WINDOW = 1000  # records handed out at most per window


@dataclass(frozen=True)
class WebhookCursor:
    """One webhook's delivery state, as the `webhooks` table holds it."""

    name: str
    seq: int  # the last record delivered (or passed over: not an event the webhook takes)
    hash: str  # that record's hash (GENESIS before the first)
    created_at: str
    delivered_at: str | None
    owner: str | None  # the process holding the lease, while it does
    lease_until: str | None
    attempts: int  # failed attempts in a row since the last delivery
    next_attempt: str | None  # after a failure: not before
    last_error: str | None
    failed_at: str | None

    @classmethod
    def from_row(cls, row: Row) -> WebhookCursor:
        name, seq, hash_, created, delivered, owner, lease, attempts, nxt, error, failed = row
        return cls(name, int(seq), hash_, created, delivered, owner, lease, int(attempts), nxt, error, failed)

    @property
    def failing(self) -> bool:
        return self.attempts > 0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "delivered_through": self.seq,
            "delivered_at": self.delivered_at,
            "attempts": self.attempts,
            "next_attempt": self.next_attempt,
            "last_error": self.last_error,
            "failed_at": self.failed_at,
            "lease_until": self.lease_until,
        }


@dataclass(frozen=True)
class Window:
    """Records after a cursor that the chain proves, in seq order; or why none can be handed out."""

    rows: list[Row]
    problem: str | None = None  # the chain does not verify here: nothing is sent


def now() -> datetime:
    """Leases and retries follow the real clock, whatever clock the records are stamped with."""
    return datetime.now(UTC)


class LogOutbox(LogReads):
    """The delivery cursors of a log (mixed into LogCore; its plans run under the write lock)."""

    @abstractmethod
    async def _transact(self, plan: Plan[T]) -> T: ...  # the driver's (see LogCore)

    def _webhooks_exist(self) -> bool:
        return self.sql.schema >= WEBHOOKS_SINCE

    async def webhook_states(self) -> list[WebhookCursor]:
        """Every webhook cursor (none on a log read at a schema before 5)."""
        if not self._webhooks_exist():
            return []
        with self._reading():
            rows = await self._fetch(self.sql.webhooks)
        return [WebhookCursor.from_row(r) for r in rows]

    async def webhook_pending(self, after: int, actions: Sequence[str]) -> int:
        """How many records after `after` have one of `actions`."""
        if not actions:
            return 0
        with self._reading():
            rows = await self._fetch(*self.sql.webhook_pending(after, actions))
        return int(rows[0][0])

    async def claim_webhook(
        self, name: str, owner: str, *, lease: float, from_start: bool = False
    ) -> WebhookCursor | float:
        """Take the lease of webhook `name` for `lease` seconds: its cursor; or the seconds to wait
        (another process holds it, or a retry is not due yet). A webhook seen for the first time gets
        a cursor at the head (`from_start`: before the first record)."""
        result: WebhookCursor | float = await self._transact(self._claim_plan(name, owner, lease, from_start))
        return result

    def _claim_plan(
        self, name: str, owner: str, lease: float, from_start: bool
    ) -> Plan[WebhookCursor | float]:
        t = now()
        row = yield One(self.sql.webhook_for_update, (name,))
        if row is None:
            seq, hash_ = (0, GENESIS) if from_start else (yield One(self.sql.head_position))
            yield Exec(self.sql.insert_webhook, (name, seq, hash_, format_at(t)))
            row = yield One(self.sql.webhook_for_update, (name,))  # ours, or another server's just now
        cursor = WebhookCursor.from_row(row)
        if cursor.owner not in (None, owner) and cursor.lease_until and parse_at(cursor.lease_until) > t:
            return (parse_at(cursor.lease_until) - t).total_seconds(), None
        if cursor.next_attempt and parse_at(cursor.next_attempt) > t:
            return (parse_at(cursor.next_attempt) - t).total_seconds(), None
        until = format_at(t + timedelta(seconds=lease))
        yield Exec(self.sql.lease_webhook, (owner, until, name))
        return WebhookCursor.from_row((*row[:5], owner, until, *row[7:])), None

    async def advance_webhook(
        self, cursor: WebhookCursor, seq: int, hash_: str, *, lease: float
    ) -> WebhookCursor | None:
        """Move the cursor to record `seq` (delivered) and renew the lease; None when this process
        no longer holds it (another took it over after the lease ran out): stop delivering."""
        result: WebhookCursor | None = await self._transact(self._advance_plan(cursor, seq, hash_, lease))
        return result

    def _advance_plan(
        self, c: WebhookCursor, seq: int, hash_: str, lease: float
    ) -> Plan[WebhookCursor | None]:
        t = now()
        at, until = format_at(t), format_at(t + timedelta(seconds=lease))
        row = yield One(self.sql.advance_webhook, (seq, hash_, at, until, c.name, c.owner, c.seq))
        if row is None:
            return None, None
        return WebhookCursor(c.name, seq, hash_, c.created_at, at, c.owner, until, 0, None, None, None), None

    async def fail_webhook(self, cursor: WebhookCursor, error: str, retry_in: float) -> int | None:
        """Record a failed delivery and release the lease: any process retries after `retry_in`
        seconds. The failures in a row so far; None when the lease was lost meanwhile."""
        result: int | None = await self._transact(self._fail_plan(cursor, error, retry_in))
        return result

    def _fail_plan(self, c: WebhookCursor, error: str, retry_in: float) -> Plan[int | None]:
        t = now()
        nxt = format_at(t + timedelta(seconds=retry_in))
        row = yield One(self.sql.fail_webhook, (nxt, error[:500], format_at(t), c.name, c.owner))
        return (int(row[0]) if row else None), None

    async def release_webhook(self, cursor: WebhookCursor) -> None:
        """Give the lease up (at shutdown): another process takes over at once."""
        await self._transact(self._release_plan(cursor))

    def _release_plan(self, c: WebhookCursor) -> Plan[None]:
        yield Exec(self.sql.release_webhook, (c.name, c.owner))
        return None, None

    async def window(self, after: int, after_hash: str, *, limit: int = WINDOW) -> Window:
        """Up to `limit` records after record `after` (whose hash is `after_hash`), proven by the chain
        up to a signed anchor (see the module's docstring). Read in one snapshot."""
        keys = self.keys or {}
        with self._reading():
            async with self._session() as db:
                heads = await db.fetch(self.sql.head)
                if not heads:
                    return Window([], "the consent log's head row is missing")
                head = SignedHead(self.log_id, *heads[0])
                if head.seq <= after:
                    return Window([])
                problem = head.problem(keys)
                if problem is not None:
                    return Window([], problem)
                (first,) = (await db.fetch(self.sql.first_seq))[0]
                if first is not None and first > after + 1:
                    # Records the cursor had not reached were purged: go on from the purge's signed
                    # anchor (what was purged is gone, and cannot go out any more).
                    found = await db.fetch(self.sql.purge_anchor, (first - 1,))
                    cp = Checkpoint(self.log_id, *found[0]) if found else None
                    if cp is None or cp.valid(keys) is not True:
                        return Window([], f"record {after + 1} is missing")
                    after, after_hash = cp.seq, cp.hash
                anchor_seq, anchor_hash = head.seq, head.hash
                cps = await db.fetch(self.sql.checkpoint_after, (after, head.seq))
                if cps:
                    cp = Checkpoint(self.log_id, *cps[0])
                    if cp.valid(keys) is True:  # else (a retired key's) the head, which is always ours
                        anchor_seq, anchor_hash = cp.seq, cp.hash
                prev_seq, prev_hash = after, after_hash
                kept: list[Row] = []
                async for rows in db.chunks(self.sql.records_between, (after, anchor_seq), 5000):
                    for row in rows:
                        seq = int(row[0])
                        if seq != prev_seq + 1:
                            return Window([], f"record {prev_seq + 1} is missing")
                        if row[14] != prev_hash:
                            return Window([], f"record {seq} does not link to record {prev_seq}")
                        if record_hash(row[14], row[1:14]) != row[15]:
                            return Window([], f"record {seq}'s hash does not match its contents")
                        prev_seq, prev_hash = seq, row[15]
                        if len(kept) < limit:
                            kept.append(row)
                if prev_seq != anchor_seq or prev_hash != anchor_hash:
                    return Window([], f"the records up to {anchor_seq} do not end at its signed hash")
        return Window(kept)
