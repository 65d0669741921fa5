"""The PostgreSQL backend (`pip install consent-banner[postgres]`), for several app servers.

The same records, chain and signatures as the SQLite backend, in a schema of their own
(`consent_log` unless the URL says `?schema=name`). Chain order across servers is kept by the
single-row `head` table: every batch locks it (`SELECT ... FOR UPDATE`), links its records after
the head it read, and moves the head, all in one transaction. A batch is inserted with one
statement over `unnest()` arrays. While no other server has written since this one did, the
whole batch (lock, check, insert, move the head) is one statement: one round trip.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

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

try:
    import asyncpg
except ImportError:  # pragma: no cover - depends on the install
    asyncpg = None

_reads = read_errors(*(() if asyncpg is None else (asyncpg.PostgresError, asyncpg.InterfaceError)), OSError)
DEFAULT_SCHEMA = "consent_log"
LOCK_TIMEOUT = "15s"  # a batch waits this long for the head lock before failing closed
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

_RECORD_COLS = ", ".join(ROW_COLUMNS)
_TYPES = ["bigint"] + ["text"] * (len(ROW_COLUMNS) - 1)
_INSERT_RECORDS = (
    f"INSERT INTO records ({_RECORD_COLS}) SELECT * FROM unnest("
    + ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(_TYPES))
    + ")"
)
_N = len(ROW_COLUMNS)
# A batch in one statement, when this server's view of the head is current: link the records after
# the head it last wrote, and let the statement insert them and move the head only if the head,
# locked, is still that one. A statement is a transaction of its own; READ COMMITTED re-reads the
# locked row, so a batch of another server committed meanwhile makes it a no-op that says so.
_APPEND_IF_HEAD = (
    "WITH h AS (SELECT seq, hash, checkpoints FROM head WHERE id = 1 FOR UPDATE), "
    f"ok AS (SELECT 1 FROM h WHERE seq = ${_N + 1} AND hash = ${_N + 2} AND checkpoints = ${_N + 3}), "
    f"ins AS ({_INSERT_RECORDS} WHERE EXISTS (SELECT 1 FROM ok)), "
    f"upd AS (UPDATE head SET seq = ${_N + 4}, hash = ${_N + 5}, at = ${_N + 6}, key_id = ${_N + 7}, "
    f"mac = ${_N + 8} WHERE id = 1 AND EXISTS (SELECT 1 FROM ok)) "
    "SELECT EXISTS (SELECT 1 FROM ok)"
)
_CHECKPOINT_COLS = "seq, hash, at, reason, key_id, mac, n, prev"
# The head, locked first; then, in a statement of its own (under READ COMMITTED its snapshot is
# taken after the lock is held, so it sees what the previous holder committed), the newest
# checkpoint in the chain and the one at the highest record (for due-ness).
_HEAD_SQL = "SELECT seq, hash, at, key_id, mac, checkpoints FROM head WHERE id = 1 FOR UPDATE"
_LAST_CHECKPOINTS_SQL = (
    "SELECT c.n, c.prev, c.mac, t.seq, t.at FROM (SELECT 1) one "
    "LEFT JOIN LATERAL (SELECT n, prev, mac FROM checkpoints WHERE n IS NOT NULL ORDER BY n DESC LIMIT 1) c "
    "ON true "
    "LEFT JOIN LATERAL (SELECT seq, at FROM checkpoints ORDER BY seq DESC LIMIT 1) t ON true"
)


def _arrays(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    """Rows as the per-column arrays that _INSERT_RECORDS unnests."""
    return [list(col) for col in zip(*rows, strict=True)]


_SCHEMA_V1 = [
    "CREATE TABLE IF NOT EXISTS meta (key text PRIMARY KEY, value text NOT NULL)",
    """CREATE TABLE IF NOT EXISTS records (
        seq bigint PRIMARY KEY,
        at text NOT NULL,
        consent_id text NOT NULL,
        action text NOT NULL,
        granted text NOT NULL,
        denied text NOT NULL,
        services text NOT NULL,
        revision text NOT NULL,
        language text NOT NULL,
        source text NOT NULL,
        version_id text,
        ip text,
        browser text,
        detail text,
        prev_hash text NOT NULL,
        hash text NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS records_consent_id ON records (consent_id)",
    "CREATE INDEX IF NOT EXISTS records_at ON records (at)",
    "CREATE TABLE IF NOT EXISTS versions ("
    "id text PRIMARY KEY, created_at text NOT NULL, payload text NOT NULL)",
    """CREATE TABLE IF NOT EXISTS head (
        id integer PRIMARY KEY CHECK (id = 1),
        seq bigint NOT NULL,
        hash text NOT NULL,
        at text,
        key_id text,
        mac text
    )""",
    """CREATE TABLE IF NOT EXISTS checkpoints (
        seq bigint NOT NULL,
        hash text NOT NULL,
        at text NOT NULL,
        reason text NOT NULL,
        key_id text NOT NULL,
        mac text NOT NULL,
        PRIMARY KEY (seq, reason)
    )""",
    """CREATE TABLE IF NOT EXISTS blocked (
        id bigserial PRIMARY KEY,
        at text NOT NULL,
        page text NOT NULL,
        origin text NOT NULL,
        directive text NOT NULL,
        consent_id text
    )""",
    "CREATE INDEX IF NOT EXISTS blocked_at ON blocked (at)",
    # Append-only by construction (someone with enough rights can drop these; verify still sees it).
    """CREATE OR REPLACE FUNCTION consent_log_append_only() RETURNS trigger LANGUAGE plpgsql AS
       $$ BEGIN RAISE EXCEPTION 'consent log records are append-only'; END $$""",
    """CREATE OR REPLACE FUNCTION consent_log_immutable() RETURNS trigger LANGUAGE plpgsql AS
       $$ BEGIN RAISE EXCEPTION '% are immutable', TG_TABLE_NAME; END $$""",
    "DROP TRIGGER IF EXISTS records_append_only ON records",
    "CREATE TRIGGER records_append_only BEFORE UPDATE ON records FOR EACH ROW "
    "EXECUTE FUNCTION consent_log_append_only()",
    "DROP TRIGGER IF EXISTS versions_immutable ON versions",
    "CREATE TRIGGER versions_immutable BEFORE UPDATE OR DELETE ON versions FOR EACH ROW "
    "EXECUTE FUNCTION consent_log_immutable()",
    "DROP TRIGGER IF EXISTS checkpoints_immutable ON checkpoints",
    "CREATE TRIGGER checkpoints_immutable BEFORE UPDATE ON checkpoints FOR EACH ROW "
    "EXECUTE FUNCTION consent_log_immutable()",
]
# Version 2: checkpoints form a chain (n, prev) that the head signs (head.checkpoints); they refuse
# DELETE and TRUNCATE too; a GPC record is written once per consent id and decision it amends. The
# previous release's checkpoints are numbered in a fixed order; their signatures stay as they are.
_SCHEMA_V2 = [
    "ALTER TABLE checkpoints ADD COLUMN IF NOT EXISTS n bigint",
    "ALTER TABLE checkpoints ADD COLUMN IF NOT EXISTS prev text",
    "ALTER TABLE head ADD COLUMN IF NOT EXISTS checkpoints text",
    "DROP TRIGGER IF EXISTS checkpoints_immutable ON checkpoints",
    "UPDATE checkpoints c SET n = o.n FROM "
    "(SELECT seq, reason, row_number() OVER (ORDER BY seq, reason) AS n FROM checkpoints) o "
    "WHERE c.seq = o.seq AND c.reason = o.reason",
    "CREATE UNIQUE INDEX IF NOT EXISTS checkpoints_n ON checkpoints (n)",
    "CREATE TRIGGER checkpoints_immutable BEFORE UPDATE OR DELETE ON checkpoints FOR EACH ROW "
    "EXECUTE FUNCTION consent_log_immutable()",
    "DROP TRIGGER IF EXISTS checkpoints_kept ON checkpoints",
    "CREATE TRIGGER checkpoints_kept BEFORE TRUNCATE ON checkpoints FOR EACH STATEMENT "
    "EXECUTE FUNCTION consent_log_immutable()",
    "CREATE UNIQUE INDEX IF NOT EXISTS records_gpc_once ON records (consent_id, detail) WHERE action = 'gpc'",
]
MIGRATIONS: dict[int, list[str]] = {1: _SCHEMA_V1, 2: _SCHEMA_V2}
BLOCKED_KEEP = 100_000


def split_url(url: str) -> tuple[str, str]:
    """(DSN for asyncpg, schema name) from postgresql://...[?schema=name]."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((v for k, v in query if k == "schema"), DEFAULT_SCHEMA)
    if not _SCHEMA_NAME.match(schema):
        raise LogError(f"schema {schema!r}: use lower-case letters, digits and '_'")
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    return urlunsplit((parts.scheme, parts.netloc, parts.path, rest, parts.fragment)), schema


class PostgresLog(BaseLog):
    """The consent log in PostgreSQL. Create it with `open_log("postgresql://...")`."""

    def __init__(self, url: str, *, pool_size: int = 4, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dsn, self.schema = split_url(url)
        self._pool_size = pool_size
        self._pool: Any = None
        self._blocked_since_prune = 0
        # As this server last wrote them: the head, and (seq, at) of the newest checkpoint.
        self._state: HeadState | None = None
        self._last_checkpoint: tuple[int | None, str | None] | None = None

    # --- opening -------------------------------------------------------------------------------

    async def open(self, *, migrate: bool = True) -> PostgresLog:
        if asyncpg is None:  # pragma: no cover - depends on the install
            raise LogError("PostgreSQL needs asyncpg: pip install 'consent-banner[postgres]'")
        try:
            conn = await asyncpg.connect(self.dsn, timeout=10)
            try:
                await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            except asyncpg.UniqueViolationError:  # two servers creating it at once
                pass
            finally:
                await conn.close()
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=1,
                max_size=self._pool_size,
                timeout=10,
                command_timeout=60,
                server_settings={"search_path": self.schema, "lock_timeout": LOCK_TIMEOUT},
            )
            if migrate:
                self.migrated_from, _ = await self.migrate()
            await self._load_meta()
            if self._hmac_key is not None:
                await self._adopt_head()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as e:
            await self._close()
            raise LogUnavailable(f"cannot open the consent log in PostgreSQL: {e}") from e
        except BaseException:
            await self._close()
            raise
        self.writer.start()
        return self

    async def _schema_version(self, conn: Any) -> int:
        exists = await conn.fetchval(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = $1 AND table_name = 'meta'",
            self.schema,
        )
        if not exists:
            return 0
        v = await conn.fetchval("SELECT value FROM meta WHERE key = 'schema_version'")
        return int(v) if v else 0

    async def schema_version(self) -> int:
        async with self._pool.acquire() as conn:
            return await self._schema_version(conn)

    async def migrate(self) -> tuple[int, int]:
        """Create or upgrade the schema; (version before, version after)."""
        async with self._pool.acquire() as conn, conn.transaction():
            # One migrator at a time across all servers.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"consent-banner:{self.schema}")
            before = await self._schema_version(conn)
            if before > SCHEMA_VERSION:
                raise LogError(
                    f"the consent log's schema is version {before}; this consent-banner knows up to "
                    f"{SCHEMA_VERSION}: upgrade consent-banner"
                )
            for version in range(before + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[version]:
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', $1) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    str(version),
                )
            if before == 0:
                # Signed from the start: an unsigned empty head is then always an emptied log.
                if self._hmac_key is None:
                    raise LogError(
                        "creating a consent log needs the server key (set CONSENT_SECRET_KEYS): "
                        "its first head is signed"
                    )
                self.log_id = secrets.token_hex(16)
                await conn.execute("INSERT INTO meta (key, value) VALUES ('log_id', $1)", self.log_id)
                await conn.execute(
                    "INSERT INTO head (id, seq, hash, at, key_id, mac, checkpoints) "
                    "VALUES (1, $1, $2, $3, $4, $5, $6)",
                    *self._signed_head(0, GENESIS, self._now(), GENESIS),
                )
        return before, SCHEMA_VERSION

    async def _load_meta(self) -> None:
        async with self._pool.acquire() as conn:
            if await self._schema_version(conn) == 0:
                raise LogError("the consent log has no schema yet: run `consent-banner log migrate`")
            self.log_id = await conn.fetchval("SELECT value FROM meta WHERE key = 'log_id'") or ""

    async def _adopt_head(self) -> None:
        """At start: re-sign the head with the newest key when a listed older key (or the previous
        release's format) signed it, so it still verifies once that key is removed."""
        async with self._pool.acquire() as conn, conn.transaction():
            head, last, _, _ = await self._read_state(conn)
            reason = self._resign_reason(head)
            problem = head.problem(self.keys or {})
            if reason is not None:
                try:
                    state = self._head_state(head, last, await self._chain(conn, head, last))
                except LogUnavailable as e:
                    problem = str(e)
                else:
                    await self._move_head(conn, state, head.at or self._now())
                    self._state = state
            if problem is not None:
                logger.error("the consent log in schema %s cannot be written: %s", self.schema, problem)

    async def _read_state(
        self, conn: Any
    ) -> tuple[SignedHead, CheckpointLink | None, int | None, str | None]:
        """The head (locked), the last checkpoint of the chain, and (seq, at) of the newest checkpoint."""
        row = await conn.fetchrow(_HEAD_SQL)
        if row is None:
            raise LogError("the consent log's head row is missing: the log was tampered with")
        n, prev, mac, cp_seq, cp_at = await conn.fetchrow(_LAST_CHECKPOINTS_SQL)
        last = CheckpointLink(n, prev, mac) if n is not None else None
        return SignedHead(self.log_id, *row), last, cp_seq, cp_at

    async def _chain(
        self, conn: Any, head: SignedHead, last: CheckpointLink | None
    ) -> list[CheckpointLink] | None:
        if not self._needs_chain(head, last):
            return None
        rows = await conn.fetch("SELECT n, prev, mac FROM checkpoints WHERE n IS NOT NULL ORDER BY n")
        return [CheckpointLink(*r) for r in rows]

    async def _writable_state(self, conn: Any) -> tuple[HeadState, int | None, str | None]:
        """Inside a transaction: lock the head; the state to build on, (seq, at) of the newest checkpoint."""
        head, last, cp_seq, cp_at = await self._read_state(conn)
        state = self._state
        if state is None or not self._is_ours(head, state):
            state = self._head_state(head, last, await self._chain(conn, head, last))
        return state, cp_seq, cp_at

    async def _move_head(self, conn: Any, state: HeadState, at: str) -> None:
        await conn.execute(
            "UPDATE head SET seq = $1, hash = $2, at = $3, key_id = $4, mac = $5, checkpoints = $6 "
            "WHERE id = 1",
            *self._signed_head(state.seq, state.hash, at, state.tip),
        )

    async def _close(self) -> None:
        if self._pool is not None:
            with contextlib.suppress(Exception):
                await self._pool.close()
            self._pool = None

    # --- writing -------------------------------------------------------------------------------

    def _pool_or_fail(self) -> Any:
        if self._pool is None:
            raise LogUnavailable("the consent log is closed")
        return self._pool

    async def _commit(self, items: list[_Item]) -> list[Written]:
        fast = await self._commit_if_head(items)
        return fast if fast is not None else await self._commit_locked(items)

    async def _commit_if_head(self, items: list[_Item]) -> list[Written] | None:
        """The batch as one statement (one round trip), or None when it needs the full transaction:
        another server moved the head, a banner version is new, a checkpoint is due, or a GPC record
        must be checked against the log first."""
        state, last_cp = self._state, self._last_checkpoint
        if state is None or last_cp is None or has_gpc(items):
            return None
        if any(v is not None and v[0] not in self._known_versions for _, v in items):
            return None
        at = self._now()
        new_seq = state.seq + len(items)
        if self._due_checkpoint(new_seq, *last_cp, at):
            return None
        rows, new_head = link_rows([p for p, _ in items], at, state.seq, state.hash)
        signed = self._signed_head(new_seq, new_head, at, state.tip)
        async with self._pool_or_fail().acquire() as conn:
            done = await conn.fetchval(
                _APPEND_IF_HEAD, *_arrays(rows), state.seq, state.hash, state.tip, *signed[:5]
            )
        if not done:
            return None
        self._state = state._replace(seq=new_seq, hash=new_head)
        return written(items, rows, at)

    async def _commit_locked(self, items: list[_Item]) -> list[Written]:
        pool = self._pool_or_fail()
        async with pool.acquire() as conn, conn.transaction():
            state, cp_seq, cp_at = await self._writable_state(conn)
            kept, outcomes = items, None
            if has_gpc(items):
                kept, outcomes = settle_gpc(items, state.seq, *await self._gpc_known(conn, items))
            at = self._now()
            new_versions = {v[0]: v[1] for _, v in kept if v is not None and v[0] not in self._known_versions}
            if new_versions:
                await conn.execute(
                    "INSERT INTO versions (id, created_at, payload) "
                    "SELECT * FROM unnest($1::text[], $2::text[], "
                    "$3::text[]) ON CONFLICT (id) DO NOTHING",
                    list(new_versions),
                    [at] * len(new_versions),
                    list(new_versions.values()),
                )
            rows, new_head = link_rows([p for p, _ in kept], at, state.seq, state.hash)
            last_cp = (cp_seq, cp_at)
            if rows:
                await conn.execute(_INSERT_RECORDS, *_arrays(rows))
                state = state._replace(seq=state.seq + len(rows), hash=new_head)
                if self._due_checkpoint(state.seq, *last_cp, at):
                    _, state = await self._insert_checkpoint(
                        conn, state, state.seq, state.hash, at, "periodic"
                    )
                    last_cp = (state.seq, at)
                await self._move_head(conn, state, at)
        self._known_versions.update(new_versions)
        self._state, self._last_checkpoint = state, last_cp
        if outcomes is None:
            return written(items, rows, at)
        return written_settled(kept, rows, outcomes, at)

    async def _gpc_known(
        self, conn: Any, items: list[_Item]
    ) -> tuple[dict[str, int], dict[tuple[str, str], tuple[Any, ...]]]:
        """For the consent ids of a batch's GPC records: the seq of each one's latest other record,
        and the GPC records already written (by their detail)."""
        ids = sorted({p.consent_id for p, _ in items if p.action == GPC_ACTION})
        latest = {
            r[0]: r[1]
            for r in await conn.fetch(
                "SELECT consent_id, max(seq) FROM records WHERE consent_id = ANY($1::text[]) "
                "AND action <> $2 GROUP BY consent_id",
                ids,
                GPC_ACTION,
            )
        }
        recorded = {
            (r[2], r[13]): tuple(r)
            for r in await conn.fetch(
                f"SELECT {_RECORD_COLS} FROM records WHERE consent_id = ANY($1::text[]) AND action = $2 "
                "AND detail IS NOT NULL",
                ids,
                GPC_ACTION,
            )
        }
        return latest, recorded

    async def _insert_checkpoint(
        self, conn: Any, state: HeadState, seq: int, head: str, at: str, reason: str
    ) -> tuple[Checkpoint, HeadState]:
        """The next checkpoint of the chain, stored; and the state with it (move the head to it)."""
        cp = self._new_checkpoint(state, seq, head, at, reason)
        await conn.execute(
            f"INSERT INTO checkpoints ({_CHECKPOINT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            cp.seq,
            cp.hash,
            cp.at,
            cp.reason,
            cp.key_id,
            cp.mac,
            cp.n,
            cp.prev,
        )
        assert cp.n is not None and cp.prev is not None
        return cp, state._replace(checkpoints=cp.n, tip=checkpoint_link(cp.prev, cp.mac))

    async def _commit_blocked(self, attempts: list[BlockedAttempt]) -> None:
        if self._pool is None or not attempts:
            return
        at = self._now()
        cols = list(
            zip(
                *[
                    (format_at(a.at) if a.at else at, a.page, a.origin, a.directive, a.consent_id)
                    for a in attempts
                ],
                strict=True,
            )
        )
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO blocked (at, page, origin, directive, consent_id) SELECT * FROM "
                "unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])",
                *[list(c) for c in cols],
            )
            self._blocked_since_prune += len(attempts)
            if self._blocked_since_prune >= 1000:
                self._blocked_since_prune = 0
                await conn.execute(
                    "DELETE FROM blocked WHERE id <= (SELECT max(id) FROM blocked) - $1", BLOCKED_KEEP
                )

    async def _checkpoint_at(self, conn: Any, seq: int, reason: str | None = None) -> Checkpoint | None:
        row = await conn.fetchrow(
            f"SELECT {_CHECKPOINT_COLS} FROM checkpoints WHERE seq = $1 AND reason = coalesce($2, reason) "
            "LIMIT 1",
            seq,
            reason,
        )
        return Checkpoint(self.log_id, *row) if row else None

    async def checkpoint(self, reason: str = "manual") -> Checkpoint:
        pool = self._pool_or_fail()
        async with pool.acquire() as conn, conn.transaction():
            state, _, _ = await self._writable_state(conn)
            cp = await self._checkpoint_at(conn, state.seq)
            if cp is None:
                at = self._now()
                cp, state = await self._insert_checkpoint(conn, state, state.seq, state.hash, at, reason)
                await self._move_head(conn, state, at)
        self._state = state
        return cp

    async def purge(self, older_than: timedelta) -> PurgeResult:
        """Remove records older than `older_than`, anchored by a signed checkpoint; log the purge. R21."""
        self._require_key()
        pool = self._pool_or_fail()
        cutoff = format_at(self.clock() - older_than)
        async with pool.acquire() as conn, conn.transaction():
            state, _, _ = await self._writable_state(conn)
            seq0 = state.seq
            first_kept = await conn.fetchval("SELECT min(seq) FROM records WHERE at >= $1", cutoff)
            through = (first_kept - 1) if first_kept is not None else seq0
            removed, through_hash = await conn.fetchrow(
                "SELECT count(*), (SELECT hash FROM records WHERE seq = $1) FROM records WHERE seq <= $1",
                through,
            )
            anchor = None
            at = self._now()
            if removed:
                anchor = await self._checkpoint_at(conn, through, "purge")
                if anchor is None:
                    anchor, state = await self._insert_checkpoint(
                        conn, state, through, through_hash, at, "purge"
                    )
                await conn.execute("DELETE FROM records WHERE seq <= $1", through)
            p = purge_record(cutoff, older_than, removed, through, anchor)
            (row,), new_head = link_rows([p], at, seq0, state.hash)
            await conn.execute(_INSERT_RECORDS, *_arrays([row]))
            state = state._replace(seq=seq0 + 1, hash=new_head)
            await self._move_head(conn, state, at)
        self._state = state
        return PurgeResult(removed, through if removed else 0, cutoff, anchor, LoggedRecord.from_row(row))

    # --- reading -------------------------------------------------------------------------------

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        pool = self._pool
        if pool is None:
            raise LogError("the consent log is closed")
        async with pool.acquire() as conn:
            return list(await conn.fetch(sql, *args))

    @_reads
    async def records_for(self, consent_id: str) -> list[LoggedRecord]:
        rows = await self._fetch(
            f"SELECT {_RECORD_COLS} FROM records WHERE consent_id = $1 ORDER BY seq", consent_id
        )
        return [LoggedRecord.from_row(tuple(r)) for r in rows]

    @_reads
    async def get_record(self, seq: int) -> LoggedRecord | None:
        rows = await self._fetch(f"SELECT {_RECORD_COLS} FROM records WHERE seq = $1", seq)
        return LoggedRecord.from_row(tuple(rows[0])) if rows else None

    @_reads
    async def get_version(self, version_id: str) -> dict[str, Any] | None:
        rows = await self._fetch("SELECT payload FROM versions WHERE id = $1", version_id)
        return decode_version(rows[0][0]) if rows else None

    @_reads
    async def count(self, flt: RecordFilter = ALL_RECORDS) -> int:
        where, params = flt.clauses(lambda i: f"${i}")
        rows = await self._fetch(f"SELECT count(*) FROM records{where}", *params)
        return int(rows[0][0])

    @_reads
    async def page(
        self,
        flt: RecordFilter = ALL_RECORDS,
        *,
        limit: int = 50,
        before: int | None = None,
    ) -> list[LoggedRecord]:
        where, params = flt.clauses(lambda i: f"${i}")
        if before is not None:
            params.append(before)
            where += (" AND" if where else " WHERE") + f" seq < ${len(params)}"
        params.append(limit)
        rows = await self._fetch(
            f"SELECT {_RECORD_COLS} FROM records{where} ORDER BY seq DESC LIMIT ${len(params)}", *params
        )
        return [LoggedRecord.from_row(tuple(r)) for r in rows]

    @contextlib.asynccontextmanager
    async def _snapshot(self) -> AsyncIterator[Any]:
        pool = self._pool
        if pool is None:
            raise LogError("the consent log is closed")
        async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            yield conn

    async def iter_rows(
        self,
        flt: RecordFilter = ALL_RECORDS,
        *,
        chunk: int = 5000,
    ) -> AsyncIterator[tuple[Any, ...]]:
        where, params = flt.clauses(lambda i: f"${i}")
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
        """Lists of raw rows in seq order, in one snapshot. `async for` per row costs a coroutine
        step per row; a chunk per step keeps an export of a million records cheap."""
        where, params = flt.clauses(lambda i: f"${i}")
        async with self._snapshot() as conn:
            cur = await conn.cursor(f"SELECT {_RECORD_COLS} FROM records{where} ORDER BY seq", *params)
            while True:
                rows = await cur.fetch(chunk)
                if not rows:
                    return
                yield [tuple(r) for r in rows]

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
        where, params = flt.clauses(lambda i: f"${i}")
        dwhere, dparams = replace(flt, decisions_only=True).clauses(lambda i: f"${i}")
        s = LogStats()
        async with self._snapshot() as conn:
            s.add_rows(await conn.fetch(LogStats.GROUPS_SQL.format(where=where), *params))
            s.consent_ids = await conn.fetchval(
                f"SELECT count(DISTINCT consent_id) FROM records{dwhere}", *dparams
            )
        return s

    @_reads
    async def checkpoints(self) -> list[Checkpoint]:
        """Every checkpoint, in the order they were signed."""
        rows = await self._fetch(f"SELECT {_CHECKPOINT_COLS} FROM checkpoints ORDER BY n, seq, reason")
        return [Checkpoint(self.log_id, *r) for r in rows]

    @_reads
    async def verify(self, pins: Sequence[Checkpoint] = ()) -> VerifyResult:
        """Recompute the whole chain in one snapshot, with checkpoints pinned elsewhere. R22."""
        async with self._snapshot() as conn:
            head_row = await conn.fetchrow(
                "SELECT seq, hash, at, key_id, mac, checkpoints FROM head WHERE id = 1"
            )
            cps = [
                Checkpoint(self.log_id, *r)
                for r in await conn.fetch(
                    f"SELECT {_CHECKPOINT_COLS} FROM checkpoints ORDER BY n, seq, reason"
                )
            ]
            versions = {r[0]: r[1] for r in await conn.fetch("SELECT id, payload FROM versions")}
            if head_row is None:
                return VerifyResult(ok=False, records=0, problem="missing", reason="the head row is missing")
            head = SignedHead(self.log_id, *head_row)
            v = ChainVerifier(
                checkpoints=cps, keys=self.keys, head=head, versions=versions, log_id=self.log_id, pins=pins
            )
            cur = await conn.cursor(f"SELECT {_RECORD_COLS} FROM records ORDER BY seq")
            while not v.failed:
                rows = await cur.fetch(5000)
                if not rows:
                    break
                for r in rows:
                    if not v.feed(tuple(r)):
                        break
        return v.finish()

    @_reads
    async def blocked(self, *, limit: int = 200) -> list[BlockedSummary]:
        rows = await self._fetch(
            "SELECT page, origin, directive, count(*), min(at), max(at), count(consent_id) FROM blocked "
            "GROUP BY page, origin, directive ORDER BY count(*) DESC, max(at) DESC LIMIT $1",
            limit,
        )
        return [BlockedSummary(*r) for r in rows]


async def open_postgres(url: str, *, migrate: bool = True, **kwargs: Any) -> PostgresLog:
    return await PostgresLog(url, **kwargs).open(migrate=migrate)


__all__: Sequence[str] = ["PostgresLog", "open_postgres", "split_url"]
