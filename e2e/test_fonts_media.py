"""Fonts, stylesheets and media of services in Chromium (issue 15: "fonts, styles and media are third
parties too"; R2).

A theme page with what themes paste: Google Fonts' stylesheet link and its preconnect, an `@import`
and an `@font-face` of Google's hosts in a `<style>`, and videos and an audio of a media service (by
`src`, and by `<source>` with a caption `<track>`). Google Fonts (its preset) is a `functional`
service, the media host a `marketing` one. The
vendors are stood in for by Playwright routing, which answers with real bytes and content types and
records every request that reaches them: a request the page never makes, or the browser refuses,
never does. A preconnect opens a socket, not a request: its `href` is checked instead.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
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

FONTS_CSS = "https://fonts.googleapis.com"
FONTS = "https://fonts.gstatic.com"
MEDIA = "https://media.example"
HOSTS = (FONTS_CSS, FONTS, MEDIA)

THEME = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Theme</title>
<link id="pre" rel="preconnect" href="{FONTS}" crossorigin>
<link id="sheet" rel="stylesheet" href="{FONTS_CSS}/css2?family=Inter&amp;display=swap">
<style>@import url("{FONTS_CSS}/css2?family=Roboto");
@font-face {{ font-family: "Local"; src: url("{FONTS}/s/local/v1/local.woff2") format("woff2"); }}
#local {{ font-family: "Local", serif; }}</style>
</head><body><main><h1>Theme</h1>
<p id="inter" class="inter">Set in Inter once allowed.</p><p id="local">Set in Local.</p>
<video id="video" src="{MEDIA}/clip.webm" preload="auto" muted width="160" height="90"></video>
<audio id="audio" src="{MEDIA}/sound.wav" preload="auto"></audio>
<video id="video2" preload="auto" muted crossorigin="anonymous" width="160" height="90">
<source src="{MEDIA}/clip2.webm" type="video/webm">
<track kind="captions" src="{MEDIA}/captions.vtt" default></video>
</main></body></html>"""

# What frameworks and plugins send as a header: a preload the may-grant style-src would admit, and a
# preconnect no policy covers. The gate drops both while the fonts are not allowed.
LINK = f"<{FONTS_CSS}/css2?family=Preloaded>; rel=preload; as=style, <{FONTS}>; rel=preconnect"

# What fonts.googleapis.com answers: a rule the test can see applied, and the face it fetches.
INTER_CSS = f"""@font-face {{ font-family: "Inter"; font-style: normal; font-weight: 400;
  src: url({FONTS}/s/inter/v13/inter.woff2) format("woff2"); }}
.inter {{ font-family: "Inter", sans-serif; color: rgb(1, 2, 3); }}"""
ROBOTO_CSS = "#local { letter-spacing: 3px; }"
CORS = {"access-control-allow-origin": "*"}  # fonts are fetched in CORS mode
WOFF2 = b"wOF2" + bytes(60)  # a woff2 signature: the browser fetches it, then refuses to decode it


def wav() -> bytes:
    """A real, short WAV: 0.05 s of silence, 8 kHz mono 8-bit."""
    data = bytes([128]) * 400
    fmt = struct.pack("<HHIIHH", 1, 1, 8000, 8000, 1, 8)
    return (
        b"RIFF"
        + struct.pack("<I", 36 + len(data))
        + b"WAVEfmt "
        + struct.pack("<I", 16)
        + fmt
        + (b"data" + struct.pack("<I", len(data)) + data)
    )


WEBM = bytes.fromhex("1a45dfa3") + bytes(28)  # an EBML header's magic number: enough to be fetched


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("fonts-media") / "log.db"
    config = ConsentConfig.from_dict(
        {
            "policy_revision": "2026-11-01",
            "controller": "Example AB",
            "privacy_policy_url": "/privacy",
            "log": f"sqlite:///{Path(log)}",
            "cookie": {"secure": False},
            "categories": {
                "necessary": {"label": "Necessary"},
                "functional": {"label": "Functional"},
                "marketing": {"label": "Marketing"},
            },
            "services": [
                {"name": "fonts", "preset": "google-fonts"},
                {"name": "clips", "category": "marketing", "provider": "Clips Ltd", "origins": [MEDIA]},
            ],
        }
    )

    async def theme(request: Request) -> Response:
        return HTMLResponse(THEME, headers={"link": LINK})

    app = Starlette(routes=[Path_("/", theme)])
    with ServerThread(ConsentMiddleware(app, config=config), _free_socket()) as server:
        yield f"http://127.0.0.1:{server.port}"


@pytest.fixture
def vendors() -> Callable[[BrowserContext], list[str]]:
    """Routes the vendors' hosts in a context; the list of every request that reached them."""

    def install(context: BrowserContext) -> list[str]:
        seen: list[str] = []

        def answer(route: Route) -> None:
            u = route.request.url
            seen.append(u)
            if u.startswith(FONTS_CSS):
                body = INTER_CSS if "Inter" in u else ROBOTO_CSS
                route.fulfill(body=body, content_type="text/css", headers=CORS)
            elif u.startswith(FONTS):
                route.fulfill(body=WOFF2, content_type="font/woff2", headers=CORS)
            elif u.endswith(".vtt"):
                route.fulfill(body="WEBVTT\n", content_type="text/vtt", headers=CORS)
            elif u.endswith(".wav"):
                route.fulfill(body=wav(), content_type="audio/wav")
            else:
                route.fulfill(body=WEBM, content_type="video/webm", headers=CORS)

        for host in HOSTS:
            context.route(f"{host}/**", answer)
        return seen

    return install


def settled(page: Page) -> None:
    page.wait_for_function("() => window.consentBanner && document.readyState === 'complete'")
    page.wait_for_timeout(400)  # time for anything activated to fetch


def reached(seen: list[str], host: str) -> list[str]:
    return [u for u in seen if u.startswith(host)]


def wait_until(page: Page, check: Callable[[], Any], what: str) -> None:
    for _ in range(50):
        if check():
            return
        page.wait_for_timeout(100)
    raise AssertionError(f"timed out waiting for {what}")


def held(page: Page) -> None:
    """Nothing of the vendors is live in the page: every URL waits in data-consent-*."""
    expect(page.locator("#pre")).not_to_have_attribute("href", FONTS)
    expect(page.locator("#pre")).to_have_attribute("data-consent-href", FONTS)
    expect(page.locator("#sheet")).to_have_attribute("data-consent-service", "fonts")
    expect(page.locator("#video")).to_have_attribute("data-consent-src", f"{MEDIA}/clip.webm")
    assert page.locator("#inter").evaluate("e => getComputedStyle(e).color") != "rgb(1, 2, 3)"


def test_nothing_reaches_fonts_or_media_before_a_decision(
    new_context: Callable[..., BrowserContext], vendors: Callable, url: str
) -> None:
    """R2: an undecided visitor's theme page fetches no stylesheet, font, preconnect or media, and
    its Link header's preload and preconnect are gone."""
    context = new_context()
    seen = vendors(context)
    page = context.new_page()
    response = page.goto(url + "/")
    assert response is not None and "link" not in response.headers
    settled(page)
    held(page)
    assert seen == []


def test_nothing_reaches_fonts_or_media_after_reject(
    new_context: Callable[..., BrowserContext], vendors: Callable, url: str
) -> None:
    """R2: after Reject all, on the page where it is clicked and on the next."""
    context = new_context()
    seen = vendors(context)
    page = context.new_page()
    page.goto(url + "/")
    page.get_by_role("button", name="Reject all").click()
    expect(page.locator("#cb-banner")).to_have_count(0)
    settled(page)
    page.goto(url + "/")
    settled(page)
    held(page)
    assert seen == []


def test_accept_loads_the_fonts_and_media_without_a_reload(
    new_context: Callable[..., BrowserContext], vendors: Callable, url: str
) -> None:
    """R2 (issue 15): Accept all activates the stylesheet link (its rule applies, its font is fetched),
    the preconnect, the video, the audio and a caption track on the page where it is clicked, without
    a reload (before, the undecided page's style-src, font-src and media-src refused them), and the
    `<style>`'s @import and @font-face through its held copy (before: inert until the next page), and a
    video's `<source>` (the script loads its video again: a source given its URL back is not picked
    otherwise)."""
    context = new_context()
    seen = vendors(context)
    page = context.new_page()
    page.goto(url + "/")
    settled(page)
    page.evaluate("window.loadMarker = 1")
    page.get_by_role("button", name="Accept all").click()
    expect(page.locator("#inter")).to_have_css("color", "rgb(1, 2, 3)")
    wait_until(page, lambda: reached(seen, f"{FONTS}/s/inter"), "the Inter font")
    wait_until(page, lambda: reached(seen, f"{MEDIA}/clip.webm"), "the video")
    wait_until(page, lambda: reached(seen, f"{MEDIA}/sound.wav"), "the audio")
    wait_until(page, lambda: reached(seen, f"{MEDIA}/captions.vtt"), "the track")
    wait_until(page, lambda: reached(seen, f"{FONTS_CSS}/css2?family=Roboto"), "the @import")
    expect(page.locator("#local")).to_have_css("letter-spacing", "3px")  # the imported rule applies
    wait_until(page, lambda: reached(seen, f"{FONTS}/s/local"), "the @font-face")
    expect(page.locator("#pre")).to_have_attribute("href", FONTS)
    wait_until(page, lambda: reached(seen, f"{MEDIA}/clip2.webm"), "the <source>")
    assert page.evaluate("window.loadMarker") == 1  # the same document: no reload


def test_a_gpc_visitor_gets_the_fonts_but_never_the_marketing_media(
    new_context: Callable[..., BrowserContext], vendors: Callable, url: str
) -> None:
    """R2, R26: with Sec-GPC: 1 the marketing media host is in no directive of the policy and never
    reached, before a decision or after Accept all; the functional fonts load after Accept."""
    context = new_context(extra_http_headers={"Sec-GPC": "1"})
    seen = vendors(context)
    page = context.new_page()
    response = page.goto(url + "/")
    assert response is not None and MEDIA not in response.headers["content-security-policy"]
    assert FONTS in response.headers["content-security-policy"]
    settled(page)
    assert seen == []
    page.get_by_role("button", name="Accept all").click()
    expect(page.locator("#inter")).to_have_css("color", "rgb(1, 2, 3)")
    settled(page)
    assert reached(seen, MEDIA) == []
    page.goto(url + "/")
    settled(page)
    assert reached(seen, MEDIA) == []
    assert reached(seen, f"{FONTS_CSS}/css2?family=Roboto")
