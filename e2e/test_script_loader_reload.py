"""A loader the gate marked `data-consent-reload` (issue 15): the decision that grants it reloads the page
once instead of activating it, since this page's policy would refuse the scripts it builds; the page that
comes back runs it with its children and never reloads again. Markup reflected into the page cannot ask
for a reload. The vendor is stood in for by Playwright routing: nothing leaves the machine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ServerThread, _free_socket
from playwright.sync_api import BrowserContext, Page, Request, expect
from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from consent_banner import ConsentConfig, ConsentMiddleware, csp_nonce
from consent_banner.gate.snippets import pin
from tests.support.browser import wait_until  # a gated page's CSP refuses wait_for_function's eval

VENDOR = "https://loader.test"
# A vendor's inline loader as site owners paste them: it builds the <script src> of its library at
# run time. It counts its runs in sessionStorage, which outlives the reload.
LOADER = f"""<script>sessionStorage.loaderRuns = +(sessionStorage.loaderRuns || 0) + 1;
(function (d) {{ var j = d.createElement("script"); j.src = "{VENDOR}/child.js";
d.head.appendChild(j); }})(document);
</script>"""
# The site's own script (nonce'd by its template): counts consent:change events across reloads.
WATCH = """<script nonce="{nonce}">document.addEventListener("consent:change",
function () {{ sessionStorage.changes = +(sessionStorage.changes || 0) + 1; }});</script>"""
# Reflected into the page by a hostile visitor: a neutralised loader's labels, but not the page's nonce.
REFLECTED = """<script type="text/plain" data-consent-category="analytics" data-consent-service="loader"
 data-consent-reload="">window.hostileRan = 1</script>"""
PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Shop</title>{head}</head>
<body><main><h1>Shop</h1><p><a href="/other">Another page</a></p>{body}</main></body></html>"""


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("loader-reload") / "log.db"
    config = ConsentConfig.from_dict(
        {
            "policy_revision": "2026-11-01",
            "controller": "Example AB",
            "privacy_policy_url": "/privacy",
            "log": f"sqlite:///{Path(log)}",
            "cookie": {"secure": False},
            "categories": {"necessary": {"label": "Necessary"}, "analytics": {"label": "Analytics"}},
            "services": [
                {
                    "name": "loader",
                    "category": "analytics",
                    "provider": "Loader Ltd",
                    "origins": [VENDOR],
                    "inline": ["loader.test/child.js"],
                    # not a preset's official snippet: vouched for once pinned (gate/snippets.py)
                    "inline_sha256": [pin(LOADER[len("<script>") : -len("</script>")].encode())],
                    "loader": True,
                }
            ],
        }
    )

    def serve(body: str) -> Any:
        async def endpoint(request: HttpRequest) -> Response:
            head = WATCH.format(nonce=csp_nonce(request))
            return HTMLResponse(PAGE.format(head=head, body=body))

        return endpoint

    app = Starlette(routes=[Route("/", serve(LOADER)), Route("/reflected", serve(REFLECTED))])
    sock = _free_socket()
    with ServerThread(ConsentMiddleware(app, config=config), sock) as server:
        yield f"http://127.0.0.1:{server.port}"


@pytest.fixture
def visit(context: BrowserContext, page: Page) -> dict[str, list[str]]:
    """The stand-in vendor (its library counts its runs), and every document and vendor request."""
    seen: dict[str, list[str]] = {"documents": [], "vendor": []}
    context.route(
        f"{VENDOR}/**",
        lambda route: route.fulfill(
            content_type="text/javascript", body="window.childRuns = (window.childRuns || 0) + 1;"
        ),
    )

    def record(request: Request) -> None:
        if request.url.startswith(VENDOR):
            seen["vendor"].append(request.url)
        elif request.resource_type == "document" and request.frame == page.main_frame:
            seen["documents"].append(request.url)

    page.on("request", record)
    return seen


def session(page: Page, key: str) -> int:
    return int(page.evaluate(f"+(sessionStorage.{key} || 0)"))


def test_accept_reloads_once_and_the_loader_then_runs_with_its_children(
    page: Page, url: str, visit: dict[str, list[str]]
) -> None:
    """R2: Accept all grants the marked loader: the decision is recorded, consent:change fires, and the page
    reloads once instead of activating it (its library would be refused here). The page that comes back
    runs the loader and its library once, and reloads no more."""
    page.goto(url + "/")
    held = page.locator("script[data-consent-reload]")
    expect(held).to_have_count(1)
    assert held.get_attribute("type") == "text/plain" and session(page, "loaderRuns") == 0
    with page.expect_navigation():
        page.get_by_role("button", name="Accept all").click()
    wait_until(page, "window.childRuns === 1")
    page.wait_for_timeout(700)  # time enough for a second reload, were there one
    assert visit["documents"] == [url + "/", url + "/"], "exactly one reload"
    assert visit["vendor"] == [VENDOR + "/child.js"]
    assert session(page, "loaderRuns") == 1, "the loader ran on the page that came back only"
    assert session(page, "changes") == 1, "consent:change fired before the reload"
    state = page.evaluate("consentBanner.get()")
    assert state["decided"] and "analytics" in state["categories"]
    expect(page.locator("#cb-banner")).to_have_count(0)
    expect(page.locator("script[data-consent-reload]")).to_have_count(0)
    expect(page.get_by_role("button", name="Cookie settings")).to_be_visible()


def test_reject_does_not_reload(page: Page, url: str, visit: dict[str, list[str]]) -> None:
    """R2, R16: Reject all grants nothing: no reload, the loader stays inert, its vendor is never asked."""
    page.goto(url + "/")
    page.get_by_role("button", name="Reject all").click()
    expect(page.get_by_role("button", name="Cookie settings")).to_be_visible()
    page.wait_for_timeout(700)
    assert visit["documents"] == [url + "/"]
    assert visit["vendor"] == [] and session(page, "loaderRuns") == 0
    assert session(page, "changes") == 1
    assert page.locator("script[data-consent-reload]").get_attribute("type") == "text/plain"


def test_reflected_markup_cannot_ask_for_a_reload(page: Page, url: str, visit: dict[str, list[str]]) -> None:
    """R36: a neutralised loader's labels without the page's nonce (reflected into the page) are not the
    gate's: Accept all reloads nothing and runs nothing of it."""
    page.goto(url + "/reflected")
    hostile = page.locator("script[data-consent-reload]")
    expect(hostile).to_have_count(1)
    assert hostile.evaluate("el => el.nonce") == ""
    page.get_by_role("button", name="Accept all").click()
    expect(page.get_by_role("button", name="Cookie settings")).to_be_visible()
    page.wait_for_timeout(700)
    assert visit["documents"] == [url + "/reflected"]
    assert page.evaluate("window.hostileRan") is None and session(page, "changes") == 1
