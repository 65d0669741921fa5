"""Retention: purge removes old records, anchors the rest with a signed checkpoint, logs itself. R21."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from consent_banner.log import Decision, open_log

from .conftest import KEY
from .rawdb import RawDB

MakeDecision = Callable[..., Decision]


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


async def aged_log(log_url: str, decision: MakeDecision) -> tuple[Any, Clock]:
    """10 records from 400 days ago, 5 from 100 days ago, 5 from today."""
    today = datetime.now(UTC)
    clock = Clock(today - timedelta(days=400))
    lg = await open_log(log_url, hmac_key=KEY, clock=clock)
    for days, n in ((400, 10), (100, 5), (0, 5)):
        clock.now = today - timedelta(days=days)
        for i in range(n):
            await lg.append(decision(consent_id=f"d{days:03d}-{i:016d}"))
    clock.now = today
    return lg, clock


async def test_purge_keeps_the_chain_verifiable(log_url: str, decision: MakeDecision) -> None:
    """R21, R22: after removing the oldest records the rest verifies from the signed purge checkpoint."""
    lg, _ = await aged_log(log_url, decision)
    try:
        result = await lg.purge(timedelta(days=365))
        assert (result.removed, result.through_seq) == (10, 10)
        assert result.checkpoint is not None and result.checkpoint.seq == 10
        assert result.record.action == "purge" and result.record.seq == 21
        assert result.record.detail is not None and result.record.detail["removed"] == 10
        assert await lg.count() == 11  # 10 kept decisions + the purge's own record
        v = await lg.verify()
        assert v.ok, v.message
        assert (v.first_seq, v.last_seq, v.anchor) == (11, 21, 10)
        assert "from the checkpoint at record 10" in v.message
        # The log goes on after a purge.
        rec = await lg.append(decision())
        assert rec.seq == 22 and rec.prev_hash == result.record.hash
        assert (await lg.verify()).ok
    finally:
        await lg.close()


async def test_repeated_purges_are_each_logged(log_url: str, decision: MakeDecision) -> None:
    """R21: every purge is a record, even one that removes nothing; the chain stays intact throughout."""
    lg, _ = await aged_log(log_url, decision)
    try:
        first = await lg.purge(timedelta(days=365))
        again = await lg.purge(timedelta(days=365))
        assert again.removed == 0 and again.checkpoint is None
        tighter = await lg.purge(timedelta(days=30))
        # Only a prefix of the chain goes: the 5 from 100 days ago; today's records and purges stay.
        assert (tighter.removed, tighter.through_seq) == (5, 15)
        assert first.record.seq == 21
        assert [r.action for r in await lg.page(limit=4)] == ["purge", "purge", "purge", "accept_all"]
        v = await lg.verify()
        assert v.ok, v.message
        stats = await lg.stats()
        assert stats.total == 5  # purges are not decisions
    finally:
        await lg.close()


async def test_deleting_old_records_without_purge_is_detected(log_url: str, decision: MakeDecision) -> None:
    """R22: deleting the oldest records by hand (no signed checkpoint) is not a purge."""
    lg, _ = await aged_log(log_url, decision)
    try:
        async with RawDB(log_url) as raw:
            await raw.execute("DELETE FROM records WHERE seq <= 4")
        v = await lg.verify()
        assert (v.ok, v.bad_seq, v.problem) == (False, 1, "missing"), v.message
    finally:
        await lg.close()


async def test_purge_anchor_cannot_be_forged(log_url: str, decision: MakeDecision) -> None:
    """R22: replacing the purge checkpoint by an unsigned one is detected."""
    lg, _ = await aged_log(log_url, decision)
    try:
        await lg.purge(timedelta(days=365))
        async with RawDB(log_url) as raw:
            await raw.allow_tampering()
            await raw.execute("UPDATE checkpoints SET mac = ? WHERE seq = 10", "1" * 64)
        v = await lg.verify()
        assert (v.ok, v.problem) == (False, "signature")
    finally:
        await lg.close()


async def test_deleting_up_to_a_periodic_checkpoint_is_not_a_purge(
    log_url: str, decision: MakeDecision
) -> None:
    """R22: a periodic checkpoint does not vouch for deleted records; only a signed purge does."""
    lg = await open_log(log_url, hmac_key=KEY, checkpoint_every=5)
    try:
        for _ in range(12):
            await lg.append(decision())
        assert 5 in {cp.seq for cp in await lg.checkpoints()}
        async with RawDB(log_url) as raw:
            await raw.execute("DELETE FROM records WHERE seq <= 5")
        v = await lg.verify()
        assert (v.ok, v.bad_seq, v.problem) == (False, 1, "missing"), v.message
        # Relabelling the periodic checkpoint as a purge breaks its signature (the reason is signed).
        async with RawDB(log_url) as raw:
            await raw.allow_tampering()
            await raw.execute("UPDATE checkpoints SET reason = 'purge' WHERE seq = 5")
        v = await lg.verify()
        assert (v.ok, v.problem) == (False, "signature"), v.message
    finally:
        await lg.close()


async def test_purge_anchor_must_be_named_by_a_purge_record(log_url: str, decision: MakeDecision) -> None:
    """R22: deleting the purge's own record (and everything before it) leaves an anchor nobody names."""
    lg, _ = await aged_log(log_url, decision)
    try:
        result = await lg.purge(timedelta(days=365))
        async with RawDB(log_url) as raw:
            await raw.allow_tampering()
            # Remove the purge record and relink what follows, as a careful forger would.
            await raw.execute("DELETE FROM records WHERE seq = ?", result.record.seq)
            await raw.execute(
                "UPDATE head SET seq = ?, hash = (SELECT hash FROM records WHERE seq = ?)",
                result.record.seq - 1,
                result.record.seq - 1,
            )
        v = await lg.verify()
        assert (v.ok, v.bad_seq, v.problem) == (False, 1, "missing"), v.message
        assert "no purge record in the chain names it" in (v.reason or "")
    finally:
        await lg.close()
