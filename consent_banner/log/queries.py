"""Every SQL statement the log core runs, spelled once and rendered for a placeholder style.

SQLite numbers nothing (`?`), PostgreSQL numbers its parameters (`$1`); the statements are the
same otherwise, so each is written once with `p(i)` for its i-th parameter. The few that differ in
more than that (the migration lock, the catalogue, a list of ids) say so where they are built.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .canonical import ROW_COLUMNS
from .filters import RecordFilter
from .records import GPC_ACTION
from .schema import SCHEMA_VERSION, TABLES, Dialect, sql_type

RECORD_COLS = ", ".join(ROW_COLUMNS)
CHECKPOINT_COLS = "seq, hash, at, reason, key_id, mac, n, prev, sig_key_id, sig, prior_key_id, prior_sig"
HEAD_COLS = "seq, hash, at, key_id, mac, checkpoints, sig_key_id, sig"
WEBHOOK_COLS = (
    "name, seq, hash, created_at, delivered_at, owner, lease_until, attempts, next_attempt, last_error, "
    "failed_at"
)
# One scan gives every figure of the stats but the distinct consent ids: by day, action and choice.
_GROUPS = (
    "SELECT substr(at, 1, 10), action, granted, denied, count(*), min(at), max(at) "
    "FROM records{where} GROUP BY 1, 2, 3, 4"
)

# Decisions by the jurisdiction they were made in, read from the record's `detail` (geo.region_json:
# {"model": ..., "region": ...}, canonical JSON, model first); a record without it (an earlier
# release's, a GPC amendment's) has NULLs: unknown. Guarded, so a detail that is not that JSON (a
# tampered row) reads as unknown instead of failing the whole page: SQLite's json_valid, and on
# PostgreSQL (15 has no IS JSON) a pattern of the canonical form before the cast.
_JURISDICTION = {
    # SQLite as strict as PostgreSQL's pattern (both backends split a tampered log alike): the
    # canonical text of a text model and a text or null region, and nothing else.
    "sqlite": tuple(
        "CASE WHEN json_valid(detail) THEN CASE WHEN json_type(detail, '$.model') = 'text' "
        "AND json_type(detail, '$.region') IN ('text', 'null') AND detail = json_object('model', "
        "json_extract(detail, '$.model'), 'region', json_extract(detail, '$.region')) "
        f"THEN json_extract(detail, '$.{member}') END END"
        for member in ("model", "region")
    ),
    "postgres": (
        "CASE WHEN detail ~ '^[{]\"model\":\"[a-z-]{1,16}\",\"region\":(null|\"[A-Z0-9-]{1,8}\")[}]$' "
        "THEN CAST(detail AS jsonb) ->> 'model' END",
        "CASE WHEN detail ~ '^[{]\"model\":\"[a-z-]{1,16}\",\"region\":(null|\"[A-Z0-9-]{1,8}\")[}]$' "
        "THEN CAST(detail AS jsonb) ->> 'region' END",
    ),
}


class Queries:
    """The statements of one dialect. `schema`: the version of the log they read, when a reader
    opened an older one: a column a later version added is read as NULL (as the migration that adds
    it leaves it), so a reader that may not migrate still reads the log as an upgraded one."""

    def __init__(self, dialect: Dialect, schema: int = SCHEMA_VERSION) -> None:
        self.dialect = dialect
        self.schema = schema
        pg = dialect == "postgres"
        p: Callable[[int], str] = (lambda i: f"${i}") if pg else (lambda i: "?")
        self.p = p
        self.records_for = f"SELECT {RECORD_COLS} FROM records WHERE consent_id = {p(1)} ORDER BY seq"
        self.record = f"SELECT {RECORD_COLS} FROM records WHERE seq = {p(1)}"
        self.all_records = f"SELECT {RECORD_COLS} FROM records ORDER BY seq"
        self.version = f"SELECT payload FROM versions WHERE id = {p(1)}"
        self.versions = "SELECT id, payload FROM versions"
        self.blocked = (
            "SELECT page, origin, directive, count(*), min(at), max(at), count(consent_id), "
            f"count(DISTINCT {self._column('blocked', 'client', alias=False)}) FROM blocked "
            f"GROUP BY page, origin, directive ORDER BY count(*) DESC, max(at) DESC LIMIT {p(1)}"
        )
        # Per blocked origin, across pages and directives: the distinct client networks that reported
        # it (a NULL client, from before schema 3, counts as none), and which directives blocked it.
        self.blocked_origins = (
            f"SELECT origin, count(*), count(DISTINCT {self._column('blocked', 'client', alias=False)}), "
            "count(DISTINCT page), min(page), min(at), "
            "max(at) FROM blocked GROUP BY origin"
        )
        self.blocked_directives = "SELECT origin, directive, count(*) FROM blocked GROUP BY origin, directive"
        # Per blocked origin, the distinct client networks that reported it refused as a script
        # element: a network reporting under both names counts once (`log blocked --suggest`'s
        # inline_scripts recommendation weighs the "inline" row).
        self.blocked_script_clients = (
            f"SELECT origin, count(DISTINCT {self._column('blocked', 'client', alias=False)}) FROM blocked "
            "WHERE directive IN ('script-src', 'script-src-elem') GROUP BY origin"
        )
        self.checkpoints = (
            f"SELECT {self._columns('checkpoints', CHECKPOINT_COLS)} FROM checkpoints ORDER BY n, seq, reason"
        )
        # --- the write side: the head (locked on PostgreSQL; SQLite's write lock is the transaction's)
        self.head = f"SELECT {self._columns('head', HEAD_COLS)} FROM head WHERE id = 1"
        self.head_for_update = f"SELECT {HEAD_COLS} FROM head WHERE id = 1" + (" FOR UPDATE" if pg else "")
        # The newest checkpoint of the chain, and the one at the highest record (for due-ness; of two at
        # one record, the later signed). In a statement after the head's: under READ COMMITTED its
        # snapshot is taken once the lock is held, so it sees what the previous holder committed.
        self.last_checkpoints = (
            "SELECT c.n, c.prev, c.mac, t.seq, t.at FROM (SELECT 1 AS one) o "
            "LEFT JOIN (SELECT n, prev, mac FROM checkpoints WHERE n IS NOT NULL ORDER BY n DESC LIMIT 1) c "
            "ON 1 = 1 "
            "LEFT JOIN (SELECT seq, at FROM checkpoints ORDER BY seq DESC, coalesce(n, 0) DESC LIMIT 1) t "
            "ON 1 = 1"
        )
        self.chain_links = "SELECT n, prev, mac FROM checkpoints WHERE n IS NOT NULL ORDER BY n"
        self.move_head = (
            f"UPDATE head SET seq = {p(1)}, hash = {p(2)}, at = {p(3)}, key_id = {p(4)}, mac = {p(5)}, "
            f"checkpoints = {p(6)}, sig_key_id = {p(7)}, sig = {p(8)} WHERE id = 1"
        )
        self.insert_head = (
            f"INSERT INTO head (id, {HEAD_COLS}) VALUES (1, {', '.join(p(i) for i in range(1, 9))})"
        )
        self.checkpoint_at = (
            f"SELECT {CHECKPOINT_COLS} FROM checkpoints "
            f"WHERE seq = {p(1)} AND reason = coalesce({p(2)}, reason) "
            "ORDER BY coalesce(n, 0) DESC LIMIT 1"
        )
        self.insert_checkpoint = (
            f"INSERT INTO checkpoints ({CHECKPOINT_COLS}) VALUES ({', '.join(p(i) for i in range(1, 13))})"
        )
        # --- purge
        self.first_kept = f"SELECT min(seq) FROM records WHERE at >= {p(1)}"
        self.purge_span = (
            f"SELECT count(*), (SELECT hash FROM records WHERE seq = {p(1)}) FROM records WHERE seq <= {p(2)}"
        )
        self.delete_through = f"DELETE FROM records WHERE seq <= {p(1)}"
        # The newest rows kept, counted (not an id range: the pruning per client leaves gaps in it).
        self.prune_blocked = (
            f"DELETE FROM blocked WHERE id <= (SELECT id FROM blocked ORDER BY id DESC LIMIT 1 OFFSET {p(1)})"
        )
        # Rows of unknown networks (before schema 3, a Unix socket) share no network: only the cap above.
        # The networks of the newest rows (the first parameter: those since the last pruning), each down
        # to the second's rows.
        self.prune_blocked_per_client = (
            "DELETE FROM blocked WHERE id IN (SELECT id FROM (SELECT id, row_number() OVER "
            "(PARTITION BY client ORDER BY id DESC) AS n FROM blocked WHERE client IN "
            f"(SELECT client FROM blocked WHERE client IS NOT NULL ORDER BY id DESC LIMIT {p(1)})) AS ranked "
            f"WHERE n > {p(2)})"
        )
        # --- meta and migrations
        self.meta = f"SELECT value FROM meta WHERE key = {p(1)}"
        self.set_meta = (
            f"INSERT INTO meta (key, value) VALUES ({p(1)}, {p(2)}) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        )
        self.meta_exists = (
            "SELECT count(*) FROM pg_catalog.pg_tables "
            "WHERE schemaname = current_schema() AND tablename = 'meta'"
            if pg
            else "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
        )
        # One migrator at a time across all servers; on SQLite the write transaction is that lock.
        self.migration_lock = (
            "SELECT pg_advisory_xact_lock(hashtext('consent-banner:' || current_schema()))" if pg else None
        )
        # --- webhook delivery cursors (schema 5; log/outbox.py)
        self.webhooks = f"SELECT {WEBHOOK_COLS} FROM webhooks ORDER BY name"
        self.webhook_for_update = f"SELECT {WEBHOOK_COLS} FROM webhooks WHERE name = {p(1)}" + (
            " FOR UPDATE" if pg else ""
        )
        self.insert_webhook = (
            f"INSERT INTO webhooks (name, seq, hash, created_at, attempts) VALUES ({p(1)}, {p(2)}, {p(3)}, "
            f"{p(4)}, 0) ON CONFLICT (name) DO NOTHING"
        )
        self.lease_webhook = f"UPDATE webhooks SET owner = {p(1)}, lease_until = {p(2)} WHERE name = {p(3)}"
        # Compare-and-set: only the lease holder moves the cursor, and only from where it read it.
        self.advance_webhook = (
            f"UPDATE webhooks SET seq = {p(1)}, hash = {p(2)}, delivered_at = {p(3)}, lease_until = {p(4)}, "
            "attempts = 0, next_attempt = NULL, last_error = NULL, failed_at = NULL "
            f"WHERE name = {p(5)} AND owner = {p(6)} AND seq = {p(7)} RETURNING seq"
        )
        self.fail_webhook = (
            f"UPDATE webhooks SET attempts = attempts + 1, next_attempt = {p(1)}, last_error = {p(2)}, "
            f"failed_at = {p(3)}, owner = NULL, lease_until = NULL WHERE name = {p(4)} AND owner = {p(5)} "
            "RETURNING attempts"
        )
        self.release_webhook = (
            f"UPDATE webhooks SET owner = NULL, lease_until = NULL WHERE name = {p(1)} AND owner = {p(2)}"
        )
        self.head_position = "SELECT seq, hash FROM head WHERE id = 1"  # unlocked: a cursor's start
        self.first_seq = "SELECT min(seq) FROM records"  # after a purge: where the records begin
        # Records after a cursor, up to an anchor (the head or a checkpoint), in seq order.
        self.records_between = (
            f"SELECT {RECORD_COLS} FROM records WHERE seq > {p(1)} AND seq <= {p(2)} ORDER BY seq"
        )
        # The first checkpoint past a cursor: the nearest signed anchor a window of records ends at.
        self.checkpoint_after = (
            f"SELECT {CHECKPOINT_COLS} FROM checkpoints WHERE seq > {p(1)} AND seq <= {p(2)} "
            "ORDER BY seq, coalesce(n, 0) DESC LIMIT 1"
        )
        self.purge_anchor = (
            f"SELECT {CHECKPOINT_COLS} FROM checkpoints WHERE seq = {p(1)} AND reason = 'purge' "
            "ORDER BY coalesce(n, 0) DESC LIMIT 1"
        )

    # --- reading an older schema --------------------------------------------------------------------

    def _column(self, table: str, name: str, *, alias: bool = True) -> str:
        """`name` as a reader selects it from `table`: itself, or what its migration would have made
        of a log of `self.schema` (NULL; schema 2 numbered the previous release's checkpoints)."""
        column = next(c for t in TABLES if t.name == table for c in t.columns if c.name == name)
        if column.since <= self.schema:
            return name
        if (table, name) == ("checkpoints", "n"):
            value = "row_number() OVER (ORDER BY seq, reason)"  # as migration 2 numbers them
        else:
            value = f"CAST(NULL AS {sql_type(column, self.dialect)})"
        return f"{value} AS {name}" if alias else value

    def _columns(self, table: str, names: str) -> str:
        return ", ".join(self._column(table, n.strip()) for n in names.split(","))

    # --- statements over a filter or a list ----------------------------------------------------------

    def count(self, flt: RecordFilter) -> tuple[str, list[object]]:
        where, params = flt.clauses(self.p)
        return f"SELECT count(*) FROM records{where}", params

    def page(self, flt: RecordFilter, limit: int, before: int | None) -> tuple[str, list[object]]:
        """Newest first; `before` is the seq to continue below (keyset paging)."""
        where, params = flt.clauses(self.p)
        if before is not None:
            params.append(before)
            where += (" AND" if where else " WHERE") + f" seq < {self.p(len(params))}"
        params.append(limit)
        return (
            f"SELECT {RECORD_COLS} FROM records{where} ORDER BY seq DESC LIMIT {self.p(len(params))}",
            params,
        )

    def rows(self, flt: RecordFilter) -> tuple[str, list[object]]:
        where, params = flt.clauses(self.p)
        return f"SELECT {RECORD_COLS} FROM records{where} ORDER BY seq", params

    def groups(self, flt: RecordFilter) -> tuple[str, list[object]]:
        where, params = flt.clauses(self.p)
        return _GROUPS.format(where=where), params

    def jurisdictions(self, flt: RecordFilter) -> tuple[str, list[object]]:
        """Decisions per (model, region, action): the stats split by jurisdiction."""
        where, params = flt.clauses(self.p)
        model, region = _JURISDICTION[self.dialect]
        return (
            f"SELECT {model}, {region}, action, count(*) FROM records{where} GROUP BY 1, 2, 3",
            params,
        )

    def consent_ids(self, flt: RecordFilter) -> tuple[str, list[object]]:
        where, params = flt.clauses(self.p)
        return f"SELECT count(DISTINCT consent_id) FROM records{where}", params

    def webhook_pending(self, after: int, actions: Sequence[str]) -> tuple[str, list[object]]:
        """How many records after `after` have one of `actions` (what a webhook still owes)."""
        marks = ", ".join(self.p(i) for i in range(2, len(actions) + 2))
        return f"SELECT count(*) FROM records WHERE seq > {self.p(1)} AND action IN ({marks})", [
            after,
            *actions,
        ]

    def _ids(self, ids: Sequence[str]) -> tuple[str, list[object]]:
        """`consent_id` in a list: one array parameter on PostgreSQL, one parameter each on SQLite."""
        if self.dialect == "postgres":
            return "consent_id = ANY($1::text[])", [list(ids)]
        return f"consent_id IN ({', '.join('?' * len(ids))})", list(ids)

    def gpc_latest(self, ids: Sequence[str]) -> tuple[str, list[object]]:
        """For each of `ids`: the seq of its latest record that is not a GPC record."""
        cond, params = self._ids(ids)
        params.append(GPC_ACTION)
        return (
            f"SELECT consent_id, max(seq) FROM records WHERE {cond} AND action <> {self.p(len(params))} "
            "GROUP BY consent_id",
            params,
        )

    def gpc_recorded(self, ids: Sequence[str]) -> tuple[str, list[object]]:
        """The GPC records of `ids` already written (each names the decision it amends)."""
        cond, params = self._ids(ids)
        params.append(GPC_ACTION)
        return (
            f"SELECT {RECORD_COLS} FROM records WHERE {cond} AND action = {self.p(len(params))} "
            "AND detail IS NOT NULL",
            params,
        )
