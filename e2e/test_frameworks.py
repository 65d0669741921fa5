"""A Flask app and a Django app, both under WSGI behind the whole gate
(`ConsentMiddleware(a2wsgi.WSGIMiddleware(app))`, served by uvicorn), pass the demo's journeys in
Chromium: before consent, Reject all, Accept all, withdrawal (issue 16).

The site is tests/support/frameworks.py, one site written in both frameworks: a template whose inline
script carries the nonce, a tracker script (analytics) and a pixel (marketing) from vendor hosts that
Playwright's routing stands in for, the necessary `booking_session` cookie and, on a campaign link,
the app's own HttpOnly marketing cookie `_ads`. The visitor is the demo's `Visitor`
(e2e/demo_support.py) on this site: the same recording of requests by host and of cookies by
category.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest
from a2wsgi import WSGIMiddleware
from conftest import ServerThread
from playwright.sync_api import BrowserContext, Route, expect

from consent_banner import ConsentConfig, ConsentMiddleware
from tests.support.frameworks import django_settings, flask_app

if TYPE_CHECKING:
    from demo_support import Visitor

pytest_plugins = ("demo_support",)

VENDORS = {"stats": "https://stats.example.net", "ads": "https://ads.example.com"}
PIXEL = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"


def config(log: str) -> ConsentConfig:
    return ConsentConfig.from_dict(
        {
            "policy_revision": "2026-12-01",
            "controller": "Example Offices AB",
            "privacy_policy_url": "/privacy",
            "log": log,
            "cookie": {"secure": False},
            "categories": {
                "necessary": {"label": "Necessary"},
                "analytics": {"label": "Analytics", "description": "Counts visits."},
                "marketing": {"label": "Marketing", "description": "Measures campaigns."},
            },
            "services": [
                {
                    "name": "booking",
                    "category": "necessary",
                    "provider": "Example Offices AB",
                    "purpose": "Keeps the booking session",
                    "cookies": [  # the consent cookies declared as the demo declares them
                        {"name": "booking_session", "lifetime": "session"},
                        {"name": "consent", "lifetime": "6 months"},
                        {"name": "consent_csrf", "lifetime": "session"},
                    ],
                },
                {
                    "name": "stats",
                    "category": "analytics",
                    "provider": "Example Stats Ltd",
                    "purpose": "Counts visits",
                    "origins": [VENDORS["stats"]],
                    "cookies": [{"name": "_st_ses", "lifetime": "30 minutes"}],
                },
                {
                    "name": "ads",
                    "category": "marketing",
                    "provider": "Ads Inc",
                    "purpose": "Measures campaigns",
                    "origins": [VENDORS["ads"]],
                    "cookies": [{"name": "_ads", "lifetime": "90 days"}],
                },
            ],
        }
    )


@dataclass
class FrameworkSite:
    """What the demo's `Visitor` asks of a site (as `demo_support.RunningDemo` answers it): where it
    is, its config, its third parties and what each received (here: what the browser's routing of
    their hosts answered)."""

    url: str
    config: ConsentConfig
    hits: list[tuple[str, float, str]] = field(default_factory=list)  # (vendor, at, path)

    @property
    def prefix(self) -> str:
        return self.config.prefix

    @property
    def third_parties(self) -> dict[str, str]:
        return VENDORS

    def third_party_of(self, url: str) -> str | None:
        parts = urlsplit(url)
        return next((n for n, o in VENDORS.items() if o == f"{parts.scheme}://{parts.netloc}"), None)

    def category_of(self, name: str) -> str:
        return self.config.services_by_name[name].category

    def received(self, name: str, since: float = 0.0) -> list[dict[str, Any]]:
        return [{"at": at, "path": p} for n, at, p in self.hits if n == name and at >= since]

    def stand_in_for_vendors(self, context: BrowserContext) -> None:
        """The vendors' hosts, answered in the browser: the tracker script marks its run and sets
        its cookie on the site, the pixel is a GIF."""

        def answer(route: Route) -> None:
            url = route.request.url
            name = self.third_party_of(url) or "?"
            self.hits.append((name, time.time(), urlsplit(url).path))
            if name == "stats":
                body = 'window.statsRan = true; document.cookie = "_st_ses=1; path=/";'
                route.fulfill(status=200, content_type="text/javascript", body=body)
            else:
                route.fulfill(status=200, content_type="image/gif", body=PIXEL)

        for origin in VENDORS.values():
            context.route(f"{origin}/**", answer)


@pytest.fixture(scope="module", params=["flask", "django"])
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FrameworkSite]:
    """The framework's WSGI app behind the gate, served by uvicorn (lifespan on) on a free port."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    log = f"sqlite:///{Path(tmp_path_factory.mktemp(request.param)) / 'log.db'}"
    with django_settings():  # Django's URLconf and templates (Flask ignores them)
        if request.param == "flask":
            wsgi: Any = flask_app()
        else:
            from django.core.wsgi import get_wsgi_application

            wsgi = get_wsgi_application()
        cfg = config(log)
        with ServerThread(ConsentMiddleware(WSGIMiddleware(wsgi), config=cfg), sock) as server:
            yield FrameworkSite(f"http://127.0.0.1:{server.port}", cfg)


@pytest.fixture
def visitor(new_context: Callable[..., BrowserContext], site: FrameworkSite) -> Callable[[], Visitor]:
    from demo_support import Visitor  # registered as a plugin above: imported after its rewrite

    def make() -> Visitor:
        context = new_context()
        site.stand_in_for_vendors(context)
        return Visitor(site, context, context.new_page())  # type: ignore[arg-type]

    return make


def test_before_consent_nothing_optional_reaches_the_browser(visitor: Callable[[], Visitor]) -> None:
    """R1, R2, R3: the banner is shown; the app's own inline script runs (its template carries the
    policy's nonce); no vendor host is asked; the app's marketing cookie never arrives, its
    necessary one does."""
    v = visitor()
    v.goto("/?utm_source=mail")
    expect(v.page.locator("#cb-banner")).to_be_visible()
    v.settle(100)
    assert v.page.evaluate("window.appInline") in ("Flask page", "Django page")
    assert v.third_party_requests() == [], [s.url for s in v.third_party_requests()]
    by_category = v.cookies_by_category()
    assert set(by_category) == {"necessary"} and "booking_session" in by_category["necessary"], by_category
    assert v.page.locator("script[type='text/plain'][data-consent-category='analytics']").count() == 1


def test_reject_all_expires_the_apps_httponly_marketing_cookie(visitor: Callable[[], Visitor]) -> None:
    """R3, R16: cookies of analytics and marketing planted beforehand, HttpOnly (no script can remove
    them), are expired by the server after Reject all; a campaign link sets nothing; no vendor host
    is asked; the app's tracking endpoint answers 204 without running."""
    v = visitor()
    host = urlsplit(v.demo.url).hostname
    v.context.add_cookies([
        {"name": name, "value": "planted", "domain": host, "path": "/", "httpOnly": True,
         "sameSite": "Lax", "expires": time.time() + 86400}
        for name in ("_ads", "_st_ses")
    ])
    assert v.optional_cookies() == {"_ads", "_st_ses"}
    v.goto("/")
    v.click("Reject all")
    expect(v.page.locator("#cb-banner")).to_have_count(0)
    assert v.state()["categories"] == ["necessary"]
    v.goto("/?utm_source=again")
    v.settle(100)
    assert v.optional_cookies() == set()
    assert v.third_party_requests() == []
    assert v.context.request.get(v.demo.url + "/collect").status == 204


def test_accept_all_starts_the_trackers_without_a_reload(visitor: Callable[[], Visitor]) -> None:
    """R31, R3: one click starts the tracker script and the pixel in the page already loaded; the
    next campaign link sets the app's marketing cookie; the tracking endpoint runs."""
    v = visitor()
    v.goto("/")
    v.page.evaluate("window.__sameDocument = true")
    v.click("Accept all")
    expect(v.page.locator("#cb-banner")).to_have_count(0)
    v.wait_until("window.statsRan")
    v.settle(100)
    assert v.page.evaluate("window.__sameDocument") is True, "the page was reloaded"
    assert {(s.third_party, urlsplit(s.url).path) for s in v.third_party_requests()} >= {
        ("stats", "/s.js"),
        ("ads", "/px.gif"),
    }
    v.goto("/?utm_source=news")
    assert "_ads" in v.cookies_by_category().get("marketing", set())
    assert v.context.request.get(v.demo.url + "/collect").ok


def test_withdrawing_expires_what_was_granted(visitor: Callable[[], Visitor]) -> None:
    """R15, R16: after Accept all, the settings button's Reject all withdraws; the next page expires
    the tracker's and the app's cookies and asks no vendor host."""
    v = visitor()
    v.goto("/")
    v.click("Accept all")
    expect(v.page.locator("#cb-banner")).to_have_count(0)  # recorded: the cookie is set
    v.goto("/?utm_source=news")
    v.wait_until("window.statsRan")
    assert {"_ads", "_st_ses"} <= v.optional_cookies()

    v.page.locator("[data-cb-settings]").click()
    dialog = v.page.locator("#cb-dialog")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Reject all").click()
    v.wait_until("window.consentBanner.get().categories.length === 1")
    assert v.state()["categories"] == ["necessary"]

    started = time.time()
    v.goto("/")
    v.settle(100)
    assert v.optional_cookies() == set()
    assert [r for n in VENDORS for r in v.demo.received(n, since=started)] == []
    assert [r["action"] for r in v.receipt()] == ["accept_all", "withdraw"]
