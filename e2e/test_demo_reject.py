"""Reject all on the demo: nothing optional, ever, and the booking still works (R3, R6, R16)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from playwright.sync_api import expect

if TYPE_CHECKING:
    from demo_support import RunningDemo, Visitor

pytest_plugins = ("demo_support",)

# Cookies of optional categories a visitor may still carry from an earlier visit; some HttpOnly,
# which no script can remove: only the server can expire those.
PLANTED = (
    ("_st_id.1", False),  # analytics, written by the stats script
    ("_st_ses", True),  # analytics
    ("_ga_demo", False),  # analytics, the Google tag stand-in
    ("_ads", True),  # marketing
    ("_mkt_src", True),  # marketing, set by our own server
)


def test_reject_all_keeps_every_tracker_out_and_expires_planted_cookies(
    visitor: Callable[..., Visitor], demo: RunningDemo
) -> None:
    """R16, R2, R3, R7: with cookies of analytics and marketing planted beforehand (also HttpOnly),
    Reject all takes one click; across the next three pages (one with a campaign link that makes
    our own server try to set a marketing cookie) no analytics, marketing or embed host is
    contacted, and the server has expired every planted cookie."""
    v = visitor()
    host = demo.url.removeprefix("http://").split(":")[0]
    expires = time.time() + 86400 * 30
    v.context.add_cookies([
        {"name": name, "value": "planted", "domain": host, "path": "/", "httpOnly": http_only,
         "sameSite": "Lax", "expires": expires}
        for name, http_only in PLANTED
    ])
    assert {n for n, _ in PLANTED} <= v.optional_cookies()

    v.goto("/")
    v.click("Reject all")  # the one and only click
    expect(v.page.locator("#cb-banner")).to_have_count(0)
    state = v.state()
    assert state["decided"] and state["categories"] == ["necessary"], state

    for path in ("/offices/malmo?utm_source=ad-campaign", "/book", "/privacy"):
        v.goto(path)
        expect(v.page.locator("#cb-banner")).to_have_count(0)
        expect(v.page.locator("[data-cb-settings]")).to_be_visible()
        v.settle(100)

    assert v.third_party_requests() == [], [s.url for s in v.third_party_requests()]
    for name in demo.third_parties:
        assert demo.received(name, since=v.started) == [], f"{name} was contacted after Reject all"
    left = v.optional_cookies()
    assert left == set(), f"optional cookies survived Reject all: {left}"
    assert set(v.cookies_by_category()) <= {"necessary"}
    counted = v.context.request.get(f"{demo.url}/collect/count?consent_id={state['consent_id']}").json()
    assert counted["count"] == 0
    # The server answers the collection endpoint, but does not count (requires_consent).
    assert v.context.request.post(f"{demo.url}/collect", data="{}").status == 204
    assert v.context.request.get(f"{demo.url}/collect/count?consent_id={state['consent_id']}").json()[
        "count"
    ] == 0


def test_booking_checkout_works_with_everything_refused(
    visitor: Callable[..., Visitor], demo: RunningDemo
) -> None:
    """R6: with every optional category refused, a visitor books a meeting room from start to
    confirmation; the necessary, HttpOnly booking_session cookie is let through; no cookie wall."""
    v = visitor()
    v.goto("/offices/gothenburg")
    v.click("Reject all")
    expect(v.page.locator("#cb-banner")).to_have_count(0)

    v.page.get_by_role("link", name="Book here").nth(1).click()
    v.page.wait_for_url("**/book?office=gothenburg&room=meeting")
    v.page.get_by_label("Your name").fill("Ada Lindqvist")
    v.page.get_by_label("Company (optional)").fill("Example Research AB")
    v.page.get_by_role("button", name="Continue to checkout").click()
    v.page.wait_for_url("**/book/checkout")
    expect(v.page.locator("dl.summary")).to_contain_text("Meeting room")
    expect(v.page.locator("dl.summary")).to_contain_text("Ada Lindqvist")
    session = [c for c in v.cookies() if c["name"] == "booking_session"]
    assert len(session) == 1 and session[0]["httpOnly"], session

    v.page.get_by_role("button", name="Confirm booking").click()
    v.page.wait_for_url("**/book/done?ref=*")
    expect(v.page.locator("#booking-ref")).to_contain_text("Tallgrove Kajen")
    assert v.page.locator("#booking-ref").get_attribute("data-ref", timeout=1000).startswith("TG-")
    assert v.state()["categories"] == ["necessary"]
    assert v.optional_cookies() == set()
    assert v.third_party_requests() == []
