"""Behind a TLS-terminating reverse proxy (issue 14): `site_origins`, and uvicorn's proxy headers.

The proxy reaches the app over plain http, often with the Host rewritten (``app:8000``), while the
browser is on ``https://www.example.com``. Without `site_origins` this site's origin is the request's
scheme and Host, so the browser's ``Origin`` never matches and every decision is refused; with it the
listed origins alone count (also against a forged Host or a rebound DNS name), cookies stay Secure
under their ``__Host-`` names and expiries reach the parent domain. uvicorn's ProxyHeadersMiddleware,
around the app as ``--proxy-headers --forwarded-allow-ips`` puts it, sets the client address and
scheme from a trusted proxy's headers: what the log keeps, the rate limit counts and ``Secure``
follows; an untrusted peer's headers change nothing. The real nginx in front of uvicorn and Chromium
is e2e/test_proxy.py.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from consent_banner import ConfigError, ConsentConfig, ConsentMiddleware, csp_nonce

from .conftest import make_app, rows

SITE = "https://www.example.com"
UPSTREAM = "http://app:8000"  # what a proxy that rewrites Host hands the app: plain http, its own name
PROXY = "10.0.0.2"  # the proxy's address, the only one trusted to forward headers
VISITOR = "203.0.113.77"
BEHIND = {"host": "app:8000", "origin": SITE}  # the browser's request as the app sees it


def proxied(config: ConsentConfig, **changes: Any) -> ConsentConfig:
    """The test config with Secure cookies (as in production) and `changes`."""
    data = config.model_dump()
    data["cookie"] = {**data["cookie"], "secure": True}
    return ConsentConfig.from_dict({**data, **changes})


def set_cookies(response: httpx.Response) -> dict[str, list[str]]:
    """name -> every Set-Cookie value of that name in the response."""
    out: dict[str, list[str]] = {}
    for value in response.headers.get_list("set-cookie"):
        out.setdefault(value.split("=", 1)[0], []).append(value)
    return out


async def decide(
    app: Any, headers: dict[str, str], *, peer: str = PROXY, base: str = UPSTREAM
) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, client=(peer, 40000))
    async with httpx.AsyncClient(transport=transport, base_url=base) as c:
        return await c.post("/_consent", json={"action": "accept_all"}, headers=headers)


async def get(app: Any, path: str, headers: dict[str, str], *, peer: str = PROXY) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, client=(peer, 40000))
    async with httpx.AsyncClient(transport=transport, base_url=UPSTREAM) as c:
        return await c.get(path, headers=headers)


# --- the setting ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "kept"),
    [
        ("https://www.example.com", "https://www.example.com"),
        ("HTTPS://WWW.Example.COM:443/", "https://www.example.com"),  # as the browser writes Origin
        ("http://shop.example.com:80", "http://shop.example.com"),
        ("https://www.example.com:8443", "https://www.example.com:8443"),
        ("https://bücher.example", "https://xn--bcher-kva.example"),  # browsers send the A-label
        ("https://[2001:DB8:0:0::1]:443", "https://[2001:db8::1]"),
        ("https://192.0.2.10:8443", "https://192.0.2.10:8443"),
        ("  https://intranet_app.example  ", "https://intranet_app.example"),
    ],
)
def test_site_origins_are_kept_as_the_browser_writes_origin(config, written, kept) -> None:
    assert proxied(config, site_origins=[written]).site_origins == (kept,)


@pytest.mark.parametrize(
    ("written", "why"),
    [
        ("ftp://www.example.com", "write scheme://host[:port] with http or https"),
        ("www.example.com", "write scheme://host[:port]"),
        ("https:www.example.com", "write scheme://host[:port]"),
        ("https://user:secret@www.example.com", "no user name or password"),
        ("https://www.example.com/shop", "no path, query or fragment"),
        ("https://www.example.com?x=1", "no path, query or fragment"),
        ("https://www.example.com#top", "no path, query or fragment"),
        ("https://*.example.com", "not a host name or an IP address (one host, no wildcard)"),
        ("https://www .example.com", "not a host name"),
        ("https://-www.example.com", "not a host name"),
        ("https://www.example.com.", "not a host name"),
        ("https://300.1.1.1", "not a host name or an IP address"),
        ("https://", "not a host name"),
        ("https://www.example.com:0", "port 0"),
        ("https://www.example.com:70000", "is not an origin (Port out of range"),
    ],
)
def test_a_bad_site_origin_is_named_with_its_key_and_value(config, written, why) -> None:
    with pytest.raises(ConfigError) as e:
        proxied(config, site_origins=["https://ok.example.com", written])
    assert f"site_origins[1]: {written!r}" in str(e.value) and why in str(e.value)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ([], "site_origins: name at least one origin"),
        (
            ["https://www.example.com", "https://WWW.example.com:443"],
            "'https://www.example.com' is listed twice",
        ),
        ("https://www.example.com", "site_origins: Input should be a valid"),
    ],
)
def test_site_origins_is_a_list_of_distinct_origins(config, value, why) -> None:
    with pytest.raises(ConfigError) as e:
        proxied(config, site_origins=value)
    assert why in str(e.value)


def test_site_origins_is_a_top_level_key_of_consent_toml(tmp_path, toml_path) -> None:
    text = toml_path.read_text()
    toml_path.write_text(
        text.replace("[cookie]", 'site_origins = ["https://www.example.com"]\n\n[cookie]', 1)
    )
    assert ConsentConfig.from_toml(toml_path).site_origins == ("https://www.example.com",)
    toml_path.write_text(
        text.replace("[cookie]", 'site_origins = ["https://www.example.com/"," x"]\n[cookie]')
    )
    with pytest.raises(ConfigError) as e:
        ConsentConfig.from_toml(toml_path)
    assert "site_origins[1]: ' x'" in str(e.value) and str(toml_path) in str(e.value)


# --- the origin check --------------------------------------------------------------------------------


async def test_behind_a_tls_proxy_without_site_origins_every_decision_is_refused(config) -> None:
    """The issue, reproduced: the app sees http and app:8000, the browser says https://www.example.com."""
    app = make_app(proxied(config))
    r = await decide(app, BEHIND)
    await app.close()
    assert r.status_code == 403 and "'https://www.example.com' is not allowed" in r.json()["error"]


async def test_with_site_origins_the_browsers_origin_is_this_sites(config) -> None:
    cfg = proxied(config, site_origins=[SITE, "https://example.com"])
    app = make_app(cfg)
    for origin in (SITE, "https://example.com", "HTTPS://WWW.EXAMPLE.COM"):
        r = await decide(app, {"host": "app:8000", "origin": origin})
        assert r.status_code == 200, (origin, r.text)
        # this site's, not an embedding one's: a cookie, no token, no CORS
        assert "token" not in r.json() and "access-control-allow-origin" not in r.headers
    await app.close()
    assert len(rows(cfg)) == 3


@pytest.mark.parametrize(
    "headers",
    [
        {"host": "app:8000", "origin": UPSTREAM},  # the request's own scheme and Host: not the site's
        {"host": "www.example.com", "origin": "http://www.example.com"},  # the site's host, not its scheme
        {"host": "evil.example", "origin": "http://evil.example"},  # a rebound DNS name, or a forged Host
        {"host": "www.example.com", "origin": "https://www.example.com:8443"},  # another port
        {"host": "www.example.com", "origin": "https://www.example.com.evil.example"},
    ],
)
async def test_with_site_origins_the_requests_scheme_and_host_prove_nothing(config, headers) -> None:
    """R34: an origin that only agrees with the request's own scheme and Host is refused, as it is a page of
    another site served to the same address (DNS rebinding) or a client writing both."""
    cfg = proxied(config, site_origins=[SITE])
    app = make_app(cfg)
    r = await decide(app, headers)
    await app.close()
    assert r.status_code == 403 and "is not allowed" in r.json()["error"]
    assert "set-cookie" not in r.headers and rows(cfg) == []


async def test_without_site_origins_a_rebound_host_passes_as_today(config) -> None:
    """What `site_origins` closes: with only the request to go by, a Host and an Origin that agree pass."""
    app = make_app(proxied(config))
    r = await decide(app, {"host": "evil.example", "origin": "http://evil.example"})
    await app.close()
    assert r.status_code == 200


async def test_with_site_origins_same_origin_fetch_metadata_and_embedding_sites_still_work(config) -> None:
    cfg = proxied(config, site_origins=[SITE])
    app = make_app(cfg)
    r = await decide(app, {"host": "app:8000", "sec-fetch-site": "same-origin"})
    assert r.status_code == 200, r.text
    partner = {"host": "app:8000", "origin": "http://partner.example"}  # the config's allowed_origins
    r = await decide(app, partner)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://partner.example"
    assert r.json()["token"] and "set-cookie" not in r.headers
    await app.close()


# --- cookies behind the proxy --------------------------------------------------------------------------


async def test_an_https_site_keeps_secure_host_cookies_when_the_app_sees_http(config) -> None:
    """Every site origin https, the server not told to trust the proxy: the browser is on https all the
    same, so the consent and form-token cookies keep their __Host- names, and are read under them."""
    cfg = proxied(config, site_origins=[SITE])
    app = make_app(cfg)
    page = await get(app, "/", {"host": "app:8000"})
    [csrf] = set_cookies(page)["__Host-consent_csrf"]
    assert "; Secure" in csrf and "Domain" not in csrf and "Path=/;" in csrf
    r = await decide(app, BEHIND)
    [cookie] = set_cookies(r)["__Host-consent"]
    assert "; Secure" in cookie and "Domain" not in cookie
    value = cookie.split(";")[0].split("=", 1)[1]
    who = await get(app, "/whoami", {"host": "app:8000", "cookie": f"__Host-consent={value}"})
    assert who.json()["decided"] and who.json()["marketing"]
    # A plain-named cookie (the previous release's) is moved to the __Host- name, not trusted beside it.
    moved = await get(app, "/whoami", {"host": "app:8000", "cookie": f"consent={value}"})
    assert moved.json()["decided"]
    assert [c for c in set_cookies(moved)["consent"] if "Max-Age=0" in c]
    assert all("; Secure" in c for values in set_cookies(moved).values() for c in values)
    await app.close()


async def test_a_site_also_on_plain_http_follows_the_requests_scheme(config) -> None:
    cfg = proxied(config, site_origins=[SITE, "http://www.example.com"])
    app = make_app(cfg)
    r = await decide(app, {"host": "www.example.com", "origin": "http://www.example.com"})
    await app.close()
    assert r.status_code == 200 and "consent" in set_cookies(r) and "__Host-consent" not in set_cookies(r)


@pytest.mark.parametrize("host", ["app:8000", "www.example.com"])
async def test_expiries_behind_the_proxy_are_secure_and_reach_the_declared_domain(config, host) -> None:
    """`_ads` is declared on .example.com: a denied one is expired host-only and on the parent domain,
    with Secure (a Secure cookie is only replaced by a Secure Set-Cookie), whatever Host the app sees."""
    app = make_app(proxied(config, site_origins=[SITE]))
    r = await get(app, "/whoami", {"host": host, "cookie": "_ads=1"})
    await app.close()
    expiries = set_cookies(r)["_ads"]
    assert len(expiries) == 2 and all("Max-Age=0" in c and c.endswith("; Secure") for c in expiries)
    assert sum("; Domain=.example.com" in c for c in expiries) == 1


async def test_expiries_name_no_domain_a_site_host_is_not_on(config) -> None:
    app = make_app(proxied(config, site_origins=["https://www.example.org"]))
    r = await get(app, "/whoami", {"host": "www.example.org", "cookie": "_ads=1"})
    await app.close()
    [expiry] = set_cookies(r)["_ads"]
    assert "Domain" not in expiry and expiry.endswith("; Secure")


async def _csp_page(request: Request) -> HTMLResponse:
    nonce = csp_nonce(request)
    return HTMLResponse(
        f"<!doctype html><html lang='en'><head><script nonce='{nonce}' src='/app.js'></script></head>"
        "<body><p>hi</p></body></html>",
        headers={"content-security-policy": "script-src https://www.example.com; object-src 'none'"},
    )


@pytest.mark.parametrize(("site_origins", "kept"), [(None, False), ([SITE], True)])
async def test_the_apps_own_origin_in_its_policy_is_self_behind_the_proxy(config, site_origins, kept) -> None:
    """The app's policy names its own origin; merged with ours ('self'), it survives only when 'self'
    is known to be https://www.example.com, not the http://app:8000 the app was reached at."""
    inner = Starlette(routes=[Route("/", _csp_page)])
    app = ConsentMiddleware(inner, config=proxied(config, site_origins=site_origins))
    r = await get(app, "/", {"host": "app:8000"})
    await app.close()
    script_src = next(
        d for d in r.headers["content-security-policy"].split(";") if d.strip().startswith("script-src")
    )
    assert ("https://www.example.com" in script_src.split()) is kept, script_src
    assert ("'self'" in script_src.split()) is kept, script_src


# --- uvicorn's proxy headers ---------------------------------------------------------------------------


def behind_uvicorn(config: ConsentConfig, trusted: str = PROXY) -> tuple[Any, ConsentMiddleware]:
    """The app as `uvicorn --proxy-headers --forwarded-allow-ips=<trusted>` serves it."""
    app = make_app(config)
    return ProxyHeadersMiddleware(app, trusted_hosts=trusted), app  # type: ignore[arg-type]


FORWARDED = {"host": "www.example.com", "origin": SITE, "x-forwarded-proto": "https"}


async def test_a_trusted_proxys_client_address_and_scheme_are_what_counts(config) -> None:
    """R21: the log keeps the visitor's network (truncated), not the proxy's; over the forwarded https the
    cookie is __Host- and Secure, and the browser's origin is this site's without `site_origins`."""
    cfg = proxied(config)
    outer, app = behind_uvicorn(cfg)
    # The visitor forged a first entry; nginx's $proxy_add_x_forwarded_for appended the real address.
    r = await decide(outer, {**FORWARDED, "x-forwarded-for": f"198.18.0.1, {VISITOR}"}, base=SITE)
    expired = await get(outer, "/whoami", {**FORWARDED, "x-forwarded-for": VISITOR, "cookie": "_ads=1"})
    await app.close()
    assert r.status_code == 200, r.text
    assert [row["ip"] for row in rows(cfg)] == ["203.0.113.0"]
    assert "; Secure" in set_cookies(r)["__Host-consent"][0]
    assert all(c.endswith("; Secure") for c in set_cookies(expired)["_ads"])


async def test_an_untrusted_peers_forwarded_headers_are_ignored(config) -> None:
    """A client that is not the proxy cannot choose the address logged and rate-limited, nor the scheme."""
    cfg = proxied(config)
    outer, app = behind_uvicorn(cfg)
    forged = {**FORWARDED, "x-forwarded-for": VISITOR}
    refused = await decide(outer, forged, peer="198.51.100.9")  # http://www.example.com is not its Origin
    r = await decide(outer, {**forged, "origin": "http://www.example.com"}, peer="198.51.100.9")
    await app.close()
    assert refused.status_code == 403
    assert r.status_code == 200 and [row["ip"] for row in rows(cfg)] == ["198.51.100.0"]
    assert "consent" in set_cookies(r) and "__Host-consent" not in set_cookies(r)  # plain http


async def test_the_decision_budget_counts_each_forwarded_client(config) -> None:
    """Behind a trusted proxy every visitor has a budget of their own; an untrusted peer forging
    X-Forwarded-For gets no fresh budget from it."""
    # ten at once, then one every six minutes
    cfg = proxied(config, site_origins=[SITE], decision_rate_limit="10/hour")
    outer, app = behind_uvicorn(cfg)

    async def statuses(n: int, address: str, peer: str = PROXY) -> list[int]:
        headers = {**FORWARDED, "x-forwarded-for": address}
        return [(await decide(outer, headers, peer=peer)).status_code for _ in range(n)]

    assert await statuses(11, VISITOR) == [200] * 10 + [429]
    assert await statuses(1, "203.0.113.78") == [200]
    forged = [await statuses(1, f"192.0.2.{i}", peer="198.51.100.9") for i in range(11)]
    await app.close()
    assert [s for [s] in forged] == [200] * 10 + [429]


async def test_forwarded_allow_ips_star_lets_a_client_choose_its_address(config) -> None:
    """The threat model's line: trusting every peer ('*') takes the first X-Forwarded-For entry,
    which the client writes: the log keeps whatever address it claims."""
    cfg = proxied(config)
    outer, app = behind_uvicorn(cfg, trusted="*")
    r = await decide(outer, {**FORWARDED, "x-forwarded-for": f"198.18.0.1, {VISITOR}"}, base=SITE)
    await app.close()
    assert r.status_code == 200 and [row["ip"] for row in rows(cfg)] == ["198.18.0.0"]
