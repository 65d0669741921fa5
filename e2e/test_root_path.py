"""Issue 14, item 3, in Chromium: an app mounted at /shop beside another app on the same host.

Each app has its own ConsentMiddleware and its own consent log. Before the fix the shop's banner
loaded its script and stylesheet from /_consent (the other app's, or a 404) and posted decisions
there: they landed in the wrong app's log. Here the script and stylesheet load, a decision through
the banner (script, and form with JavaScript off) is recorded by the shop, and the browser sees no 404.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ServerThread, _free_socket, tracker_config
from playwright.sync_api import BrowserContext, Page, expect
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount
from starlette.routing import Route as Path_

from consent_banner import ConsentMiddleware

TRACKER = "https://tracker.test"
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title></head>
<body><main><h1>{title}</h1><img id="px" alt="" src="{tracker}/px.gif"></main></body></html>"""


def app_for(title: str, log: Path) -> ConsentMiddleware:
    cfg = tracker_config(f"sqlite:///{log}", TRACKER)

    async def page(request: Request) -> Response:
        return HTMLResponse(PAGE.format(title=title, tracker=TRACKER))

    return ConsentMiddleware(Starlette(routes=[Path_("/", page)]), config=cfg)


def records(log: Path) -> list[str]:
    if not log.exists():
        return []
    db = sqlite3.connect(log)
    try:
        return [r[0] for r in db.execute("SELECT action FROM records ORDER BY seq")]
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    logs = tmp_path_factory.mktemp("root-path")
    shop_log, home_log = logs / "shop.db", logs / "home.db"
    shop, home = app_for("Shop", shop_log), app_for("Home", home_log)

    # Starlette sends the lifespan to the outer app only, never to mounted ones: the mounted
    # middlewares' logs are closed here, as the README tells an app that mounts them.
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await shop.close()
        await home.close()

    outer = Starlette(routes=[Mount("/shop", app=shop), Mount("", app=home)], lifespan=lifespan)
    sock = _free_socket()
    with ServerThread(outer, sock):
        yield {"url": f"http://127.0.0.1:{sock.getsockname()[1]}", "shop": shop_log, "home": home_log}


def watch(page: Page) -> tuple[list[tuple[int, str]], list[str]]:
    responses: list[tuple[int, str]] = []
    errors: list[str] = []
    page.on("response", lambda r: responses.append((r.status, r.url)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    return responses, errors


@pytest.fixture
def tracker(context: BrowserContext) -> None:
    gif = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"
    context.route(f"{TRACKER}/**", lambda route: route.fulfill(body=gif, content_type="image/gif"))


def test_a_decision_through_the_banner_lands_in_the_mounted_app(
    page: Page, host: dict[str, Any], tracker: None, new_context: Callable[..., BrowserContext]
) -> None:
    """R13: under a root path the banner works, with its script and without JavaScript."""
    url = host["url"]
    responses, errors = watch(page)
    page.goto(url + "/shop/")
    expect(page.locator("#cb-banner")).to_be_visible()
    page.wait_for_function("() => window.consentBanner && document.readyState === 'complete'")
    loaded = {u.split("?")[0].removeprefix(url): s for s, u in responses}
    assert loaded["/shop/_consent/consent.js"] == 200 and loaded["/shop/_consent/consent.css"] == 200
    # the stylesheet applies: the banner is laid out by it, not as unstyled inline content
    assert page.locator("#cb-banner").evaluate("e => getComputedStyle(e).position") == "fixed"

    page.get_by_role("button", name="Accept all").click()
    expect(page.locator("#cb-banner")).to_have_count(0)
    # the page's tracker, activated by the shop's script
    expect(page.locator("#px")).to_have_attribute("src", f"{TRACKER}/px.gif")
    assert records(host["shop"]) == ["accept_all"] and records(host["home"]) == []
    page.reload()
    page.wait_for_function("() => window.consentBanner && document.readyState === 'complete'")
    expect(page.locator("#cb-banner")).to_have_count(0)
    assert [r for r in responses if r[0] == 404] == [] and not [e for e in errors if "404" in e]

    # With JavaScript off the banner's form posts to the shop too, and comes back to the shop's page.
    nojs = new_context(java_script_enabled=False).new_page()
    nojs_responses, _ = watch(nojs)
    nojs.goto(url + "/shop/")
    nojs.get_by_role("button", name="Reject all").click()
    nojs.wait_for_load_state()
    assert nojs.url == url + "/shop/"
    assert records(host["shop"]) == ["accept_all", "reject_all"] and records(host["home"]) == []
    assert [r for r in nojs_responses if r[0] == 404] == []
