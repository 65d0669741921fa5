"""The auditor's view and the visitor's receipt on the demo (R19-R22, R24, R25)."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from typing import TYPE_CHECKING

from playwright.sync_api import expect

if TYPE_CHECKING:
    from demo_support import RunningDemo, Visitor

pytest_plugins = ("demo_support",)


def decide(v: Visitor, button: str, path: str = "/") -> str:
    v.goto(path)
    v.click(button)
    expect(v.page.locator("#cb-banner")).to_have_count(0)
    return v.state()["consent_id"]


def test_audit_view_needs_credentials_and_shows_verifies_and_exports_this_run(
    visitor: Callable[..., Visitor], new_context: Callable[..., object], demo: RunningDemo
) -> None:
    """R25, R19, R20, R21, R22: without credentials the audit view answers 401; an auditor who logs
    in (HTTP Basic) finds the decisions of this run with the banner version each visitor saw, a
    rendered chart, an export that downloads and parses (CSV and NDJSON) with no full IP address,
    and the hash chain reported intact."""
    accepted = decide(visitor(), "Accept all")
    rejected = decide(visitor(), "Avvisa alla", "/sv/")

    anonymous = visitor()
    audit = f"{demo.url}{demo.prefix}/audit/"
    for url in (audit, audit + "records", audit + "export.csv"):
        assert anonymous.context.request.get(url).status == 401, url
    wrong = anonymous.context.request.get(audit, headers={"authorization": "Basic YXVkaXRvcjp3cm9uZw=="})
    assert wrong.status == 401

    auditor = visitor(http_credentials={"username": demo.audit_user, "password": demo.audit_password})
    page = auditor.page
    response = page.goto(audit)
    assert response is not None and response.status == 200
    chart = page.locator("svg[role='img']").first
    expect(chart).to_be_visible()
    box = chart.bounding_box()
    assert box is not None and box["width"] > 100 and box["height"] > 50
    assert page.locator("svg[role='img'] rect").count() >= 1  # bars were drawn

    page.goto(f"{audit}records?consent_id={accepted}")
    expect(page.locator("main")).to_contain_text("accept_all")
    page.goto(f"{audit}records?consent_id={rejected}")
    expect(page.locator("main")).to_contain_text("reject_all")

    with page.expect_download() as download_info:
        page.evaluate(
            "(href) => { const a = document.createElement('a'); a.href = href; a.download = '';"
            " document.body.appendChild(a); a.click(); }",
            audit + "export.csv",
        )
    download = download_info.value
    assert download.suggested_filename.endswith(".csv")
    with open(download.path(), encoding="utf-8", newline="") as export:
        rows = list(csv.DictReader(export))
    ours = {r["consent_id"]: r for r in rows if r["consent_id"] in (accepted, rejected)}
    assert set(ours) == {accepted, rejected}, [r["consent_id"] for r in rows]
    assert ours[accepted]["action"] == "accept_all" and ours[rejected]["action"] == "reject_all"
    assert ours[rejected]["language"] == "sv"
    for row in ours.values():
        assert row["ip"] in ("127.0.0.0", "", None), row["ip"]  # truncated to /24, never the full IP
        assert row["version_id"], "the record does not cite the banner version shown"

    ndjson = auditor.context.request.get(audit + "export.ndjson")
    assert ndjson.ok
    lines = [json.loads(line) for line in ndjson.text().splitlines() if line.strip()]
    records = [r for r in lines if "type" not in r]  # the typed lines (header, checkpoints, head) first
    assert lines[0]["type"] == "header" and any(r.get("type") == "head" for r in lines)
    assert {accepted, rejected} <= {r["consent_id"] for r in records}
    assert [r["seq"] for r in records] == sorted(r["seq"] for r in records)
    assert all(r["prev_hash"] for r in records[1:])
    version = auditor.context.request.get(f"{audit}versions/{ours[rejected]['version_id']}")
    assert version.ok and "Avvisa alla" in version.text()  # the exact Swedish texts shown

    page.goto(audit + "chain")
    expect(page.locator("p.ok[role='status']")).to_be_visible()
    expect(page.locator("p.bad")).to_have_count(0)


def test_receipt_lists_exactly_this_visitors_records(
    visitor: Callable[..., Visitor], demo: RunningDemo
) -> None:
    """R24, R19: each visitor's receipt lists all of their own decisions, in order, and none of
    anybody else's; a visitor without a decision has no records; the HTML receipt shows them too."""
    a = visitor()
    a_id = decide(a, "Accept all")
    a.goto("/privacy")
    a.page.locator("[data-cb-settings]").click()
    a.page.locator("#cb-dialog").get_by_role("button", name="Reject all").click()
    a.wait_until("window.consentBanner.get().categories.length === 1")
    b = visitor()
    b_id = decide(b, "Reject all")
    assert a_id != b_id

    a_records = a.receipt()
    assert [r["action"] for r in a_records] == ["accept_all", "withdraw"], a_records
    assert {r["consent_id"] for r in a_records} == {a_id}
    b_records = b.receipt()
    assert [r["action"] for r in b_records] == ["reject_all"] and b_records[0]["consent_id"] == b_id

    nobody = visitor()
    nobody.goto("/")
    assert nobody.receipt() == []

    a.page.goto(f"{demo.url}{demo.prefix}/receipt")
    text = a.page.locator("body").inner_text()
    assert a_id in text and b_id not in text
