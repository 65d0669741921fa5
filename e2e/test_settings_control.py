"""After a decision: one small settings button that never hides what has focus (issue 14, item 7).

WCAG 2.2 SC 2.4.11 Focus Not Obscured: the button sits fixed in a corner over the page, so every
focusable element of a page is tabbed to, at a phone's and a desktop's viewport, and the button must
never overlap the focused element's box while it can be seen. The pages are the demo's home page
and a page whose own controls sit in the bottom corners (a chat button right under ours). Withdrawing
is one click in the choices it opens (R15), the "Do Not Sell" link is there (R29), axe-core finds
nothing serious, and screenshots of each page and viewport go to e2e/artifacts/settings-control/.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from conftest import ARTIFACTS, ServerThread, _free_socket, site_config
from playwright.sync_api import BrowserContext, Page, expect
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route
from test_banner_a11y import axe

from consent_banner import ConsentMiddleware, csp_nonce

if TYPE_CHECKING:
    from demo_support import RunningDemo

pytest_plugins = ("demo_support",)

SHOTS = ARTIFACTS / "settings-control"
VIEWPORTS = {"phone": {"width": 390, "height": 844}, "desktop": {"width": 1280, "height": 800}}

# A page whose own controls sit where ours does: a chat button fixed bottom left (right under the
# settings button), a "Top" link fixed bottom right, and links down to the bottom of a long page.
CORNER_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Corners</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style nonce="{nonce}">
body {{ font: 16px/1.5 sans-serif; margin: 0 1rem; }}
.chat {{ position: fixed; left: 1rem; bottom: 1rem; padding: 0.5rem 1rem; }}
.top {{ position: fixed; right: 1rem; bottom: 1rem; }}
footer {{ display: flex; justify-content: space-between; }}
</style></head>
<body><header><a href="/corner">Corners</a> <input aria-label="Search" type="search"></header>
<main><h1>Corners</h1>
{links}
<button type="button" class="chat">Chat with us</button>
<a class="top" href="#">Top</a>
</main>
<footer><a href="/corner#left">Left</a><a href="/corner#right">Right</a></footer>
</body></html>"""


@pytest.fixture(scope="module")
def corner_site() -> Iterator[str]:
    async def corner(request: Request) -> HTMLResponse:
        links = "\n".join(f'<p>Section {n}: <a href="/corner#s{n}">read more</a></p>' for n in range(30))
        return HTMLResponse(CORNER_PAGE.format(nonce=csp_nonce(request), links=links))

    with tempfile.TemporaryDirectory() as tmp:
        config = site_config(f"sqlite:///{Path(tmp) / 'log.db'}", "http://localhost:1")
        app = ConsentMiddleware(Starlette(routes=[Route("/corner", corner)]), config=config)
        sock = _free_socket()
        with ServerThread(app, sock):
            yield f"http://127.0.0.1:{sock.getsockname()[1]}/corner"


# After each Tab (and two frames, so that the scroll it caused has been handled): what has focus,
# whether it was seen before, and whether the settings button, visible, overlaps it.
STEP = """async () => {
  await new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)));
  const focused = document.activeElement, button = document.querySelector('[data-cb-settings]');
  const a = button.getBoundingClientRect(), b = focused.getBoundingClientRect();
  const seen = (window.tabbed = window.tabbed || new Set());
  const again = seen.has(focused);
  seen.add(focused);
  return {
    name: focused === button ? 'the settings button'
      : focused === document.body ? 'body' : focused.outerHTML.slice(0, 90),
    // an iframe keeps focus while Tab goes through its content
    again: again && focused !== document.body && focused.tagName !== 'IFRAME',
    self: focused === button,
    faded: button.classList.contains('cb-x'),
    covers: focused !== button && focused !== document.body && !button.hidden
      && getComputedStyle(button).opacity !== '0'
      && a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom,
  };
}"""


def tab_through(page: Page, shots: str) -> tuple[list[str], list[str], int]:
    """Tabs once round the page: (elements focused, those the button covered, times it faded)."""
    focused, covered, faded = [], [], 0
    for _ in range(400):
        page.keyboard.press("Tab")
        step = page.evaluate(STEP)
        if step["again"]:
            break
        if step["name"] not in focused:
            focused.append(step["name"])
        if step["covers"]:
            covered.append(step["name"])
        if step["faded"]:
            faded += 1
            if faded == 1:
                page.screenshot(path=SHOTS / f"{shots}-faded-for-focus.png")
        if step["self"]:
            page.screenshot(path=SHOTS / f"{shots}-button-focused.png")
    else:
        pytest.fail("Tab never came round to the first element again")
    return focused, covered, faded


def decided_page(new_context: Callable[..., BrowserContext], url: str, viewport: dict[str, int]) -> Page:
    # bypass_csp: axe is injected as an inline script; the button's behaviour does not depend on it
    page = new_context(viewport=viewport, bypass_csp=True).new_page()
    page.goto(url)
    page.locator("#cb-banner").get_by_role("button", name="Accept all").click()
    expect(page.locator("#cb-banner")).to_have_count(0)
    page.goto(url)  # a page rendered for a decided visitor
    expect(page.get_by_role("button", name="Cookie settings")).to_be_visible()
    return page


def check_the_button(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SHOTS / f"{name}.png")
    focused, covered, faded = tab_through(page, name)
    print(f"\n{name}: {len(focused)} elements focused, the button faded {faded} times; screenshots: {SHOTS}")
    assert len(focused) >= 5 and "the settings button" in focused
    assert covered == []
    assert axe(page, "#cb") == []


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
def test_the_button_never_hides_the_focused_element_of_a_page_with_corner_controls(
    new_context: Callable[..., BrowserContext], corner_site: str, viewport: str
) -> None:
    """R15, WCAG 2.4.11: a chat button right under ours gets focus: ours fades until focus moves on."""
    page = decided_page(new_context, corner_site, VIEWPORTS[viewport])
    button = page.get_by_role("button", name="Cookie settings")
    chat = page.get_by_role("button", name="Chat with us")
    chat.focus()
    expect(button).to_have_css("opacity", "0")
    page.get_by_role("link", name="Corners").focus()  # focus moves on: the button is back
    expect(button).to_have_css("opacity", "1")
    check_the_button(page, f"corner-{viewport}")


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
def test_the_button_never_hides_the_focused_element_of_the_demo(
    new_context: Callable[..., BrowserContext], demo: RunningDemo, viewport: str
) -> None:
    """R15, WCAG 2.4.11 on the demo's home page, with its map and chat iframes once allowed."""
    page = decided_page(new_context, demo.url + "/", VIEWPORTS[viewport])
    check_the_button(page, f"demo-{viewport}")


def test_the_button_opens_the_choices_where_withdrawing_is_one_click(page: Page, site: Any) -> None:
    """R15, R29: one button after a decision; its choices hold the withdrawal and the "Do Not Sell" link."""
    page.goto(site.url + "/")
    page.get_by_role("button", name="Accept all").click()
    expect(page.locator("#cb-banner")).to_have_count(0)
    page.goto(site.url + "/other")
    fixed = page.evaluate("""() => [...document.querySelectorAll('#cb *')]
        .filter(el => el.getClientRects().length && getComputedStyle(el).position === 'fixed')
        .map(el => el.textContent.trim())""")
    assert fixed == ["Cookie settings"]  # one control over the page, no more pills
    page.get_by_role("button", name="Cookie settings").click()
    dialog = page.locator("#cb-dialog")
    expect(dialog.get_by_role("link", name="Do Not Sell or Share My Personal Information")).to_be_visible()
    page.evaluate("window.clicks = 0; document.addEventListener('click', () => clicks++, true)")
    dialog.get_by_role("button", name="Reject all").click()
    expect(dialog).to_be_hidden()
    assert page.evaluate("clicks") == 1
    assert page.request.get(site.url + "/_consent/state").json()["categories"] == ["necessary"]
    expect(page.get_by_role("button", name="Cookie settings")).to_be_focused()  # focus goes back to it
