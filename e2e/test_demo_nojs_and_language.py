"""The demo with JavaScript off (R13), and in Swedish (R14)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from playwright.sync_api import expect

if TYPE_CHECKING:
    from demo_support import RunningDemo, Visitor

pytest_plugins = ("demo_support",)


def landed(v: Visitor, url: str) -> None:
    """The form post redirected back to `url` (else: where it ended, and what it said)."""
    assert v.page.url == url, (
        f"the form post ended on {v.page.url} instead of {url}: {v.page.inner_text('body')[:300]}"
    )


def test_without_javascript_reject_all_is_recorded_with_the_form(
    visitor: Callable[..., Visitor], demo: RunningDemo
) -> None:
    """R13, R19: with JavaScript disabled the banner is a plain form: Reject all posts it, the server
    records the decision (source "form") and redirects back to the same page, now without banner."""
    v = visitor(java_script_enabled=False)
    v.goto("/offices/stockholm")
    expect(v.page.locator("#cb-banner")).to_be_visible()
    with v.page.expect_navigation():
        v.click("Reject all")
    landed(v, demo.url + "/offices/stockholm")
    expect(v.page.locator("#cb-banner")).to_have_count(0)
    state = v.state()
    assert state["decided"] and state["categories"] == ["necessary"], state
    records = v.receipt()
    assert [(r["action"], r["source"]) for r in records] == [("reject_all", "form")], records
    assert v.optional_cookies() == set()
    assert v.third_party_requests() == []


def test_without_javascript_a_custom_choice_is_recorded_with_the_dialog_form(
    visitor: Callable[..., Visitor], demo: RunningDemo
) -> None:
    """R13, R10: with JavaScript disabled, Customise opens the preferences (a popover, no script),
    the switches start off, and Save choices with Statistics on records exactly that."""
    v = visitor(java_script_enabled=False)
    v.goto("/book")
    v.click("Customise")
    dialog = v.page.locator("#cb-dialog")
    expect(dialog).to_be_visible()
    for category in ("analytics", "marketing", "thirdparty"):
        expect(dialog.locator(f"#cb-c-{category}")).not_to_be_checked()
    dialog.get_by_role("switch", name="Statistics").check()
    with v.page.expect_navigation():
        dialog.get_by_role("button", name="Save choices").click()
    landed(v, demo.url + "/book")
    expect(v.page.locator("#cb-banner")).to_have_count(0)
    assert v.state()["categories"] == ["necessary", "analytics"]
    records = v.receipt()
    assert [(r["action"], r["source"]) for r in records] == [("custom", "form")], records
    assert "analytics" in records[0]["granted"] and "marketing" in records[0]["denied"]


def test_swedish_pages_show_the_swedish_banner(visitor: Callable[..., Visitor], demo: RunningDemo) -> None:
    """R14, R9: a page with <html lang="sv"> gets the Swedish banner (controller, purposes, links to
    the policy and the recipients, withdrawal line, Swedish buttons) whatever the browser's
    language; the decision is logged in Swedish; an English page in the same browser stays English."""
    v = visitor(locale="en-GB")
    v.goto("/sv/")
    assert v.page.evaluate("document.documentElement.lang") == "sv"
    banner = v.page.locator("#cb-banner")
    expect(banner).to_be_visible()
    expect(banner.locator("h2")).to_have_text("Dina val om integritet")
    expect(banner).to_contain_text("Tallgrove Workspaces AB")
    for purpose in ("Statistik", "Marknadsföring", "Inbäddat innehåll"):
        expect(banner).to_contain_text(purpose)
    expect(banner.get_by_role("link", name="Integritetspolicy")).to_have_attribute("href", "/privacy")
    expect(banner.locator("a[href='/privacy#recipients']")).to_have_count(1)
    expect(banner).to_contain_text("när som helst")  # consent can be withdrawn at any time
    buttons = banner.locator(".cb-actions > button")
    expect(buttons).to_have_text(["Acceptera alla", "Avvisa alla", "Anpassa"])
    # R5: the dialog and the cookie declaration name purposes and lifetimes in Swedish too.
    v.click("Anpassa")
    dialog = v.page.locator("dialog[open]")
    expect(dialog).to_contain_text("Räknar besök och sidvisningar")
    expect(dialog).to_contain_text("13 månader")
    expect(dialog).not_to_contain_text("13 months")
    v.goto("/sv/privacy")
    # The declaration: the one table with a Provider column (the dialog's have none).
    provider_column = v.page.get_by_role("columnheader", name="Leverantör", exact=True)
    declaration = v.page.locator("table", has=provider_column)
    expect(declaration).to_contain_text("Känner igen en återkommande webbläsare")
    expect(declaration).to_contain_text("30 minuter")
    recipients = v.page.locator("table.recipients")
    expect(recipients).to_contain_text("Mäter vilka annonser som leder till bokningar")

    v.goto("/")
    expect(v.page.locator("#cb-banner .cb-actions > button")).to_have_text(
        ["Accept all", "Reject all", "Customise"]
    )
    v.goto("/sv/offices/malmo")
    v.click("Avvisa alla")
    expect(v.page.locator("#cb-banner")).to_have_count(0)
    expect(v.page.locator("[data-cb-settings]")).to_have_text("Kakinställningar")
    records = v.receipt()
    assert [(r["action"], r["language"]) for r in records] == [("reject_all", "sv")], records
