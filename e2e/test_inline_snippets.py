"""The vendors' official inline snippets in Chromium (issue 15; R2, R31): Google Tag Manager, the
Google tag (GA4) and the Meta Pixel pasted verbatim into a page (tests/fixtures/snippets), and a
self-hosted Matomo. The vendors' hosts are stood in for by Playwright routing (each stand-in records
that it ran, and a loader inserts its children as the real one does); nothing leaves the machine.

Two paths after consent: a loader whose children come from origins this page's policy refuses
(every vendor before a decision) makes the page reload once, and its children load on the fresh
page; a loader whose children are the site's own (Matomo on the site) runs on the page where the
visitor decided. Either way a denied vendor that a granted loader tries to load is refused by the
browser itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import ServerThread, _free_socket
from playwright.sync_api import BrowserContext, Page, Route, expect
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route as Path_

from consent_banner import ConsentConfig, ConsentMiddleware

SNIPPETS = Path(__file__).parent.parent / "tests" / "fixtures" / "snippets"
NAMES = ("gtm", "ga4", "meta-pixel", "matomo")
GTM, GA4, META, MATOMO = ((SNIPPETS / f"{n}.html").read_text() for n in NAMES)
PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>
{head}</head><body><main><h1>{title}</h1><p><a href="/">Home</a></p></main></body></html>"""
VENDORS = (
    "https://www.googletagmanager.com",
    "https://www.google-analytics.com",
    "https://connect.facebook.net",
    "https://www.facebook.com",
)
# The stand-ins (each a block: a library may run twice in a page). Each records its run in
# window.__ran; the tag manager loads the Google tag (as a container with a GA4 tag does) and the
# Meta Pixel's library (a tag the site added in GTM for a vendor the visitor may have denied); the
# Google tag reads the commands the snippet queued.
GTM_JS = """(window.__ran = window.__ran || []).push("gtm.js");
for (const src of ["https://www.googletagmanager.com/gtag/js?id=G-FROM-GTM",
                   "https://connect.facebook.net/en_US/fbevents.js?from=gtm"]) {
  const s = document.createElement("script"); s.async = true; s.src = src; document.head.appendChild(s);
}"""
GTAG_JS = """{ (window.__ran = window.__ran || []).push("gtag.js");
window.__gaConfigs = window.__gaConfigs || [];
const seen = (a) => { if (a && a[0] === "config") window.__gaConfigs.push(a[1]); };
(window.dataLayer || []).forEach(seen);
const push = dataLayer.push.bind(dataLayer);
dataLayer.push = (...items) => { items.forEach(seen); return push(...items); };
navigator.sendBeacon("https://www.google-analytics.com/g/collect?tid=G-TEST123"); }"""
FBEVENTS_JS = """(window.__ran = window.__ran || []).push("fbevents.js");
window.__fbInit = (fbq.queue || []).filter((a) => a[0] === "init").map((a) => a[1]);"""
# Matomo's library, served by the site itself: it reads the queue, tracks (to the site), and, as a
# plugin could, tries to load a vendor the visitor denied.
MATOMO_JS = """{ (window.__ran = window.__ran || []).push("matomo.js");
window.__paqSite = _paq.find((a) => a[0] === "setSiteId")[1];
fetch(_paq.find((a) => a[0] === "setTrackerUrl")[1] + "?idsite=" + window.__paqSite);
const s = document.createElement("script");
s.src = "https://connect.facebook.net/en_US/fbevents.js?from=matomo";
document.head.appendChild(s); }"""
# In every document of the context, before its scripts: what the policy refused.
WATCH_CSP = """window.__refused = [];
document.addEventListener("securitypolicyviolation", (e) => window.__refused.push(e.blockedURI));"""


@dataclass
class Site:
    url: str
    own: list[str] = field(default_factory=list)  # paths of the site's Matomo the browser asked for


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    log = tmp_path_factory.mktemp("inline-snippets") / "log.db"
    sock = _free_socket()
    found = Site(url=f"http://127.0.0.1:{sock.getsockname()[1]}")
    config = ConsentConfig.from_dict(
        {
            "policy_revision": "2026-11-01",
            "controller": "Example AB",
            "privacy_policy_url": "/privacy",
            "log": f"sqlite:///{log}",
            "cookie": {"secure": False},
            "categories": {
                "necessary": {"label": "Necessary"},
                "analytics": {"label": "Analytics"},
                "marketing": {"label": "Marketing"},
            },
            "services": [
                {"name": "gtm", "preset": "google-tag-manager", "category": "analytics"},
                {"name": "ga", "preset": "google-analytics", "category": "analytics"},
                {"name": "meta", "preset": "meta-pixel", "category": "marketing"},
                # self-hosted: its library and tracker are the site's own (no origin of its own)
                {"name": "matomo", "preset": "matomo", "category": "analytics", "origins": []},
            ],
        }
    )
    matomo = MATOMO.replace("{$MATOMO_URL}", found.url.removeprefix("http://") + "/matomo").replace(
        "{$IDSITE}", "7"
    )
    pages = {"/": GTM + GA4 + META, "/matomo": matomo}

    def serve(head: str) -> Any:
        async def endpoint(request: Request) -> Response:
            return HTMLResponse(PAGE.format(title="Snippets", head=head))

        return endpoint

    async def own(request: Request) -> Response:
        found.own.append(request.url.path)
        if request.url.path.endswith(".js"):
            return Response(MATOMO_JS, media_type="text/javascript")
        return Response(status_code=204)

    routes = [*(Path_(p, serve(h)) for p, h in pages.items()), Path_("/matomo/{name}", own)]
    with ServerThread(ConsentMiddleware(Starlette(routes=routes), config=config), sock):
        yield found


@dataclass
class Visit:
    page: Page
    vendor_requests: list[str]  # what reached the stand-ins, in order
    navigations: list[str]  # main-frame navigations after the first load

    def ran(self) -> list[str]:
        return self.page.evaluate("window.__ran || []")

    def refused(self) -> list[str]:
        return self.page.evaluate("window.__refused")

    def data_layer(self) -> list[Any]:
        """What the snippets queued (not Consent Mode's own calls), as arrays."""
        return self.page.evaluate(
            "(window.dataLayer || []).map((a) => a && a.length !== undefined ? Array.from(a).map(String) : a)"
            ".filter((a) => !(Array.isArray(a) && a[0] === 'consent'))"
        )


@pytest.fixture
def visit(new_context: Callable[..., BrowserContext], site: Site) -> Callable[[str], Visit]:
    def open_(path: str) -> Visit:
        context = new_context()
        context.add_init_script(WATCH_CSP)
        requests: list[str] = []

        def stand_in(route: Route) -> None:
            url = route.request.url
            requests.append(url)
            body = (
                GTM_JS if "/gtm.js" in url
                else GTAG_JS if "/gtag/js" in url
                else FBEVENTS_JS if "fbevents.js" in url
                else ""
            )
            route.fulfill(status=200, body=body, content_type="text/javascript")

        for origin in VENDORS:
            context.route(origin + "/**", stand_in)
        page = context.new_page()
        page.goto(site.url + path)
        navigations: list[str] = []
        page.on("framenavigated", lambda f: navigations.append(f.url) if f == page.main_frame else None)
        return Visit(page, requests, navigations)

    return open_


def choose(v: Visit, *categories: str) -> None:
    """A custom choice in the dialog: only `categories` switched on."""
    v.page.get_by_role("button", name="Customise").click()
    dialog = v.page.locator("#cb-dialog")
    for label in categories:
        dialog.get_by_role("switch", name=label).check()
    dialog.get_by_role("button", name="Save choices").click()


def nothing_ran(v: Visit) -> None:
    v.page.wait_for_timeout(300)
    assert v.ran() == [] and v.vendor_requests == []
    assert v.page.evaluate("typeof window.fbq") == "undefined"  # the Meta snippet defines it
    assert v.data_layer() == []  # GTM's gtm.start, the Google tag's js and config


def test_nothing_runs_or_is_fetched_before_consent_or_after_reject(visit: Callable[[str], Visit]) -> None:
    """R2: the three snippets are in the page, inert: no code of theirs runs, no vendor is asked for
    anything, before a decision, after Reject all, and on the next page."""
    v = visit("/")
    held = v.page.locator("script[type='text/plain'][data-consent-service]")
    # GTM's, the Google tag's two (its library is a <script src>) and Meta's: kept in place, labelled
    assert held.evaluate_all("els => els.map(e => e.dataset.consentService)") == ["gtm", "gtm", "ga", "meta"]
    nothing_ran(v)
    v.page.get_by_role("button", name="Reject all").click()
    expect(v.page.locator("#cb-banner")).to_have_count(0)
    nothing_ran(v)
    assert v.navigations == []  # nothing to reload for
    v.page.reload()
    nothing_ran(v)


def test_accept_reloads_once_and_the_loaders_children_load(visit: Callable[[str], Visit]) -> None:
    """R31 with the reload rule: the loaders' children come from origins this undecided page's
    policy refuses, so Accept all reloads the page once; there the snippets run where they stand,
    in document order (GTM's gtm.start before the Google tag's js and config, which the Google tag's
    library then reads), and their libraries and children load. No second reload."""
    v = visit("/")
    with v.page.expect_navigation():
        v.page.get_by_role("button", name="Accept all").click()
    v.page.wait_for_function("() => (window.__ran || []).length >= 5")
    v.page.wait_for_timeout(500)
    assert len(v.navigations) == 1, v.navigations  # one reload, no loop
    assert v.page.evaluate("performance.getEntriesByType('navigation')[0].type") == "reload"
    assert sorted(v.ran()) == ["fbevents.js", "fbevents.js", "gtag.js", "gtag.js", "gtm.js"], v.ran()
    queued = v.data_layer()
    assert [e[0] if isinstance(e, list) else next(iter(e)) for e in queued] == ["gtm.start", "js", "config"]
    assert "G-TEST123" in v.page.evaluate("window.__gaConfigs")
    assert v.page.evaluate("window.__fbInit") == ["1234567890"]
    paths = [u.split("?")[0] for u in v.vendor_requests]
    for wanted in (
        "https://www.googletagmanager.com/gtm.js",
        "https://www.googletagmanager.com/gtag/js",
        "https://connect.facebook.net/en_US/fbevents.js",
        "https://www.google-analytics.com/g/collect",
    ):
        assert wanted in paths, (wanted, v.vendor_requests, v.refused())
    assert v.refused() == []


def test_a_denied_vendor_loaded_from_inside_a_granted_loader_is_refused(
    visit: Callable[[str], Visit],
) -> None:
    """Analytics only: the tag manager is granted (one reload, then it runs and loads the Google
    tag), the Meta Pixel is not: its snippet stays inert, and the Meta library the tag manager
    inserts is refused by the browser (never requested, a CSP violation)."""
    v = visit("/")
    with v.page.expect_navigation():
        choose(v, "Analytics")
    v.page.wait_for_function("() => (window.__ran || []).includes('gtm.js') && window.__refused.length > 0")
    v.page.wait_for_timeout(300)
    assert len(v.navigations) == 1
    assert "fbevents.js" not in v.ran() and v.page.evaluate("typeof window.fbq") == "undefined"
    assert not [u for u in v.vendor_requests if "facebook" in u], v.vendor_requests
    assert any(u.startswith("https://connect.facebook.net/") for u in v.refused()), v.refused()
    assert any("/gtag/js?id=G-FROM-GTM" in u for u in v.vendor_requests)


def test_a_loader_whose_children_are_the_sites_own_runs_without_a_reload(
    visit: Callable[[str], Visit], site: Site
) -> None:
    """Matomo on the site's own origin (no origin of its own: 'self'): its snippet is held before a
    decision (the site's library is not even asked for), and after the choice it runs on this very
    page, its library loads and tracks; the denied vendor the library tries to load is refused."""
    v = visit("/matomo")
    v.page.wait_for_timeout(300)
    assert v.ran() == [] and not [p for p in site.own if p.endswith(".js")]
    tag = v.page.locator("script[data-consent-service='matomo']")
    expect(tag).to_have_attribute("type", "text/plain")
    assert tag.get_attribute("data-consent-reload") is None
    v.page.evaluate("window.__sameDocument = true")
    choose(v, "Analytics")
    v.page.wait_for_function(
        "() => (window.__ran || []).includes('matomo.js') && window.__refused.length > 0"
    )
    v.page.wait_for_timeout(300)
    assert v.navigations == [] and v.page.evaluate("window.__sameDocument") is True
    assert v.page.evaluate("performance.getEntriesByType('navigation')[0].type") == "navigate"
    assert v.page.evaluate("window.__paqSite") == 7
    assert {"/matomo/matomo.js", "/matomo/matomo.php"} <= set(site.own), site.own
    assert v.vendor_requests == [] and v.refused() == [
        "https://connect.facebook.net/en_US/fbevents.js?from=matomo"
    ]
