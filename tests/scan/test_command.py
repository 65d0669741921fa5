"""The `scan` click command: its options, and its refusals before any page is scanned."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from click.testing import CliRunner

from consent_banner.scan import scan

TOML = textwrap.dedent("""
    policy_revision = "2026-11-01"
    controller = "Example AB"
    privacy_policy_url = "/privacy"
    [categories.necessary]
    label = "Necessary"
""")


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(scan, list(args))
    return result.exit_code, result.output


def test_help_shows_the_documented_signature() -> None:
    code, out = invoke("--help")
    assert code == 0
    for option in ("--config", "--pages", "--exclude", "--format", "--output", "--browser-path", "--suggest"):
        assert option in out
    assert "table|json|junit" in out and "/usr/bin/chromium" in out


def test_importing_the_command_does_not_need_playwright(tmp_path: Path) -> None:
    """The package imports without the `scan` extra; only running a scan asks for it."""
    script = textwrap.dedent("""
        import sys
        sys.modules["playwright"] = None
        sys.modules["playwright.async_api"] = None
        from click.testing import CliRunner
        from consent_banner.scan import scan
        from pathlib import Path
        Path("consent.toml").write_text(TOML)
        result = CliRunner().invoke(scan, ["http://127.0.0.1:9/", "--config", "consent.toml"])
        print(result.exit_code, result.output)
    """).replace("TOML", repr(TOML))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("2 "), out.stdout
    assert "pip install 'consent-banner[scan]'" in out.stdout


def test_refusals_exit_with_status_2_and_say_what_to_fix(tmp_path: Path) -> None:
    """Exit status 2 (cannot run) is kept apart from 1 (the site has error findings)."""
    config = tmp_path / "consent.toml"
    config.write_text(TOML)
    code, out = invoke("ftp://example.com/", "--config", str(config))
    assert code == 2 and "is not an http(s) URL" in out
    code, out = invoke("http://127.0.0.1:9/", "--config", str(config), "--exclude", "(")
    assert code == 2 and "'(' is not a regular expression" in out
    code, out = invoke("http://127.0.0.1:9/", "--config", str(tmp_path / "missing.toml"))
    assert code == 2 and "missing.toml" in out
    bad = tmp_path / "bad.toml"
    bad.write_text(TOML.replace('controller = "Example AB"', 'controller = "Example AB"\ncolour = "red"'))
    code, out = invoke("http://127.0.0.1:9/", "--config", str(bad))
    assert code == 2 and "colour: unknown key" in out
    code, out = invoke("http://127.0.0.1:9/", "--config", str(config), "--pages", "0")
    assert code == 2
    code, out = invoke(
        "http://127.0.0.1:9/", "--config", str(config), "--browser-path", str(tmp_path / "nochrome")
    )
    assert code == 2 and "cannot start the browser" in out and "nochrome" in out
