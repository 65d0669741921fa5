"""Logs written by the previous release (schema 1) still verify as they are, and are upgraded in
place by `consent-banner log migrate`, the only thing that changes a schema (a writer refuses).

The fixtures were written by consent-banner at commit 28d2195 (see tests/fixtures/make_legacy_log.py):
31 records of which 1..10 purged behind a signed purge checkpoint, periodic checkpoints under an
old key and a newer one (a rotation), a head signed by the newer key, and the GPC flood of that
release (three identical gpc records).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from consent_banner.errors import LogNeedsMigration
from consent_banner.log import Decision, derive_hmac_key, open_log
from consent_banner.log.schema import SCHEMA_VERSION

from .conftest import PG_DSN, drop_pg_schema, needs_postgres, pg_schema_url
from .rawdb import RawDB

FIXTURES = Path(__file__).parent.parent / "fixtures"
OLD_SECRET = "o" * 40  # signed records 1..20
NEW_SECRET = "s" * 40  # signed the rest, and the head
OLD, NEW = derive_hmac_key(OLD_SECRET), derive_hmac_key(NEW_SECRET)
HEAD = "c494ed79ed83c1189c388acd80dda9132cffafc4cba9258f866fedbfaf36c295"
VENV_BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, needs_postgres])])
async def legacy_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A copy of the previous release's log, on each backend."""
    if request.param == "sqlite":
        db = tmp_path / "legacy.db"
        shutil.copy(FIXTURES / "legacy-log-v1.db", db)
        yield f"sqlite:///{db}"
        return
    import asyncpg

    assert PG_DSN is not None
    schema = f"cblegacy_{tmp_path.name[-12:].replace('-', '_').lower()}"
    dump = (FIXTURES / "legacy-log-v1-postgres.sql").read_text().replace("cb_legacy_v1", schema)
    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.execute(dump)
    finally:
        await conn.close()
    try:
        yield pg_schema_url(PG_DSN, schema)
    finally:
        await drop_pg_schema(PG_DSN, schema)


async def stored(url: str) -> list[tuple[Any, ...]]:
    async with RawDB(url) as raw:
        return await raw.fetch("SELECT seq, prev_hash, hash FROM records ORDER BY seq")


@pytest.mark.parametrize("keys", [[OLD, NEW], [NEW]], ids=["both-keys", "old-key-removed"])
async def test_previous_release_log_verifies(legacy_url: str, keys: list[bytes]) -> None:
    """Opened to read (no key to sign with), with the keys it was written under, or with the old
    one removed (its checkpoints are then "not checked"): intact."""
    lg = await open_log(legacy_url, hmac_key=None, previous_hmac_keys=keys)
    try:
        result = await lg.verify()
    finally:
        await lg.close()
    assert result.ok, result.message
    assert result.message == f"21 records, chain intact, head {HEAD} (from the checkpoint at record 10)"
    assert any("previous release's signature" in note for note in result.notes), result.notes


async def schema_of(url: str) -> str:
    async with RawDB(url) as raw:
        return str(await raw.fetchval("SELECT value FROM meta WHERE key = 'schema_version'"))


async def test_previous_release_log_is_upgraded_in_place_by_migrate_only(legacy_url: str) -> None:
    """Opened to write (a server, a purge): refused with "run consent-banner log migrate", nothing
    changed. Migrated (what `log migrate` does): the schema is current, the head re-signed in the new
    format, no record or hash changes, and the log goes on (new checkpoints chain after the old ones)."""
    before = await stored(legacy_url)
    with pytest.raises(LogNeedsMigration, match=r"is at schema 1; .*run `consent-banner log migrate`"):
        await open_log(legacy_url, hmac_key=NEW, previous_hmac_keys=[OLD])
    assert await schema_of(legacy_url) == "1" and await stored(legacy_url) == before
    migrated = await open_log(legacy_url, hmac_key=NEW, previous_hmac_keys=[OLD], migrate=True)
    try:
        assert migrated.migrated_from == 1 and await migrated.schema_version() == SCHEMA_VERSION
    finally:
        await migrated.close()
    lg = await open_log(legacy_url, hmac_key=NEW, previous_hmac_keys=[OLD])
    try:
        assert lg.migrated_from == SCHEMA_VERSION
        assert await stored(legacy_url) == before
        result = await lg.verify()
        assert result.ok, result.message
        assert not any("previous release's signature" in note for note in result.notes)
        old_cps = await lg.checkpoints()
        assert [cp.n for cp in old_cps] == list(range(1, 24)) and all(cp.prev is None for cp in old_cps)
        record = await lg.append(
            Decision("after-upgrade-0000000001", "reject_all", ("necessary",), ("analytics", "marketing"),
                     {}, "2023-01", "en", "banner", None, None, None)
        )  # fmt: skip
        assert record.seq == 32 and record.prev_hash == HEAD
        cp = await lg.checkpoint()
        assert (cp.n, cp.seq) == (24, 32) and cp.prev is not None
        assert (await lg.verify()).ok
    finally:
        await lg.close()
    # A checkpoint of the previous release deleted after the upgrade is caught like any other.
    async with RawDB(legacy_url) as raw:
        await raw.allow_tampering()
        await raw.execute("DELETE FROM checkpoints WHERE n = 5")
    lg = await open_log(legacy_url, hmac_key=None, previous_hmac_keys=[NEW])
    try:
        result = await lg.verify()
    finally:
        await lg.close()
    assert (result.ok, result.problem) == (False, "checkpoints"), result.message


async def test_previous_release_log_verifies_from_the_command_line(tmp_path: Path) -> None:
    """`consent-banner log verify` with CONSENT_SECRET_KEYS=old,new on the previous release's file."""
    db = tmp_path / "legacy.db"
    shutil.copy(FIXTURES / "legacy-log-v1.db", db)
    config = tmp_path / "consent.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            policy_revision = "2023-01"
            controller = "Example AB"
            privacy_policy_url = "/privacy"
            log = "sqlite:///{db}"
            [categories.necessary]
            label = "Necessary"
            """
        )
    )
    proc = subprocess.run(
        [str(VENV_BIN / "consent-banner"), "log", "verify", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"CONSENT_SECRET_KEYS": f"{OLD_SECRET},{NEW_SECRET}", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith(f"21 records, chain intact, head {HEAD}")
    with_key = subprocess.run(
        [str(VENV_BIN / "consent-banner"), "log", "verify", "--config", str(config), "--key", "x" * 40],
        capture_output=True,
        text=True,
        timeout=120,
        env={"CONSENT_SECRET_KEYS": f"{OLD_SECRET},{NEW_SECRET}", "PATH": "/usr/bin:/bin"},
    )
    assert with_key.returncode == 1 and "not listed" in with_key.stdout, with_key.stdout
    for empty in ("", "   ", "short"):
        refused = subprocess.run(
            [str(VENV_BIN / "consent-banner"), "log", "verify", "--config", str(config), "--key", empty],
            capture_output=True,
            text=True,
            timeout=120,
            env={"PATH": "/usr/bin:/bin"},
        )
        assert refused.returncode == 2 and "--key" in refused.stderr and "32 characters" in refused.stderr


async def test_log_migrate_upgrades_the_previous_release_and_keeps_every_hash(
    legacy_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`consent-banner log migrate` on the previous release's log, on each backend: before it the
    log verifies as it is and a writer (`checkpoints --new`) says to run it; after it, the current
    schema, every record and hash as it was, the log verifies as before and the writer works."""
    from click.testing import CliRunner

    from consent_banner.log.commands import log as log_group

    before = await stored(legacy_url)
    config = tmp_path / "consent.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            policy_revision = "2023-01"
            controller = "Example AB"
            privacy_policy_url = "/privacy"
            log = "{legacy_url}"
            [categories.necessary]
            label = "Necessary"
            """
        )
    )
    monkeypatch.setenv("CONSENT_SECRET_KEYS", f"{OLD_SECRET},{NEW_SECRET}")
    runner = CliRunner()

    def invoke(*args: str) -> Any:
        return asyncio.to_thread(runner.invoke, log_group, [*args, "--config", str(config)])

    # Before: the readers read it as it is; a writer refuses and says what to run; nothing changes.
    verified = await invoke("verify")
    assert verified.exit_code == 0 and verified.output.startswith(f"21 records, chain intact, head {HEAD}")
    refused = await invoke("checkpoints", "--new")
    assert refused.exit_code == 1, refused.output
    assert "is at schema 1" in refused.output and "run `consent-banner log migrate`" in refused.output
    assert await schema_of(legacy_url) == "1" and await stored(legacy_url) == before
    migrated = await invoke("migrate")
    assert migrated.exit_code == 0, migrated.output
    assert f"schema version {SCHEMA_VERSION} (was 1)" in migrated.output, migrated.output
    assert await stored(legacy_url) == before
    verified = await invoke("verify")
    assert verified.exit_code == 0, verified.output
    assert verified.output.startswith(f"21 records, chain intact, head {HEAD}")
    # After: the writer works.
    written = await invoke("checkpoints", "--new")
    assert written.exit_code == 0 and '"seq": 31' in written.output, written.output
