"""The two backends are one algorithm: where their copies had drifted apart (issue 13), both now agree.

Each test runs on SQLite and, with CONSENT_TEST_POSTGRES_DSN set, on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import textwrap
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from consent_banner.errors import LogNeedsMigration, LogUnavailable
from consent_banner.log import Checkpoint, Decision, RecordFilter, derive_hmac_key, open_log
from consent_banner.log.commands import log as log_group
from consent_banner.log.schema import SCHEMA_VERSION

from .conftest import KEY, PG_DSN, drop_pg_schema, needs_postgres, pg_schema_url
from .rawdb import RawDB

MakeDecision = Callable[..., Decision]
FIXTURES = Path(__file__).parent.parent / "fixtures"


async def test_a_closed_log_refuses_reads_as_it_refuses_writes(log_url: str, decision: MakeDecision) -> None:
    """One rule for a closed log: every call raises LogUnavailable (a 503 for a visitor or auditor),
    reads as well as writes; they used to raise the bare LogError, which answers 500."""
    lg = await open_log(log_url, hmac_key=KEY)
    await lg.append(decision(consent_id="closed-000000000000001"))
    await lg.close()
    with pytest.raises(LogUnavailable):
        await lg.append(decision())
    with pytest.raises(LogUnavailable):
        await lg.records_for("closed-000000000000001")
    with pytest.raises(LogUnavailable):
        await lg.count()
    with pytest.raises(LogUnavailable):
        await lg.verify()
    with pytest.raises(LogUnavailable):
        await lg.checkpoints()
    with pytest.raises(LogUnavailable):
        async for _ in lg.iter_rows():
            pass
    with pytest.raises(LogUnavailable):
        await lg.checkpoint()


async def test_verify_without_a_head_row_still_checks_every_record(
    log: Any, log_url: str, decision: MakeDecision
) -> None:
    """A deleted head row is reported after the records were checked (the verifier's own result was
    computed and dropped: it said 0 records); a changed record before it is the first bad one."""
    for _ in range(5):
        await log.append(decision())
    async with RawDB(log_url) as raw:
        await raw.execute("DELETE FROM head")
    result = await log.verify()
    assert (result.ok, result.problem, result.records) == (False, "missing", 5), result.message
    assert "head row is missing" in (result.reason or "")
    async with RawDB(log_url) as raw:
        await raw.allow_tampering()
        await raw.execute("UPDATE records SET language = 'xx' WHERE seq = 3")
    result = await log.verify()
    assert (result.ok, result.problem, result.bad_seq) == (False, "changed", 3), result.message


async def test_filtered_reads_agree(log: Any, decision: MakeDecision) -> None:
    """iter_rows, iter_records, page and count honour the same filter on both backends."""
    for i in range(6):
        await log.append(decision(consent_id=f"flt-{i % 2:018d}", action=("accept_all", "reject_all")[i % 2]))
    flt = RecordFilter(action="reject_all")
    rows = [r async for r in log.iter_rows(flt)]
    assert [r[0] for r in rows] == [2, 4, 6]
    assert [r.seq async for r in log.iter_records(RecordFilter(consent_id="flt-000000000000000000"))] == [
        1,
        3,
        5,
    ]
    assert [r.seq for r in await log.page(flt, limit=2)] == [6, 4]
    assert [r.seq for r in await log.page(flt, limit=2, before=4)] == [2]
    assert await log.count(flt) == 3


async def test_purge_and_checkpoint_leave_the_remembered_head_current(
    log_url: str, decision: MakeDecision
) -> None:
    """After a purge and a manual checkpoint, the next batch builds on the head the log remembers
    (PostgreSQL's purge left it behind) and the chain, head and checkpoints verify."""
    now = [datetime.now(UTC) - timedelta(days=400)]
    lg = await open_log(log_url, hmac_key=KEY, clock=lambda: now[0], checkpoint_every=1000)
    try:
        for _ in range(3):
            await lg.append(decision())
        now[0] = datetime.now(UTC)
        purged = await lg.purge(timedelta(days=365))
        after_purge = await lg.append(decision())
        assert after_purge.prev_hash == purged.record.hash
        cp = await lg.checkpoint()
        after_checkpoint = await lg.append(decision())
        assert (cp.seq, after_checkpoint.seq) == (after_purge.seq, after_purge.seq + 1)
        result = await lg.verify()
        assert result.ok, result.message
    finally:
        await lg.close()


# --- pins: a periodic and a purge checkpoint at the same record --------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, needs_postgres])])
async def schema2_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """A copy of a log written before the two backends became one core (schema 2), and its pins."""
    if request.param == "sqlite":
        db = tmp_path / "schema2.db"
        shutil.copy(FIXTURES / "schema2-log.db", db)
        yield f"sqlite:///{db}", FIXTURES / "schema2-log-pins.ndjson"
        return
    import asyncpg

    assert PG_DSN is not None
    schema = f"cbs2_{tmp_path.name[-12:].replace('-', '_').lower()}"
    dump = (FIXTURES / "schema2-log-postgres.sql").read_text().replace("cb_schema2", schema)
    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.execute(dump)
    finally:
        await conn.close()
    try:
        yield pg_schema_url(PG_DSN, schema), FIXTURES / "schema2-log-pins-postgres.ndjson"
    finally:
        await drop_pg_schema(PG_DSN, schema)


SCHEMA2_KEYS = [derive_hmac_key("s" * 40), derive_hmac_key("o" * 40)]
SCHEMA2_HEAD = "175c1460d0d31b3d3884ae07ae30061d8bcc8c4695933d00fa20b458b93f6a75"


def read_pins(path: Path) -> list[Checkpoint]:
    return [Checkpoint.from_json(json.loads(line)) for line in path.read_text().splitlines() if line]


async def test_pins_keep_a_periodic_and_a_purge_checkpoint_at_one_record(
    schema2_url: tuple[str, Path], tmp_path: Path
) -> None:
    """`log verify --pins` with both checkpoints at record 10 (periodic, then the purge's anchor):
    neither is lost, so the purged log verifies from its anchor, and a pin that differs from the
    log is caught whichever of the two it is."""
    url, pins_path = schema2_url
    pins = read_pins(pins_path)
    at_ten = sorted(cp.reason for cp in pins if cp.seq == 10)
    assert at_ten == ["periodic", "purge"]
    lg = await open_log(url, hmac_key=None, previous_hmac_keys=SCHEMA2_KEYS)
    try:
        result = await lg.verify(pins)
        assert result.ok, result.message
        assert (
            result.message
            == f"19 records, chain intact, head {SCHEMA2_HEAD} (from the checkpoint at record 10)"
        )
        for reason in ("periodic", "purge"):
            forged = [
                Checkpoint(**{**cp.__dict__, "mac": "0" * 64}) if (cp.seq, cp.reason) == (10, reason) else cp
                for cp in pins
            ]
            bad = await lg.verify(forged)
            assert not bad.ok and bad.problem in ("signature", "rewritten"), (reason, bad.message)
    finally:
        await lg.close()
    # The same from an export file, where the pins are all that anchors the chain.
    if url.startswith("sqlite"):
        config = tmp_path / "consent.toml"
        config.write_text(
            textwrap.dedent(
                f"""
                policy_revision = "2025-01"
                controller = "Example AB"
                privacy_policy_url = "/privacy"
                log = "{url}"
                [categories.necessary]
                label = "Necessary"
                """
            )
        )
        env = {"CONSENT_SECRET_KEYS": f"{'o' * 40},{'s' * 40}"}
        export = tmp_path / "export.ndjson"
        runner = CliRunner()
        out = await asyncio.to_thread(
            runner.invoke,
            log_group,
            ["export", "--config", str(config), "--format", "ndjson", "--output", str(export)],
            env=env,
        )
        assert out.exit_code == 0, out.output
        done = await asyncio.to_thread(
            runner.invoke,
            log_group,
            ["verify", "--config", str(config), "--file", str(export), "--pins", str(pins_path)],
            env=env,
        )
        assert done.exit_code == 0 and "(from the checkpoint at record 10)" in done.output, done.output


async def test_a_log_of_schema_2_verifies_and_goes_on(
    schema2_url: tuple[str, Path], decision: MakeDecision
) -> None:
    """A log written just before this refactor verifies unchanged (read as it is: a reader changes no
    schema), is refused by a writer until `log migrate`, then opens to write (its head re-signed by
    the newest key), takes new records after its head, and still verifies."""
    url, _ = schema2_url
    async with RawDB(url) as raw:
        before = await raw.fetch("SELECT seq, prev_hash, hash FROM records ORDER BY seq")
    reader = await open_log(url, hmac_key=None, previous_hmac_keys=SCHEMA2_KEYS)
    try:
        result = await reader.verify()
        assert result.ok and result.records == 19 and result.head == SCHEMA2_HEAD, result.message
        assert reader.migrated_from == 2 and await reader.schema_version() == 2
    finally:
        await reader.close()
    keys = {"hmac_key": SCHEMA2_KEYS[0], "previous_hmac_keys": SCHEMA2_KEYS[1:]}
    with pytest.raises(LogNeedsMigration, match="run `consent-banner log migrate`"):
        await open_log(url, **keys)
    await (await open_log(url, **keys, migrate=True)).close()  # what `log migrate` does
    lg = await open_log(url, **keys)
    try:
        assert lg.migrated_from == SCHEMA_VERSION
        record = await lg.append(decision())
        assert (record.seq, record.prev_hash) == (30, SCHEMA2_HEAD)
        assert (await lg.verify()).ok
        stats = await lg.stats()
        assert stats.total == 19 and (await lg.blocked())[0].count == 1
    finally:
        await lg.close()
    async with RawDB(url) as raw:
        assert (await raw.fetch("SELECT seq, prev_hash, hash FROM records ORDER BY seq"))[:-1] == before
