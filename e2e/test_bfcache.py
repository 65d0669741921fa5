"""A page the back/forward cache shows again obeys the decision as it is now (issue 14).

Chromium keeps a page it leaves, scripts, trackers and all, and shows it again on Back without asking
the server. A visitor who accepted on page A, withdrew on page B and went back would get A's
trackers running on. The script asks `{prefix}/state` on `pageshow` with `persisted` and reloads
when the decision changed. Playwright starts Chromium with the cache off
(`--disable-back-forward-cache`); these tests start one with it on, and check that the page really
came from it (`pageshow.persisted`, kept in sessionStorage across the reload).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from conftest import CHROMIUM
from playwright.sync_api import Browser, Page, Playwright, expect

from consent_banner.scan.crawl import CHROMIUM_ARGS

# Every pageshow of the tab's pages (frames and about:blank aside): [path, persisted], in
# sessionStorage (a reload keeps it).
SHOWS = """addEventListener('pageshow', (event) => {
  if (window !== top || location.protocol !== 'http:') return;
  const shows = JSON.parse(sessionStorage.getItem('shows') || '[]');
  shows.push([location.pathname, event.persisted]);
  sessionStorage.setItem('shows', JSON.stringify(shows));
});"""


@pytest.fixture(scope="module")
def cached_browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(
        executable_path=CHROMIUM,
        args=CHROMIUM_ARGS,
        headless=True,
        ignore_default_args=["--disable-back-forward-cache"],
    )
    yield browser
    browser.close()


@pytest.fixture
def tab(cached_browser: Browser) -> Iterator[Page]:
    context = cached_browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(5000)
    context.add_init_script(SHOWS)
    yield context.new_page()
    context.close()


def shows(page: Page) -> list[list[Any]]:
    return page.evaluate("JSON.parse(sessionStorage.getItem('shows') || '[]')")


def go_to_the_other_page(page: Page) -> None:
    with page.expect_navigation():
        page.get_by_role("link", name="Another page").click()


def test_a_withdrawal_elsewhere_reloads_the_page_back_from_the_cache(tab: Page, site: Any) -> None:
    """R16: accept on A, withdraw on B, Back: A comes from the cache, reloads, its trackers stay off."""
    tab.goto(site.url + "/")
    tab.get_by_role("button", name="Accept all").click()
    tab.wait_for_function("() => (window.cbOrder || []).includes('stats')")  # A's trackers run

    go_to_the_other_page(tab)
    tab.get_by_role("button", name="Cookie settings").click()
    tab.locator("#cb-dialog").get_by_role("button", name="Reject all").click()
    expect(tab.locator("#cb-dialog")).to_be_hidden()
    assert tab.request.get(site.url + "/_consent/state").json()["categories"] == ["necessary"]

    trackers: list[str] = []
    tab.on("request", lambda r: trackers.append(r.url) if "/t/" in r.url else None)
    tab.go_back(wait_until="commit")  # a page from the cache fires no load event
    tab.wait_for_function("() => JSON.parse(sessionStorage.getItem('shows')).length === 4")
    tab.wait_for_load_state()
    # A first, B, A again from the cache, then A reloaded from the server
    assert shows(tab) == [["/", False], ["/other", False], ["/", True], ["/", False]]
    assert tab.evaluate("performance.getEntriesByType('navigation')[0].type") == "reload"
    assert tab.evaluate("window.cbOrder") is None  # the reloaded page runs no tracker
    assert tab.evaluate("consentBanner.get().categories") == ["necessary"]
    expect(tab.get_by_role("button", name="Cookie settings")).to_be_visible()
    tab.wait_for_timeout(300)
    assert trackers == []


def test_nothing_changed_means_no_reload(tab: Page, site: Any) -> None:
    """Back to a page whose decision still holds: shown from the cache as it was, not fetched again."""
    tab.goto(site.url + "/")
    tab.get_by_role("button", name="Accept all").click()
    tab.wait_for_function("() => (window.cbOrder || []).includes('stats')")
    tab.evaluate("window.stillHere = true")
    go_to_the_other_page(tab)
    with tab.expect_response(lambda r: r.url.endswith("/_consent/state")):
        tab.go_back(wait_until="commit")  # a page from the cache fires no load event
    tab.wait_for_timeout(300)  # time enough for a reload, would one come
    assert shows(tab) == [["/", False], ["/other", False], ["/", True]]
    assert tab.evaluate("window.stillHere") is True
