"""ConsentMiddleware through HTTP: the consent handed to the app, pass-through of other scopes,
the banner on pages, the form-token cookie, and the framework reach of get_consent/requires_consent."""

from __future__ import annotations

import contextlib

import httpx
import pytest
from fastapi import FastAPI, Request
from starlette.applications import Starlette
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from consent_banner import ConsentConfig, ConsentMiddleware, get_consent, requires_consent

from .conftest import ORIGIN, make_app


async def test_fresh_visitor_is_undecided_and_sees_the_banner(client) -> None:
    """R1/R13: the banner is in the first HTML response, with a form that works without JS."""
    r = await client.get("/")
    assert r.status_code == 200
    assert (
        'action="/_consent"' in r.text and 'value="accept_all"' in r.text and 'value="reject_all"' in r.text
    )
    assert "Example Offices AB" in r.text
    names = [h.split("=")[0] for h in r.headers.get_list("set-cookie")]
    assert names == ["consent_csrf"]  # our necessary form-token cookie, nothing else
    csrf = next(h for h in r.headers.get_list("set-cookie"))
    assert "HttpOnly" in csrf and "SameSite=Strict" in csrf and "Max-Age" not in csrf


async def test_form_token_cookie_only_on_html(client) -> None:
    r = await client.get("/whoami")
    assert "set-cookie" not in r.headers


async def test_swedish_accept_language_gets_swedish_banner(config) -> None:
    """R14"""
    app = make_app(config)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN) as c:
        swedish = (await c.get("/plain", headers={"accept-language": "sv-SE,sv;q=0.9,en;q=0.5"})).text
        page_says_english = (await c.get("/", headers={"accept-language": "sv"})).text
    assert "Nödvändiga" in swedish and 'lang="sv"' in swedish
    assert "Nödvändiga" not in page_says_english  # the page's own lang wins over the header


async def test_placeholder_is_in_the_language_of_the_banner(config) -> None:
    """R14: a page without `lang`, a Swedish Accept-Language, a blocked embed: the placeholder is in
    Swedish, as the banner beside it (the gate once read only the page's `lang` and wrote English)."""

    async def embed(request):
        return HTMLResponse(
            "<!doctype html><html><head><title>t</title></head><body>"
            '<iframe src="https://ads.example.com/x"></iframe></body></html>'
        )

    app = ConsentMiddleware(Starlette(routes=[Route("/", embed)]), config=config)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN) as c:
        r = await c.get("/", headers={"accept-language": "sv-SE,sv;q=0.9,en;q=0.5"})
    await app.close()
    assert "Nödvändiga" in r.text  # the banner is Swedish
    assert "Innehåll från Ads Inc laddas när du tillåter Marknadsföring." in r.text
    assert ">Tillåt Marknadsföring</button>" in r.text and "Content from" not in r.text


async def test_get_consent_without_middleware_says_what_to_do() -> None:
    async def endpoint(request):
        get_consent(request)

    app = Starlette(routes=[Route("/", endpoint)])
    with (
        TestClient(app, raise_server_exceptions=True) as c,
        pytest.raises(RuntimeError, match="ConsentMiddleware"),
    ):
        c.get("/")


def test_lifespan_passes_through(config) -> None:
    events = []

    @contextlib.asynccontextmanager
    async def lifespan(app):
        events.append("startup")
        yield
        events.append("shutdown")

    app = ConsentMiddleware(Starlette(routes=[], lifespan=lifespan), config=config)
    with TestClient(app):
        assert events == ["startup"]
    assert events == ["startup", "shutdown"]


def test_log_is_closed_on_shutdown(config) -> None:
    inner = Starlette(routes=[])
    app = ConsentMiddleware(inner, config=config)
    with TestClient(app, base_url=ORIGIN) as c:
        assert (
            c.post("/_consent", json={"action": "reject_all"}, headers={"origin": ORIGIN}).status_code == 200
        )
        assert app._log is not None
    assert app._log is None


def test_fastapi_get_consent_and_requires_consent(config) -> None:
    api = FastAPI()

    @api.get("/me")
    async def me(request: Request) -> dict:
        return {"analytics": get_consent(request).allows("analytics")}

    @api.post("/collect")
    @requires_consent("analytics")
    async def collect(request: Request) -> dict:
        return {"counted": True}

    api.add_middleware(ConsentMiddleware, config=config)
    with TestClient(api, base_url=ORIGIN) as c:
        assert c.get("/me").json() == {"analytics": False}
        assert c.post("/collect").status_code == 204
        c.post(
            "/_consent", json={"action": "custom", "categories": ["analytics"]}, headers={"origin": ORIGIN}
        )
        assert c.get("/me").json() == {"analytics": True}
        assert c.post("/collect").json() == {"counted": True}


def test_requires_consent_per_service(config) -> None:
    @requires_consent("analytics", service="stats")
    async def hit(request):
        return PlainTextResponse("ok")

    app = ConsentMiddleware(Starlette(routes=[Route("/hit", hit)]), config=config)
    with TestClient(app, base_url=ORIGIN) as c:
        c.post(
            "/_consent",
            json={"action": "custom", "categories": ["analytics"], "services": {"stats": False}},
            headers={"origin": ORIGIN},
        )
        assert c.get("/hit").status_code == 204
        c.post(
            "/_consent",
            json={"action": "custom", "categories": ["analytics"], "services": {"stats": True}},
            headers={"origin": ORIGIN},
        )
        assert c.get("/hit").text == "ok"


def test_requires_consent_gates_sync_endpoints(config) -> None:
    """A sync endpoint (Starlette runs it in a thread) is gated like an async one."""

    @requires_consent("analytics")
    def hit(request):
        return PlainTextResponse("ok")

    app = ConsentMiddleware(Starlette(routes=[Route("/hit", hit)]), config=config)
    with TestClient(app, base_url=ORIGIN) as c:
        assert c.get("/hit").status_code == 204
        c.post("/_consent", json={"action": "accept_all"}, headers={"origin": ORIGIN})
        assert c.get("/hit").text == "ok"


def test_requires_consent_says_how_to_gate_a_class() -> None:
    with pytest.raises(TypeError, match="method_decorator"):
        requires_consent("analytics")(Starlette)


def test_missing_key_refuses_to_start(config, monkeypatch) -> None:
    from consent_banner import MissingSecretKey

    monkeypatch.delenv("CONSENT_SECRET_KEYS")
    with pytest.raises(MissingSecretKey, match="CONSENT_SECRET_KEYS is not set"):
        ConsentMiddleware(Starlette(), config=config)


def test_config_path_is_accepted(toml_path) -> None:
    app = ConsentMiddleware(Starlette(routes=[Route("/", lambda r: JSONResponse({}))]), config=toml_path)
    assert isinstance(app.config, ConsentConfig)


def test_public_names_are_exactly_these() -> None:
    import consent_banner

    assert sorted(consent_banner.__all__) == sorted(
        [
            "ConfigError",
            "Consent",
            "ConsentBannerError",
            "ConsentConfig",
            "ConsentMiddleware",
            "DecisionError",
            "LogError",
            "LogUnavailable",
            "MissingSecretKey",
            "csp_nonce",
            "get_consent",
            "requires_consent",
        ]
    )
    for name in consent_banner.__all__:
        assert getattr(consent_banner, name)


async def test_app_inline_script_runs_with_the_response_nonce(config) -> None:
    """R36: the app's own inline script can carry the same nonce as ours."""
    from starlette.responses import HTMLResponse

    from consent_banner import csp_nonce

    async def page(request):
        return HTMLResponse(
            f"<html><head></head><body><script nonce='{csp_nonce(request)}'>1</script></body></html>"
        )

    app = ConsentMiddleware(Starlette(routes=[Route("/", page)]), config=config)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN) as c:
        r = await c.get("/")
    nonce = r.headers["content-security-policy"].split("'nonce-")[1].split("'")[0]
    assert f"<script nonce='{nonce}'>1</script>" in r.text


# --- issue 12 item 5: a flood of large, distinct Cookie headers -------------------------------------


def flood_header(n: int, size: int) -> str:
    """A distinct Cookie header of about `size` bytes: for 16 KB, thousands of distinct names,
    undeclared and declared (denied) ones; for short ones, a fixed set of names with new values."""
    if size > 1024:
        parts = [f"x{n}_{i}=v{i}" if i % 2 else f"_st_id.{n}_{i}=1" for i in range(size // 10)]
    else:
        parts = [f"app_pref_{i}=value{n}" for i in range(size // 20)]
    return "; ".join(parts)[:size].rsplit(";", 1)[0]


@pytest.mark.parametrize(("size", "requests"), [(16 * 1024, 300), (1000, 1000)])
async def test_distinct_cookie_headers_do_not_accumulate_memory(config, size, requests) -> None:
    """A flood of distinct Cookie headers: only verified consent values are cached (long headers are
    read and dropped, short ones remembered up to a byte budget), so memory stays bounded."""
    import gc
    import tracemalloc

    app = make_app(config)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN) as c:
        for n in range(20):  # warm up: first-use allocations are not growth
            await c.get("/whoami", headers={"cookie": flood_header(n, size)})
        tracemalloc.start()
        try:
            # Kept, not garbage yet to be collected: cycles (an exception's traceback, a task) freed
            # whenever the collector happens to run made this vary by a megabyte from run to run.
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            for n in range(20, 20 + requests):
                r = await c.get("/whoami", headers={"cookie": flood_header(n, size)})
                assert r.status_code == 200
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - before
            print(f"{grown / 1e6:.2f} MB kept after {requests} requests of {size} bytes")
        finally:
            tracemalloc.stop()
    await app.close()
    # Before the fix every header and its parsed dict stayed cached (8,192 of them): 50 MB for the
    # 300 long headers here, 8 MB for the 1,000 short ones.
    assert grown < 4 * 1024 * 1024, f"{grown / 1e6:.1f} MB kept after {requests} requests"


async def test_a_stuffed_cookie_header_gets_a_bounded_number_of_expiries(client) -> None:
    """A 16 KB header of declared tracker cookie names: at most 32 expiries per response, and a browser
    that really holds them all loses them over its following requests."""
    jar = {f"_st_id.{n}": "1" for n in range(1400)}
    while len("; ".join(f"{k}={v}" for k, v in jar.items())) > 16 * 1024:
        jar.popitem()
    total, responses = len(jar), 0
    while jar:
        r = await client.get("/whoami", headers={"cookie": "; ".join(f"{k}={v}" for k, v in jar.items())})
        expired = [v.split("=", 1)[0] for v in r.headers.get_list("set-cookie")]
        assert 0 < len(expired) <= 32 and sum(len(v) for v in r.headers.get_list("set-cookie")) < 4096
        for name in expired:
            jar.pop(name)
        responses += 1
    assert total > 1000 and responses == -(-total // 32)


async def test_a_typed_response_without_cookies_passes_every_message_untouched(config) -> None:
    """A returning visitor's JSON response leaves as the app sent it (no Vary: still cacheable), every
    body message in order; the same visitor's next response that sets a denied cookie is still gated."""
    from consent_banner.consent import Consent, new_consent_id

    start = {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"application/json")],
    }
    bodies = [
        {"type": "http.response.body", "body": b"[1,", "more_body": True},
        {"type": "http.response.body", "body": b"2]"},
    ]
    tracker = [(b"content-type", b"application/json"), (b"set-cookie", b"_st_id.1=x; Path=/")]
    sets_cookie = False

    async def inner(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({**start, "headers": tracker if sets_cookie else list(start["headers"])})
        for m in bodies:
            await send(dict(m))

    app = ConsentMiddleware(inner, config=config)
    value = app.codec.encode(
        Consent(id=new_consent_id(), granted=frozenset(), revision=app.codec.revision, source="banner")
    )
    scope = {
        "type": "http",
        "method": "GET",
        "scheme": "http",
        "path": "/api",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"t.example"), (b"cookie", f"consent={value}".encode())],
    }
    for sets_cookie in (False, True):
        sent: list[dict] = []

        async def send(message, sent=sent):
            sent.append(message)

        await app(dict(scope), None, send)
        if not sets_cookie:
            assert sent == [start, *bodies]
        else:
            headers = [k for k, _ in sent[0]["headers"]]
            assert headers == [b"content-type", b"cache-control", b"vary"] and sent[1:] == bodies
    await app.close()
