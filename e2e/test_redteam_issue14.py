"""Red team for issue 14's settings button and back/forward cache reload, in Chromium.

A page back from the cache asks `{prefix}/state` and reloads when the decision changed. An answer
that never matches (forged by something between, another visitor's, garbage) must cost one reload
per Back, never a loop: the reloaded page is not from the cache, so it does not ask again.
"""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Page, Route
from test_bfcache import cached_browser, go_to_the_other_page, shows, tab  # noqa: F401  (fixtures)


def test_a_state_answer_that_never_matches_reloads_once_and_never_loops(tab: Page, site: Any) -> None:  # noqa: F811
    asked: list[str] = []

    def forged(route: Route) -> None:
        asked.append(route.request.url)
        body = '{"decided":false,"consent_id":"someone-else","categories":["necessary"],"x":"<img src=x>"}'
        route.fulfill(status=200, content_type="application/json", body=body)

    # Routed from the start: a route added later makes Chromium drop the cached page.
    tab.route("**/_consent/state", forged)
    tab.goto(site.url + "/")
    tab.get_by_role("button", name="Accept all").click()
    tab.wait_for_function("() => (window.cbOrder || []).includes('stats')")
    go_to_the_other_page(tab)
    tab.go_back(wait_until="commit")  # a page from the cache fires no load event
    tab.wait_for_function("() => JSON.parse(sessionStorage.getItem('shows')).length >= 4")
    tab.wait_for_load_state()
    tab.wait_for_timeout(1500)  # time enough for a second reload, would one come
    assert shows(tab) == [["/", False], ["/other", False], ["/", True], ["/", False]]
    assert len(asked) == 1
    # the reloaded page obeys the server's real state (the cookie), not the forged answer
    assert tab.evaluate("consentBanner.get().categories") != ["necessary"]
    assert tab.evaluate("document.querySelectorAll('img[src=x]').length") == 0
