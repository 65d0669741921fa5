"""--suggest (consent_banner/scan/suggest.py): TOML proposals from the Open Cookie Database."""

from __future__ import annotations

import tomllib
from importlib import resources

from consent_banner.config import ConsentConfig
from consent_banner.scan.suggest import database, lifetime_text, map_category, suggest

from .conftest import CONFIG, SITE, cookie, host, page


def test_database_is_shipped_with_its_licence_and_source() -> None:
    """The Open Cookie Database ships as package data, Apache-2.0, with its source named."""
    data = resources.files("consent_banner").joinpath("data")
    assert "Apache License" in data.joinpath("LICENSE").read_text()
    readme = data.joinpath("README.md").read_text()
    assert "Apache" in readme and "jkwakman/Open-Cookie-Database" in readme
    db = database()
    assert len(db.exact) + len(db.prefixes) > 2000


def test_lookup_exact_then_longest_wildcard_prefix() -> None:
    db = database()
    ga = db.lookup("_ga")
    assert ga is not None and ga.platform == "Google Analytics" and ga.category == "Analytics"
    stream = db.lookup("_ga_ABC123")
    assert stream is not None and stream.wildcard and stream.name == "_ga_"
    assert db.lookup("certainly_not_a_known_cookie_42") is None


def test_categories_map_onto_the_config_by_name_or_label() -> None:
    config = ConsentConfig.from_dict(
        {
            **CONFIG,
            "categories": {
                "necessary": {"label": "Necessary"},
                "statistics": {"label": "Statistik"},
                "ads": {"label": {"en": "Advertising"}},
            },
            "services": [],
        }
    )
    assert map_category(config, "Analytics") == "statistics"
    assert map_category(config, "Marketing") == "ads"
    assert map_category(config, "Security") == "necessary"
    assert map_category(config, "Personalization") is None


def test_lifetimes_follow_the_database_unless_the_browser_showed_longer() -> None:
    assert lifetime_text("2 years", 300 * 86400) == ("2 years", None)
    assert lifetime_text("Session", None) == ("session", None)
    assert lifetime_text("End of session (browser)", None) == ("session", None)
    text, note = lifetime_text("1 day", 400 * 86400.5)
    assert text == "401 days" and note is not None and "'1 day'" in note
    assert lifetime_text("Unknown", 3600) == ("1 days", "observed lifetime; the database says 'Unknown'")


def test_suggestions_are_valid_toml_that_the_config_accepts(config: ConsentConfig) -> None:
    """Proposals for the undeclared cookies and hosts a scan found, one service per platform,
    in this config's categories, with provider, purpose and lifetime from the database; what the
    database does not know is proposed in the strictest optional category, never necessary; the
    merged config validates."""
    pages = [
        page(
            "/",
            before={
                "cookies": [cookie("lb_sticky", http_only=True)],
                "hosts": [host("https://unknown.example.io")],
            },
            accept={
                "cookies": [
                    cookie("_ga", lifetime=700 * 86400),
                    cookie("_ga_X1Y2", lifetime=700 * 86400),
                    cookie("_st_ses", lifetime=60),
                    cookie("optimizelyEndUserId", lifetime=150 * 86400),
                ],
                "hosts": [host("https://www.googletagmanager.com"), host("https://stats.example.net")],
            },
        )
    ]
    text = suggest(config, SITE, pages)
    services = tomllib.loads(text)["services"]
    by_name = {s["name"]: s for s in services}
    # what the catalog knows (cookies and the tag host) becomes its preset, nothing written out
    assert by_name["google-analytics"] == {
        "name": "google-analytics",
        "preset": "google-analytics",
        "category": "analytics",
    }
    assert "# seen: _ga, _ga_X1Y2, https://www.googletagmanager.com: the preset google-analytics" in text
    optimizely = by_name["optimizely"]  # the database's platform, provider, retention
    assert optimizely["category"] == "marketing" and optimizely["provider"] == "Optimizely"
    seen = [(c["name"], c["lifetime"]) for c in optimizely["cookies"]]
    assert seen == [("optimizelyEndUserId", "6 months")]
    unknown = [s for s in services if s["name"] not in ("google-analytics", "optimizely")]
    assert {s["category"] for s in unknown} == {"marketing"}
    assert "# lb_sticky: not in the Open Cookie Database" in text
    assert any(s.get("origins") == ["https://unknown.example.io"] for s in services)
    assert "_st_ses" not in text and "stats.example.net" not in text  # declared already
    merged = ConsentConfig.from_dict({**CONFIG, "services": [*CONFIG["services"], *services]})
    assert merged.category_for_cookie("_ga_X1Y2")[0] == "analytics"  # type: ignore[index]
    assert "https://www.googletagmanager.com" in merged.services_by_name["google-analytics"].origins


def test_nothing_undeclared_means_nothing_to_suggest(config: ConsentConfig) -> None:
    assert suggest(config, SITE, [page("/", before={"cookies": [cookie("consent")]})]) == ""
