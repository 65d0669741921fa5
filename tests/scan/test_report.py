"""The report formats (consent_banner/scan/report.py): table for people, JSON and JUnit for CI."""

from __future__ import annotations

import json
import re
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
    """The table: each finding is one row (severity, requirement, page, subject) followed by
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
    """The table of a scan without findings says the site keeps its declaration."""
    r = ScanReport(url=SITE + "/", config=None, started_at="")
    r.pages = [page("/")]
    text = render(r, "table")
    assert "No findings" in text and text.rstrip().endswith("0 errors, 0 warnings")
    assert r.exit_code == 0


def test_json_carries_findings_pages_states_and_exit_code(config: ConsentConfig) -> None:
    """The JSON report is the whole scan, machine-readable."""
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
    """JUnit: one suite per page and one for the site; a check with an error finding has one
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


# --- hostile pages (issue 12, item 10) ---------------------------------------------------------------

# A storage key and a path as a page may choose them: terminal escapes (hide a line, set the
# window title, plant a link), an 8-bit CSI, DEL, NUL (which XML 1.0 cannot hold at all), a line
# feed that would start a fake row, and a right-to-left override.
HOSTILE_KEY = (
    "k\x1b[2K\x1b]0;owned\x07\x1b]8;;https://evil.example/\x1b\\x\x9b1A\x7f\x00\nERROR R1 / fake\u202e"
)
HOSTILE_PATH = "/p\x1b[8m\x0c"
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def hostile_report(config: ConsentConfig) -> ScanReport:
    pages = [page(HOSTILE_PATH, before={"storage": [HOSTILE_KEY]}, reject={"storage": [HOSTILE_KEY]})]
    r = ScanReport(url=SITE + "/", config="consent.toml", started_at="")
    r.pages = pages
    r.skipped = [(SITE + "/x\x1b]0;t\x07", "not a page (\x1b[31mred)")]
    r.findings = findings_for(config, SITE, pages)
    assert r.findings, "the hostile key must produce findings for the reports to show"
    return r


def test_junit_from_a_hostile_page_is_valid_xml_that_names_the_key(config: ConsentConfig) -> None:
    """Item 10: a page's localStorage key made the JUnit file invalid XML (a CI system then drops
    the whole report). Every control character is written as \\uXXXX, so the file parses and
    the finding still names the key."""
    text = render(hostile_report(config), "junit")
    root = ET.fromstring(text.split("\n", 1)[1])
    suites = {s.get("name"): s for s in root}
    assert "/p\\u001b[8m\\u000c" in suites
    failures = [f for case in root.iter("testcase") for f in case.findall("failure")]
    assert failures and any("k\\u001b[2K\\u001b]0;owned\\u0007" in (f.text or "") for f in failures)
    assert not RAW_CONTROL.search(text.replace("\n", ""))


def test_table_and_json_from_a_hostile_page_cannot_drive_the_terminal(config: ConsentConfig) -> None:
    """Item 10: the table escapes every control character (a line feed in a key cannot forge a
    row); the JSON report is valid JSON holding the exact key, with DEL and C1 escaped too."""
    r = hostile_report(config)
    table = render(r, "table")
    assert not RAW_CONTROL.search(table), repr(table)
    assert not any(line.startswith("ERROR R1 / fake") for line in table.splitlines())
    assert "\\u000aERROR R1 / fake\\u202e" in table
    assert "skipped https://shop.example.com/x\\u001b]0;t\\u0007: not a page (\\u001b[31mred)" in table
    text = render(r, "json")
    assert not RAW_CONTROL.search(text.replace("\n", "")), repr(text)
    data = json.loads(text)
    assert data["pages"][0]["path"] == HOSTILE_PATH
    assert data["pages"][0]["states"]["before"]["storage"][0]["key"] == HOSTILE_KEY


def test_suggestions_for_a_hostile_key_are_valid_toml_that_add_nothing_else(config: ConsentConfig) -> None:
    """Item 10: a storage key with a line feed could end the reviewer's comment and add its own
    `[[services]]` lines to the proposed TOML; DEL made it invalid TOML."""
    import tomllib

    from consent_banner.scan.suggest import suggest

    pages = [page("/", before={"storage": [HOSTILE_KEY]})]
    text = suggest(config, SITE, pages)
    assert not RAW_CONTROL.search(text.replace("\n", "")), repr(text)
    data = tomllib.loads(text)
    assert len(data["services"]) == 1
    assert data["services"][0]["cookies"][0]["name"] == HOSTILE_KEY
