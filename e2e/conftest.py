"""Shared browser fixtures: one Chromium per session, a new context per test, and a test site.

The site is a small Starlette app with pages that carry neutralised tracker markup written by hand
in the contract's format, served on 127.0.0.1 behind the consent endpoints; a second origin
(`localhost`, another port) plays an embedding site for the embedded mode. Servers bind free
loopback ports and stop at the end of the session. A failing test leaves a screenshot of each of
its pages in e2e/artifacts/.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

os.environ.setdefault("CONSENT_SECRET_KEYS", "e2e-test-key-0123456789-0123456789-abcdef")

from consent_banner import ConsentConfig, ConsentMiddleware, csp_nonce  # noqa: E402
from consent_banner.consent import Consent, ConsentCodec  # noqa: E402
from consent_banner.scan import DEFAULT_BROWSER
from consent_banner.scan.crawl import CHROMIUM_ARGS  # the launch flags this machine needs, in one place

ARTIFACTS = Path(__file__).parent / "artifacts"
AXE = Path(__file__).parent / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM = DEFAULT_BROWSER
TRACKER_DELAY = 300  # ms: the first tracker script answers late, so order is really tested


def site_config(log: str, embed_origin: str) -> ConsentConfig:
    return ConsentConfig.from_dict(
        {
            "policy_revision": "2026-11-01",
            "controller": "Example Booking AB",
            "privacy_policy_url": "/privacy",
            "languages": ["en", "sv"],
            "log": log,
            "allowed_origins": [embed_origin],
            "do_not_sell_link": True,
            "cookie": {"secure": False},
            "categories": {
                "necessary": {
                    "label": {"en": "Necessary", "sv": "Nödvändiga"},
                    "description": {
                        "en": "Needed for the site to work.",
                        "sv": "Behövs för att webbplatsen ska fungera.",
                    },
                },
                "analytics": {
                    "label": {"en": "Analytics", "sv": "Statistik"},
                    "description": {
                        "en": "Counts visits so we can improve the site.",
                        "sv": "Räknar besök så att vi kan förbättra webbplatsen.",
                    },
                },
                "marketing": {
                    "label": {"en": "Marketing", "sv": "Marknadsföring"},
                    "description": {
                        "en": "Measures campaigns and shows videos.",
                        "sv": "Mäter kampanjer och visar videor.",
                    },
                },
            },
            "services": [
                {
                    "name": "booking",
                    "category": "necessary",
                    "provider": "Example Booking AB",
                    "purpose": "Keeps the booking checkout session",
                    "cookies": [{"name": "booking_session", "lifetime": "session"}],
                },
                {
                    "name": "stats",
                    "category": "analytics",
                    "provider": "Stats Oy",
                    "purpose": "Counts visits",
                    "switch": True,
                    "cookies": [{"name": "_stats", "lifetime": "13 months"}],
                },
                {
                    "name": "ads",
                    "category": "marketing",
                    "provider": "Ads Inc",
                    "purpose": "Measures campaigns",
                    "cookies": [{"name": "_ads", "lifetime": "90 days"}],
                },
                {
                    "name": "video",
                    "category": "marketing",
                    "provider": "Video Ltd",
                    "purpose": "Embedded videos",
                    "switch": True,
                },
            ],
        }
    )


# --- the pages -----------------------------------------------------------------------------------

# Neutralised markup written by hand in the gate's contract format (consent_banner/gate/html.py),
# marked with the page's nonce as the gate marks what it neutralises (NONCE is replaced per response).
NONCE = "__NONCE__"
NEUTRALISED = f"""
<script type="text/plain" data-consent-category="analytics" data-consent-service="stats"
 data-consent-src="/t/stats.js?delay={TRACKER_DELAY}" async nonce="{NONCE}"></script>
<script type="text/plain" data-consent-category="analytics" nonce="{NONCE}">
(window.cbOrder=window.cbOrder||[]).push("inline")</script>
<script type="text/plain" data-consent-category="analytics" data-consent-src="/t/late.js"
 nonce="{NONCE}"></script>
<script type="text/plain" data-consent-category="marketing" data-consent-service="ads"
 data-consent-src="/t/ads.js" nonce="{NONCE}"></script>
<img id="pixel" alt="" width="1" height="1" data-consent-category="marketing" data-consent-service="ads"
 data-consent-src="/t/px.gif" nonce="{NONCE}">
<div class="consent-placeholder" id="video-placeholder" data-consent-placeholder="video"
 data-consent-category="marketing" nonce="{NONCE}"><p>Content from Video Ltd will load once you allow
 Marketing.</p><button type="button" data-consent-allow="marketing">Allow Marketing</button></div>
<iframe id="video" title="Video" data-consent-category="marketing" data-consent-service="video"
 data-consent-src="/t/frame.html" width="320" height="180" hidden="" data-consent-hidden=""
 nonce="{NONCE}"></iframe>
"""

PAGE = """<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><main><h1>{title}</h1>
<p>Book a desk, a room or a whole floor.</p>
<p><a href="/other">Another page</a></p>
<label for="q">Search</label> <input id="q" type="search">
{extra}
</main></body></html>"""


# The one optional category of tracker_config, by name: its label and description.
TRACKER_CATEGORIES = {"analytics": "Counts visits.", "marketing": "Measures campaigns."}


def tracker_config(
    log: str,
    origin: str,
    *,
    category: str = "analytics",
    service: str = "stats",
    provider: str = "Tracker Ltd",
    **overrides: Any,
) -> ConsentConfig:
    """The smallest site of a single-issue browser test: Necessary, one optional category and its one
    service, a tracker served from `origin`; `overrides` replace top-level keys (csp, the policy's URL)."""
    return ConsentConfig.from_dict(
        {
            "policy_revision": "2026-11-01",
            "controller": "Example AB",
            "privacy_policy_url": "/privacy",
            "log": log,
            "cookie": {"secure": False},
            "categories": {
                "necessary": {"label": "Necessary"},
                category: {"label": category.capitalize(), "description": TRACKER_CATEGORIES[category]},
            },
            "services": [{"name": service, "category": category, "provider": provider, "origins": [origin]}],
            **overrides,
        }
    )


def page_html(lang: str, title: str, extra: str = NEUTRALISED) -> str:
    return PAGE.format(lang=lang, title=title, extra=extra)


async def tracker(request: Request) -> Response:
    """A tracker script: records its run in window.cbOrder and sets its cookie."""
    name = request.path_params["name"]
    delay = int(request.query_params.get("delay", "0"))
    if delay:
        await asyncio.sleep(delay / 1000)
    cookie = {"stats": "_stats", "ads": "_ads"}.get(name, f"_{name}")
    body = f'(window.cbOrder=window.cbOrder||[]).push("{name}");document.cookie="{cookie}=1; path=/";'
    return Response(body, media_type="text/javascript")


async def frame(request: Request) -> Response:
    return HTMLResponse("<!doctype html><title>video</title><p>Video player</p>")


async def pixel(request: Request) -> Response:
    gif = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"
    return Response(gif, media_type="image/gif")


def tracker_routes() -> list[Route]:
    return [Route("/t/frame.html", frame), Route("/t/px.gif", pixel), Route("/t/{name}.js", tracker)]


def build_site_app(config: ConsentConfig) -> Any:
    """The site behind the real ConsentMiddleware: it injects the banner and answers /_consent/*."""
    pages = {
        "/": page_html("en", "Example Booking"),
        "/sv": page_html("sv", "Exempel Bokning"),
        "/other": page_html("en", "Another page", extra=""),
        "/privacy": page_html("en", "Privacy policy", extra=""),
    }

    def serve(html: str) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            return HTMLResponse(html.replace(NONCE, csp_nonce(request)))

        return endpoint

    app = Starlette(routes=[*(Route(path, serve(html)) for path, html in pages.items()), *tracker_routes()])
    return ConsentMiddleware(app, config=config)


def build_embed_app(consent_server: str) -> Starlette:
    """The embedding site: not Python-gated, it only includes the script from the consent server."""
    html = page_html(
        "en",
        "Partner site",
        extra=NEUTRALISED
        + (
            f'<script src="{consent_server}/_consent/consent.js" data-consent-server="{consent_server}" '
            'data-consent-cookie="site_consent" defer></script>'
        ),
    )

    async def home(request: Request) -> Response:
        return HTMLResponse(html.replace(NONCE, ""))  # no policy here: the script has no nonce either

    return Starlette(routes=[Route("/", home), *tracker_routes()])


# --- servers ---------------------------------------------------------------------------------------


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class ServerThread:
    """uvicorn on an already bound loopback socket, in a background thread."""

    def __init__(self, app: Any, sock: socket.socket) -> None:
        self.sock = sock
        self.port = sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


@dataclass
class Site:
    url: str  # the consent-gated site, http://127.0.0.1:PORT
    embed_url: str  # the embedding site on a second origin, http://localhost:PORT
    config: ConsentConfig
    extra: dict[str, Any] = field(default_factory=dict)


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    site_sock, embed_sock = _free_socket(), _free_socket()
    url = f"http://127.0.0.1:{site_sock.getsockname()[1]}"
    embed_url = f"http://localhost:{embed_sock.getsockname()[1]}"
    log = f"sqlite:///{tmp_path_factory.mktemp('log') / 'consent-log.db'}"
    config = site_config(log, embed_url)
    with ServerThread(build_site_app(config), site_sock), ServerThread(build_embed_app(url), embed_sock):
        yield Site(url=url, embed_url=embed_url, config=config)


@pytest.fixture
def old_revision_token(site: Site) -> str:
    """A validly signed consent cookie value, made for an earlier policy revision (R18, R33)."""
    cfg = site.config
    codec = ConsentCodec(
        [os.environ["CONSENT_SECRET_KEYS"]],
        revision="2020-01-01",
        lifetime=cfg.cookie.lifetime_days * 86400,
        categories=cfg.categories,
    )
    granted = frozenset({"analytics", "marketing"})
    return codec.encode(Consent(id="old-visitor", granted=granted, revision="2020-01-01", source="banner"))


# --- the browser -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    b = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
    yield b
    b.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


_FAILED = pytest.StashKey[bool]()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:120]


@pytest.fixture
def new_context(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Callable[..., BrowserContext]]:
    """Opens a fresh browser context (own cookies and storage); screenshots its pages on failure."""
    contexts: list[BrowserContext] = []

    def make(**kwargs: Any) -> BrowserContext:
        kwargs.setdefault("viewport", {"width": 1280, "height": 800})
        ctx = browser.new_context(**kwargs)
        ctx.set_default_timeout(5000)
        contexts.append(ctx)
        return ctx

    yield make
    failed = request.node.stash.get(_FAILED, False)
    for i, ctx in enumerate(contexts):
        if failed:
            ARTIFACTS.mkdir(exist_ok=True)
            for j, p in enumerate(ctx.pages):
                try:
                    p.screenshot(
                        path=ARTIFACTS / f"FAILED-{_slug(request.node.name)}-{i}-{j}.png", full_page=True
                    )
                except Exception:  # a crashed page must not hide the test's own failure
                    pass
        ctx.close()


@pytest.fixture
def context(new_context: Callable[..., BrowserContext]) -> BrowserContext:
    return new_context()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


@pytest.fixture
def screenshot() -> Callable[[Page, str], Path]:
    """Keeps a screenshot as a test artifact (e2e/artifacts/NAME.png)."""

    def take(p: Page, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        p.screenshot(path=path)
        return path

    return take
