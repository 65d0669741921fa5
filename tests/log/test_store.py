"""Appending, reading and failing closed, on every backend (SQLite; PostgreSQL when configured)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from consent_banner.errors import LogUnavailable
from consent_banner.log import ACTIONS, GENESIS, SOURCES, BlockedAttempt, Decision, open_log
from consent_banner.log.schema import SCHEMA_VERSION

from .conftest import KEY, VERSION_EN
from .rawdb import RawDB

MakeDecision = Callable[..., Decision]


async def test_append_returns_the_durable_record(log: Any, log_url: str, decision: MakeDecision) -> None:
    """R19, R23: append answers with the stored record, and it is in the database when it answers."""
    d = decision(ip="198.51.100.0", browser="Safari")
    before = datetime.now(UTC)
    rec = await log.append(d)
    assert rec.seq == 1 and rec.prev_hash == GENESIS and len(rec.hash) == 64
    assert before - timedelta(seconds=1) <= rec.at <= datetime.now(UTC) + timedelta(seconds=1)
    assert (rec.consent_id, rec.action, rec.source, rec.ip, rec.browser) == (
        d.consent_id,
        "accept_all",
        "banner",
        "198.51.100.0",
        "Safari",
    )
    assert rec.granted == ("necessary", "analytics", "marketing")
    assert rec.services == {"plausible": True}
    assert rec.version_id is not None
    # Another connection (another process, after a crash of this one) sees it already.
    async with RawDB(log_url) as raw:
        assert await raw.fetch("SELECT seq, hash FROM records") == [(1, rec.hash)]


async def test_every_action_is_a_new_record(log: Any, decision: MakeDecision) -> None:
    """R19: accept-all, reject-all, custom, withdraw, GPC opt-out, renewal and the opt-out model's
    "Do Not Sell or Share" each append a record."""
    cid = "visitor-00000000000001"
    sources = ["banner", "banner", "dialog", "settings", "gpc", "api", "banner"]
    for action, source in zip(ACTIONS, sources, strict=True):
        await log.append(decision(consent_id=cid, action=action, source=source))
    records = await log.records_for(cid)
    assert [r.action for r in records] == list(ACTIONS)
    assert [r.seq for r in records] == list(range(1, len(ACTIONS) + 1))
    assert all(b.prev_hash == a.hash for a, b in zip(records, records[1:], strict=False))
    assert {r.source for r in records} <= set(SOURCES)


async def test_records_cannot_be_updated_in_place(log: Any, log_url: str, decision: MakeDecision) -> None:
    """R19: the store itself refuses an UPDATE of a record or of a banner version."""
    rec = await log.append(decision())
    async with RawDB(log_url) as raw:
        with pytest.raises(Exception, match="append-only"):
            await raw.execute("UPDATE records SET action = 'reject_all' WHERE seq = ?", rec.seq)
        with pytest.raises(Exception, match="immutable"):
            await raw.execute("UPDATE versions SET payload = '{}'")
        with pytest.raises(Exception, match="immutable"):
            await raw.execute("DELETE FROM versions")


async def test_banner_version_stored_once_and_readable(
    log: Any, log_url: str, decision: MakeDecision
) -> None:
    """R20: each record points at the version shown; the version is stored once under its content hash."""
    records = [await log.append(decision()) for _ in range(3)]
    sv = {**VERSION_EN, "language": "sv", "texts": {"title": "Vi använder kakor"}}
    other = await log.append(decision(language="sv", version=sv))
    assert len({r.version_id for r in records}) == 1
    assert other.version_id != records[0].version_id
    assert await log.get_version(records[0].version_id) == VERSION_EN
    assert await log.get_version(other.version_id) == sv
    assert await log.get_version("0" * 64) is None
    async with RawDB(log_url) as raw:
        assert await raw.fetchval("SELECT count(*) FROM versions") == 2


async def test_records_for_returns_only_that_consent(log: Any, decision: MakeDecision) -> None:
    """R24: a consent id's records, and no one else's."""
    mine = [
        await log.append(decision(consent_id="mine-00000000000000001", action=a))
        for a in ("accept_all", "withdraw")
    ]
    await log.append(decision(consent_id="theirs-000000000000001"))
    got = await log.records_for("mine-00000000000000001")
    assert got == mine
    assert await log.records_for("nobody") == []


async def test_concurrent_appends_share_commits(log: Any, decision: MakeDecision) -> None:
    """R23 and the group-commit design: many concurrent decisions, few transactions, one unbroken chain."""
    results = await asyncio.gather(*(log.append(decision()) for _ in range(400)))
    assert sorted(r.seq for r in results) == list(range(1, 401))
    assert log.writer.batches < 100
    by_seq = sorted(results, key=lambda r: r.seq)
    assert all(b.prev_hash == a.hash for a, b in zip(by_seq, by_seq[1:], strict=False))
    assert (await log.verify()).ok


async def test_unwritable_log_fails_closed_for_every_caller(
    log: Any, log_url: str, decision: MakeDecision
) -> None:
    """R23 and the fail-closed rule: a failed batch answers LogUnavailable to each caller, writes nothing."""
    first = await log.append(decision())
    async with RawDB(log_url) as raw:
        await raw.break_inserts()
        outcomes = await asyncio.gather(*(log.append(decision()) for _ in range(25)), return_exceptions=True)
        assert all(isinstance(o, LogUnavailable) for o in outcomes), outcomes
        assert len({id(o) for o in outcomes}) == 25  # each caller its own exception
        assert await raw.fetchval("SELECT count(*) FROM records") == 1
        assert await raw.fetchval("SELECT count(*) FROM versions") == 1
        assert await raw.fetchval("SELECT seq FROM head") == 1
        await raw.repair_inserts()
    # The writer survived: the next decision lands right after the last good one.
    nxt = await log.append(decision())
    assert (nxt.seq, nxt.prev_hash) == (2, first.hash)
    assert (await log.verify()).ok


async def test_closed_log_refuses_appends(log_url: str, decision: MakeDecision) -> None:
    """Fail closed: after close() nothing is acknowledged."""
    lg = await open_log(log_url, hmac_key=KEY)
    await lg.close()
    with pytest.raises(LogUnavailable):
        await lg.append(decision())


async def test_log_without_key_is_read_only(log_url: str, decision: MakeDecision) -> None:
    """R22: only the holder of the server key can extend the signed chain."""
    writer = await open_log(log_url, hmac_key=KEY)
    await writer.append(decision())
    await writer.close()
    reader = await open_log(log_url, hmac_key=None)
    try:
        with pytest.raises(LogUnavailable):
            await reader.append(decision())
        assert await reader.count() == 1
    finally:
        await reader.close()


async def test_cancelled_caller_is_not_written(log: Any, decision: MakeDecision) -> None:
    """Fail closed: a request that gave up before its batch started leaves no record (nothing to prove)."""
    gate, in_flight = asyncio.Event(), asyncio.Event()
    original = log.writer._commit

    async def slow_commit(items: list[Any]) -> list[Any]:
        in_flight.set()
        await gate.wait()
        return await original(items)

    log.writer._commit = slow_commit
    first = asyncio.create_task(log.append(decision(consent_id="first-0000000000000001")))
    await in_flight.wait()  # the first batch is now in flight, held at the gate
    doomed = asyncio.create_task(log.append(decision(consent_id="doomed-000000000000001")))
    await asyncio.sleep(0)
    doomed.cancel()
    gate.set()
    assert (await first).seq == 1
    with pytest.raises(asyncio.CancelledError):
        await doomed
    later = await log.append(decision())
    assert later.seq == 2
    assert await log.records_for("doomed-000000000000001") == []


async def test_blocked_attempts_are_kept_without_query_strings(log: Any) -> None:
    """R21: CSP reports are logged with the path only and grouped for the auditor."""
    for _ in range(3):
        await log.add_blocked(
            BlockedAttempt(
                "/shop?email=a@b.example#x", "https://ads.example.com", "script-src-elem", "c" * 22
            )
        )
    await log.add_blocked(BlockedAttempt("/", "inline", "script-src", None))
    await log.flush()  # written by the writer when it is idle
    rows = await log.blocked()
    top = rows[0]
    assert (top.page, top.origin, top.directive, top.count, top.with_consent) == (
        "/shop",
        "https://ads.example.com",
        "script-src-elem",
        3,
        3,
    )
    assert {r.page for r in rows} == {"/shop", "/"}


async def test_open_in_missing_directory_is_unavailable(tmp_path: Path) -> None:
    """Fail closed: a log that cannot be opened says so with LogUnavailable."""
    with pytest.raises(LogUnavailable, match="does not exist"):
        await open_log(f"sqlite:///{tmp_path / 'nope' / 'log.db'}", hmac_key=KEY)


async def test_memory_log_works_like_the_file_log(decision: MakeDecision) -> None:
    """config.log = "memory://" (tests, demos): the same interface, in memory."""
    lg = await open_log("memory://", hmac_key=KEY)
    try:
        recs = await asyncio.gather(*(lg.append(decision(consent_id="m" * 22)) for _ in range(50)))
        assert len(await lg.records_for("m" * 22)) == 50
        assert sorted(r.seq for r in recs) == list(range(1, 51))
        assert (await lg.verify()).ok
    finally:
        await lg.close()


async def test_memory_logs_in_one_process_are_separate(decision: MakeDecision) -> None:
    """Each memory:// log is its own database, though its writer and readers share it."""
    one, two = await open_log("memory://", hmac_key=KEY), await open_log("memory://", hmac_key=KEY)
    try:
        await one.append(decision(consent_id="only-in-one"))
        assert await one.count() == 1 and await two.count() == 0
        assert await two.records_for("only-in-one") == []
        assert one.log_id != two.log_id
    finally:
        await one.close()
        await two.close()


async def test_closing_the_log_stops_its_writer_thread(log_url: str, decision: MakeDecision) -> None:
    """A closed log leaves no thread behind (a server that reopens its log must not pile them up)."""
    before = {t.ident for t in threading.enumerate()}
    lg = await open_log(log_url, hmac_key=KEY)
    await lg.append(decision())
    await lg.close()
    for _ in range(200):  # a stopped thread may take a moment to finish
        left = [t.name for t in threading.enumerate() if t.ident not in before and t.is_alive()]
        if not left:
            break
        await asyncio.sleep(0.01)
    assert left == []


async def test_read_failures_are_log_unavailable(log: Any, log_url: str, decision: MakeDecision) -> None:
    """Fail closed on reads too: a broken store surfaces as LogUnavailable, never a driver error."""
    await log.append(decision())
    async with RawDB(log_url) as raw:
        await raw.execute("ALTER TABLE records RENAME TO records_gone")
    with pytest.raises(LogUnavailable):
        await log.records_for("x")
    with pytest.raises(LogUnavailable):
        await log.verify()
    with pytest.raises(LogUnavailable):
        async for _ in log.iter_rows():
            pass
    with pytest.raises(LogUnavailable):
        await log.append(decision())


async def test_malformed_decisions_are_refused_before_the_writer(log: Any, decision: MakeDecision) -> None:
    """R19: only known actions and sources, and JSON banner versions, are logged; nothing is written."""
    from consent_banner.log import InvalidDecision

    with pytest.raises(InvalidDecision):
        await log.append(decision(action="maybe"))
    with pytest.raises(InvalidDecision):
        await log.append(decision(version={"texts": {1, 2}}))
    assert await log.count() == 0


async def test_backends_implement_the_whole_protocol(log: Any) -> None:
    """Both backends offer everything routes, the audit view and the CLI use."""
    from consent_banner.log import ConsentLog

    assert isinstance(log, ConsentLog)
    assert len(log.log_id) == 32
    assert await log.schema_version() == SCHEMA_VERSION
