"""Red team of issue 12 in Chromium: markup reflected into a page that borrows the banner's own forms.

The banner's buttons name their form by id (`form="..."`), and so can any markup on the page: a
reflected `<button form=...>` submits the real form, with the visitor's form token, and a reflected
`<input form=...>` adds its field to the real form's post. One site behind the real
ConsentMiddleware, pages reflecting such markup; the attacker (`https://evil.test`) is stood in for
with Playwright routing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import ServerThread, _free_socket
from playwright.sync_api import BrowserContext, Page, Route, expect
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route as Path_

from consent_banner import ConsentConfig, ConsentMiddleware

EVIL = "https://evil.test"
SHELL = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Search</title></head>
<body><main><h1>Search</h1><p>Results for: {reflected}</p></main></body></html>"""

# Reflected search terms. The banner's form ids as the page shipped them before this file.
BORROW_QUICK = """<button id="fake" form="cb-q" name="action" value="accept_all">Reject all</button>"""
BORROW_DIALOG = """<input type="hidden" form="cb-f" name="categories" value="marketing">"""
SHADOW_QUICK = f"""<form id="cb-q" method="get" action="{EVIL}/phish"></form>"""
# DOM clobbering: a named form is `window.consentBanner` before the script runs, and its `n` input
# looks like the flag of a copy that carried the nonce.
CLOBBER = """<form id="consentBanner"><input name="n"></form>"""
# An unclosed <template>: whatever the gate injects before </body> (the banner, the nonce-carrying
# script) would land in its inert content. Then a fake root and a copy of the script ('self').
SWALLOWERS = {
    "template": "<template>",
    "textarea": "<textarea>",
    "comment": "<!--",
    "attribute": '<p title="',
    "attribute-single": "<p title='",
    "select": "<select>",
    "noscript": "<noscript>",
    "xmp": "<xmp>",
    "svg": "<svg><desc>",
    "object": '<object data="/nothing">',
    "script": "<script><!--<script>",
    "title": "<title>",
    "nested": "<svg><foreignObject><b><template><math><mi><noscript><textarea>",
}
TEMPLATE_FAKE_ROOT = """<div data-consent-root data-prefix="/_consent"
 data-state='{"decided":false,"categories":["necessary"],"services":{},"gpc":false}'>
<form><button id="fake-reject" name="action" value="accept_all">Reject all</button></form>
<dialog></dialog></div><script src="/_consent/consent.js"></script><template>"""


def config(log: str) -> ConsentConfig:
    return ConsentConfig.from_dict(
        {
            "policy_revision": "2026-11-01",
            "controller": "Example AB",
            "privacy_policy_url": "/privacy",
            "log": log,
            "cookie": {"secure": False},
            "categories": {
                "necessary": {"label": "Necessary"},
                "analytics": {"label": "Analytics"},
                "marketing": {"label": "Marketing"},
            },
            "services": [
                {"name": "pixel", "category": "marketing", "provider": "Tracker Ltd"},
                {"name": "stats", "category": "analytics", "provider": "Stats Oy"},
            ],
        }
    )


def build_app(cfg: ConsentConfig) -> ConsentMiddleware:
    def reflect(markup: str) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            return HTMLResponse(SHELL.format(reflected=markup))

        return endpoint

    routes = [
        Path_("/borrow-quick", reflect(BORROW_QUICK)),
        Path_("/borrow-dialog", reflect(BORROW_DIALOG)),
        Path_("/shadow-quick", reflect(SHADOW_QUICK)),
        Path_("/clobber", reflect(CLOBBER)),
        *(Path_("/swallow/" + k, reflect(v)) for k, v in SWALLOWERS.items()),
        Path_("/template-fake-root", reflect(TEMPLATE_FAKE_ROOT)),
    ]
    return ConsentMiddleware(Starlette(routes=routes), config=cfg)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = f"sqlite:///{tmp_path_factory.mktemp('redteam') / 'log.db'}"
    sock = _free_socket()
    with ServerThread(build_app(config(log)), sock):
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def evil(new_context: Callable[..., BrowserContext]) -> list[str]:
    return []


def visitor(new_context: Callable[..., BrowserContext], evil: list[str], *, js: bool) -> Page:
    ctx = new_context(java_script_enabled=js)

    def answer(route: Route) -> None:
        evil.append(route.request.url)
        route.fulfill(body="<!doctype html><title>phish</title><p>evil</p>", content_type="text/html")

    ctx.route(f"{EVIL}/**", answer)
    return ctx.new_page()


def state(page: Page, url: str) -> dict[str, Any]:
    return page.request.get(url + "/_consent/state").json()


@pytest.mark.parametrize("js", [True, False], ids=["js", "nojs"])
def test_a_reflected_button_naming_the_banners_form_records_nothing(
    new_context: Callable[..., BrowserContext], site: str, evil: list[str], js: bool
) -> None:
    """A reflected `<button form=... value=accept_all>Reject all</button>` outside the banner must not
    submit the banner's form: the visitor would have "accepted all" by clicking "Reject all"."""
    page = visitor(new_context, evil, js=js)
    page.goto(site + "/borrow-quick")
    if js:
        page.wait_for_function("() => window.consentBanner && document.readyState === 'complete'")
    page.locator("#fake").click()
    page.wait_for_timeout(500)
    assert state(page, site)["decided"] is False


def test_a_reflected_input_naming_the_dialogs_form_adds_nothing_to_a_choice(
    new_context: Callable[..., BrowserContext], site: str, evil: list[str]
) -> None:
    """JavaScript off: the visitor ticks nothing and saves; a reflected hidden
    `<input form=... name=categories value=marketing>` must not make that a grant of marketing."""
    page = visitor(new_context, evil, js=False)
    page.goto(site + "/borrow-dialog")
    page.get_by_role("button", name="Customise").click()
    dialog = page.locator("#cb-dialog")
    expect(dialog).to_be_visible()
    with page.expect_navigation():
        dialog.get_by_role("button", name="Save choices").click()
    s = state(page, site)
    assert s["decided"] is True
    assert s["categories"] == ["necessary"]


@pytest.mark.parametrize("js", [True, False], ids=["js", "nojs"])
def test_a_reflected_form_with_the_banners_id_does_not_capture_its_buttons(
    new_context: Callable[..., BrowserContext], site: str, evil: list[str], js: bool
) -> None:
    """A reflected `<form id=...>` before the banner must not become the form of the banner's own
    "Reject all" (which would then take the visitor to the attacker and record nothing)."""
    page = visitor(new_context, evil, js=js)
    page.goto(site + "/shadow-quick")
    if js:
        page.wait_for_function("() => window.consentBanner && document.readyState === 'complete'")
    page.get_by_role("button", name="Reject all").click()
    page.wait_for_timeout(500)
    assert evil == []
    s = state(page, site)
    assert s["decided"] is True and s["categories"] == ["necessary"]


def test_a_clobbered_global_does_not_switch_the_script_off(
    new_context: Callable[..., BrowserContext], site: str, evil: list[str]
) -> None:
    """A reflected `<form id="consentBanner"><input name="n"></form>` must not make the gate's own copy
    of consent.js believe a nonce-carrying copy already runs: the page would lose the script's API
    (`consentBanner.on/show/get`) and decisions would fall back to full-page form posts."""
    page = visitor(new_context, evil, js=True)
    page.goto(site + "/clobber")
    page.wait_for_load_state("load")
    page.wait_for_timeout(300)
    assert page.evaluate("typeof (window.consentBanner && window.consentBanner.get)") == "function"


def _swallow_cases() -> list[Any]:
    return [
        pytest.param(opener, js, id=f"{opener}-{'js' if js else 'nojs'}")
        for opener in SWALLOWERS
        for js in (True, False)
    ]


@pytest.mark.parametrize(("opener", "js"), _swallow_cases())
def test_an_unclosed_element_does_not_swallow_the_banner(
    new_context: Callable[..., BrowserContext], site: str, evil: list[str], opener: str, js: bool
) -> None:
    """A reflected, unclosed element must not make the banner and the gate's script inert or text:
    the visitor could not decide, and a reflected copy of the script would take the page."""
    page = visitor(new_context, evil, js=js)
    page.goto(site + "/swallow/" + opener)
    expect(page.locator("#cb-banner")).to_be_visible()
    if js:
        page.wait_for_function("() => typeof window.consentBanner?.get === 'function'")


def test_a_swallowed_script_leaves_no_fake_banner_to_record_accept_all(
    new_context: Callable[..., BrowserContext], site: str, evil: list[str]
) -> None:
    """Reflected: a fake banner root whose "Reject all" sends accept_all, a copy of consent.js, and an
    unclosed `<template>` to bury the gate's own banner and script. Clicking the fake "Reject all"
    must not record accept_all."""
    page = visitor(new_context, evil, js=True)
    page.goto(site + "/template-fake-root")
    page.wait_for_load_state("load")
    page.wait_for_timeout(300)
    page.locator("#fake-reject").click()
    page.wait_for_timeout(500)
    assert state(page, site)["categories"] == ["necessary"]
