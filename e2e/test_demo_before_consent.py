"""The demo before any decision: nothing optional reaches the browser (R1, R2, R5, R30, R32)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from playwright.sync_api import expect

if TYPE_CHECKING:
    from demo_support import RunningDemo, Visitor

pytest_plugins = ("demo_support",)

PAGES = ("/", "/offices/stockholm", "/book", "/privacy", "/sv/")


def test_fresh_visit_sets_only_necessary_cookies_and_contacts_no_third_party(
    visitor: Callable[..., Visitor], demo: RunningDemo
) -> None:
    """R1, R2: a fresh visitor browsing five pages gets only necessary cookies, nothing in
    localStorage, and the browser requests nothing from any third-party host (scripts, pixels,
    beacons, iframes), as both the browser and the third-party hosts themselves confirm."""
    v = visitor()
    for path in PAGES:
        v.goto(path)
        expect(v.page.locator("#cb-banner")).to_be_visible()
        v.settle(100)

    assert v.third_party_requests() == [], [s.url for s in v.third_party_requests()]
    assert v.hosts() == {v.demo.url.removeprefix("http://")}
    for name in demo.third_parties:
        assert demo.received(name, since=v.started) == [], f"{name} was contacted"
    by_category = v.cookies_by_category()
    assert set(by_category) <= {"necessary"}, by_category
    assert v.local_storage() == {}
    # The trackers are in the page, only neutralised: proof that the gate, not the template, kept them out.
    assert v.page.locator("script[type='text/plain'][data-consent-category='analytics']").count() == 2
    assert v.page.locator("iframe[data-consent-src]").count() == 2
    assert v.page.locator("img[data-consent-src][data-consent-category='marketing']").count() == 1


def test_consent_mode_default_is_denied_and_no_google_host_is_contacted(
    visitor: Callable[..., Visitor], demo: RunningDemo
) -> None:
    """R30, R32: the Consent Mode default (all four signals denied) is the first dataLayer entry,
    pushed inline with the CSP nonce before any tag; the Google tag stand-in is never fetched."""
    v = visitor()
    response = v.goto("/")
    v.settle()
    calls = v.consent_calls()
    assert calls, "no Consent Mode call in dataLayer"
    kind, signals = calls[0][1], calls[0][2]
    assert kind == "default"
    for signal in ("ad_storage", "ad_user_data", "ad_personalization", "analytics_storage"):
        assert signals[signal] == "denied", (signal, signals)
    first = v.page.evaluate("Array.from(window.dataLayer[0])")
    assert first[0:2] == ["consent", "default"], "a tag pushed to dataLayer before the default"
    nonce = v.page.evaluate("document.head.querySelector('script').nonce")
    assert nonce and f"'nonce-{nonce}'" in response.headers["content-security-policy"]
    assert v.third_party_requests("gtag") == []
    assert demo.received("gtag", since=v.started) == []


def test_before_consent_the_browser_refuses_an_injected_tracker(
    visitor: Callable[..., Visitor], demo: RunningDemo
) -> None:
    """R2: before any decision the page's Content-Security-Policy lets no third-party script run
    but ours (script-src names no third-party origin; the neutralised tags are activated with the
    nonce), so a tracker injected by a page script, past the markup rewrite, is refused by the
    browser itself and never reaches its host."""
    v = visitor()
    response = v.goto("/")
    header = response.headers.get("content-security-policy", "")
    assert header, "no Content-Security-Policy on an HTML page"
    script_src = demo.csp_directives(header).get("script-src", [])
    leaked = [origin for origin in demo.third_parties.values() if origin in script_src]

    injected_at = time.time()
    outcome = v.page.evaluate(
        """(src) => new Promise((resolve) => {
            document.addEventListener("securitypolicyviolation",
                (e) => resolve("refused: " + e.effectiveDirective), {once: true});
            const s = document.createElement("script");
            s.src = src;
            s.onload = () => resolve("loaded");
            s.onerror = () => resolve("error");
            document.body.appendChild(s);
        })""",
        demo.third_parties["ads"] + "/ads.js",
    )
    v.settle(100)
    received = demo.received("ads", since=injected_at)
    assert outcome.startswith("refused: script-src") and received == [], (
        f"an ad script injected before consent was {outcome}, the ad host received {received}; "
        f"script-src lists these third-party origins before any decision: {leaked} ({header})"
    )
    assert leaked == []


def test_privacy_page_shows_the_generated_cookie_declaration(
    visitor: Callable[..., Visitor], demo: RunningDemo
) -> None:
    """R5, R29: the privacy policy carries the cookie declaration generated from consent.toml (every
    declared cookie with category, provider, purpose and lifetime), the recipients and the
    California "Do Not Sell or Share" section; the Swedish page shows the Swedish table."""
    v = visitor()
    v.goto("/privacy")
    table = v.page.locator("main .cb-declaration table")
    expect(table).to_be_visible()
    rows = table.locator("tbody tr")
    declared = [(s, c) for s in demo.config.services for c in s.cookies]
    assert rows.count() == len(declared)
    text = table.inner_text()
    for service, cookie in declared:
        assert cookie.name in text
        assert service.provider in text
    assert "13 months" in text and "Session" in text
    expect(v.page.locator("#recipients")).to_be_visible()
    for name in ("Countwell Analytics Ltd", "Brightpost Ads Inc", "Atlasly Maps AB", "Parley Chat Oy"):
        expect(v.page.locator("table.recipients")).to_contain_text(name)
    expect(v.page.locator("#do-not-sell")).to_contain_text("Do Not Sell or Share My Personal Information")
    dns = v.page.get_by_role("link", name="Do Not Sell or Share My Personal Information")
    expect(dns.first).to_be_visible()

    v.goto("/sv/privacy")
    assert v.page.evaluate("document.documentElement.lang") == "sv"
    swedish = v.page.locator("main .cb-declaration")
    expect(swedish.locator("thead")).to_contain_text("Kategori")
    expect(swedish.locator("tbody")).to_contain_text("Statistik")
    assert swedish.locator("tbody tr").count() == len(declared)
