"""`consent-banner log blocked --suggest`: consent.toml declarations from CSP reports (issue 14, item 6).

Reports are unauthenticated, so an origin counts by the distinct client networks that reported it
(stored per attempt since schema 3; rows from before count as unknown), and whatever a report
carries must not break, or smuggle keys into, the TOML the operator pastes. On both backends.
"""

from __future__ import annotations

import asyncio
import re
import textwrap
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consent_banner.config import ConsentConfig
from consent_banner.errors import ConfigError, LogNeedsMigration
from consent_banner.log import BlockedAttempt, BlockedOrigin, derive_hmac_key, open_log
from consent_banner.log.commands import log as log_group
from consent_banner.scan.blocked import declarable, suggest_blocked

from .conftest import KEY, SECRET
from .rawdb import RawDB
from .test_backends_agree import SCHEMA2_HEAD, SCHEMA2_KEYS, schema2_url  # noqa: F401 (a fixture)
from .test_upgrade import HEAD as LEGACY_HEAD
from .test_upgrade import NEW_SECRET, OLD_SECRET, legacy_url  # noqa: F401 (a fixture)

SITE = """
policy_revision = "2026-11-01"
controller = "Example AB"
privacy_policy_url = "/privacy"
log = "{log}"

[categories.necessary]
label = "Necessary"
[categories.analytics]
label = "Analytics"
[categories.marketing]
label = "Marketing"

[[services]]
name = "stats"
category = "analytics"
origins = ["https://stats.example.net"]

[[services]]
name = "pixel"
category = "marketing"
origins = ["https://ads.example.com"]
"""
NETWORKS = ["192.0.2.0", "198.51.100.0", "203.0.113.0", "2001:db8:1::", "2001:db8:2::"]
CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")


def site(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "consent.toml"
    path.write_text(textwrap.dedent(SITE.format(log=url)))
    return path


async def report(url: str, *attempts: tuple[str, int | None]) -> None:
    """Each (origin, networks): one attempt from each of that many client networks (None: no client,
    as the rows of a log from before schema 3), written through the log as the endpoint writes them."""
    lg = await open_log(url, hmac_key=KEY)
    try:
        for origin, networks in attempts:
            for client in NETWORKS[:networks] if networks is not None else [None] * 4:
                await lg.add_blocked(BlockedAttempt("/shop", origin, "script-src-elem", None, client=client))
        await lg.flush()
    finally:
        await lg.close()


async def migrate(config: Path) -> None:
    """`consent-banner log migrate`: the one thing that brings an older log to this schema."""
    done = await asyncio.to_thread(CliRunner().invoke, log_group, ["migrate", "--config", str(config)])
    assert done.exit_code == 0 and "schema version" in done.output, done.output


async def schema_of(url: str) -> str:
    async with RawDB(url) as raw:
        return str(await raw.fetchval("SELECT value FROM meta WHERE key = 'schema_version'"))


async def cli(config: Path, *args: str) -> Result:
    return await asyncio.to_thread(
        CliRunner().invoke, log_group, ["blocked", "--config", str(config), *args], catch_exceptions=False
    )


def prose(toml: str) -> str:
    """The comments of a suggestion as one text (they are wrapped at 100 columns)."""
    return " ".join(line[2:].strip() for line in toml.splitlines() if line.startswith("# "))


def pasted(config: Path, suggestion: str, category: str | None = None) -> Path:
    """consent.toml with the suggestion pasted at its end; each TODO replaced by `category` if given."""
    text = (
        suggestion
        if category is None
        else suggestion.replace('category = "TODO"', f'category = "{category}"')
    )
    out = config.with_name("pasted.toml")
    out.write_text(config.read_text() + "\n" + text)
    return out


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSENT_SECRET_KEYS", SECRET)


async def test_suggest_declares_what_enough_clients_reported_and_round_trips(
    log_url: str, tmp_path: Path
) -> None:
    """R5: the origins CSP reports name become declarations to paste. Grouped by host; a known
    tracker gets its category from the Open Cookie Database, never necessary; an unknown host gets
    "TODO", which the config refuses naming the service and key until a person edits it; a host a
    service declares on another port is added to that service; a declared tracker is only said to be
    blocked as it should be; one network sending many reports, or two networks, do not count."""
    config = site(tmp_path, log_url)
    await report(
        log_url,
        ("https://cdn.shop.example", 3),
        ("http://cdn.shop.example", 4),
        ("https://www.google-analytics.com", 4),
        ("https://js.stripe.com", 3),
        ("https://stats.example.net:8443", 3),
        ("https://ads.example.com", 5),
        ("https://two.example", 2),
        ("https://old.example", None),
        ("inline", 3),
    )
    await report(log_url, *[("https://spoof.example", 1)] * 20)  # one network, twenty reports
    result = await cli(config, "--suggest")
    assert result.exit_code == 0, result.output
    out = result.output
    for absent in ("spoof.example", "two.example", "old.example"):
        assert absent not in out
    assert "(3 seen from fewer left out: --min-clients)" in out
    services = {s["name"]: s for s in tomllib.loads(out)["services"]}
    assert services == {
        "cdn-shop-example": {
            "name": "cdn-shop-example",
            "category": "TODO",
            "origins": ["http://cdn.shop.example", "https://cdn.shop.example"],
        },
        # hosts of the catalog's presets (catalog.py) become the preset
        "google-analytics": {
            "name": "google-analytics",
            "preset": "google-analytics",
            "category": "analytics",
        },
        # the preset says necessary: a report never makes a service necessary
        "stripe": {"name": "stripe", "preset": "stripe", "category": "TODO"},
    }
    said = prose(out)
    assert 'Service "stats" (analytics) declares this host: add the origin to its `origins`:' in said
    assert '#   origins = ["https://stats.example.net", "https://stats.example.net:8443"]' in out
    assert (
        "https://ads.example.com (script-src-elem: 5; 5 client networks, page /shop): declared by service "
        '"pixel"; blocked until a visitor grants marketing' in said
    )
    assert "inline (script-src-elem: 3; 3 client networks" in said and "csp_nonce(request)" in said

    with pytest.raises(ConfigError) as refused:
        ConsentConfig.from_toml(pasted(config, out))
    message = str(refused.value)
    assert "services[2].category: service 'cdn-shop-example' still says 'TODO'" in message
    assert "services[4].category: service 'stripe' still says 'TODO'" in message
    edited = ConsentConfig.from_toml(pasted(config, out, "necessary"))
    assert edited.services_by_name["cdn-shop-example"].origins == (
        "http://cdn.shop.example",
        "https://cdn.shop.example",
    )
    assert edited.services_by_name["google-analytics"].category == "analytics"
    assert "https://www.google-analytics.com" in edited.services_by_name["google-analytics"].origins

    fewer = await cli(config, "--suggest", "--min-clients", "2")
    assert "https://two.example" in tomllib.loads(fewer.output)["services"][-1]["origins"]
    listed = await cli(config)
    header, *rows = listed.output.splitlines()
    assert header.split()[:2] == ["count", "clients"]
    spoof = next(r for r in rows if "spoof.example" in r)
    assert spoof.split()[:2] == ["20", "1"]


HOSTILE = [
    'https://a.example"\nname = "x',
    'https://b.example]]\n[[services]]\nname = "evil"\ncategory = "necessary"',
    "https://b.example]]",
    'https://c.example"]\ncategory = "necessary"\n#',
    "https://ünicode.example",
    "https://" + "a" * 250 + ".example",
    "https://" + "a." * 200 + "example",
    "https://*.evil.example",
    "javascript:alert(1)",
    "https://evil.example/p?q=1",
    "https://d.example\u2028",
    "https://e.example\x7f",
    "https://f.example\x1b[2J",
    "wss://sock.example",
    "https://[::1",
    "https://user:pw@g.example",
    "https://h.example:99999",
    "",
]


async def test_hostile_reports_cannot_break_the_toml_or_smuggle_keys(log_url: str, tmp_path: Path) -> None:
    """What an attacker controls (blocked-uri, page, directive), stored as sent: the output is valid
    TOML with nothing in it but the genuine origin, and the pasted config loads once TODO is edited."""
    config = site(tmp_path, log_url)
    lg = await open_log(log_url, hmac_key=KEY)
    try:
        for origin in [*HOSTILE, "https://xn--nicode-2ya.example"]:
            for client in NETWORKS[:3]:
                page = '/a"\n[[services]]\nname = "p"\u202e]]'
                directive = 'img-src\n[[services]]\nname = "d"'
                await lg.add_blocked(BlockedAttempt(page, origin, directive, None, client=client))
        for client in NETWORKS[:3]:
            await lg.add_blocked(BlockedAttempt('/"]]\n\x1b', "inline", 'x"\n]]', None, client=client))
        await lg.flush()
    finally:
        await lg.close()
    result = await cli(config, "--suggest")
    assert result.exit_code == 0, result.output
    assert (
        not CONTROL.search(result.output) and "\u2028" not in result.output and "\u202e" not in result.output
    )
    parsed = tomllib.loads(result.output)
    assert list(parsed) == ["services"]
    assert parsed["services"] == [
        {"name": "xn-nicode-2ya-example", "category": "TODO", "origins": ["https://xn--nicode-2ya.example"]}
    ]
    assert "origins left out: not an http(s) origin" in result.output
    assert "evil" not in result.output and "x.example" not in result.output
    loaded = ConsentConfig.from_toml(pasted(config, result.output, "marketing"))
    assert loaded.services_by_name["xn-nicode-2ya-example"].origins == ("https://xn--nicode-2ya.example",)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(
            st.one_of(
                st.text(max_size=60),
                st.builds(lambda h, p: f"https://{h}{p}", st.text(max_size=20), st.text(max_size=8)),
                st.from_regex(r"https?://[a-z0-9.*\[\]:-]{1,30}(:[0-9]{1,6})?", fullmatch=True),
            ),
            st.text(max_size=30),
            st.dictionaries(st.text(max_size=20), st.integers(0, 9), max_size=3),
            st.integers(0, 5),
        ),
        max_size=8,
    )
)
def test_any_stored_report_gives_valid_toml_that_loads_once_edited(
    reports: list[tuple[str, str, dict[str, int], int]],
) -> None:
    """Whatever origins, pages and directives the blocked table holds: valid TOML, only [[services]]
    blocks, each origin one consent.toml accepts as written, and the config loads once TODO is edited."""
    config = ConsentConfig.from_dict(tomllib.loads(SITE.format(log="memory://")))
    found = [BlockedOrigin(o, 9, clients, 1, page, "", "", dirs) for o, page, dirs, clients in reports]
    text = suggest_blocked(config, found)
    assert not CONTROL.search(text)
    parsed = tomllib.loads(text)
    assert set(parsed) <= {"services"}
    for s in parsed.get("services", []):
        assert set(s) <= {"name", "category", "provider", "privacy_url", "origins"}
        assert all(declarable(o) == o for o in s["origins"])
    data = tomllib.loads(SITE.format(log="memory://") + "\n" + text.replace('"TODO"', '"marketing"'))
    ConsentConfig.from_dict(data)


# --- logs from before schema 3 -------------------------------------------------------------------


async def test_a_schema_2_log_answers_blocked_with_unknown_clients_and_verifies(
    schema2_url: tuple[str, Path],  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Read as it is (no schema change): its two reports (no client) are listed with 0 clients, left
    out of --suggest unless --min-clients 0; after `log migrate` a report carries its client; no
    record or hash changes."""
    url, _ = schema2_url
    monkeypatch.setenv("CONSENT_SECRET_KEYS", f"{'o' * 40},{'s' * 40}")
    async with RawDB(url) as raw:
        before = await raw.fetch("SELECT seq, prev_hash, hash FROM records ORDER BY seq")
    config = site(tmp_path, url)
    listed = await cli(config)
    assert listed.exit_code == 0, listed.output
    rows = listed.output.splitlines()[1:]
    assert sorted(r.split()[:2] + [r.split()[4]] for r in rows) == [
        ["1", "0", "https://ads.example"],
        ["1", "0", "inline"],
    ]
    assert "(2 seen from fewer left out" in (await cli(config, "--suggest")).output
    everything = await cli(config, "--suggest", "--min-clients", "0")
    assert tomllib.loads(everything.output)["services"][0]["origins"] == ["https://ads.example"]
    assert "inline (script-src: 1; 0 client networks, page /)" in prose(everything.output)
    assert await schema_of(url) == "2"
    with pytest.raises(LogNeedsMigration):
        await report(url, ("https://ads.example", 3))
    await migrate(config)
    await report(url, ("https://ads.example", 3))
    after = await cli(config, "--suggest")
    assert "https://ads.example (script-src-elem: 4; 3 client networks" in prose(after.output)
    async with RawDB(url) as raw:
        assert await raw.fetch("SELECT seq, prev_hash, hash FROM records ORDER BY seq") == before
    lg = await open_log(url, hmac_key=None, previous_hmac_keys=SCHEMA2_KEYS)
    try:
        result = await lg.verify()
    finally:
        await lg.close()
    assert result.ok and result.head == SCHEMA2_HEAD, result.message


async def test_the_previous_release_log_answers_blocked_and_verifies(
    legacy_url: str,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Schema 1: `log blocked` answers it as it is (read-only: still schema 1); after `log migrate` it
    takes reports with clients, and the chain verifies with the head it had."""
    monkeypatch.setenv("CONSENT_SECRET_KEYS", f"{OLD_SECRET},{NEW_SECRET}")
    config = site(tmp_path, legacy_url)
    first = await cli(config)
    assert first.exit_code == 0 and first.output.strip() == "no blocked attempts reported", first.output
    lg = await open_log(legacy_url, hmac_key=None)
    try:
        assert await lg.schema_version() == 1
    finally:
        await lg.close()
    await migrate(config)
    lg = await open_log(legacy_url, hmac_key=derive_hmac_key(NEW_SECRET))
    try:
        for client in NETWORKS:
            await lg.add_blocked(
                BlockedAttempt("/pay", "https://pay.example", "frame-src", None, client=client)
            )
        await lg.flush()
    finally:
        await lg.close()
    suggested = await cli(config, "--suggest")
    assert "https://pay.example (frame-src: 5; 5 client networks, page /pay)" in prose(suggested.output)
    verified = await asyncio.to_thread(
        CliRunner().invoke, log_group, ["verify", "--config", str(config)], catch_exceptions=False
    )
    assert verified.exit_code == 0 and verified.output.startswith(
        f"21 records, chain intact, head {LEGACY_HEAD}"
    )
