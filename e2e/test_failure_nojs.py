"""The banner's form with JavaScript off, when the choice is not saved: a page, not JSON (issue 14, item 5).

A form token whose session cookie is gone (the browser was restarted, the tab restored) and a consent
log that cannot write each answer a page in the visitor's language under its own strict policy,
styled by the banner's stylesheet, saying what happened, with a link back to the page the form was on.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ARTIFACTS, ServerThread, _free_socket, build_site_app, site_config
from playwright.sync_api import BrowserContext, Page, Response, expect

from consent_banner.texts import shipped_texts

EN, SV = shipped_texts("en"), shipped_texts("sv")
SHOTS = ARTIFACTS / "failure-pages"


def no_js_page(new_context: Callable[..., BrowserContext]) -> Page:
    return new_context(java_script_enabled=False).new_page()


def shows_the_failure_page(
    page: Page, answer: Response, status: int, texts: dict[str, str], text: str
) -> None:
    assert answer.status == status
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    expect(page).to_have_title(texts["failure_title"])
    expect(page.get_by_role("heading", level=1)).to_have_text(texts["failure_title"])
    expect(page.locator("main")).to_contain_text(texts[text])
    # the banner's stylesheet loaded under the page's own policy (the panel's border is its rule)
    assert page.locator("main > section").evaluate("el => getComputedStyle(el).borderTopStyle") == "solid"


def test_an_expired_form_token_gets_a_page_in_swedish_and_a_way_back(
    new_context: Callable[..., BrowserContext], site: Any
) -> None:
    """R13: 403, the Swedish page, the link back to /sv, where a fresh page's form records the choice."""
    page = no_js_page(new_context)
    page.goto(site.url + "/sv")
    page.context.clear_cookies()  # the session's form-token cookie is gone; the page still has its token
    with page.expect_navigation() as navigation:
        page.get_by_role("button", name="Avvisa alla").click()
    shows_the_failure_page(page, navigation.value, 403, SV, "failure_refused")  # type: ignore[arg-type]
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SHOTS / "expired-token-sv.png", full_page=True)
    assert page.request.get(site.url + "/_consent/state").json()["decided"] is False

    with page.expect_navigation():
        page.get_by_role("link", name=SV["failure_back"]).click()
    assert page.url == site.url + "/sv"
    with page.expect_navigation():
        page.get_by_role("button", name="Avvisa alla").click()
    assert page.url == site.url + "/sv"
    expect(page.locator("#cb-banner")).to_have_count(0)
    assert page.request.get(site.url + "/_consent/state").json()["categories"] == ["necessary"]


@pytest.fixture(scope="module")
def log_down() -> Iterator[str]:
    """The test site over a consent log that cannot be written (its directory is a file)."""
    with tempfile.TemporaryDirectory() as tmp:
        blocker = Path(tmp) / "not-a-dir"
        blocker.write_text("x")
        sock = _free_socket()
        config = site_config(f"sqlite:///{blocker}/log.db", "http://localhost:1")
        with ServerThread(build_site_app(config), sock):
            yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_a_log_that_cannot_write_gets_a_page_and_a_way_back(
    new_context: Callable[..., BrowserContext], log_down: str
) -> None:
    """R13: 503, nothing recorded, Retry-After kept, the visitor reads why and goes back to /other."""
    page = no_js_page(new_context)
    page.goto(log_down + "/other")
    with page.expect_navigation() as navigation:
        page.get_by_role("button", name="Accept all").click()
    answer = navigation.value
    shows_the_failure_page(page, answer, 503, EN, "failure_unavailable")  # type: ignore[arg-type]
    assert answer.headers["retry-after"] == "5"
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SHOTS / "log-down-en.png", full_page=True)
    print(f"\nfailure page screenshots: {SHOTS}")
    with page.expect_navigation():
        page.get_by_role("link", name=EN["failure_back"]).click()
    assert page.url == log_down + "/other"
    expect(page.locator("#cb-banner")).to_be_visible()  # still undecided
