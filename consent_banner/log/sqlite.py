"""The SQLite driver (the default): WAL, group commit, safe across processes.

One writer connection per process, on a thread of its own (sqlite_thread.py), fed by the
group-commit writer task. Every write is one `BEGIN IMMEDIATE` transaction that runs a plan of the
core on that thread in one trip and re-reads the chain head *inside* the write lock: a batch is
linked on the loop after the head this process last wrote, and linked afresh if another process
appended since. So several processes on one file (uvicorn --workers N) interleave whole batches
and never fork the chain. Lock waits are absorbed by SQLite's busy timeout and then by our own
retry until a deadline; only after that does a caller get LogUnavailable: "database is locked"
never reaches a visitor.

`synchronous=FULL`: a commit is on disk when it returns, so an acknowledged decision survives a
power cut, not only a process crash (R23). Group commit is what makes that affordable.

Readers use their own aiosqlite connections: WAL lets them read a consistent snapshot while the
writer appends, and a long export or verify gets a fresh connection of its own.

A log opened read-only (`open_log(..., read_only=True)`: verify, export, stats, blocked, the audit
view) has no writer at all: no thread, no lock, no DDL. Its connections open the file with
`mode=ro`, so nothing is written, not even the -wal and -shm files; see `_read_only_target`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import secrets
import sqlite3
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar, cast
from urllib.parse import quote

import aiosqlite

from ..errors import LogError, LogUnavailable
from ..memo import Memo
from .batch import Item, Written, has_gpc
from .canonical import ROW_COLUMNS, Row
from .chain import link_rows
from .core import LogCore
from .plan import All, Exec, One, Plan, Step
from .schema import insert_columns
from .sqlite_thread import BUSY_TIMEOUT_MS, WriterThread, begin_immediate, retry_busy, rollback

T = TypeVar("T")
INSERT_CHUNK = 1000  # rows per INSERT statement: 16,000 parameters, under SQLite's 32,766


class _Session:
    """A reader's aiosqlite connection, as the core reads through it."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db

    async def fetch(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        return cast(list[Row], await self.db.execute_fetchall(sql, params))

    async def chunks(self, sql: str, params: Sequence[object], size: int) -> AsyncGenerator[list[Row], None]:
        async with self.db.execute(sql, params) as cur:
            while rows := await cur.fetchmany(size):
                yield cast(list[Row], rows)


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


class SQLiteLog(LogCore):
    """The consent log in one SQLite file. Create it with `open_log("sqlite:///...")`."""

    dialect = "sqlite"
    read_errors: ClassVar[tuple[type[BaseException], ...]] = (sqlite3.Error,)

    def __init__(self, path: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = path
        self.memory = path == ":memory:"
        # In memory, the writer's and the reader's connections share one database (SQLite's shared
        # cache); a name of its own per log keeps two logs in one process apart.
        self._target = (
            f"file:consent-log-{secrets.token_hex(8)}?mode=memory&cache=shared" if self.memory else path
        )
        self._w = WriterThread()
        self._reader: aiosqlite.Connection | None = None
        self._reader_stamp: _Stamp | None = None  # the file as the shared reader opened it immutable
        # A shared cache locks whole tables: in memory, reads wait until no write is open.
        self._mem_lock = asyncio.Lock()

    @property
    def name(self) -> str:
        return self.path

    # --- opening -------------------------------------------------------------------------------

    async def _connect(self) -> aiosqlite.Connection:
        """A reader's connection, read-only (the writer's is made by _connect_writer, on its thread)."""
        return (await self._connect_stamped())[0]

    async def _connect_stamped(self) -> tuple[aiosqlite.Connection, _Stamp | None]:
        """A reader's connection, and the file's stamp when it was opened immutable."""
        target, stamp = self._read_only_target() if self.read_only else (self._target, None)
        pending = aiosqlite.connect(
            target,
            isolation_level=None,
            timeout=BUSY_TIMEOUT_MS / 1000,
            iter_chunk_size=2000,
            uri=self.memory or self.read_only,
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
            await db.execute("PRAGMA query_only = ON")
        except BaseException:
            await db.close()
            raise
        return db, stamp

    def _read_only_target(self) -> tuple[str, _Stamp | None]:
        """The URI a read-only log opens: `mode=ro`, which never writes the file. While a -wal file
        exists it holds committed records not yet in the main file, and SQLite reads it (through the
        -shm that its writer made). Without one, `immutable=1` as well: plain `mode=ro` would create
        the -wal and -shm (and cannot in a read-only directory), while immutable reads the main file
        alone, which then is the whole log. Immutable means no locks, so the file's stamp is kept: a
        writer arriving later (its -wal appears, or the file changes) is noticed (`_unchanged`)."""
        path = Path(self.path).resolve()
        uri = f"file:{quote(str(path))}?mode=ro"
        if Path(f"{path}-wal").exists():
            return uri, None
        return uri + "&immutable=1", _stamp(path)

    async def _open_read_only(self) -> SQLiteLog:
        if self.memory:
            raise LogError("an in-memory log is read through the log that made it, not opened read-only")
        p = Path(self.path)
        if not p.is_file():
            raise LogError(f"there is no consent log at {p.resolve()}")
        try:
            self._reader, self._reader_stamp = await self._connect_stamped()
            await self._open_read_only_core()
        except sqlite3.Error as e:
            await self._close_driver()
            raise LogUnavailable(f"cannot open the consent log {self.path} read-only: {e}") from e
        except BaseException:
            await self._close_driver()
            raise
        return self

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

    async def open(self, *, create: bool = True, migrate: bool = False) -> SQLiteLog:
        if self.read_only:
            return await self._open_read_only()
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
            if not self.memory:
                await self._w.run(self._wal)
            await self._open_core(migrate)
            self._reader = await self._connect()
        except sqlite3.Error as e:
            await self._close_driver()
            raise LogUnavailable(f"cannot open the consent log {self.path}: {e}") from e
        except BaseException:
            await self._close_driver()
            raise
        self.writer.start()
        return self

    def _wal(self, conn: sqlite3.Connection) -> None:
        mode = retry_busy(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone())
        if mode is None or str(mode[0]).lower() != "wal":
            raise LogUnavailable(f"the consent log {self.path} cannot use WAL mode (got {mode})")

    async def _close_driver(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            with contextlib.suppress(Exception):
                await reader.close()
        await self._w.close()

    # --- writing -------------------------------------------------------------------------------

    async def _transact(self, plan: Plan[T]) -> T:
        """Run `plan` on the writer's thread, in one transaction, in one trip."""
        self._refuse_read_only()
        if self.memory:
            async with self._mem_lock:
                return await self._w.run(self._run, plan)
        return await self._w.run(self._run, plan)

    def _run(self, conn: sqlite3.Connection, plan: Plan[T]) -> T:
        begin_immediate(conn)
        try:
            step = next(plan)
            while True:
                step = plan.send(_execute(conn, step))
        except StopIteration as done:
            value, state = done.value
        except BaseException:
            rollback(conn)
            raise
        try:
            conn.execute("COMMIT")
        except BaseException:
            rollback(conn)
            raise
        if state is not None:
            self._state = state
        return value  # type: ignore[no-any-return]

    async def _commit(self, items: list[Item]) -> list[Written]:
        at = self._now()
        state = self._state
        # Link here, on the loop, before the trip: usually nobody else appended since this process
        # last did, and the plan checks exactly that inside the write lock.
        linked = None
        if state is not None and not has_gpc(items):
            linked = link_rows([p for p, _ in items], at, state.seq, state.hash)
        return await self._committed(self._commit_plan(items, at, state, linked))

    async def _probe(self, plan: Plan[None], timeout: float) -> None:
        if not self.memory:
            # A log file (or its folder, where SQLite makes the -wal and -shm files) made read-only
            # still opens and still takes the lock; the first commit would fail.
            for p in (Path(self.path), Path(self.path).parent):
                if not os.access(p, os.W_OK):
                    raise LogUnavailable(f"the consent log cannot be written: {p} is read-only")
        if self.memory:
            async with self._mem_lock:
                await self._w.run(_probe_run, plan, timeout)
        else:
            await self._w.run(_probe_run, plan, timeout)

    # --- reading -------------------------------------------------------------------------------

    async def _fetch(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        """A short query on the shared reader."""
        db = self._open_reader()
        if self._reader_stamp is not None and not _unchanged(self.path, self._reader_stamp):
            db = await self._reopen_reader()
        if self._reading_schema:
            # Two statements, two snapshots: a migration between them is caught at the next read.
            rows = cast(list[Row], await db.execute_fetchall(self.sql.meta, ("schema_version",)))
            sql = self._follow_schema(next(iter(rows), None), sql)
        if self.memory:
            async with self._mem_lock:
                return cast(list[Row], await db.execute_fetchall(sql, params))
        return cast(list[Row], await db.execute_fetchall(sql, params))

    def _open_reader(self) -> aiosqlite.Connection:
        if self._reader is None:
            raise LogUnavailable("the consent log is closed")
        return self._reader

    async def _reopen_reader(self) -> aiosqlite.Connection:
        """The shared reader anew: it was opened immutable and a writer has come since."""
        old, self._reader = self._reader, None
        if old is not None:
            await old.close()
        self._reader, self._reader_stamp = await self._connect_stamped()
        return self._reader

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[_Session]:
        """A connection of its own inside one read transaction: a consistent view for long reads."""
        shared = self._open_reader()
        if self.memory:
            async with self._mem_lock:
                yield _Session(shared)
            return
        db, stamp = await self._connect_stamped()
        try:
            await db.execute("BEGIN")
            if self._reading_schema:
                rows = cast(list[Row], await db.execute_fetchall(self.sql.meta, ("schema_version",)))
                self._follow_schema(next(iter(rows), None))
            yield _Session(db)
        finally:
            with contextlib.suppress(Exception):
                await db.execute("COMMIT")
            await db.close()
        if stamp is not None and not _unchanged(self.path, stamp):
            # Read without locks (immutable) while a writer came and changed the file: what was read
            # may mix two states. Say so rather than report it (a verify would call it tampering).
            raise LogUnavailable(
                f"the consent log {self.path} was written to while it was read (no write-ahead log "
                "existed when the read began): read it again"
            )


# --- running a plan's steps --------------------------------------------------------------------------

_ROW_PLACEHOLDERS = "(" + ", ".join("?" * len(ROW_COLUMNS)) + ")"
_INSERT_RECORDS: Memo[int, str] = Memo(64)


def _insert_sql(table: str, ignore: bool) -> str:
    cols = insert_columns(table)
    conflict = " ON CONFLICT DO NOTHING" if ignore else ""
    return f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}){conflict}"


_INSERTS = {(t, i): _insert_sql(t, i) for t in ("versions", "blocked") for i in (False, True)}


def _insert_records(conn: sqlite3.Connection, rows: Sequence[Row]) -> None:
    """Insert with multi-row INSERT statements rather than executemany().

    executemany() takes the GIL back for every row it binds; while the event loop is busy that
    means waiting out Python's switch interval per row. One statement per thousand rows binds
    everything at once and runs the inserts in C without the GIL, in parallel with the loop.
    """
    for start in range(0, len(rows), INSERT_CHUNK):
        part = rows[start : start + INSERT_CHUNK]
        sql = _INSERT_RECORDS.get(len(part))
        if sql is None:
            sql = _INSERT_RECORDS.put(
                len(part),
                f"INSERT INTO records ({', '.join(ROW_COLUMNS)}) VALUES "
                + ", ".join([_ROW_PLACEHOLDERS] * len(part)),
            )
        conn.execute(sql, list(itertools.chain.from_iterable(part)))


def _probe_run(conn: sqlite3.Connection, plan: Plan[None], timeout: float) -> None:
    """BEGIN IMMEDIATE waiting at most `timeout` (not a write's deadline), the plan, then ROLLBACK."""
    conn.execute(f"PRAGMA busy_timeout = {max(1, int(timeout * 1000))}")
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            step = next(plan)
            while True:
                step = plan.send(_execute(conn, step))
        except StopIteration:
            pass
        finally:
            rollback(conn)
    except sqlite3.Error as e:
        raise LogUnavailable(f"the consent log cannot be written: {e}") from e
    finally:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")


def _execute(conn: sqlite3.Connection, step: Step) -> object:
    if isinstance(step, One):
        return conn.execute(step.sql, step.params).fetchone()
    if isinstance(step, All):
        return conn.execute(step.sql, step.params).fetchall()
    if isinstance(step, Exec):
        conn.execute(step.sql, step.params)
        return None
    if step.table == "records":
        _insert_records(conn, step.rows)
    else:
        conn.executemany(_INSERTS[step.table, step.ignore_conflicts], step.rows)
    return None


_Stamp = tuple[int, int, int, int]  # the file's device, inode, size and modification time (ns)


def _stamp(path: Path | str) -> _Stamp:
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _unchanged(path: str, stamp: _Stamp) -> bool:
    """Whether a file opened immutable is still all there is: no -wal since, the same bytes."""
    resolved = Path(path).resolve()
    try:
        return not Path(f"{resolved}-wal").exists() and _stamp(resolved) == stamp
    except OSError:
        return False


async def open_sqlite(url: str, *, create: bool = True, migrate: bool = False, **kwargs: Any) -> SQLiteLog:
    path = path_from_url(url)
    if path != ":memory:":
        path = os.fspath(Path(path))
    return await SQLiteLog(path, **kwargs).open(create=create, migrate=migrate)
