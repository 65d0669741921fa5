"""Accept all on the demo: every tracker starts at once, without a reload (R31, R3, R35)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from playwright.sync_api import expect

if TYPE_CHECKING:
    from demo_support import RunningDemo, Visitor

pytest_plugins = ("demo_support",)

SIGNALS = ("ad_storage", "ad_user_data", "ad_personalization", "analytics_storage")


def test_accept_all_loads_every_tracker_without_a_reload(
    visitor: Callable[..., Visitor], demo: RunningDemo
) -> None:
    """R2 (after consent), R31: one click on Accept all starts the analytics script, the Google tag
    stand-in, the ad pixel, the map and the chat in the page already loaded (no navigation), and the
    server-side /collect endpoint starts counting; Consent Mode gets the default and then exactly one
    update, every signal granted."""
    v = visitor()
    v.goto("/")
    v.settle(100)
    assert v.third_party_requests() == []
    v.page.evaluate("window.__sameDocument = true")
    navigations: list[str] = []
    v.page.on("framenavigated", lambda f: navigations.append(f.url) if f == v.page.main_frame else None)
    csp_errors: list[str] = []
    v.page.on("console", lambda m: csp_errors.append(m.text) if "Content Security Policy" in m.text else None)

    v.click("Accept all")
    expect(v.page.locator("#cb-banner")).to_have_count(0)
    v.wait_until("window.countwell && window.gtagDemo")
    expect(v.page.locator(".consent-placeholder")).to_have_count(0)
    v.settle()

    assert navigations == [] and v.page.evaluate("window.__sameDocument") is True, "the page was reloaded"
    state = v.state()
    assert state["decided"], state
    assert set(state["categories"]) == {"necessary", "analytics", "marketing", "thirdparty"}
    counted = v.context.request.get(f"{demo.url}/collect/count?consent_id={state['consent_id']}").json()
    assert counted["count"] >= 1, "the analytics script ran but /collect counted nothing"
    assert {"_st_id.1", "_st_ses", "_ga_demo"} <= v.cookies_by_category().get("analytics", set())

    calls = v.consent_calls()
    assert [c[1] for c in calls] == ["default", "update"], calls
    assert all(calls[0][2][s] == "denied" for s in SIGNALS)
    assert all(calls[1][2][s] == "granted" for s in SIGNALS), calls[1]

    # What each third-party host itself received: the scripts, their beacons, the pixel, the frames.
    received = {(n, e["path"]) for n in demo.third_parties for e in demo.received(n, since=v.started)}
    expected = [("stats", "/stats.js"), ("stats", "/hit"), ("gtag", "/gtag/js"), ("gtag", "/g/collect"),
                ("ads", "/px.gif"), ("maps", "/embed"), ("chat", "/widget")]
    missing = [e for e in expected if e not in received]
    assert not missing, (
        f"not received by the third-party hosts after Accept all: {missing}; the browser said: {csp_errors}"
    )

    # The activated map and chat must also be shown, not only fetched: the gate hid them (`hidden`
    # with `data-consent-hidden`) while their placeholders stood in for them.
    expect(v.page.locator("iframe.map")).to_be_visible()
    expect(v.page.locator("iframe.chat")).to_be_visible()


def test_after_accept_all_the_server_lets_trackers_through(
    visitor: Callable[..., Visitor], demo: RunningDemo
) -> None:
    """R3, R35: once everything is granted, the next page comes with the trackers as written (no
    neutralised tags), a CSP naming every granted third-party origin, the offer that only marketing
    consent shows (get_consent in the app), the campaign cookie our own server sets, and Vary: Cookie."""
    v = visitor()
    v.goto("/")
    v.click("Accept all")
    expect(v.page.locator("#cb-banner")).to_have_count(0)

    response = v.goto("/?utm_source=newsletter")
    expect(v.page.locator("#newsletter")).to_be_visible()
    assert v.page.locator("[data-consent-src], script[type='text/plain']").count() == 0
    csp = response.headers["content-security-policy"]
    for name, origin in demo.third_parties.items():
        assert origin in csp, f"{name} ({origin}) missing from the CSP after accept all: {csp}"
    assert "cookie" in response.headers.get("vary", "").lower() or "private" in response.headers.get(
        "cache-control", ""
    )
    v.settle()
    assert "_mkt_src" in v.cookies_by_category().get("marketing", set())
    expect(v.page.locator("[data-cb-settings]")).to_be_visible()
