"""The SQLite backend (the default): WAL, group commit, safe across processes.

One writer connection per process, on a thread of its own, fed by the group-commit writer task.
Each batch is one `BEGIN IMMEDIATE` transaction, sent to that thread in one trip, that re-reads
the chain head *inside* the write lock: the batch was linked after the head this process last
wrote, and is linked afresh if another process appended since. So several processes on one file
(uvicorn --workers N) interleave whole batches and never fork the chain.
Lock waits are absorbed by SQLite's busy timeout and then by our own retry until a deadline;
only after that does a caller get LogUnavailable: "database is locked" never reaches a visitor.

`synchronous=FULL`: a commit is on disk when it returns, so an acknowledged decision survives a
power cut, not only a process crash (R23). Group commit is what makes that affordable.

Readers use their own aiosqlite connections: WAL lets them read a consistent snapshot while the
writer appends, and a long export or verify gets a fresh connection of its own.
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
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from ..errors import LogError, LogUnavailable
from .base import (
    ALL_RECORDS,
    GPC_ACTION,
    SCHEMA_VERSION,
    BaseLog,
    BlockedSummary,
    CheckpointLink,
    HeadState,
    LogStats,
    PurgeResult,
    RecordFilter,
    Written,
    _Item,
    decode_version,
    has_gpc,
    logger,
    purge_record,
    read_errors,
    settle_gpc,
    written,
    written_settled,
)
from .events import (
    GENESIS,
    ROW_COLUMNS,
    BlockedAttempt,
    Checkpoint,
    LoggedRecord,
    checkpoint_link,
    format_at,
    link_rows,
)
from .verify import ChainVerifier, SignedHead, VerifyResult

_reads = read_errors(sqlite3.Error)
_T = TypeVar("_T")
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
# Version 2: checkpoints form a chain (n, prev) that the head signs (head.checkpoints); they refuse
# DELETE too; a GPC record is written once per consent id and decision it amends. The previous
# release's checkpoints are numbered in a fixed order; their own signatures stay as they are.
_SCHEMA_V2 = """
ALTER TABLE checkpoints ADD COLUMN n INTEGER;
ALTER TABLE checkpoints ADD COLUMN prev TEXT;
ALTER TABLE head ADD COLUMN checkpoints TEXT;
DROP TRIGGER IF EXISTS checkpoints_immutable;
UPDATE checkpoints SET n = (SELECT count(*) FROM checkpoints c
    WHERE c.seq < checkpoints.seq OR (c.seq = checkpoints.seq AND c.reason <= checkpoints.reason));
CREATE UNIQUE INDEX IF NOT EXISTS checkpoints_n ON checkpoints (n);
CREATE TRIGGER IF NOT EXISTS checkpoints_immutable BEFORE UPDATE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'checkpoints are immutable'); END;
CREATE TRIGGER IF NOT EXISTS checkpoints_kept BEFORE DELETE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'checkpoints are never deleted'); END;
CREATE UNIQUE INDEX IF NOT EXISTS records_gpc_once ON records (consent_id, detail) WHERE action = 'gpc';
"""
MIGRATIONS: dict[int, str] = {1: _SCHEMA_V1, 2: _SCHEMA_V2}
_CHECKPOINT_COLS = "seq, hash, at, reason, key_id, mac, n, prev"
# The head, the newest checkpoint in the chain, and the one at the highest record (for due-ness).
_STATE_SQL = (
    "SELECT h.seq, h.hash, h.at, h.key_id, h.mac, h.checkpoints, c.n, c.prev, c.mac, t.seq, t.at "
    "FROM head h "
    "LEFT JOIN (SELECT n, prev, mac FROM checkpoints WHERE n IS NOT NULL ORDER BY n DESC LIMIT 1) c ON 1 = 1 "
    "LEFT JOIN (SELECT seq, at FROM checkpoints ORDER BY seq DESC LIMIT 1) t ON 1 = 1 "
    "WHERE h.id = 1"
)
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


class _WriterThread:
    """One sqlite3 connection used on one thread only; `run(fn, *args)` calls `fn(conn, *args)` there.

    The log's own writes do not go through aiosqlite: aiosqlite sends one statement per trip to its
    thread, and each trip's answer waits behind every callback the event loop has queued. A batch is
    a transaction of five statements or more, so as separate trips the thread sat idle while the loop
    woke the previous batch's callers (31,000 decisions/s, one core busy). Sent as one trip, the
    insert and the fsync run on the other core while the loop works. Reads still use aiosqlite.
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="consent-log-writer")
        self._conn: sqlite3.Connection | None = None

    async def open(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._conn = await self._call(connect)

    async def run(self, fn: Callable[..., _T], *args: Any) -> _T:
        if self._conn is None:
            raise LogUnavailable("the consent log is closed")
        return await self._call(fn, self._conn, *args)

    async def _call(self, fn: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await self._call(conn.close)
        self._pool.shutdown(wait=True)  # the thread is idle by now: this only joins it


class SQLiteLog(BaseLog):
    """The consent log in one SQLite file. Create it with `open_log("sqlite:///...")`."""

    def __init__(self, path: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = path
        self.memory = path == ":memory:"
        # In memory, the writer's and the reader's connections share one database (SQLite's shared
        # cache); a name of its own per log keeps two logs in one process apart.
        self._target = (
            f"file:consent-log-{secrets.token_hex(8)}?mode=memory&cache=shared" if self.memory else path
        )
        self._w = _WriterThread()
        self._reader: aiosqlite.Connection | None = None
        # A shared cache locks whole tables: in memory, reads wait until no write is open.
        self._mem_lock = asyncio.Lock()
        self._blocked_since_prune = 0
        self._state: HeadState | None = None  # the head as this process last wrote (or checked) it

    # --- opening -------------------------------------------------------------------------------

    async def _connect(self, *, readonly: bool = False) -> aiosqlite.Connection:
        """A reader's connection (the writer's is made by _connect_writer, on its thread)."""
        pending = aiosqlite.connect(
            self._target,
            isolation_level=None,
            timeout=BUSY_TIMEOUT_MS / 1000,
            iter_chunk_size=2000,
            uri=self.memory,
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
            if readonly:
                await db.execute("PRAGMA query_only = ON")
        except BaseException:
            await db.close()
            raise
        return db

    def _connect_writer(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self._target, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000, uri=self.memory
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA synchronous = FULL")
            # 64 MB of page cache for the writer: the consent-id index takes random inserts.
            # Readers keep the default (2 MB): an export streams, it does not revisit pages.
            conn.execute("PRAGMA cache_size = -65536")
        except BaseException:
            conn.close()
            raise
        return conn

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
            await self._w.open(self._connect_writer)
            await self._w.run(self._open_sync, migrate)
            self._reader = await self._connect(readonly=True)
        except sqlite3.Error as e:
            await self._close()
            raise LogUnavailable(f"cannot open the consent log {self.path}: {e}") from e
        except BaseException:
            await self._close()
            raise
        self.writer.start()
        return self

    def _open_sync(self, conn: sqlite3.Connection, migrate: bool) -> None:
        if not self.memory:
            mode = _retry_busy(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone())
            if mode is None or str(mode[0]).lower() != "wal":
                raise LogUnavailable(f"the consent log {self.path} cannot use WAL mode (got {mode})")
        if migrate:
            self.migrated_from, _ = _retry_busy(lambda: self._migrate_sync(conn))
        if _schema_version(conn) == 0:
            raise LogError("the consent log has no schema yet: run `consent-banner log migrate`")
        row = conn.execute("SELECT value FROM meta WHERE key = 'log_id'").fetchone()
        self.log_id = row[0] if row else ""
        if self._hmac_key is not None:
            _retry_busy(lambda: self._adopt_head(conn))

    async def schema_version(self) -> int:
        return await self._w.run(_schema_version)

    async def migrate(self) -> tuple[int, int]:
        """Create or upgrade the schema; (version before, version after)."""
        return await self._write(self._migrate_sync)

    def _migrate_sync(self, conn: sqlite3.Connection) -> tuple[int, int]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            before = _schema_version(conn)
            if before > SCHEMA_VERSION:
                raise LogError(
                    f"the consent log's schema is version {before}; this consent-banner knows up to "
                    f"{SCHEMA_VERSION}: upgrade consent-banner"
                )
            for version in range(before + 1, SCHEMA_VERSION + 1):
                for statement in _statements(MIGRATIONS[version]):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (str(version),),
                )
            if before == 0:
                # Signed from the start: an unsigned empty head is then always an emptied log.
                if self._hmac_key is None:
                    raise LogError(
                        "creating a consent log needs the server key (set CONSENT_SECRET_KEYS): "
                        "its first head is signed"
                    )
                self.log_id = secrets.token_hex(16)
                conn.execute("INSERT INTO meta (key, value) VALUES ('log_id', ?)", (self.log_id,))
                conn.execute(
                    "INSERT INTO head (id, seq, hash, at, key_id, mac, checkpoints) "
                    "VALUES (1, ?, ?, ?, ?, ?, ?)",
                    self._signed_head(0, GENESIS, self._now(), GENESIS),
                )
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        return before, SCHEMA_VERSION

    def _adopt_head(self, conn: sqlite3.Connection) -> None:
        """At start: re-sign the head with the newest key when a listed older key (or the previous
        release's format) signed it, so it still verifies once that key is removed."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            head, last, _, _ = self._read_state(conn)
            reason = self._resign_reason(head)
            problem = head.problem(self.keys or {})
            if reason is not None:
                try:
                    state = self._head_state(head, last, self._chain(conn, head, last))
                except LogUnavailable as e:
                    problem = str(e)
                else:
                    self._move_head(conn, state, head.at or self._now())
                    self._state = state
            if problem is not None:
                logger.error("the consent log %s cannot be written: %s", self.path, problem)
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise

    def _read_state(
        self, conn: sqlite3.Connection
    ) -> tuple[SignedHead, CheckpointLink | None, int | None, str | None]:
        """The head, the last checkpoint of the chain, and (seq, at) of the newest checkpoint."""
        row = conn.execute(_STATE_SQL).fetchone()
        if row is None:
            raise LogError("the consent log's head row is missing: the log was tampered with")
        last = CheckpointLink(*row[6:9]) if row[6] is not None else None
        return SignedHead(self.log_id, *row[:6]), last, row[9], row[10]

    def _chain(
        self, conn: sqlite3.Connection, head: SignedHead, last: CheckpointLink | None
    ) -> list[CheckpointLink] | None:
        if not self._needs_chain(head, last):
            return None
        rows = conn.execute("SELECT n, prev, mac FROM checkpoints WHERE n IS NOT NULL ORDER BY n").fetchall()
        return [CheckpointLink(*r) for r in rows]

    def _writable_state(self, conn: sqlite3.Connection) -> tuple[HeadState, int | None, str | None]:
        """Inside the write lock: the state to build on, and (seq, at) of the newest checkpoint."""
        head, last, cp_seq, cp_at = self._read_state(conn)
        state = self._state
        if state is None or not self._is_ours(head, state):
            state = self._head_state(head, last, self._chain(conn, head, last))
        return state, cp_seq, cp_at

    def _move_head(self, conn: sqlite3.Connection, state: HeadState, at: str) -> None:
        conn.execute(
            "UPDATE head SET seq = ?, hash = ?, at = ?, key_id = ?, mac = ?, checkpoints = ? WHERE id = 1",
            self._signed_head(state.seq, state.hash, at, state.tip),
        )

    async def _close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            with contextlib.suppress(Exception):
                await reader.close()
        await self._w.close()

    # --- writing -------------------------------------------------------------------------------

    async def _write(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run `fn(conn, *args)` on the writer's thread (one transaction, one trip)."""
        if self.memory:
            async with self._mem_lock:
                return await self._w.run(fn, *args)
        return await self._w.run(fn, *args)

    async def _commit(self, items: list[_Item]) -> list[Written]:
        at = self._now()
        state = self._state
        # Link here, on the loop, before the trip: usually nobody else appended since this process
        # last did, and _commit_sync checks exactly that inside the write lock. A GPC record is
        # linked inside the lock: whether it is written at all depends on what the log holds.
        linked = None
        if state is not None and not has_gpc(items):
            linked = link_rows([p for p, _ in items], at, state.seq, state.hash)
        kept, rows, at, outcomes = await self._write(self._commit_sync, items, at, state, linked)
        if outcomes is None:
            return written(items, rows, at)
        return written_settled(kept, rows, outcomes, at)

    def _commit_sync(
        self,
        conn: sqlite3.Connection,
        items: list[_Item],
        at: str,
        expected: HeadState | None,
        linked: tuple[list[tuple[Any, ...]], str] | None,
    ) -> tuple[list[_Item], list[tuple[Any, ...]], str, list[Any] | None]:
        _begin_immediate(conn)
        try:
            # Re-read the head inside the write lock: another process may have appended since.
            state, last_cp_seq, last_cp_at = self._writable_state(conn)
            kept, outcomes = items, None
            if has_gpc(items):
                kept, outcomes = settle_gpc(items, state.seq, *self._gpc_known(conn, items))
            if linked is None or state != expected:
                # Another process appended in between (or this is this process's first batch): link
                # afresh at a time taken inside the lock, so time order follows the chain.
                at = self._now()
                linked = link_rows([p for p, _ in kept], at, state.seq, state.hash)
            rows, new_head = linked
            new_versions = {v[0]: v[1] for _, v in kept if v is not None and v[0] not in self._known_versions}
            if new_versions:
                conn.executemany(
                    "INSERT OR IGNORE INTO versions (id, created_at, payload) VALUES (?, ?, ?)",
                    [(vid, at, text) for vid, text in new_versions.items()],
                )
            new = state
            if rows:
                _insert_records(conn, rows)
                new = state._replace(seq=state.seq + len(rows), hash=new_head)
                if self._due_checkpoint(new.seq, last_cp_seq, last_cp_at, at):
                    new = self._insert_checkpoint(conn, new, new.seq, new.hash, at, "periodic")[1]
                self._move_head(conn, new, at)
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        self._known_versions.update(new_versions)
        self._state = new
        return kept, rows, at, outcomes

    def _gpc_known(
        self, conn: sqlite3.Connection, items: list[_Item]
    ) -> tuple[dict[str, int], dict[tuple[str, str], tuple[Any, ...]]]:
        """For the consent ids of a batch's GPC records: the seq of each one's latest other record,
        and the GPC records already written (by their detail)."""
        ids = sorted({p.consent_id for p, _ in items if p.action == GPC_ACTION})
        marks = ", ".join("?" * len(ids))
        latest = dict(
            conn.execute(
                f"SELECT consent_id, max(seq) FROM records WHERE consent_id IN ({marks}) AND action <> ? "
                "GROUP BY consent_id",
                (*ids, GPC_ACTION),
            ).fetchall()
        )
        recorded = {
            (r[2], r[13]): tuple(r)
            for r in conn.execute(
                f"SELECT {_RECORD_COLS} FROM records WHERE consent_id IN ({marks}) AND action = ? "
                "AND detail IS NOT NULL",
                (*ids, GPC_ACTION),
            ).fetchall()
        }
        return latest, recorded

    def _insert_checkpoint(
        self, conn: sqlite3.Connection, state: HeadState, seq: int, head: str, at: str, reason: str
    ) -> tuple[Checkpoint, HeadState]:
        """The next checkpoint of the chain, stored; and the state with it (move the head to it)."""
        cp = self._new_checkpoint(state, seq, head, at, reason)
        conn.execute(
            f"INSERT INTO checkpoints ({_CHECKPOINT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (cp.seq, cp.hash, cp.at, cp.reason, cp.key_id, cp.mac, cp.n, cp.prev),
        )
        assert cp.n is not None and cp.prev is not None
        return cp, state._replace(checkpoints=cp.n, tip=checkpoint_link(cp.prev, cp.mac))

    async def _commit_blocked(self, attempts: list[BlockedAttempt]) -> None:
        if not attempts:
            return
        at = self._now()
        rows = [
            (format_at(a.at) if a.at else at, a.page, a.origin, a.directive, a.consent_id) for a in attempts
        ]
        await self._write(self._blocked_sync, rows)

    def _blocked_sync(self, conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
        _begin_immediate(conn)
        try:
            conn.executemany(
                "INSERT INTO blocked (at, page, origin, directive, consent_id) VALUES (?, ?, ?, ?, ?)", rows
            )
            self._blocked_since_prune += len(rows)
            if self._blocked_since_prune >= 1000:
                self._blocked_since_prune = 0
                conn.execute(
                    "DELETE FROM blocked WHERE id <= (SELECT max(id) FROM blocked) - ?", (BLOCKED_KEEP,)
                )
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise

    async def checkpoint(self, reason: str = "manual") -> Checkpoint:
        """Sign the current head now (to export and pin elsewhere)."""
        return await self._write(self._checkpoint_sync, reason)

    def _checkpoint_sync(self, conn: sqlite3.Connection, reason: str) -> Checkpoint:
        _begin_immediate(conn)
        try:
            state, _, _ = self._writable_state(conn)
            cp = self._checkpoint_at(conn, state.seq)
            if cp is None:
                at = self._now()
                cp, state = self._insert_checkpoint(conn, state, state.seq, state.hash, at, reason)
                self._move_head(conn, state, at)
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        self._state = state
        return cp

    def _checkpoint_at(
        self, conn: sqlite3.Connection, seq: int, reason: str | None = None
    ) -> Checkpoint | None:
        row = conn.execute(
            f"SELECT {_CHECKPOINT_COLS} FROM checkpoints WHERE seq = ? AND reason = coalesce(?, reason)",
            (seq, reason),
        ).fetchone()
        return Checkpoint(self.log_id, *row) if row else None

    async def purge(self, older_than: timedelta) -> PurgeResult:
        """Remove records older than `older_than`, anchored by a signed checkpoint; log the purge. R21."""
        try:
            return await self._write(self._purge_sync, older_than)
        except sqlite3.Error as e:
            raise LogUnavailable(f"the purge failed and was rolled back: {e}") from e

    def _purge_sync(self, conn: sqlite3.Connection, older_than: timedelta) -> PurgeResult:
        self._require_key()
        cutoff = format_at(self.clock() - older_than)
        _begin_immediate(conn)
        try:
            state, _, _ = self._writable_state(conn)
            seq0 = state.seq
            # Only a prefix of the chain can go: up to the first record at or after the cutoff.
            (first_kept,) = conn.execute("SELECT min(seq) FROM records WHERE at >= ?", (cutoff,)).fetchone()
            through = (first_kept - 1) if first_kept is not None else seq0
            removed, through_hash = conn.execute(
                "SELECT count(*), (SELECT hash FROM records WHERE seq = ?) FROM records WHERE seq <= ?",
                (through, through),
            ).fetchone()
            anchor = None
            at = self._now()
            if removed:
                anchor = self._checkpoint_at(conn, through, "purge")
                if anchor is None:
                    anchor, state = self._insert_checkpoint(conn, state, through, through_hash, at, "purge")
                conn.execute("DELETE FROM records WHERE seq <= ?", (through,))
            p = purge_record(cutoff, older_than, removed, through, anchor)
            rows, new_head = link_rows([p], at, seq0, state.hash)
            _insert_records(conn, rows)
            state = state._replace(seq=seq0 + 1, hash=new_head)
            self._move_head(conn, state, at)
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        self._state = state
        return PurgeResult(removed, through if removed else 0, cutoff, anchor, LoggedRecord.from_row(rows[0]))

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
        """Every checkpoint, in the order they were signed."""
        rows = await self._fetchall(f"SELECT {_CHECKPOINT_COLS} FROM checkpoints ORDER BY n, seq, reason")
        return [Checkpoint(self.log_id, *r) for r in rows]

    @_reads
    async def verify(self, pins: Sequence[Checkpoint] = ()) -> VerifyResult:
        """Recompute the whole chain in one consistent snapshot, with checkpoints pinned elsewhere. R22."""
        async with self._snapshot() as db:
            heads = list(
                await db.execute_fetchall(
                    "SELECT seq, hash, at, key_id, mac, checkpoints FROM head WHERE id = 1"
                )
            )
            head_row = heads[0] if heads else None
            cps = [
                Checkpoint(self.log_id, *r)
                for r in await db.execute_fetchall(
                    f"SELECT {_CHECKPOINT_COLS} FROM checkpoints ORDER BY n, seq, reason"
                )
            ]
            versions = {
                vid: text for vid, text in await db.execute_fetchall("SELECT id, payload FROM versions")
            }
            head = SignedHead(self.log_id, *head_row) if head_row else None
            v = ChainVerifier(
                checkpoints=cps, keys=self.keys, head=head, versions=versions, log_id=self.log_id, pins=pins
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


def _insert_records(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    """Insert with multi-row INSERT statements rather than executemany().

    executemany() takes the GIL back for every row it binds; while the event loop is busy that
    means waiting out Python's switch interval per row. One statement per thousand rows binds
    everything at once and runs the inserts in C without the GIL, in parallel with the loop.
    """
    for start in range(0, len(rows), INSERT_CHUNK):
        part = rows[start : start + INSERT_CHUNK]
        conn.execute(_insert_sql(len(part)), list(itertools.chain.from_iterable(part)))


def _schema_version(conn: sqlite3.Connection) -> int:
    if (
        conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
        is None
    ):
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def _begin_immediate(conn: sqlite3.Connection) -> None:
    """BEGIN IMMEDIATE, waiting out other writers (SQLite's busy timeout, then ours) up to a deadline."""
    try:
        _retry_busy(lambda: conn.execute("BEGIN IMMEDIATE"))
    except sqlite3.OperationalError as e:
        if not _busy(e):
            raise
        raise LogUnavailable(
            f"the consent log stayed locked by another writer for {WRITE_DEADLINE:.0f} s"
        ) from None


def _retry_busy(fn: Callable[[], _T]) -> _T:
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


def _rollback(conn: sqlite3.Connection) -> None:
    # "no transaction is active" (the failure was BEGIN itself) is fine to ignore.
    with contextlib.suppress(Exception):
        conn.execute("ROLLBACK")


async def open_sqlite(url: str, *, create: bool = True, **kwargs: Any) -> SQLiteLog:
    path = path_from_url(url)
    if path != ":memory:":
        path = os.fspath(Path(path))
    return await SQLiteLog(path, **kwargs).open(create=create)
