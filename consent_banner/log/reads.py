"""The read side of the log, written once for both backends over a driver's read sessions.

A driver supplies `_fetch` (a short query on its shared connection) and `_session` (a connection
of its own inside one read transaction: a consistent snapshot for an export, the stats or verify).
Its own errors become LogUnavailable here (the audit view and the receipt answer 503 for it; a raw
"database is locked" never reaches a visitor), and so does a closed log: reads and writes follow
one rule, because for every caller a closed log is a log that cannot serve now, not a broken one.
"""

from __future__ import annotations

import contextlib
import json
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from typing import Any, ClassVar, Protocol

from ..errors import LogUnavailable
from .canonical import Row
from .checkpoints import Checkpoint
from .filters import ALL_RECORDS, RecordFilter
from .head import SignedHead
from .keys import PublicKey
from .queries import Queries
from .records import LoggedRecord
from .results import BlockedOrigin, BlockedSummary, LogState, LogStats, VerifyResult
from .verify import ChainVerifier

VERIFY_CHUNK = 5000  # rows fetched at a time while verifying


class ReadSession(Protocol):
    """One connection inside one read transaction."""

    async def fetch(self, sql: str, params: Sequence[object] = ()) -> list[Row]: ...
    def chunks(self, sql: str, params: Sequence[object], size: int) -> AsyncGenerator[list[Row], None]: ...


class LogReads(ABC):
    """Every read a ConsentLog offers, over `_fetch` and `_session`."""

    log_id: str = ""
    keys: dict[str, bytes] | None = None  # key id -> HMAC key, for checking signatures
    public_keys: dict[str, PublicKey] | None = None  # key id -> the log's Ed25519 public keys
    sql: Queries
    read_errors: ClassVar[tuple[type[BaseException], ...]] = ()  # the driver's own errors

    @abstractmethod
    async def _fetch(self, sql: str, params: Sequence[object] = ()) -> list[Row]: ...

    @abstractmethod
    def _session(self) -> AbstractAsyncContextManager[ReadSession]: ...

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        try:
            yield
        except self.read_errors as e:
            raise LogUnavailable(f"the consent log cannot be read: {e}") from e

    async def records_for(self, consent_id: str) -> list[LoggedRecord]:
        with self._reading():
            rows = await self._fetch(self.sql.records_for, (consent_id,))
        return [LoggedRecord.from_row(r) for r in rows]

    async def get_record(self, seq: int) -> LoggedRecord | None:
        with self._reading():
            rows = await self._fetch(self.sql.record, (seq,))
        return LoggedRecord.from_row(rows[0]) if rows else None

    async def get_version(self, version_id: str) -> dict[str, Any] | None:
        with self._reading():
            rows = await self._fetch(self.sql.version, (version_id,))
        if not rows or not rows[0][0]:
            return None
        payload: dict[str, Any] = json.loads(rows[0][0])
        return payload

    async def count(self, flt: RecordFilter = ALL_RECORDS) -> int:
        with self._reading():
            rows = await self._fetch(*self.sql.count(flt))
        return int(rows[0][0])

    async def page(
        self, flt: RecordFilter = ALL_RECORDS, *, limit: int = 50, before: int | None = None
    ) -> list[LoggedRecord]:
        """Newest first; `before` is the seq to continue below (keyset paging)."""
        with self._reading():
            rows = await self._fetch(*self.sql.page(flt, limit, before))
        return [LoggedRecord.from_row(r) for r in rows]

    async def iter_chunks(
        self, flt: RecordFilter = ALL_RECORDS, *, chunk: int = 5000
    ) -> AsyncGenerator[list[Row], None]:
        """Lists of raw rows (ROW_COLUMNS order) in seq order, in one snapshot: an export's unit of work.
        `async for` per row costs a coroutine step per row; a chunk per step keeps a million cheap."""
        sql, params = self.sql.rows(flt)
        with self._reading():
            async with self._session() as s, contextlib.aclosing(s.chunks(sql, params, chunk)) as chunks:
                async for rows in chunks:
                    yield rows

    async def iter_rows(
        self, flt: RecordFilter = ALL_RECORDS, *, chunk: int = 5000
    ) -> AsyncGenerator[Row, None]:
        """Raw rows in seq order, fetched `chunk` at a time: constant memory."""
        async with contextlib.aclosing(self.iter_chunks(flt, chunk=chunk)) as chunks:
            async for rows in chunks:
                for r in rows:
                    yield r

    async def iter_records(
        self, flt: RecordFilter = ALL_RECORDS, *, chunk: int = 5000
    ) -> AsyncGenerator[LoggedRecord, None]:
        async with contextlib.aclosing(self.iter_rows(flt, chunk=chunk)) as rows:
            async for r in rows:
                yield LoggedRecord.from_row(r)

    async def export_chunks(
        self, flt: RecordFilter = ALL_RECORDS, *, chunk: int = 5000
    ) -> AsyncGenerator[LogState | list[Row], None]:
        """What an NDJSON export carries, in one snapshot: first the log's signed state (its head,
        checkpoints and banner versions), then its raw rows in chunks, as iter_chunks. A filtered
        export gets the rows alone: a part of the chain cannot be held against the head."""
        sql, params = self.sql.rows(flt)
        with self._reading():
            async with self._session() as s:
                if flt == ALL_RECORDS:
                    heads = await s.fetch(self.sql.head)
                    cps = [Checkpoint(self.log_id, *r) for r in await s.fetch(self.sql.checkpoints)]
                    versions: dict[str, str] = dict(await s.fetch(self.sql.versions))
                    head = SignedHead(self.log_id, *heads[0]) if heads else None
                    yield LogState(self.log_id, head, cps, versions)
                async with contextlib.aclosing(s.chunks(sql, params, chunk)) as chunks:
                    async for rows in chunks:
                        yield rows

    async def stats(self, flt: RecordFilter = ALL_RECORDS) -> LogStats:
        s = LogStats()
        with self._reading():
            async with self._session() as db:
                s.add_rows(await db.fetch(*self.sql.groups(flt)))
                s.add_jurisdictions(await db.fetch(*self.sql.jurisdictions(flt)))
                rows = await db.fetch(*self.sql.consent_ids(replace(flt, decisions_only=True)))
        s.consent_ids = int(rows[0][0])
        return s

    async def checkpoints(self) -> list[Checkpoint]:
        """Every checkpoint, in the order they were signed."""
        with self._reading():
            rows = await self._fetch(self.sql.checkpoints)
        return [Checkpoint(self.log_id, *r) for r in rows]

    async def blocked(self, *, limit: int = 200) -> list[BlockedSummary]:
        with self._reading():
            rows = await self._fetch(self.sql.blocked, (limit,))
        return [BlockedSummary(*r) for r in rows]

    async def blocked_origins(self) -> list[BlockedOrigin]:
        """Every blocked origin reported, with its distinct clients and directives, most clients first."""
        with self._reading():
            async with self._session() as db:
                origins = await db.fetch(self.sql.blocked_origins)
                directives = await db.fetch(self.sql.blocked_directives)
                scripts: dict[str, int] = dict(await db.fetch(self.sql.blocked_script_clients))
        by_origin: dict[str, dict[str, int]] = {}
        for origin, directive, n in directives:
            by_origin.setdefault(origin, {})[directive] = int(n)
        found = [
            BlockedOrigin(
                o, int(n), int(c), int(pages), page, first, last, by_origin.get(o, {}), int(scripts.get(o, 0))
            )
            for o, n, c, pages, page, first, last in origins
        ]
        return sorted(found, key=lambda b: (-b.clients, -b.count, b.origin))

    async def verify(self, pins: Sequence[Checkpoint] = (), *, require_public: bool = False) -> VerifyResult:
        """Recompute the whole chain in one consistent snapshot, with checkpoints pinned elsewhere. R22.
        `require_public`: the head must carry an Ed25519 signature by one of `public_keys` (an
        auditor who gave the public key asks for nothing less)."""
        with self._reading():
            async with self._session() as db:
                heads = await db.fetch(self.sql.head)
                cps = [Checkpoint(self.log_id, *r) for r in await db.fetch(self.sql.checkpoints)]
                versions: Mapping[str, str] = dict(await db.fetch(self.sql.versions))
                v = ChainVerifier(
                    checkpoints=cps,
                    keys=self.keys,
                    public_keys=self.public_keys,
                    require_public=require_public,
                    head=SignedHead(self.log_id, *heads[0]) if heads else None,
                    head_required=True,
                    versions=versions,
                    log_id=self.log_id,
                    pins=pins,
                )
                async with contextlib.aclosing(db.chunks(self.sql.all_records, (), VERIFY_CHUNK)) as chunks:
                    async for rows in chunks:
                        if not v.feed_all(rows):
                            break
        return v.finish()
