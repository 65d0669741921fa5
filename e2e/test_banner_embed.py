"""Embedded mode: a non-Python site on another origin includes the script from the consent server."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Page, expect


def test_embedded_site_gets_a_first_party_cookie(page: Page, context: BrowserContext, site: Any) -> None:
    """R17, R2: the banner comes from the consent server; the token is kept as a cookie of the site itself."""
    cross = []
    page.on("request", lambda r: cross.append(r) if r.url.startswith(site.url) else None)
    page.goto(site.embed_url + "/")
    banner = page.locator("#cb-banner")
    expect(banner).to_be_visible()
    assert page.evaluate("window.cbOrder") is None
    page.get_by_role("button", name="Accept all").click()
    page.wait_for_function("() => (window.cbOrder || []).length >= 4")
    assert page.evaluate("window.cbOrder") == ["stats", "inline", "late", "ads"]
    expect(banner).to_have_count(0)
    first_party = [c for c in context.cookies(site.embed_url) if c["name"] == "site_consent"]
    assert len(first_party) == 1 and first_party[0]["domain"] == "localhost"
    assert first_party[0]["expires"] > 0  # persistent, max-age from the server
    assert context.cookies(site.url) == []  # nothing stored for the consent server's origin
    assert all("cookie" not in r.all_headers() for r in cross)
    calls = page.evaluate("dataLayer.map(a => Array.from(a)).filter(a => a[0] === 'consent').map(a => a[1])")
    assert calls == ["default", "update"]
    # next visit: the token travels in X-Consent-Token and the server renders the decided state
    page.reload()
    expect(page.get_by_role("button", name="Cookie settings")).to_be_visible()
    expect(page.locator("#cb-banner")).to_have_count(0)
    assert page.evaluate("consentBanner.get()")["categories"] == ["necessary", "analytics", "marketing"]
    page.wait_for_function("() => (window.cbOrder || []).length >= 4")
    # withdrawal from the settings updates the first-party cookie
    before = first_party[0]["value"]
    page.get_by_role("button", name="Cookie settings").click()
    page.locator("#cb-dialog").get_by_role("button", name="Reject all").click()
    expect(page.locator("#cb-dialog")).to_be_hidden()
    after = [c for c in context.cookies(site.embed_url) if c["name"] == "site_consent"][0]["value"]
    assert after != before
    assert page.evaluate("consentBanner.get()")["categories"] == ["necessary"]


def test_embedded_banner_comes_back_for_an_old_revision(
    context: BrowserContext, site: Any, old_revision_token: str
) -> None:
    """R18: the consent server judges the first-party token; an old revision's brings the banner back."""
    context.add_cookies([{"name": "site_consent", "value": old_revision_token, "url": site.embed_url}])
    page = context.new_page()
    page.goto(site.embed_url + "/")
    expect(page.locator("#cb-banner")).to_be_visible()
    assert page.evaluate("consentBanner.get()")["decided"] is False
    page.get_by_role("button", name="Reject all").click()
    expect(page.locator("#cb-banner")).to_have_count(0)
    token = [c for c in context.cookies(site.embed_url) if c["name"] == "site_consent"][0]["value"]
    assert token != old_revision_token


# Sets (or, for null, removes) <html lang> as the parser inserts it: before the script reads it.
SET_HTML_LANG = """(lang) => new MutationObserver((_, observer) => {
    const root = document.documentElement;
    if (!root) return;
    observer.disconnect();
    if (lang === null) root.removeAttribute("lang");
    else root.lang = lang;
}).observe(document, {childList: true})"""


@pytest.mark.parametrize("html_lang", [None, "fi"])
def test_an_embedded_banner_is_in_the_language_the_server_negotiates(
    new_context: Callable[..., BrowserContext], site: Any, html_lang: str | None
) -> None:
    """The page's <html lang> is sent; when the server has no texts for it (or it is absent), the
    server falls back to the Accept-Language the browser sends, as for its own pages, whatever
    navigator.language says."""
    ctx = new_context(locale="en-US", extra_http_headers={"Accept-Language": "sv"})
    ctx.add_init_script(f"({SET_HTML_LANG})({json.dumps(html_lang)})")
    page = ctx.new_page()
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/_consent/banner" in r.url else None)
    page.goto(site.embed_url + "/")
    assert page.evaluate("[navigator.language, document.documentElement.lang]") == ["en-US", html_lang or ""]
    expect(page.locator("#cb-banner h2")).to_have_text("Dina val om integritet")
    assert asked == [f"{site.url}/_consent/banner?lang={html_lang or ''}"]
