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
from typing import Any, Protocol, TypeVar, runtime_checkable

from ..errors import LogError, LogUnavailable
from .events import (
    ACTIONS,
    SYSTEM_ACTIONS,
    BlockedAttempt,
    Checkpoint,
    Decision,
    InvalidDecision,
    LoggedRecord,
    Prepared,
    format_at,
    key_id,
    parse_at,
    prepare,
    prepare_system,
    version_id_for,
)
from .verify import VerifyResult
from .writer import GroupCommitWriter

logger = logging.getLogger("consent_banner.log")
F = TypeVar("F", bound=Callable[..., Any])

SCHEMA_VERSION = 1
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
    except ValueError:
        raise ValueError(f"{text!r} is not a date (YYYY-MM-DD) or an ISO time") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


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
    async def verify(self) -> VerifyResult: ...
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
