"""Red team for issue 14's new features: the failure page a banner form post gets (failure.py) and
`consent-banner log blocked --suggest` (scan/blocked.py, the CSP report endpoint, schema 3).

Each test here reproduced a finding (it failed on the code before its fix) or pins an attack that
held, through the public interface: HTTP into the middleware, the CLI over the log it wrote.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import re
import string
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from consent_banner import ConsentConfig, routes
from consent_banner.cli import cli
from consent_banner.log import core as log_core
from consent_banner.log.schema import TABLES

from ..conftest import ORIGIN, make_app
from ..log.rawdb import RawDB
from ..test_blocked_reports import post_from, run, site  # noqa: F401  (site: the fixture, both backends)
from ..test_routes import SAME
from .asgi_driver import Answer, call
from .conftest import FUZZ, FUZZ_EXAMPLES, write_config

CDN = "https://cdn.shop.example"
REPORT_HEADERS = {"content-type": "application/reports+json"}
# A few hundred examples: each is a request through the whole middleware, on a machine shared by six.
FEW = hsettings(FUZZ, max_examples=min(FUZZ_EXAMPLES, 300))


# --- log blocked --suggest ------------------------------------------------------------------------


async def test_a_6to4_address_is_logged_and_counted_as_its_ipv4_network(site: Path) -> None:  # noqa: F811
    """R21. Finding: a 6to4 address (2002:AABB:CCDD::/48) carries the whole IPv4 address in its /48, so
    the log kept a visitor's full IPv4 address (R21 keeps a /24), and one IPv4 /24 posing as 6to4
    was 256 "distinct networks" for --suggest. Now it is its IPv4 /24 in both."""
    config = ConsentConfig.from_toml(site)
    # 192.0.2.1, .2 and .3 (one /24) as 6to4, each a /48 of its own before the fix
    forged = [(f"2002:c000:2{n:02x}::1", "/", "https://forged.example/x.js", "img-src") for n in (1, 2, 3)]
    await post_from(config, forged)
    listed = await run(site)
    assert listed.exit_code == 0, listed.output
    rows = {r.split()[4]: r.split()[:2] for r in listed.output.splitlines()[1:]}
    assert rows["https://forged.example"] == ["3", "1"]  # three reports, one client network
    suggested = await run(site, "--suggest")
    assert suggested.exit_code == 0 and "https://forged.example" not in suggested.output
    # and what a decision records from such an address is the /24, never the address
    app = make_app(config)
    try:
        transport = httpx.ASGITransport(app=app, client=("2002:c000:0201:7::5", 40000))
        async with httpx.AsyncClient(transport=transport, base_url=ORIGIN) as c:
            r = await c.post("/_consent", json={"action": "reject_all"}, headers=SAME)
            assert r.status_code == 200
        log = await app.log()
        await log.flush()
        [record] = [r async for r in log.iter_records()]
    finally:
        await app.close()
    assert record.ip == "192.0.2.0"


async def test_a_flood_from_one_network_does_not_evict_the_genuine_reports(
    site: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """R5. Finding: the blocked table keeps its newest rows (BLOCKED_KEEP), so one client pushing reports
    (20 a second per process: 100,000 rows in under 90 minutes, its /64s each a budget of their own)
    evicted every genuine report before anyone ran --suggest. Now a client network keeps at most
    BLOCKED_PER_CLIENT rows at a pruning (its oldest go first), so a flood evicts its own reports.
    The bounds are scaled down here; the shape is the real one."""
    monkeypatch.setattr(log_core, "BLOCKED_KEEP", 50)
    monkeypatch.setattr(log_core, "BLOCKED_PRUNE_EVERY", 10)
    monkeypatch.setattr(log_core, "BLOCKED_PER_CLIENT", 5, raising=False)
    monkeypatch.setattr(routes, "REPORTS_PER_SECOND", 10**6)
    config = ConsentConfig.from_toml(site)
    genuine = [
        ("192.0.2.10", "/", f"{CDN}/app.js", "script-src-elem"),
        ("198.51.100.7", "/shop", f"{CDN}/app.css", "style-src-elem"),
        ("2001:db8:7::1", "/", f"{CDN}/font.woff2", "font-src"),
    ]
    # one /48, a fresh /64 per report: each a rate-limit client of its own, one network in the log
    flood = [(f"2001:db8:bad:{n:x}::1", "/", "https://junk.example/x.js", "img-src") for n in range(120)]
    await post_from(config, genuine + flood)
    suggested = await run(site, "--suggest")
    assert suggested.exit_code == 0, suggested.output
    services = tomllib.loads(suggested.output).get("services", [])
    assert [s["origins"] for s in services] == [[CDN]]
    listed = await run(site)
    rows = {r.split()[4]: r.split()[:2] for r in listed.output.splitlines()[1:]}
    assert int(rows["https://junk.example"][0]) <= 5 + 10  # its share, and what came since the pruning


async def test_reports_from_many_networks_still_keep_only_the_newest(
    site: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The table's bound holds when no network exceeds its share: the newest BLOCKED_KEEP rows stay
    (counted, not an id range, which the pruning per client leaves with gaps)."""
    monkeypatch.setattr(log_core, "BLOCKED_KEEP", 50)
    monkeypatch.setattr(log_core, "BLOCKED_PRUNE_EVERY", 10)
    monkeypatch.setattr(routes, "REPORTS_PER_SECOND", 10**6)
    config = ConsentConfig.from_toml(site)
    many = [(f"203.0.{n}.1", "/", f"https://n{n}.example/x.js", "img-src") for n in range(100)]
    await post_from(config, many)
    listed = await run(site, "--limit", "1000")
    origins = {r.split()[4] for r in listed.output.splitlines()[1:]}
    assert 50 <= len(origins) < 50 + 10
    assert "https://n99.example" in origins and "https://n0.example" not in origins


# --- the failure page -----------------------------------------------------------------------------

PAGE_CSP = "default-src 'none'; style-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
SAFE = string.ascii_letters + string.digits + "-._~"  # what a form value holds unencoded


def browser_href(href: str) -> str:
    """An href as a browser resolves it: entities decoded, tab and newlines removed (WHATWG URL)."""
    return re.sub(r"[\t\n\r]", "", html.unescape(href))


def assert_failure_page(answer: Answer) -> None:
    """What every failure page keeps, whatever the request: static, uncacheable, a local link."""
    headers = {k.decode().lower(): v.decode("latin-1") for k, v in answer.headers}
    assert headers["content-security-policy"] == PAGE_CSP
    assert headers["cache-control"] == "no-store" and "set-cookie" not in headers
    assert headers["x-content-type-options"] == "nosniff"
    text = answer.body.decode()
    assert "<script" not in text.lower() and "csrf" not in text
    [href] = re.findall(r'<a href="([^"]*)"', text)
    target = browser_href(href)
    assert target.startswith("/") and target[1:2] not in ("/", "\\"), href


@pytest.fixture
def failure_app(tmp_path: Path) -> Iterator[tuple[asyncio.AbstractEventLoop, Any, str, bytes]]:
    """One app (in-memory log, the rate limit on), a visitor's form token and its cookie header."""
    config = ConsentConfig.from_toml(write_config(tmp_path, "memory://", decision_rate_limit='"5/minute"'))
    loop = asyncio.new_event_loop()
    app = make_app(config)
    page = loop.run_until_complete(call(app, "GET", "/"))
    token = re.search(rb'name="csrf" value="([^"]+)"', page.body)
    assert token is not None
    cookies = b"; ".join(v.split(b";")[0] for v in page.header_values(b"set-cookie"))
    try:
        yield loop, app, token.group(1).decode(), cookies
    finally:
        loop.run_until_complete(app.close())
        loop.close()


header_bytes = st.one_of(
    st.binary(max_size=300).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    st.sampled_from(
        [
            b"text/html",
            b"application/json",
            b"application/json;q=nan, text/html;q=inf",
            b"*/*;q=1e999",
            b"text/html;q=-1, application/json;q=0.0001",
            b"sv;q=0.9," * 500,
            b"http://testserver/\t/evil.example",
            b"http://testserver//evil.example/",
            b"http://testserver/\\evil.example",
            b"http://[::1",
            b"javascript://testserver/%0aalert(1)",
        ]
    ),
)
form_value = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "//evil.example",
            "/\t/evil.example",
            "/\n\\evil.example",
            "\\\\evil.example",
            "javascript:alert(1)",
            "/%2F%2Fevil.example",
            '/"><script>alert(1)</script>',
            "/\x00//evil.example",
            "https:evil.example",
            " /x",
        ]
    ),
)


_strategies = {
    "path": st.sampled_from(["/_consent", "/_consent/", "/_consent/withdraw", "/_consent/withdraw/"]),
    "fields": st.lists(
        st.tuples(
            st.sampled_from(["action", "return_to", "language", "csrf", "categories", "service.stats", "x"]),
            form_value,
        ),
        max_size=6,
    ),
    "token": st.booleans(),
    "ctype": st.sampled_from(
        [b"application/x-www-form-urlencoded", b"multipart/form-data; boundary=b", b"text/plain", b"\xff"]
    ),
    "origin": st.sampled_from([b"http://testserver", b"https://evil.example", b"null", None]),
    "extra": st.dictionaries(
        st.sampled_from([b"accept", b"accept-language", b"referer", b"host"]), header_bytes
    ),
}


def test_no_form_post_or_header_makes_the_failure_page_unsafe(
    failure_app: tuple[asyncio.AbstractEventLoop, Any, str, bytes],
) -> None:
    """R13. Hypothesis over form bodies (urlencoded, multipart, hostile return_to and language) and raw
    headers (Accept, Accept-Language, Referer, Host, non-UTF-8 bytes): never a 500; a failure page
    is static (no script, the fixed CSP), never cached nor setting a cookie, never shows the form
    token, and links only to a path of this site; a redirect goes nowhere else either."""
    loop, app, csrf, cookies = failure_app
    seen: set[int] = set()
    examples = pages = 0

    @FEW
    @given(**_strategies)
    def check(
        path: str,
        fields: list[tuple[str, str]],
        token: bool,
        ctype: bytes,
        origin: bytes | None,
        extra: dict[bytes, bytes],
    ) -> None:
        if token:
            fields = [("csrf", csrf), *fields]
        if ctype.startswith(b"multipart"):
            parts = [
                b'--b\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n' % (k.encode(), v.encode())
                for k, v in fields
            ]
            body = b"".join(parts) + b"--b--\r\n"
        else:
            body = urlencode(fields).encode()
        headers = [(b"content-type", ctype), (b"cookie", cookies)]
        if origin is not None:
            headers.append((b"origin", origin))
        extra = dict(extra)
        host = extra.pop(b"host", b"testserver")
        headers += list(extra.items())
        answer = loop.run_until_complete(call(app, "POST", path, headers=headers, body=body, host=host))
        assert answer.status < 500, answer.body[:300]
        seen.add(answer.status)
        nonlocal examples
        examples += 1
        kind = b"".join(answer.header_values(b"content-type"))
        if answer.status >= 400 and kind.startswith(b"text/html"):
            assert_failure_page(answer)
            nonlocal pages
            pages += 1
        elif answer.status >= 400:
            assert json.loads(answer.body)["error"]
        elif answer.status == 303:
            [location] = answer.header_values(b"location")
            assert b"\r" not in location and b"\n" not in location  # no header of the form's making
            target = browser_href(location.decode("latin-1"))
            assert target.startswith("/") and target[1:2] not in ("/", "\\"), location

    check()
    print(f"\n[fuzz] failure page: {examples} examples, statuses {sorted(seen)}, {pages} pages")
    assert pages and 403 in seen  # the examples reached the page, not only the JSON


async def test_two_workers_on_a_schema_2_log_wait_for_log_migrate_then_take_reports(
    site: Path,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A schema-2 log (no client network per report) opened by two workers at once while reports
    arrive: neither changes the schema (only `log migrate` does): each answers 503 and says to run
    it, and nothing is written. After `log migrate` both take reports; old rows count as an unknown
    network, new ones by their network."""
    config = ConsentConfig.from_toml(site)
    await post_from(config, [("192.0.2.1", "/", "https://old.example/x.js", "img-src")])
    async with RawDB(config.log) as raw:  # back to schema 2, as the previous release left it
        for table, column in [(t.name, c.name) for t in TABLES for c in t.columns if c.since > 2]:
            await raw.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        await raw.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    apps = [make_app(config), make_app(config)]

    async def worker(n: int, status: int) -> None:
        for k in range(3):
            transport = httpx.ASGITransport(app=apps[n], client=(f"198.51.{n * 3 + k}.9", 40000))
            async with httpx.AsyncClient(transport=transport, base_url=ORIGIN) as c:
                body = [{"type": "csp-violation", "body": {"documentURL": f"{ORIGIN}/", "blockedURL": CDN}}]
                body[0]["body"]["effectiveDirective"] = "img-src"
                r = await c.post("/_consent/csp-report", json=body, headers=REPORT_HEADERS)
                assert r.status_code == status

    try:
        with caplog.at_level(logging.ERROR, logger="consent_banner"):
            await asyncio.gather(worker(0, 503), worker(1, 503))
        said = [m for m in caplog.messages if "schema 2" in m and "run `consent-banner log migrate`" in m]
        assert said, caplog.messages
        async with RawDB(config.log) as raw:
            assert await raw.fetchval("SELECT value FROM meta WHERE key = 'schema_version'") == "2"
            assert await raw.fetchval("SELECT count(*) FROM blocked") == 1
        migrated = await asyncio.to_thread(
            CliRunner().invoke, cli, ["log", "migrate", "--config", str(site)], catch_exceptions=False
        )
        assert migrated.exit_code == 0 and "(was 2)" in migrated.output, migrated.output
        await asyncio.gather(worker(0, 204), worker(1, 204))
        for app in apps:
            await (await app.log()).flush()
    finally:
        for app in apps:
            await app.close()
    listed = await run(site)
    assert listed.exit_code == 0, listed.output
    rows = {r.split()[4]: r.split()[:2] for r in listed.output.splitlines()[1:]}
    assert rows[CDN] == ["6", "6"] and rows["https://old.example"] == ["1", "0"]


async def test_reports_naming_this_site_or_a_declared_tracker_never_become_a_service(
    site: Path,  # noqa: F811
) -> None:
    """R5. Finding: reports naming the site's own origin (in site_origins) from three networks became a
    `[[services]]` block for the site itself. 'self' is in every directive the gate writes, so no
    genuine report names it (a forged one would get the site declared as a third party): it is said
    in a comment and never suggested. Held: a declared tracker under another scheme, port or the
    upgraded scheme stays with its own service and category, never a new or necessary one."""
    site.write_text('site_origins = ["https://www.shop.example"]\n' + site.read_text())
    config = ConsentConfig.from_toml(site)
    nets = ("192.0.2.1", "198.51.100.1", "2001:db8:5::1")
    named = [
        "https://www.shop.example",  # this site
        "https://ads.example.com",  # pixel (marketing), exactly
        "https://ads.example.com:8443",  # pixel's host on another port
        "https://stats.example.net",  # stats (analytics)
    ]
    await post_from(config, [(net, "/", f"{o}/x.js", "script-src-elem") for o in named for net in nets])
    suggested = await run(site, "--suggest")
    assert suggested.exit_code == 0, suggested.output
    parsed = tomllib.loads(suggested.output)
    assert parsed.get("services", []) == []
    said = " ".join(line[2:].strip() for line in suggested.output.splitlines() if line.startswith("#"))
    assert 'declared by service "pixel"; blocked until a visitor grants marketing' in said
    assert 'declared by service "stats"; blocked until a visitor grants analytics' in said
    assert 'Service "pixel" (marketing) declares this host' in said
    assert "https://www.shop.example" in said and "this site's own origin" in said
    assert "necessary" not in said.replace("necessary only if", "")


async def test_behind_a_proxy_the_failure_page_links_back_to_the_referring_page(toml_path: Path) -> None:
    """R13. Finding: the page linked back to the Referer only when it named the request's Host; behind a
    proxy that rewrites Host (site_origins configured) that is never the browser's, so a refusal
    before the body was read always linked to the root. With site_origins, they decide; a Referer of
    another site, or naming the rewritten Host itself, still gets the root."""
    toml_path.write_text('site_origins = ["https://www.shop.example"]\n' + toml_path.read_text())
    app = make_app(ConsentConfig.from_toml(toml_path))
    proxied = "http://app:8000"  # what the app sees: the proxy's Host
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=proxied) as c:
            form = {"action": "accept_all", "csrf": "x", "return_to": "/whoami"}
            hostile = {"origin": "https://evil.example", "accept": "text/html"}
            for referer, back in [
                ("https://www.shop.example/plain?a=1", "/plain?a=1"),
                ("https://WWW.shop.example/plain", "/plain"),
                ("https://www.shop.example//evil.example/", "/"),
                ("http://app:8000/plain", "/"),
                ("https://evil.example/plain", "/"),
                ("https://www.shop.example.evil.example/plain", "/"),
            ]:
                r = await c.post("/_consent", data=form, headers={**hostile, "referer": referer})
                assert r.status_code == 403
                [href] = re.findall(r'<a href="([^"]*)"', r.text)
                assert html.unescape(href) == back, referer
    finally:
        await app.close()
