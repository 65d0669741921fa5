"""The webhooks' delivery cursors (log/outbox.py): leases, compare-and-set, verified windows. R39."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from consent_banner.log import Decision, open_log
from consent_banner.log.chain import GENESIS, record_hash
from consent_banner.log.outbox import WebhookCursor

from .conftest import KEY
from .rawdb import RawDB


async def _append(log: Any, decision: Callable[..., Decision], n: int) -> None:
    await asyncio.gather(*(log.append(decision()) for _ in range(n)))


async def test_a_new_cursor_starts_at_the_head_or_the_beginning(
    log: Any, decision: Callable[..., Decision]
) -> None:
    """A webhook added to a running site gets events from then on, unless it asks for the beginning."""
    await _append(log, decision, 3)
    now = await log.claim_webhook("a", "p1", lease=30)
    start = await log.claim_webhook("b", "p1", lease=30, from_start=True)
    assert isinstance(now, WebhookCursor) and isinstance(start, WebhookCursor)
    assert (now.seq, start.seq, start.hash) == (3, 0, GENESIS)
    head = await log.get_record(3)
    assert now.hash == head.hash
    w = await log.window(start.seq, start.hash)
    assert w.problem is None and [r[0] for r in w.rows] == [1, 2, 3]
    assert (await log.window(now.seq, now.hash)).rows == []


async def test_one_lease_at_a_time_and_the_cursor_moves_only_for_its_holder(
    log: Any, decision: Callable[..., Decision]
) -> None:
    """R39: Two processes: the second waits while the first holds the lease; a stale holder's advance is
    refused (compare-and-set), so the range is not delivered twice by it."""
    mine = await log.claim_webhook("hook", "p1", lease=30, from_start=True)
    assert isinstance(mine, WebhookCursor)
    other = await log.claim_webhook("hook", "p2", lease=30)
    assert isinstance(other, float) and 29 < other <= 30
    await _append(log, decision, 2)
    w = await log.window(mine.seq, mine.hash)
    last = w.rows[-1]
    moved = await log.advance_webhook(mine, last[0], last[15], lease=30)
    assert moved is not None and moved.seq == 2
    assert await log.advance_webhook(mine, 2, last[15], lease=30) is None  # from a position it no longer has
    stolen = WebhookCursor(**{**moved.__dict__, "owner": "p2"})
    assert await log.advance_webhook(stolen, 2, last[15], lease=30) is None  # not the holder
    await log.release_webhook(moved)
    taken = await log.claim_webhook("hook", "p2", lease=30)
    assert isinstance(taken, WebhookCursor) and (taken.owner, taken.seq) == ("p2", 2)


async def test_a_failure_is_kept_and_retried_later(log: Any) -> None:
    """R39: A failed delivery keeps the cursor, counts the attempt, names the error and defers the retry."""
    c = await log.claim_webhook("hook", "p1", lease=30)
    assert await log.fail_webhook(c, "HTTP 503 from the receiver", 60) == 1
    wait = await log.claim_webhook("hook", "p1", lease=30)
    assert isinstance(wait, float) and 59 < wait <= 60
    (state,) = await log.webhook_states()
    assert (state.attempts, state.last_error, state.owner) == (1, "HTTP 503 from the receiver", None)
    assert state.next_attempt is not None and state.failed_at is not None


async def test_a_record_inserted_behind_the_logs_back_is_never_handed_out(
    log_url: str, decision: Callable[..., Decision]
) -> None:
    """R39: Whoever can write the database but holds no key cannot make the outbox hand out a record: one
    inserted after the head (even with a correct hash link) is past the signed head; a record edited
    or inserted inside the chain breaks it, and the window refuses everything."""
    log = await open_log(log_url, hmac_key=KEY)
    try:
        await _append(log, decision, 3)
        c = await log.claim_webhook("hook", "p1", lease=30, from_start=True)
        head = await log.get_record(3)
        row = head.row()
        forged = (4, row[1], "forged-id", *row[3:14])
        forged_hash = record_hash(head.hash, forged[1:14])
        async with RawDB(log_url) as db:
            await db.execute(
                "INSERT INTO records VALUES (" + ", ".join("?" * 16) + ")", *forged, head.hash, forged_hash
            )
        w = await log.window(c.seq, c.hash)
        # Past the signed head: not handed out (and not yet believed: the next commit refuses the head).
        assert w.problem is None and [r[0] for r in w.rows] == [1, 2, 3]
        assert "forged-id" not in [r[2] for r in w.rows]
        # The head moved over it by hand (unsigned): nothing at all is handed out.
        async with RawDB(log_url) as db:
            await db.execute("UPDATE head SET seq = 4, hash = ? WHERE id = 1", forged_hash)
        w = await log.window(c.seq, c.hash)
        assert w.rows == [] and w.problem is not None and "signature" in w.problem
    finally:
        await log.close()


async def test_an_edited_record_stops_the_window(log_url: str, decision: Callable[..., Decision]) -> None:
    """A record changed in place (the append-only trigger dropped) no longer recomputes: refused."""
    log = await open_log(log_url, hmac_key=KEY)
    try:
        await _append(log, decision, 3)
        c = await log.claim_webhook("hook", "p1", lease=30, from_start=True)
        async with RawDB(log_url) as db:
            if db.postgres:
                await db.execute("DROP TRIGGER records_append_only ON records")
            else:
                await db.execute("DROP TRIGGER records_append_only")
            await db.execute("UPDATE records SET action = 'reject_all' WHERE seq = 2")
        w = await log.window(c.seq, c.hash)
        assert w.rows == [] and w.problem == "record 2's hash does not match its contents"
    finally:
        await log.close()


async def test_a_schema_4_reader_has_no_cursors(log_url: str) -> None:
    """`log webhooks` on a log not yet migrated to schema 5 reads no cursors instead of failing."""
    log = await open_log(log_url, hmac_key=KEY)
    await log.close()
    async with RawDB(log_url) as db:
        await db.execute("DROP TABLE webhooks")
        await db.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    reader = await open_log(log_url, hmac_key=None, previous_hmac_keys=[KEY], read_only=True)
    try:
        assert await reader.webhook_states() == []
    finally:
        await reader.close()
