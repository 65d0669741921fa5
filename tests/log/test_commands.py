"""`consent-banner log ...` through click's CliRunner, against a consent.toml in a temp directory."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from consent_banner.config import ConsentConfig
from consent_banner.log import BlockedAttempt, Decision, LoggedRecord, open_log
from consent_banner.log.commands import log as log_group
from consent_banner.log.export import read_rows
from consent_banner.log.schema import SCHEMA_VERSION

from .conftest import KEY, SECRET, VERSION_EN
from .rawdb import RawDB

TOML = """
policy_revision = "2026-01"
controller = "Example AB"
privacy_policy_url = "/privacy"
log = "sqlite:///{db}"
retention = "3y"

[categories.necessary]
label = "Necessary"
[categories.analytics]
label = "Analytics"
[categories.marketing]
label = "Marketing"
"""


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    monkeypatch.setenv("CONSENT_SECRET_KEYS", SECRET)
    db = tmp_path / "log.db"
    cfg = tmp_path / "consent.toml"
    cfg.write_text(textwrap.dedent(TOML.format(db=db)))
    ConsentConfig.from_toml(cfg)  # the schema accepts it
    return cfg, f"sqlite:///{db}"


def fill(url: str, *, old_days: int = 0, n: int = 12) -> list[LoggedRecord]:
    """n decisions, the first half `old_days` ago; two CSP reports."""

    async def go() -> list[LoggedRecord]:
        now = datetime.now(UTC)
        clock_now = [now - timedelta(days=old_days)]
        lg: Any = await open_log(url, hmac_key=KEY, clock=lambda: clock_now[0])
        out = []
        try:
            for i in range(n):
                if i == n // 2:
                    clock_now[0] = now
                action = ("accept_all", "reject_all", "custom")[i % 3]
                granted = {
                    "accept_all": ("necessary", "analytics", "marketing"),
                    "reject_all": ("necessary",),
                    "custom": ("necessary", "analytics"),
                }[action]
                denied = tuple(c for c in ("analytics", "marketing") if c not in granted)
                out.append(
                    await lg.append(
                        Decision(
                            f"cli-{i:018d}",
                            action,
                            granted,
                            denied,
                            {"stats": "analytics" in granted},
                            "2026-01",
                            "sv" if i % 2 else "en",
                            "banner",
                            "203.0.113.0",
                            "Firefox",
                            VERSION_EN,
                        )
                    )
                )
            await lg.add_blocked(BlockedAttempt("/shop", "https://ads.example.com", "script-src-elem", None))
            await lg.add_blocked(BlockedAttempt("/shop", "https://ads.example.com", "script-src-elem", None))
        finally:
            await lg.close()
        return out

    return asyncio.run(go())


def invoke(cfg: Path, *args: str) -> Any:
    return CliRunner().invoke(log_group, [args[0], "--config", str(cfg), *args[1:]], catch_exceptions=False)


def test_migrate_creates_then_reports_up_to_date(setup: tuple[Path, str]) -> None:
    """Schema created and migrated by the library, with a version number."""
    cfg, _ = setup
    first = invoke(cfg, "migrate")
    assert first.exit_code == 0 and first.output.strip() == f"schema version {SCHEMA_VERSION} (created)"
    again = invoke(cfg, "migrate")
    assert again.output.strip() == f"schema version {SCHEMA_VERSION} (up to date)"


def test_read_commands_do_not_create_a_missing_log(setup: tuple[Path, str]) -> None:
    """A mistyped path is an error, not a fresh empty log that "verifies"."""
    cfg, url = setup
    result = CliRunner().invoke(log_group, ["verify", "--config", str(cfg)])
    assert result.exit_code == 1
    assert "there is no consent log" in result.output
    assert not Path(url.removeprefix("sqlite:///")).exists()


def test_csv_export_round_trips(setup: tuple[Path, str]) -> None:
    """Export: CSV holds every stored field; reading it back gives the same records, which verify."""
    cfg, url = setup
    records = fill(url)
    result = invoke(cfg, "export", "--format", "csv")
    assert result.exit_code == 0
    rows = list(read_rows(io.StringIO(result.output)))
    assert rows == [r.row() for r in records]
    header = next(csv.reader(io.StringIO(result.output)))
    assert header[:4] == ["seq", "at", "consent_id", "action"]


def test_ndjson_export_round_trips_and_verifies_offline(setup: tuple[Path, str], tmp_path: Path) -> None:
    """Export: NDJSON lines are the records' JSON; `verify --file` recomputes the chain from the file."""
    cfg, url = setup
    records = fill(url)
    out = tmp_path / "log.ndjson"
    assert invoke(cfg, "export", "--format", "ndjson", "--output", str(out)).exit_code == 0
    # The typed lines (header, versions, checkpoints, head) come first; record lines start {"seq":
    typed, lines = [], []
    for line in out.read_text().splitlines():
        (lines if line.startswith('{"seq":') else typed).append(line)
    assert [json.loads(t)["type"] for t in typed][:1] == ["header"]
    assert [LoggedRecord.from_json(json.loads(line)) for line in lines] == records
    ok = invoke(cfg, "verify", "--file", str(out))
    assert ok.exit_code == 0 and ok.output.startswith(f"12 records, chain intact, head {records[-1].hash}")
    tampered = [json.loads(line) for line in lines]
    tampered[4]["granted"] = ["necessary", "analytics", "marketing"]
    tampered[4]["denied"] = []
    out.write_text("".join(t + "\n" for t in typed) + "".join(json.dumps(t) + "\n" for t in tampered))
    bad = CliRunner().invoke(log_group, ["verify", "--config", str(cfg), "--file", str(out)])
    assert bad.exit_code == 1 and bad.output.startswith("record 5: changed")


def test_export_filters(setup: tuple[Path, str]) -> None:
    """Export --action / --consent-id / --since / --until select records."""
    cfg, url = setup
    records = fill(url, old_days=40)
    by_action = invoke(cfg, "export", "--format", "ndjson", "--action", "reject_all").output.splitlines()
    assert [json.loads(x)["seq"] for x in by_action] == [r.seq for r in records if r.action == "reject_all"]
    one = invoke(
        cfg, "export", "--format", "ndjson", "--consent-id", records[5].consent_id
    ).output.splitlines()
    assert [json.loads(x)["seq"] for x in one] == [6]
    day = (datetime.now(UTC) - timedelta(days=40)).date().isoformat()
    old = invoke(cfg, "export", "--format", "ndjson", "--since", day, "--until", day).output.splitlines()
    assert [json.loads(x)["seq"] for x in old] == [1, 2, 3, 4, 5, 6]
    bad = CliRunner().invoke(log_group, ["export", "--config", str(cfg), "--action", "maybe"])
    assert bad.exit_code == 1 and "not an action" in bad.output


def test_export_shows_progress_when_asked(setup: tuple[Path, str], tmp_path: Path) -> None:
    """Export: a progress bar on standard error, the data untouched in the file."""
    cfg, url = setup
    fill(url)
    out = tmp_path / "x.csv"
    result = CliRunner().invoke(log_group, ["export", "--config", str(cfg), "-o", str(out), "--progress"])
    assert result.exit_code == 0
    assert "exporting 12 records" in result.stderr
    assert len(out.read_text().splitlines()) == 13


def test_verify_reports_intact_and_then_the_bad_record(setup: tuple[Path, str]) -> None:
    """R22: `log verify` exits 0 with the head, or 1 naming the first bad record."""
    cfg, url = setup
    records = fill(url)
    ok = invoke(cfg, "verify")
    assert ok.exit_code == 0
    assert ok.output.splitlines() == [
        f"12 records, chain intact, head {records[-1].hash}",
        "signatures: HMAC (server secret) — set CONSENT_LOG_SIGNING_KEY for public verification",
    ]

    async def tamper() -> None:
        async with RawDB(url) as raw:
            await raw.allow_tampering()
            await raw.execute("UPDATE records SET action = 'accept_all' WHERE seq = 5")

    asyncio.run(tamper())
    bad = CliRunner().invoke(log_group, ["verify", "--config", str(cfg), "--json"])
    assert bad.exit_code == 1
    body = json.loads(bad.output)
    assert (body["ok"], body["bad_seq"], body["problem"]) == (False, 5, "changed")


def test_verify_against_pinned_checkpoints(setup: tuple[Path, str], tmp_path: Path) -> None:
    """R22: checkpoints exported and kept elsewhere expose a log rebuilt from scratch."""
    cfg, url = setup
    fill(url)
    pins = tmp_path / "pins.ndjson"
    assert invoke(cfg, "checkpoints", "--new", "-o", str(pins)).exit_code == 0
    assert [json.loads(x)["seq"] for x in pins.read_text().splitlines()][-1] == 12
    assert invoke(cfg, "verify", "--checkpoints", str(pins)).exit_code == 0
    # Someone deletes the log and writes a fresh one of the same length: it verifies on its own...
    Path(url.removeprefix("sqlite:///")).unlink()
    fill(url)
    assert invoke(cfg, "verify").exit_code == 0
    # ...but not against the pinned checkpoints.
    bad = CliRunner().invoke(log_group, ["verify", "--config", str(cfg), "--checkpoints", str(pins)])
    assert bad.exit_code == 1 and "another log" in bad.output


def test_stats_prints_days_and_acceptance(setup: tuple[Path, str]) -> None:
    """Stats: decisions per day by action and acceptance rate per category."""
    cfg, url = setup
    fill(url)
    result = invoke(cfg, "stats")
    assert result.exit_code == 0
    assert result.output.startswith("12 decisions by 12 consent ids")
    today = datetime.now(UTC).date().isoformat()
    assert any(line.startswith(today) and line.split()[-1] == "12" for line in result.output.splitlines())
    assert "analytics" in result.output and "66.7%" in result.output  # accept_all + custom of 12
    assert "marketing" in result.output and "33.3%" in result.output
    data = json.loads(invoke(cfg, "stats", "--json").output)
    assert data["by_action"] == {"accept_all": 4, "reject_all": 4, "custom": 4}


def test_purge_removes_old_records_and_keeps_verify_passing(setup: tuple[Path, str]) -> None:
    """R21: `log purge --older-than` removes, anchors, logs itself; verify still passes."""
    cfg, url = setup
    fill(url, old_days=400)
    result = invoke(cfg, "purge", "--older-than", "1y", "--yes")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("removed 6 records (up to record 6")
    assert "purge logged as record 13" in result.output
    v = invoke(cfg, "verify")
    assert v.exit_code == 0 and v.output.startswith("7 records, chain intact")
    # Without --older-than, the config's retention (3y) applies: nothing that old is left.
    again = invoke(cfg, "purge", "--yes")
    assert "nothing older than" in again.output


def test_purge_needs_the_key(setup: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """R22: only the key holder can purge (it signs the anchor)."""
    cfg, url = setup
    fill(url)
    monkeypatch.delenv("CONSENT_SECRET_KEYS")
    result = CliRunner().invoke(log_group, ["purge", "--config", str(cfg), "--older-than", "1d", "--yes"])
    assert result.exit_code == 1 and "CONSENT_SECRET_KEYS" in result.output
    # Reading still works, and says the signatures were not checked.
    v = CliRunner().invoke(log_group, ["verify", "--config", str(cfg)])
    assert v.exit_code == 0 and "signatures not checked" in v.stderr


def test_blocked_lists_reports(setup: tuple[Path, str]) -> None:
    """Blocked attempts from CSP reports are listed for the auditor."""
    cfg, url = setup
    fill(url)
    result = invoke(cfg, "blocked")
    assert result.exit_code == 0
    line = result.output.splitlines()[1]
    assert line.split()[0] == "2" and "https://ads.example.com" in line and line.endswith("/shop")
