"""The scanner under the opt-out model (issue 17): what runs before a decision is allowed; Global
Privacy Control and "Do Not Sell or Share" must turn off what they deny (`gpc_denies`: marketing
here). Observations built by hand, judged without a browser; the report and the --header option."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from consent_banner.config import ConsentConfig
from consent_banner.scan import scan
from consent_banner.scan.classify import findings_for
from consent_banner.scan.model import (
    OPT_OUT_STATES,
    Finding,
    PageResult,
    ScanReport,
    State,
    StateResult,
    StorageSeen,
)
from consent_banner.scan.report import render

from .conftest import CONFIG, SITE, cookie, host


def kinds(findings: list[Finding]) -> set[tuple[str, str, str, str]]:
    return {(f.kind, f.severity, f.requirement, f.subject) for f in findings if f.kind != "stale-declaration"}


def page(path: str = "/", **states: dict[str, list[Any]]) -> PageResult:
    """page("/", before={...}, gpc={...}, opt_out={...}): the three opt-out states, missing ones empty."""
    built: dict[State, StateResult] = {}
    for name in OPT_OUT_STATES:
        parts = states.get(name, {})
        result = StateResult(name)
        result.cookies = list(parts.get("cookies", []))
        result.storage = [
            s if isinstance(s, StorageSeen) else StorageSeen("localStorage", s)
            for s in parts.get("storage", [])
        ]
        result.hosts = {h.origin: h for h in parts.get("hosts", [])}
        result.decision_error = parts.get("error", [None])[0]
        built[name] = result
    return PageResult(SITE + path, path, 200, built)


TRACKERS_BEFORE = {
    "cookies": [cookie("_st_ses", lifetime=1700), cookie("_ads", lifetime=80 * 86400)],
    "hosts": [host(SITE), host("https://eu.ads.example.com"), host("https://stats.example.net")],
    "storage": ["_st_id.local"],
}


def test_optional_trackers_before_a_decision_are_the_model_not_a_finding(config: ConsentConfig) -> None:
    """R1 and R2 hold under opt-in only: the same observations are errors there, nothing under opt-out."""
    seen = [page("/", before=TRACKERS_BEFORE)]
    assert kinds(findings_for(config, SITE, seen, "opt-out")) == set()
    assert {k[0] for k in kinds(findings_for(config, SITE, seen, "opt-in"))} == {
        "cookie-before-decision",
        "host-before-decision",
        "storage-before-decision",
    }


def test_what_gpc_denies_seen_with_the_signal_is_an_error_and_the_rest_may_run(config: ConsentConfig) -> None:
    """R26: with GPC, a marketing cookie, key and host are errors; analytics (not denied) is not."""
    seen = [
        page(
            "/shop",
            gpc={
                "cookies": [cookie("_ads", lifetime=80 * 86400), cookie("_st_ses", lifetime=1700)],
                "hosts": [host("https://eu.ads.example.com"), host("https://stats.example.net")],
                "storage": ["_ads.local", "_st_id.local"],
            },
        )
    ]
    cfg = ConsentConfig.from_dict(
        {
            **CONFIG,
            "services": [
                *CONFIG["services"][:2],
                {
                    "name": "pixel",
                    "category": "marketing",
                    "origins": ["https://*.ads.example.com"],
                    "cookies": [{"name": "_ads*", "lifetime": "90 days"}],
                },
            ],
        }
    )
    assert kinds(findings_for(cfg, SITE, seen, "opt-out")) == {
        ("cookie-despite-gpc", "error", "R26", "_ads (shop.example.com)"),
        ("host-despite-gpc", "error", "R26", "https://eu.ads.example.com"),
        ("storage-despite-gpc", "error", "R26", "localStorage._ads.local"),
    }


def test_after_do_not_sell_nothing_denied_is_set_or_fetched(config: ConsentConfig) -> None:
    """R29: after "Do Not Sell or Share", a marketing cookie that appears, one of the site's own
    host that survives (the gate expires those) and a marketing host contacted are errors; another
    host's cookie from before, which the site cannot expire, is a warning; requests before the
    choice, and analytics after it, are allowed."""
    seen = [
        page(
            "/",
            opt_out={
                "cookies": [
                    cookie("_ads", lifetime=80 * 86400, before=True),  # the site's own: should be expired
                    cookie("_ads", lifetime=80 * 86400, before=True, domain=".ads.example.com"),
                    cookie("_st_ses", lifetime=1700, before=True),
                ],
                "hosts": [
                    host("https://eu.ads.example.com", before=2, after=1),
                    host("https://us.ads.example.com", before=3, after=0),
                    host("https://stats.example.net", before=1, after=4),
                ],
            },
        ),
        page("/new", opt_out={"cookies": [cookie("_ads", lifetime=80 * 86400)]}),
    ]
    found = findings_for(config, SITE, seen, "opt-out")
    assert kinds(found) == {
        ("cookie-after-opt-out", "error", "R29", "_ads (shop.example.com)"),
        ("cookie-after-opt-out", "warning", "R29", "_ads (.ads.example.com)"),
        ("host-after-opt-out", "error", "R29", "https://eu.ads.example.com"),
    }
    by_page = {(f.page, f.severity) for f in found if f.kind == "cookie-after-opt-out"}
    assert by_page == {("/", "error"), ("/", "warning"), ("/new", "error")}
    new = next(f for f in found if f.page == "/new")
    assert 'appears after "Do Not Sell or Share"' in new.message


def test_keys_after_do_not_sell_new_ones_are_errors_old_ones_warnings(config: ConsentConfig) -> None:
    """R29: a marketing storage key written after the choice is an error; one from before, a warning."""
    cfg = ConsentConfig.from_dict(
        {
            **CONFIG,
            "services": [
                {
                    "name": "pixel",
                    "category": "marketing",
                    "origins": ["https://*.ads.example.com"],
                    "cookies": [{"name": "_ads*", "lifetime": "90 days"}],
                }
            ],
        }
    )
    seen = [
        page(
            "/",
            opt_out={
                "storage": [
                    StorageSeen("localStorage", "_ads.old", True),
                    StorageSeen("localStorage", "_ads.new"),
                ]
            },
        )
    ]
    assert kinds(findings_for(cfg, SITE, seen, "opt-out")) == {
        ("storage-after-opt-out", "warning", "R29", "localStorage._ads.old"),
        ("storage-after-opt-out", "error", "R29", "localStorage._ads.new"),
    }


def test_a_do_not_sell_that_was_not_recorded_is_named(config: ConsentConfig) -> None:
    """R7: the choice that could not be recorded is called by its name, not "Accept all"."""
    seen = [page("/", opt_out={"error": ["POST /_consent answered HTTP 503"]})]
    [failed] = [f for f in findings_for(config, SITE, seen, "opt-out") if f.kind == "decision-failed"]
    assert failed.subject == "Do Not Sell or Share" and failed.severity == "error"


def report(config: ConsentConfig) -> ScanReport:
    seen = [page("/", gpc={"hosts": [host("https://eu.ads.example.com")]})]
    out = ScanReport(url=SITE + "/", config="consent.toml", started_at="2026-12-01T00:00:00+00:00")
    out.model, out.region, out.headers = "opt-out", "US-CA", ("CF-IPCountry", "CF-Region-Code")
    out.pages = seen
    out.findings = findings_for(config, SITE, seen, "opt-out")
    return out


def test_the_report_says_the_model_and_the_opt_out_states(config: ConsentConfig) -> None:
    text = render(report(config), "table")
    assert "3 states each; model opt-out as US-CA (sent CF-IPCountry, CF-Region-Code)" in text
    header = next(line for line in text.splitlines() if line.startswith("PAGE"))
    assert "WITH GLOBAL PRIVACY CONTROL" in header and 'AFTER "DO NOT SELL OR SHARE"' in header
    assert "REJECT" not in header
    data = json.loads(render(report(config), "json"))
    assert (data["model"], data["region"]) == ("opt-out", "US-CA")
    assert data["headers"] == ["CF-IPCountry", "CF-Region-Code"]  # names only: a value may be a secret
    junit = render(report(config), "junit")
    assert 'name="R26 Global Privacy Control honoured"' in junit and "host-despite-gpc" in junit
    assert "R16 after Reject all" not in junit


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(scan, list(args))
    return result.exit_code, result.output


def test_help_documents_the_header_option() -> None:
    code, out = invoke("--help")
    assert code == 0 and "--header NAME=VALUE" in out


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("CF-IPCountry", "write NAME=VALUE"),
        ("CF IPCountry=US", "write NAME=VALUE"),
        ("=US", "write NAME=VALUE"),
        ("X-Region=US\r\nSet-Cookie: a=b", "control characters"),
        ("X-Region=" + "A" * 2000, "over 1024"),
        ("Cookie=consent=forged", "the browser's to send"),
        ("Sec-GPC=1", "GPC is scanned on its own"),
    ],
)
def test_a_bad_header_is_refused_before_anything_runs(tmp_path: Any, value: str, says: str) -> None:
    """Exit 2 naming --header: no browser starts (the browser path here does not exist)."""
    config = tmp_path / "consent.toml"
    config.write_text("")
    code, out = invoke(
        "http://127.0.0.1:9/", "--config", str(config), "--header", value, "--browser-path", "/nonexistent"
    )
    assert code == 2, out
    assert "--header" in out and says in out
    assert "\r" not in out


def test_a_header_given_twice_is_refused(tmp_path: Any) -> None:
    config = tmp_path / "consent.toml"
    config.write_text("")
    code, out = invoke(
        "http://127.0.0.1:9/",
        "--config",
        str(config),
        "--header",
        "CF-IPCountry=US",
        "--header",
        "cf-ipcountry=SE",
    )
    assert code == 2 and "given twice" in out
