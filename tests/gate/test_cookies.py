"""Set-Cookie filtering (R3) and expiry of denied cookies (R16), through real ASGI responses."""

from __future__ import annotations

import logging

import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route

from consent_banner.gate import ResponseGate
from consent_banner.gate.cookies import CookieRules, set_cookie_name

from .conftest import OWN, client, consent, gated, make_config


def cookie_app(*names: str, httponly: bool = False) -> Starlette:
    async def page(request):  # type: ignore[no-untyped-def]
        r = JSONResponse({"ok": True})
        for name in names:
            r.set_cookie(name, "v", httponly=httponly, max_age=3600)
        return r

    return Starlette(routes=[Route("/", page)])


def set_cookies(response) -> list[str]:  # type: ignore[no-untyped-def]
    return response.headers.get_list("set-cookie")


def names(response) -> set[str]:  # type: ignore[no-untyped-def]
    return {v.split("=", 1)[0] for v in set_cookies(response)}


async def test_fresh_visitor_gets_only_necessary_and_own_cookies(gate: ResponseGate) -> None:
    """R1, R3: before any decision only necessary cookies (and the middleware's own) are set."""
    app = gated(cookie_app("sessionid", "_ga", "_ga_ABC", "_fbp", "consent"), gate, consent())
    async with client(app) as c:
        r = await c.get("/")
    assert names(r) == {"sessionid", "consent"}


async def test_granted_category_cookies_pass(gate: ResponseGate) -> None:
    """R3: a granted category's cookies pass; the others are still dropped."""
    app = gated(cookie_app("_ga", "_ga_ABC", "_fbp"), gate, consent("analytics"))
    async with client(app) as c:
        r = await c.get("/")
    assert names(r) == {"_ga", "_ga_ABC"}


async def test_httponly_cookies_of_denied_categories_are_dropped(gate: ResponseGate) -> None:
    """R3: HttpOnly cookies are filtered like any other (the server sees them all)."""
    app = gated(cookie_app("_fbp", "sessionid", httponly=True), gate, consent("analytics"))
    async with client(app) as c:
        r = await c.get("/")
    assert names(r) == {"sessionid"}
    assert "httponly" in set_cookies(r)[0].lower()


async def test_per_service_switch_off_drops_that_service_cookies(gate: ResponseGate) -> None:
    """R3: a service switched off inside a granted category sets no cookies."""
    app = gated(cookie_app("_ga"), gate, consent("analytics", services={"stats": False}))
    async with client(app) as c:
        r = await c.get("/")
    assert names(r) == set()


async def test_gpc_denies_marketing_cookies_despite_an_opt_in(gate: ResponseGate) -> None:
    """R26, R27: with the GPC signal applied, an earlier marketing opt-in sets no marketing cookie."""
    the_consent = consent("marketing", "analytics").with_gpc(frozenset({"marketing"}))
    app = gated(cookie_app("_fbp", "_ga"), gate, the_consent)
    async with client(app) as c:
        r = await c.get("/")
    assert names(r) == {"_ga"}


async def test_undeclared_cookie_blocked_and_reported_once(gate: ResponseGate, caplog) -> None:  # type: ignore[no-untyped-def]
    """R3: an undeclared cookie is dropped by default and its name logged once per process."""
    app = gated(cookie_app("mystery", "sessionid"), gate, consent("analytics", "marketing", "media"))
    with caplog.at_level(logging.INFO, logger="consent_banner.gate"):
        async with client(app) as c:
            first = await c.get("/")
            second = await c.get("/")
    assert names(first) == names(second) == {"sessionid"}
    reports = [r for r in caplog.records if "mystery" in r.getMessage()]
    assert len(reports) == 1
    assert reports[0].levelno == logging.WARNING and "declare it" in reports[0].getMessage()


async def test_undeclared_cookie_passes_when_allowed() -> None:
    """R3: undeclared_cookies = "allow" lets undeclared cookies through."""
    gate = ResponseGate(make_config(undeclared_cookies="allow"), own_cookie_names=OWN)
    app = gated(cookie_app("mystery", "_fbp"), gate, consent())
    async with client(app) as c:
        r = await c.get("/")
    assert names(r) == {"mystery"}


async def test_mounted_sub_app_cookies_are_filtered(gate: ResponseGate) -> None:
    """R3: cookies set by a mounted sub-application go through the same filter."""
    outer = Starlette(routes=[Mount("/shop", app=cookie_app("_fbp", "csrftoken"))])
    async with client(gated(outer, gate, consent())) as c:
        r = await c.get("/shop/")
    assert names(r) == {"csrftoken"}


async def test_denied_cookies_in_request_are_expired_on_every_variant(gate: ResponseGate) -> None:
    """R16: declared cookies of denied categories in the request are expired: host-only and the
    declared parent domain, Max-Age=0 and an Expires in the past; undeclared ones are left alone."""
    app = gated(cookie_app(), gate, consent())
    async with client(app) as c:
        r = await c.get(
            "/", headers={"cookie": "_ga=GA1.2.3; _ga_XYZ=1; other_app=1; sessionid=s; consent=x"}
        )
    values = set_cookies(r)
    expired = {v for v in values if v.startswith("_ga=")}
    assert expired == {
        "_ga=; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Path=/; Secure",
        "_ga=; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Path=/; Domain=.example.com; Secure",
    }
    assert {v.split("=", 1)[0] for v in values} == {"_ga", "_ga_XYZ"}
    assert "Cookie" in r.headers["vary"] and "Sec-GPC" in r.headers["vary"]


async def test_expiry_covers_the_configured_cookie_path_and_http() -> None:
    """R16: besides "/", the configured cookie path is cleared; without https no Secure flag."""
    gate = ResponseGate(make_config(cookie={"path": "/app"}), own_cookie_names=OWN)
    app = gated(cookie_app(), gate, consent())
    async with client(app, base_url="http://www.example.com") as c:
        r = await c.get("/", headers={"cookie": "_fbp=1"})
    assert sorted(set_cookies(r)) == [
        "_fbp=; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Path=/",
        "_fbp=; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Path=/app",
    ]


async def test_withdrawal_expires_previously_granted_cookies(gate: ResponseGate) -> None:
    """R16: after a reject the next response expires what the earlier grant let in."""
    async with client(gated(cookie_app("_ga"), gate, consent("analytics"))) as c:
        granted = await c.get("/")
    assert names(granted) == {"_ga"}
    async with client(gated(cookie_app("_ga"), gate, consent())) as c:
        rejected = await c.get("/", headers={"cookie": "_ga=v"})
    values = set_cookies(rejected)
    assert values and all(v.startswith("_ga=; Max-Age=0") for v in values)


async def test_granted_request_cookies_are_not_expired(gate: ResponseGate) -> None:
    """R16: only denied categories are expired."""
    async with client(gated(cookie_app(), gate, consent("analytics"))) as c:
        r = await c.get("/", headers={"cookie": "_ga=1; sessionid=2"})
    assert set_cookies(r) == []
    assert "vary" not in r.headers


async def test_host_prefixed_cookie_is_expired_without_domain() -> None:
    """R16: a __Host- cookie can only be replaced host-only, with Secure."""
    config = make_config()
    rules = CookieRules(config, OWN)
    [(name, decl)] = rules.denied_in_request({"__Host-ad": "1"}, frozenset())
    assert rules.expire(name, decl, host="www.example.com", secure=True) == [
        b"__Host-ad=; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Path=/; Secure"
    ]


def test_parent_domain_variant_only_where_the_host_can_set_it() -> None:
    """R16: the Domain variant is sent only when the request host lies inside that domain."""
    rules = CookieRules(make_config(), OWN)
    [(name, decl)] = rules.denied_in_request({"_ga": "1"}, frozenset())
    assert len(rules.expire(name, decl, host="shop.example.com:8443", secure=False)) == 2
    assert len(rules.expire(name, decl, host="example.com", secure=False)) == 2
    assert len(rules.expire(name, decl, host="example.org", secure=False)) == 1


async def test_static_response_without_cookies_is_untouched(gate: ResponseGate) -> None:
    """R35: a response that does not depend on consent stays cacheable: no Vary, no changes."""

    async def static(request):  # type: ignore[no-untyped-def]
        return PlainTextResponse(
            "body{}", media_type="text/css", headers={"cache-control": "public, max-age=60"}
        )

    async with client(gated(Starlette(routes=[Route("/s.css", static)]), gate, consent())) as c:
        r = await c.get("/s.css", headers={"cookie": "other=1"})
    assert "vary" not in r.headers and r.headers["cache-control"] == "public, max-age=60"
    assert r.text == "body{}"


async def test_vary_is_merged_with_the_app_vary(gate: ResponseGate) -> None:
    """R35: an existing Vary is kept and extended once, not duplicated."""

    async def page(request):  # type: ignore[no-untyped-def]
        r = Response("x", headers={"vary": "Accept-Encoding, cookie"})
        r.set_cookie("_fbp", "1")
        return r

    async with client(gated(Starlette(routes=[Route("/", page)]), gate, consent())) as c:
        r = await c.get("/")
    assert r.headers.get_list("vary") == ["Accept-Encoding, cookie, Sec-GPC"]


@pytest.mark.parametrize(
    ("header", "name"),
    [
        (b"a=1; Path=/", "a"),
        (b" spaced =1", "spaced"),
        (b"novalue", ""),
        (b"=x", ""),
        (b"__Host-x=1", "__Host-x"),
    ],
)
def test_set_cookie_name(header: bytes, name: str) -> None:
    """R3: the cookie name is read as browsers read it (no "=": a nameless cookie)."""
    assert set_cookie_name(header) == name
