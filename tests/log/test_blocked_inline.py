"""`log blocked --suggest` and the site's own inline scripts (issue 15): when CSP reports show inline
`<script>` elements refused from enough client networks, it recommends `inline_scripts = "nonce"`.

Reports are hostile input and that setting weakens the policy for every visitor, so the count is of
distinct client networks that saw a script element refused (script-src or script-src-elem; a network
reporting under both counts once), never fewer than three whatever --min-clients says; an event
handler (script-src-attr) never counts, no nonce admits one. On both backends.
"""

from __future__ import annotations

import asyncio
import textwrap
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from consent_banner.config import ConsentConfig
from consent_banner.log import BlockedAttempt, open_log
from consent_banner.log.commands import log as log_group

from .conftest import KEY, SECRET

SITE = """
policy_revision = "2026-11-01"
controller = "Example AB"
privacy_policy_url = "/privacy"
log = "{log}"
{extra}
[categories.necessary]
label = "Necessary"
[categories.statistics]
label = "Statistics"

[[services]]
name = "ga"
preset = "google-analytics"
category = "statistics"
"""
NETWORKS = ["192.0.2.0", "198.51.100.0", "203.0.113.0", "2001:db8:1::", "2001:db8:2::"]
RECOMMENDED = '#   inline_scripts = "nonce"'


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSENT_SECRET_KEYS", SECRET)


def site(tmp_path: Path, url: str, extra: str = "") -> Path:
    path = tmp_path / "consent.toml"
    path.write_text(textwrap.dedent(SITE.format(log=url, extra=extra)))
    return path


async def report(url: str, *attempts: tuple[str, str, int]) -> None:
    """Each (origin, directive, networks): one attempt from each of the first `networks` client
    networks, stored as the report endpoint stores them."""
    lg = await open_log(url, hmac_key=KEY)
    try:
        for origin, directive, networks in attempts:
            for client in NETWORKS[:networks]:
                await lg.add_blocked(BlockedAttempt("/guide.html", origin, directive, None, client=client))
        await lg.flush()
    finally:
        await lg.close()


async def suggest(config: Path, *args: str) -> str:
    result = await asyncio.to_thread(
        CliRunner().invoke,
        log_group,
        ["blocked", "--config", str(config), "--suggest", *args],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    tomllib.loads(result.output)  # whatever it says stays valid TOML
    return result.output


def prose(toml: str) -> str:
    return " ".join(line[2:].strip() for line in toml.splitlines() if line.startswith("# "))


async def test_inline_scripts_refused_in_three_networks_recommend_nonce(log_url: str, tmp_path: Path) -> None:
    """The recommendation, as a comment with the key to paste above the first table; pasted there,
    the configuration loads with inline_scripts = "nonce". A network reporting under both directive
    names (a browser sends script-src-elem, an older one script-src) is one network."""
    config = site(tmp_path, log_url)
    await report(log_url, ("inline", "script-src-elem", 2), ("inline", "script-src", 3))
    out = await suggest(config)
    assert RECOMMENDED in out.splitlines()
    said = prose(out)
    assert "3 client networks saw inline <script> elements refused" in said
    assert "the policy no longer stops injected inline scripts" in said
    head, tables = config.read_text().split("[categories.necessary]", 1)
    pasted = tmp_path / "pasted.toml"
    pasted.write_text(head + RECOMMENDED.lstrip("# ") + "\n[categories.necessary]" + tables)
    assert ConsentConfig.from_toml(pasted).inline_scripts == "nonce"


async def test_one_or_two_networks_never_recommend_weakening_the_policy(log_url: str, tmp_path: Path) -> None:
    """A single client flooding reports, or two networks (one person's home and phone), under both
    directive names: no recommendation, and --min-clients cannot lower the bar below three."""
    config = site(tmp_path, log_url)
    flood = [("inline", "script-src-elem", 1)] * 30
    await report(log_url, *flood, ("inline", "script-src-elem", 2), ("inline", "script-src", 2))
    out = await suggest(config, "--min-clients", "1")
    assert RECOMMENDED not in out
    assert 'No recommendation to set inline_scripts = "nonce": script elements refused in 2 client ' in prose(
        out
    )
    assert "fewer than 3" in prose(out)


async def test_event_handlers_never_recommend_nonce(log_url: str, tmp_path: Path) -> None:
    """onclick= and friends are reported under script-src-attr: a nonce cannot admit them, so five
    networks of them recommend nothing (the "inline" line still says to move them into a script)."""
    config = site(tmp_path, log_url)
    await report(log_url, ("inline", "script-src-attr", 5))
    out = await suggest(config)
    assert RECOMMENDED not in out
    said = prose(out)
    assert "none refused a script element (script-src-attr is an event handler" in said
    assert "move handlers into a script" in said


async def test_a_site_already_on_nonce_is_told_what_still_gets_refused(log_url: str, tmp_path: Path) -> None:
    """With inline_scripts = "nonce" already, what is still refused is not the gate's to nonce: said,
    not recommended again; and with csp = "off" nothing is refused, so nothing is said."""
    config = site(tmp_path, log_url, extra='inline_scripts = "nonce"\n')
    await report(log_url, ("inline", "script-src-elem", 4))
    out = await suggest(config)
    assert RECOMMENDED not in out
    assert 'inline_scripts is already "nonce": the 4 networks\' refused inline scripts are ones the gate' in (
        prose(out)
    )
    off = site(tmp_path, log_url, extra='csp = "off"\n')
    assert "inline_scripts" not in await suggest(off)
