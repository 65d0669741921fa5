"""Red team for the rest of issue 14: caching (gate/caching.py), root paths (paths.py), fragments,
site_origins, health and metrics.

Each test here reproduced a finding (it failed on the code before its fix) or pins an attack that
held, through the public interface: HTTP into the middleware.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from consent_banner import ConsentConfig

from ..conftest import ORIGIN, make_app

URL_ATTRS = re.compile(r'\s(?:action|formaction|src|href|data-prefix|data-css)="([^"]*)"')


def _local_path(url: str) -> bool:
    """A path on this origin: "/" then anything but another "/" or "\\" (which browsers read as "/")."""
    return url.startswith("/") and url[1:2] not in ("/", "\\") and not re.search(r"[\x00-\x20\"<>]", url)


# --- root_path ---------------------------------------------------------------------------------------

HOSTILE_ROOTS = [
    "//evil.example",
    "/\\evil.example",
    "\\\\evil.example",
    "javascript:alert(1)//",
    "https://evil.example/shop",
    "/shop\r\nX-Injected: 1",
    '/sh op"<x>',
    "/a;script-src *, default-src *",
]


@pytest.mark.parametrize("root", HOSTILE_ROOTS)
async def test_a_hostile_root_path_never_sends_the_visitor_or_the_token_elsewhere(
    config: ConsentConfig, root: str
) -> None:
    """Finding: the root path (the ASGI server's or a proxy's, unchecked) was put as it came in front
    of every URL the middleware writes. A misconfigured proxy's "//evil.example" (or "/\\evil.example",
    which browsers read the same) made the banner's forms post the form token to another host, the CSP
    reports go there, and the form post's fallback redirect an open redirect; CR/LF went into the
    Content-Security-Policy and Location headers (a 500 under a real server, a header injected under
    a lax one). Now the root path is written as a path of this origin: one leading "/", everything a
    path may not hold percent-encoded."""
    app = make_app(config)

    async def under(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            scope = {**scope, "root_path": root}
        await app(scope, receive, send)

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=under), base_url=ORIGIN) as client:
        r = await client.get("/")
        assert r.status_code == 200
        found = URL_ATTRS.findall(r.text)
        assert len(found) >= 4 and all(_local_path(u) for u in found), found
        for value in r.headers.values():
            assert "\r" not in value and "\n" not in value
        policy = r.headers["content-security-policy"]
        report_uri = policy.split("report-uri ", 1)[1].split(";")[0].split()
        assert report_uri and all(_local_path(u) and not re.search("[;,]", u) for u in report_uri)
        assert policy.count(";") == policy.count("; ") and "script-src *" not in policy
        token = re.search(r'name="csrf" value="([^"]+)"', r.text)
        assert token
        # The form post (JavaScript off) with a return_to the redirect refuses: the fallback is home.
        post = await client.post(
            "/_consent",
            data={"action": "reject_all", "csrf": token.group(1), "return_to": "https://evil.example/"},
            headers={"origin": ORIGIN},
        )
        assert post.status_code == 303, post.text
        assert _local_path(post.headers["location"]), post.headers["location"]
        for value in post.headers.values():
            assert "\r" not in value and "\n" not in value
    await app.close()


# --- caching ---------------------------------------------------------------------------------------

PAGE = b"<!doctype html><html lang='en'><head><title>t</title></head><body><p>hi</p></body></html>"
ETAG = b'"v1"'


async def _validating_page(scope: Scope, receive: Receive, send: Send) -> None:
    """An app that honours If-None-Match, as StaticFiles and most frameworks do."""
    headers = dict(scope["headers"])
    if headers.get(b"if-none-match") == ETAG:
        await send({"type": "http.response.start", "status": 304, "headers": [(b"etag", ETAG)]})
        await send({"type": "http.response.body", "body": b""})
        return
    start = [(b"content-type", b"text/html; charset=utf-8"), (b"etag", ETAG)]
    await send({"type": "http.response.start", "status": 200, "headers": start})
    await send({"type": "http.response.body", "body": PAGE})


@pytest.mark.parametrize("dest", ["object", "embed", "fencedframe"])
async def test_a_document_in_an_object_or_embed_is_answered_in_full(config: ConsentConfig, dest: str) -> None:
    """Finding: `unconditional` took the validators off navigations and frames only; an <object> or
    <embed> (Sec-Fetch-Dest object/embed, Accept */*) and a fenced frame render a document just the
    same, and with a validator the browser kept from before this release the app's 304 brought back
    that copy, with its old policy and nonce. Now they are documents too."""
    from consent_banner import ConsentMiddleware

    app = ConsentMiddleware(_validating_page, config=config)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN) as client:
        headers = {"sec-fetch-dest": dest, "accept": "*/*", "if-none-match": ETAG.decode()}
        r = await client.get("/page", headers=headers)
        assert r.status_code == 200 and "consent.js" in r.text
        assert "etag" not in r.headers and "private" in r.headers["cache-control"]
        # A script's fetch of the same URL keeps its validators: it renders nothing.
        r = await client.get("/page", headers={**headers, "sec-fetch-dest": "empty"})
        assert r.status_code == 304
    await app.close()


def _raw_app(status: int, headers: list[tuple[bytes, bytes]], body: bytes = b"") -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


SHAREABLE = [
    (b"CACHE-CONTROL", b"public"),
    (b"cache-control", b"s-maxage=600"),
    (b"Cache-Control", b'max-age=600, private="set-cookie", immutable'),
    (b"pragma", b"cache"),
    (b"Expires", b"Wed, 01 Dec 2027 00:00:00 GMT"),
    (b"Surrogate-Control", b"max-age=600"),
    (b"Cloudflare-CDN-Cache-Control", b"max-age=600"),
    (b"x-accel-expires", b"600"),
    (b"ETag", b'"v1"'),
    (b"last-modified", b"Wed, 01 Dec 2021 00:00:00 GMT"),
]


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_held_a_gated_page_leaves_no_shared_cache_header_however_the_app_spells_it(
    config: ConsentConfig, method: str
) -> None:
    """Held: Cache-Control in odd casing, split over several fields, with field-name forms, next to
    every CDN's own field and the validators, on a page the gate rewrites: one `private, no-cache`
    leaves, for HEAD as for GET, and nothing a shared cache obeys."""
    from consent_banner import ConsentMiddleware

    headers = [(b"content-type", b"text/html; charset=utf-8"), *SHAREABLE]
    app = ConsentMiddleware(_raw_app(200, headers, PAGE), config=config)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN) as client:
        r = await client.request(method, "/")
    assert r.headers.get_list("cache-control") == ["private, no-cache"]
    for name in ("expires", "surrogate-control", "cloudflare-cdn-cache-control", "x-accel-expires", "etag"):
        assert name not in r.headers
    assert "last-modified" not in r.headers and "Cookie" in r.headers["vary"]
    await app.close()


async def test_held_a_static_asset_setting_a_necessary_cookie_stays_public(config: ConsentConfig) -> None:
    """Held: a typed response whose only Set-Cookie is a necessary service's, for a visitor holding no
    denied cookie, depends on no consent: its caching headers pass as the app sent them."""
    from consent_banner import ConsentMiddleware

    headers = [
        (b"content-type", b"text/css"),
        (b"cache-control", b"public, max-age=31536000, immutable"),
        (b"etag", b'"css1"'),
        (b"set-cookie", b"booking_session=1; Path=/"),
    ]
    app = ConsentMiddleware(_raw_app(200, headers, b"p{}"), config=config)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN) as client:
        r = await client.get("/site.css")
    assert (
        r.headers["cache-control"] == "public, max-age=31536000, immutable" and r.headers["etag"] == '"css1"'
    )
    assert r.headers["set-cookie"].startswith("booking_session=1")
    await app.close()


async def test_held_requires_consent_answers_204_kept_out_of_shared_caches(config: ConsentConfig) -> None:
    """Held: `@requires_consent`'s 204 for a visitor who has not allowed the category says so to
    nobody else: private, no-cache, varying on Cookie and Sec-GPC."""
    app = make_app(config)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN) as client:
        r = await client.get("/collect")
    assert r.status_code == 204 and r.headers["cache-control"] == "private, no-cache"
    assert "Cookie" in r.headers["vary"] and "Sec-GPC" in r.headers["vary"]
    await app.close()


# --- site_origins ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "origin",
    [
        "https://blog.www.example.com",  # a sibling, or a child of the site's host
        "https://example.com",  # the parent domain
        "http://www.example.com",  # the same host over plain http
        "https://www.example.com.",  # the trailing dot: another origin to the browser
        "https://www.example.com:443",  # never sent by a browser
        "https://xn--www-ppa.example.com",
        "null",  # a sandboxed frame, a data: URL
        "https://www.example.com@evil.example",
    ],
)
async def test_held_only_a_listed_site_origin_may_decide(config: ConsentConfig, origin: str) -> None:
    """Held: with site_origins, a decision is accepted from exactly those origins; a sibling
    subdomain, the parent, http, a trailing dot, a default port, "null" are refused before the body
    is read, whatever Host and Sec-Fetch-Site say."""
    from ..test_proxy_headers import UPSTREAM, proxied

    app = make_app(proxied(config, site_origins=["https://www.example.com"]))
    headers = {"origin": origin, "host": "www.example.com", "sec-fetch-site": "same-origin"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=UPSTREAM) as client:
        r = await client.post("/_consent", json={"action": "accept_all"}, headers=headers)
        assert r.status_code == 403 and "set-cookie" not in r.headers
        ok = await client.post(
            "/_consent", json={"action": "accept_all"}, headers={"origin": "https://www.example.com"}
        )
        assert ok.status_code == 200
    await app.close()


async def test_held_a_navigation_keeps_no_validator_however_it_is_split(config: ConsentConfig) -> None:
    """Held: If-None-Match over several fields (a weak one among them), If-Modified-Since, If-Range
    with its Range: a navigation reaches the app with none of them (the app answers in full, the gate
    rewrites the page for the consent as it is now); If-Match and If-Unmodified-Since stay (at worst a
    412, never another state's page)."""
    from consent_banner import ConsentMiddleware

    seen: list[list[bytes]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append([k for k, _ in scope["headers"]])
        await _validating_page(scope, receive, send)

    mw = ConsentMiddleware(app, config=config)
    raw = [
        ("sec-fetch-dest", "document"),
        ("if-none-match", 'W/"v0"'),
        ("if-none-match", ETAG.decode()),
        ("if-modified-since", "Wed, 01 Dec 2021 00:00:00 GMT"),
        ("if-range", ETAG.decode()),
        ("range", "bytes=0-10"),
        ("if-match", ETAG.decode()),
        ("if-unmodified-since", "Wed, 01 Dec 2021 00:00:00 GMT"),
    ]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=mw), base_url=ORIGIN) as client:
        r = await client.get("/page", headers=httpx.Headers(raw))
    assert r.status_code == 200 and "consent.js" in r.text
    names = set(seen[0])
    assert not names & {b"if-none-match", b"if-modified-since", b"if-range", b"range"}
    assert {b"if-match", b"if-unmodified-since"} <= names
    await mw.close()
