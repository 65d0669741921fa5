"""The catalog of services (issue 15): `preset = NAME` in consent.toml, `consent-banner presets`."""

from __future__ import annotations

import csv
import fnmatch
import tomllib
from dataclasses import replace
from functools import cache
from importlib import resources
from pathlib import Path

import pytest
from click.testing import CliRunner

from consent_banner import catalog
from consent_banner.cli import cli
from consent_banner.config import ConsentConfig
from consent_banner.errors import ConfigError
from consent_banner.log.results import BlockedOrigin
from consent_banner.scan.blocked import suggest_blocked
from consent_banner.scan.suggest import DATABASE, KnownCookie, suggest
from tests.scan.conftest import SITE, cookie, host, page

BASE = """
policy_revision = "2026-12-01"
controller = "Example AB"
privacy_policy_url = "https://www.example.com/privacy"
languages = ["en", "sv"]

[categories.necessary]
label = "Necessary"
[categories.functional]
label = "Functional"
[categories.analytics]
label = "Statistics"
[categories.marketing]
label = "Marketing"
[categories.statistics]
label = "Statistics (the site's own name)"
"""

REQUIRED = (
    "google-analytics google-tag-manager google-ads meta-pixel linkedin-insight tiktok-pixel microsoft-uet "
    "microsoft-clarity hotjar matomo plausible youtube vimeo google-maps intercom hubspot stripe recaptcha "
    "cloudflare-turnstile google-fonts adobe-fonts font-awesome-cdn"
).split()

# How strict a category is: a preset may file a cookie stricter than the database, never laxer.
OCD_RANK = {
    "Necessary": 0,
    "Security": 0,
    "Functional": 1,
    "Personalization": 1,
    "Analytics": 2,
    "Marketing": 3,
}
OUR_RANK = {"necessary": 0, "functional": 1, "analytics": 2, "marketing": 3}


def load(tmp_path: Path, services: str) -> ConsentConfig:
    path = tmp_path / "consent.toml"
    path.write_text(BASE + services, encoding="utf-8")
    return ConsentConfig.from_toml(path)


def test_the_catalog_has_the_named_presets_and_forty_in_all() -> None:
    names = list(catalog.catalog())
    assert not set(REQUIRED) - set(names)
    assert len(names) >= 40
    for p in catalog.catalog().values():
        assert p.docs.startswith("https://"), p.name
        assert {"en", "sv"} <= set(p.service["purpose"]), p.name
        assert p.provider, p.name
        assert p.category in OUR_RANK, p.name
    assert catalog.preset("google-tag-manager").loader
    assert catalog.preset("google-analytics").consent_mode == ("analytics_storage",)
    assert "fbq('init'" in catalog.preset("meta-pixel").inline


@pytest.mark.parametrize("name", list(catalog.catalog()))
def test_every_preset_loads_and_validates_in_a_config(tmp_path: Path, name: str) -> None:
    """R5: `preset = NAME` alone declares the vendor's provider, purpose (en, sv), origins and cookies
    with lifetimes, and consent.toml's validation accepts every one of them."""
    config = load(tmp_path, f'[[services]]\npreset = "{name}"\n')
    (service,) = config.services
    p = catalog.preset(name)
    assert service.name == name
    assert service.category == p.category
    assert service.provider == p.provider
    assert service.origins == p.origins
    assert [c.name for c in service.cookies] == [c["name"] for c in p.cookies]
    assert config.localize(service.purpose, "sv") == p.service["purpose"]["sv"]


@cache
def ocd() -> list[KnownCookie]:
    """Every row of the shipped Open Cookie Database (the lookup keeps one row per name)."""
    path = resources.files("consent_banner").joinpath("data", DATABASE)
    with path.open("r", encoding="utf-8", newline="") as f:
        return [
            KnownCookie(
                platform=row["Platform"].strip(),
                category=row["Category"].strip(),
                name=row["Cookie / Data Key name"].strip(),
                domain=row["Domain"].strip(),
                description="",
                retention=row["Retention period"].strip(),
                controller="",
                privacy_url="",
                wildcard=row["Wildcard match"].strip() == "1",
            )
            for row in csv.DictReader(f)
        ]


def _ocd_matches(platforms: tuple[str, ...], pattern: str) -> list[KnownCookie]:
    """The rows of these platforms a preset's cookie pattern stands for."""
    rows = []
    for row in ocd():
        if row.platform not in platforms:
            continue
        theirs = row.name + "*" if row.wildcard else row.name
        same = pattern in (row.name, theirs) or pattern.rstrip("*.") == row.name.rstrip("*.")
        if same or fnmatch.fnmatchcase(row.name, pattern) or fnmatch.fnmatchcase(pattern.rstrip("*"), theirs):
            rows.append(row)
    return rows


def _ocd_rows(platforms: tuple[str, ...], pattern: str) -> list[tuple[str, str]]:
    """(database name, category) of the rows of these platforms a preset's cookie pattern stands for."""
    return [(row.name, row.category) for row in _ocd_matches(platforms, pattern)]


def test_preset_origins_cover_the_hosts_the_database_gives_its_cookies() -> None:
    """R5: where the database says on which third-party domain a preset's cookie lives (YSC on
    youtube.com, _GRECAPTCHA on google.com), one of the preset's origins is on that domain."""
    problems = []
    for p in catalog.catalog().values():
        hosts = [o.split("://", 1)[1].removeprefix("*.") for o in p.origins]
        for declared in p.cookies:
            for row in _ocd_matches(p.ocd, declared["name"]):
                domain = row.domain.split(" ")[0].lower().strip(".")
                if "." in domain and not any(
                    h == domain or h.endswith("." + domain) or domain.endswith("." + h) for h in hosts
                ):
                    problems.append(f"{p.name}: {row.name} lives on {domain}, which no origin names")
    assert not problems


def test_preset_cookies_agree_with_the_open_cookie_database() -> None:
    """R5: where the Open Cookie Database knows the vendor, the preset's cookies are there under the
    preset's category or a laxer one (a preset may be stricter); laxer only with the reason written
    in the entry (`ocd_differs`); a vendor it knows of which no cookie is found fails too."""
    problems = []
    for p in catalog.catalog().values():
        if not p.ocd:
            continue
        found = 0
        for declared in p.cookies:
            rows = _ocd_rows(p.ocd, declared["name"])
            found += bool(rows)
            for ocd_name, ocd_category in rows:
                if OCD_RANK[ocd_category] > OUR_RANK[p.category] and not p.ocd_differs:
                    problems.append(
                        f"{p.name}: {declared['name']} is {ocd_category} in the database ({ocd_name})"
                    )
        if not found:
            problems.append(f"{p.name}: none of its cookies is in the database under {p.ocd}")
    assert not problems


def test_the_database_check_catches_a_laxer_category() -> None:
    """The check above can fail: Meta's _fbp filed as analytics is marketing in the database."""
    rows = _ocd_rows(("Facebook",), "_fbp")
    assert rows == [("_fbp", "Marketing")]
    assert OCD_RANK[rows[0][1]] > OUR_RANK["analytics"]
    assert _ocd_rows(("Hotjar",), "_hjSession_*") == [("_hjSession_", "Functional")]


def test_keys_given_replace_the_presets(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
[[services]]
name = "ga"
preset = "google-analytics"
category = "statistics"
cookies = [{ name = "_ga", lifetime = "13 months" }]
purpose = "Our statistics"
""",
    )
    (ga,) = config.services
    p = catalog.preset("google-analytics")
    assert (ga.name, ga.category, ga.purpose) == ("ga", "statistics", {"*": "Our statistics"})
    assert [(c.name, c.lifetime) for c in ga.cookies] == [("_ga", "13 months")]  # replaced whole
    assert (
        ga.origins == p.origins and ga.provider == p.provider and ga.privacy_url == p.service["privacy_url"]
    )
    assert config.service_for_cookie("_ga_ABC") is None


def test_a_presets_category_must_exist_in_the_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"services\[0\]\.category: 'functional' is not a category"):
        path = tmp_path / "c.toml"
        path.write_text(BASE.split("[categories.functional]")[0] + '[[services]]\npreset = "google-fonts"\n')
        ConsentConfig.from_toml(path)


def test_an_unknown_preset_is_a_config_error_naming_the_closest(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load(tmp_path, '[[services]]\nname = "ga"\npreset = "googel-analytics"\ncategory = "analytics"\n')
    assert "services[0]: unknown preset 'googel-analytics': did you mean 'google-analytics'" in str(e.value)
    with pytest.raises(ConfigError, match=r"services\[0\]\.preset: Input should be a valid string"):
        load(tmp_path, '[[services]]\nname = "ga"\npreset = 3\ncategory = "analytics"\n')


def test_the_config_hash_covers_the_resolved_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """R20: the banner version's config hash changes when what a preset stands for changes, though
    consent.toml does not: it hashes the resolved values, the same as the preset written out."""
    services = '[[services]]\npreset = "hotjar"\n'
    before = load(tmp_path, services).config_hash
    p = catalog.preset("hotjar")
    monkeypatch.setitem(catalog.catalog(), "hotjar", replace(p, service={**p.service, "cookies": []}))
    assert load(tmp_path, services).config_hash != before
    monkeypatch.undo()
    assert load(tmp_path, services).config_hash == before
    # The resolved values are what counts: the preset written out hashes the same.
    assert load(tmp_path, catalog.toml_block("hotjar")).config_hash == before


def test_cli_lists_the_catalog() -> None:
    result = CliRunner().invoke(cli, ["presets"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    hotjar = next(line for line in lines if line.startswith("hotjar "))
    assert hotjar.split()[:4] == ["hotjar", "analytics", "4", "origins"] and "Hotjar Ltd" in hotjar
    assert sum(1 for line in lines if line.split() and line.split()[0] in catalog.catalog()) == len(
        catalog.catalog()
    )


@pytest.mark.parametrize("name", list(catalog.catalog()))
def test_cli_prints_toml_that_round_trips(tmp_path: Path, name: str) -> None:
    result = CliRunner().invoke(cli, ["presets", name])
    assert result.exit_code == 0, result.output
    tomllib.loads(result.output)
    written = load(tmp_path, result.output).services
    preset = load(tmp_path, f'[[services]]\npreset = "{name}"\n').services
    assert [s.model_dump() for s in written] == [s.model_dump() for s in preset]


def test_cli_unknown_preset_exits_2_naming_the_closest() -> None:
    result = CliRunner().invoke(cli, ["presets", "hotjr"])
    assert result.exit_code == 2
    assert "unknown preset 'hotjr': did you mean 'hotjar'" in result.output


def test_scan_suggest_proposes_presets_for_what_it_saw(tmp_path: Path) -> None:
    """`scan --suggest`: a cookie or host of a preset becomes `preset = NAME` in the config's own
    category for it; a host several presets share (www.google.com) alone proposes none of them; a
    preset whose category the config lacks is never proposed as necessary."""
    config = load(tmp_path, '[[services]]\nname = "hotjar"\npreset = "plausible"\ncategory = "analytics"\n')
    pages = [
        page(
            "/",
            accept={
                "cookies": [cookie("_hjSessionUser_123", lifetime=300 * 86400), cookie("_fbp")],
                "hosts": [
                    host("https://static.hotjar.com"),
                    host("https://www.google.com"),
                    host("https://fonts.gstatic.com"),
                ],
            },
        )
    ]
    text = suggest(config, SITE, pages)
    services = {s["name"]: s for s in tomllib.loads(text)["services"]}
    assert services["hotjar-2"] == {"name": "hotjar-2", "preset": "hotjar", "category": "analytics"}
    assert services["meta-pixel"]["category"] == "marketing"
    assert services["google-fonts"]["category"] == "functional"
    assert 'preset = "google-ads"' not in text and 'preset = "recaptcha"' not in text
    assert any(
        s.get("origins") == ["https://www.google.com"] for s in services.values()
    )  # the database's way
    merged = load(
        tmp_path, '[[services]]\nname = "hotjar"\npreset = "plausible"\ncategory = "analytics"\n' + text
    )
    assert merged.category_for_cookie("_hjSessionUser_123") == (
        "analytics",
        merged.services_by_name["hotjar-2"].cookies[0],
    )

    lean = tmp_path / "lean.toml"
    lean.write_text(BASE.split("[categories.functional]")[0] + "[categories.analytics]\nlabel = 'S'\n")
    text = suggest(ConsentConfig.from_toml(lean), SITE, pages)
    fonts = next(s for s in tomllib.loads(text)["services"] if s.get("preset") == "google-fonts")
    assert fonts["category"] == "analytics"  # the strictest optional one, not necessary
    assert "the preset says 'functional', which is not a category of this config" in text


def test_log_blocked_suggest_proposes_one_preset_for_its_hosts(tmp_path: Path) -> None:
    """`log blocked --suggest`: the hosts of one preset become one `preset = NAME` block; a host no
    preset alone owns stays a block of its own; the preset's own category, never necessary."""
    config = load(tmp_path, "")

    def seen(origin: str) -> BlockedOrigin:
        return BlockedOrigin(origin, 5, 3, 1, "/", "2026-12-01", "2026-12-01", {"script-src-elem": 5})

    origins = ["https://static.hotjar.com", "https://www.google.com", "https://script.hotjar.com"]
    text = suggest_blocked(config, [seen(o) for o in [*origins, "https://challenges.cloudflare.com"]])
    services = tomllib.loads(text)["services"]
    assert services[0] == {"name": "hotjar", "preset": "hotjar", "category": "analytics"}
    assert services[1]["name"] == "www-google-com" and services[1]["origins"] == ["https://www.google.com"]
    assert services[2] == {
        "name": "cloudflare-turnstile",
        "preset": "cloudflare-turnstile",
        "category": "TODO",
    }
    assert "https://script.hotjar.com (script-src-elem: 5; 3 client networks, page /)" in text
    merged = load(tmp_path, text.replace('"TODO"', '"marketing"'))
    assert "https://script.hotjar.com" in merged.services_by_name["hotjar"].origins
