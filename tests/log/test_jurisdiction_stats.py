"""The stats split by jurisdiction (issue 17): region and model read from each record's `detail`,
on both backends (SQLite json_extract, PostgreSQL ->>); records without it count as unknown, and a
detail that is not the canonical form never fails the page."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from consent_banner.log import Decision


async def test_stats_split_by_model_and_region(log: Any, decision: Callable[..., Decision]) -> None:
    """R37: the stats split by model and region; records that do not say are unknown."""
    await log.append(decision(detail={"region": "US-CA", "model": "opt-out"}, action="opt_out"))
    await log.append(decision(detail={"region": "US-CA", "model": "opt-out"}))
    await log.append(decision(detail={"region": "SE", "model": "opt-in"}))
    await log.append(decision(detail={"region": None, "model": "opt-in"}))
    await log.append(decision())  # a record of an earlier release: no detail
    await log.append(decision(detail={"model": 5, "region": ["x"]}))  # not our form: unknown, no failure
    stats = await log.stats()
    assert stats.by_model == {"opt-in": 2, "opt-out": 2, "unknown": 2}
    assert stats.by_region == {
        "SE": {"opt-in": 1},
        "US-CA": {"opt-out": 2},
        "unknown": {"opt-in": 1, "unknown": 2},
    }
    assert stats.to_json()["by_region"]["US-CA"] == {"opt-out": 2}
    assert stats.by_action["opt_out"] == 1


async def test_the_detail_is_hashed_with_the_record(log: Any, decision: Callable[..., Decision]) -> None:
    record = await log.append(decision(detail={"region": "US-CA", "model": "opt-out"}))
    assert record.detail == {"model": "opt-out", "region": "US-CA"}
    [stored] = await log.records_for(record.consent_id)
    assert stored.detail == record.detail and stored.hash == record.hash
    assert (await log.verify()).ok


async def test_a_tampered_detail_reads_as_unknown(tmp_path: Any, decision: Callable[..., Decision]) -> None:
    """Someone with write access to the database puts text that is not JSON into a detail: the chain
    says so (verify), and the audit view's stats still answer, counting it as unknown."""
    import sqlite3

    from consent_banner.log import open_log

    from .conftest import KEY

    url = f"sqlite:///{tmp_path / 'log.db'}"
    log = await open_log(url, hmac_key=KEY)
    try:
        await log.append(decision(detail={"region": "US-CA", "model": "opt-out"}))
    finally:
        await log.close()
    db = sqlite3.connect(tmp_path / "log.db")
    for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        db.execute(f'DROP TRIGGER "{name}"')
    db.execute("""UPDATE records SET detail = '{"model":"opt-out","region":' """)
    db.commit()
    db.close()
    log = await open_log(url, hmac_key=None, read_only=True)
    try:
        stats = await log.stats()
        assert stats.by_model == {"unknown": 1} and stats.by_region == {"unknown": {"unknown": 1}}
        assert not (await log.verify()).ok
    finally:
        await log.close()


def test_log_stats_prints_the_split(
    tmp_path: Any, monkeypatch: Any, decision: Callable[..., Decision]
) -> None:
    """`consent-banner log stats`: a table by region and model after the acceptance rates (escaped:
    a region comes from the database); `--json` has by_model and by_region."""
    import asyncio
    import json
    import textwrap

    from click.testing import CliRunner

    from consent_banner.log import open_log
    from consent_banner.log.commands import log as log_group

    from .conftest import KEY, SECRET
    from .test_commands import TOML

    monkeypatch.setenv("CONSENT_SECRET_KEYS", SECRET)
    cfg = tmp_path / "consent.toml"
    cfg.write_text(textwrap.dedent(TOML.format(db=tmp_path / "log.db")))

    async def fill() -> None:
        lg = await open_log(f"sqlite:///{tmp_path / 'log.db'}", hmac_key=KEY)
        try:
            await lg.append(decision(detail={"region": "US-CA", "model": "opt-out"}, action="opt_out"))
            await lg.append(decision(detail={"region": "SE", "model": "opt-in"}))
            await lg.append(decision())
        finally:
            await lg.close()

    asyncio.run(fill())
    out = CliRunner().invoke(log_group, ["stats", "--config", str(cfg)])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    at = lines.index("by region and consent model")
    assert lines[at + 1].split() == ["region", "opt-in", "opt-out", "unknown"]
    assert [line.split() for line in lines[at + 2 :]] == [
        ["SE", "1", "0", "0"],
        ["US-CA", "0", "1", "0"],
        ["unknown", "0", "0", "1"],
    ]
    data = json.loads(CliRunner().invoke(log_group, ["stats", "--config", str(cfg), "--json"]).output)
    assert data["by_model"] == {"opt-in": 1, "opt-out": 1, "unknown": 1}
