"""Issue 14, item 4, in Chromium: a fragment swapped into a page gets no banner, and its tracker tags
never run inside the host page.

The page fetches rows the way htmx does (`HX-Request: true`, the answer inserted with
insertAdjacentHTML and its scripts re-created so that they run, as htmx runs them). The gate
neutralises a row's tracker tags with the *fragment response's* nonce, not the page's: the banner's
script activates only what carries the page's nonce, so granting consent in the page activates the
page's own trackers and never the row's. The row's tracker runs only in a row fetched after the
decision, when the gate no longer neutralises it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import ServerThread, _free_socket, tracker_config
from playwright.sync_api import BrowserContext, Page, Route, expect
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route as Path_

from consent_banner import ConsentMiddleware, csp_nonce

TRACKER = "https://tracker.test"

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Rooms</title></head>
<body><main><h1>Rooms</h1>
<img id="page-px" alt="" src="{tracker}/px.gif?from=page">
<button id="load" type="button">Load a row</button>
<ul id="rows"></ul></main>
<script nonce="{nonce}">
// What htmx does with hx-get="/row" hx-target="#rows" hx-swap="beforeend": the request says it is
// htmx's, the answer is inserted as HTML, and the scripts in it are re-created so that they run.
document.getElementById("load").addEventListener("click", async () => {{
  const response = await fetch("/row", {{ headers: {{ "HX-Request": "true" }} }});
  const rows = document.getElementById("rows");
  rows.insertAdjacentHTML("beforeend", await response.text());
  for (const old of rows.querySelectorAll("script:not([data-swapped])")) {{
    const s = document.createElement("script");
    for (const a of old.attributes) s.setAttribute(a.name, a.value);
    s.textContent = old.textContent;
    s.dataset.swapped = "1";
    old.replaceWith(s);
  }}
  window.rowsLoaded = (window.rowsLoaded || 0) + 1;
}});
</script></body></html>"""

ROW = f"""<li class="row">Room 3 <img class="row-px" alt="" src="{TRACKER}/px.gif?from=row">
<script src="{TRACKER}/row.js"></script></li>"""


def build_app(log: str) -> ConsentMiddleware:
    cfg = tracker_config(log, TRACKER)

    async def page(request: Request) -> Response:
        return HTMLResponse(PAGE.format(tracker=TRACKER, nonce=csp_nonce(request)))

    async def row(request: Request) -> Response:
        return HTMLResponse(ROW)

    return ConsentMiddleware(Starlette(routes=[Path_("/", page), Path_("/row", row)]), config=cfg)


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    sock = _free_socket()
    log = f"sqlite:///{tmp_path_factory.mktemp('fragments') / 'log.db'}"
    with ServerThread(build_app(log), sock):
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def tracked(context: BrowserContext) -> list[str]:
    """Every request that reached the tracker, which answers like a real one."""
    seen: list[str] = []

    def answer(route: Route) -> None:
        seen.append(route.request.url)
        if route.request.url.endswith(".js"):
            script = "window.rowTracker = (window.rowTracker || 0) + 1"
            route.fulfill(body=script, content_type="text/javascript")
        else:
            route.fulfill(body=b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", content_type="image/gif")

    context.route(f"{TRACKER}/**", answer)
    return seen


def load_row(page: Page, n: int) -> None:
    page.locator("#load").click()
    page.wait_for_function(f"() => window.rowsLoaded === {n}")
    page.wait_for_timeout(300)  # time for anything the row would fetch or run


def from_row(tracked: list[str]) -> list[str]:
    return [u for u in tracked if "from=row" in u or u.endswith("/row.js")]


def test_a_fragment_carries_no_banner_and_its_tracker_waits_for_a_fresh_fetch(
    page: Page, url: str, tracked: list[str], new_context: Callable[..., Any]
) -> None:
    """R2: a row's tracker never runs in the page before its category is granted, not even once it is."""
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(url + "/")
    expect(page.locator("#cb-banner")).to_be_visible()
    page.wait_for_function("() => window.consentBanner && document.readyState === 'complete'")
    load_row(page, 1)
    expect(page.locator("li.row")).to_have_count(1)
    # the row came back as it was, but for its tracker tags: no second banner, dialog or script
    assert page.locator("#cb-banner").count() == 1 and page.locator("dialog").count() == 1
    assert page.locator("script[src*='consent.js']").count() == 1
    assert page.locator("li.row img.row-px").get_attribute("src") is None
    assert page.locator("li.row img.row-px").get_attribute("data-consent-src") == f"{TRACKER}/px.gif?from=row"
    assert from_row(tracked) == [] and page.evaluate("window.rowTracker") is None

    # Granting activates the page's own tracker (it carries the page's nonce) and not the row's.
    page.get_by_role("button", name="Accept all").click()
    expect(page.locator("#cb-banner")).to_have_count(0)
    page.wait_for_function(f"() => document.getElementById('page-px').src === '{TRACKER}/px.gif?from=page'")
    page.wait_for_timeout(300)
    assert from_row(tracked) == [] and page.evaluate("window.rowTracker") is None
    assert page.locator("li.row img.row-px").get_attribute("src") is None

    # After a full page load, a fresh row is not neutralised any more: its tracker runs.
    page.reload()
    page.wait_for_function("() => window.consentBanner && document.readyState === 'complete'")
    load_row(page, 1)
    page.wait_for_function("() => window.rowTracker === 1")
    assert f"{TRACKER}/px.gif?from=row" in tracked and f"{TRACKER}/row.js" in tracked
    assert not [e for e in errors if "404" in e]
