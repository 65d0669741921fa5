"""A custom choice on the demo: statistics only (R10, R31, R2 for what stays refused)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from playwright.sync_api import expect

if TYPE_CHECKING:
    from demo_support import RunningDemo, Visitor

pytest_plugins = ("demo_support",)

REPORT_WAIT = 10.0  # seconds a browser gets to deliver a CSP violation report


def choose_statistics_only(v: Visitor) -> None:
    v.click("Customise")
    dialog = v.page.locator("#cb-dialog")
    expect(dialog).to_be_visible()
    for category in ("analytics", "marketing", "thirdparty"):
        expect(dialog.locator(f"#cb-c-{category}")).not_to_be_checked()  # R10: off until turned on
    dialog.get_by_role("switch", name="Statistics").check()
    dialog.get_by_role("button", name="Save choices").click()
    expect(dialog).to_be_hidden()


def test_statistics_only_loads_analytics_and_nothing_else(
    visitor: Callable[..., Visitor], demo: RunningDemo
) -> None:
    """R10, R31, R2: with only Statistics switched on, the analytics script and the Google tag
    stand-in start at once, the ad pixel, map and chat stay out (also after the next page), and
    Consent Mode's single update grants analytics_storage while the three ad signals stay denied."""
    v = visitor()
    v.goto("/")
    choose_statistics_only(v)
    state = v.state()
    assert state["categories"] == ["necessary", "analytics"], state
    v.wait_until("window.countwell && window.gtagDemo")
    map_src = demo.third_parties["maps"] + "/embed?city=Sverige&pins=4&lang=en"
    expect(v.page.locator("iframe.map")).to_have_attribute("data-consent-src", map_src)  # still held back

    calls = v.consent_calls()
    assert [c[1] for c in calls] == ["default", "update"], calls
    update = calls[1][2]
    assert update["analytics_storage"] == "granted"
    assert update["ad_storage"] == update["ad_user_data"] == update["ad_personalization"] == "denied"

    v.goto("/offices/uppsala")
    v.settle()
    assert {"stats", "gtag"} <= {s.third_party for s in v.third_party_requests()}
    assert v.categories_contacted() == {"analytics"}, v.categories_contacted()
    for name in ("ads", "maps", "chat"):
        assert demo.received(name, since=v.started) == [], f"{name} was contacted with statistics only"
    assert {"/stats.js", "/hit"} <= {e["path"] for e in demo.received("stats", since=v.started)}
    by_category = v.cookies_by_category()
    assert set(by_category) <= {"necessary", "analytics"}, by_category
    assert "_st_id.1" in by_category["analytics"]


def test_csp_lists_only_analytics_origins_and_refuses_an_injected_tracker(
    visitor: Callable[..., Visitor], demo: RunningDemo
) -> None:
    """R2, R3 (CSP): after a statistics-only choice the page's Content-Security-Policy names the
    analytics origins and no marketing or embed origin; an ad script injected by a page script is
    refused by the browser itself, never reaches the ad host, and the CSP report makes it a
    "blocked attempt" in the audit view."""
    v = visitor()
    v.goto("/")
    choose_statistics_only(v)
    response = v.goto("/privacy")
    header = response.headers["content-security-policy"]
    policy = demo.csp_directives(header)
    analytics = {demo.third_parties["stats"], demo.third_parties["gtag"]}
    others = {demo.third_parties[n] for n in ("ads", "maps", "chat")}
    for directive in ("script-src", "connect-src", "img-src"):
        assert analytics <= set(policy[directive]), (directive, header)
    for origin in others:
        assert origin not in header, f"{origin} allowed with statistics only: {header}"
    listed = {s for sources in policy.values() for s in sources if s.startswith("http")}
    assert listed <= analytics, listed

    injected_at = time.time()
    violation = v.page.evaluate(
        """(src) => new Promise((resolve) => {
            document.addEventListener("securitypolicyviolation",
                (e) => resolve({blocked: e.blockedURI, directive: e.effectiveDirective}), {once: true});
            const s = document.createElement("script");
            s.src = src;
            document.body.appendChild(s);
        })""",
        demo.third_parties["ads"] + "/ads.js",
    )
    assert violation["blocked"].startswith(demo.third_parties["ads"]), violation
    assert violation["directive"].startswith("script-src"), violation
    v.settle()
    assert v.page.evaluate("window.brightpostLoaded === undefined")
    assert demo.received("ads", since=injected_at) == []

    # The browser reports the violation to {prefix}/csp-report; the auditor sees it.
    blocked_url = f"{demo.url}{demo.prefix}/audit/blocked"
    auth = {"authorization": demo.basic_auth()}
    deadline = time.monotonic() + REPORT_WAIT
    while True:
        page = v.context.request.get(blocked_url, headers=auth)
        assert page.ok, f"audit view: HTTP {page.status}"
        rows = [row for row in page.text().split("<tr>") if demo.third_parties["ads"] in row]
        if rows or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert rows, (
        f"no blocked attempt for {demo.third_parties['ads']} in the audit view {REPORT_WAIT} s after the "
        "browser refused it (no CSP report reached the server)"
    )
    assert "/privacy" in rows[0] and "script-src" in rows[0], rows[0]


def test_map_placeholder_asks_for_embedded_content_only(
    visitor: Callable[..., Visitor], demo: RunningDemo
) -> None:
    """R2, R10, R19: an undecided visitor sees a placeholder naming the map's provider instead of
    the map; its "Allow" button records a custom decision granting embedded content alone, and the
    map appears in the same page while statistics and marketing stay out."""
    v = visitor()
    v.goto("/offices/stockholm")
    placeholder = v.page.locator(".consent-placeholder[data-consent-placeholder='maps']")
    expect(placeholder).to_contain_text("Atlasly Maps AB")
    expect(v.page.locator("iframe.map")).to_be_hidden()
    placeholder.get_by_role("button").click()
    expect(placeholder).to_have_count(0)
    v.wait_until("window.consentBanner.get().decided")
    assert v.state()["categories"] == ["necessary", "thirdparty"]
    assert [r["action"] for r in v.receipt()] == ["custom"]
    v.settle()
    for name in ("stats", "gtag", "ads"):
        assert demo.received(name, since=v.started) == [], f"{name} loaded after allowing the map"
    expect(v.page.locator("iframe.map")).to_be_visible()
    assert [e["path"] for e in demo.received("maps", since=v.started)] == ["/embed"], (
        "the map host was not reached from the page where the map was allowed"
    )
