"""Every kind of manual edit to the log's database is caught by `consent-banner log verify` (R22).

A log is written through the app (real decisions), then edited straight in the database the way
someone with file or database access would: append-only triggers dropped first, and, for the
cleverer edits, hashes recomputed so that the chain looks consistent. Each edit must make
`log verify` exit 1; the untouched log must verify (exit 0), or the test proves nothing.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from consent_banner import ConsentConfig
from consent_banner.log import GENESIS, record_hash
from consent_banner.log.canonical import ROW_COLUMNS

from ..conftest import make_app
from .asgi_driver import call
from .conftest import RawLog, verify_cli, write_config

DECISIONS = 12
COLS = ", ".join(ROW_COLUMNS)


async def unlock(raw: RawLog) -> None:
    """What an editor does first: the append-only triggers go."""
    if raw.postgres:
        for table in ("records", "versions", "checkpoints"):
            await raw.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        return
    for (name,) in await raw.fetch("SELECT name FROM sqlite_master WHERE type = 'trigger'"):
        await raw.execute(f"DROP TRIGGER {name}")


async def rows(raw: RawLog) -> list[list[Any]]:
    return [list(r) for r in await raw.fetch(f"SELECT {COLS} FROM records ORDER BY seq")]


async def put(raw: RawLog, row: list[Any]) -> None:
    marks = ", ".join("?" * len(ROW_COLUMNS))
    await raw._run(f"INSERT INTO records ({COLS}) VALUES ({marks})", row, fetch=False)  # noqa: SLF001


async def rewrite_from(raw: RawLog, start: int, change: Callable[[list[Any]], None]) -> None:
    """Change record `start` and recompute every hash from there on: a self-consistent forgery."""
    all_rows = await rows(raw)
    await raw.execute(f"DELETE FROM records WHERE seq >= {start}")
    prev = all_rows[start - 2][-1] if start > 1 else all_rows[0][-2]
    for row in all_rows[start - 1 :]:
        if row[0] == start:
            change(row)
        row[-2] = prev
        row[-1] = record_hash(prev, tuple(row[1:-2]))
        prev = row[-1]
        await put(raw, row)


def _set(column: str, value: Any) -> Callable[[list[Any]], None]:
    def change(row: list[Any]) -> None:
        row[ROW_COLUMNS.index(column)] = value

    return change


async def change_field(raw: RawLog) -> None:
    await raw.execute("UPDATE records SET granted = 'necessary,analytics,marketing' WHERE seq = 5")


async def change_field_and_its_hash(raw: RawLog) -> None:
    [row] = [r for r in await rows(raw) if r[0] == 5]
    row[ROW_COLUMNS.index("action")] = "accept_all"
    await raw.execute("DELETE FROM records WHERE seq = 5")
    row[-1] = record_hash(row[-2], tuple(row[1:-2]))
    await put(raw, row)


async def change_time(raw: RawLog) -> None:
    await raw.execute("UPDATE records SET at = '2020-01-01T00:00:00.000000Z' WHERE seq = 3")


async def delete_middle(raw: RawLog) -> None:
    await raw.execute("DELETE FROM records WHERE seq = 6")


async def delete_first(raw: RawLog) -> None:
    await raw.execute("DELETE FROM records WHERE seq = 1")


async def delete_last(raw: RawLog) -> None:
    await raw.execute(f"DELETE FROM records WHERE seq = {DECISIONS}")


async def delete_and_renumber(raw: RawLog) -> None:
    await rewrite_from(raw, 6, lambda row: None)
    await raw.execute("DELETE FROM records WHERE seq = 6")
    for seq in range(7, DECISIONS + 1):
        await raw.execute(f"UPDATE records SET seq = {seq - 1} WHERE seq = {seq}")


async def insert_middle(raw: RawLog) -> None:
    all_rows = await rows(raw)
    for seq in range(DECISIONS, 6, -1):
        await raw.execute(f"UPDATE records SET seq = {seq + 1} WHERE seq = {seq}")
    forged = list(all_rows[5])
    forged[0] = 7
    forged[ROW_COLUMNS.index("consent_id")] = "forged-consent-id-0000"
    forged[-2] = all_rows[5][-1]
    forged[-1] = record_hash(forged[-2], tuple(forged[1:-2]))
    await put(raw, forged)


async def append_with_valid_hash(raw: RawLog) -> None:
    last = (await rows(raw))[-1]
    forged = list(last)
    forged[0] = last[0] + 1
    forged[ROW_COLUMNS.index("action")] = "accept_all"
    forged[-2] = last[-1]
    forged[-1] = record_hash(forged[-2], tuple(forged[1:-2]))
    await put(raw, forged)


async def swap_rows(raw: RawLog) -> None:
    a, b = (await rows(raw))[3:5]
    await raw.execute("DELETE FROM records WHERE seq IN (4, 5)")
    await put(raw, [a[0], *b[1:]])
    await put(raw, [b[0], *a[1:]])


async def truncate(raw: RawLog) -> None:
    await raw.execute("DELETE FROM records")


async def truncate_tail(raw: RawLog) -> None:
    await raw.execute("DELETE FROM records WHERE seq > 8")


async def rewrite_consistently(raw: RawLog) -> None:
    # Record 5 is a reject_all (see _written_log): it becomes an accept-all, the chain recomputed.
    await rewrite_from(raw, 5, _set("granted", "necessary,analytics,marketing"))


async def rewrite_head_too(raw: RawLog) -> None:
    """Cut the tail and move the head back to match; its signature cannot be remade without the key."""
    await raw.execute("DELETE FROM records WHERE seq > 8")
    [(h,)] = await raw.fetch("SELECT hash FROM records WHERE seq = 8")
    await raw.execute(f"UPDATE head SET seq = 8, hash = '{h}' WHERE id = 1")


async def change_banner_version(raw: RawLog) -> None:
    [(vid, payload)] = (await raw.fetch("SELECT id, payload FROM versions"))[:1]
    text = json.dumps({**json.loads(payload), "language": "xx"})
    await raw._run("UPDATE versions SET payload = ? WHERE id = ?", [text, vid], fetch=False)  # noqa: SLF001


async def forge_whole_log(raw: RawLog) -> None:
    """The attack of issue 12: a reject becomes an accept, every hash is recomputed, every checkpoint
    goes, and the head is moved to the forged chain with a key id of zeros and a MAC of garbage."""
    accept = {"action": "accept_all", "granted": "necessary,analytics,marketing", "denied": ""}
    await rewrite_from(raw, 2, lambda row: [_set(k, v)(row) for k, v in accept.items()])  # 2 is a reject
    await raw.execute("DELETE FROM checkpoints")
    [(seq, h)] = await raw.fetch("SELECT seq, hash FROM records ORDER BY seq DESC LIMIT 1")
    await raw.execute(
        f"UPDATE head SET seq = {seq}, hash = '{h}', key_id = '{'0' * 16}', mac = '{'f' * 64}' WHERE id = 1"
    )


async def wipe_to_unsigned_genesis(raw: RawLog) -> None:
    """Everything deleted, and the head of a new, never signed log written in its place."""
    await raw.execute(
        "DELETE FROM records",
        "DELETE FROM checkpoints",
        f"UPDATE head SET seq = 0, hash = '{GENESIS}', at = NULL, key_id = NULL, mac = NULL WHERE id = 1",
    )


async def delete_every_checkpoint(raw: RawLog) -> None:
    await raw.execute("DELETE FROM checkpoints")


async def head_signed_by_no_listed_key(raw: RawLog) -> None:
    await raw.execute(f"UPDATE head SET key_id = '{'0' * 16}', mac = '{'f' * 64}' WHERE id = 1")


EDITS: dict[str, Callable[[RawLog], Awaitable[None]]] = {
    f.__name__: f
    for f in (
        change_field,
        change_field_and_its_hash,
        change_time,
        delete_middle,
        delete_first,
        delete_last,
        delete_and_renumber,
        insert_middle,
        append_with_valid_hash,
        swap_rows,
        truncate,
        truncate_tail,
        rewrite_consistently,
        rewrite_head_too,
        change_banner_version,
        forge_whole_log,
        wipe_to_unsigned_genesis,
        delete_every_checkpoint,
        head_signed_by_no_listed_key,
    )
}


async def _written_log(tmp_path: Path, log_url: str) -> Path:
    config_path = write_config(tmp_path, log_url)
    app = make_app(ConsentConfig.from_toml(config_path))
    bodies = [
        {"action": "accept_all"},
        {"action": "reject_all"},
        {"action": "custom", "categories": ["analytics"]},
    ]
    try:
        for i in range(DECISIONS):
            answer = await call(
                app,
                "POST",
                "/_consent",
                headers=[(b"origin", b"http://testserver"), (b"content-type", b"application/json")],
                body=json.dumps(bodies[i % 3] | {"language": ["en", "sv"][i % 2]}).encode(),
            )
            assert answer.status == 200
    finally:
        await app.close()
    return config_path


@pytest.mark.parametrize("edit", list(EDITS))
async def test_log_verify_catches_the_edit(edit: str, log_url: str, tmp_path: Path) -> None:
    """R22: the untouched log verifies; after the edit `log verify` exits 1 and names a record."""
    config = await _written_log(tmp_path, log_url)
    code, before = verify_cli(config)
    assert code == 0 and isinstance(before, dict) and before["ok"], before
    raw = RawLog(log_url)
    await unlock(raw)
    await EDITS[edit](raw)
    code, after = verify_cli(config)
    assert code == 1, f"R22: `log verify` accepted the log after {edit}: {after}"
    assert isinstance(after, dict) and after["ok"] is False and after["problem"], after


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (forge_whole_log, "the head is signed by key '0000000000000000', which is not listed"),
        (wipe_to_unsigned_genesis, "the head of this empty log is not signed"),
        (delete_every_checkpoint, "the checkpoints are not those the signed head vouches for"),
    ],
)
async def test_a_forged_log_is_named_and_never_signed_again(
    edit: Callable[[RawLog], Awaitable[None]], named: str, log_url: str, tmp_path: Path
) -> None:
    """Issue 12, item 3: with the keys, `log verify` names what is wrong; and the server does not
    write after a head it cannot trust (writing would re-sign the forgery): decisions fail closed."""
    config = await _written_log(tmp_path, log_url)
    raw = RawLog(log_url)
    await unlock(raw)
    await edit(raw)
    code, after = verify_cli(config)
    assert code == 1 and isinstance(after, dict), after
    assert named in after["message"], after["message"]
    app = make_app(ConsentConfig.from_toml(config))
    try:
        answer = await call(
            app,
            "POST",
            "/_consent",
            headers=[(b"origin", b"http://testserver"), (b"content-type", b"application/json")],
            body=b'{"action": "accept_all"}',
        )
    finally:
        await app.close()
    assert answer.status == 503
    code, again = verify_cli(config)
    assert code == 1 and isinstance(again, dict) and named in again["message"], again
