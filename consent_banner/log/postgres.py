"""The PostgreSQL driver (`pip install consent-banner[postgres]`), for several app servers.

The same records, chain and signatures as SQLite, in a schema of their own (`consent_log` unless
the URL says `?schema=name`). Chain order across servers is kept by the single-row `head` table:
every write locks it (`SELECT ... FOR UPDATE`) inside its transaction, links its records after the
head it read, and moves the head. A batch is inserted with one statement over `unnest()` arrays.
While no other server has written since this one did, the whole batch (lock, check, insert, move
the head) is one statement: one round trip (`_APPEND_IF_HEAD`).

A log opened read-only (verify, export, stats, blocked, the audit view) creates no schema, takes no
lock and runs every statement in transactions the server itself keeps read-only
(`default_transaction_read_only`): it works under a role that may only SELECT (USAGE on the schema,
SELECT on its tables).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any, ClassVar, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..errors import LogError, LogUnavailable
from .batch import Item, Written, has_gpc, written
from .canonical import ROW_COLUMNS, Row
from .chain import link_rows
from .core import LogCore
from .plan import All, Exec, One, Plan, Step
from .schema import insert_columns, postgres_array_types

try:
    import asyncpg  # type: ignore[import-untyped]
except ImportError:  # pragma: no cover - depends on the install
    asyncpg = None

T = TypeVar("T")
DEFAULT_SCHEMA = "consent_log"
LOCK_TIMEOUT = "15s"  # a write waits this long for the head lock before failing closed
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _unnest_insert(table: str, ignore: bool = False) -> str:
    """INSERT of one array parameter per column, unnested into rows (one statement for a batch)."""
    arrays = ", ".join(f"${i}::{t}" for i, t in enumerate(postgres_array_types(table), start=1))
    conflict = " ON CONFLICT DO NOTHING" if ignore else ""
    return (
        f"INSERT INTO {table} ({', '.join(insert_columns(table))}) SELECT * FROM unnest({arrays}){conflict}"
    )


_INSERTS = {(t, i): _unnest_insert(t, i) for t in ("records", "versions", "blocked") for i in (False, True)}
_N = len(ROW_COLUMNS)
# A batch in one statement, when this server's view of the head is current: link the records after
# the head it last wrote, and let the statement insert them and move the head only if the head,
# locked, is still that one. A statement is a transaction of its own; READ COMMITTED re-reads the
# locked row, so a batch of another server committed meanwhile makes it a no-op that says so.
_APPEND_IF_HEAD = (
    "WITH h AS (SELECT seq, hash, checkpoints FROM head WHERE id = 1 FOR UPDATE), "
    f"ok AS (SELECT 1 FROM h WHERE seq = ${_N + 1} AND hash = ${_N + 2} AND checkpoints = ${_N + 3}), "
    f"ins AS ({_INSERTS['records', False]} WHERE EXISTS (SELECT 1 FROM ok)), "
    f"upd AS (UPDATE head SET seq = ${_N + 4}, hash = ${_N + 5}, at = ${_N + 6}, key_id = ${_N + 7}, "
    f"mac = ${_N + 8}, sig_key_id = ${_N + 9}, sig = ${_N + 10} WHERE id = 1 AND EXISTS (SELECT 1 FROM ok)) "
    "SELECT EXISTS (SELECT 1 FROM ok)"
)


def _arrays(rows: Sequence[Row]) -> list[list[Any]]:
    """Rows as the per-column arrays an unnest insert takes."""
    return [list(col) for col in zip(*rows, strict=True)]


def split_url(url: str) -> tuple[str, str]:
    """(DSN for asyncpg, schema name) from postgresql://...[?schema=name]."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((v for k, v in query if k == "schema"), DEFAULT_SCHEMA)
    if not _SCHEMA_NAME.match(schema):
        raise LogError(f"schema {schema!r}: use lower-case letters, digits and '_'")
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    return urlunsplit((parts.scheme, parts.netloc, parts.path, rest, parts.fragment)), schema


class _Session:
    """A pooled connection inside a read-only REPEATABLE READ transaction, as the core reads through it."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def fetch(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        return [tuple(r) for r in await self.conn.fetch(sql, *params)]

    async def chunks(self, sql: str, params: Sequence[object], size: int) -> AsyncGenerator[list[Row], None]:
        cur = await self.conn.cursor(sql, *params)
        while rows := await cur.fetch(size):
            yield [tuple(r) for r in rows]


class PostgresLog(LogCore):
    """The consent log in PostgreSQL. Create it with `open_log("postgresql://...")`."""

    dialect = "postgres"
    read_errors: ClassVar[tuple[type[BaseException], ...]] = (
        *(() if asyncpg is None else (asyncpg.PostgresError, asyncpg.InterfaceError)),
        OSError,
    )

    def __init__(self, url: str, *, pool_size: int = 4, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dsn, self.schema = split_url(url)
        self._pool_size = pool_size
        self._pool: Any = None  # asyncpg.Pool (asyncpg ships no types)

    @property
    def name(self) -> str:
        return f"in schema {self.schema}"

    # --- opening -------------------------------------------------------------------------------

    async def open(self, *, migrate: bool = False) -> PostgresLog:
        if asyncpg is None:  # pragma: no cover - depends on the install
            raise LogError("PostgreSQL needs asyncpg: pip install 'consent-banner[postgres]'")
        settings = {"search_path": self.schema, "lock_timeout": LOCK_TIMEOUT}
        if self.read_only:
            # The server refuses any write in these sessions, whatever the role may do.
            settings["default_transaction_read_only"] = "on"
        try:
            if not self.read_only:
                await self._create_schema()
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=1,
                max_size=self._pool_size,
                timeout=10,
                command_timeout=60,
                server_settings=settings,
            )
            if self.read_only:
                await self._open_read_only_core()
            else:
                await self._open_core(migrate)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as e:
            await self._close_driver()
            raise LogUnavailable(f"cannot open the consent log in PostgreSQL: {e}") from e
        except BaseException:
            await self._close_driver()
            raise
        self.writer.start()
        return self

    async def _create_schema(self) -> None:
        conn = await asyncpg.connect(self.dsn, timeout=10)
        try:
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
        except asyncpg.UniqueViolationError:  # two servers creating it at once
            pass
        finally:
            await conn.close()

    async def _close_driver(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            with contextlib.suppress(Exception):
                await pool.close()

    def _open_pool(self) -> Any:
        if self._pool is None:
            raise LogUnavailable("the consent log is closed")
        return self._pool

    # --- writing -------------------------------------------------------------------------------

    async def _transact(self, plan: Plan[T]) -> T:
        self._refuse_read_only()
        async with self._open_pool().acquire() as conn, conn.transaction():
            try:
                step = next(plan)
                while True:
                    step = plan.send(await _execute(conn, step))
            except StopIteration as done:
                value, state = done.value
        if state is not None:
            self._state = state
        return value  # type: ignore[no-any-return]

    async def _commit(self, items: list[Item]) -> list[Written]:
        fast = await self._commit_if_head(items)
        if fast is not None:
            return fast
        return await self._committed(self._commit_plan(items, self._now(), None, None))

    async def _commit_if_head(self, items: list[Item]) -> list[Written] | None:
        """The batch as one statement (one round trip), or None when it needs the full transaction:
        another server moved the head, a banner version is new, a checkpoint is due, or a GPC record
        must be checked against the log first."""
        state = self._state
        if state is None or has_gpc(items):
            return None
        if any(v is not None and v[0] not in self._known_versions for _, v in items):
            return None
        at = self._now()
        new_seq = state.seq + len(items)
        if self._due(state, at, new_seq):
            return None
        rows, new_head = link_rows([p for p, _ in items], at, state.seq, state.hash)
        signed = self._signed_head(new_seq, new_head, at, state.tip)
        async with self._open_pool().acquire() as conn:
            done = await conn.fetchval(
                _APPEND_IF_HEAD, *_arrays(rows), state.seq, state.hash, state.tip, *signed[:5], *signed[6:]
            )
        if not done:
            return None
        self._state = state._replace(seq=new_seq, hash=new_head)
        return written(items, rows, at)

    async def _probe(self, plan: Plan[None], timeout: float) -> None:
        async with self._open_pool().acquire(timeout=timeout) as conn:
            tx = conn.transaction()
            await tx.start()
            try:
                # The head lock waited for no longer than the probe may take (a write waits 15 s).
                await conn.execute(f"SET LOCAL lock_timeout = '{max(1, int(timeout * 1000))}ms'")
                step = next(plan)
                while True:
                    step = plan.send(await _execute(conn, step))
            except StopIteration:
                pass
            finally:
                await tx.rollback()

    # --- reading -------------------------------------------------------------------------------

    async def _fetch(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        async with self._open_pool().acquire() as conn:
            if self._reading_schema:  # the statements of the schema found now (see _follow_schema)
                sql = self._follow_schema(await conn.fetchrow(self.sql.meta, "schema_version"), sql)
            return [tuple(r) for r in await conn.fetch(sql, *params)]

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[_Session]:
        async with (
            self._open_pool().acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            if self._reading_schema:
                self._follow_schema(await conn.fetchrow(self.sql.meta, "schema_version"))
            yield _Session(conn)


async def _execute(conn: Any, step: Step) -> object:
    if isinstance(step, One):
        row = await conn.fetchrow(step.sql, *step.params)
        return tuple(row) if row is not None else None
    if isinstance(step, All):
        return [tuple(r) for r in await conn.fetch(step.sql, *step.params)]
    if isinstance(step, Exec):
        await conn.execute(step.sql, *step.params)
        return None
    if step.rows:
        await conn.execute(_INSERTS[step.table, step.ignore_conflicts], *_arrays(step.rows))
    return None


async def open_postgres(url: str, *, migrate: bool = False, **kwargs: Any) -> PostgresLog:
    return await PostgresLog(url, **kwargs).open(migrate=migrate)
