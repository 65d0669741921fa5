"""Global Privacy Control on the demo, as a header and as navigator.globalPrivacyControl (R26-R28)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from playwright.sync_api import expect

if TYPE_CHECKING:
    from demo_support import RunningDemo, Visitor

pytest_plugins = ("demo_support",)

NOTICE = "Opt-out preference signal honored"
GPC_IN_SCRIPT = "Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', {get: () => true})"


def accept_all_and_browse(v: Visitor) -> None:
    v.goto("/")
    expect(v.page.locator("#cb-banner [data-cb-gpc]")).to_have_text(NOTICE)
    expect(v.page.locator("#cb-banner [data-cb-gpc]")).to_be_visible()
    v.click("Accept all")
    expect(v.page.locator("#cb-banner")).to_have_count(0)
    v.wait_until("window.countwell !== undefined")  # analytics still allowed
    v.settle()
    for path in ("/offices/malmo", "/"):
        response = v.goto(path)
        assert v.demo.third_parties["ads"] not in response.headers["content-security-policy"]
        v.settle(100)


def check_marketing_never_loaded(v: Visitor, demo: RunningDemo) -> None:
    assert demo.received("ads", since=v.started) == [], "the ad host was contacted despite GPC"
    assert not v.third_party_requests("ads")
    assert "marketing" not in v.cookies_by_category()
    assert v.page.locator("#newsletter").count() == 0  # the marketing offer is not shown
    calls = v.consent_calls()
    assert all(c[2]["ad_storage"] == "denied" for c in calls), calls


def test_sec_gpc_header_denies_marketing_from_the_first_response(
    visitor: Callable[..., Visitor], demo: RunningDemo
) -> None:
    """R26, R27, R28: with `Sec-GPC: 1` on every request the first page already shows "Opt-out
    preference signal honored"; even Accept all leaves marketing denied (the ad pixel is never
    requested, the ad origin never enters the CSP) while statistics work; the log has a gpc record."""
    v = visitor(extra_http_headers={"Sec-GPC": "1"})
    accept_all_and_browse(v)
    state = v.state()
    assert state["gpc"] is True and "marketing" not in state["categories"], state
    assert "analytics" in state["categories"]
    check_marketing_never_loaded(v, demo)
    actions = [r["action"] for r in v.receipt()]
    assert "gpc" in actions and "accept_all" in actions, actions


def test_navigator_global_privacy_control_denies_marketing(
    visitor: Callable[..., Visitor], demo: RunningDemo
) -> None:
    """R26, R27, R28: a browser that exposes navigator.globalPrivacyControl but sends no header: the
    banner shows the notice, the script tells the server, Accept all records a gpc opt-out and
    grants everything but marketing, which never loads, also on later pages."""
    v = visitor()
    v.context.add_init_script(GPC_IN_SCRIPT)
    accept_all_and_browse(v)
    state = v.state()
    assert "marketing" not in state["categories"] and "analytics" in state["categories"], state
    check_marketing_never_loaded(v, demo)
    records = v.receipt()
    assert [r["action"] for r in records].count("gpc") == 1, records
    assert all("marketing" not in r["granted"] for r in records), records
