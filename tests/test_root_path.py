"""Issue 14, item 3: an app served under a sub-path (the ASGI `root_path`, e.g. `/shop`).

Every URL the middleware emits (the banner's form actions, the script and stylesheet, the prefix the
script fetches from, the CSP report URI and Reporting-Endpoints, the redirect after a form post, the
receipt's and the audit view's links) is under the root path, and the consent routes answer there:
otherwise the visitor's decisions go to another app on the host, or nowhere. The ASGI servers and
routers disagree on whether `path` holds the root path (Starlette's `Mount` and uvicorn's
`--root-path` put it in; older versions, and a path-stripping proxy in front of a server that sets
`root_path` only, leave it out), so each test runs in both shapes, and once over a real uvicorn.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urljoin

import httpx
import pytest
import uvicorn
from markupsafe import escape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from consent_banner import ConsentConfig, ConsentMiddleware
from consent_banner.banner import Banner
from consent_banner.consent import UNDECIDED, Consent
from consent_banner.standalone import build_app

from .conftest import rows

ROOT = "/shop"
PAGE = "<!doctype html><html lang='en'><head><title>Shop</title></head><body><p>Desks</p></body></html>"
URL_ATTRS = re.compile(r'\s(action|formaction|src|href|data-prefix|data-css)="([^"]*)"')


async def page(request: Request) -> HTMLResponse:
    return HTMLResponse(PAGE)


def inner_app() -> Starlette:
    return Starlette(routes=[Route("/", page), Route("/rooms", page)])


def stripped(app: ASGIApp) -> ASGIApp:
    """A server behind a proxy that strips the root path, or a router of the older convention: the
    scope's `root_path` is set and its `path` does not hold it."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            scope = {**scope, "root_path": ROOT}
        await app(scope, receive, send)

    return wrapped


@dataclass
class Shape:
    name: str
    build: Callable[[ConsentMiddleware], tuple[ASGIApp, str]]  # the ASGI app, httpx's root_path
    path_has_root: bool  # whether a request for the public URL /shop/x is sent as /shop/x

    def request_url(self, public: str) -> str:
        """Where the client sends a request for the public URL (a path under ROOT)."""
        assert public.startswith(ROOT + "/"), public
        return public if self.path_has_root else public[len(ROOT) :]


SHAPES = [
    # Starlette's Mount: scope["path"] keeps /shop, scope["root_path"] is /shop.
    Shape("mounted", lambda mw: (Starlette(routes=[Mount(ROOT, app=mw)]), ""), True),
    # uvicorn --root-path /shop (0.26 and later): the root path prepended to path.
    Shape("root-in-path", lambda mw: (mw, ROOT), True),
    # a path-stripping proxy, or the older convention: root_path set, path without it.
    Shape("root-not-in-path", lambda mw: (stripped(mw), ""), False),
]


@pytest.fixture(params=SHAPES, ids=[s.name for s in SHAPES])
def shape(request: pytest.FixtureRequest) -> Shape:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
async def served(config: ConsentConfig, shape: Shape) -> AsyncIterator[tuple[httpx.AsyncClient, Shape]]:
    mw = ConsentMiddleware(inner_app(), config=config)
    app, root_path = shape.build(mw)
    transport = httpx.ASGITransport(app=app, root_path=root_path)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client, shape
    await mw.close()


def urls(html: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for attr, value in URL_ATTRS.findall(html):
        found.setdefault(attr, []).append(value.replace("&amp;", "&"))
    return found


def assert_under_root(html: str) -> None:
    """The page links the consent routes in each of these places, and only under the root path."""
    found = [(attr, u) for attr, values in urls(html).items() for u in values if "_consent" in u]
    assert {"action", "data-prefix", "src", "data-css", "href"} <= {attr for attr, _ in found}
    assert all(u.startswith(f"{ROOT}/_consent/") or u == f"{ROOT}/_consent" for _, u in found), found


async def test_every_url_the_page_carries_is_under_the_root_path(served) -> None:
    client, shape = served
    r = await client.get(shape.request_url(ROOT + "/rooms"))
    assert r.status_code == 200 and "data-consent-banner" in r.text
    found = urls(r.text)
    # the forms, the script, the stylesheet (linked, and named for the script), the script's prefix
    assert found["action"].count(f"{ROOT}/_consent") == 2
    assert found["data-prefix"] == [f"{ROOT}/_consent"]
    assert [u.split("?")[0] for u in found["src"]] == [f"{ROOT}/_consent/consent.js"]
    assert [u.split("?")[0] for u in found["data-css"]] == [f"{ROOT}/_consent/consent.css"]
    assert f"{ROOT}/_consent/consent.css" in [u.split("?")[0] for u in found["href"]]
    assert_under_root(r.text)
    assert f"report-uri {ROOT}/_consent/csp-report" in r.headers["content-security-policy"]
    # the form brings the visitor back to the page they were on, as the browser addresses it
    assert re.search(rf'name="return_to" value="{ROOT}/rooms"', r.text)


async def test_over_https_the_reporting_endpoint_is_under_the_root_path(config: ConsentConfig, shape) -> None:
    mw = ConsentMiddleware(inner_app(), config=config)
    app, root_path = shape.build(mw)
    transport = httpx.ASGITransport(app=app, root_path=root_path)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
        r = await client.get(shape.request_url(ROOT + "/"))
    await mw.close()
    assert r.headers["reporting-endpoints"] == f'consent-banner="{ROOT}/_consent/csp-report"'
    assert f"report-uri {ROOT}/_consent/csp-report" in r.headers["content-security-policy"]
    assert_under_root(r.text)


async def test_the_script_stylesheet_and_state_load_from_the_urls_in_the_page(served) -> None:
    client, shape = served
    html = (await client.get(shape.request_url(ROOT + "/"))).text
    script = urls(html)["src"][0]
    css = urls(html)["data-css"][0]
    prefix = urls(html)["data-prefix"][0]
    r = await client.get(shape.request_url(script))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
    r = await client.get(shape.request_url(css))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/css")
    r = await client.get(shape.request_url(prefix + "/state"))
    assert r.status_code == 200 and r.json()["decided"] is False
    # the app itself still answers its own paths; a path merely starting with the prefix is the app's
    assert (await client.get(shape.request_url(ROOT + "/_consentx"))).status_code == 404
    r = await client.get(shape.request_url(ROOT + "/_consent/nope"))
    assert r.status_code == 404 and "error" in r.json()


async def test_a_form_decision_lands_in_this_app_and_returns_under_the_root_path(served, config) -> None:
    """R13: under a root path the banner's form posts to this app and comes back to the page."""
    client, shape = served
    html = (await client.get(shape.request_url(ROOT + "/rooms"))).text
    token = re.search(r'name="csrf" value="([^"]+)"', html)
    back = re.search(r'name="return_to" value="([^"]+)"', html)
    assert token and back
    action = urls(html)["action"][0]
    r = await client.post(
        shape.request_url(action),
        data={"action": "accept_all", "csrf": token.group(1), "return_to": back.group(1)},
        headers={"origin": "http://testserver"},
    )
    assert r.status_code == 303 and r.headers["location"] == f"{ROOT}/rooms"
    assert [row["action"] for row in rows(config)] == ["accept_all"]
    # decided: the withdrawal button posts under the root path too
    html = (await client.get(shape.request_url(ROOT + "/"))).text
    assert f'formaction="{ROOT}/_consent/withdraw"' in html
    assert_under_root(html)
    # a return path that is not a local one falls back to the app's root, not the host's
    token2 = re.search(r'name="csrf" value="([^"]+)"', html)
    assert token2
    r = await client.post(
        shape.request_url(f"{ROOT}/_consent/withdraw"),
        data={"action": "reject_all", "csrf": token2.group(1), "return_to": "//evil.example/"},
        headers={"origin": "http://testserver"},
    )
    assert r.status_code == 303 and r.headers["location"] == f"{ROOT}/"


async def test_the_receipt_links_its_json_under_the_root_path(served) -> None:
    client, shape = served
    public = f"{ROOT}/_consent/receipt"
    r = await client.get(shape.request_url(public))
    assert r.status_code == 200
    links = [u for u in urls(r.text).get("href", []) if "format=json" in u]
    assert links and all(urljoin(public, u).startswith(f"{public}?") for u in links)


async def test_the_audit_view_answers_and_links_under_the_root_path(
    served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONSENT_AUDIT_TOKEN", "audit-token-0123456789-0123456789")
    client, shape = served
    auth = {"authorization": "Bearer audit-token-0123456789-0123456789"}
    r = await client.get(shape.request_url(f"{ROOT}/_consent/audit/"), headers=auth)
    assert r.status_code == 200
    links = [u for u in urls(r.text).get("href", []) if u.startswith("/")]
    assert links and all(u.startswith(f"{ROOT}/_consent/audit/") for u in links)
    r = await client.get(shape.request_url(links[0].split("?")[0]), headers=auth)
    assert r.status_code == 200


# --- a real server: uvicorn --root-path behind a proxy that strips it ------------------------------


@pytest.fixture
def uvicorn_root_path(config: ConsentConfig) -> Iterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    app = ConsentMiddleware(inner_app(), config=config)
    server = uvicorn.Server(uvicorn.Config(app, root_path=ROOT, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def test_uvicorn_root_path_behind_a_stripping_proxy(uvicorn_root_path: str, config: ConsentConfig) -> None:
    """The proxy receives /shop/x and forwards /x: the client here is what the proxy sends."""
    base = uvicorn_root_path
    with httpx.Client(base_url=base) as client:
        html = client.get("/rooms").text
        assert_under_root(html)
        strip = len(ROOT)
        script = urls(html)["src"][0]
        assert client.get(script[strip:]).status_code == 200
        token = re.search(r'name="csrf" value="([^"]+)"', html)
        assert token
        r = client.post(
            urls(html)["action"][0][strip:],
            data={"action": "reject_all", "csrf": token.group(1), "return_to": f"{ROOT}/rooms"},
            headers={"origin": base},
        )
        assert r.status_code == 303 and r.headers["location"] == f"{ROOT}/rooms"
    assert [row["action"] for row in rows(config)] == ["reject_all"]


# --- the banner remembered per root path ---------------------------------------------------------------


def test_the_banner_under_a_root_path_is_a_fresh_render_and_escapes_it(config: ConsentConfig) -> None:
    """The banner is remembered per (language, state, root path) and each response splices its own
    values: the bytes are a fresh Jinja2 render's under any root path, a hostile one escaped."""
    cached, fresh = Banner(config, prefix="/_consent"), Banner(config, prefix="/_consent")
    decided = Consent(id="v1", granted=frozenset({"analytics"}), revision="2026-11-01", decided_at=1)
    hostile = '/a"><script>x</script>&'
    for root in ("", ROOT, hostile):
        for consent in (UNDECIDED, decided):
            state = fresh._state(consent)
            expected = fresh._render(consent, "en", "T", root + "/x", "fid", state, root_path=root)
            for _ in range(2):  # rendered, then from memory
                assert cached._fragment(consent, "en", "T", root + "/x", "fid", root_path=root) == expected
    html = cached.head_html(UNDECIDED, nonce="n", root_path=hostile) + cached.body_html(
        UNDECIDED, language="en", nonce="n", csrf_token="t", return_to="/", root_path=hostile
    )
    assert "<script>x" not in html
    escaped = str(escape(hostile))
    assert html.count(f"{escaped}/_consent/consent.js?v=") == 1 and html.count(f'{escaped}/_consent"') >= 2
    assert cached.head_html(UNDECIDED, nonce="n").count('href="/_consent/consent.css') == 1


async def test_the_standalone_server_names_its_script_under_the_root_path(config: ConsentConfig) -> None:
    """`consent-banner serve` behind a proxy at /shop: the embedding site is told the script's real URL."""
    app = build_app(config)
    transport = httpx.ASGITransport(app=app, root_path=ROOT)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        script = (await client.get(f"{ROOT}/")).json()["script"]
        assert script == f"{ROOT}/_consent/consent.js"
        r = await client.get(script)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")


@pytest.mark.parametrize("outer_root", ["", ROOT])
async def test_a_page_of_a_sub_app_mounted_inside_the_app_links_the_middleware_where_it_is(
    config: ConsentConfig, outer_root: str
) -> None:
    """R13. The middleware wraps the whole app and the app mounts a sub-app (`app.mount("/blog", ...)`,
    the FastAPI way): Starlette's router rewrites the request's scope in place (root_path becomes
    /blog), but the consent routes are still where the middleware is. The sub-app's pages must link
    them there, and the policy's report URI too: before, they named /blog/_consent, which the app
    answers with 404, and every decision from a blog page was lost."""
    blog = Starlette(routes=[Route("/post", page)])
    mw = ConsentMiddleware(Starlette(routes=[Mount("/blog", app=blog)]), config=config)
    transport = httpx.ASGITransport(app=mw, root_path=outer_root)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
        r = await client.get(outer_root + "/blog/post")
        assert r.status_code == 200 and "data-consent-banner" in r.text
        found = urls(r.text)
        assert found["action"].count(f"{outer_root}/_consent") == 2
        assert found["data-prefix"] == [f"{outer_root}/_consent"]
        assert [u.split("?")[0] for u in found["src"]] == [f"{outer_root}/_consent/consent.js"]
        assert f"report-uri {outer_root}/_consent/csp-report" in r.headers["content-security-policy"]
        assert r.headers["reporting-endpoints"] == f'consent-banner="{outer_root}/_consent/csp-report"'
        # the page to come back to is the blog post, as the browser addressed it
        assert re.search(rf'name="return_to" value="{outer_root}/blog/post"', r.text)
        # and the form's action is answered by the middleware
        token = re.search(r'name="csrf" value="([^"]+)"', r.text)
        assert token
        r = await client.post(
            found["action"][0],
            data={"action": "accept_all", "csrf": token.group(1), "return_to": f"{outer_root}/blog/post"},
            headers={"origin": "https://testserver"},
        )
        assert r.status_code == 303 and r.headers["location"] == f"{outer_root}/blog/post"
    await mw.close()
    assert [row["action"] for row in rows(config)] == ["accept_all"]


async def test_a_root_path_ending_in_a_slash_gives_no_double_slash_in_the_policy(
    config: ConsentConfig,
) -> None:
    mw = ConsentMiddleware(inner_app(), config=config)

    # a proxy that strips the prefix, in front of a server told `--root-path /shop/`
    async def trailing_slash(scope: Scope, receive: Receive, send: Send) -> None:
        await mw({**scope, "root_path": "/shop/"}, receive, send)

    transport = httpx.ASGITransport(app=trailing_slash)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
        r = await client.get("/rooms")
        assert r.status_code == 200
    await mw.close()
    assert "report-uri /shop/_consent/csp-report" in r.headers["content-security-policy"]
    assert r.headers["reporting-endpoints"] == 'consent-banner="/shop/_consent/csp-report"'
