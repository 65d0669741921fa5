"""Microsoft UET's consent mode in Chromium (R30, R31; issue 15): with a `microsoft-uet` service declared,
the head script sets UET's default and the browser script pushes `uetq.push('consent', 'update',
{ad_storage})` after every decision, by UET's category and its own switch; pages without UET get no uetq.
UET's tag (a loader) reloads the page once when granted, and its library then starts granted. bat.bing.com
is stood in for by Playwright routing: nothing leaves the machine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ServerThread, Site, _free_socket
from playwright.sync_api import BrowserContext, Page, Request, expect
from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from test_consent_mode_config import uet_calls

from consent_banner import ConsentConfig, ConsentMiddleware
from consent_banner.gate.snippets import pin

BAT = "https://bat.bing.com/bat.js"
# UET's tag in the shape Microsoft Advertising issues it: it queues on window.uetq, then loads bat.js,
# which takes the queue over.
TAG = f"""<script>(function (w, d) {{ w.uetq = w.uetq || []; var n = d.createElement("script");
n.src = "{BAT}"; n.async = 1; n.onload = function () {{ var o = {{ ti: "TEST", q: w.uetq }};
w.uetq = new UET(o); w.uetq.push("pageLoad"); }};
d.head.appendChild(n); }})(window, document);</script>"""
# bat.js stood in: it keeps what was queued before it, as the real one replays it.
BAT_JS = "window.UET = function (o) { window.uetSeen = o.q.slice(); this.push = function () {}; };"
PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Shop</title></head>
<body><main><h1>Shop</h1>{body}</main></body></html>"""
DENIED = ["consent", "default", {"ad_storage": "denied"}]


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("uet") / "log.db"
    config = ConsentConfig.from_dict(
        {
            "policy_revision": "2026-11-01",
            "controller": "Example AB",
            "privacy_policy_url": "/privacy",
            "log": f"sqlite:///{Path(log)}",
            "cookie": {"secure": False},
            "categories": {"necessary": {"label": "Necessary"}, "advertising": {"label": "Advertising"}},
            "services": [
                # a tag in UET's shape, not its verbatim snippet: pinned (gate/snippets.py)
                {"name": "bing", "preset": "microsoft-uet", "category": "advertising", "switch": True,
                 "inline_sha256": [pin(TAG[len("<script>") : -len("</script>")].encode())]}
            ],
        }
    )

    def serve(body: str) -> Any:
        async def endpoint(request: HttpRequest) -> Response:
            return HTMLResponse(PAGE.format(body=body))

        return endpoint

    app = Starlette(routes=[Route("/", serve("")), Route("/tag", serve(TAG))])
    sock = _free_socket()
    with ServerThread(ConsentMiddleware(app, config=config), sock) as server:
        yield f"http://127.0.0.1:{server.port}"


def wait_for_calls(page: Page, count: int) -> list[list[Any]]:
    page.wait_for_function(f"() => (window.uetq || []).filter(x => x === 'consent').length >= {count}")
    return uet_calls(page)


def test_uet_update_follows_every_decision(page: Page, url: str) -> None:
    """R30, R31, R16: UET's default is denied; Accept all sends its update granted, withdrawing (Reject all
    in the settings) its update denied, each once and in order, on the same page."""
    page.goto(url + "/")
    assert uet_calls(page) == [DENIED]
    page.get_by_role("button", name="Accept all").click()
    assert wait_for_calls(page, 2) == [DENIED, ["consent", "update", {"ad_storage": "granted"}]]
    page.get_by_role("button", name="Cookie settings").click()
    page.get_by_role("dialog").get_by_role("button", name="Reject all").click()
    assert wait_for_calls(page, 3)[2] == ["consent", "update", {"ad_storage": "denied"}]
    page.wait_for_timeout(300)
    assert len(uet_calls(page)) == 3


def test_uet_update_follows_its_own_switch(page: Page, url: str) -> None:
    """R30: Advertising granted with UET's own switch off: UET's update is denied, as the head script's
    default has it on the next page."""
    page.goto(url + "/")
    page.get_by_role("button", name="Customise").click()
    dialog = page.get_by_role("dialog")
    dialog.locator("#cb-c-advertising").check()
    dialog.locator(".cb-cat", has=page.locator("#cb-c-advertising")).locator("summary").click()
    dialog.locator("#cb-s-bing").uncheck()
    dialog.get_by_role("button", name="Save choices").click()
    assert wait_for_calls(page, 2)[1] == ["consent", "update", {"ad_storage": "denied"}]
    state = page.evaluate("consentBanner.get()")
    assert "advertising" in state["categories"] and state["services"]["bing"] is False
    page.reload()
    assert uet_calls(page) == [DENIED]


def test_pages_without_uet_get_no_uetq(page: Page, site: Site) -> None:
    """R31: without a microsoft-uet service, a decision pushes Consent Mode to Google only: no uetq
    appears."""
    page.goto(site.url + "/other")
    page.get_by_role("button", name="Accept all").click()
    page.wait_for_function("() => dataLayer.some(a => a[0] === 'consent' && a[1] === 'update')")
    assert page.evaluate("'uetq' in window") is False
    assert page.locator("[data-consent-root]").get_attribute("data-uet") is None


def test_uet_tag_reloads_once_when_granted_and_bat_starts_granted(
    page: Page, context: BrowserContext, url: str
) -> None:
    """R30: UET's tag is a loader whose bat.js this page's policy refuses before a decision: Accept all
    reloads the page once, and bat.js, loaded there, finds UET's consent granted before anything else."""
    fetched: list[str] = []
    documents: list[str] = []
    context.route(BAT, lambda route: route.fulfill(content_type="text/javascript", body=BAT_JS))

    def record(request: Request) -> None:
        if request.url.startswith("https://bat.bing.com"):
            fetched.append(request.url)
        elif request.resource_type == "document" and request.frame == page.main_frame:
            documents.append(request.url)

    page.on("request", record)
    page.goto(url + "/tag")
    expect(page.locator("script[data-consent-reload]")).to_have_count(1)
    with page.expect_navigation():
        page.get_by_role("button", name="Accept all").click()
    page.wait_for_function("() => window.uetSeen !== undefined")
    assert page.evaluate("uetSeen")[:3] == ["consent", "default", {"ad_storage": "granted"}]
    page.wait_for_timeout(500)
    assert fetched == [BAT] and documents == [url + "/tag", url + "/tag"]
