"""The policy side of issue 12 in Chromium: what reflected markup, an injected <base>, stylesheets,
XHTML, unlabelled bodies and pages the gate cannot read get to load.

Three sites share one config and page set behind the real ConsentMiddleware: `csp = "enforce"` (the
default `csp_undecided = "may-grant"`), the same with `csp_undecided = "strict"`, and `csp = "off"`.
The tracker (`https://tracker.test`, a declared marketing origin) and the attacker
(`https://evil.test`, declared nowhere) are stood in for with Playwright routing, which records
every request that reaches them: a request the browser refuses never does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import ServerThread, _free_socket, tracker_config
from playwright.sync_api import BrowserContext, Page, Route, expect
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route as Path_

from consent_banner import ConsentConfig, ConsentMiddleware, csp_nonce

TRACKER = "https://tracker.test"
EVIL = "https://evil.test"

SHELL = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>{head}</head>
<body><main><h1>{title}</h1>{body}</main></body></html>"""

# What an attacker reflected into a page (a search term, a comment...), made to look like the gate's
# neutralised markup: an always-allowed "necessary" script, a remote one with a guessed nonce,
# an image and an iframe waiting for their source, and an "Allow" button disguised as "Close".
REFLECTED = f"""
<script type="text/plain" data-consent-category="necessary">window.pwned = "inline"</script>
<script type="text/plain" data-consent-category="necessary" nonce="guess"
 data-consent-src="{EVIL}/x.js"></script>
<img id="fake-img" alt="" data-consent-category="necessary" data-consent-src="{EVIL}/p.gif">
<iframe id="fake-frame" title="x" data-consent-category="necessary" data-consent-src="/frame"></iframe>
<div data-consent-placeholder="pixel" data-consent-category="marketing">
<button type="button" id="fake-allow" data-consent-allow="marketing">Close</button></div>
"""

# Reflected tracker tags that bring their own copy of the attributes activation reads: a second
# source beside the tracker's, an always-allowed category. The gate keeps only what it wrote.
HIJACK = f"""<script data-consent-src="{EVIL}/h1.js" src="{TRACKER}/h1.js"></script>
<script src="{EVIL}/h2.js" src="{TRACKER}/h2.js"></script>
<img id="h3" alt="" data-consent-category="necessary" src="{TRACKER}/h3.gif">"""

# A copy of our own script ('self' admits it) and a banner root of the attacker's making, whose
# "Reject all" button sends accept_all, both reflected before the gate's own.
FAKE_ROOT = """<script src="/_consent/consent.js"></script>
<div data-consent-root data-prefix="/_consent"
 data-state='{"decided":false,"categories":["necessary"],"services":{},"gpc":false}'>
<form method="post" action="/_consent"><button id="fake-reject" name="action" value="accept_all">Reject
all</button></form><dialog></dialog></div>"""

# The site's own tracker tags, which the gate neutralises (and marks with the page's nonce).
TRACKED = f"""<script src="{TRACKER}/t.js"></script><img id="px" alt="" src="{TRACKER}/p.gif">
<table id="tb" background="{TRACKER}/bg.gif"><tr><td>cell</td></tr></table>
<script type="text/plain" data-consent-category="marketing" nonce="{{nonce}}">window.own = 1</script>"""

STYLES = f"""<link rel="stylesheet" href="https://tracker&#46;test/s.css">
<style>@import url("{TRACKER}/i.css");
@font-face {{ font-family: T; src: url("{TRACKER}/f.woff2"); }} p {{ font-family: T, serif; }}</style>"""

INLINE_STYLED = """<style>.card { color: rgb(0, 0, 200); font-size: 30px; padding: 12px; }</style>
<div id="styled" style="background: rgb(204, 51, 51); width: 300px; border-radius: 8px">
<p class="card">Inline styles</p><p style="margin: 0; letter-spacing: 4px">and attributes</p></div>"""

XHTML = f"""<?xml version="1.0" encoding="utf-8"?>
<html xmlns="http://www.w3.org/1999/xhtml" lang="en"><head><title>x</title>
<style><img src="{TRACKER}/in-style.gif"/></style></head>
<body><p id="x">XHTML</p><img alt="" src="{TRACKER}/x.gif"/></body></html>"""

# In ISO-2022-JP, ESC ( B switches to ASCII and shows nothing: the browser reads "tracker.test",
# a byte scanner reads "tr\x1b(Backer.test".
ISO_BODY = (
    b"<!doctype html><html><head>{meta}<title>j</title></head><body><p id='j'>\x1b$B$3$s$K$A$O\x1b(B</p>"
    b'<img alt="" src="https://tr\x1b(Backer.test/j.gif"></body></html>'
)


def config(log: str, **overrides: Any) -> ConsentConfig:
    return tracker_config(log, TRACKER, category="marketing", service="pixel", **overrides)


def build_app(cfg: ConsentConfig) -> ConsentMiddleware:
    def html(head: str = "", body: str = "") -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            text = SHELL.format(title="Offices", head=head, body=body)
            return HTMLResponse(text.replace("{nonce}", csp_nonce(request)))

        return endpoint

    async def frame(request: Request) -> Response:
        return HTMLResponse("<!doctype html><title>f</title><p>frame</p>")

    async def xhtml(request: Request) -> Response:
        return Response(XHTML, media_type="application/xhtml+xml")

    async def unlabelled(request: Request) -> Response:
        # no media_type: Starlette sends no Content-Type at all
        return Response(f'<!doctype html><p id="u">hi</p><img alt="" src="{TRACKER}/u.gif">'.encode())

    async def iso_header(request: Request) -> Response:
        body = ISO_BODY.replace(b"{meta}", b"")
        return Response(body, headers={"content-type": "text/html; charset=iso-2022-jp"})

    async def iso_meta(request: Request) -> Response:
        body = ISO_BODY.replace(b"{meta}", b'<meta charset="iso-2022-jp">')
        return Response(body, headers={"content-type": "text/html"})

    async def iso_late_meta(request: Request) -> Response:
        # past the first 1024 bytes, still in <head>: Chromium still honours it
        meta = b"<script>/*" + b"x" * 3000 + b'*/</script><meta charset="iso-2022-jp">'
        return Response(ISO_BODY.replace(b"{meta}", meta), headers={"content-type": "text/html"})

    routes = [
        Path_("/", html(body=TRACKED)),
        Path_("/reflect", html(body=TRACKED + REFLECTED)),
        Path_("/hijack", html(body=HIJACK)),
        Path_("/fake-root", html(body=FAKE_ROOT + TRACKED)),
        Path_("/base", html(head=f'<base href="{EVIL}/">', body="<p>based</p>")),
        Path_("/styles", html(head=STYLES, body="<p>styled</p>")),
        Path_("/inline-style", html(body=INLINE_STYLED)),
        Path_("/frame", frame),
        Path_("/xhtml", xhtml),
        Path_("/unlabelled", unlabelled),
        Path_("/iso", iso_header),
        Path_("/iso-meta", iso_meta),
        Path_("/iso-late-meta", iso_late_meta),
    ]
    return ConsentMiddleware(Starlette(routes=routes), config=cfg)


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    variants = {"enforce": {}, "strict": {"csp_undecided": "strict"}, "off": {"csp": "off"}}
    urls, servers = {}, []
    for name, overrides in variants.items():
        log = f"sqlite:///{tmp_path_factory.mktemp('policy-' + name) / 'log.db'}"
        sock = _free_socket()
        urls[name] = f"http://127.0.0.1:{sock.getsockname()[1]}"
        servers.append(ServerThread(build_app(config(log, **overrides)), sock))
    for s in servers:
        s.__enter__()
    yield urls
    for s in servers:
        s.__exit__(None, None, None)


@pytest.fixture
def hosts(context: BrowserContext) -> list[str]:
    """Every request that reached the tracker or the attacker (they answer like real hosts)."""
    seen: list[str] = []

    def answer(route: Route) -> None:
        url = route.request.url
        seen.append(url)
        if url.endswith(".js"):
            script = f"window.ran = (window.ran || []).concat({url!r})"
            route.fulfill(body=script, content_type="text/javascript")
        elif url.endswith(".gif"):
            route.fulfill(body=b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", content_type="image/gif")
        else:
            route.fulfill(body="", content_type="text/css")

    context.route(f"{TRACKER}/**", answer)
    context.route(f"{EVIL}/**", answer)
    return seen


def reject_all(page: Page, url: str) -> None:
    page.goto(url + "/")
    page.get_by_role("button", name="Reject all").click()
    expect(page.locator("#cb-banner")).to_have_count(0)


def script_ready(page: Page) -> None:
    page.wait_for_function("() => window.consentBanner && document.readyState === 'complete'")
    page.wait_for_timeout(300)  # time for anything the script would activate to run and fetch


# --- 1. only what the gate neutralised is activated ---------------------------------------------


def test_reflected_markup_is_never_activated_after_reject(page: Page, sites: dict, hosts: list) -> None:
    """Issue 12, item 1: after Reject all, markup reflected into a page in the gate's neutralised
    format does not run, load or pass for the gate's "Allow" button; only elements carrying the
    page's nonce would be activated."""
    reject_all(page, sites["enforce"])
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    page.goto(sites["enforce"] + "/reflect")
    script_ready(page)
    assert page.evaluate("window.pwned") is None and page.evaluate("window.ran") is None
    expect(page.locator("#fake-img")).not_to_have_attribute("src", f"{EVIL}/p.gif")
    expect(page.locator("#fake-frame")).not_to_have_attribute("src", "/frame")
    page.locator("#fake-allow").click()
    page.wait_for_timeout(300)
    assert posts == []  # no decision was sent
    assert page.evaluate("consentBanner.get().categories") == ["necessary"]
    assert hosts == []


def test_the_gates_own_neutralised_tags_still_activate(page: Page, sites: dict, hosts: list) -> None:
    """Issue 12, item 1: the tracker tags the gate neutralised (and marked), and the site's own
    `type="text/plain"` script carrying the page's nonce, run after Accept all."""
    page.goto(sites["enforce"] + "/reflect")
    page.evaluate("window.loadMarker = 1")
    page.get_by_role("button", name="Accept all").click()
    page.wait_for_function("() => window.ran && window.own === 1")
    assert page.evaluate("window.ran") == [f"{TRACKER}/t.js"]
    expect(page.locator("#px")).to_have_attribute("src", f"{TRACKER}/p.gif")
    expect(page.locator("#tb")).to_have_attribute("background", f"{TRACKER}/bg.gif")  # any renamed URL
    assert page.evaluate("window.loadMarker") == 1  # may-grant: no reload
    assert page.evaluate("window.pwned") is None and not [u for u in hosts if u.startswith(EVIL)]


def test_reflected_attributes_on_a_tracker_tag_cannot_pick_what_is_activated(
    page: Page, sites: dict, hosts: list
) -> None:
    """Issue 12, item 1: a tracker tag reflected with its own `data-consent-src` (or a second `src`)
    must not get the attacker's script run with the page's nonce once the tracker is granted, and its
    own `data-consent-category="necessary"` must not activate it after Reject all."""
    reject_all(page, sites["enforce"])
    page.goto(sites["enforce"] + "/hijack")
    script_ready(page)
    assert hosts == [] and page.evaluate("window.ran") is None
    page.context.clear_cookies()
    page.goto(sites["enforce"] + "/hijack")
    page.get_by_role("button", name="Accept all").click()
    page.wait_for_function("() => window.ran && window.ran.length === 2")
    page.wait_for_timeout(300)
    assert page.evaluate("window.ran") == [f"{TRACKER}/h1.js", f"{TRACKER}/h2.js"]
    assert not [u for u in hosts if u.startswith(EVIL)]


def test_a_reflected_copy_of_the_script_and_a_fake_banner_change_nothing(
    page: Page, sites: dict, hosts: list
) -> None:
    """Issue 12, item 1: a copy of consent.js reflected into the page runs first (without the nonce)
    and a banner root of the attacker's making comes before the gate's. The gate's copy still takes
    the page, mounts the gate's banner (the fake one's "Reject all" records nothing) and activates
    what the visitor then grants."""
    page.goto(sites["enforce"] + "/fake-root")
    script_ready(page)
    with page.expect_navigation():
        page.locator("#fake-reject").click()  # not ours: a plain form post without the form token
    state = page.request.get(sites["enforce"] + "/_consent/state").json()
    assert state["decided"] is False
    page.goto(sites["enforce"] + "/fake-root")
    page.get_by_role("button", name="Accept all").click()
    page.wait_for_function("() => window.ran && window.own === 1")
    assert page.evaluate("window.ran") == [f"{TRACKER}/t.js"]
    assert not [u for u in hosts if u.startswith(EVIL)]


def test_an_injected_base_does_not_move_the_script(page: Page, sites: dict, hosts: list) -> None:
    """Issue 12, item 1: `base-uri 'self'`: an injected <base href> to another host is ignored, so the
    root-relative consent.js (which carries the nonce) still loads from the site."""
    page.goto(sites["enforce"] + "/base")
    script_ready(page)
    assert hosts == []
    assert page.evaluate("window.ran") is None
    expect(page.locator("#cb-banner")).to_be_visible()


# --- 2. stylesheets and fonts ---------------------------------------------------------------------


def test_denied_stylesheets_imports_and_fonts_do_not_load_after_reject(
    page: Page, sites: dict, hosts: list
) -> None:
    """Issue 12, item 2: default-src/style-src/font-src: after Reject all, a stylesheet link with an
    entity in its host, an @import and an @font-face of a denied service fetch nothing."""
    reject_all(page, sites["enforce"])
    page.goto(sites["enforce"] + "/styles")
    script_ready(page)
    assert hosts == []


def test_inline_styled_page_looks_the_same_under_the_policy(
    new_context: Callable[..., BrowserContext], sites: dict
) -> None:
    """Issue 12, item 2: style-src keeps 'unsafe-inline': <style> blocks and style attributes render
    exactly as with no policy at all."""
    shots, styles = [], []
    for name in ("enforce", "off"):
        p = new_context().new_page()
        p.goto(sites[name] + "/inline-style")
        el = p.locator("#styled")
        styles.append(
            el.evaluate(
                "e => [getComputedStyle(e).backgroundColor, getComputedStyle(e.firstElementChild).color,"
                " getComputedStyle(e.firstElementChild).fontSize, getComputedStyle(e).borderRadius]"
            )
        )
        shots.append(el.screenshot())
    assert styles[0] == ["rgb(204, 51, 51)", "rgb(0, 0, 200)", "30px", "8px"]
    assert styles[0] == styles[1] and shots[0] == shots[1]


# --- 3. csp_undecided = "strict" ------------------------------------------------------------------


def test_strict_undecided_loads_nothing_ungranted_and_reloads_once(
    page: Page, sites: dict, hosts: list
) -> None:
    """Issue 12, item 3: under "strict" an undecided page admits no may-grant origin; the first
    decision that grants reloads the page once, which then runs the trackers."""
    navigations: list[str] = []
    page.on("framenavigated", lambda f: navigations.append(f.url) if f == page.main_frame else None)
    page.goto(sites["strict"] + "/")
    script_ready(page)
    page.evaluate("window.loadMarker = 1")
    assert page.evaluate("fetch('https://tracker.test/c.gif', {mode: 'no-cors'}).then(() => 1, () => 0)") == 0
    page.get_by_role("button", name="Accept all").click()
    page.wait_for_function("() => window.ran && window.own === 1")
    assert page.evaluate("window.loadMarker") is None  # a fresh document
    assert len(navigations) == 2
    assert sorted(hosts) == [f"{TRACKER}/bg.gif", f"{TRACKER}/p.gif", f"{TRACKER}/t.js"]
    page.wait_for_timeout(300)
    assert len(navigations) == 2  # once


# --- 4. XHTML and unlabelled bodies ---------------------------------------------------------------


def test_xhtml_pages_are_gated(page: Page, sites: dict, hosts: list) -> None:
    """Issue 12, item 4: an application/xhtml+xml page is rewritten and gets the policy; as its XML
    parse differs from HTML's (an <img> inside <style> is an element), only granted origins load."""
    r = page.goto(sites["enforce"] + "/xhtml")
    assert r is not None and "content-security-policy" in r.headers
    expect(page.locator("#x")).to_have_text("XHTML")
    page.wait_for_timeout(300)
    assert hosts == []


def test_bodies_without_content_type_are_not_sniffed_into_an_ungated_page(
    page: Page, sites: dict, hosts: list
) -> None:
    """Issue 12, item 4: a body with no Content-Type gets nosniff and the policy: no tracker loads."""
    r = page.goto(sites["enforce"] + "/unlabelled")
    assert r is not None and r.headers["x-content-type-options"] == "nosniff"
    page.wait_for_timeout(300)
    assert hosts == []


# --- 5. pages the gate cannot read ----------------------------------------------------------------


@pytest.mark.parametrize("path", ["/iso", "/iso-meta", "/iso-late-meta"])
def test_iso_2022_jp_page_loads_no_tracker_even_undecided(
    page: Page, sites: dict, hosts: list, path: str
) -> None:
    """Issue 12, item 5: a page in ISO-2022-JP (header, or a <meta charset> early or anywhere in <head>)
    is passed on unrewritten, under a policy with only granted origins in every directive, also before
    a decision."""
    page.goto(sites["enforce"] + path)
    expect(page.locator("#j")).to_have_text("こんにちは")  # the browser did decode it as ISO-2022-JP
    page.wait_for_timeout(300)
    assert hosts == []
