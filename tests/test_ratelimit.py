"""Request limits per client address: decisions (`decision_rate_limit`) and CSP reports (issue 12)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from consent_banner import ConsentConfig
from consent_banner.errors import ConfigError
from consent_banner.ratelimit import ClientBudget, Rate

from .conftest import ORIGIN, make_app
from .test_routes import SAME, rows

Connect = Callable[[str], httpx.AsyncClient]


def limited_config(toml_path: Path, limit: str) -> ConsentConfig:
    toml_path.write_text(f"decision_rate_limit = {json.dumps(limit)}\n" + toml_path.read_text())
    return ConsentConfig.from_toml(toml_path)


@pytest.fixture
def limit() -> str:
    return "5/minute"  # a test parametrizes `limit` for another


@pytest.fixture
async def connect(limit: str, toml_path: Path) -> AsyncIterator[Connect]:
    """Clients of one app under `decision_rate_limit = limit`, each from the address it names."""
    config = limited_config(toml_path, limit)
    app = make_app(config)
    clients: list[httpx.AsyncClient] = []

    def connect(address: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=(address, 40000 + len(clients)))
        clients.append(httpx.AsyncClient(transport=transport, base_url=ORIGIN))
        return clients[-1]

    connect.config = config  # type: ignore[attr-defined]
    connect.app = app  # type: ignore[attr-defined]
    yield connect
    for c in clients:
        await c.aclose()
    await app.close()


async def accept(client: httpx.AsyncClient) -> httpx.Response:
    return await client.post("/_consent", json={"action": "accept_all"}, headers=SAME)


# --- decisions ---------------------------------------------------------------------------------------


async def test_decisions_over_the_limit_get_429_with_retry_after_and_nothing_logged(connect) -> None:
    """5/minute: a burst of 5, then 429 with Retry-After and a JSON reason; the log has 5 records."""
    client = connect("192.0.2.7")
    answers = [await accept(client) for _ in range(8)]
    assert [r.status_code for r in answers] == [200] * 5 + [429] * 3
    refused = answers[-1]
    assert 1 <= int(refused.headers["retry-after"]) <= 12  # one decision per 12 s
    assert "decision_rate_limit 5/minute" in refused.json()["error"]
    assert refused.json()["retry_after"] == int(refused.headers["retry-after"])
    assert "set-cookie" not in refused.headers
    assert len(rows(connect.config)) == 5


async def test_withdraw_and_form_posts_share_the_budget(connect) -> None:
    client = connect("192.0.2.8")
    assert [(await accept(client)).status_code for _ in range(4)] == [200] * 4
    assert (await client.post("/_consent/withdraw", json={}, headers=SAME)).status_code == 200
    assert (await client.post("/_consent/withdraw", json={}, headers=SAME)).status_code == 429
    assert [r["action"] for r in rows(connect.config)] == ["accept_all"] * 4 + ["withdraw"]


async def test_a_form_post_over_the_limit_gets_a_readable_page(connect) -> None:
    """JavaScript off: the visitor reads why, in their language, with a way back; nothing is logged."""
    client = connect("192.0.2.9")
    page = await client.get("/")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    form = {"action": "reject_all", "csrf": token, "return_to": "/whoami", "language": "sv"}
    answers = [await client.post("/_consent", data=form, headers=SAME) for _ in range(6)]
    assert [r.status_code for r in answers] == [303] * 5 + [429]
    refused = answers[-1]
    assert refused.headers["content-type"].startswith("text/html")
    assert int(refused.headers["retry-after"]) >= 1
    assert "För många cookieval" in refused.text and 'href="/whoami"' in refused.text
    assert len(rows(connect.config)) == 5


async def test_the_limit_counts_ipv4_addresses_alone_and_ipv6_by_64(connect) -> None:
    for address in ("198.51.100.1", "2001:db8:0:1::1"):
        assert [(await accept(connect(address))).status_code for _ in range(6)] == [200] * 5 + [429]
    assert (await accept(connect("198.51.100.2"))).status_code == 200  # the neighbour is not punished
    assert (await accept(connect("2001:db8:0:1:ffff::9"))).status_code == 429  # same /64
    assert (await accept(connect("2001:db8:0:2::1"))).status_code == 200  # the next /64
    assert (await accept(connect("::ffff:198.51.100.1"))).status_code == 429  # IPv4 spelled as IPv6


@pytest.mark.parametrize("limit", ["off"])
async def test_off_turns_the_limit_off(connect) -> None:
    client = connect("192.0.2.10")
    assert {(await accept(client)).status_code for _ in range(40)} == {200}
    assert len(rows(connect.config)) == 40


def test_a_default_of_120_a_minute_and_a_bad_value_names_the_key(toml_path: Path) -> None:
    assert str(ConsentConfig.from_toml(toml_path).decision_rate) == "120/minute"
    for bad in ('"120 per minute"', '"0/minute"', '"120/fortnight"', "120"):
        text = toml_path.read_text()
        toml_path.write_text(f"decision_rate_limit = {bad}\n" + text)
        with pytest.raises(ConfigError, match=r"decision_rate_limit: "):
            ConsentConfig.from_toml(toml_path)
        toml_path.write_text(text)


def test_the_budget_remembers_a_bounded_number_of_clients() -> None:
    """A million distinct addresses: the table stays at its bound, and a busy client stays limited."""
    budget = ClientBudget(Rate(5, 60), max_clients=1000)
    busy = ("203.0.113.5", 1)
    for _ in range(5):
        assert budget.take(busy, now=0.0) == 0
    for n in range(1_000_000):
        budget.take((f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}", 1), now=0.0)
        if n % 500 == 0:
            assert budget.take(busy, now=0.0) > 0  # seen recently: never the one forgotten
    assert len(budget) == 1000


# --- behind a proxy ----------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", ["off"])
async def test_every_decision_from_one_private_address_warns_once(connect, caplog) -> None:
    client = connect("10.1.2.3")
    with caplog.at_level(logging.WARNING, logger="consent_banner"):
        for _ in range(45):
            await accept(client)
    warnings = [r.getMessage() for r in caplog.records if "private address" in r.getMessage()]
    assert len(warnings) == 1 and "10.1.2.3" in warnings[0] and "--proxy-headers" in warnings[0]


@pytest.mark.parametrize("limit", ["off"])
async def test_decisions_from_several_addresses_do_not_warn(connect, caplog) -> None:
    clients = [connect("10.1.2.3"), connect("10.1.2.4")]
    with caplog.at_level(logging.WARNING, logger="consent_banner"):
        for n in range(45):
            await accept(clients[n % 2])
    assert not [r for r in caplog.records if "private address" in r.getMessage()]


# --- CSP reports -------------------------------------------------------------------------------------


def report(page: str, blocked: str) -> list[dict[str, object]]:
    body = {"documentURL": f"{ORIGIN}{page}", "blockedURL": blocked, "effectiveDirective": "img-src"}
    return [{"type": "csp-violation", "body": body}]


async def test_junk_reports_from_one_client_do_not_starve_another(connect) -> None:
    junk, genuine = connect("192.0.2.66"), connect("192.0.2.77")
    headers = {"content-type": "application/reports+json"}
    for n in range(10):
        batch = report(f"/junk{n}", "https://junk.example") * 20
        assert (await junk.post("/_consent/csp-report", json=batch, headers=headers)).status_code == 204
    real = report("/shop", "https://ads.example.com")
    assert (await genuine.post("/_consent/csp-report", json=real, headers=headers)).status_code == 204
    log = await connect.app.log()
    await log.flush()
    blocked = await log.blocked()
    assert [(b.page, b.origin) for b in blocked if b.page == "/shop"] == [("/shop", "https://ads.example.com")]
