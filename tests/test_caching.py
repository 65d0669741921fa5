"""What caches may keep, through HTTP (issue 14, item 2; R35).

A response whose body or headers depend on the visitor's consent (a page the gate rewrote, a cookie
it filtered or expired, our own endpoints, a response the app built after reading the consent) is
``Cache-Control: private, no-cache`` with ``Vary: Cookie, Sec-GPC``, keeps nothing that lets a shared
cache store it, and a page carries none of the app's validators; a request for a document loses the
validators a browser kept. Everything else passes as the app sent it and stays cacheable.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from consent_banner import ConsentConfig, ConsentMiddleware, csp_nonce, get_consent, requires_consent
from consent_banner.consent import Consent, new_consent_id

from .conftest import ORIGIN

PRIVATE = "private, no-cache"
TRACKED = '<script src="https://stats.example.net/s.js"></script>'
PAGE = f"<!doctype html><html lang='en'><head><title>t</title>{TRACKED}</head><body><p>hi</p></body></html>"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
# Everything an app (or its framework) may say to let caches keep a response, shared ones included.
SHAREABLE = {
    "cache-control": "public, max-age=600, s-maxage=3600, must-revalidate, proxy-revalidate, immutable, "
    "stale-while-revalidate=30, stale-if-error=600, no-transform",
    "expires": "Thu, 01 Dec 2099 16:00:00 GMT",
    "surrogate-control": "max-age=3600",
    "cdn-cache-control": "max-age=3600",
    "cloudflare-cdn-cache-control": "max-age=3600",
    "edge-control": "cache-maxage=1h",
    "x-accel-expires": "3600",
    "etag": '"v1"',
    "last-modified": "Wed, 01 Jan 2025 00:00:00 GMT",
    "vary": "Accept-Encoding",
    "x-kept": "yes",
}
SHARED_ONLY = ("expires", "surrogate-control", "cdn-cache-control", "cloudflare-cdn-cache-control")
SHARED_ONLY += ("edge-control", "x-accel-expires")
DOCUMENT = {"sec-fetch-dest": "document"}


def build(config: ConsentConfig, static: Path) -> ConsentMiddleware:
    async def shareable_page(request: Request) -> Response:
        return HTMLResponse(PAGE, headers=SHAREABLE)

    async def with_headers(request: Request) -> Response:
        """HTML, or another type, with the headers the query names (name=value)."""
        media = request.query_params.get("type", "text/html")
        headers = {k: v for k, v in request.query_params.items() if k != "type"}
        return Response(PAGE if media == "text/html" else "{}", media_type=media, headers=headers)

    async def whoami(request: Request) -> Response:
        consent = get_consent(request)  # the body depends on the consent, and the app says so
        return JSONResponse({"analytics": consent.allows("analytics")}, headers=SHAREABLE)

    async def nonce(request: Request) -> Response:
        return JSONResponse({"nonce": csp_nonce(request)}, headers={"cache-control": "public, max-age=600"})

    @requires_consent("analytics")
    async def collect(request: Request) -> Response:
        return JSONResponse({"counted": True}, headers={"cache-control": "public, max-age=600"})

    async def public(request: Request) -> Response:
        return JSONResponse({"news": 1}, headers=SHAREABLE)

    async def sets(request: Request) -> Response:
        headers = {"cache-control": "public, max-age=600", "etag": '"v1"'}
        response = JSONResponse({}, headers=headers)
        response.set_cookie(request.query_params["cookie"], "1")
        return response

    async def echo(request: Request) -> Response:
        """The request headers the app saw."""
        return JSONResponse([[k, v] for k, v in request.headers.items()])

    routes = [
        Route("/shareable", shareable_page),
        Route("/with", with_headers),
        Route("/whoami", whoami),
        Route("/nonce", nonce),
        Route("/collect", collect),
        Route("/public", public),
        Route("/sets", sets),
        Route("/echo", echo),
        Mount("/static", app=StaticFiles(directory=static, html=True)),
    ]
    return ConsentMiddleware(Starlette(routes=routes), config=config)


@pytest.fixture
def static(tmp_path: Path) -> Path:
    """A static-site generator's output, written a week ago, served with ETag and Last-Modified."""
    root = tmp_path / "site"
    root.mkdir()
    (root / "page.html").write_text(PAGE)
    (root / "style.css").write_text("p { color: red }")
    (root / "pic.png").write_bytes(PNG)
    week_ago = time.time() - 7 * 86400
    for path in root.iterdir():
        os.utime(path, (week_ago, week_ago))
    return root


@pytest.fixture
async def app(config: ConsentConfig, static: Path) -> AsyncIterator[ConsentMiddleware]:
    middleware = build(config, static)
    yield middleware
    await middleware.close()


def client_of(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN)


@pytest.fixture
async def get(app: ConsentMiddleware) -> AsyncIterator[Callable[..., Any]]:
    """GET through the middleware as a visitor: undecided, or holding a consent granting `granted`."""
    async with client_of(app) as c:

        async def fetch(
            path: str, *, granted: tuple[str, ...] | None = None, **headers: str
        ) -> httpx.Response:
            sent = {k.replace("_", "-"): v for k, v in headers.items()}
            if granted is not None:
                value = app.codec.encode(
                    Consent(id=new_consent_id(), granted=frozenset(granted), revision=app.codec.revision)
                )
                sent["cookie"] = "; ".join(filter(None, (f"consent={value}", sent.get("cookie"))))
            return await c.get(path, headers=sent)

        yield fetch


async def bare(static: Path, path: str, **headers: str) -> httpx.Response:
    """The same file from StaticFiles alone: what the app sends without the middleware."""
    async with client_of(StaticFiles(directory=static, html=True)) as c:
        return await c.get(path, headers={k.replace("_", "-"): v for k, v in headers.items()})


def vary(r: httpx.Response) -> set[str]:
    return {t.strip().lower() for t in r.headers.get("vary", "").split(",") if t.strip()}


def assert_private(r: httpx.Response, *, cache_control: str = PRIVATE, also: str = "") -> None:
    """Private, revalidated, varying on Cookie and Sec-GPC (and on `also`, the app's own Vary)."""
    assert r.headers.get("cache-control") == cache_control, r.headers
    # A page also varies on what makes it a fragment (HX-Request...): at least these, then.
    assert {"cookie", "sec-gpc", *filter(None, [also.lower()])} <= vary(r), r.headers
    for name in SHARED_ONLY:
        assert name not in r.headers, f"{name} lets a shared cache keep a response for one visitor"


# --- pages --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("granted", [None, (), ("analytics",)], ids=["undecided", "rejected", "analytics"])
async def test_a_page_is_private_and_keeps_nothing_that_lets_a_cache_share_it(get, granted) -> None:
    """R35: A page carries its visitor's nonce, form token and consent: private, revalidated every time,
    varying on what decides the consent; no shared-cache lifetime (public, s-maxage, max-age, Expires,
    Surrogate-Control, CDN-Cache-Control and the vendors' own), none of the app's validators; the
    app's no-transform, its own Vary and its other headers stay."""
    r = await get("/shareable", granted=granted)
    assert r.status_code == 200 and "data-consent-root" in r.text
    assert_private(r, cache_control=PRIVATE + ", no-transform", also="Accept-Encoding")
    assert "etag" not in r.headers and "last-modified" not in r.headers
    assert r.headers["x-kept"] == "yes"


async def test_an_apps_no_store_is_kept_and_vary_star_stays(get) -> None:
    """R35: the app's no-store (any case) stays, and so does its Vary: * (nothing is shared then)."""
    r = await get("/with?cache-control=no-store%2C%20max-age%3D0&vary=*")
    assert r.headers["cache-control"] == PRIVATE + ", no-store" and r.headers["vary"] == "*"
    r = await get("/with?cache-control=No-Store&vary=cookie")
    assert r.headers["cache-control"] == PRIVATE + ", no-store"
    tokens = [t.strip().lower() for t in r.headers["vary"].split(",")]
    assert tokens[0] == "cookie" and tokens.count("cookie") == 1 and "sec-gpc" in tokens


async def test_a_static_page_carries_no_validator_and_no_heuristic_lifetime(get, static) -> None:
    """R35: StaticFiles sends ETag and Last-Modified (a week old: heuristically fresh for most of a day);
    the gated page carries neither, and says no-cache."""
    assert {"etag", "last-modified"} <= set((await bare(static, "/page.html")).headers)
    for granted in (None, ("analytics",)):
        r = await get("/static/page.html", granted=granted)
        assert r.status_code == 200 and "data-consent-root" in r.text
        assert_private(r)
        assert "etag" not in r.headers and "last-modified" not in r.headers


@pytest.mark.parametrize(
    "kept",
    [
        {"if-none-match": "etag"},
        {"if-modified-since": "last-modified"},
        {"if-none-match": "etag", "if-modified-since": "last-modified"},
        {"if-range": "etag", "range": "bytes=0-9"},
    ],
    ids=["if-none-match", "if-modified-since", "both", "if-range"],
)
@pytest.mark.parametrize(
    "asks",
    [
        {"sec-fetch-dest": "document"},
        {"sec-fetch-dest": "iframe", "accept": "*/*"},
        {"sec-fetch-dest": "frame"},
        {"accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"},  # no Sec-Fetch-*
        {"sec-fetch-dest": "empty", "accept": "text/html, */*"},  # a fragment fetched by htmx
    ],
    ids=["document", "iframe", "frame", "accept-html", "fetch-html"],
)
async def test_a_document_is_answered_in_full_whatever_validator_the_browser_kept(
    get, static, kept, asks
) -> None:
    """R35: A browser (or cache) that kept the page from before this release, or from another consent
    state, revalidates with the app's validators: the app would answer 304 (or a range of the old
    bytes) and the browser show that copy with its old policy. The middleware drops them from a
    request for a document: a full page, rewritten for the consent as it is now."""
    original = await bare(static, "/page.html")
    headers = {k: original.headers[v] if v in original.headers else v for k, v in kept.items()}
    assert (await bare(static, "/page.html", **headers, **asks)).status_code in (304, 206)  # the app alone
    r = await get("/static/page.html", granted=("analytics",), **headers, **asks)
    assert r.status_code == 200 and "data-consent-root" in r.text and TRACKED in r.text
    r = await get("/static/page.html", granted=(), **headers, **asks)
    assert r.status_code == 200 and TRACKED not in r.text  # neutralised, as a withdrawal wants


async def test_the_app_sees_the_validators_of_requests_for_anything_else(get, static) -> None:
    """R35: Only requests for documents lose their validators: a stylesheet, an image, a script, an API
    call keep them, and get their 304."""
    for path, dest in (("/style.css", "style"), ("/pic.png", "image")):
        etag = (await bare(static, path)).headers["etag"]
        r = await get("/static" + path, granted=("analytics",), if_none_match=etag, sec_fetch_dest=dest)
        assert r.status_code == 304
    seen = (await get("/echo", if_none_match='"x"', if_foo="bar", accept="application/json")).json()
    assert ["if-none-match", '"x"'] in seen and ["if-foo", "bar"] in seen
    seen = (await get("/echo", if_none_match='"x"', if_foo="bar", sec_fetch_dest="document")).json()
    assert ["if-foo", "bar"] in seen and not any(k == "if-none-match" for k, _ in seen)


async def test_a_flood_of_validators_is_dropped_in_one_pass(app) -> None:
    """A hostile request of 20,000 If-* headers costs one linear pass, and never reaches the app."""
    flood = [(b"if-none-match", b'"%d"' % i) for i in range(10_000)] + [(b"if-range", b'"x"')] * 10_000
    seen: list[list[str]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            seen.extend(json.loads(message["body"]))

    scope = {
        "type": "http",
        "method": "GET",
        "scheme": "http",
        "path": "/echo",
        "raw_path": b"/echo",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"sec-fetch-dest", b"document"), *flood],
    }
    started = time.perf_counter()
    await app(scope, receive, send)
    assert time.perf_counter() - started < 1.0
    assert seen == [["host", "testserver"], ["sec-fetch-dest", "document"]]


async def test_without_an_html_gate_pages_keep_their_validators(config, static) -> None:
    """R35: With the policy, the rewrite and the banner all off, the middleware changes no page: the app's
    validators, its 304 and its caching stand."""
    off = config.model_copy(update={"csp": "off", "rewrite_html": False, "inject": False})
    app = build(off, static)
    async with client_of(app) as c:
        first = await c.get("/static/page.html")
        assert first.headers.get("etag") and "cache-control" not in first.headers
        r = await c.get("/static/page.html", headers={"if-none-match": first.headers["etag"], **DOCUMENT})
        assert r.status_code == 304
    await app.close()


# --- what is not the visitor's ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/style.css", "/pic.png"])
@pytest.mark.parametrize("granted", [None, (), ("analytics", "marketing")])
async def test_a_static_asset_passes_untouched_and_stays_cacheable(get, static, path, granted) -> None:
    """R35: An image or a stylesheet depends on nobody's consent: the headers StaticFiles sends, as it sends
    them (ETag, Last-Modified, no Vary), whoever asks."""
    r = await get("/static" + path, granted=granted)
    assert r.status_code == 200 and r.headers.raw == (await bare(static, path)).headers.raw


@pytest.mark.parametrize("granted", [None, ("analytics",)])
async def test_a_response_that_reads_no_consent_keeps_its_public_caching(get, granted) -> None:
    """R35: an API response or an image whose app never read the consent keeps every header it set,
    whoever asks: a CDN may keep it."""
    r = await get("/public", granted=granted)
    assert r.headers["cache-control"] == SHAREABLE["cache-control"] and r.headers["vary"] == "Accept-Encoding"
    assert r.headers["etag"] == '"v1"' and r.headers["surrogate-control"] == "max-age=3600"
    r = await get("/with?type=image/svg%2Bxml&cache-control=public%2C%20max-age%3D600", granted=granted)
    assert r.headers["cache-control"] == "public, max-age=600" and "vary" not in r.headers


# --- what the app built from the consent ---------------------------------------------------------------


@pytest.mark.parametrize("granted", [None, ("analytics",)])
async def test_a_response_built_from_get_consent_is_private(get, granted) -> None:
    """R35: The issue's JSON built from get_consent(): it gets Vary and private, no-cache; its own ETag
    (the app's, of the body it built) stays."""
    r = await get("/whoami", granted=granted)
    assert r.json() == {"analytics": granted is not None}
    assert_private(r, cache_control=PRIVATE + ", no-transform", also="Accept-Encoding")
    assert r.headers["etag"] == '"v1"'


async def test_the_nonce_and_requires_consent_make_a_response_private(get) -> None:
    """R35: a response carrying this response's nonce, and one of @requires_consent (run, or 204),
    are the visitor's alone, whatever public lifetime the app gave them."""
    r = await get("/nonce")
    assert_private(r)
    for granted, status in ((None, 204), ((), 204), (("analytics",), 200)):
        r = await get("/collect", granted=granted)
        assert r.status_code == status
        assert_private(r)


# --- cookies -----------------------------------------------------------------------------------------


async def test_a_cookie_set_by_consent_makes_a_response_private(get) -> None:
    """R35: A tracker cookie set because this visitor allows it, or dropped because this one does not:
    either way the response differs per visitor. Dropped, the app's ETag no longer describes it."""
    r = await get("/sets?cookie=_st_id.1", granted=("analytics",))
    assert r.headers.get_list("set-cookie") and r.headers["etag"] == '"v1"'
    assert_private(r)
    r = await get("/sets?cookie=_st_id.1", granted=())
    assert not r.headers.get_list("set-cookie") and "etag" not in r.headers
    assert_private(r)


async def test_a_necessary_cookie_depends_on_nobodys_consent(get) -> None:
    """R35: a necessary cookie is set for everyone: the gate leaves the response as the app made it."""
    r = await get("/sets?cookie=booking_session", granted=())
    assert r.headers.get_list("set-cookie") and r.headers["cache-control"] == "public, max-age=600"
    assert "vary" not in r.headers and r.headers["etag"] == '"v1"'


async def test_a_denied_cookie_expired_makes_an_asset_private_for_that_response(get) -> None:
    """R35: a stylesheet that expires the visitor's denied cookie is that visitor's response."""
    r = await get("/static/style.css", granted=(), cookie="_ads=1")
    assert any(h.startswith("_ads=;") for h in r.headers.get_list("set-cookie"))
    assert_private(r)
    assert "etag" not in r.headers


async def test_the_middlewares_own_cookies_make_a_response_private(app, get) -> None:
    """R35: A re-issued consent cookie (the first visit with GPC) and the tidying of twin cookies depend on
    the request's cookies: for no shared cache to hand on, whatever the app said."""
    r = await get("/public", granted=("analytics", "marketing"), sec_gpc="1")
    assert any(h.startswith("consent=") for h in r.headers.get_list("set-cookie"))
    assert_private(r, cache_control=PRIVATE + ", no-transform", also="Accept-Encoding")
    assert r.headers["etag"] == '"v1"'  # the app's body, untouched
    r = await get("/public", cookie="consent_csrf=a; consent_csrf=b")
    assert any(h.startswith("consent_csrf=;") for h in r.headers.get_list("set-cookie"))
    assert_private(r, cache_control=PRIVATE + ", no-transform", also="Accept-Encoding")


# --- our own endpoints -------------------------------------------------------------------------------


async def test_the_visitors_own_endpoints_are_private(app, get) -> None:
    """R35: State, banner fragment and receipt are the visitor's; a decision's answer too."""
    for path in ("/_consent/state", "/_consent/banner", "/_consent/receipt"):
        r = await get(path, granted=("analytics",))
        assert r.status_code == 200, (path, r.text)
        cache = PRIVATE + (", no-store" if path != "/_consent/banner" else "")
        also = "Accept-Language" if path == "/_consent/banner" else ""
        assert_private(r, cache_control=cache, also=also)
    async with client_of(app) as c:
        r = await c.post("/_consent", json={"action": "accept_all"}, headers={"origin": ORIGIN})
        assert r.status_code == 200
        assert_private(r, cache_control=PRIVATE + ", no-store")
        r = await c.post("/_consent/withdraw", json={}, headers={"origin": ORIGIN})
        assert r.status_code == 200
        assert_private(r, cache_control=PRIVATE + ", no-store")


async def test_the_script_stylesheet_and_declaration_stay_public(app, get) -> None:
    """R35: Everyone's: cacheable by any CDN, and the hashed script URL for a year."""
    digest = app.banner.script_hash
    r = await get(f"/_consent/consent.js?v={digest}", granted=("analytics",))
    assert r.headers["cache-control"] == "public, max-age=31536000, immutable" and "vary" not in r.headers
    r = await get("/_consent/consent.css", granted=())
    assert r.headers["cache-control"] == "public, max-age=300" and "vary" not in r.headers
    r = await get("/_consent/declaration")
    assert r.headers["cache-control"] == "public, max-age=300" and r.headers["vary"] == "Accept-Language"
