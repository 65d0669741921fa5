"""CSP reports posted over HTTP from several client addresses, then `consent-banner log blocked
--suggest` (issue 14, item 6): the endpoint keeps each report's client network, as a decision
records it (/24, /48), and the suggestion counts distinct networks, not reports or addresses."""

from __future__ import annotations

import asyncio
import re
import secrets
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from consent_banner import ConsentConfig
from consent_banner.cli import cli

from .conftest import ORIGIN, make_app
from .log.conftest import PG_DSN, drop_pg_schema, needs_postgres, pg_schema_url

HEADERS = {"content-type": "application/reports+json"}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, needs_postgres])])
async def site(request: pytest.FixtureRequest, toml_path: Path) -> AsyncIterator[Path]:
    """The model consent.toml, its log on each backend."""
    if request.param == "sqlite":
        yield toml_path
        return
    assert PG_DSN is not None
    schema = f"cbreports_{secrets.token_hex(6)}"
    text = re.sub(r'(?m)^log = ".*"$', f'log = "{pg_schema_url(PG_DSN, schema)}"', toml_path.read_text())
    toml_path.write_text(text)
    try:
        yield toml_path
    finally:
        await drop_pg_schema(PG_DSN, schema)


def violation(page: str, blocked: str, directive: str) -> list[dict[str, object]]:
    body = {"documentURL": f"{ORIGIN}{page}", "blockedURL": blocked, "effectiveDirective": directive}
    return [{"type": "csp-violation", "body": body}]


async def post_from(config: ConsentConfig, reports: list[tuple[str, str, str, str]]) -> None:
    """Each (client address, page, blocked URL, directive) posted to a real middleware app."""
    app = make_app(config)
    try:
        for n, (address, page, blocked, directive) in enumerate(reports):
            transport = httpx.ASGITransport(app=app, client=(address, 40000 + n))
            async with httpx.AsyncClient(transport=transport, base_url=ORIGIN) as c:
                r = await c.post(
                    "/_consent/csp-report", json=violation(page, blocked, directive), headers=HEADERS
                )
                assert r.status_code == 204
        await (await app.log()).flush()
    finally:
        await app.close()


async def run(config: Path, *args: str) -> Result:
    return await asyncio.to_thread(
        CliRunner().invoke, cli, ["log", "blocked", "--config", str(config), *args], catch_exceptions=False
    )


async def test_reports_from_several_clients_become_a_service_to_paste(site: Path) -> None:
    """R5: three networks report the site's CDN: suggested (TODO until a person decides). Three addresses
    of one /24, or of one IPv6 /48, are one client each: their origins stay out until --min-clients
    says fewer will do. Once TODO is edited the pasted config loads and declares the CDN."""
    config = ConsentConfig.from_toml(site)
    await post_from(
        config,
        [
            ("192.0.2.10", "/", "https://cdn.shop.example/app.js", "script-src-elem"),
            ("198.51.100.7", "/shop", "https://cdn.shop.example/app.css", "style-src-elem"),
            ("2001:db8:7::1", "/shop?id=1", "https://cdn.shop.example/font.woff2", "font-src"),
            ("203.0.113.1", "/", "https://one-net.example/x.js", "script-src-elem"),
            ("203.0.113.2", "/", "https://one-net.example/x.js", "script-src-elem"),
            ("203.0.113.3", "/", "https://one-net.example/x.js", "script-src-elem"),
            ("2001:db8:1:1::1", "/", "https://one-v6.example/p.gif", "img-src"),
            ("2001:db8:1:2::1", "/", "https://one-v6.example/p.gif", "img-src"),
            ("2001:db8:1:3::1", "/", "https://one-v6.example/p.gif", "img-src"),
        ],
    )
    listed = await run(site)
    assert listed.exit_code == 0, listed.output
    rows = {r.split()[4]: r.split()[:2] for r in listed.output.splitlines()[1:]}
    assert rows["https://one-net.example"] == ["3", "1"] and rows["https://one-v6.example"] == ["3", "1"]

    suggested = await run(site, "--suggest")
    assert suggested.exit_code == 0, suggested.output
    assert "one-net" not in suggested.output and "one-v6" not in suggested.output
    (cdn,) = tomllib.loads(suggested.output)["services"]
    assert cdn == {"name": "cdn-shop-example", "category": "TODO", "origins": ["https://cdn.shop.example"]}
    said = " ".join(line[2:].strip() for line in suggested.output.splitlines() if line.startswith("# "))
    assert (
        "https://cdn.shop.example (font-src: 1, script-src-elem: 1, style-src-elem: 1; 3 client networks, "
        "2 pages, e.g. /)" in said
    )

    pasted = site.with_name("pasted.toml")
    pasted.write_text(site.read_text() + "\n" + suggested.output)
    refused = await asyncio.to_thread(
        CliRunner().invoke, cli, ["log", "blocked", "--config", str(pasted)], catch_exceptions=False
    )
    assert refused.exit_code != 0
    assert "services[3].category: service 'cdn-shop-example' still says 'TODO'" in refused.output
    pasted.write_text(pasted.read_text().replace('category = "TODO"', 'category = "necessary"'))
    declared = ConsentConfig.from_toml(pasted)
    assert declared.services_by_name["cdn-shop-example"].origins == ("https://cdn.shop.example",)

    both = tomllib.loads((await run(site, "--suggest", "--min-clients", "1")).output)["services"]
    assert [s["origins"] for s in both] == [
        ["https://cdn.shop.example"],
        ["https://one-net.example"],
        ["https://one-v6.example"],
    ]
