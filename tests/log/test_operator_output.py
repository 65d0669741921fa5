"""What `consent-banner log ...` shows an operator when the data is hostile: control characters
escaped (issue 12 item 10), options out of range named (item 11)."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from consent_banner.cli import cli
from consent_banner.config import ConsentConfig
from consent_banner.log import record_hash
from consent_banner.log.canonical import ROW_COLUMNS

from ..conftest import ORIGIN, make_app

# Any C0 control but the line feed, DEL, any C1 control, a bidi override: none may reach a terminal.
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")

# What an attacker would post: hide the row (SGR 8, erase line, cursor up), set the window title
# (OSC 0), plant a link (OSC 8), the same through the 8-bit CSI, and a right-to-left override.
HOSTILE_PATH = (
    "/shop\x1b[8m\x1b[2K\x1b[1A\x1b]0;all clear\x07"
    "\x1b]8;;https://evil.example/\x1b\\click me\x1b]8;;\x1b\\\x9b2J\x7f\u202egnp.x"
)


def post_csp_reports(config: ConsentConfig, *reports: dict[str, Any]) -> None:
    """CSP violation reports posted over HTTP to the middleware, as any visitor can."""

    async def go() -> None:
        app = make_app(config)
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url=ORIGIN) as client:
                for report in reports:
                    r = await client.post(
                        "/_consent/csp-report",
                        content=json.dumps({"csp-report": report}),
                        headers={"content-type": "application/csp-report"},
                    )
                    assert r.status_code == 204
        finally:
            await app.close()

    asyncio.run(go())


def run(toml_path: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, [*args, "--config", str(toml_path)], catch_exceptions=False)


def test_log_blocked_escapes_what_a_csp_report_carries(config: ConsentConfig, toml_path: Path) -> None:
    """Item 10: a CSP report with escape sequences in its page cannot hide a row, set the window
    title or plant a link in the terminal of whoever runs `log blocked`: every control character
    is shown as \\uXXXX, visible, and the genuine report next to it is listed as it was."""
    post_csp_reports(
        config,
        {
            "document-uri": "http://testserver" + HOSTILE_PATH,
            "blocked-uri": "https://ads.example.com/p.js",
            "effective-directive": "script-src-elem",
        },
        {
            "document-uri": "http://testserver/deals",
            "blocked-uri": "https://stats.example.net/s.js",
            "effective-directive": "script-src-elem",
        },
    )
    result = run(toml_path, "log", "blocked")
    assert result.exit_code == 0, result.output
    assert not RAW_CONTROL.search(result.output), repr(result.output)
    rows = result.output.splitlines()[1:]
    assert len(rows) == 2
    hostile = next(r for r in rows if "ads.example.com" in r)
    assert hostile.endswith(
        "/shop\\u001b[8m\\u001b[2K\\u001b[1A\\u001b]0;all clear\\u0007\\u001b]8;;https://evil.example/"
        "\\u001b\\click me\\u001b]8;;\\u001b\\\\u009b2J\\u007f\\u202egnp.x"
    )
    assert any(r.endswith(" /deals") and "https://stats.example.net" in r for r in rows)


def tamper(db: Path, sql: str, *args: Any) -> None:
    """Someone with write access to the database, not to the keys."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
            conn.execute(f'DROP TRIGGER "{name}"')
        conn.execute(sql, args)
    finally:
        conn.close()


def decide(config: ConsentConfig, n: int) -> None:
    async def go() -> None:
        app = make_app(config)
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url=ORIGIN) as client:
                for _ in range(n):
                    r = await client.post(
                        "/_consent", json={"action": "accept_all"}, headers={"origin": ORIGIN}
                    )
                    assert r.status_code == 200, r.text
        finally:
            await app.close()

    asyncio.run(go())


def test_stats_escape_what_the_database_holds(config: ConsentConfig, toml_path: Path) -> None:
    """Item 10: a category name written straight into the database reaches the operator's
    terminal through `log stats` only escaped."""
    decide(config, 3)
    hostile = "necessary,\x1b]0;pwned\x07x"
    tamper(toml_path.parent / "log.db", "UPDATE records SET granted = ? WHERE seq = 2", hostile)
    stats = run(toml_path, "log", "stats")
    assert stats.exit_code == 0, stats.output
    assert not RAW_CONTROL.search(stats.output), repr(stats.output)
    assert "\\u001b]0;pwned\\u0007x" in stats.output


def test_verify_escapes_what_the_database_holds(config: ConsentConfig, toml_path: Path) -> None:
    """Item 10: `log verify` names what it found wrong; a forged value in that message is escaped."""
    decide(config, 3)
    db = toml_path.parent / "log.db"
    # The last record points at a version id of the forger's choosing, its hash recomputed to match.
    conn = sqlite3.connect(db)
    [row] = conn.execute(f"SELECT {', '.join(ROW_COLUMNS)} FROM records WHERE seq = 3").fetchall()
    conn.close()
    forged = list(row)
    forged[ROW_COLUMNS.index("version_id")] = "\x1b[2J\x1b[8mv"
    forged[-1] = record_hash(forged[-2], tuple(forged[1:-2]))
    tamper(db, "UPDATE records SET version_id = ?, hash = ? WHERE seq = 3", forged[-6], forged[-1])
    verify = CliRunner().invoke(cli, ["log", "verify", "--config", str(toml_path)])
    assert verify.exit_code == 1
    assert "banner version \\u001b[2J\\u001b[8mv" in verify.output
    assert not RAW_CONTROL.search(verify.output), repr(verify.output)


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_export_escapes_on_a_terminal_and_stays_faithful_in_a_file(
    config: ConsentConfig, toml_path: Path, tmp_path: Path
) -> None:
    """Item 10, CSV: an export written to a file keeps the stored text as is (verify recomputes
    the chain from it); the same export on a terminal shows the control characters escaped."""
    decide(config, 2)
    tamper(toml_path.parent / "log.db", "UPDATE records SET language = ? WHERE seq = 1", "en\x1b]0;pwned\x07")
    exe = str(Path(sys.executable).with_name("consent-banner"))
    env = {**os.environ, "TERM": "dumb"}
    on_file = tmp_path / "export.csv"
    subprocess.run(
        [exe, "log", "export", "--config", str(toml_path), "-o", str(on_file)], env=env, check=True
    )
    assert "en\x1b]0;pwned\x07" in on_file.read_text(encoding="utf-8")
    primary, replica = pty.openpty()
    try:
        proc = subprocess.run(
            [exe, "log", "export", "--config", str(toml_path), "--no-progress"],
            env=env,
            stdout=replica,
            stderr=subprocess.PIPE,
            timeout=60,
        )
        os.close(replica)
        shown = b""
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # the terminal is closed once everything is read
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(primary)
    assert proc.returncode == 0, proc.stderr
    text = shown.decode()
    assert "en\\u001b]0;pwned\\u0007" in text
    assert not RAW_CONTROL.search(text.replace("\r\n", "\n")), repr(text)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["export", "--until", "9999-12-31"], "'9999-12-31' is outside the dates the log can hold"),
        (["stats", "--since", "0001-01-01T00:00+05:00"], "'0001-01-01T00:00+05:00' is outside the dates"),
        (["export", "--since", "2026-13-01"], "'2026-13-01' is not a date"),
        (["purge", "--older-than", "99999y", "--yes"], "'99999y' reaches back before the year 1"),
        (["purge", "--older-than", "9999999999999y", "--yes"], "'9999999999999y' reaches back"),
        (["purge", "--older-than", "3 eons", "--yes"], "'3 eons' is not a duration"),
        (["blocked", "--limit", "-1"], "-1 is not in the range 1<=x<=100000"),
        (["blocked", "--limit", "99999999999999999999"], "99999999999999999999 is not in the range"),
    ],
)
def test_out_of_range_options_are_named_not_a_traceback(
    config: ConsentConfig, toml_path: Path, args: list[str], says: str
) -> None:
    """Item 11: `log export --until 9999-12-31` printed a traceback; every date and number option
    out of range or garbled is refused with a message naming it, and nothing is removed."""
    decide(config, 1)
    result = CliRunner().invoke(cli, ["log", args[0], "--config", str(toml_path), *args[1:]])
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{args[1]}': {says}" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "1 decisions" in run(toml_path, "log", "stats").output


def test_malformed_export_and_pins_files_are_named_by_line_not_a_traceback(
    config: ConsentConfig, toml_path: Path, tmp_path: Path
) -> None:
    """Item 11: a hand-edited export or pins file printed a KeyError traceback; now the option,
    the file, the record or line and what is wrong with it."""
    decide(config, 3)
    export = tmp_path / "export.ndjson"
    assert run(toml_path, "log", "export", "--format", "ndjson", "-o", str(export)).exit_code == 0
    lines = export.read_text().splitlines()
    export.write_text("\n".join([lines[0], '{"seq": 2}', lines[2]]) + "\n")
    result = CliRunner().invoke(cli, ["log", "verify", "--file", str(export), "--config", str(toml_path)])
    assert result.exit_code == 2, result.output
    assert (
        f"Invalid value for '--export': {export}, line 2: not a line of a log export ('detail' is missing)"
        in (result.output)
    )
    csv_file = tmp_path / "export.csv"
    assert run(toml_path, "log", "export", "-o", str(csv_file)).exit_code == 0
    csv_file.write_text(csv_file.read_text() + "4,2026-01-01\n")
    result = CliRunner().invoke(cli, ["log", "verify", "--file", str(csv_file), "--config", str(toml_path)])
    assert result.exit_code == 2 and f"{csv_file}, record 4: not a record" in result.output, result.output
    pins = tmp_path / "pins.ndjson"
    pins.write_text('\n{"log_id": "x"}\n')
    result = CliRunner().invoke(cli, ["log", "verify", "--pins", str(pins), "--config", str(toml_path)])
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '--pins': {pins}, line 2: not a pin (a checkpoint, a head" in result.output
    assert "Traceback" not in result.output
