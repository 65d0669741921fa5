"""The log's tables, from one column spec, in the two SQL dialects; and the migrations between versions.

Every table is declared once (`TABLES`); each backend gets its CREATE TABLE statements from that
spec in its own types. A new log is made by running every migration in turn, so a new log and an
upgraded one have the same schema. What the two databases spell too differently to share
(triggers, numbering the previous release's checkpoints) is written per dialect here, side by side.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

from .canonical import ROW_COLUMNS

# 2: the checkpoint chain signed by the head; GPC recorded once. 3: the reporting client's network per
# blocked attempt (`log blocked --suggest` counts distinct clients; rows of before count as unknown).
# 4: Ed25519 signatures of the head and the checkpoints (key id and signature; a rotation checkpoint
# also the key before it and its signature), beside the HMAC, which stays as it was.
# 5: the webhooks' delivery cursors (outside the chain: state of the deliveries, not of the log).
SCHEMA_VERSION = 5

Dialect = Literal["sqlite", "postgres"]


class Column(NamedTuple):
    name: str
    type: Literal["int", "bigint", "text", "serial"]  # serial: an auto-numbered primary key
    null: bool = False
    since: int = 1  # the schema version that added it (ALTER TABLE in that migration)
    extra: str = ""  # PRIMARY KEY, CHECK (...)


class Table(NamedTuple):
    name: str
    columns: tuple[Column, ...]
    key: str = ""  # a table-level PRIMARY KEY (...)
    since: int = 1  # the schema version that created it (CREATE TABLE in that migration)


def _text(name: str, null: bool = False, since: int = 1) -> Column:
    return Column(name, "text", null, since)


_RECORDS = (
    Column("seq", "bigint", extra="PRIMARY KEY"),
    *(_text(c, null=c in ("version_id", "ip", "browser", "detail")) for c in ROW_COLUMNS[1:]),
)
assert tuple(c.name for c in _RECORDS) == ROW_COLUMNS  # the stored order is the canonical one

TABLES = (
    Table("meta", (_text("key")._replace(extra="PRIMARY KEY"), _text("value"))),
    Table("records", _RECORDS),
    Table("versions", (_text("id")._replace(extra="PRIMARY KEY"), _text("created_at"), _text("payload"))),
    Table(
        "head",
        (
            Column("id", "int", extra="PRIMARY KEY CHECK (id = 1)"),
            Column("seq", "bigint"),
            _text("hash"),
            _text("at", null=True),
            _text("key_id", null=True),
            _text("mac", null=True),
            _text("checkpoints", null=True, since=2),
            _text("sig_key_id", null=True, since=4),  # the Ed25519 key's id (keys.thumbprint)
            _text("sig", null=True, since=4),  # its signature, base64url (signing.ed25519_message)
        ),
    ),
    Table(
        "checkpoints",
        (
            Column("seq", "bigint"),
            _text("hash"),
            _text("at"),
            _text("reason"),
            _text("key_id"),
            _text("mac"),
            Column("n", "bigint", null=True, since=2),
            _text("prev", null=True, since=2),
            _text("sig_key_id", null=True, since=4),
            _text("sig", null=True, since=4),
            _text("prior_key_id", null=True, since=4),  # a rotation checkpoint: the key before,
            _text("prior_sig", null=True, since=4),  # which signs the same message
        ),
        key="PRIMARY KEY (seq, reason)",
    ),
    Table(
        "blocked",
        (
            Column("id", "serial"),
            _text("at"),
            _text("page"),
            _text("origin"),
            _text("directive"),
            _text("consent_id", null=True),
            _text("client", null=True, since=3),  # truncate_ip() of the reporting client
        ),
    ),
    # One row per webhook (its `name`): the last record delivered and acknowledged (a durable cursor
    # over the records' seq, so a decision writes nothing for its webhooks), the lease of the process
    # delivering now (compare-and-set: two servers do not both deliver a range), the failure state.
    Table(
        "webhooks",
        (
            _text("name")._replace(extra="PRIMARY KEY"),
            Column("seq", "bigint"),  # the last record delivered (or skipped: not an event it takes)
            _text("hash"),  # that record's hash: the next one must link to it
            _text("created_at"),
            _text("delivered_at", null=True),  # when the cursor last moved
            _text("owner", null=True),  # the delivering process's token while it holds the lease
            _text("lease_until", null=True),
            Column("attempts", "int"),  # failures in a row since the last delivery
            _text("next_attempt", null=True),  # after a failure: not before this time
            _text("last_error", null=True),
            _text("failed_at", null=True),
        ),
        since=5,
    ),
)

_TYPES: dict[Dialect, dict[str, str]] = {
    "sqlite": {"int": "INTEGER", "bigint": "INTEGER", "text": "TEXT", "serial": "INTEGER PRIMARY KEY"},
    "postgres": {"int": "integer", "bigint": "bigint", "text": "text", "serial": "bigserial PRIMARY KEY"},
}


def sql_type(c: Column, dialect: Dialect) -> str:
    """The column's type in `dialect`, bare (what a CAST names)."""
    return _TYPES[dialect]["bigint" if c.type == "serial" else c.type]


def _column(c: Column, dialect: Dialect) -> str:
    parts = [c.name, _TYPES[dialect][c.type]]
    if not c.null and c.type != "serial" and "PRIMARY KEY" not in c.extra:  # as v1 spelled them
        parts.append("NOT NULL")
    if c.extra:
        parts.append(c.extra)
    return " ".join(parts)


def create_table(t: Table, dialect: Dialect, version: int = 1) -> str:
    """CREATE TABLE of `t` as schema `version` had it."""
    lines = [_column(c, dialect) for c in t.columns if c.since <= version]
    if t.key:
        lines.append(t.key)
    return f"CREATE TABLE IF NOT EXISTS {t.name} (\n    " + ",\n    ".join(lines) + "\n)"


def added_columns(version: int, dialect: Dialect) -> list[str]:
    """ALTER TABLE ... ADD COLUMN for the columns `version` added."""
    if_not = " IF NOT EXISTS" if dialect == "postgres" else ""  # SQLite runs each migration once, in a lock
    return [
        f"ALTER TABLE {t.name} ADD COLUMN{if_not} {_column(c, dialect)}"
        for t in TABLES
        if t.since < version
        for c in t.columns
        if c.since == version
    ]


def created_tables(version: int, dialect: Dialect) -> list[str]:
    """CREATE TABLE for the tables `version` added."""
    return [create_table(t, dialect, version) for t in TABLES if t.since == version]


_INDEXES_V1 = [
    "CREATE INDEX IF NOT EXISTS records_consent_id ON records (consent_id)",
    "CREATE INDEX IF NOT EXISTS records_at ON records (at)",
    "CREATE INDEX IF NOT EXISTS blocked_at ON blocked (at)",
]
_INDEXES_V2 = [
    "CREATE UNIQUE INDEX IF NOT EXISTS checkpoints_n ON checkpoints (n)",
    # A GPC record is written once per consent id and the decision it amends (its detail).
    "CREATE UNIQUE INDEX IF NOT EXISTS records_gpc_once ON records (consent_id, detail) WHERE action = 'gpc'",
]

# Append-only by construction: the log never updates a record, a version or a checkpoint, and from
# version 2 on never deletes a checkpoint. (Someone with write access can drop these triggers;
# verify still sees what they did.)
_GUARDS_V1: dict[Dialect, list[str]] = {
    "sqlite": [
        "CREATE TRIGGER IF NOT EXISTS records_append_only BEFORE UPDATE ON records "
        "BEGIN SELECT RAISE(ABORT, 'consent log records are append-only'); END",
        "CREATE TRIGGER IF NOT EXISTS versions_immutable_u BEFORE UPDATE ON versions "
        "BEGIN SELECT RAISE(ABORT, 'banner versions are immutable'); END",
        "CREATE TRIGGER IF NOT EXISTS versions_immutable_d BEFORE DELETE ON versions "
        "BEGIN SELECT RAISE(ABORT, 'banner versions are immutable'); END",
        "CREATE TRIGGER IF NOT EXISTS checkpoints_immutable BEFORE UPDATE ON checkpoints "
        "BEGIN SELECT RAISE(ABORT, 'checkpoints are immutable'); END",
    ],
    "postgres": [
        "CREATE OR REPLACE FUNCTION consent_log_append_only() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'consent log records are append-only'; END $$",
        "CREATE OR REPLACE FUNCTION consent_log_immutable() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION '% are immutable', TG_TABLE_NAME; END $$",
        "DROP TRIGGER IF EXISTS records_append_only ON records",
        "CREATE TRIGGER records_append_only BEFORE UPDATE ON records FOR EACH ROW "
        "EXECUTE FUNCTION consent_log_append_only()",
        "DROP TRIGGER IF EXISTS versions_immutable ON versions",
        "CREATE TRIGGER versions_immutable BEFORE UPDATE OR DELETE ON versions FOR EACH ROW "
        "EXECUTE FUNCTION consent_log_immutable()",
        "DROP TRIGGER IF EXISTS checkpoints_immutable ON checkpoints",
        "CREATE TRIGGER checkpoints_immutable BEFORE UPDATE ON checkpoints FOR EACH ROW "
        "EXECUTE FUNCTION consent_log_immutable()",
    ],
}
# Version 2 numbers the previous release's checkpoints in a fixed order (their own signatures stay
# as they are), before the unique index on n; and checkpoints refuse DELETE (and TRUNCATE) too.
_NUMBER_CHECKPOINTS: dict[Dialect, str] = {
    "sqlite": "UPDATE checkpoints SET n = (SELECT count(*) FROM checkpoints c "
    "WHERE c.seq < checkpoints.seq OR (c.seq = checkpoints.seq AND c.reason <= checkpoints.reason))",
    "postgres": "UPDATE checkpoints c SET n = o.n FROM "
    "(SELECT seq, reason, row_number() OVER (ORDER BY seq, reason) AS n FROM checkpoints) o "
    "WHERE c.seq = o.seq AND c.reason = o.reason",
}
_UNGUARD_V2: dict[Dialect, str] = {  # the numbering updates checkpoints: their guard waits
    "sqlite": "DROP TRIGGER IF EXISTS checkpoints_immutable",
    "postgres": "DROP TRIGGER IF EXISTS checkpoints_immutable ON checkpoints",
}
_GUARDS_V2: dict[Dialect, list[str]] = {
    "sqlite": [
        "CREATE TRIGGER IF NOT EXISTS checkpoints_immutable BEFORE UPDATE ON checkpoints "
        "BEGIN SELECT RAISE(ABORT, 'checkpoints are immutable'); END",
        "CREATE TRIGGER IF NOT EXISTS checkpoints_kept BEFORE DELETE ON checkpoints "
        "BEGIN SELECT RAISE(ABORT, 'checkpoints are never deleted'); END",
    ],
    "postgres": [
        "CREATE TRIGGER checkpoints_immutable BEFORE UPDATE OR DELETE ON checkpoints FOR EACH ROW "
        "EXECUTE FUNCTION consent_log_immutable()",
        "DROP TRIGGER IF EXISTS checkpoints_kept ON checkpoints",
        "CREATE TRIGGER checkpoints_kept BEFORE TRUNCATE ON checkpoints FOR EACH STATEMENT "
        "EXECUTE FUNCTION consent_log_immutable()",
    ],
}


def migrations(dialect: Dialect) -> dict[int, list[str]]:
    """The statements that bring a log from version v-1 to v, for each v up to SCHEMA_VERSION."""
    return {
        1: [*created_tables(1, dialect), *_INDEXES_V1, *_GUARDS_V1[dialect]],
        2: [
            *added_columns(2, dialect),
            _UNGUARD_V2[dialect],
            _NUMBER_CHECKPOINTS[dialect],
            *_INDEXES_V2,
            *_GUARDS_V2[dialect],
        ],
        # Outside the hash chain: the blocked table is best-effort reports, so no record changes.
        3: [*added_columns(3, dialect)],
        # New nullable columns only: no record, no HMAC and no earlier signature changes.
        4: [*added_columns(4, dialect)],
        # A new table outside the chain (webhook delivery state): no record or signature changes.
        5: [*created_tables(5, dialect)],
    }


def insert_columns(table: str) -> tuple[str, ...]:
    """The columns a bulk insert into `table` fills (all but an auto-numbered key)."""
    t = next(t for t in TABLES if t.name == table)
    return tuple(c.name for c in t.columns if c.type != "serial")


def postgres_array_types(table: str) -> tuple[str, ...]:
    """The PostgreSQL array types of insert_columns(table), for `unnest($1::bigint[], ...)`."""
    t = next(t for t in TABLES if t.name == table)
    return tuple(_TYPES["postgres"][c.type] + "[]" for c in t.columns if c.type != "serial")
