"""Issue 12 item 7 in Chromium: a sibling subdomain plants `consent=<accept_all>; Domain=parent` for a
visitor who rejected; over https the site's own cookie is `__Host-consent` and the planted one
decides nothing.

Both hosts are https and stood in for with Playwright routing: every request to them is answered by
the ASGI app in process (Starlette's TestClient), so no certificate and no outside host is involved.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Route
from starlette import routing
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.testclient import TestClient

from consent_banner import ConsentConfig, ConsentMiddleware, get_consent

SITE = "https://www.site.test"
SIBLING = "https://evil.site.test"
KEY = "e2e-tossing-key-0123456789-0123456789"


async def home(request: Request) -> HTMLResponse:
    return HTMLResponse("<!doctype html><html lang='en'><head><title>t</title></head><body>hi</body></html>")


async def whoami(request: Request) -> JSONResponse:
    consent = get_consent(request)
    return JSONResponse({"decided": consent.decided, "analytics": consent.allows("analytics")})


@pytest.fixture
def site(tmp_path: Path) -> Iterator[TestClient]:
    config = ConsentConfig(
        policy_revision="r1",
        controller="Site AB",
        privacy_policy_url="/privacy",
        log=f"sqlite:///{tmp_path}/log.db",
        categories={"necessary": {"label": "Necessary"}, "analytics": {"label": "Analytics"}},
    )
    app = ConsentMiddleware(
        Starlette(routes=[routing.Route("/", home), routing.Route("/whoami", whoami)]),
        config=config,
        secret_keys=[KEY],
    )
    with TestClient(app, base_url=SITE) as client:
        yield client


def forward(client: TestClient) -> object:
    """A route handler answering the browser's request with the app's response."""

    def handle(route: Route) -> None:
        request = route.request
        headers = request.all_headers()
        client.cookies.clear()  # the browser's cookies only
        r = client.request(request.method, request.url, headers=headers, content=request.post_data_buffer)
        out = [(k, v) for k, v in r.headers.multi_items() if k not in ("content-length", "content-encoding")]
        cookies = [v for k, v in out if k == "set-cookie"]
        fulfilled = {k: v for k, v in out if k != "set-cookie"}
        if cookies:
            fulfilled["set-cookie"] = "\n".join(cookies)  # Playwright's spelling of several Set-Cookie
        route.fulfill(status=r.status_code, headers=fulfilled, body=r.content)

    return handle


def test_a_planted_parent_domain_cookie_cannot_undo_a_reject(
    site: TestClient, context: BrowserContext
) -> None:
    accept_all = site.post("/_consent", json={"action": "accept_all"}, headers={"origin": SITE})
    [planted] = accept_all.cookies.values()  # a genuine value, as the sibling got one for itself
    site.cookies.clear()
    context.route(f"{SITE}/**", forward(site))  # type: ignore[arg-type]
    context.route(
        f"{SIBLING}/**",
        lambda route: route.fulfill(
            body="sibling",
            headers={"set-cookie": f"consent={planted}; Domain=site.test; Path=/; Secure; SameSite=Lax"},
        ),
    )
    page = context.new_page()
    page.goto(SITE + "/")
    status = page.evaluate(
        """async () => (await fetch("/_consent", {method: "POST", body: '{"action": "reject_all"}',
                                                  headers: {"Content-Type": "application/json"}})).status"""
    )
    assert status == 200
    page.goto(SIBLING + "/")
    held = {(c["name"], c["domain"]) for c in context.cookies(SITE)}
    assert ("consent", ".site.test") in held  # the browser took the sibling's cookie and sends it
    page.goto(SITE + "/whoami")
    assert page.evaluate("JSON.parse(document.body.innerText)") == {"decided": True, "analytics": False}
    assert ("__Host-consent", "www.site.test") in held
