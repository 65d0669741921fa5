"""consent.toml loading and validation: every error names the key path."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from consent_banner import ConfigError, ConsentConfig
from consent_banner.durations import parse_duration, parse_lifetime

BASE = {
    "policy_revision": "r1",
    "controller": "Example Offices AB",
    "privacy_policy_url": "/privacy",
    "categories": {"necessary": {"label": "Necessary"}, "analytics": {"label": "Analytics"}},
}


def problems(data: dict) -> str:
    with pytest.raises(ConfigError) as e:
        ConsentConfig.from_dict(data)
    return str(e.value)


def test_model_file_loads_with_defaults(config: ConsentConfig) -> None:
    assert config.policy_revision == "2026-11-01"
    assert config.prefix == "/_consent"
    assert config.cookie.name == "consent" and config.cookie.lifetime_days == 182
    assert config.cookie.same_site == "lax" and config.cookie.domain == ""
    assert config.languages == ("en", "sv")
    assert config.categories["necessary"].label == {"en": "Necessary", "sv": "Nödvändiga"}
    assert config.categories["analytics"].description == {"*": "Counts visits."}
    assert config.gpc_denied == frozenset({"marketing"})
    assert config.undeclared_cookies == "block" and config.csp == "enforce"


def test_buildable_in_python_without_a_file() -> None:
    config = ConsentConfig(**BASE)  # type: ignore[arg-type]
    assert config.optional_categories == ("analytics",)
    assert config.gpc_denied == frozenset()  # no marketing category: GPC denies nothing by default


def test_cookie_patterns_are_globs(config: ConsentConfig) -> None:
    assert config.category_for_cookie("_st_id.1.abc")[0] == "analytics"
    assert config.category_for_cookie("_st_ses")[0] == "analytics"
    assert config.category_for_cookie("_st_sesX") is None
    assert config.category_for_cookie("booking_session")[0] == "necessary"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"colour": "red"}, "colour: unknown key"),
        ({"categories": {"analytics": {"label": "A"}}}, "categories: Value error, a [categories.necessary]"),
        ({"languages": "en"}, "languages: Input should be a valid tuple"),
        ({"languages": ["english"]}, "languages: 'english' is not a language tag"),
        ({"cookie": {"lifetime_days": "long"}}, "cookie.lifetime_days"),
        ({"cookie": {"same_site": "sometimes"}}, "cookie.same_site"),
        ({"cookie": {"nme": "x"}}, "cookie.nme: unknown key"),
        ({"prefix": "_consent/"}, "prefix: '_consent/'"),
        ({"log": "mysql://x"}, "log: 'mysql://x'"),
        ({"allowed_origins": ["partner.example"]}, "allowed_origins[0]: 'partner.example' is not an origin"),
        ({"gpc_denies": ["ads"]}, "gpc_denies: 'ads' is not a category"),
        ({"csp": "sometimes"}, "csp:"),
        ({"retention": "3 eons"}, "retention: '3 eons' is not a duration"),
        ({"services": [{"name": "s", "category": "ads"}]}, "services[0].category: 'ads' is not a category"),
        (
            {"services": [{"name": "s", "category": "analytics", "cookies": [{"name": "*"}]}]},
            "services[0].cookies[0].name: '*' would match every cookie",
        ),
        (
            {"services": [{"name": "s", "category": "analytics", "cookies": [{"name": "a b"}]}]},
            "services[0].cookies[0].name: 'a b' cannot match a cookie name",
        ),
        (
            {
                "services": [
                    {"name": "s", "category": "analytics", "cookies": [{"name": "a", "lifetime": "forever"}]}
                ]
            },
            "services[0].cookies[0].lifetime: 'forever' is not a duration",
        ),
        (
            {"services": [{"name": "s", "category": "analytics", "origins": ["https://x.net/path"]}]},
            "services[0].origins[0]: 'https://x.net/path' is not an origin",
        ),
        (
            {"services": [{"name": "s", "category": "analytics"}, {"name": "s", "category": "analytics"}]},
            "services[1].name: 's' is declared twice",
        ),
        (
            {"services": [{"name": "s", "category": "analytics", "purpose": {"sv": 5}}]},
            "services[0].purpose.sv",
        ),
    ],
)
def test_each_bad_key_is_named(change: dict, expected: str) -> None:
    data = {**BASE, **change}
    if "categories" in change:
        data["categories"] = change["categories"]
    message = problems(data).replace("Value error, ", "")
    assert expected.replace("Value error, ", "") in message, message


def test_missing_required_keys_are_named() -> None:
    message = problems({"categories": BASE["categories"]})
    for key in ("policy_revision", "controller", "privacy_policy_url"):
        assert f"{key}: required key is missing" in message


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "consent.toml"
    path.write_text('policy_revision = "r1"\ncontroller = \n')
    with pytest.raises(ConfigError) as e:
        ConsentConfig.from_toml(path)
    assert str(path) in str(e.value) and "line 2" in str(e.value)


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        ConsentConfig.from_toml(tmp_path / "nope.toml")


def test_unquoted_date_revision_is_its_text(tmp_path: Path) -> None:
    path = tmp_path / "consent.toml"
    path.write_text(
        'policy_revision = 2026-11-01\ncontroller = "C"\nprivacy_policy_url = "/p"\n'
        '[categories.necessary]\nlabel = "N"\n'
    )
    assert ConsentConfig.from_toml(path).policy_revision == "2026-11-01"


def test_lifetimes_and_durations() -> None:
    assert parse_lifetime("30 minutes") == 1800
    assert parse_lifetime("1 year") == 366 * 86400
    assert parse_lifetime("13 months") == 13 * 31 * 86400
    assert parse_lifetime("session") is None
    assert parse_duration("3y") == 3 * 366 and parse_duration("6m") == 6 * 31 and parse_duration("10d") == 10
    assert parse_duration("2 weeks") == 14


def test_a_month_is_as_long_in_a_retention_period_as_in_a_cookie_lifetime() -> None:
    """Issue 13: "6m" was 6 x 31 days as a cookie lifetime and 6 x 30 as a retention period, so
    `log purge --older-than 6m` removed records younger than six calendar months (which last up to 184
    days). One parser: the longest reading of a month (and a year) for both."""
    for short, long in (("6m", "6 months"), ("13m", "13 months"), ("3y", "3 years"), ("90d", "90 days")):
        assert parse_duration(short) * 86400 == parse_lifetime(short) == parse_lifetime(long), short
    assert parse_duration("6m") >= 184 and parse_duration("1y") >= 366


def test_a_retention_period_shorter_than_a_day_is_refused() -> None:
    """ "12h" would be 0 days, which would purge every record."""
    with pytest.raises(ValueError, match="days, weeks, months or years"):
        parse_duration("12h")
    assert "retention: '1 minute': a retention period is counted in days" in problems(
        {**BASE, "retention": "1 minute"}
    )


def test_a_misspelt_text_key_is_a_config_error_naming_it(tmp_path: Path) -> None:
    """Issue 13: `[texts.sv] acept_all = ...` was accepted and never shown; like every other unknown
    key it now stops the config from loading, with the key's path."""
    path = tmp_path / "consent.toml"
    path.write_text(
        'policy_revision = "r1"\ncontroller = "C"\nprivacy_policy_url = "/p"\nlanguages = ["en", "sv"]\n'
        '[texts.sv]\naccept_all = "Godkänn alla"\nacept_all = "Godkänn"\n'
        '[categories.necessary]\nlabel = "N"\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as e:
        ConsentConfig.from_toml(path)
    assert "texts.sv.acept_all: unknown key" in str(e.value) and str(path) in str(e.value)
    assert "accept_all:" not in str(e.value).replace("acept_all", "")


def test_a_text_key_of_the_previous_release_still_loads_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 14 replaced the withdraw pill by the settings button: a consent.toml of the previous
    release that overrides `withdraw_button` must still start the site (upgrades lose nothing), and
    the operator learns why the text is no longer shown."""
    path = tmp_path / "consent.toml"
    path.write_text(
        'policy_revision = "r1"\ncontroller = "C"\nprivacy_policy_url = "/p"\nlanguages = ["en", "sv"]\n'
        '[texts.sv]\nwithdraw_button = "Återkalla"\n'
        '[categories.necessary]\nlabel = "N"\n',
        encoding="utf-8",
    )
    with caplog.at_level("WARNING", logger="consent_banner"):
        config = ConsentConfig.from_toml(path)
    assert config.texts["sv"]["withdraw_button"] == "Återkalla"
    assert "texts.sv.withdraw_button is no longer used" in caplog.text


def test_texts_for_a_language_not_configured_are_a_config_error() -> None:
    """Issue 13: a `[texts.<lang>]` table applies to a configured language, or to the configured
    languages of its primary subtag ([texts.sv] to sv-FI); any other would never be shown."""
    message = problems(
        {**BASE, "languages": ["en", "sv"], "texts": {"de": {"accept_all": "Alle akzeptieren"}}}
    )
    assert "texts.de: 'de' is not a configured language (languages: en, sv)" in message
    regional = {**BASE, "languages": ["en", "sv-FI"], "texts": {"sv": {"accept_all": "Godkänn alla"}}}
    assert ConsentConfig.from_dict(regional).texts["sv"]["accept_all"] == "Godkänn alla"
    every_key = ConsentConfig.from_dict({**BASE, "texts": {"en": {"placeholder": "x", "receipt_title": "y"}}})
    assert every_key.texts["en"]["receipt_title"] == "y"


def test_config_hash_changes_with_content() -> None:
    a = ConsentConfig(**BASE)  # type: ignore[arg-type]
    b = ConsentConfig(**{**BASE, "controller": "Other AB"})  # type: ignore[arg-type]
    assert a.config_hash != b.config_hash and len(a.config_hash) == 64


def test_the_readme_configuration_example_is_a_valid_configuration() -> None:
    """The README's consent.toml is what users copy: it must load as it stands."""
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## consent.toml\n", 1)[1].split("\n## ", 1)[0]
    example = re.findall(r"```toml\n(.*?)```", section, re.S)[0]  # the full example comes first
    config = ConsentConfig.from_dict(tomllib.loads(example))
    assert config.localize(config.services[0].purpose, "sv") == "Räknar besök"
    assert config.localize(config.services[0].purpose, "de") == "Counts visits"  # the default language


def test_the_readme_preset_example_loads_into_a_configuration() -> None:
    """The "Adding a service" example is pasted as it stands into a config that has its category."""
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n### Adding a service\n", 1)[1].split("\n### ", 1)[0]
    (example,) = re.findall(r"```toml\n(.*?)```", section, re.S)
    base = (
        'policy_revision = "r1"\ncontroller = "C"\nprivacy_policy_url = "/p"\n'
        '[categories.necessary]\nlabel = "N"\n[categories.statistics]\nlabel = "S"\n'
    )
    config = ConsentConfig.from_dict(tomllib.loads(base + example))
    (service,) = config.services
    assert service.name == "ga" and service.category == "statistics" and service.origins
