"""Read-only by default (issue 18): what reads the log never writes it.

`log verify`, `export`, `stats`, `blocked`, `checkpoints` and the audit view open the log read-only:
no writer, no write lock, no DDL, no migration. On SQLite the file is opened `mode=ro` (and
`immutable=1` only while no write-ahead log exists), so they work on a file in a read-only
directory and leave the database and its WAL byte-identical; on PostgreSQL they work under a role
that may only SELECT. Only `log migrate` changes a schema; a writer on an older one says so.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from consent_banner.config import ConsentConfig
from consent_banner.errors import LogError, LogUnavailable
from consent_banner.log import BlockedAttempt, Decision, derive_hmac_key, open_log
from consent_banner.log.commands import log as log_group

from ..conftest import MODEL_TOML, ORIGIN, make_app
from .conftest import KEY, PG_DSN, SECRET, needs_postgres, pg_schema_url
from .rawdb import RawDB
from .test_upgrade import FIXTURES, NEW_SECRET, OLD_SECRET, legacy_url  # noqa: F401 (a fixture)
from .test_upgrade import HEAD as LEGACY_HEAD

READERS = [
    ["verify"],
    ["export", "--format", "ndjson"],
    ["export", "--format", "csv"],
    ["stats"],
    ["blocked"],
    ["blocked", "--suggest", "--min-clients", "0"],
    ["checkpoints"],
]
AUDIT_TOKEN = "audit-token-0123456789-0123456789"
BEARER = {"authorization": f"Bearer {AUDIT_TOKEN}"}
SAME = {"origin": ORIGIN}
# Run a `consent-banner log` command as `nobody` when we are root (root ignores file permissions, so
# only then is the read-only directory a real check). Everything the command needs is imported first:
# nobody cannot read the interpreter's library under /root.
AS_NOBODY = """
import os, sys
import aiosqlite, asyncio, csv, encodings.idna, importlib.readers, json, sqlite3, tomllib
from click.testing import CliRunner
from consent_banner.cli import cli
from consent_banner.config import ConsentConfig
import consent_banner.log.commands, consent_banner.log.export, consent_banner.log.sqlite
import consent_banner.scan.blocked
ConsentConfig.from_toml(sys.argv[sys.argv.index("--config") + 1])  # its lazy imports and resources
if os.geteuid() == 0:
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
    assert os.geteuid() == 65534
result = CliRunner().invoke(cli, ["log", *sys.argv[1:]], catch_exceptions=False)
sys.stdout.write(result.output)
sys.exit(result.exit_code)
"""


def config_text(log_url: str, **top: str) -> str:
    text = textwrap.dedent(MODEL_TOML.format(db="unused.db")).replace('log = "sqlite:///unused.db"', "")
    lines = [f"log = {_toml(log_url)}", *(f"{k} = {_toml(v)}" for k, v in top.items())]
    return "\n".join(lines) + "\n" + text


def _toml(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def snapshot(directory: Path) -> dict[str, tuple[str, int]]:
    """Every file in `directory`: its SHA-256 and modification time."""
    return {
        p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(directory.iterdir())
    }


def decision(n: int) -> Decision:
    return Decision(
        f"read-only-{n:014d}", "accept_all", ("necessary", "analytics"), ("marketing",), {}, "2026-11-01",
        "en", "banner", "192.0.2.0", "Firefox", None,
    )  # fmt: skip


async def written_log(url: str, records: int = 3) -> None:
    lg = await open_log(url, hmac_key=KEY)
    try:
        for n in range(records):
            await lg.append(decision(n))
        await lg.checkpoint()
    finally:
        await lg.close()


async def invoke(config: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    return await asyncio.to_thread(
        CliRunner().invoke, log_group, [*args, "--config", str(config)], env=env, catch_exceptions=False
    )


@pytest.fixture
def locked_dir() -> Iterator[Path]:
    """A directory nobody may enter but read (made outside pytest's tmp, which only root can enter),
    its files then made read-only too; writable again at the end, so it can be removed."""
    d = Path(tempfile.mkdtemp(prefix="cb-read-only-", dir="/tmp"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        d.chmod(0o755)
        shutil.rmtree(d)


def lock(directory: Path) -> None:
    for p in directory.iterdir():
        p.chmod(0o444)
    directory.chmod(0o555)


# --- SQLite: a read-only directory, byte for byte --------------------------------------------------


@pytest.mark.parametrize("made_by", ["this release", "the previous release"])
def test_read_commands_work_in_a_read_only_directory_and_change_no_byte(
    locked_dir: Path, made_by: str
) -> None:
    """R22: every read command, run as `nobody` (when the tests run as root) on a log in a directory
    mode 0555 with files 0444: each answers, and afterwards the directory holds the same files with
    the same bytes and times (no -wal or -shm made, no migration of the previous release's schema
    1); a writer there fails, which shows the directory is really read-only."""
    db = locked_dir / "log.db"
    if made_by == "this release":
        asyncio.run(written_log(f"sqlite:///{db}"))
        keys, head = SECRET, None
    else:
        shutil.copy(FIXTURES / "legacy-log-v1.db", db)
        keys, head = f"{OLD_SECRET},{NEW_SECRET}", LEGACY_HEAD
    (locked_dir / "consent.toml").write_text(config_text(f"sqlite:///{db}"))
    lock(locked_dir)
    before = snapshot(locked_dir)
    assert set(before) == {"log.db", "consent.toml"}
    env = {**os.environ, "CONSENT_SECRET_KEYS": keys, "PYTHONPATH": os.pathsep.join(sys.path)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-c", AS_NOBODY, *args, "--config", str(locked_dir / "consent.toml")]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, cwd="/")

    for args in READERS:
        done = run(*args)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        if args == ["verify"]:
            assert "chain intact" in done.stdout and (head is None or head in done.stdout), done.stdout
        if args[:1] == ["export"]:
            assert done.stdout.count("\n") >= 3, done.stdout
    assert snapshot(locked_dir) == before
    refused = run("purge", "--older-than", "1d", "--yes")
    assert refused.returncode == 1 and "Error:" in refused.stdout, (refused.stdout, refused.stderr)
    assert snapshot(locked_dir) == before


_WRITER = """
import asyncio, sqlite3, sys
from consent_banner.log import Decision, derive_hmac_key, open_log
async def main(path):
    lg = await open_log("sqlite:///" + path, hmac_key=derive_hmac_key(sys.argv[2]))
    for n in range(5):
        await lg.append(Decision(f"wal-{n:020d}", "reject_all", ("necessary",), ("analytics",), {},
                                 "2026-11-01", "en", "banner", None, None, None))
    # Committed records in the WAL (not checkpointed while a connection is open), and more written
    # but not committed, by a second connection in the middle of its transaction.
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute("BEGIN IMMEDIATE")
    raw.execute("INSERT INTO blocked (at, page, origin, directive) "
                "VALUES ('2026-11-01', '/', 'https://x.example', 'img-src')")
    print("ready", flush=True)
    sys.stdin.readline()
    raw.execute("ROLLBACK")
    await lg.close()
asyncio.run(main(sys.argv[1]))
"""


async def test_a_live_write_ahead_log_is_read_not_ignored(tmp_path: Path) -> None:
    """R22: another process holds the log open with committed records only in its WAL (the main file
    alone has not even the tables) and an uncommitted write: a reader sees exactly the committed
    state (it must not open `immutable`, which would read the main file alone), verifies it, and
    leaves the database, its WAL and its -shm byte-identical."""
    db = tmp_path / "log.db"
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(db), SECRET],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
        assert {p.name for p in tmp_path.iterdir()} == {"log.db", "log.db-wal", "log.db-shm"}
        with pytest.raises(sqlite3.OperationalError, match="no such table"):
            sqlite3.connect(f"file:{db}?mode=ro&immutable=1", uri=True).execute(
                "SELECT count(*) FROM records"
            )
        before = snapshot(tmp_path)
        reader = await open_log(f"sqlite:///{db}", hmac_key=None, previous_hmac_keys=[KEY], read_only=True)
        try:
            assert await reader.count() == 5
            result = await reader.verify()
            assert result.ok and result.records == 5, result.message
            assert await reader.blocked() == []  # the uncommitted report is not seen
        finally:
            await reader.close()
        assert snapshot(tmp_path) == before
    finally:
        if writer.stdin is not None:
            writer.stdin.write("\n")
            writer.stdin.close()
        writer.wait(timeout=30)
        if writer.stdout is not None:
            writer.stdout.close()
    assert writer.returncode == 0


async def test_a_reader_opened_without_a_wal_follows_a_writer_that_comes_later(tmp_path: Path) -> None:
    """Opened when no -wal exists (so `immutable`), the reader notices a writer arriving: its next
    read sees the new record; a long read during which a writer came says so rather than report
    what may mix two states."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    await written_log(url, records=3)
    for expected in (3, 4):
        assert not (tmp_path / "log.db-wal").exists()  # nobody has it open: the reader is immutable
        reader = await open_log(url, hmac_key=None, read_only=True)
        writer = None
        try:
            assert await reader.count() == expected
            if expected == 3:
                writer = await open_log(url, hmac_key=KEY)
                await writer.append(decision(9))
                assert await reader.count() == 4
                assert (await reader.page(limit=1))[0].consent_id == decision(9).consent_id
            else:
                chunks = reader.iter_chunks(chunk=1)
                assert len(await anext(chunks)) == 1
                writer = await open_log(url, hmac_key=KEY)
                await writer.append(decision(10))
                with pytest.raises(LogUnavailable, match="written to while it was read"):
                    async for _ in chunks:
                        pass
        finally:
            await reader.close()
            if writer is not None:
                await writer.close()  # the last to leave: it folds the WAL in and removes it


async def test_a_reader_follows_log_migrate_run_while_it_is_open(legacy_url: str) -> None:  # noqa: F811
    """R22: a reader opened on the previous release's schema keeps verifying after `log migrate` ran
    and the log went on (new checkpoints chained, the head re-signed): it reads the new columns
    instead of the old schema's NULLs, which would fail the head's signature."""
    keys = {"previous_hmac_keys": [KEY, *(_old_keys())]}
    reader = await open_log(legacy_url, hmac_key=None, read_only=True, **keys)
    try:
        assert (await reader.verify()).ok and await reader.schema_version() == 1
        writer = await open_log(legacy_url, hmac_key=KEY, migrate=True, previous_hmac_keys=_old_keys())
        try:
            await writer.append(decision(1))
            await writer.checkpoint()
        finally:
            await writer.close()
        result = await reader.verify()
        assert result.ok and result.records == 22, result.message
        assert len(await reader.checkpoints()) == 24
    finally:
        await reader.close()


def _old_keys() -> list[bytes]:
    return [derive_hmac_key(NEW_SECRET), derive_hmac_key(OLD_SECRET)]


async def test_reading_a_missing_log_creates_nothing(tmp_path: Path) -> None:
    """No file, and on PostgreSQL no schema, is made by a reader: it says there is no log."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    with pytest.raises(LogError, match="there is no consent log"):
        await open_log(url, hmac_key=KEY, read_only=True)
    assert list(tmp_path.iterdir()) == []
    if PG_DSN:
        import asyncpg

        schema = f"cbro_{secrets.token_hex(6)}"
        with pytest.raises(LogError, match="there is no consent log in schema"):
            await open_log(pg_schema_url(PG_DSN, schema), hmac_key=KEY, read_only=True)
        conn = await asyncpg.connect(PG_DSN)
        try:
            assert await conn.fetchval("SELECT count(*) FROM pg_namespace WHERE nspname = $1", schema) == 0
        finally:
            await conn.close()


async def test_a_read_only_log_refuses_every_write(log_url: str) -> None:
    """Appending, a checkpoint, a purge or a migration through a read-only log is refused, and the
    log's bytes (SQLite) or rows stay as they were."""
    await written_log(log_url)
    async with RawDB(log_url) as raw:
        before = await raw.fetch("SELECT seq, hash FROM records ORDER BY seq")
    reader = await open_log(log_url, hmac_key=KEY, read_only=True)
    try:
        with pytest.raises(LogUnavailable):
            await reader.append(decision(7))
        for write in (reader.checkpoint(), reader.migrate()):
            with pytest.raises(LogError, match="opened read-only"):
                await write
        with pytest.raises(LogError):
            await reader.purge(timedelta(days=1))
        assert (await reader.verify()).ok
    finally:
        await reader.close()
    async with RawDB(log_url) as raw:
        assert await raw.fetch("SELECT seq, hash FROM records ORDER BY seq") == before


# --- PostgreSQL: a role that may only SELECT --------------------------------------------------------


@pytest.fixture
async def select_only(pg_log_url: str) -> AsyncIterator[str]:
    """The log (written by the owner) and a URL to it as a new role granted only USAGE on its
    schema and SELECT on its tables; the role is dropped afterwards (a unique name per test)."""
    import asyncpg

    log_url = pg_log_url

    await written_log(log_url)
    await written_blocked(log_url)
    schema = log_url.rsplit("schema=", 1)[1]
    role = f"cb_reader_{secrets.token_hex(6)}"
    assert PG_DSN is not None
    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(f'CREATE ROLE "{role}" LOGIN')
        await conn.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"')
        await conn.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA "{schema}" TO "{role}"')
        parts = PG_DSN.split("://", 1)[1].split("@", 1)
        yield f"postgresql://{role}@{parts[-1]}" + ("&" if "?" in parts[-1] else "?") + f"schema={schema}"
    finally:
        await conn.execute(f'DROP OWNED BY "{role}"')
        await conn.execute(f'DROP ROLE "{role}"')
        await conn.close()


async def written_blocked(url: str) -> None:
    lg = await open_log(url, hmac_key=KEY)
    try:
        await lg.add_blocked(BlockedAttempt("/", "https://ads.example", "img-src", None, client="192.0.2.0"))
        await lg.flush()
    finally:
        await lg.close()


@needs_postgres
@pytest.mark.postgres
async def test_read_commands_work_under_a_select_only_role(select_only: str, tmp_path: Path) -> None:
    """R22: verify, export, stats, blocked and checkpoints as a role that may only SELECT: each answers
    (the reader creates no schema, takes no lock, runs no DDL); the role really cannot write."""
    import asyncpg

    config = tmp_path / "consent.toml"
    config.write_text(config_text(select_only))
    env = {"CONSENT_SECRET_KEYS": SECRET}
    for args in READERS:
        done = await invoke(config, *args, env=env)
        assert done.exit_code == 0, (args, done.output)
        if args == ["verify"]:
            assert done.output.startswith("3 records, chain intact"), done.output
        if args == ["blocked"]:
            assert "https://ads.example" in done.output
    refused = await invoke(config, "purge", "--older-than", "1d", "--yes", env=env)
    assert refused.exit_code == 1 and "permission denied" in refused.output, refused.output
    dsn, _, schema = select_only.partition("?schema=")
    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM blocked")
    finally:
        await conn.close()


@needs_postgres
@pytest.mark.postgres
async def test_the_audit_view_reads_with_a_select_only_role(
    select_only: str, pg_log_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """R25: `audit_log` names the read-only credentials: the dashboard, the records, the chain, the
    blocked reports and both downloads answer through HTTP, while decisions still go to `log`."""
    monkeypatch.setenv("CONSENT_SECRET_KEYS", SECRET)
    monkeypatch.setenv("CONSENT_AUDIT_TOKEN", AUDIT_TOKEN)
    path = tmp_path / "consent.toml"
    path.write_text(config_text(pg_log_url, audit_log=select_only, decision_rate_limit="off"))
    app = make_app(ConsentConfig.from_toml(path))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN) as c:
            assert (await c.post("/_consent", json={"action": "reject_all"}, headers=SAME)).status_code == 200
            for page in ("/", "/records", "/records/1", "/blocked", "/export.csv", "/checkpoints.ndjson"):
                r = await c.get(f"/_consent/audit{page}", headers=BEARER)
                assert r.status_code == 200, (page, r.text[:300])
            chain = await c.get("/_consent/audit/chain", headers=BEARER)
            assert chain.status_code == 200 and "4 records, chain intact" in chain.text, chain.text[:500]
            export = await c.get("/_consent/audit/export.ndjson", headers=BEARER)
            assert export.status_code == 200 and export.text.count('{"seq":') == 4
    finally:
        await app.close()


# --- a writer on an older schema ---------------------------------------------------------------------


async def test_the_server_on_an_older_log_refuses_decisions_until_log_migrate(
    legacy_url: str,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """R23: the previous release's log under this release's server: a decision answers 503 and the log
    says "run consent-banner log migrate" (the schema stays 1), /health names the reason
    (log_needs_migration); the audit view, a reader, still
    verifies it. After `log migrate` the next decision is recorded after the old head."""
    monkeypatch.setenv("CONSENT_SECRET_KEYS", f"{OLD_SECRET},{NEW_SECRET}")
    monkeypatch.setenv("CONSENT_AUDIT_TOKEN", AUDIT_TOKEN)
    path = tmp_path / "consent.toml"
    path.write_text(config_text(legacy_url, decision_rate_limit="off"))
    app = make_app(ConsentConfig.from_toml(path))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN) as c:
            refused = await c.post("/_consent", json={"action": "accept_all"}, headers=SAME)
            assert refused.status_code == 503
            said = [m for m in caplog.messages if "run `consent-banner log migrate`" in m]
            assert said and "is at schema 1" in said[0], caplog.messages
            health = await c.get("/_consent/health")
            assert health.status_code == 503 and health.json()["reason"] == "log_needs_migration"
            async with RawDB(legacy_url) as raw:
                assert await raw.fetchval("SELECT value FROM meta WHERE key = 'schema_version'") == "1"
            chain = await c.get("/_consent/audit/chain", headers=BEARER)
            assert chain.status_code == 200 and f"21 records, chain intact, head {LEGACY_HEAD}" in chain.text
            migrated = await invoke(path, "migrate")
            assert migrated.exit_code == 0 and "(was 1)" in migrated.output, migrated.output
            accepted = await c.post("/_consent", json={"action": "accept_all"}, headers=SAME)
            assert accepted.status_code == 200, accepted.text
            chain = await c.get("/_consent/audit/chain", headers=BEARER)
            assert chain.status_code == 200 and "22 records, chain intact" in chain.text, chain.text[:500]
    finally:
        await app.close()
    async with RawDB(legacy_url) as raw:
        row = await raw.fetch("SELECT seq, prev_hash FROM records ORDER BY seq DESC LIMIT 1")
    assert row == [(32, LEGACY_HEAD)]


async def test_the_demo_upgrades_its_own_log_and_leaves_a_new_one_to_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`consent-banner demo` is its log's operator: a log of the previous release found where it
    runs is migrated at start (and said so), every hash kept; no log yet, or a current one, is left
    as it is (the server creates a new log on its first decision)."""
    from server.app import _upgrade_own_log  # noqa: PLC0415 (the demo, not the package)

    monkeypatch.setenv("CONSENT_SECRET_KEYS", f"{OLD_SECRET},{NEW_SECRET}")
    url = f"sqlite:///{tmp_path / 'consent-demo.db'}"
    assert await _upgrade_own_log(url) is None and list(tmp_path.iterdir()) == []
    shutil.copy(FIXTURES / "legacy-log-v1.db", tmp_path / "consent-demo.db")
    async with RawDB(url) as raw:
        before = await raw.fetch("SELECT seq, hash FROM records ORDER BY seq")
    said = await _upgrade_own_log(url)
    assert said is not None and said.startswith("upgraded from schema 1 to "), said
    assert await _upgrade_own_log(url) is None
    writer = await open_log(url, hmac_key=derive_hmac_key(NEW_SECRET), previous_hmac_keys=_old_keys())
    try:
        assert (await writer.verify()).ok
    finally:
        await writer.close()
    async with RawDB(url) as raw:
        assert await raw.fetch("SELECT seq, hash FROM records ORDER BY seq") == before
