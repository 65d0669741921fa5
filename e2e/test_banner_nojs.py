"""The banner with JavaScript off: plain form posts and a popover dialog (R10, R13, R15)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from playwright.sync_api import BrowserContext, Page, expect


def no_js_page(new_context: Callable[..., BrowserContext]) -> Page:
    return new_context(java_script_enabled=False).new_page()


def state(page: Page, site: Any) -> dict[str, Any]:
    return page.request.get(site.url + "/_consent/state").json()


def test_reject_all_without_javascript(new_context, site: Any) -> None:
    """R13, R7: with JS off, Reject all is one click: a form post and a redirect back to the page."""
    page = no_js_page(new_context)
    page.goto(site.url + "/other")
    # the script did not run: the dialog is still the no-JS popover
    expect(page.locator("#cb-dialog")).to_have_attribute("popover", "")
    # a first visit (no form-token cookie yet) must already carry a usable token (R34)
    token = page.locator("form[id^=cb-q-] input[name=csrf]").get_attribute("value")
    assert token, "empty form token on first visit"
    with page.expect_navigation():
        page.get_by_role("button", name="Reject all").click()
    assert page.url == site.url + "/other"
    expect(page.locator("#cb-banner")).to_have_count(0)
    s = state(page, site)
    assert s["decided"] and s["categories"] == ["necessary"]


def test_custom_choice_without_javascript(new_context, site: Any) -> None:
    """R13, R10, R15: with JS off, Customise opens the choices, Save records them, settings reopen them."""
    page = no_js_page(new_context)
    page.goto(site.url + "/")
    dialog = page.locator("#cb-dialog")
    expect(dialog).to_be_hidden()
    page.get_by_role("button", name="Customise").click()
    expect(dialog).to_be_visible()
    analytics = dialog.get_by_role("switch", name="Analytics")
    expect(analytics).not_to_be_checked()
    expect(dialog.get_by_role("switch", name="Marketing")).not_to_be_checked()
    analytics.check()
    dialog.locator("summary").nth(1).click()
    dialog.get_by_role("switch", name="Allow stats").check()
    with page.expect_navigation():
        dialog.get_by_role("button", name="Save choices").click()
    expect(page.locator("#cb-banner")).to_have_count(0)
    s = state(page, site)
    assert s["decided"] and s["categories"] == ["necessary", "analytics"]
    assert s["services"]["stats"] is True
    # the settings button opens the current choices, still without JS
    page.get_by_role("button", name="Cookie settings").click()
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("switch", name="Analytics")).to_be_checked()
    expect(dialog.get_by_role("switch", name="Marketing")).not_to_be_checked()
    # refusing everything from there is a withdrawal
    with page.expect_navigation():
        dialog.get_by_role("button", name="Reject all").click()
    assert state(page, site)["categories"] == ["necessary"]


def test_accept_all_in_the_dialog_ignores_ticked_boxes(new_context, site: Any) -> None:
    """R13: Accept all in the dialog sends no categories, even after a box was ticked (JS off)."""
    page = no_js_page(new_context)
    page.goto(site.url + "/")
    page.get_by_role("button", name="Customise").click()
    dialog = page.locator("#cb-dialog")
    dialog.get_by_role("switch", name="Marketing").check()
    with page.expect_navigation():
        dialog.get_by_role("button", name="Accept all").click()
    s = state(page, site)
    assert s["categories"] == ["necessary", "analytics", "marketing"]
