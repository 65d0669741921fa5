"""A decision is never undone by the browser's cache (issue 14, item 2).

A site made by a static-site generator, served by Starlette's `StaticFiles` (which sends `ETag` and
`Last-Modified`, and no `Cache-Control`) behind the real ConsentMiddleware. Each page carries the
vendor's analytics snippet as written; the gate neutralises it unless analytics is granted. Page B
was generated a week ago (a browser may reuse it unasked for hours, from heuristic freshness), page
C a moment ago (a browser revalidates it, and the app answers 304 to the validators it minted).

The vendor is a second server on another origin that counts every request for its script (served
`no-store`, so every run is a request) and whose script sets a global. It is not stood in for with
Playwright routing: routing disables the browser's HTTP cache, the very thing under test here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ServerThread, _free_socket, tracker_config
from playwright.sync_api import BrowserContext, Page, expect
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from consent_banner import ConsentMiddleware

WEEK = 7 * 86400

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<script async src="{vendor}/stats.js"></script></head>
<body><main><h1>{title}</h1><p><a href="/a.html">A</a> <a href="/b.html">B</a> <a href="/c.html">C</a></p>
</main></body></html>"""


@dataclass
class Vendor:
    url: str
    hits: list[float]  # when each request for the script arrived (time.time())

    def since(self, moment: float) -> int:
        return sum(1 for t in self.hits if t >= moment)


@dataclass
class Sites:
    vendor: Vendor
    urls: dict[str, str]  # csp mode -> the site's origin
    served: list[tuple[str, int]]  # (path, status) of every response the sites sent, in order

    def how(self, path: str, since: int) -> str:
        """How the browser got `path` after the first `since` responses: the status the server
        answered, or "cache" when it was not asked at all."""
        statuses = [status for p, status in self.served[since:] if p == path]
        return str(statuses[-1]) if statuses else "cache"


def recording(app: ConsentMiddleware, served: list[tuple[str, int]]) -> ASGIApp:
    """The site as the network sees it: every response's status, recorded."""

    async def recorded(scope: Scope, receive: Receive, send: Send) -> None:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                served.append((scope["path"], message["status"]))
            await send(message)

        await app(scope, receive, sending)

    return recorded


def vendor_app(hits: list[float]) -> Starlette:
    async def script(request: Request) -> Response:
        hits.append(time.time())
        return Response(
            "window.statsRuns = (window.statsRuns || 0) + 1;",
            media_type="text/javascript",
            headers={"cache-control": "no-store"},
        )

    return Starlette(routes=[Route("/stats.js", script)])


def generate(directory: Path, vendor: str) -> None:
    """The generator's output: A and C written now, B a week ago."""
    for name in ("a", "b", "c"):
        path = directory / f"{name}.html"
        path.write_text(PAGE.format(title=f"Page {name.upper()}", vendor=vendor))
    old = time.time() - WEEK
    os.utime(directory / "b.html", (old, old))


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sites]:
    hits: list[float] = []
    vendor_sock = _free_socket()
    vendor = Vendor(f"http://localhost:{vendor_sock.getsockname()[1]}", hits)
    servers = [ServerThread(vendor_app(hits), vendor_sock)]
    urls, served = {}, []
    for csp in ("enforce", "report-only"):
        root = tmp_path_factory.mktemp("site-" + csp)
        generate(root, vendor.url)
        log = f"sqlite:///{tmp_path_factory.mktemp('log-' + csp) / 'log.db'}"
        app = Starlette(routes=[Mount("/", app=StaticFiles(directory=root, html=True))])
        sock = _free_socket()
        urls[csp] = f"http://127.0.0.1:{sock.getsockname()[1]}"
        cfg = tracker_config(log, vendor.url, provider="Stats Oy", privacy_policy_url="/a.html", csp=csp)
        gated = ConsentMiddleware(app, config=cfg)
        servers.append(ServerThread(recording(gated, served), sock))
    for s in servers:
        s.__enter__()
    yield Sites(vendor, urls, served)
    for s in servers:
        s.__exit__(None, None, None)


def settled(page: Page) -> None:
    page.wait_for_function("() => window.consentBanner && document.readyState === 'complete'")
    page.wait_for_timeout(300)  # time for an activated snippet to fetch and run


def runs(page: Page) -> int:
    settled(page)
    return int(page.evaluate("window.statsRuns || 0"))


def withdraw(page: Page) -> None:
    """Withdraws in the dialog (its "Reject all" is the withdrawal once decided)."""
    page.evaluate("window.consentBanner.show()")
    page.locator("#cb-dialog").get_by_role("button", name="Reject all").click()
    page.wait_for_function("() => window.consentBanner.get().categories.length === 1")


@pytest.mark.parametrize("csp", ["enforce", "report-only"])
def test_a_withdrawn_consent_does_not_come_back_from_the_cache(
    sites: Sites, context: BrowserContext, csp: str
) -> None:
    """R16, R35: accept, see B and C, withdraw: navigating to each again, and reloading it, serves the
    withdrawn page (the app's validators gone, Cache-Control: private, no-cache): the analytics
    snippet neither runs nor is fetched."""
    url = sites.urls[csp]
    page = context.new_page()
    page.goto(url + "/a.html")
    page.get_by_role("button", name="Accept all").click()
    expect(page.locator("#cb-banner")).to_have_count(0)
    for name in ("b", "c"):
        page.goto(f"{url}/{name}.html")
        assert runs(page) == 1, f"the snippet does not run on {name} after Accept all"

    withdraw(page)
    withdrawn = time.time()
    for name in ("b", "c"):
        seen = len(sites.served)
        page.goto(f"{url}/{name}.html")
        how = sites.how(f"/{name}.html", seen)
        assert runs(page) == 0, f"{name} came back accepted after the withdrawal (server: {how})"
        seen = len(sites.served)
        page.reload()
        how = sites.how(f"/{name}.html", seen)
        assert runs(page) == 0, f"{name} reloaded accepted after the withdrawal (server: {how})"
        expect(page.locator("script[type='text/plain'][data-consent-category='analytics']")).to_have_count(1)
    assert sites.vendor.since(withdrawn) == 0, "the vendor was contacted after the withdrawal"


@pytest.mark.parametrize("csp", ["enforce", "report-only"])
@pytest.mark.parametrize("name", ["b", "c"])
def test_granting_in_the_dialog_reloads_into_the_granted_page(
    sites: Sites, context: BrowserContext, csp: str, name: str
) -> None:
    """R35: reject, see a page, grant analytics in its dialog: the reload that follows shows the
    granted page, where the snippet runs, not the rejected page from the cache."""
    url = sites.urls[csp]
    page = context.new_page()
    page.goto(url + "/a.html")
    page.get_by_role("button", name="Reject all").click()
    expect(page.locator("#cb-banner")).to_have_count(0)
    page.goto(f"{url}/{name}.html")
    assert runs(page) == 0

    granted, seen = time.time(), len(sites.served)
    page.evaluate("window.consentBanner.show()")
    page.locator("#cb-c-analytics").check()
    with page.expect_navigation():
        page.locator("#cb-dialog").get_by_role("button", name="Save choices").click()
    how = sites.how(f"/{name}.html", seen)
    assert runs(page) == 1, f"the reload after granting showed the rejected page (server: {how})"
    assert sites.vendor.since(granted) == 1
