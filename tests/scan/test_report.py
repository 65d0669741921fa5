"""The report formats (consent_banner/scan/report.py): table for people, JSON and JUnit for CI."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from consent_banner.config import ConsentConfig
from consent_banner.scan.classify import findings_for
from consent_banner.scan.model import ScanReport
from consent_banner.scan.report import render

from .conftest import SITE, cookie, host, page


def report(config: ConsentConfig) -> ScanReport:
    pages = [
        page(
            "/",
            before={"cookies": [cookie("consent_csrf")]},
            accept={"hosts": [host("https://stats.example.net")]},
        ),
        page(
            "/deals?x=1",
            before={"cookies": [cookie("_ads", lifetime=86400)], "hosts": [host("https://fonts.example.io")]},
            reject={"hosts": [host("https://eu.ads.example.com", after=2)]},
        ),
    ]
    r = ScanReport(url=SITE + "/", config="consent.toml", started_at="2026-11-02T10:00:00+00:00")
    r.pages = pages
    r.skipped = [(SITE + "/report.pdf", "not a page (application/pdf)")]
    r.findings = findings_for(config, SITE, pages)
    return r


def test_table_lists_errors_first_with_evidence_and_a_page_summary(config: ConsentConfig) -> None:
    """R1, R2, R16, R5: each finding is one row (severity, requirement, page, subject) followed by
    its message and evidence; every page shows what it held in each state; skipped links are named."""
    text = render(report(config), "table")
    rows = [line.split(None, 3) for line in text.splitlines() if line.startswith(("ERROR ", "WARNING "))]
    assert rows[:3] == [
        ["ERROR", "R1", "/deals?x=1", "_ads (shop.example.com)"],
        ["ERROR", "R16", "/deals?x=1", "https://eu.ads.example.com"],
        ["WARNING", "R5", "/deals?x=1", "https://fonts.example.io"],
    ]
    assert {r[3] for r in rows[3:]} == {"booking", "cdn"}  # stale, site-wide
    assert "    marketing cookie _ads (service pixel) is stored before any decision" in text
    assert "    - before any decision: domain shop.example.com, path /, readable by scripts" in text
    assert any(line.startswith("/deals?x=1  200   1 cookie, 1 host") for line in text.splitlines())
    assert "skipped https://shop.example.com/report.pdf: not a page (application/pdf)" in text
    assert text.rstrip().endswith("2 errors, 3 warnings: the site breaks its own declaration")


def test_table_of_a_clean_scan_says_so(config: ConsentConfig) -> None:
    """R1: a scan without findings says the site keeps its declaration."""
    r = ScanReport(url=SITE + "/", config=None, started_at="")
    r.pages = [page("/")]
    text = render(r, "table")
    assert "No findings" in text and text.rstrip().endswith("0 errors, 0 warnings")
    assert r.exit_code == 0


def test_json_carries_findings_pages_states_and_exit_code(config: ConsentConfig) -> None:
    """R5: the JSON report is the whole scan, machine-readable."""
    r = report(config)
    data = json.loads(render(r, "json"))
    assert data["summary"] == {"pages": 2, "errors": 2, "warnings": 3, "exit_code": 1}
    assert data["findings"][0]["kind"] == "cookie-before-decision"
    assert isinstance(data["findings"][0]["evidence"], list)
    deals = data["pages"][1]
    assert deals["path"] == "/deals?x=1"
    assert set(deals["states"]) == {"before", "reject", "accept"}
    assert deals["states"]["before"]["cookies"][0]["name"] == "_ads"
    assert deals["states"]["reject"]["hosts"][0]["after_decision"] == 2
    assert data["skipped"] == [{"url": SITE + "/report.pdf", "reason": "not a page (application/pdf)"}]
    assert "suggestions" not in data


def test_junit_fails_the_checks_with_errors_and_keeps_warnings_as_output(config: ConsentConfig) -> None:
    """R1, R16, R5: one suite per page and one for the site; a check with an error finding has one
    <failure>, a check with only warnings passes with them in <system-out>."""
    root = ET.fromstring(render(report(config), "junit").split("\n", 1)[1])
    assert root.tag == "testsuites"
    suites = {s.get("name"): s for s in root}
    assert list(suites) == ["/", "/deals?x=1", "(site)"]
    deals = {c.get("name"): c for c in suites["/deals?x=1"]}
    assert len(deals) == 5
    before = deals["R1/R2 before any decision"].findall("failure")
    assert len(before) == 1 and "_ads (shop.example.com)" in (before[0].get("message") or "")
    assert deals["R16 after Reject all"].find("failure") is not None
    declared = deals["R5 declared"]
    assert declared.find("failure") is None
    assert "https://fonts.example.io" in (declared.findtext("system-out") or "")
    assert suites["/deals?x=1"].get("failures") == "2"
    assert suites["/"].get("failures") == "0"
    assert root.get("failures") == "2" and root.get("tests") == "11"
