"""Render a `ScanReport` as a readable table, JSON, or JUnit XML for CI.

JUnit layout: one `<testsuite>` per crawled page with one `<testcase>` per check ("R1/R2 before any
decision", "R16 after Reject all", "R5 declared", "R5 lifetime", "R7 decision"), plus a "site" suite
for the stale-declaration check. Each error finding is a `<failure>` of its check; JUnit has no
warnings, so warnings are written to the check's `<system-out>` and the check still passes.

Every text that comes from the site (paths, cookie names, storage keys, hosts, evidence) is written
with its control characters escaped (`display.escape_controls`): a page's storage key must neither
drive the terminal that shows the table nor make the JUnit file invalid XML.
"""

from __future__ import annotations

import json
import shutil
import textwrap
import xml.etree.ElementTree as ET

from ..display import escape_controls
from .model import STATE_LABELS, STATES_BY_MODEL, Finding, PageResult, ScanReport, State

CHECKS: dict[str, tuple[str, ...]] = {
    "R1/R2 before any decision": (
        "cookie-before-decision",
        "storage-before-decision",
        "host-before-decision",
    ),
    "R16 after Reject all": ("cookie-after-reject", "storage-after-reject", "host-after-reject"),
    "R5 declared": ("undeclared-cookie", "undeclared-storage", "undeclared-host"),
    "R5 lifetime as declared": ("lifetime-exceeded",),
    "R7 decision recorded": ("decision-failed",),
}
# Where the site gives the scanner the opt-out model (US state laws), what runs before a decision is
# no finding; Global Privacy Control and "Do Not Sell or Share" must turn off what they deny.
OPT_OUT_CHECKS: dict[str, tuple[str, ...]] = {
    "R26 Global Privacy Control honoured": ("cookie-despite-gpc", "storage-despite-gpc", "host-despite-gpc"),
    "R29 Do Not Sell or Share honoured": (
        "cookie-after-opt-out",
        "storage-after-opt-out",
        "host-after-opt-out",
    ),
    **{k: v for k, v in CHECKS.items() if k.startswith(("R5", "R7"))},
}
CHECKS_BY_MODEL = {"opt-in": CHECKS, "opt-out": OPT_OUT_CHECKS}
SITE_CHECKS: dict[str, tuple[str, ...]] = {"R5 declarations in use": ("stale-declaration",)}


def render(report: ScanReport, fmt: str) -> str:
    if fmt == "json":
        # JSON escapes C0 itself; DEL, C1 and bidi overrides get the same \uXXXX spelling here.
        text = json.dumps(report.to_json(), indent=2, ensure_ascii=False)
        return escape_controls(text, newlines=True) + "\n"
    if fmt == "junit":
        return junit(report)
    return table(report)


# --- table ----------------------------------------------------------------------------------------


def _columns(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def _state_summary(page: PageResult, state: State) -> str:
    s = page.states.get(state)
    if s is None:
        return "-"
    if s.decision_error:
        return "decision failed"
    cookies, hosts = len(s.cookies), len(s.hosts)
    keys = f", {len(s.storage)} keys" if s.storage else ""
    return f"{cookies} cookie{'s' * (cookies != 1)}, {hosts} host{'s' * (hosts != 1)}{keys}"


def table(report: ScanReport, width: int | None = None) -> str:
    """The report for a person: findings, errors first, then what each page held in each state."""
    width = width or max(80, min(shutil.get_terminal_size((120, 24)).columns, 160))
    errors, warnings = len(report.errors), len(report.warnings)
    states = STATES_BY_MODEL.get(report.model, STATES_BY_MODEL["opt-in"])
    seen_as = f" as {escape_controls(report.region)}" if report.region else ""
    sent = f" (sent {escape_controls(', '.join(report.headers))})" if report.headers else ""
    lines = [
        f"consent-banner scan of {escape_controls(report.url)}",
        f"config {escape_controls(report.config or '(given in Python)')}; {len(report.pages)} page(s), "
        f"{len(states)} states each; model {escape_controls(report.model)}{seen_as}{sent}",
        "",
    ]
    ordered = sorted(report.findings, key=lambda f: (f.severity != "error", report.findings.index(f)))
    if ordered:
        rows = [["SEVERITY", "REQ", "PAGE", "SUBJECT"]]
        rows += [
            [f.severity.upper(), f.requirement, *map(escape_controls, (f.page or "(site)", f.subject))]
            for f in ordered
        ]
        header, *body = _columns(rows)
        lines.append(header)
        for line, f in zip(body, ordered, strict=True):
            lines.append(line)
            indent = " " * 4
            message = escape_controls(f.message)
            lines += textwrap.wrap(message, width, initial_indent=indent, subsequent_indent=indent)
            for e in f.evidence:
                lines += textwrap.wrap(
                    escape_controls(e),
                    width,
                    initial_indent=indent + "- ",
                    subsequent_indent=indent + "  ",
                    break_on_hyphens=False,
                )
        lines.append("")
    else:
        lines += ["No findings: the site keeps the promises its consent.toml makes.", ""]
    rows = [["PAGE", "HTTP", *(STATE_LABELS[s].upper() for s in states)]]
    rows += [
        [escape_controls(p.path), str(p.status), *(_state_summary(p, s) for s in states)]
        for p in report.pages
    ]
    lines += _columns(rows)
    for url, why in report.skipped:
        lines.append(f"skipped {escape_controls(url)}: {escape_controls(why)}")
    lines += [
        "",
        f"{errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)}"
        + (": the site breaks its own declaration" if errors else ""),
    ]
    return "\n".join(lines) + "\n"


# --- JUnit ----------------------------------------------------------------------------------------


def _case(suite: ET.Element, classname: str, name: str, findings: list[Finding]) -> bool:
    """One check as a testcase: a single <failure> listing its errors (JUnit readers expect at most
    one per case), warnings in <system-out>. True when it failed."""
    case = ET.SubElement(suite, "testcase", classname=escape_controls(classname), name=name)

    def text(f: Finding) -> str:
        head = escape_controls(f"{f.severity} {f.requirement} {f.subject}: {f.message}")
        return head + "\n" + "\n".join(f"- {escape_controls(e)}" for e in f.evidence)

    errors = [f for f in findings if f.severity == "error"]
    warnings = [f for f in findings if f.severity != "error"]
    if errors:
        subjects = escape_controls(", ".join(f.subject for f in errors))
        failure = ET.SubElement(
            case,
            "failure",
            message=f"{len(errors)} finding(s): {subjects}",
            type=" ".join(dict.fromkeys(f.kind for f in errors)),
        )
        failure.text = "\n\n".join(text(f) for f in errors)
    if warnings:
        ET.SubElement(case, "system-out").text = "\n\n".join(text(f) for f in warnings)
    return bool(errors)


def junit(report: ScanReport) -> str:
    root = ET.Element("testsuites", name="consent-banner scan", tests="0", failures="0")
    total_tests = total_failures = 0
    groups: list[tuple[str, dict[str, tuple[str, ...]], list[Finding]]] = [
        (p.path, CHECKS_BY_MODEL.get(report.model, CHECKS), [f for f in report.findings if f.page == p.path])
        for p in report.pages
    ]
    groups.append(("(site)", SITE_CHECKS, [f for f in report.findings if f.page is None]))
    for name, checks, findings in groups:
        suite = ET.SubElement(root, "testsuite", name=escape_controls(name), tests=str(len(checks)))
        failed = 0
        for check, kinds in checks.items():
            failed += _case(suite, name, check, [x for x in findings if x.kind in kinds])
        suite.set("failures", str(failed))
        suite.set("errors", "0")
        total_tests += len(checks)
        total_failures += failed
    root.set("tests", str(total_tests))
    root.set("failures", str(total_failures))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
