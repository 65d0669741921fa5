"""Red team for issue 14's new features: the failure page a banner form post gets (failure.py) and
`consent-banner log blocked --suggest` (scan/blocked.py, the CSP report endpoint, schema 3).

Each test here reproduced a finding (it failed on the code before its fix) or pins an attack that
held, through the public interface: HTTP into the middleware, the CLI over the log it wrote.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import httpx
import pytest

from consent_banner import ConsentConfig, routes
from consent_banner.log import core as log_core

from ..conftest import ORIGIN, make_app
from ..test_blocked_reports import post_from, run, site  # noqa: F401  (site: the fixture, both backends)
from ..test_routes import SAME

CDN = "https://cdn.shop.example"


# --- log blocked --suggest ------------------------------------------------------------------------


async def test_a_6to4_address_is_logged_and_counted_as_its_ipv4_network(site: Path) -> None:  # noqa: F811
    """Finding: a 6to4 address (2002:AABB:CCDD::/48) carries the whole IPv4 address in its /48, so
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
    """Finding: the blocked table keeps its newest rows (BLOCKED_KEEP), so one client pushing reports
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
