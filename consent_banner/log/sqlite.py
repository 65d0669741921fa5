"""The SQLite backend (the default): aiosqlite, WAL, group commit, safe across processes.

One writer connection per process, driven by the group-commit writer task. Each batch is one
`BEGIN IMMEDIATE` transaction that re-reads the chain head *inside* the write lock, so several
processes on one file (uvicorn --workers N) interleave whole batches and never fork the chain.
Lock waits are absorbed by SQLite's busy timeout and then by our own retry until a deadline;
only after that does a caller get LogUnavailable: "database is locked" never reaches a visitor.

`synchronous=FULL`: a commit is on disk when it returns, so an acknowledged decision survives a
power cut, not only a process crash (R23). Group commit is what makes that affordable.

Readers use their own connections: WAL lets them read a consistent snapshot while the writer
appends, and a long export or verify gets a fresh connection of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiosqlite

from ..errors import LogError, LogUnavailable
from .base import (
    ALL_RECORDS,
    SCHEMA_VERSION,
    BaseLog,
    BlockedSummary,
    LogStats,
    PurgeResult,
    RecordFilter,
    Written,
    _Item,
    decode_version,
    read_errors,
)
from .events import (
    GENESIS,
    ROW_COLUMNS,
    BlockedAttempt,
    Checkpoint,
    LoggedRecord,
    chain,
    checkpoint_mac,
    format_at,
    parse_at,
    prepare_system,
    sign,
)
from .verify import ChainVerifier, SignedHead, VerifyResult

_reads = read_errors(sqlite3.Error)
BUSY_TIMEOUT_MS = 5000  # SQLite waits this long for a lock by itself
WRITE_DEADLINE = 15.0  # seconds a batch keeps retrying a busy database before failing closed

_RECORD_COLS = ", ".join(ROW_COLUMNS)
_INSERT_RECORD = f"INSERT INTO records ({_RECORD_COLS}) VALUES ({', '.join('?' * len(ROW_COLUMNS))})"

# Version 1 of the schema. Each later version appends its statements to MIGRATIONS.
_SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    consent_id TEXT NOT NULL,
    action TEXT NOT NULL,
    granted TEXT NOT NULL,
    denied TEXT NOT NULL,
    services TEXT NOT NULL,
    revision TEXT NOT NULL,
    language TEXT NOT NULL,
    source TEXT NOT NULL,
    version_id TEXT,
    ip TEXT,
    browser TEXT,
    detail TEXT,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_consent_id ON records (consent_id);
CREATE INDEX IF NOT EXISTS records_at ON records (at);
CREATE TABLE IF NOT EXISTS versions (id TEXT PRIMARY KEY, created_at TEXT NOT NULL, payload TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL,
    at TEXT,
    key_id TEXT,
    mac TEXT
);
CREATE TABLE IF NOT EXISTS checkpoints (
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL,
    at TEXT NOT NULL,
    reason TEXT NOT NULL,
    key_id TEXT NOT NULL,
    mac TEXT NOT NULL,
    PRIMARY KEY (seq, reason)
);
CREATE TABLE IF NOT EXISTS blocked (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    page TEXT NOT NULL,
    origin TEXT NOT NULL,
    directive TEXT NOT NULL,
    consent_id TEXT
);
CREATE INDEX IF NOT EXISTS blocked_at ON blocked (at);
-- Append-only by construction: the log never updates a record, a version or a checkpoint.
-- (Someone with write access can drop these triggers; verify still sees what they did.)
CREATE TRIGGER IF NOT EXISTS records_append_only BEFORE UPDATE ON records
BEGIN SELECT RAISE(ABORT, 'consent log records are append-only'); END;
CREATE TRIGGER IF NOT EXISTS versions_immutable_u BEFORE UPDATE ON versions
BEGIN SELECT RAISE(ABORT, 'banner versions are immutable'); END;
CREATE TRIGGER IF NOT EXISTS versions_immutable_d BEFORE DELETE ON versions
BEGIN SELECT RAISE(ABORT, 'banner versions are immutable'); END;
CREATE TRIGGER IF NOT EXISTS checkpoints_immutable BEFORE UPDATE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'checkpoints are immutable'); END;
"""
MIGRATIONS: dict[int, str] = {1: _SCHEMA_V1}
BLOCKED_KEEP = 100_000  # CSP report rows kept at most; the oldest go first


def _busy(e: BaseException) -> bool:
    if not isinstance(e, sqlite3.OperationalError):
        return False
    code = getattr(e, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(e) or "busy" in str(e)


def path_from_url(url: str) -> str:
    """sqlite:///relative.db, sqlite:////absolute.db, or memory:// (":memory:")."""
    if url.startswith("memory://"):
        return ":memory:"
    if not url.startswith("sqlite:///"):
        raise LogError(f"{url!r} is not a SQLite URL (sqlite:///path/to/file.db)")
    path = url[len("sqlite:///") :].split("?", 1)[0]
    if not path:
        raise LogError(f"{url!r} names no file")
    return path


class SQLiteLog(BaseLog):
    """The consent log in one SQLite file. Create it with `open_log("sqlite:///...")`."""

    def __init__(self, path: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = path
        self.memory = path == ":memory:"
        self._db: aiosqlite.Connection | None = None  # the writer's
        self._reader: aiosqlite.Connection | None = None
        # In memory there is one connection: reads must not see a batch that is still open.
        self._mem_lock = asyncio.Lock()
        self._blocked_since_prune = 0

    # --- opening -------------------------------------------------------------------------------

    async def _connect(self, *, readonly: bool = False) -> aiosqlite.Connection:
        pending = aiosqlite.connect(
            self.path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000, iter_chunk_size=2000
        )
        try:
            db = await pending
        except BaseException:
            # A failed connect stops aiosqlite's worker thread without waiting for it; the thread then
            # reports to the event loop, which must still be running: wait for it here.
            await asyncio.get_running_loop().run_in_executor(None, pending._thread.join, 5)
            raise
        try:
            await db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            await db.execute("PRAGMA synchronous = FULL")
            if readonly:
                await db.execute("PRAGMA query_only = ON")
            else:
                # 64 MB of page cache for the writer: the consent-id index takes random inserts.
                # Readers keep the default (2 MB): an export streams, it does not revisit pages.
                await db.execute("PRAGMA cache_size = -65536")
        except BaseException:
            await db.close()
            raise
        return db

    async def open(self, *, create: bool = True, migrate: bool = True) -> SQLiteLog:
        if not self.memory:
            p = Path(self.path)
            if not create and not p.exists():
                raise LogError(f"there is no consent log at {p.resolve()}")
            if not p.parent.exists():
                raise LogUnavailable(
                    f"cannot open the consent log: directory {p.parent.resolve()} does not exist"
                )
        try:
            self._db = await self._connect()
            await self._retry_busy(self._enable_wal)
            if migrate:
                self.migrated_from, _ = await self._retry_busy(self.migrate)
            await self._load_meta()
            if self._hmac_key is not None:
                await self._retry_busy(self._sign_genesis)
            self._reader = self._db if self.memory else await self._connect(readonly=True)
        except sqlite3.Error as e:
            await self._close()
            raise LogUnavailable(f"cannot open the consent log {self.path}: {e}") from e
        except BaseException:
            await self._close()
            raise
        self.writer.start()
        return self

    async def _retry_busy(self, fn: Any) -> Any:
        deadline = time.monotonic() + WRITE_DEADLINE
        delay = 0.005
        while True:
            try:
                return await fn()
            except sqlite3.OperationalError as e:
                if not _busy(e) or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.2)

    async def _enable_wal(self) -> None:
        assert self._db is not None
        if not self.memory:
            async with self._db.execute("PRAGMA journal_mode = WAL") as cur:
                row = await cur.fetchone()
            if row is None or str(row[0]).lower() != "wal":
                raise LogUnavailable(f"the consent log {self.path} cannot use WAL mode (got {row})")

    async def schema_version(self) -> int:
        assert self._db is not None
        async with self._db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
        ) as cur:
            if await cur.fetchone() is None:
                return 0
        async with self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def migrate(self) -> tuple[int, int]:
        """Create or upgrade the schema; (version before, version after)."""
        db = self._db
        assert db is not None
        await db.execute("BEGIN IMMEDIATE")
        try:
            before = await self.schema_version()
            if before > SCHEMA_VERSION:
                raise LogError(
                    f"the consent log's schema is version {before}; this consent-banner knows up to "
                    f"{SCHEMA_VERSION}: upgrade consent-banner"
                )
            for version in range(before + 1, SCHEMA_VERSION + 1):
                for statement in _statements(MIGRATIONS[version]):
                    await db.execute(statement)
                await db.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (str(version),),
                )
            if before == 0:
                await db.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('log_id', ?)", (secrets.token_hex(16),)
                )
                await db.execute("INSERT OR IGNORE INTO head (id, seq, hash) VALUES (1, 0, ?)", (GENESIS,))
            await db.execute("COMMIT")
        except BaseException:
            await _rollback(db)
            raise
        return before, SCHEMA_VERSION

    async def _load_meta(self) -> None:
        assert self._db is not None
        if await self.schema_version() == 0:
            raise LogError("the consent log has no schema yet: run `consent-banner log migrate`")
        async with self._db.execute("SELECT value FROM meta WHERE key = 'log_id'") as cur:
            row = await cur.fetchone()
        self.log_id = row[0] if row else ""

    async def _sign_genesis(self) -> None:
        """A brand-new log's empty head gets signed, so an emptied log cannot pass for a new one."""
        db = self._db
        assert db is not None and self._hmac_key is not None
        await db.execute("BEGIN IMMEDIATE")
        try:
            async with db.execute("SELECT seq, hash, mac FROM head WHERE id = 1") as cur:
                row = await cur.fetchone()
            if row is not None and row[0] == 0 and row[2] is None:
                at = self._now()
                mac = sign(self._hmac_key, "head", self.log_id, 0, row[1], at)
                await db.execute(
                    "UPDATE head SET at = ?, key_id = ?, mac = ? WHERE id = 1", (at, self._key_id, mac)
                )
            await db.execute("COMMIT")
        except BaseException:
            await _rollback(db)
            raise

    async def _close(self) -> None:
        for conn in {id(c): c for c in (self._reader, self._db) if c is not None}.values():
            with contextlib.suppress(Exception):
                await conn.close()
        self._db = self._reader = None

    # --- writing -------------------------------------------------------------------------------

    async def _begin_immediate(self, db: aiosqlite.Connection) -> None:
        deadline = time.monotonic() + WRITE_DEADLINE
        delay = 0.002
        while True:
            try:
                await db.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as e:
                if not _busy(e):
                    raise
                if time.monotonic() > deadline:
                    raise LogUnavailable(
                        f"the consent log stayed locked by another writer for {WRITE_DEADLINE:.0f} s"
                    ) from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.1)

    async def _commit(self, items: list[_Item]) -> list[Written]:
        if self.memory:
            async with self._mem_lock:
                return await self._commit_locked(items)
        return await self._commit_locked(items)

    async def _commit_locked(self, items: list[_Item]) -> list[Written]:
        db = self._db
        if db is None:
            raise LogUnavailable("the consent log is closed")
        key = self._require_key()
        await self._begin_immediate(db)
        try:
            # Re-read the head inside the write lock: another process may have appended since.
            async with db.execute(
                "SELECT h.seq, h.hash, c.seq, c.at FROM head h "
                "LEFT JOIN (SELECT seq, at FROM checkpoints ORDER BY seq DESC LIMIT 1) c ON 1 = 1 "
                "WHERE h.id = 1"
            ) as cur:
                head = await cur.fetchone()
            if head is None:
                raise LogError("the consent log's head row is missing: the log was tampered with")
            seq0, prev, last_cp_seq, last_cp_at = head
            at = self._now()
            new_versions = {
                v[0]: v[1] for _, v in items if v is not None and v[0] not in self._known_versions
            }
            if new_versions:
                await db.executemany(
                    "INSERT OR IGNORE INTO versions (id, created_at, payload) VALUES (?, ?, ?)",
                    [(vid, at, text) for vid, text in new_versions.items()],
                )
            cols = [p.columns(at) for p, _ in items]
            links, new_head = chain(prev, cols)
            rows = [(seq0 + i + 1, *c, *link) for i, (c, link) in enumerate(zip(cols, links, strict=True))]
            await _insert_records(db, rows)
            new_seq = seq0 + len(rows)
            mac = sign(key, "head", self.log_id, new_seq, new_head, at)
            await db.execute(
                "UPDATE head SET seq = ?, hash = ?, at = ?, key_id = ?, mac = ? WHERE id = 1",
                (new_seq, new_head, at, self._key_id, mac),
            )
            if self._due_checkpoint(new_seq, last_cp_seq, last_cp_at, at):
                await self._insert_checkpoint(db, new_seq, new_head, at, "periodic")
            await db.execute("COMMIT")
        except BaseException:
            await _rollback(db)
            raise
        self._known_versions.update(new_versions)
        at_dt = parse_at(at)
        # The callers build their LoggedRecord themselves, after the commit: that work then overlaps
        # with the next batch's insert instead of holding up this one.
        return [(p, r[0], at_dt, r[-2], r[-1]) for (p, _), r in zip(items, rows, strict=True)]

    async def _insert_checkpoint(
        self, db: aiosqlite.Connection, seq: int, head: str, at: str, reason: str
    ) -> Checkpoint:
        key = self._require_key()
        assert self._key_id is not None
        cp = Checkpoint(
            self.log_id,
            seq,
            head,
            at,
            reason,
            self._key_id,
            checkpoint_mac(key, self.log_id, seq, head, at, reason),
        )
        await db.execute(
            "INSERT OR IGNORE INTO checkpoints (seq, hash, at, reason, key_id, mac) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (cp.seq, cp.hash, cp.at, cp.reason, cp.key_id, cp.mac),
        )
        return cp

    async def _commit_blocked(self, attempts: list[BlockedAttempt]) -> None:
        db = self._db
        if db is None or not attempts:
            return
        at = self._now()
        rows = [
            (format_at(a.at) if a.at else at, a.page, a.origin, a.directive, a.consent_id) for a in attempts
        ]
        async with contextlib.AsyncExitStack() as stack:
            if self.memory:
                await stack.enter_async_context(self._mem_lock)
            await self._begin_immediate(db)
            try:
                await db.executemany(
                    "INSERT INTO blocked (at, page, origin, directive, consent_id) VALUES (?, ?, ?, ?, ?)",
                    rows,
                )
                self._blocked_since_prune += len(rows)
                if self._blocked_since_prune >= 1000:
                    self._blocked_since_prune = 0
                    await db.execute(
                        "DELETE FROM blocked WHERE id <= (SELECT max(id) FROM blocked) - ?", (BLOCKED_KEEP,)
                    )
                await db.execute("COMMIT")
            except BaseException:
                await _rollback(db)
                raise

    async def checkpoint(self, reason: str = "manual") -> Checkpoint:
        """Sign the current head now (to export and pin elsewhere)."""
        db = self._db
        assert db is not None
        async with contextlib.AsyncExitStack() as stack:
            if self.memory:
                await stack.enter_async_context(self._mem_lock)
            await self._begin_immediate(db)
            try:
                async with db.execute("SELECT seq, hash FROM head WHERE id = 1") as cur:
                    seq, head = await cur.fetchone()  # type: ignore[misc]
                existing = await self._checkpoint_at(db, seq)
                cp = existing or await self._insert_checkpoint(db, seq, head, self._now(), reason)
                await db.execute("COMMIT")
            except BaseException:
                await _rollback(db)
                raise
        return cp

    async def _checkpoint_at(
        self, db: aiosqlite.Connection, seq: int, reason: str | None = None
    ) -> Checkpoint | None:
        async with db.execute(
            "SELECT seq, hash, at, reason, key_id, mac FROM checkpoints "
            "WHERE seq = ? AND reason = coalesce(?, reason)",
            (seq, reason),
        ) as cur:
            row = await cur.fetchone()
        return Checkpoint(self.log_id, *row) if row else None

    async def purge(self, older_than: timedelta) -> PurgeResult:
        """Remove records older than `older_than`, anchored by a signed checkpoint; log the purge. R21."""
        db = self._db
        assert db is not None
        key = self._require_key()
        cutoff = format_at(self.clock() - older_than)
        async with contextlib.AsyncExitStack() as stack:
            if self.memory:
                await stack.enter_async_context(self._mem_lock)
            await self._begin_immediate(db)
            try:
                async with db.execute("SELECT seq, hash FROM head WHERE id = 1") as cur:
                    seq0, prev = await cur.fetchone()  # type: ignore[misc]
                # Only a prefix of the chain can go: up to the first record at or after the cutoff.
                async with db.execute("SELECT min(seq) FROM records WHERE at >= ?", (cutoff,)) as cur:
                    (first_kept,) = await cur.fetchone()  # type: ignore[misc]
                through = (first_kept - 1) if first_kept is not None else seq0
                async with db.execute(
                    "SELECT count(*), (SELECT hash FROM records WHERE seq = ?) FROM records WHERE seq <= ?",
                    (through, through),
                ) as cur:
                    removed, through_hash = await cur.fetchone()  # type: ignore[misc]
                anchor = None
                at = self._now()
                if removed:
                    anchor = await self._checkpoint_at(db, through, "purge") or await self._insert_checkpoint(
                        db, through, through_hash, at, "purge"
                    )
                    await db.execute("DELETE FROM records WHERE seq <= ?", (through,))
                p = prepare_system(
                    "purge",
                    {
                        "cutoff": cutoff,
                        "older_than_days": older_than.days,
                        "removed": removed,
                        "through_seq": through if removed else 0,
                        "anchor": anchor.hash if anchor else None,
                    },
                )
                cols = p.columns(at)
                links, new_head = chain(prev, [cols])
                row = (seq0 + 1, *cols, *links[0])
                await _insert_records(db, [row])
                await db.execute(
                    "UPDATE head SET seq = ?, hash = ?, at = ?, key_id = ?, mac = ? WHERE id = 1",
                    (
                        seq0 + 1,
                        new_head,
                        at,
                        self._key_id,
                        sign(key, "head", self.log_id, seq0 + 1, new_head, at),
                    ),
                )
                await db.execute("COMMIT")
            except sqlite3.Error as e:
                await _rollback(db)
                raise LogUnavailable(f"the purge failed and was rolled back: {e}") from e
            except BaseException:
                await _rollback(db)
                raise
        return PurgeResult(removed, through if removed else 0, cutoff, anchor, LoggedRecord.from_row(row))

    # --- reading -------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[aiosqlite.Connection]:
        """The shared reader (short queries)."""
        if self._reader is None:
            raise LogError("the consent log is closed")
        if self.memory:
            async with self._mem_lock:
                yield self._reader
        else:
            yield self._reader

    @contextlib.asynccontextmanager
    async def _snapshot(self) -> AsyncIterator[aiosqlite.Connection]:
        """A connection of its own inside one read transaction: a consistent view for long reads."""
        if self.memory:
            async with self._read() as db:
                yield db
            return
        db = await self._connect(readonly=True)
        try:
            await db.execute("BEGIN")
            yield db
        finally:
            with contextlib.suppress(Exception):
                await db.execute("COMMIT")
            await db.close()

    async def _fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        async with self._read() as db:
            return list(await db.execute_fetchall(sql, params))

    @_reads
    async def records_for(self, consent_id: str) -> list[LoggedRecord]:
        rows = await self._fetchall(
            f"SELECT {_RECORD_COLS} FROM records WHERE consent_id = ? ORDER BY seq", (consent_id,)
        )
        return [LoggedRecord.from_row(r) for r in rows]

    @_reads
    async def get_record(self, seq: int) -> LoggedRecord | None:
        rows = await self._fetchall(f"SELECT {_RECORD_COLS} FROM records WHERE seq = ?", (seq,))
        return LoggedRecord.from_row(rows[0]) if rows else None

    @_reads
    async def get_version(self, version_id: str) -> dict[str, Any] | None:
        rows = await self._fetchall("SELECT payload FROM versions WHERE id = ?", (version_id,))
        return decode_version(rows[0][0]) if rows else None

    @_reads
    async def count(self, flt: RecordFilter = ALL_RECORDS) -> int:
        where, params = flt.clauses(lambda i: "?")
        rows = await self._fetchall(f"SELECT count(*) FROM records{where}", params)
        return int(rows[0][0])

    @_reads
    async def page(
        self,
        flt: RecordFilter = ALL_RECORDS,
        *,
        limit: int = 50,
        before: int | None = None,
    ) -> list[LoggedRecord]:
        """Newest first; `before` is the seq to continue below (keyset paging)."""
        where, params = flt.clauses(lambda i: "?")
        if before is not None:
            where += (" AND" if where else " WHERE") + " seq < ?"
            params.append(before)
        rows = await self._fetchall(
            f"SELECT {_RECORD_COLS} FROM records{where} ORDER BY seq DESC LIMIT ?", [*params, limit]
        )
        return [LoggedRecord.from_row(r) for r in rows]

    async def iter_rows(
        self,
        flt: RecordFilter = ALL_RECORDS,
        *,
        chunk: int = 5000,
    ) -> AsyncIterator[tuple[Any, ...]]:
        """Raw rows (ROW_COLUMNS order) in seq order, fetched `chunk` at a time: constant memory."""
        async with contextlib.aclosing(self.iter_chunks(flt, chunk=chunk)) as chunks:
            async for rows in chunks:
                for r in rows:
                    yield r

    @_reads
    async def iter_chunks(
        self,
        flt: RecordFilter = ALL_RECORDS,
        *,
        chunk: int = 5000,
    ) -> AsyncIterator[list[tuple[Any, ...]]]:
        """Lists of raw rows in seq order, in one snapshot: an export's unit of work."""
        where, params = flt.clauses(lambda i: "?")
        async with self._snapshot() as db:
            async with db.execute(f"SELECT {_RECORD_COLS} FROM records{where} ORDER BY seq", params) as cur:
                while True:
                    rows = await cur.fetchmany(chunk)
                    if not rows:
                        return
                    yield rows

    async def iter_records(
        self,
        flt: RecordFilter = ALL_RECORDS,
        *,
        chunk: int = 5000,
    ) -> AsyncIterator[LoggedRecord]:
        async with contextlib.aclosing(self.iter_rows(flt, chunk=chunk)) as rows:
            async for r in rows:
                yield LoggedRecord.from_row(r)

    @_reads
    async def stats(self, flt: RecordFilter = ALL_RECORDS) -> LogStats:
        where, params = flt.clauses(lambda i: "?")
        dwhere, dparams = replace(flt, decisions_only=True).clauses(lambda i: "?")
        s = LogStats()
        async with self._snapshot() as db:
            s.add_rows(await db.execute_fetchall(LogStats.GROUPS_SQL.format(where=where), params))
            rows = await db.execute_fetchall(
                f"SELECT count(DISTINCT consent_id) FROM records{dwhere}", dparams
            )
            s.consent_ids = next(iter(rows))[0]
        return s

    @_reads
    async def checkpoints(self) -> list[Checkpoint]:
        rows = await self._fetchall("SELECT seq, hash, at, reason, key_id, mac FROM checkpoints ORDER BY seq")
        return [Checkpoint(self.log_id, *r) for r in rows]

    @_reads
    async def verify(self) -> VerifyResult:
        """Recompute the whole chain in one consistent snapshot. R22."""
        async with self._snapshot() as db:
            heads = list(
                await db.execute_fetchall("SELECT seq, hash, at, key_id, mac FROM head WHERE id = 1")
            )
            head_row = heads[0] if heads else None
            cps = [
                Checkpoint(self.log_id, *r)
                for r in await db.execute_fetchall(
                    "SELECT seq, hash, at, reason, key_id, mac FROM checkpoints ORDER BY seq"
                )
            ]
            versions = {
                vid: text for vid, text in await db.execute_fetchall("SELECT id, payload FROM versions")
            }
            head = SignedHead(self.log_id, *head_row) if head_row else None
            v = ChainVerifier(
                checkpoints=cps, keys=self.keys, head=head, versions=versions, log_id=self.log_id
            )
            if head is None:
                v.finish()
                return VerifyResult(ok=False, records=0, problem="missing", reason="the head row is missing")
            async with db.execute(f"SELECT {_RECORD_COLS} FROM records ORDER BY seq") as cur:
                while not v.failed:
                    rows = await cur.fetchmany(5000)
                    if not rows:
                        break
                    for r in rows:
                        if not v.feed(r):
                            break
        return v.finish()

    @_reads
    async def blocked(self, *, limit: int = 200) -> list[BlockedSummary]:
        rows = await self._fetchall(
            "SELECT page, origin, directive, count(*), min(at), max(at), count(consent_id) FROM blocked "
            "GROUP BY page, origin, directive ORDER BY count(*) DESC, max(at) DESC LIMIT ?",
            (limit,),
        )
        return [BlockedSummary(*r) for r in rows]


_ROW_PLACEHOLDERS = "(" + ", ".join("?" * len(ROW_COLUMNS)) + ")"
INSERT_CHUNK = 1000  # rows per INSERT statement: 16,000 parameters, under SQLite's 32,766


async def _insert_records(db: aiosqlite.Connection, rows: list[tuple[Any, ...]]) -> None:
    """Insert with multi-row INSERT statements rather than executemany().

    executemany() takes the GIL back for every row it binds; while the event loop is busy that
    means waiting out Python's switch interval per row. One statement per thousand rows binds
    everything at once and runs the inserts in C without the GIL, in parallel with the loop.
    """
    for start in range(0, len(rows), INSERT_CHUNK):
        part = rows[start : start + INSERT_CHUNK]
        await db.execute(_insert_sql(len(part)), list(itertools.chain.from_iterable(part)))


@functools.lru_cache(maxsize=64)
def _insert_sql(n: int) -> str:
    return f"INSERT INTO records ({_RECORD_COLS}) VALUES " + ", ".join([_ROW_PLACEHOLDERS] * n)


def _statements(script: str) -> list[str]:
    """Split a schema script into statements (triggers contain ';' inside BEGIN ... END)."""
    out, buf = [], []
    for line in script.strip().splitlines():
        if line.startswith("--") or not line.strip():
            continue
        buf.append(line)
        joined = "\n".join(buf)
        if sqlite3.complete_statement(joined):
            out.append(joined)
            buf = []
    return out


async def _rollback(db: aiosqlite.Connection) -> None:
    # "no transaction is active" (the failure was BEGIN itself) is fine to ignore.
    with contextlib.suppress(Exception):
        await db.execute("ROLLBACK")


async def open_sqlite(url: str, *, create: bool = True, **kwargs: Any) -> SQLiteLog:
    path = path_from_url(url)
    if path != ":memory:":
        path = os.fspath(Path(path))
    return await SQLiteLog(path, **kwargs).open(create=create)
