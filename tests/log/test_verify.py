"""verify: an intact log says so; each kind of tampering is named at the first bad record. R22."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from consent_banner.errors import LogError, LogUnavailable
from consent_banner.log import GENESIS, Decision, derive_hmac_key, open_log, record_hash

from .conftest import KEY
from .rawdb import RawDB

MakeDecision = Callable[..., Decision]
COLS = (
    "at, consent_id, action, granted, denied, services, revision, language, source, version_id, ip, "
    "browser, detail"
)


async def filled(log_url: str, decision: MakeDecision, n: int = 20, **options: Any) -> Any:
    lg = await open_log(log_url, hmac_key=KEY, **options)
    for i in range(n):
        await lg.append(
            decision(consent_id=f"visitor-{i:014d}", action="accept_all" if i % 2 else "reject_all")
        )
    return lg


@pytest.fixture
async def log20(log_url: str, decision: MakeDecision) -> Any:
    lg = await filled(log_url, decision)
    yield lg
    await lg.close()


async def test_intact_log_verifies(log20: Any) -> None:
    """R22: "N records, chain intact, head <hash>"."""
    result = await log20.verify()
    head = (await log20.page(limit=1))[0].hash
    assert result.ok, result.message
    assert result.message == f"20 records, chain intact, head {head}"
    assert (result.first_seq, result.last_seq, result.records) == (1, 20, 20)


async def test_empty_log_verifies(log: Any) -> None:
    """R22: a new log is intact with the genesis head."""
    result = await log.verify()
    assert result.ok and result.records == 0
    assert result.message == f"0 records, chain intact, head {GENESIS}"


async def test_edited_field_is_named(log20: Any, log_url: str) -> None:
    """R22: editing a field of record 5 is reported as record 5 changed."""
    async with RawDB(log_url) as raw:
        await raw.allow_tampering()
        await raw.execute(
            "UPDATE records SET granted = 'necessary', denied = 'analytics,marketing' WHERE seq = 5"
        )
    result = await log20.verify()
    assert not result.ok
    assert (result.bad_seq, result.problem) == (5, "changed")
    assert result.message.startswith("record 5: changed")


async def test_deleted_row_is_named(log20: Any, log_url: str) -> None:
    """R22: deleting record 7 is reported as record 7 missing."""
    async with RawDB(log_url) as raw:
        await raw.execute("DELETE FROM records WHERE seq = 7")
    result = await log20.verify()
    assert (result.ok, result.bad_seq, result.problem) == (False, 7, "missing")


async def _shift_up_from(raw: RawDB, seq: int) -> None:
    await raw.execute("UPDATE records SET seq = -seq WHERE seq >= ?", seq)
    await raw.execute("UPDATE records SET seq = 1 - seq WHERE seq < 0")


@pytest.mark.parametrize("forger_knows_the_hash", [True, False])
async def test_inserted_row_is_named(log20: Any, log_url: str, forger_knows_the_hash: bool) -> None:
    """R22: a row inserted at position 5 is reported as record 5 inserted, even with a correct link."""
    async with RawDB(log_url) as raw:
        await raw.allow_tampering()
        (row4,) = await raw.fetch(f"SELECT {COLS}, hash FROM records WHERE seq = 4")
        cols = list(row4[:-1])
        cols[1], cols[2] = "forged-000000000000001", "accept_all"
        h = record_hash(row4[-1], cols) if forger_knows_the_hash else "f" * 64
        await _shift_up_from(raw, 5)
        await raw.execute(
            f"INSERT INTO records (seq, {COLS}, prev_hash, hash) VALUES (5, {', '.join('?' * 13)}, ?, ?)",
            *cols,
            row4[-1],
            h,
        )
    result = await log20.verify()
    assert (result.ok, result.bad_seq, result.problem) == (False, 5, "inserted"), result.message


async def test_swapped_rows_are_named(log20: Any, log_url: str) -> None:
    """R22: swapping records 8 and 9 is reported as a reordering at 8."""
    async with RawDB(log_url) as raw:
        await raw.allow_tampering()
        await raw.execute("UPDATE records SET seq = -8 WHERE seq = 8")
        await raw.execute("UPDATE records SET seq = 8 WHERE seq = 9")
        await raw.execute("UPDATE records SET seq = 9 WHERE seq = -8")
    result = await log20.verify()
    assert (result.ok, result.bad_seq, result.problem) == (False, 8, "reordered"), result.message


async def test_truncated_tail_after_checkpoint_is_named(log_url: str, decision: MakeDecision) -> None:
    """R22: cutting records off after a signed checkpoint is detected, even with the head row rolled back."""
    lg = await filled(log_url, decision, 15)
    try:
        cp = await lg.checkpoint()
        assert cp.seq == 15
        for _ in range(5):
            await lg.append(decision())
        async with RawDB(log_url) as raw:
            (h12,) = (await raw.fetch("SELECT hash FROM records WHERE seq = 12"))[0]
            await raw.execute("DELETE FROM records WHERE seq > 12")
            await raw.execute("UPDATE head SET seq = 12, hash = ?", h12)  # no key: the old signature stays
        result = await lg.verify()
        assert (result.ok, result.bad_seq, result.problem) == (False, 13, "missing"), result.message
        assert "cut off" in (result.reason or "")
    finally:
        await lg.close()


async def test_truncated_tail_without_checkpoint_is_caught_by_the_signed_head(
    log20: Any, log_url: str
) -> None:
    """R22: the head is signed at every commit, so even the newest records cannot vanish silently."""
    async with RawDB(log_url) as raw:
        await raw.execute("DELETE FROM records WHERE seq > 18")
    result = await log20.verify()
    assert (result.ok, result.bad_seq, result.problem) == (False, 19, "missing")


async def test_rewritten_chain_disagrees_with_the_signed_checkpoint(
    log_url: str, decision: MakeDecision
) -> None:
    """R22: a forger who recomputes every hash after an edit is caught by the signed checkpoint."""
    lg = await filled(log_url, decision, 12)
    try:
        await lg.checkpoint()
        async with RawDB(log_url) as raw:
            await raw.allow_tampering()
            rows = await raw.fetch(f"SELECT seq, {COLS} FROM records ORDER BY seq")
            prev = GENESIS
            for seq, *cols in rows:
                if seq == 3:
                    cols[2] = "accept_all" if cols[2] == "reject_all" else "reject_all"
                h = record_hash(prev, cols)
                await raw.execute("DELETE FROM records WHERE seq = ?", seq)
                await raw.execute(
                    f"INSERT INTO records (seq, {COLS}, prev_hash, hash) VALUES "
                    f"(?, {', '.join('?' * 13)}, ?, ?)",
                    seq,
                    *cols,
                    prev,
                    h,
                )
                prev = h
            await raw.execute("UPDATE head SET hash = ?", prev)
        result = await lg.verify()
        assert not result.ok
        assert result.problem in ("rewritten", "signature"), result.message
    finally:
        await lg.close()


async def test_record_appended_behind_the_writers_back_is_named(log20: Any, log_url: str) -> None:
    """R22: a well-linked record added without the key is past the signed head."""
    async with RawDB(log_url) as raw:
        (row,) = await raw.fetch(f"SELECT {COLS}, hash FROM records WHERE seq = 20")
        cols = list(row[:-1])
        await raw.execute(
            f"INSERT INTO records (seq, {COLS}, prev_hash, hash) VALUES (21, {', '.join('?' * 13)}, ?, ?)",
            *cols,
            row[-1],
            record_hash(row[-1], cols),
        )
    result = await log20.verify()
    assert (result.ok, result.bad_seq, result.problem) == (False, 21, "inserted")


async def test_forged_checkpoint_is_named(log20: Any, log_url: str) -> None:
    """R22: a checkpoint the server key did not sign fails verification."""
    async with RawDB(log_url) as raw:
        await raw.allow_tampering()
        await raw.execute("UPDATE checkpoints SET mac = ?", "0" * 64)
    result = await log20.verify()
    assert (result.ok, result.problem) == (False, "signature")


async def test_changed_banner_version_is_named(log20: Any, log_url: str) -> None:
    """R20: the versions table is part of the proof: a changed text is found."""
    async with RawDB(log_url) as raw:
        await raw.allow_tampering()
        await raw.execute("UPDATE versions SET payload = replace(payload, 'Reject all', 'Maybe later')")
    result = await log20.verify()
    assert (result.ok, result.bad_seq, result.problem) == (False, 1, "version")


async def test_verify_with_a_rotated_key(log_url: str, decision: MakeDecision) -> None:
    """R22: after key rotation, signatures by the previous key still verify when it is passed along;
    once it is removed, its checkpoints are "not checked" and the head, re-signed, still verifies."""
    lg = await filled(log_url, decision, 3)
    await lg.checkpoint()
    await lg.close()
    new_key = derive_hmac_key("n" * 40)
    rotated = await open_log(log_url, hmac_key=new_key, previous_hmac_keys=[KEY])
    try:
        await rotated.append(decision())
        result = await rotated.verify()
        assert result.ok, result.message
    finally:
        await rotated.close()
    only_new = await open_log(log_url, hmac_key=new_key)
    try:
        result = await only_new.verify()
        assert result.ok, result.message
        assert any("not listed: not checked" in n for n in result.notes), result.notes
    finally:
        await only_new.close()
    stranger = await open_log(log_url, hmac_key=derive_hmac_key("x" * 40))
    try:
        result = await stranger.verify()
        assert (result.ok, result.problem) == (False, "signature"), result.message
        assert "not listed" in result.message
    finally:
        await stranger.close()


async def test_a_key_replaced_outright_stops_writes_until_the_old_one_is_listed_again(
    log_url: str, decision: MakeDecision
) -> None:
    """What the README's "Keys" section promises: the new key alone cannot write after a head the
    old one signed; listed beside it once, the next write re-signs the head, and the new key alone
    then writes and verifies."""
    await (await filled(log_url, decision, 2)).close()
    new_key = derive_hmac_key("n" * 40)
    alone = await open_log(log_url, hmac_key=new_key)
    try:
        with pytest.raises(LogUnavailable, match="not listed"):
            await alone.append(decision())
    finally:
        await alone.close()
    both = await open_log(log_url, hmac_key=new_key, previous_hmac_keys=[KEY])
    try:
        await both.append(decision())
    finally:
        await both.close()
    alone = await open_log(log_url, hmac_key=new_key)
    try:
        await alone.append(decision())
        result = await alone.verify()
        assert result.ok and result.records == 4, result.message
    finally:
        await alone.close()


# --- issue 12, item 3: the head, the checkpoint chain, keys and pins ----------------------------------


async def test_deleted_checkpoint_in_the_middle_is_named(log_url: str, decision: MakeDecision) -> None:
    """Each checkpoint signs the chain before it: deleting one of them breaks the chain there."""
    lg = await filled(log_url, decision, 20, checkpoint_every=5)
    try:
        cps = await lg.checkpoints()
        assert [cp.n for cp in cps] == list(range(1, len(cps) + 1)) and len(cps) >= 4
        async with RawDB(log_url) as raw:
            await raw.allow_tampering()
            await raw.execute("DELETE FROM checkpoints WHERE n = 2")
        result = await lg.verify()
        assert (result.ok, result.problem) == (False, "checkpoints"), result.message
        assert "checkpoint 2 is missing" in result.message
    finally:
        await lg.close()


async def test_checkpoints_refuse_delete(log20: Any, log_url: str) -> None:
    """Defence in depth: the table refuses DELETE (and, on PostgreSQL, TRUNCATE) like UPDATE."""
    async with RawDB(log_url) as raw:
        with pytest.raises(Exception, match="checkpoints"):
            await raw.execute("DELETE FROM checkpoints")
        if raw.postgres:
            with pytest.raises(Exception, match="checkpoints"):
                await raw.execute("TRUNCATE checkpoints")
        assert await raw.fetchval("SELECT count(*) FROM checkpoints") >= 1


async def test_no_write_after_a_forged_head(log20: Any, log_url: str, decision: MakeDecision) -> None:
    """A writer that re-signed whatever head it found would launder a forgery: it fails closed."""
    async with RawDB(log_url) as raw:
        await raw.execute("UPDATE head SET key_id = ?, mac = ?", "0" * 16, "f" * 64)
    other = await open_log(log_url, hmac_key=KEY)
    try:
        with pytest.raises(LogUnavailable, match="not listed"):
            await other.append(decision())
        with pytest.raises(LogUnavailable, match="not listed"):
            await other.checkpoint()
    finally:
        await other.close()
    result = await log20.verify()
    assert (result.ok, result.problem) == (False, "signature"), result.message


async def test_a_wiped_log_is_not_signed_again_at_start(
    log20: Any, log_url: str, decision: MakeDecision
) -> None:
    """An emptied log with an unsigned empty head fails verify, and a server starting on it does
    not sign it into a "new" log."""
    async with RawDB(log_url) as raw:
        await raw.allow_tampering()
        await raw.execute("DELETE FROM records")
        await raw.execute("DELETE FROM checkpoints")
        await raw.execute("UPDATE head SET seq = 0, hash = ?, at = NULL, key_id = NULL, mac = NULL", GENESIS)
    again = await open_log(log_url, hmac_key=KEY)
    try:
        result = await again.verify()
        assert (result.ok, result.problem) == (False, "signature"), result.message
        assert "empty log is not signed" in result.message
        with pytest.raises(LogUnavailable):
            await again.append(decision())
    finally:
        await again.close()


async def test_creating_a_log_needs_the_key(log_url: str) -> None:
    """A new log's head is signed from the start, so an unsigned empty head always means a wipe.
    Without a key a log is opened to read, and a reader creates nothing."""
    with pytest.raises(LogError, match="needs the server key"):
        await open_log(log_url, hmac_key=None, migrate=True)
    with pytest.raises(LogError, match="there is no consent log"):
        await open_log(log_url, hmac_key=None)


async def test_checkpoint_of_an_unlisted_key_is_not_checked(log_url: str, decision: MakeDecision) -> None:
    """A checkpoint signed by a key no longer listed is reported "not checked" and never compared
    with the chain (it could say anything); the head, re-signed at start by the newest key, verifies."""
    lg = await filled(log_url, decision, 3)
    await lg.checkpoint()
    await lg.close()
    new_key = derive_hmac_key("n" * 40)
    rotated = await open_log(log_url, hmac_key=new_key, previous_hmac_keys=[KEY])
    await rotated.close()
    only_new = await open_log(log_url, hmac_key=new_key)
    try:
        result = await only_new.verify()
        assert result.ok, result.message
        assert result.checkpoints == 0
        assert any("not listed: not checked" in note for note in result.notes), result.notes
    finally:
        await only_new.close()


async def test_pins_catch_a_rollback_to_an_older_copy(log_url: str, decision: MakeDecision) -> None:
    """A database put back to an older copy (its signed head, checkpoints and records all genuine)
    verifies by itself; only checkpoints pinned outside the database catch it."""
    lg = await filled(log_url, decision, 8)
    try:
        async with RawDB(log_url) as raw:
            old_head = (await raw.fetch("SELECT seq, hash, at, key_id, mac, checkpoints FROM head"))[0]
            old_n = await raw.fetchval("SELECT max(n) FROM checkpoints")
        for _ in range(4):
            await lg.append(decision())
        pins = [await lg.checkpoint()]
        async with RawDB(log_url) as raw:  # what restoring the older copy amounts to
            await raw.allow_tampering()
            await raw.execute("DELETE FROM records WHERE seq > ?", old_head[0])
            await raw.execute("DELETE FROM checkpoints WHERE n > ?", old_n)
            await raw.execute(
                "UPDATE head SET seq = ?, hash = ?, at = ?, key_id = ?, mac = ?, checkpoints = ?", *old_head
            )
        alone = await lg.verify()
        assert alone.ok, alone.message  # the documented limit: nothing in the database can tell
        pinned = await lg.verify(pins)
        assert not pinned.ok and pinned.problem in ("missing", "rewritten"), pinned.message
        assert "pinned checkpoint" in pinned.message or "cut off" in pinned.message
    finally:
        await lg.close()
