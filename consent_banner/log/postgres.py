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
    SCHEMA_VERSION,
    BaseLog,
    BlockedSummary,
    LogStats,
    PurgeResult,
    RecordFilter,
    Written,
    _Item,
    decode_version,
    purge_record,
    read_errors,
    written,
)
from .events import (
    GENESIS,
    ROW_COLUMNS,
    BlockedAttempt,
    Checkpoint,
    LoggedRecord,
    checkpoint_mac,
    format_at,
    link_rows,
    sign,
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
    "WITH h AS (SELECT seq, hash FROM head WHERE id = 1 FOR UPDATE), "
    f"ok AS (SELECT 1 FROM h WHERE seq = ${_N + 1} AND hash = ${_N + 2}), "
    f"ins AS ({_INSERT_RECORDS} WHERE EXISTS (SELECT 1 FROM ok)), "
    f"upd AS (UPDATE head SET seq = ${_N + 3}, hash = ${_N + 4}, at = ${_N + 5}, key_id = ${_N + 6}, "
    f"mac = ${_N + 7} WHERE id = 1 AND EXISTS (SELECT 1 FROM ok)) "
    "SELECT EXISTS (SELECT 1 FROM ok)"
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
MIGRATIONS: dict[int, list[str]] = {1: _SCHEMA_V1}
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
        # As this server last wrote them: (seq, hash) of the head, (seq, at) of the newest checkpoint.
        self._head: tuple[int, str] | None = None
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
                await self._sign_genesis()
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
                await conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('log_id', $1) ON CONFLICT DO NOTHING",
                    secrets.token_hex(16),
                )
                await conn.execute(
                    "INSERT INTO head (id, seq, hash) VALUES (1, 0, $1) ON CONFLICT DO NOTHING", GENESIS
                )
        return before, SCHEMA_VERSION

    async def _load_meta(self) -> None:
        async with self._pool.acquire() as conn:
            if await self._schema_version(conn) == 0:
                raise LogError("the consent log has no schema yet: run `consent-banner log migrate`")
            self.log_id = await conn.fetchval("SELECT value FROM meta WHERE key = 'log_id'") or ""

    async def _sign_genesis(self) -> None:
        assert self._hmac_key is not None
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow("SELECT seq, hash, mac FROM head WHERE id = 1 FOR UPDATE")
            if row is not None and row["seq"] == 0 and row["mac"] is None:
                at = self._now()
                mac = sign(self._hmac_key, "head", self.log_id, 0, row["hash"], at)
                await conn.execute(
                    "UPDATE head SET at = $1, key_id = $2, mac = $3 WHERE id = 1", at, self._key_id, mac
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
        another server moved the head, a banner version is new, or a checkpoint is due."""
        head, last_cp = self._head, self._last_checkpoint
        if head is None or last_cp is None:
            return None
        if any(v is not None and v[0] not in self._known_versions for _, v in items):
            return None
        at = self._now()
        new_seq = head[0] + len(items)
        if self._due_checkpoint(new_seq, *last_cp, at):
            return None
        rows, new_head = link_rows([p for p, _ in items], at, *head)
        mac = sign(self._require_key(), "head", self.log_id, new_seq, new_head, at)
        async with self._pool_or_fail().acquire() as conn:
            done = await conn.fetchval(
                _APPEND_IF_HEAD,
                *_arrays(rows),
                *head,
                new_seq,
                new_head,
                at,
                self._key_id,
                mac,
            )
        if not done:
            return None
        self._head = (new_seq, new_head)
        return written(items, rows, at)

    async def _commit_locked(self, items: list[_Item]) -> list[Written]:
        key = self._require_key()
        pool = self._pool_or_fail()
        async with pool.acquire() as conn, conn.transaction():
            head = await conn.fetchrow(
                "SELECT h.seq, h.hash, c.seq AS cp_seq, c.at AS cp_at FROM head h "
                "LEFT JOIN LATERAL (SELECT seq, at FROM checkpoints ORDER BY seq DESC LIMIT 1) c ON true "
                "WHERE h.id = 1 FOR UPDATE OF h"
            )
            if head is None:
                raise LogError("the consent log's head row is missing: the log was tampered with")
            seq0, prev = head["seq"], head["hash"]
            at = self._now()
            new_versions = {
                v[0]: v[1] for _, v in items if v is not None and v[0] not in self._known_versions
            }
            if new_versions:
                await conn.execute(
                    "INSERT INTO versions (id, created_at, payload) "
                    "SELECT * FROM unnest($1::text[], $2::text[], "
                    "$3::text[]) ON CONFLICT (id) DO NOTHING",
                    list(new_versions),
                    [at] * len(new_versions),
                    list(new_versions.values()),
                )
            rows, new_head = link_rows([p for p, _ in items], at, seq0, prev)
            await conn.execute(_INSERT_RECORDS, *_arrays(rows))
            new_seq = seq0 + len(rows)
            await conn.execute(
                "UPDATE head SET seq = $1, hash = $2, at = $3, key_id = $4, mac = $5 WHERE id = 1",
                new_seq,
                new_head,
                at,
                self._key_id,
                sign(key, "head", self.log_id, new_seq, new_head, at),
            )
            last_cp = (head["cp_seq"], head["cp_at"])
            if self._due_checkpoint(new_seq, *last_cp, at):
                await self._insert_checkpoint(conn, new_seq, new_head, at, "periodic")
                last_cp = (new_seq, at)
        self._known_versions.update(new_versions)
        self._head, self._last_checkpoint = (new_seq, new_head), last_cp
        return written(items, rows, at)

    async def _insert_checkpoint(self, conn: Any, seq: int, head: str, at: str, reason: str) -> Checkpoint:
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
        await conn.execute(
            "INSERT INTO checkpoints (seq, hash, at, reason, key_id, mac) VALUES ($1, $2, $3, $4, $5, $6) "
            "ON CONFLICT (seq, reason) DO NOTHING",
            cp.seq,
            cp.hash,
            cp.at,
            cp.reason,
            cp.key_id,
            cp.mac,
        )
        return cp

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
            "SELECT seq, hash, at, reason, key_id, mac FROM checkpoints "
            "WHERE seq = $1 AND reason = coalesce($2, reason) LIMIT 1",
            seq,
            reason,
        )
        return Checkpoint(self.log_id, *row) if row else None

    async def checkpoint(self, reason: str = "manual") -> Checkpoint:
        pool = self._pool_or_fail()
        async with pool.acquire() as conn, conn.transaction():
            seq, head = await conn.fetchrow("SELECT seq, hash FROM head WHERE id = 1 FOR UPDATE")
            return await self._checkpoint_at(conn, seq) or await self._insert_checkpoint(
                conn, seq, head, self._now(), reason
            )

    async def purge(self, older_than: timedelta) -> PurgeResult:
        """Remove records older than `older_than`, anchored by a signed checkpoint; log the purge. R21."""
        key = self._require_key()
        pool = self._pool_or_fail()
        cutoff = format_at(self.clock() - older_than)
        async with pool.acquire() as conn, conn.transaction():
            seq0, prev = await conn.fetchrow("SELECT seq, hash FROM head WHERE id = 1 FOR UPDATE")
            first_kept = await conn.fetchval("SELECT min(seq) FROM records WHERE at >= $1", cutoff)
            through = (first_kept - 1) if first_kept is not None else seq0
            removed, through_hash = await conn.fetchrow(
                "SELECT count(*), (SELECT hash FROM records WHERE seq = $1) FROM records WHERE seq <= $1",
                through,
            )
            anchor = None
            at = self._now()
            if removed:
                anchor = await self._checkpoint_at(conn, through, "purge") or await self._insert_checkpoint(
                    conn, through, through_hash, at, "purge"
                )
                await conn.execute("DELETE FROM records WHERE seq <= $1", through)
            p = purge_record(cutoff, older_than, removed, through, anchor)
            (row,), new_head = link_rows([p], at, seq0, prev)
            await conn.execute(_INSERT_RECORDS, *_arrays([row]))
            await conn.execute(
                "UPDATE head SET seq = $1, hash = $2, at = $3, key_id = $4, mac = $5 WHERE id = 1",
                seq0 + 1,
                new_head,
                at,
                self._key_id,
                sign(key, "head", self.log_id, seq0 + 1, new_head, at),
            )
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
        rows = await self._fetch("SELECT seq, hash, at, reason, key_id, mac FROM checkpoints ORDER BY seq")
        return [Checkpoint(self.log_id, *r) for r in rows]

    @_reads
    async def verify(self) -> VerifyResult:
        async with self._snapshot() as conn:
            head_row = await conn.fetchrow("SELECT seq, hash, at, key_id, mac FROM head WHERE id = 1")
            cps = [
                Checkpoint(self.log_id, *r)
                for r in await conn.fetch(
                    "SELECT seq, hash, at, reason, key_id, mac FROM checkpoints ORDER BY seq"
                )
            ]
            versions = {r[0]: r[1] for r in await conn.fetch("SELECT id, payload FROM versions")}
            if head_row is None:
                return VerifyResult(ok=False, records=0, problem="missing", reason="the head row is missing")
            head = SignedHead(self.log_id, *head_row)
            v = ChainVerifier(
                checkpoints=cps, keys=self.keys, head=head, versions=versions, log_id=self.log_id
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
