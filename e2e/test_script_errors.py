"""The script when a decision cannot be recorded, or the embedded banner cannot load.

The visitor is told in the banner or the dialog, in the page's language, through a live region
(role="alert"); the choice stays open, the banner stays usable, and trying again once the server
has recovered records the decision. The console gets the cause. Failures are made with Playwright
routes in front of the real server (a 403 is the server's own answer to a foreign Origin).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, ConsoleMessage, Page, Route, expect

NOT_RECORDED = {
    "en": "Your choice could not be saved. Nothing has changed: please try again.",
    "sv": "Ditt val kunde inte sparas. Inget har ändrats: försök igen.",
}
LOG_DOWN = '{"error": "the consent log is unavailable; nothing was recorded, try again later"}'
TOO_LARGE = '{"error":"the body is limited to 8192 bytes"}'
TOO_MANY = '{"error":"too many decisions from this address: nothing was recorded","retry_after":30}'


def refused_origin(route: Route) -> None:
    """The server's own 403: the Origin a TLS-terminating proxy's visitors send, not the app's."""
    route.fulfill(
        response=route.fetch(headers={**route.request.headers, "origin": "https://www.example.com"})
    )


# name: (how the decision request fails, what the console names as its cause)
FAILURES: dict[str, tuple[Callable[[Route], None], str]] = {
    "log down (503)": (
        lambda route: route.fulfill(status=503, content_type="application/json", body=LOG_DOWN),
        "503 " + LOG_DOWN,
    ),
    "refused (403)": (
        refused_origin,
        '403 {"error":"cross-site decision refused: origin \'https://www.example.com\'',
    ),
    "too large (413)": (
        lambda route: route.fulfill(status=413, content_type="application/json", body=TOO_LARGE),
        "413 " + TOO_LARGE,
    ),
    "too many (429)": (
        lambda route: route.fulfill(
            status=429, content_type="application/json", headers={"retry-after": "30"}, body=TOO_MANY
        ),
        "429 " + TOO_MANY,
    ),
    "no network": (lambda route: route.abort("internetdisconnected"), "Failed to fetch"),
    "not JSON": (
        lambda route: route.fulfill(status=200, content_type="text/html", body="<!doctype html><p>Proxy</p>"),
        "is not valid JSON",
    ),
}


def console_errors(page: Page) -> list[str]:
    """The console.error texts the page logs from now on (the browser's own network lines too)."""
    errors: list[str] = []

    def seen(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("console", seen)
    return errors


def ours(errors: list[str]) -> list[str]:
    return [e for e in errors if e.startswith("consent-banner:")]


def server_state(page: Page, site: Any) -> dict[str, Any]:
    return page.request.get(site.url + "/_consent/state").json()


@pytest.mark.parametrize("failure", list(FAILURES))
def test_a_decision_that_is_not_recorded_is_shown_and_can_be_tried_again(
    page: Page, site: Any, failure: str
) -> None:
    """The message in the banner, announced; undecided; the console names the call and the cause."""
    fail, cause = FAILURES[failure]
    errors = console_errors(page)
    page.goto(site.url + "/")
    page.route(site.url + "/_consent", fail)
    page.get_by_role("button", name="Accept all").click()
    banner = page.locator("#cb-banner")
    expect(banner.get_by_role("alert")).to_have_text(NOT_RECORDED["en"])
    assert page.url == site.url + "/"  # no form post landing on a JSON body
    expect(banner).to_be_visible()
    expect(page.get_by_role("button", name="Cookie settings")).to_be_hidden()
    assert page.evaluate("consentBanner.get()")["decided"] is False
    assert server_state(page, site)["decided"] is False
    logged = ours(errors)
    assert len(logged) == 1 and "POST /_consent: " in logged[0] and cause in logged[0], errors

    # the server is back: the same button records the decision, and the message goes with the banner
    page.unroute(site.url + "/_consent")
    page.get_by_role("button", name="Accept all").click()
    expect(banner).to_have_count(0)
    expect(page.get_by_role("button", name="Cookie settings")).to_be_visible()
    assert server_state(page, site)["categories"] == ["necessary", "analytics", "marketing"]
    assert len(ours(errors)) == 1


def test_each_failure_is_announced_again(page: Page, site: Any) -> None:
    """A second failure empties the live region first, so screen readers hear it again."""
    page.goto(site.url + "/")
    page.route(site.url + "/_consent", FAILURES["log down (503)"][0])
    page.evaluate("""() => {
        window.alertTexts = [];
        const region = document.querySelector('#cb-banner [role=alert]');
        new MutationObserver(() => alertTexts.push(region.textContent))
            .observe(region, {childList: true, characterData: true, subtree: true});
    }""")
    for _ in range(2):
        page.get_by_role("button", name="Reject all").click()
        page.wait_for_function("() => alertTexts.at(-1)")
    assert page.evaluate("alertTexts") == [NOT_RECORDED["en"], "", NOT_RECORDED["en"]]


def test_in_the_dialog_the_message_is_in_the_dialog_and_in_swedish(page: Page, site: Any) -> None:
    """The modal dialog hides the banner from screen readers: the message goes where the visitor is."""
    errors = console_errors(page)
    page.goto(site.url + "/sv")
    page.route(site.url + "/_consent", FAILURES["no network"][0])
    page.get_by_role("button", name="Anpassa").click()
    dialog = page.locator("#cb-dialog")
    dialog.get_by_role("switch", name="Statistik").check()
    dialog.get_by_role("button", name="Spara val").click()
    expect(dialog.get_by_role("alert")).to_have_text(NOT_RECORDED["sv"])
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("switch", name="Statistik")).to_be_checked()  # the choice is still there
    assert len(ours(errors)) == 1 and "Failed to fetch" in ours(errors)[0]
    page.unroute(site.url + "/_consent")
    dialog.get_by_role("button", name="Spara val").click()
    expect(dialog).to_be_hidden()
    assert server_state(page, site)["categories"] == ["necessary", "analytics"]


def test_a_withdrawal_that_fails_is_said_in_the_dialog(page: Page, site: Any) -> None:
    """After a decision the banner is gone: a withdrawal from the settings' dialog that fails is told
    there, and the dialog stays open for another try."""
    errors = console_errors(page)
    page.goto(site.url + "/")
    page.get_by_role("button", name="Accept all").click()
    expect(page.locator("#cb-banner")).to_have_count(0)
    page.route(site.url + "/_consent/withdraw", FAILURES["log down (503)"][0])
    page.get_by_role("button", name="Cookie settings").click()
    dialog = page.locator("#cb-dialog")
    dialog.get_by_role("button", name="Reject all").click()
    expect(dialog.get_by_role("alert")).to_have_text(NOT_RECORDED["en"])
    expect(dialog).to_be_visible()
    assert server_state(page, site)["categories"] == ["necessary", "analytics", "marketing"]
    assert len(ours(errors)) == 1 and "POST /_consent/withdraw: 503" in ours(errors)[0]
    # closed and opened again, the dialog no longer shows the old message
    page.keyboard.press("Escape")
    expect(page.get_by_role("button", name="Cookie settings")).to_be_focused()
    page.get_by_role("button", name="Cookie settings").click()
    expect(dialog.get_by_role("alert")).to_have_text("")
    page.unroute(site.url + "/_consent/withdraw")
    dialog.get_by_role("button", name="Reject all").click()
    expect(dialog).to_be_hidden()
    assert server_state(page, site)["categories"] == ["necessary"]


def test_an_embedded_banner_that_cannot_load_logs_why(context: BrowserContext, site: Any) -> None:
    """The page stays as it is (no banner to show a message in); the site's developer learns why."""
    page = context.new_page()
    errors = console_errors(page)
    page.route(f"{site.url}/_consent/banner?**", FAILURES["log down (503)"][0])
    with page.expect_console_message(lambda m: m.text.startswith("consent-banner:")) as logged:
        page.goto(site.embed_url + "/")
    assert f"GET {site.url}/_consent/banner?lang=en: 503 {LOG_DOWN}" in logged.value.text
    expect(page.locator("#cb")).to_have_count(0)
    assert len(ours(errors)) == 1


def test_an_embedded_banner_whose_stylesheet_cannot_load_comes_unstyled_and_logs_why(
    context: BrowserContext, site: Any
) -> None:
    """The banner still comes, usable: a visitor is never left without a way to decide."""
    page = context.new_page()
    page.route(f"{site.url}/_consent/consent.css?**", lambda route: route.abort("connectionrefused"))
    with page.expect_console_message(lambda m: m.text.startswith("consent-banner:")) as logged:
        page.goto(site.embed_url + "/")
    text = logged.value.text
    assert f"GET {site.url}/_consent/consent.css?v=" in text and ": not loaded" in text
    expect(page.locator("#cb-banner")).to_be_visible()
    expect(page.get_by_role("button", name="Accept all")).to_be_enabled()


def test_an_embedded_decision_that_is_not_recorded_is_shown(context: BrowserContext, site: Any) -> None:
    """Embedded too: the message, no first-party cookie, and a retry that stores one."""
    page = context.new_page()
    errors = console_errors(page)
    page.goto(site.embed_url + "/")
    page.route(site.url + "/_consent", FAILURES["log down (503)"][0])
    page.get_by_role("button", name="Reject all").click()
    expect(page.locator("#cb-banner").get_by_role("alert")).to_have_text(NOT_RECORDED["en"])
    assert [c for c in context.cookies(site.embed_url) if c["name"] == "site_consent"] == []
    assert len(ours(errors)) == 1 and "503" in ours(errors)[0]
    page.unroute(site.url + "/_consent")
    page.get_by_role("button", name="Reject all").click()
    expect(page.locator("#cb-banner")).to_have_count(0)
    assert [c for c in context.cookies(site.embed_url) if c["name"] == "site_consent"]
