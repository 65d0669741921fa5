"""The audit view against hostile input: password guessing slowed per client, dates out of range."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from consent_banner.audit import FailedLogins

from .test_audit import AUDIT, BASIC, ENV, USER, MakeDecision, fill, site

WRONG = {"authorization": "Basic " + base64.b64encode(f"{USER}:not the password".encode()).decode()}
ATTACKER, AUDITOR = ("203.0.113.7", 40000), ("2001:db8:1:2::10", 40001)


def client_from(app: Any, address: tuple[str, int]) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=address)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


@pytest.fixture
async def two_clients(log: Any) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    app = site(log, ENV)
    async with client_from(app, ATTACKER) as attacker, client_from(app, AUDITOR) as auditor:
        yield attacker, auditor


async def test_guessing_the_password_is_slowed_down_per_client(
    two_clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    """Issue 12 item 11: after ten wrong passwords a client waits (429 with Retry-After, longer after
    each further failure) and meanwhile not even the right password is checked; another client,
    and a browser asking without credentials, are not affected."""
    attacker, auditor = two_clients
    answers = [(await attacker.get(AUDIT + "/", headers=WRONG)).status_code for _ in range(10)]
    assert answers == [401] * 10
    for _ in range(8):  # the eleventh failure makes it wait 1 s, the next ones 2, 4, 8 s...
        refused = await attacker.get(AUDIT + "/", headers=WRONG)
        if refused.status_code == 429:
            break
        assert refused.status_code == 401
    assert refused.status_code == 429, "2,000 guesses a second stay possible"
    assert int(refused.headers["retry-after"]) >= 1
    assert "too many wrong credentials" in refused.json()["error"]
    right = await attacker.get(AUDIT + "/", headers=BASIC)
    assert right.status_code == 429  # a right guess looks like any other while the client waits
    assert (await auditor.get(AUDIT + "/")).status_code == 401
    assert (await auditor.get(AUDIT + "/", headers=BASIC)).status_code == 200


async def test_the_right_password_after_the_wait_forgets_the_failures(
    two_clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    """Issue 12 item 11: an auditor who mistyped waits once, then signs in and starts afresh."""
    _, auditor = two_clients
    for _ in range(11):
        assert (await auditor.get(AUDIT + "/", headers=WRONG)).status_code == 401
    waiting = await auditor.get(AUDIT + "/", headers=BASIC)
    if waiting.status_code == 429:
        await asyncio.sleep(int(waiting.headers["retry-after"]))
    assert (await auditor.get(AUDIT + "/", headers=BASIC)).status_code == 200
    answers = [(await auditor.get(AUDIT + "/", headers=WRONG)).status_code for _ in range(10)]
    assert answers == [401] * 10  # counted from zero again


def test_failed_logins_stay_bounded_in_memory() -> None:
    """Issue 12 item 11: a million addresses do not grow the memory of failures without bound."""
    failures = FailedLogins(max_clients=1000)
    for i in range(20_000):
        failures.failed((f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 1), now=0.0)
    assert len(failures) == 1000
    # IPv6 counts by /64: addresses in one /64 are one client
    for i in range(FailedLogins.FREE_FAILURES + 1):
        failures.failed((f"2001:db8::{i:x}", 1), now=0.0)
    assert failures.wait(("2001:db8::ffff", 1), now=0.0) == 1.0


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ({"until": "9999-12-31"}, "until: '9999-12-31' is outside the dates the log can hold"),
        ({"since": "0001-01-01T00:00:00+05:00"}, "since: '0001-01-01T00:00:00+05:00' is outside"),
        ({"since": "2026-02-30"}, "since: '2026-02-30' is not a date"),
        ({"until": "2026-01-01T25:00"}, "until: '2026-01-01T25:00' is not a date"),
        ({"action": "accept_all\x1b"}, "action: 'accept_all\\x1b' is not an action"),
    ],
)
async def test_dates_out_of_range_or_garbage_are_a_400_naming_the_parameter(
    two_clients: tuple[httpx.AsyncClient, httpx.AsyncClient], query: dict[str, str], reason: str
) -> None:
    """Issue 12 item 11: `?until=9999-12-31` answered 500; every filter of every page and download
    answers 400 with the parameter and the reason."""
    _, auditor = two_clients
    for path in ("/", "/records"):
        r = await auditor.get(AUDIT + path, params=query, headers=BASIC)
        assert r.status_code == 400, (path, r.status_code)
        assert reason.replace("'", "&#39;") in r.text
    for fmt in ("csv", "ndjson"):
        r = await auditor.get(f"{AUDIT}/export.{fmt}", params=query, headers=BASIC)
        assert r.status_code == 400 and r.json()["error"].startswith(reason)


async def test_extreme_periods_draw_a_bounded_chart(
    two_clients: tuple[httpx.AsyncClient, httpx.AsyncClient], log: Any, decision: MakeDecision
) -> None:
    """Issue 12 item 11: the first and last representable days are valid filters; a period of
    millennia draws its last two years, not three million days."""
    _, auditor = two_clients
    await fill(log, decision, 4)
    r = await auditor.get(AUDIT + "/", params={"until": "0001-01-01T00:00:00Z"}, headers=BASIC)
    assert r.status_code == 200 and re.search(r"<b>0</b>\s*decisions", r.text)
    r = await auditor.get(AUDIT + "/", params={"since": "0001-01-01", "until": "9999-12-30"}, headers=BASIC)
    assert r.status_code == 200 and re.search(r"<b>4</b>\s*decisions", r.text)
    assert ">9997-12-30</text>" in r.text and ">9999-12-30</text>" in r.text
    r = await auditor.get(AUDIT + "/records", params={"since": "0001-01-01"}, headers=BASIC)
    assert r.status_code == 200 and "4 records match" in r.text
