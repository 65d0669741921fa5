"""The HTML rewriter in Chromium (issue 12, item 4): markup that fooled the previous rewriter fetches
from the tracker as written, and nothing once rewritten, with JavaScript on and off.

No Content-Security-Policy here, on purpose: this is what the rewriter alone stops (the policy is
tested in test_gate_policy.py). The page and the tracker (`https://px.tracker.test`, a marketing
origin the visitor has not granted) are stood in for with Playwright routing, which records every
request that reaches the tracker.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import BrowserContext, Route

from consent_banner import ConsentConfig
from consent_banner.consent import Consent
from consent_banner.gate import ResponseGate
from consent_banner.gate.html import HtmlRewriter

SITE = "https://site.test"
PX = "https://px.tracker.test/p"
CONFIG = ConsentConfig.from_dict(
    {
        "policy_revision": "1",
        "controller": "Example AB",
        "privacy_policy_url": "/privacy",
        "categories": {"necessary": {"label": "Necessary"}, "marketing": {"label": "Marketing"}},
        "services": [{"name": "ads", "category": "marketing", "origins": ["https://*.tracker.test"]}],
    }
)
HOSTS = ResponseGate(CONFIG, own_cookie_names=frozenset({"consent"})).plan(
    Consent(id="c", granted=frozenset(), revision="1", decided_at=1)
).hosts

EXAMPLES = {
    "reference in the host": '<img src="https://px.tracker&#46;test/p">',
    "percent-encoded dot": '<img src="https://px.tracker%2Etest/p">',
    "full-width dot": '<img src="https://px.tracker\uff0etest/p">',
    "newline in the host": '<img src="https://px.tra\ncker.test/p">',
    "<image>": f'<image src="{PX}">',
    "<input type=image>": f'<input type="image" src="{PX}">',
    "svg <image href>": f'<svg><image href="{PX}" width="1" height="1"/></svg>',
    "table background": f'<table background="{PX}"><tr><td>x</td></tr></table>',
    "srcset": f'<img srcset="{PX} 1x">',
    "video poster": f'<video poster="{PX}"></video>',
    "<style> url()": f"<style>body{{background:url({PX})}}</style>",
    "@import": f'<style>@import "{PX}";</style>',
    "style attribute": f"<div style=\"background:url('{PX}')\">x</div>",
    'alt="<<<<" before src': f'<img alt="<<<<" src="{PX}">',
    "bogus comment <?": f'<? <!-- ?><img src="{PX}">',
    "bogus comment </3": f'</3 <!-- ><img src="{PX}">',
    "svg <style> with <img>": f'<svg><style><img src="{PX}"></style></svg>',
    "svg <plaintext>": f'<svg><plaintext></plaintext></svg><img src="{PX}">',
    "script double escape": f'<script><!--<script></script><!--</script><img src="{PX}">',
    "iframe srcdoc": f"<iframe srcdoc=\"<img src='{PX}'>\"></iframe>",
    "noscript pixel": f'<noscript><img src="{PX}"></noscript>',
}


SHELL = '<!doctype html><html><head><meta charset="utf-8"><title>t</title></head><body>{}<p>end</p></body>'


def rewrite(body: str) -> str:
    rw = HtmlRewriter(HOSTS, None, mark=lambda: "n0nce")
    return (rw.feed(SHELL.format(body).encode()) + rw.finish()).decode()


def tracker_hits(new_context: Callable[..., BrowserContext], html: str, javascript: bool) -> list[str]:
    ctx = new_context(java_script_enabled=javascript)
    hits: list[str] = []

    def tracker(route: Route) -> None:
        hits.append(route.request.url)
        route.fulfill(status=204)

    ctx.route("https://*.tracker.test/**", tracker)
    page_type = "text/html; charset=utf-8"
    ctx.route(f"{SITE}/", lambda route: route.fulfill(status=200, content_type=page_type, body=html))
    page = ctx.new_page()
    page.goto(f"{SITE}/", wait_until="load")
    page.wait_for_timeout(150)  # a late fetch (lazy image, CSS) would still be recorded
    return hits


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_markup_that_fooled_the_rewriter_fetches_nothing_once_rewritten(
    new_context: Callable[..., BrowserContext], name: str
) -> None:
    body = EXAMPLES[name]
    javascript = name != "noscript pixel"  # that one is live markup with JavaScript off
    assert tracker_hits(new_context, SHELL.format(body), javascript), "the example does fetch as written"
    assert tracker_hits(new_context, rewrite(body), javascript) == []
