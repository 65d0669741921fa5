"""Withdrawing consent on the demo with the settings button (R15, R16, R19, R31)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from playwright.sync_api import expect

if TYPE_CHECKING:
    from demo_support import RunningDemo, Visitor

pytest_plugins = ("demo_support",)


def count_clicks(v: Visitor) -> None:
    """Counts every click the visitor makes on this page (window.__clicks)."""
    v.page.evaluate(
        "window.__clicks = 0; document.addEventListener('click', () => window.__clicks++, true)"
    )


def test_withdraw_from_the_settings_button(visitor: Callable[..., Visitor], demo: RunningDemo) -> None:
    """R15, R16, R19, R31: after Accept all, the settings button on the next page reopens the
    current choices (all on), where withdrawing takes no more clicks than accepting took; the
    withdrawal is a new log record, Consent Mode gets one update with every signal denied, and
    the next response from the server expires every analytics and marketing cookie."""
    v = visitor()
    v.goto("/")
    count_clicks(v)
    v.click("Accept all")
    expect(v.page.locator("#cb-banner")).to_have_count(0)
    accept_clicks = v.page.evaluate("window.__clicks")
    assert accept_clicks == 1

    v.goto("/offices/stockholm")  # the trackers run here as written: their cookies are set
    v.wait_until("window.countwell && window.gtagDemo")
    v.settle()
    assert {"_st_id.1", "_ga_demo"} <= v.cookies_by_category().get("analytics", set())
    assert "_mkt_src" not in v.optional_cookies()
    v.goto("/?utm_source=spring")  # our own server's marketing cookie (HttpOnly)
    assert "_mkt_src" in v.cookies_by_category().get("marketing", set())

    v.page.locator("[data-cb-settings]").click()
    dialog = v.page.locator("#cb-dialog")
    expect(dialog).to_be_visible()
    for category in ("analytics", "marketing", "thirdparty"):
        expect(dialog.locator(f"#cb-c-{category}")).to_be_checked()  # the current choices
    v.page.keyboard.press("Escape")  # R11: closing records nothing
    expect(dialog).to_be_hidden()
    assert [r["action"] for r in v.receipt()] == ["accept_all"]

    # in the choices the settings button opens, withdrawing is one click, as accepting was
    v.page.locator("[data-cb-settings]").click()
    count_clicks(v)
    dialog.get_by_role("button", name="Reject all").click()
    v.wait_until("window.consentBanner.get().categories.length === 1")
    withdraw_clicks = v.page.evaluate("window.__clicks")

    state = v.state()
    assert state["categories"] == ["necessary"], state
    calls = v.consent_calls()
    updates = [c for c in calls if c[1] == "update"]
    assert len(updates) == 1 and all(value == "denied" for value in updates[0][2].values()), calls
    records = v.receipt()
    assert [r["action"] for r in records] == ["accept_all", "withdraw"], records
    assert len({r["consent_id"] for r in records}) == 1

    started = v.page.evaluate("Date.now() / 1000")
    v.goto("/privacy")
    v.settle()
    left = v.optional_cookies()
    assert left == set(), f"cookies that outlived the withdrawal: {left}"
    assert v.page.locator("script[type='text/plain'][data-consent-category='analytics']").count() == 2
    for name in demo.third_parties:
        assert demo.received(name, since=started) == [], f"{name} still contacted after withdrawal"
    assert withdraw_clicks <= accept_clicks, (
        f"withdrawing took {withdraw_clicks} clicks, "
        f"accepting took {accept_clicks}"
    )
