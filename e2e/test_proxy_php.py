"""Any website behind `consent-banner proxy` (issue 16): a PHP site and a static one, in Chromium.

The upstreams are real non-Python servers: PHP's built-in server (Debian's php-cli; `./run test`
installs it) running tests/fixtures/php_site/index.php, which starts a PHP session, sets an HttpOnly
marketing cookie with setcookie() and includes a tracker's <script src> and a vendor-style inline
loader; and `python -m http.server` serving tests/fixtures/static_site/ (the same markup as files).
`consent-banner proxy` runs as the command a site owner types, in its own process, on free ports;
the fixture stops both. The tracker's host is stood in for by Playwright routing, never contacted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Page, Route, expect

from tests.support.browser import wait_until  # a gated page's CSP refuses wait_for_function's eval
from tests.support.servers import free_port, stop, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
PHP = os.environ.get("PHP", "php")
KEY = "e2e-proxy-key-0123456789-0123456789-abcdef"
ADS = "https://ads.example.com"
TAGS = "https://tags.example.net"

CONSENT_TOML = """\
policy_revision = "2026-12-01"
controller = "Example Shop Ltd"
privacy_policy_url = "/privacy"
log = "sqlite:///{log}"

[cookie]
secure = false

[categories.necessary]
label = "Necessary"
description = "Needed for the shop to work."
[categories.marketing]
label = "Marketing"
description = "Offers and campaign measurement."

[[services]]
name = "shop-session"
category = "necessary"
provider = "Example Shop Ltd"
purpose = "Keeps the visitor's session (PHP)"
cookies = [{{ name = "PHPSESSID", lifetime = "session" }}]

[[services]]
name = "ads"
category = "marketing"
provider = "Ads Inc"
purpose = "Measures campaigns"
origins = ["{ads}"]
cookies = [{{ name = "_ads", lifetime = "90 days" }}]

[[services]]
name = "tags"
category = "marketing"
provider = "Tags Inc"
purpose = "Loads campaign tags"
origins = ["{tags}"]
inline = ["adsq"]  # the inline loader's signature
loader = true      # it builds a <script src>
# the loader is no preset's official snippet: pinned, as its refused <script data-consent-pin> shows
inline_sha256 = ["866be8f965c8e74cf7c08bcd6012be074ddd0be8f94e15c00d7f98ea42116ef1"]
"""


@dataclass
class Proxied:
    """A site served through `consent-banner proxy`: where the browser goes, and the proxy's config."""

    kind: str  # "php" or "static"
    url: str
    config: Path
    tracker_requests: list[str] = field(default_factory=list)

    def decisions(self) -> list[dict[str, Any]]:
        """The consent log's records, read as an auditor does: `consent-banner log export`."""
        out = subprocess.run(
            [_command(), "log", "export", "--format", "ndjson", "--config", str(self.config)],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "CONSENT_SECRET_KEYS": KEY},
        )
        assert out.returncode == 0, out.stderr
        lines = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
        return [
            line for line in lines if "type" not in line
        ]  # records; a whole log's export opens with typed lines


def _command() -> str:
    return str(Path(sys.executable).parent / "consent-banner")


def _upstream(kind: str, port: int) -> list[str]:
    if kind == "php":
        if shutil.which(PHP) is None:
            pytest.fail(f"{PHP} is missing: ./run test installs Debian's php-cli")
        return [PHP, "-S", f"127.0.0.1:{port}", "-t", str(FIXTURES / "php_site")]
    return [
        sys.executable,
        "-m",
        "http.server",
        str(port),
        "--bind",
        "127.0.0.1",
        "--directory",
        str(FIXTURES / "static_site"),
    ]


@pytest.fixture(scope="module", params=["php", "static"])
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxied]:
    kind: str = request.param
    tmp = tmp_path_factory.mktemp(f"proxy-{kind}")
    config = tmp / "consent.toml"
    config.write_text(CONSENT_TOML.format(log=tmp / "consent-log.db", ads=ADS, tags=TAGS))
    up_port, port = free_port(), free_port()
    env = {**os.environ, "CONSENT_SECRET_KEYS": KEY}
    env.pop("FORWARDED_ALLOW_IPS", None)
    with ExitStack() as stack:
        up_log = stack.enter_context((tmp / "upstream.log").open("wb"))
        upstream = subprocess.Popen(
            _upstream(kind, up_port), stdout=up_log, stderr=subprocess.STDOUT, start_new_session=True
        )
        stack.callback(stop, upstream)
        wait_for_port("127.0.0.1", up_port, server=upstream, log=tmp / "upstream.log")
        proxy_log = stack.enter_context((tmp / "proxy.log").open("wb"))
        args = [
            "proxy",
            "--upstream",
            f"http://127.0.0.1:{up_port}",
            "--port",
            str(port),
            "--config",
            str(config),
        ]
        proxy = subprocess.Popen(
            [_command(), *args], stdout=proxy_log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        stack.callback(stop, proxy)
        wait_for_port("127.0.0.1", port, server=proxy, log=tmp / "proxy.log")
        yield Proxied(kind, f"http://127.0.0.1:{port}", config)


@pytest.fixture
def visit(site: Proxied, new_context: Any) -> Iterator[tuple[BrowserContext, Page]]:
    """A new visitor: its own browser context, the tracker's host stood in for and recorded."""
    site.tracker_requests.clear()
    context: BrowserContext = new_context()

    def tracker(route: Route) -> None:
        site.tracker_requests.append(route.request.url)
        flag = "adsLoader" if route.request.url.endswith("/loader.js") else "adsTracker"
        route.fulfill(status=200, content_type="text/javascript", body=f"window.{flag} = true;")

    context.route(f"{ADS}/**", tracker)
    context.route(f"{TAGS}/**", tracker)
    yield context, context.new_page()


def cookies(context: BrowserContext, site: Proxied) -> dict[str, dict[str, Any]]:
    return {c["name"]: dict(c) for c in context.cookies(site.url)}


def plant_ads_cookie(context: BrowserContext, site: Proxied) -> None:
    """The marketing cookie as the site set it before (HttpOnly: no script could remove it)."""
    context.add_cookies([{"name": "_ads", "value": "campaign-old", "url": site.url, "httpOnly": True}])


def banner_button(page: Page, name: str) -> None:
    page.locator("#cb").get_by_role("button", name=name, exact=True).click()
    expect(page.locator("#cb-banner")).to_have_count(0)


def test_nothing_runs_or_stays_before_consent(site: Proxied, visit: tuple[BrowserContext, Page]) -> None:
    """R1, R2, R3, R16 through the proxy: before a decision the banner is on the upstream's page,
    no request reaches the tracker's host, the marketing cookie the page sets (PHP's setcookie,
    HttpOnly) is dropped and the one the browser still held is expired; PHP's session cookie,
    declared necessary, passes."""
    context, page = visit
    plant_ads_cookie(context, site)
    response = page.goto(site.url + "/")
    assert response is not None and response.ok
    expect(page.locator("#cb-banner")).to_be_visible()
    expect(page.locator("h1")).to_have_text("PHP shop" if site.kind == "php" else "Static shop")
    page.wait_for_timeout(300)
    set_cookies = [h["value"] for h in response.headers_array() if h["name"].lower() == "set-cookie"]
    assert not any(v.startswith("_ads=campaign-7") for v in set_cookies), set_cookies
    assert any(v.startswith("_ads=;") or v.startswith('_ads="";') for v in set_cookies), set_cookies
    assert site.tracker_requests == []
    assert page.evaluate("window.adsTracker") is None
    assert page.evaluate("typeof window.adsq") == "undefined"  # the inline loader did not run
    # Held as the gate holds the tracker's tag, to run after consent; the loader with a reload, as
    # it builds a <script src> this page's policy would refuse.
    expect(page.locator('script[type="text/plain"]')).to_have_count(2)
    loader = page.locator('script[type="text/plain"][data-consent-reload]')
    expect(loader).to_have_count(1)
    assert "adsq" in loader.inner_text(), loader.inner_text()
    jar = cookies(context, site)
    assert "_ads" not in jar
    if site.kind == "php":
        assert "PHPSESSID" in jar


def test_reject_all_expires_the_marketing_cookie_and_keeps_the_session(
    site: Proxied, visit: tuple[BrowserContext, Page]
) -> None:
    """R16, R19 through the proxy: after Reject all the HttpOnly marketing cookie the browser holds is
    expired on the next page, nothing reaches the tracker's host, PHP's session goes on, and the
    decision is in the log."""
    context, page = visit
    page.goto(site.url + "/")
    banner_button(page, "Reject all")
    plant_ads_cookie(context, site)  # as if it had been set elsewhere: the next page expires it
    page.reload()
    expect(page.locator("#cb-banner")).to_have_count(0)
    page.wait_for_timeout(300)
    assert "_ads" not in cookies(context, site)
    assert site.tracker_requests == []
    if site.kind == "php":  # PHP's session still works through the proxy: its counter goes on
        expect(page.locator("#visits")).to_have_text("Visits this session: 2")
        page.reload()
        expect(page.locator("#visits")).to_have_text("Visits this session: 3")
    consent_id = page.evaluate("consentBanner.get().consent_id")
    actions = [r["action"] for r in site.decisions() if r["consent_id"] == consent_id]
    assert actions == ["reject_all"]


def test_accept_all_runs_the_tracker_without_a_reload(
    site: Proxied, visit: tuple[BrowserContext, Page]
) -> None:
    """On a page with the tracker's <script src> and no loader, Accept all runs it where it stands."""
    _, page = visit
    page.goto(site.url + ("/news.php" if site.kind == "php" else "/news.html"))
    page.wait_for_timeout(200)
    assert site.tracker_requests == []
    page.evaluate("window.__sameDocument = true")
    banner_button(page, "Accept all")
    wait_until(page, "window.adsTracker === true && window.__sameDocument === true")
    assert site.tracker_requests == [f"{ADS}/t.js"]
    consent_id = page.evaluate("consentBanner.get().consent_id")
    actions = [r["action"] for r in site.decisions() if r["consent_id"] == consent_id]
    assert actions == ["accept_all"]


def test_accept_all_runs_the_inline_loader_after_one_reload_and_lets_the_cookie_through(
    site: Proxied, visit: tuple[BrowserContext, Page]
) -> None:
    """The page with the inline loader: Accept all reloads it once (the loader's <script src> needs
    the decided page's policy), then the tracker, the loader and its script run, and PHP's HttpOnly
    marketing cookie, now granted, reaches the browser; the session goes on."""
    context, page = visit
    page.goto(site.url + "/")
    page.wait_for_timeout(200)
    assert site.tracker_requests == []
    navigations: list[str] = []
    page.on("framenavigated", lambda f: navigations.append(f.url) if f == page.main_frame else None)
    with page.expect_navigation():
        banner_button(page, "Accept all")
    wait_until(page, "window.adsTracker === true && window.adsLoader === true")
    assert len(navigations) == 1
    assert {f"{ADS}/t.js", f"{TAGS}/loader.js"} <= set(site.tracker_requests)
    jar = cookies(context, site)
    if site.kind == "php":
        assert jar["_ads"]["value"] == "campaign-7" and jar["_ads"]["httpOnly"] is True
        expect(page.locator("#visits")).to_have_text("Visits this session: 2")
    consent_id = page.evaluate("consentBanner.get().consent_id")
    actions = [r["action"] for r in site.decisions() if r["consent_id"] == consent_id]
    assert actions == ["accept_all"]


def test_the_consent_endpoints_are_the_proxys_own(site: Proxied, visit: tuple[BrowserContext, Page]) -> None:
    """The script, the state and the decisions under /_consent are answered by the proxy: the
    upstream has no such path (PHP's server and http.server would answer 404 or the index page)."""
    context, _ = visit
    state = context.request.get(site.url + "/_consent/state")
    assert state.ok and state.json()["decided"] is False
    script = context.request.get(site.url + "/_consent/consent.js")
    assert script.ok and "javascript" in script.headers["content-type"]
