"""Red team R4, issue 15, in Chromium: a reflected `<script>` naming a service's signature stays
refused under `inline_scripts = "block"` in every consent state, while the site's verbatim GA4
snippet runs after Accept; a signature split by string concatenation loads nothing from the vendor
before consent, even where the site's inline scripts get the nonce. The vendor is a Playwright
stand-in: nothing leaves the machine."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import ServerThread, _free_socket
from playwright.sync_api import BrowserContext, Page, Route
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route as Path_

from consent_banner import ConsentConfig, ConsentMiddleware
from tests.support.browser import wait_until  # a gated page's CSP refuses wait_for_function's eval

GA4 = (Path(__file__).parent.parent / "tests" / "fixtures" / "snippets" / "ga4.html").read_text()
XSS = "<script>gtag('config','G-1');window.__xss = 1;fetch('/steal?' + document.cookie)</script>"
SPLIT = """<script>window.__split = 1; var s = document.createElement('script');
s.src = 'https://www.google' + 'tagmanager.com/gtm.js?id=GTM-EVIL'; document.head.appendChild(s);</script>"""
PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Shop</title>{head}</head>
<body><main><h1>Search</h1><p>Results for {body}</p></main></body></html>"""
VENDORS = ("https://www.googletagmanager.com", "https://www.google-analytics.com")


def serve(mode: str, head: str, body: str, log: Path) -> Iterator[str]:
    config = ConsentConfig.from_dict(
        {
            "policy_revision": "2026-11-01",
            "controller": "Example AB",
            "privacy_policy_url": "/privacy",
            "log": f"sqlite:///{log}",
            "cookie": {"secure": False},
            "inline_scripts": mode,
            "categories": {"necessary": {"label": "Necessary"}, "analytics": {"label": "Analytics"}},
            "services": [
                {"name": "gtm", "preset": "google-tag-manager", "category": "analytics"},
                {"name": "ga", "preset": "google-analytics", "category": "analytics"},
            ],
        }
    )
    steals: list[str] = []

    async def page(request: Request) -> Response:
        return HTMLResponse(PAGE.format(head=head, body=body))

    async def steal(request: Request) -> Response:
        steals.append(str(request.url))
        return Response(status_code=204)

    app = Starlette(routes=[Path_("/", page), Path_("/steal", steal)])
    sock = _free_socket()
    with ServerThread(ConsentMiddleware(app, config=config), sock) as server:
        yield f"http://127.0.0.1:{server.port}"
    assert steals == [], "the reflected script ran"


@pytest.fixture(scope="module")
def blocking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from serve("block", GA4, XSS, tmp_path_factory.mktemp("r4-block") / "log.db")


@pytest.fixture(scope="module")
def nonce_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from serve("nonce", "", SPLIT, tmp_path_factory.mktemp("r4-nonce") / "log.db")


def open_page(new_context: Callable[..., BrowserContext], url: str) -> tuple[Page, list[str]]:
    context = new_context()
    seen: list[str] = []

    def stand_in(route: Route) -> None:
        seen.append(route.request.url)
        body = "window.__gtag = (window.__gtag || 0) + 1;" if "/gtag/js" in route.request.url else ""
        route.fulfill(status=200, body=body, content_type="text/javascript")

    for origin in VENDORS:
        context.route(origin + "/**", stand_in)
    page = context.new_page()
    page.goto(url)
    return page, seen


def test_a_reflected_script_with_a_signature_never_runs_while_the_snippet_does(
    new_context: Callable[..., BrowserContext], blocking: str
) -> None:
    """R2: before a decision, after Accept (the page reloads once: gtag.js is a loader) and on the
    next visit, the reflected script does not run; the verbatim GA4 snippet runs once granted."""
    page, seen = open_page(new_context, blocking + "/")
    page.wait_for_timeout(300)
    assert page.evaluate("window.__xss") is None and seen == []
    with page.expect_navigation():
        page.get_by_role("button", name="Accept all").click()
    wait_until(page, "window.__gtag === 1")
    assert page.evaluate("typeof window.gtag") == "function"
    page.reload()
    wait_until(page, "window.__gtag === 1")
    page.wait_for_timeout(300)
    assert page.evaluate("window.__xss") is None


def test_a_signature_split_by_concatenation_reaches_no_vendor_before_consent(
    new_context: Callable[..., BrowserContext], nonce_site: str
) -> None:
    """R2: under inline_scripts = "nonce" the split script matches no service and gets the nonce (the
    site chose that): it runs, but the script it builds is refused by script-src."""
    page, seen = open_page(new_context, nonce_site + "/")
    wait_until(page, "window.__split === 1")
    page.wait_for_timeout(500)
    assert seen == []
    page.get_by_role("button", name="Reject all").click()
    page.reload()
    wait_until(page, "window.__split === 1")
    page.wait_for_timeout(300)
    assert seen == []
