"""What every log backend shares: the append path, version ids, filters, stats, the protocol."""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple, Protocol, TypeVar, runtime_checkable

from ..errors import LogError, LogUnavailable
from .events import (
    ACTIONS,
    GENESIS,
    SYSTEM_ACTIONS,
    BlockedAttempt,
    Checkpoint,
    Decision,
    InvalidDecision,
    LoggedRecord,
    Prepared,
    checkpoint_link,
    checkpoint_mac,
    format_at,
    head_mac,
    key_id,
    parse_at,
    prepare,
    prepare_system,
    version_id_for,
)
from .verify import SignedHead, VerifyResult
from .writer import GroupCommitWriter

logger = logging.getLogger("consent_banner.log")
F = TypeVar("F", bound=Callable[..., Any])

SCHEMA_VERSION = 2  # 2: the checkpoint chain signed by the head; GPC recorded once
CHECKPOINT_EVERY = 10_000  # records between periodic checkpoints
CHECKPOINT_INTERVAL = 3600  # seconds: a checkpoint at least hourly while records come in


@dataclass(frozen=True)
class RecordFilter:
    """Which records an export, a listing or the stats look at. Empty: all of them."""

    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive
    action: str | None = None
    consent_id: str | None = None
    decisions_only: bool = False  # leave out the log's own records (purges)

    def clauses(self, placeholder: Any) -> tuple[str, list[Any]]:
        """SQL WHERE text and its parameters; `placeholder(i)` spells the i-th (1-based) parameter."""
        parts: list[str] = []
        params: list[Any] = []

        def add(sql: str, value: Any) -> None:
            params.append(value)
            parts.append(sql.format(placeholder(len(params))))

        if self.since is not None:
            add("at >= {}", format_at(self.since))
        if self.until is not None:
            add("at < {}", format_at(self.until))
        if self.action:
            add("action = {}", self.action)
        if self.consent_id:
            add("consent_id = {}", self.consent_id)
        if self.decisions_only:
            # The log's own records (purges) carry the empty consent id; this form can use the index.
            parts.append("consent_id <> ''")
        return (" WHERE " + " AND ".join(parts)) if parts else "", params


ALL_RECORDS = RecordFilter()  # the default filter (frozen, so one instance serves every call)


def parse_day(text: str | None, *, end: bool = False) -> datetime | None:
    """ "2026-01-31" or an ISO time, as UTC; with end=True a bare day means the day after (exclusive)."""
    if not text:
        return None
    text = text.strip()
    try:
        if len(text) == 10:
            d = datetime.combine(date.fromisoformat(text), datetime.min.time(), tzinfo=UTC)
            return d + timedelta(days=1) if end else d
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
        # In UTC now: the stored form is UTC, and 0001-01-01T00:00+01:00 has no UTC time.
        return t.astimezone(UTC) if t.tzinfo else t.replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"{text!r} is not a date (YYYY-MM-DD) or an ISO time") from None
    except OverflowError:
        raise ValueError(f"{text!r} is outside the dates the log can hold (years 1 to 9999, UTC)") from None


@dataclass
class LogStats:
    """Totals, decisions per day by action, and acceptance rate per category."""

    total: int = 0  # decisions (the log's own records not counted)
    by_action: dict[str, int] = field(default_factory=dict)
    per_day: dict[str, dict[str, int]] = field(default_factory=dict)  # "2026-01-31" -> action -> count
    granted: dict[str, int] = field(default_factory=dict)  # category -> decisions granting it
    denied: dict[str, int] = field(default_factory=dict)  # category -> decisions denying it
    consent_ids: int = 0
    first_at: str | None = None
    last_at: str | None = None

    @property
    def categories(self) -> list[str]:
        names = set(self.granted) | set(self.denied)
        names.discard("necessary")
        return sorted(names)

    def acceptance_rate(self, category: str) -> float:
        """Share of decisions that named this category and granted it (0..1)."""
        g, d = self.granted.get(category, 0), self.denied.get(category, 0)
        return g / (g + d) if g + d else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "consent_ids": self.consent_ids,
            "first_at": self.first_at,
            "last_at": self.last_at,
            "by_action": self.by_action,
            "per_day": self.per_day,
            "acceptance_rate": {c: round(self.acceptance_rate(c), 4) for c in self.categories},
        }

    # One scan gives every figure but the distinct consent ids: group by day, action and choice.
    GROUPS_SQL = (
        "SELECT substr(at, 1, 10), action, granted, denied, count(*), min(at), max(at) "
        "FROM records{where} GROUP BY 1, 2, 3, 4"
    )

    def add_rows(self, rows: Iterable[Sequence[Any]]) -> None:
        """Fold rows of GROUPS_SQL in."""
        for day, action, granted, denied, n, first, last in rows:
            if action in SYSTEM_ACTIONS:
                continue
            self.add_group(granted, denied, action, n)
            per = self.per_day.setdefault(day, {})
            per[action] = per.get(action, 0) + n
            self.first_at = first if self.first_at is None or first < self.first_at else self.first_at
            self.last_at = last if self.last_at is None or last > self.last_at else self.last_at
        self.per_day = dict(sorted(self.per_day.items()))

    def add_group(self, granted: str, denied: str, action: str, n: int) -> None:
        if action in SYSTEM_ACTIONS:
            return
        self.total += n
        self.by_action[action] = self.by_action.get(action, 0) + n
        for c in granted.split(",") if granted else ():
            self.granted[c] = self.granted.get(c, 0) + n
        for c in denied.split(",") if denied else ():
            self.denied[c] = self.denied.get(c, 0) + n


@dataclass(frozen=True)
class PurgeResult:
    removed: int
    through_seq: int  # records 1..through_seq are gone (0: none)
    cutoff: str
    checkpoint: Checkpoint | None  # the anchor the remaining chain verifies from
    record: LoggedRecord  # the purge's own record in the chain


@dataclass(frozen=True)
class BlockedSummary:
    """CSP reports grouped by page, blocked origin and directive."""

    page: str
    origin: str
    directive: str
    count: int
    first_at: str
    last_at: str
    with_consent: int  # reports from visitors who had decided


@runtime_checkable
class ConsentLog(Protocol):
    """What routes, the audit view and the CLI use. Both backends implement all of it."""

    log_id: str

    async def append(self, d: Decision) -> LoggedRecord: ...
    async def records_for(self, consent_id: str) -> list[LoggedRecord]: ...
    async def add_blocked(self, b: BlockedAttempt) -> None: ...
    async def close(self) -> None: ...
    async def flush(self) -> None: ...
    async def get_record(self, seq: int) -> LoggedRecord | None: ...
    async def get_version(self, version_id: str) -> dict[str, Any] | None: ...
    async def count(self, flt: RecordFilter = ...) -> int: ...
    async def page(
        self, flt: RecordFilter = ..., *, limit: int = 50, before: int | None = None
    ) -> list[LoggedRecord]: ...
    def iter_records(self, flt: RecordFilter = ..., *, chunk: int = 5000) -> AsyncIterator[LoggedRecord]: ...
    def iter_rows(self, flt: RecordFilter = ..., *, chunk: int = 5000) -> AsyncIterator[tuple[Any, ...]]: ...
    def iter_chunks(
        self, flt: RecordFilter = ..., *, chunk: int = 5000
    ) -> AsyncIterator[list[tuple[Any, ...]]]: ...
    async def stats(self, flt: RecordFilter = ...) -> LogStats: ...
    async def verify(self, pins: Sequence[Checkpoint] = ()) -> VerifyResult: ...
    async def checkpoint(self, reason: str = "manual") -> Checkpoint: ...
    async def checkpoints(self) -> list[Checkpoint]: ...
    async def purge(self, older_than: timedelta) -> PurgeResult: ...
    async def blocked(self, *, limit: int = 200) -> list[BlockedSummary]: ...
    async def schema_version(self) -> int: ...
    async def migrate(self) -> tuple[int, int]: ...


_Item = tuple[Prepared, tuple[str, str] | None]  # a prepared decision and its (version id, payload) if any
Written = tuple[
    Prepared, int, datetime, str, str
]  # what a commit hands back: (item, seq, at, prev_hash, hash)


class HeadState(NamedTuple):
    """Where the log stands, as a writer may build on it: the last record and the checkpoint chain."""

    seq: int
    hash: str
    checkpoints: int  # checkpoints signed so far (the last one's n)
    tip: str  # their chain (checkpoint_link), which the head signs


class CheckpointLink(NamedTuple):
    """What a writer needs of a stored checkpoint to extend the chain: its place, its prev, its MAC."""

    n: int
    prev: str | None
    mac: str


# --- GPC, recorded once ------------------------------------------------------------------------
# A GPC record amends the visitor's latest decision; a replayed cookie must not add one per request.
# Its `detail` names the record it amends, and a unique index on (consent_id, detail) for gpc
# records makes "once per consent id and decision" hold across processes. A duplicate is found
# inside the write lock and left out before the batch is linked, so it never enters the chain.

GPC_ACTION = "gpc"


def gpc_detail(amends: int) -> str:
    return f'{{"amends":{amends}}}'  # json.dumps(sort_keys, compact) of {"amends": n}, as hashed


Outcome = int | tuple[Any, ...]  # an index into the written rows, or the raw row already in the log


def settle_gpc(
    items: list[_Item],
    seq0: int,
    latest: Mapping[str, int],
    recorded: Mapping[tuple[str, str], tuple[Any, ...]],
) -> tuple[list[_Item], list[Outcome]]:
    """The items of a batch to write after record `seq0`, GPC records given the decision they amend,
    and for each item where its answer comes from.

    latest: consent id -> seq of its latest record in the log that is not a GPC record;
    recorded: (consent id, detail) -> raw row of a GPC record already in the log."""
    kept: list[_Item] = []
    outcomes: list[Outcome] = []
    batch_latest: dict[str, int] = {}
    batch_gpc: dict[tuple[str, str], int] = {}
    for p, version in items:
        cid = p.consent_id
        if p.action == GPC_ACTION:
            key = (cid, gpc_detail(batch_latest.get(cid, latest.get(cid, 0))))
            if key in batch_gpc:
                outcomes.append(batch_gpc[key])
                continue
            if key in recorded:
                outcomes.append(recorded[key])
                continue
            p = p._replace(detail=key[1], tail="")  # the tail is rebuilt with the detail when linked
            batch_gpc[key] = len(kept)
        else:
            batch_latest[cid] = seq0 + len(kept) + 1
        outcomes.append(len(kept))
        kept.append((p, version))
    return kept, outcomes


def has_gpc(items: list[_Item]) -> bool:
    return any(p.action == GPC_ACTION for p, _ in items)


def written_settled(
    kept: list[_Item], rows: list[tuple[Any, ...]], outcomes: list[Outcome], at: str
) -> list[Written]:
    """written() for a batch that settle_gpc() thinned: duplicates answer with the record that stands."""
    fresh = written(kept, rows, at)
    out: list[Written] = []
    for o in outcomes:
        if isinstance(o, int):
            out.append(fresh[o])
        else:
            out.append((Prepared(*o[2:14]), o[0], parse_at(o[1]), o[-2], o[-1]))
    return out


def purge_record(
    cutoff: str, older_than: timedelta, removed: int, through: int, anchor: Checkpoint | None
) -> Prepared:
    """The log's own record of a purge: what went, and the checkpoint the rest verifies from."""
    return prepare_system(
        "purge",
        {
            "cutoff": cutoff,
            "older_than_days": older_than.days,
            "removed": removed,
            "through_seq": through if removed else 0,
            "anchor": anchor.hash if anchor else None,
        },
    )


def written(items: list[_Item], rows: list[tuple[Any, ...]], at: str) -> list[Written]:
    """What a commit of `items` as raw `rows` (ROW_COLUMNS order), all at time `at`, hands back.

    The callers build their LoggedRecord themselves, after the commit: that work then overlaps
    with the next batch's insert instead of holding up this one."""
    at_dt = parse_at(at)
    return [(p, r[0], at_dt, r[-2], r[-1]) for (p, _), r in zip(items, rows, strict=True)]


class BaseLog:
    """The append path shared by the backends: validation, version ids, the group-commit writer.

    A backend implements `_commit(items)` (one transaction, chain head re-read inside it) and
    `_commit_blocked(attempts)`, plus the read side.
    """

    log_id: str = ""
    migrated_from: int | None = None  # the schema version found when this process opened the log

    def __init__(
        self,
        *,
        hmac_key: bytes | None,
        previous_hmac_keys: Sequence[bytes] = (),
        checkpoint_every: int = CHECKPOINT_EVERY,
        checkpoint_interval: float = CHECKPOINT_INTERVAL,
        max_batch: int = 1000,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if hmac_key is not None and not isinstance(hmac_key, bytes | bytearray):
            raise TypeError("hmac_key must be bytes (see consent_banner.log.derive_hmac_key)")
        self._hmac_key = bytes(hmac_key) if hmac_key is not None else None
        self._key_id = key_id(self._hmac_key) if self._hmac_key is not None else None
        keys = [k for k in (self._hmac_key, *previous_hmac_keys) if k is not None]
        self.keys: dict[str, bytes] | None = {key_id(k): bytes(k) for k in keys} if keys else None
        # The server time of records; replaceable so tests (and demos) can write an old log.
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self.checkpoint_every = checkpoint_every
        self.checkpoint_interval = checkpoint_interval
        self._known_versions: set[str] = set()
        # Banner version payloads are hashed once per object: id() -> (object, version id, text).
        # The object is held so its id() cannot be reused by another dict while cached.
        self._version_cache: dict[int, tuple[Any, str, str]] = {}
        self.writer: GroupCommitWriter[_Item, Written, BlockedAttempt] = GroupCommitWriter(
            self._commit, side_commit=self._commit_blocked, max_batch=max_batch
        )

    # --- the write side ------------------------------------------------------------------------

    def _version(self, payload: Mapping[str, Any] | None) -> tuple[str, str] | None:
        if payload is None:
            return None
        hit = self._version_cache.get(id(payload))
        if hit is not None and hit[0] is payload:
            return hit[1], hit[2]
        try:
            vid, text = version_id_for(payload)
        except (TypeError, ValueError) as e:
            raise InvalidDecision(f"the banner version is not JSON data: {e}") from None
        if len(self._version_cache) >= 256:
            self._version_cache.clear()
        self._version_cache[id(payload)] = (payload, vid, text)
        return vid, text

    async def append(self, d: Decision) -> LoggedRecord:
        """Record a decision; return once it is durable. Raises LogUnavailable (fail closed)."""
        if self._hmac_key is None:
            raise LogUnavailable("the consent log was opened without a key: it can be read, not written")
        version = self._version(d.version)
        item = (prepare(d, version[0] if version else None), version)
        p, seq, at, prev_hash, hash_ = await self.writer.submit(item)
        return p.record(seq, at, prev_hash, hash_)

    async def add_blocked(self, b: BlockedAttempt) -> None:
        """Keep a CSP report, best effort: dropped (and counted) when the log is busy or failing."""
        self.writer.offer(b.sanitized())

    async def flush(self) -> None:
        """Wait until queued writes (CSP reports included) are done; for tests and shutdown."""
        await self.writer.flush()

    async def close(self) -> None:
        await self.writer.close()
        await self._close()

    async def _commit(self, items: list[_Item]) -> list[Written]:
        raise NotImplementedError

    async def _commit_blocked(self, attempts: list[BlockedAttempt]) -> None:
        raise NotImplementedError

    async def _close(self) -> None:
        raise NotImplementedError

    def _now(self) -> str:
        return format_at(self.clock())

    def _require_key(self) -> bytes:
        if self._hmac_key is None:
            raise LogError("this needs the server key: set CONSENT_SECRET_KEYS")
        return self._hmac_key

    # --- the head and the checkpoint chain, as a writer sees them ----------------------------------

    @staticmethod
    def _needs_chain(head: SignedHead, last: CheckpointLink | None) -> bool:
        """Whether _head_state() needs every checkpoint: a head or a last checkpoint of the previous
        release does not carry the chain's tip."""
        return head.checkpoints is None or (last is not None and last.prev is None)

    def _head_state(
        self,
        head: SignedHead,
        last: CheckpointLink | None,
        chain: Sequence[CheckpointLink] | None = None,
    ) -> HeadState:
        """The head read inside the write lock, if this log may build on it; LogUnavailable if not.

        A head this process did not write itself (see _is_ours) must be signed by a listed key and
        agree with the stored checkpoints: writing (and so re-signing) after a forged head would
        launder the forgery, so the log fails closed instead."""
        problem = head.problem(self.keys or {})
        if problem is not None:
            raise LogUnavailable(
                f"the consent log will not write after a head it cannot trust: {problem}; "
                "run `consent-banner log verify`"
            )
        if chain is not None:
            n, tip = 0, GENESIS
            for link in chain:
                n, tip = link.n, checkpoint_link(tip, link.mac)
        elif last is not None and last.prev is not None:
            n, tip = last.n, checkpoint_link(last.prev, last.mac)
        else:
            n, tip = 0, GENESIS
        if head.checkpoints is not None and head.checkpoints != tip:
            raise LogUnavailable(
                "the consent log will not write: its checkpoints are not those the signed head vouches "
                "for; run `consent-banner log verify`"
            )
        return HeadState(head.seq, head.hash, n, tip)

    @staticmethod
    def _is_ours(head: SignedHead, state: HeadState | None) -> bool:
        """The head is the one this process last wrote: its remembered state stands (the MAC and the
        checkpoint count need no second look; a change to either makes the next verify fail)."""
        return state is not None and (head.seq, head.hash, head.checkpoints) == (
            state.seq,
            state.hash,
            state.tip,
        )

    def _new_checkpoint(self, state: HeadState, seq: int, hash_: str, at: str, reason: str) -> Checkpoint:
        """The next checkpoint in the chain after `state` (insert it and move the head to its tip)."""
        key = self._require_key()
        assert self._key_id is not None
        n, prev = state.checkpoints + 1, state.tip
        mac = checkpoint_mac(key, self.log_id, seq, hash_, at, reason, n, prev)
        return Checkpoint(self.log_id, seq, hash_, at, reason, self._key_id, mac, n, prev)

    def _signed_head(self, seq: int, hash_: str, at: str, tip: str) -> tuple[Any, ...]:
        """(seq, hash, at, key_id, mac, checkpoints): the head row, signed with the newest key."""
        mac = head_mac(self._require_key(), self.log_id, seq, hash_, at, tip)
        return (seq, hash_, at, self._key_id, mac, tip)

    def _resign_reason(self, head: SignedHead) -> str | None:
        """Why the head found at start should be signed again by this process, or None.

        Re-signing keeps the head verifiable once an older key is removed, and brings a head of the
        previous release to this format. Only a head a listed key signed is re-signed."""
        if self._hmac_key is None or head.problem(self.keys or {}) is not None:
            return None
        if head.checkpoints is None:
            return "upgrade"
        if head.key_id != self._key_id:
            return "rotation"
        return None

    def _due_checkpoint(
        self, new_seq: int, last_cp_seq: int | None, last_cp_at: str | None, now: str
    ) -> bool:
        last = last_cp_seq or 0
        if new_seq <= last:
            return False
        if (
            new_seq - last >= self.checkpoint_every
            or new_seq // self.checkpoint_every > last // self.checkpoint_every
        ):
            return True
        if last_cp_at is None:  # the first batch of a new log gets one, so the log is pinned early
            return True
        try:
            age = (
                datetime.strptime(now, "%Y-%m-%dT%H:%M:%S.%fZ")
                - datetime.strptime(last_cp_at, "%Y-%m-%dT%H:%M:%S.%fZ")
            ).total_seconds()
        except ValueError:
            return True
        return age >= self.checkpoint_interval


def read_errors(*errors: type[BaseException]) -> Callable[[F], F]:
    """Turn a backend's own errors in a read method into LogUnavailable (the audit view and the
    receipt answer 503 for it; a raw "database is locked" never reaches a visitor)."""

    def decorate(fn: F) -> F:
        if inspect.isasyncgenfunction(fn):

            @functools.wraps(fn)
            async def gen(*args: Any, **kwargs: Any) -> Any:
                try:
                    # aclosing: a consumer that stops early closes the inner generator (and its
                    # snapshot connection) now, not whenever the garbage collector gets to it.
                    async with contextlib.aclosing(fn(*args, **kwargs)) as inner:
                        async for item in inner:
                            yield item
                except errors as e:
                    raise LogUnavailable(f"the consent log cannot be read: {e}") from e

            return gen  # type: ignore[return-value]

        @functools.wraps(fn)
        async def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return await fn(*args, **kwargs)
            except errors as e:
                raise LogUnavailable(f"the consent log cannot be read: {e}") from e

        return call  # type: ignore[return-value]

    return decorate


def decode_version(text: str | None) -> dict[str, Any] | None:
    return json.loads(text) if text else None


def valid_action(action: str | None) -> str | None:
    """An --action / ?action= value, checked."""
    if not action:
        return None
    if action not in ACTIONS and action not in SYSTEM_ACTIONS:
        raise ValueError(f"{action!r} is not an action: {', '.join(ACTIONS + SYSTEM_ACTIONS)}")
    return action
