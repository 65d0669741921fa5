"""Red team of issue 12 over HTTP: what the review of the issue's fixes still found, one test each.

Each test drives the real middleware through its public interface (httpx over ASGI) as the
adversary of docs/threat-model.md named in its docstring would.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import textwrap
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from consent_banner import ConsentConfig
from consent_banner.cli import cli
from consent_banner.log import GENESIS, LoggedRecord, record_hash

from ..conftest import MODEL_TOML, make_app

HTTPS = "https://www.example.com"


def https_config(tmp_path: Path) -> ConsentConfig:
    path = tmp_path / "consent.toml"
    path.write_text(
        textwrap.dedent(MODEL_TOML.format(db=tmp_path / "log.db")).replace("secure = false", "secure = true")
    )
    return ConsentConfig.from_toml(path)


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = make_app(https_config(tmp_path))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=HTTPS) as c:
        c.app = app  # type: ignore[attr-defined]
        yield c
    await app.close()


def browser_jar(jar: dict[str, str], response: httpx.Response) -> dict[str, str]:
    """The cookies a browser holds for this host after `response` (Max-Age=0 deletes)."""
    out = dict(jar)
    for line in response.headers.get_list("set-cookie"):
        name, _, value = line.split(";")[0].partition("=")
        if "Max-Age=0" in line:
            out.pop(name, None)
        else:
            out[name] = value
    return out


def header(jar: dict[str, str]) -> str:
    return "; ".join(f"{k}={v}" for k, v in jar.items())


async def test_a_planted_old_name_form_token_does_not_authenticate_a_form_post(
    site: httpx.AsyncClient,
) -> None:
    """A sibling subdomain (adversary 3) gets its own form token (cookie value X, and the token for X
    from the banner), plants `consent_csrf=X; Domain=example.com` in a visitor's browser, and markup
    reflected into one of the site's pages (adversary 2) holds a form with the token for X behind a
    "Reject all" label. Over https the form token lives in `__Host-consent_csrf`, which no sibling can
    set; a planted cookie under the previous release's name must not stand in for it, nor be
    adopted under the new name."""
    own = await site.get("/")
    x = own.cookies["__Host-consent_csrf"]
    token = re.search(r'name="csrf" value="([^"]*)"', own.text).group(1)
    site.cookies.clear()

    jar = {"consent_csrf": x}  # planted, domain-wide: the browser sends it to www.example.com
    page = await site.get("/", headers={"cookie": header(jar)})
    jar = browser_jar(jar, page)
    assert jar.get("__Host-consent_csrf") != x  # the sibling's value is not adopted
    r = await site.post(
        "/_consent",
        data={"action": "accept_all", "csrf": token},
        headers={"origin": HTTPS, "cookie": header(jar)},
    )
    assert r.status_code == 403, r.text
    r = await site.post(
        "/_consent",
        data={"action": "accept_all", "csrf": token},
        headers={"origin": HTTPS, "cookie": "consent_csrf=" + x},
    )
    assert r.status_code == 403, r.text
    assert await (await site.app.log()).count() == 0  # type: ignore[attr-defined]


async def test_verify_file_says_when_nothing_signed_vouches_for_an_export(
    site: httpx.AsyncClient, tmp_path: Path
) -> None:
    """Whoever hands an auditor an export (adversary 4 with a copy of the data, not the keys) can turn
    a reject into an accept and recompute every hash after it. An export carries no signed head, so
    `log verify --file` can only find the chain self-consistent: with the keys at hand it must not
    say "chain intact" and stop there, as if the keys had vouched for it."""
    for action in ("accept_all", "reject_all", "reject_all", "custom"):
        r = await site.post("/_consent", json={"action": action}, headers={"origin": HTTPS})
        assert r.status_code == 200, r.text
        site.cookies.clear()
    out = tmp_path / "export.ndjson"
    cfg = str(tmp_path / "consent.toml")
    runner = CliRunner()
    done = await asyncio.to_thread(
        runner.invoke, cli, ["log", "export", "--config", cfg, "--format", "ndjson", "-o", str(out)]
    )
    assert done.exit_code == 0, done.output
    forged, prev = [], GENESIS
    lines = out.read_text().splitlines()
    typed = [line for line in lines if line.startswith('{"type":')]  # header, checkpoints, signed head
    for n, line in enumerate((line for line in lines if line.startswith('{"seq":')), start=1):
        d = json.loads(line)
        if n == 2:
            d["action"], d["granted"], d["denied"] = "accept_all", ["necessary", "analytics", "marketing"], []
        d["prev_hash"] = prev
        d["hash"] = prev = record_hash(prev, LoggedRecord.from_json(d).row()[1:-2])
        forged.append(json.dumps(d))
    # With the signed head the export carries (issue 18), the recomputed chain no longer matches it.
    out.write_text("\n".join([*typed, *forged]) + "\n")
    result = await asyncio.to_thread(
        runner.invoke, cli, ["log", "verify", "--config", cfg, "--file", str(out), "--json"]
    )
    report = json.loads(result.output)
    assert not report["ok"] and report["problem"] in ("rewritten", "signature"), report
    # Without it (the typed lines stripped), the chain is only self-consistent, and verify says so.
    out.write_text("\n".join(forged) + "\n")
    result = await asyncio.to_thread(
        runner.invoke, cli, ["log", "verify", "--config", cfg, "--file", str(out), "--json"]
    )
    report = json.loads(result.output)
    assert report["records"] == 4
    assert not report["ok"] or any("not signed" in note or "vouch" in note for note in report["notes"]), (
        report
    )


async def test_gpc_replays_count_against_the_decision_rate_limit(tmp_path: Path) -> None:
    """A client (adversary 5) replays one decided cookie with `Sec-GPC: 1` on every request. The log
    records GPC once, but each replay still went through the log's write path (its lock, its
    queries), unmetered: a GPC opt-out is a decision and spends the same per-client budget. Past
    it, the signal still applies to the request; only the recording waits."""
    path = tmp_path / "consent.toml"
    text = textwrap.dedent(MODEL_TOML.format(db=tmp_path / "log.db"))
    path.write_text('decision_rate_limit = "5/minute"\n' + text)
    config = ConsentConfig.from_toml(path)
    app = make_app(config)
    origin = "http://testserver"
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=origin) as client:
            r = await client.post("/_consent", json={"action": "accept_all"}, headers={"origin": origin})
            assert r.status_code == 200, r.text
            cookie = f"consent={client.cookies['consent']}"
            reissued = 0
            for _ in range(50):
                client.cookies.clear()
                answer = await client.get("/whoami", headers={"cookie": cookie, "sec-gpc": "1"})
                assert answer.status_code == 200 and not answer.json()["marketing"]
                reissued += any(v.startswith("consent=") for v in answer.headers.get_list("set-cookie"))
    finally:
        await app.close()
    assert reissued <= 5  # the budget's burst, less the decision itself


async def _audit_status(app: Any, host: str, authorization: bytes) -> int:
    """One request to the audit view, straight through the middleware's ASGI interface."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/_consent/audit/",
        "raw_path": b"/_consent/audit/",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), (b"authorization", authorization)],
        "client": (host, 1234),
        "server": ("testserver", 80),
    }
    status: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(scope, receive, send)
    return status[0]


async def test_guessing_from_many_ipv6_networks_is_still_slowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Adversary 5 guessing the audit credentials from one IPv6 /48, a different /64 each time."""
    monkeypatch.setenv("CONSENT_AUDIT_USER", "auditor")
    monkeypatch.setenv("CONSENT_AUDIT_PASSWORD", "correct-horse-battery")
    app = make_app(https_config(tmp_path))
    guess = b"Basic " + base64.b64encode(b"auditor:guess")
    statuses: Counter[int] = Counter()
    try:
        for _ in range(12):  # FREE_FAILURES is 10: a remembered client would be waiting by now
            for i in range(10_001):
                statuses[await _audit_status(app, f"2001:db8:0:{i:x}::1", guess)] += 1
    finally:
        await app.close()
    assert statuses[429] > 0, statuses


async def _whoami(app: Any, cookie_fields: list[bytes]) -> dict[str, Any]:
    """GET /whoami over plain http with the Cookie header split in several fields, as HTTP/2
    sends it (RFC 9113 §8.2.3: one field per cookie) when the server passes them on unjoined."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "2",
        "method": "GET",
        "scheme": "http",
        "path": "/whoami",
        "raw_path": b"/whoami",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"www.example.com"), *((b"cookie", c) for c in cookie_fields)],
        "client": ("192.0.2.7", 1234),
        "server": ("www.example.com", 80),
    }
    body: list[bytes] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            body.append(message.get("body", b""))

    await app(scope, receive, send)
    return json.loads(b"".join(body))


async def test_twin_consent_cookies_in_separate_cookie_fields_decide_nothing(tmp_path: Path) -> None:
    """A sibling subdomain (adversary 3) plants `consent=<its own accept_all>` on the parent domain
    where the prefix is impossible (plain http). Two consent cookies decide nothing, also when they
    arrive in two Cookie fields: read one field only, and the planted one may be all that counts."""
    path = tmp_path / "consent.toml"
    path.write_text(textwrap.dedent(MODEL_TOML.format(db=tmp_path / "log.db")))
    app = make_app(ConsentConfig.from_toml(path))
    origin = "http://www.example.com"
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=origin) as c:
            values = {}
            for action in ("reject_all", "accept_all"):
                r = await c.post("/_consent", json={"action": action}, headers={"origin": origin})
                values[action] = r.cookies["consent"]
                c.cookies.clear()
        own = b"consent=" + values["reject_all"].encode()
        planted = b"consent=" + values["accept_all"].encode()
        for fields in ([own, planted], [planted, own], [own + b"; x=1", planted]):
            seen = await _whoami(app, fields)
            assert seen["decided"] is False and seen["marketing"] is False, (fields, seen)
    finally:
        await app.close()
