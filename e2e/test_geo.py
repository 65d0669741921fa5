"""Jurisdictions in Chromium (issue 17): the demo as a US controller (server/consent-us.toml, [geo]),
visited as Sweden, as California without and with GPC, as California then "Do Not Sell or Share", and
with no region header. The region headers are the ones Cloudflare sets (CF-IPCountry, CF-Region-Code),
sent here by the browser itself, as a visitor could (see the README: the edge must overwrite them).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from playwright.sync_api import BrowserContext, expect

if TYPE_CHECKING:
    from demo_support import RunningDemo, Visitor

pytest_plugins = ("demo_support",)

CALIFORNIA = {"CF-IPCountry": "US", "CF-Region-Code": "CA"}
SWEDEN = {"CF-IPCountry": "SE"}
GPC = {"Sec-GPC": "1"}
DNS = "Do Not Sell or Share My Personal Information"


@pytest.fixture(scope="module")
def us_demo() -> Iterator[RunningDemo]:
    """The demo with its US configuration, on free ports, its own log in a temporary directory."""
    from demo_support import RunningDemo  # registered as a plugin by now (see demo_support's docstring)

    from server.app import US_CONFIG, Demo

    with tempfile.TemporaryDirectory(prefix="consent-demo-us-") as tmp:
        demo = Demo.prepare("127.0.0.1", 0, US_CONFIG, workdir=Path(tmp)).start()
        try:
            user, password = os.environ["CONSENT_AUDIT_USER"], os.environ["CONSENT_AUDIT_PASSWORD"]
            yield RunningDemo(demo, Path(tmp), user, password)
        finally:
            demo.join()


@pytest.fixture
def us_visitor(new_context: Callable[..., BrowserContext], us_demo: RunningDemo) -> Callable[..., Visitor]:
    """A visitor of the US demo whose browser sends `headers` (the region, GPC) on every request."""
    from demo_support import Visitor

    def make(headers: dict[str, str] | None = None, **kwargs: Any) -> Visitor:
        context = new_context(extra_http_headers=headers or {}, **kwargs)
        return Visitor(us_demo, context, context.new_page())

    return make


def test_sweden_gets_the_opt_in_banner_and_nothing_runs(
    us_visitor: Callable[..., Visitor], us_demo: RunningDemo
) -> None:
    """R1, R2: under opt-in nothing optional runs before a decision, whatever else the site configures."""
    v = us_visitor(SWEDEN)
    response = v.goto("/")
    assert "CF-IPCountry" in response.headers["vary"]
    expect(v.page.locator("#cb-banner")).to_be_visible()
    expect(v.page.locator("[data-cb-notice]")).to_have_count(0)
    expect(v.page.locator("#cb-banner").get_by_role("button", name="Accept all")).to_be_visible()
    v.settle()
    assert v.third_party_requests() == [] and v.optional_cookies() == set()
    state = v.state()
    assert (state["region"], state["model"], state["decided"]) == ("SE", "opt-in", False)
    calls = v.consent_calls()
    assert calls and all(calls[0][2][s] == "denied" for s in ("ad_storage", "analytics_storage"))


def test_california_runs_trackers_before_a_decision_and_the_notice_is_dismissible(
    us_visitor: Callable[..., Visitor], us_demo: RunningDemo
) -> None:
    """R37: under opt-out the trackers run before any decision; the notice goes when dismissed,
    recording nothing."""
    v = us_visitor(CALIFORNIA)
    v.goto("/?utm_source=newsletter")
    notice = v.page.locator("[data-cb-notice]")
    expect(notice).to_be_visible()
    expect(notice.get_by_role("button", name=DNS)).to_be_visible()
    v.wait_until("window.countwell !== undefined")  # the analytics script ran, no click
    v.settle()
    contacted = {s.third_party for s in v.third_party_requests()}
    assert {"stats", "ads"} <= contacted, contacted
    by_category = v.cookies_by_category()
    assert "_mkt_src" in by_category.get("marketing", set()), by_category  # the app's own cookie stuck
    assert "analytics" in by_category, by_category
    calls = v.consent_calls()
    assert calls[0][2]["ad_storage"] == "granted" and calls[0][2]["analytics_storage"] == "granted", calls
    state = v.state()
    assert (state["region"], state["model"], state["decided"]) == ("US-CA", "opt-out", False)

    # The settings show what runs: every optional category on until the visitor opts out.
    notice.get_by_role("button", name="Customise").click()
    expect(v.page.locator("#cb-c-analytics")).to_be_checked()
    expect(v.page.locator("#cb-c-marketing")).to_be_checked()
    v.page.keyboard.press("Escape")
    notice.get_by_role("button", name="Close").click()
    v.page.wait_for_load_state("load")
    expect(v.page.locator("[data-cb-notice]")).to_have_count(0)
    v.goto("/offices/malmo")
    expect(v.page.locator("[data-cb-notice]")).to_have_count(0)
    expect(v.page.locator("[data-cb-settings]")).to_be_visible()  # the choices stay one click away
    assert v.state()["decided"] is False and v.receipt() == []  # a dismissal is no decision


def test_california_with_gpc_denies_marketing_and_logs_it_once(
    us_visitor: Callable[..., Visitor], us_demo: RunningDemo
) -> None:
    """R26: GPC under opt-out denies marketing from the first response and is logged once."""
    v = us_visitor({**CALIFORNIA, **GPC})
    v.goto("/")
    v.wait_until("window.countwell !== undefined")  # analytics still runs under opt-out
    v.settle()
    for path in ("/offices/malmo", "/"):
        v.goto(path)
    v.settle()
    assert us_demo.received("ads", since=v.started) == [], "the ad host was contacted despite GPC"
    assert "marketing" not in v.cookies_by_category()
    assert all(c[2]["ad_storage"] == "denied" for c in v.consent_calls())
    records = v.receipt()
    assert [(r["action"], r["source"]) for r in records] == [("opt_out", "gpc")], records
    assert records[0]["detail"] == {"model": "opt-out", "region": "US-CA"}


def test_california_then_do_not_sell_stops_marketing(
    us_visitor: Callable[..., Visitor], us_demo: RunningDemo
) -> None:
    """R29: the one-click "Do Not Sell or Share" stops marketing at once."""
    v = us_visitor(CALIFORNIA)
    v.goto("/?utm_source=newsletter")
    v.settle()
    assert "_mkt_src" in v.cookies_by_category().get("marketing", set())
    v.click(DNS)
    expect(v.page.locator("#cb-banner")).to_have_count(0)
    state = v.state()
    assert state["decided"] and "marketing" not in state["categories"] and "analytics" in state["categories"]
    calls = v.consent_calls()
    assert calls[-1][1] == "update" and calls[-1][2]["ad_storage"] == "denied", calls
    since = v.page.evaluate("Date.now() / 1000")
    response = v.goto("/")
    assert us_demo.third_parties["ads"] not in response.headers["content-security-policy"]
    v.settle()
    assert "_mkt_src" not in v.cookies_by_category().get("marketing", set())  # expired by the gate
    assert us_demo.received("ads", since=since) == []
    records = v.receipt()
    assert [r["action"] for r in records] == ["opt_out"], records


def test_no_region_header_gets_the_default(us_visitor: Callable[..., Visitor], us_demo: RunningDemo) -> None:
    """R37: no region header, the default model (opt-in): nothing runs."""
    v = us_visitor()
    v.goto("/")
    expect(v.page.locator("#cb-banner")).to_be_visible()
    expect(v.page.locator("[data-cb-notice]")).to_have_count(0)
    v.settle()
    assert v.third_party_requests() == []
    state = v.state()
    assert state["region"] is None and state["model"] == "opt-in"
