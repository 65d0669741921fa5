"""Health and metrics for operators: `{prefix}/health` (no credentials, 503 while the gate fails closed)
and `{prefix}/metrics` (Prometheus text, behind the audit credentials), through HTTP."""

from __future__ import annotations

import asyncio
import base64
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from consent_banner import ConsentConfig, ConsentMiddleware
from consent_banner import health as health_module
from consent_banner.log.core import LogCore
from consent_banner.log.postgres import split_url

from .conftest import OLD_KEY, ORIGIN, make_app
from .log.conftest import log_url as log_url  # noqa: F401  (the fixture, on both backends)

SAME = {"origin": ORIGIN}
TOKEN = "metrics-token-0123456789"
BEARER = {"authorization": f"Bearer {TOKEN}"}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, as prometheus_client's own parser reads it."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSENT_AUDIT_TOKEN", TOKEN)


def with_settings(toml_path: Path, *lines: str) -> ConsentConfig:
    toml_path.write_text("\n".join(lines) + "\n" + toml_path.read_text())
    return ConsentConfig.from_toml(toml_path)


@pytest.fixture
async def app(config: ConsentConfig) -> AsyncIterator[ConsentMiddleware]:
    mw = make_app(config)
    yield mw
    await mw.close()


def connect(app: ConsentMiddleware, address: str = "192.0.2.10") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url=ORIGIN)


async def scrape(c: httpx.AsyncClient) -> Samples:
    r = await c.get("/_consent/metrics", headers=BEARER)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=")
    assert r.headers["cache-control"] == "no-store"
    return parse(r.text)


# --- /metrics ------------------------------------------------------------------------------------------


async def test_decisions_and_refusals_move_the_counters(app: ConsentMiddleware, token: None) -> None:
    async with connect(app) as c:
        before = await scrape(c)
        assert value(before, "consent_decisions_total", action="accept_all") == 0  # there from the start
        for body in ({"action": "accept_all"}, {"action": "reject_all"}, {"action": "custom"}):
            assert (await c.post("/_consent", json=body, headers=SAME)).status_code == 200
        assert (await c.post("/_consent/withdraw", json={}, headers=SAME)).status_code == 200
        # Refused, each for its own reason:
        assert (await c.post("/_consent", json={"action": "accept_all"})).status_code == 403  # no Origin
        page = await c.get("/")
        assert page.status_code == 200
        form = {"action": "accept_all", "csrf": "not-the-token"}
        assert (await c.post("/_consent", data=form, headers=SAME)).status_code == 403
        big = {**SAME, "content-type": "application/json", "content-length": "9000"}
        assert (await c.post("/_consent", content=b"{}", headers=big)).status_code == 413
        plain = {**SAME, "content-type": "text/plain"}
        assert (await c.post("/_consent", content=b"accept", headers=plain)).status_code == 415
        assert (await c.post("/_consent", json={"action": "all"}, headers=SAME)).status_code == 400
        after = await scrape(c)
    for action in ("accept_all", "reject_all", "custom", "withdraw"):
        assert value(after, "consent_decisions_total", action=action) == 1, action
    for reason in ("origin", "token", "too_large", "media_type", "invalid"):
        assert value(after, "consent_refusals_total", endpoint="decide", reason=reason) == 1, reason
    assert value(after, "consent_log_commits_total", outcome="ok") >= 1
    assert value(after, "consent_log_committed_decisions_total") == 4
    assert value(after, "consent_log_commit_seconds_count") >= 1
    assert value(after, "consent_log_commit_seconds_sum") > 0
    assert value(after, "consent_log_oldest_pending_seconds") == 0
    assert value(after, "consent_log_open") == 1


async def test_rate_limited_decisions_and_reports_are_counted(toml_path: Path, token: None) -> None:
    app = make_app(with_settings(toml_path, 'decision_rate_limit = "2/minute"'))
    try:
        async with connect(app) as c:
            codes = [
                (await c.post("/_consent", json={"action": "accept_all"}, headers=SAME)).status_code
                for _ in range(3)
            ]
            assert codes == [200, 200, 429]
            report = {
                "documentURL": f"{ORIGIN}/p",
                "blockedURL": "https://ads.example",
                "effectiveDirective": "img-src",
            }
            batch = [{"type": "csp-violation", "body": report}] * 15  # one client's budget is 10
            rtype = {"content-type": "application/reports+json"}
            assert (await c.post("/_consent/csp-report", json=batch, headers=rtype)).status_code == 204
            m = await scrape(c)
    finally:
        await app.close()
    assert value(m, "consent_rate_limited_total", budget="decision") == 1
    assert value(m, "consent_refusals_total", endpoint="decide", reason="rate_limited") == 1
    assert value(m, "consent_decisions_total", action="accept_all") == 2
    assert value(m, "consent_csp_reports_total", outcome="received") == 15
    assert value(m, "consent_csp_reports_total", outcome="accepted") == 10
    assert value(m, "consent_csp_reports_total", outcome="over_budget") == 5
    assert value(m, "consent_rate_limited_total", budget="csp_report") == 1


async def test_log_unavailable_answers_are_counted(tmp_path: Path, toml_path: Path, token: None) -> None:
    config = with_settings(toml_path)
    config = config.model_copy(update={"log": f"sqlite:///{tmp_path / 'missing-dir' / 'log.db'}"})
    app = make_app(config)
    try:
        async with connect(app) as c:
            assert (await c.post("/_consent", json={"action": "accept_all"}, headers=SAME)).status_code == 503
            m = await scrape(c)  # the metrics need no log
    finally:
        await app.close()
    assert value(m, "consent_log_unavailable_responses_total", endpoint="decide") == 1
    assert value(m, "consent_decisions_total", action="accept_all") == 0
    assert value(m, "consent_log_open") == 0


async def test_hostile_requests_add_no_series(app: ConsentMiddleware, token: None) -> None:
    """No label comes from request data: a flood of odd paths, methods and bodies grows nothing."""
    async with connect(app) as c:
        await c.post("/_consent/nothing", headers=SAME)
        first = set(await scrape(c))
        for n in range(50):
            await c.post(f"/_consent/x{n}\u00e9%22%7D", headers=SAME)
            await c.request("PATCH", "/_consent/state", headers={"x-hostile": f'"}} {n}'})
            await c.post("/_consent", json={"action": f"evil_{n}"}, headers=SAME)
            await c.post("/_consent", json={"action": "custom", "categories": [f"c{n}"]}, headers=SAME)
        last = await scrape(c)
    grown = {name for name, _ in set(last) - first}
    assert grown <= {"consent_refusals_total", "consent_refusals_created"}, grown
    assert len(set(last) - first) <= 4  # (state, method) and (decide, invalid): total and created
    assert value(last, "consent_refusals_total", endpoint="unknown", reason="not_found") == 51
    assert value(last, "consent_refusals_total", endpoint="state", reason="method") == 50
    assert value(last, "consent_refusals_total", endpoint="decide", reason="invalid") == 100


async def test_two_apps_in_one_process_count_apart(config: ConsentConfig, token: None) -> None:
    one, two = make_app(config), make_app(config)
    try:
        async with connect(one) as a, connect(two) as b:
            await a.post("/_consent", json={"action": "accept_all"}, headers=SAME)
            assert value(await scrape(a), "consent_decisions_total", action="accept_all") == 1
            assert value(await scrape(b), "consent_decisions_total", action="accept_all") == 0
    finally:
        await one.close()
        await two.close()


async def test_metrics_need_the_audit_credentials(app: ConsentMiddleware, monkeypatch: Any) -> None:
    monkeypatch.setenv("CONSENT_AUDIT_USER", "auditor")
    monkeypatch.setenv("CONSENT_AUDIT_PASSWORD", "correct-horse-battery")
    basic = "Basic " + base64.b64encode(b"auditor:correct-horse-battery").decode()
    async with connect(app) as c:
        r = await c.get("/_consent/metrics")
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic realm=")
        assert "consent_" not in r.text
        assert (
            await c.get("/_consent/metrics", headers={"authorization": "Basic d3Jvbmc6d3Jvbmc="})
        ).status_code == 401
        ok = await c.get("/_consent/metrics", headers={"authorization": basic})
        assert ok.status_code == 200 and "consent_decisions_total" in ok.text
        head = await c.head("/_consent/metrics", headers={"authorization": basic})
        assert (
            head.status_code == 200
            and head.content == b""
            and head.headers["content-type"].startswith("text/")
        )
        post = await c.post("/_consent/metrics", headers={"authorization": basic})
        assert post.status_code == 405 and post.headers["allow"] == "GET"


async def test_wrong_credentials_count_with_the_audit_views(app: ConsentMiddleware, token: None) -> None:
    """Two doors, one lock: guesses at /metrics slow down guesses at the audit view, and back."""
    async with connect(app) as c:
        wrong = {"authorization": "Bearer wrong-wrong-wrong"}
        for _ in range(6):
            assert (await c.get("/_consent/metrics", headers=wrong)).status_code == 401
        for _ in range(5):
            assert (await c.get("/_consent/audit/", headers=wrong)).status_code == 401
        assert (await c.get("/_consent/metrics", headers=wrong)).status_code == 429
        assert (await c.get("/_consent/metrics", headers=BEARER)).status_code == 429


async def test_without_audit_credentials_there_are_no_metrics(
    app: ConsentMiddleware, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("CONSENT_AUDIT_USER", "CONSENT_AUDIT_PASSWORD", "CONSENT_AUDIT_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    async with connect(app) as c:
        r = await c.get("/_consent/metrics", headers=BEARER)
    assert r.status_code == 404 and r.json() == {"error": "the metrics are not enabled"}


async def test_openmetrics_when_the_scraper_asks_for_it(app: ConsentMiddleware, token: None) -> None:
    accept = {**BEARER, "accept": "application/openmetrics-text; version=1.0.0"}
    async with connect(app) as c:
        r = await c.get("/_consent/metrics", headers=accept)
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    assert r.text.endswith("# EOF\n")


# --- /health -------------------------------------------------------------------------------------------


async def test_health_is_ok_without_credentials(app: ConsentMiddleware) -> None:
    async with connect(app) as c:
        r = await c.get("/_consent/health")
        assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
        body = r.json()
        assert body["status"] == "ok" and body["reason"] is None and body["last_commit"] is None
        assert body["oldest_pending_seconds"] == 0
        await c.post("/_consent", json={"action": "accept_all"}, headers=SAME)
        await asyncio.sleep(health_module.TTL)
        after = (await c.get("/_consent/health")).json()
        head = await c.head("/_consent/health")
    assert after["last_commit"]["ok"] is True and after["last_commit"]["took_seconds"] > 0
    assert head.status_code == 200 and head.content == b"" and int(head.headers["content-length"]) > 0
    assert app.config.log.split("///")[1] not in r.text  # no path, no record data


async def test_health_fails_closed_when_the_log_cannot_be_opened(tmp_path: Path, toml_path: Path) -> None:
    config = ConsentConfig.from_toml(toml_path)
    app = make_app(config.model_copy(update={"log": f"sqlite:///{tmp_path / 'missing-dir' / 'log.db'}"}))
    try:
        async with connect(app) as c:
            r = await c.get("/_consent/health")
            head = await c.head("/_consent/health")
    finally:
        await app.close()
    assert (
        r.status_code == 503 and r.json()["status"] == "failing" and r.json()["reason"] == "log_unavailable"
    )
    assert "missing-dir" not in r.text and r.headers["retry-after"]
    assert head.status_code == 503 and head.content == b""


@asynccontextmanager
async def write_lock(url: str) -> AsyncIterator[None]:
    """Another writer holding the log's write lock (another process, another server)."""
    if url.startswith("sqlite:///"):
        other = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            other.execute("ROLLBACK")
            other.close()
        return
    import asyncpg

    dsn, schema = split_url(url)
    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        async with conn.transaction():
            await conn.execute("SELECT * FROM head WHERE id = 1 FOR UPDATE")
            yield
    finally:
        await conn.close()


async def test_health_fails_while_another_writer_holds_the_lock(
    config: ConsentConfig, log_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe takes the write lock as a decision's commit would, within the probe's time: a log
    locked by another writer longer than that is reported, and the next probe after it clears passes."""
    monkeypatch.setattr(health_module, "PROBE_TIMEOUT", 1.0)
    app = make_app(config.model_copy(update={"log": log_url}))
    try:
        await app.log()  # opened (and created) before the probe's time is counted
        async with connect(app) as c:
            assert (await c.get("/_consent/health")).status_code == 200
            async with write_lock(log_url):
                await asyncio.sleep(health_module.TTL)
                r = await c.get("/_consent/health")
            # The database gives up first (log_unwritable), unless a loaded machine is slower still.
            assert r.status_code == 503 and r.json()["reason"] in ("log_unwritable", "probe_timeout")
            assert r.json()["status"] == "failing"
            for _ in range(5):  # the next probe after the lock went passes (a loaded machine: a few)
                await asyncio.sleep(health_module.TTL)
                if (after := await c.get("/_consent/health")).status_code == 200:
                    break
            assert after.status_code == 200 and after.json()["reason"] is None
    finally:
        await app.close()


async def test_health_fails_when_the_log_file_is_read_only(
    app: ConsentMiddleware, config: ConsentConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A log file made read-only still opens and still takes the lock; its next commit would fail.
    (The tests run as root, whom no file mode stops: the check is made to see one.)"""
    import consent_banner.log.sqlite as sqlite_driver

    path = Path(config.log.removeprefix("sqlite:///"))
    real_access = sqlite_driver.os.access
    async with connect(app) as c:
        assert (await c.get("/_consent/health")).status_code == 200
        monkeypatch.setattr(
            sqlite_driver.os, "access", lambda p, mode: Path(p) != path and real_access(p, mode)
        )
        await asyncio.sleep(health_module.TTL)
        r = await c.get("/_consent/health")
    assert r.status_code == 503 and r.json()["reason"] == "log_unwritable"
    assert str(path) not in r.text


async def test_health_reports_a_decision_waiting_too_long_for_its_commit(
    app: ConsentMiddleware, config: ConsentConfig, monkeypatch: pytest.MonkeyPatch, token: None
) -> None:
    """Commit lag: how long the oldest decision not yet durable has waited, in /health and /metrics;
    past STALL_AFTER the server is failing (its visitors wait for an answer that may be a 503)."""
    monkeypatch.setattr(health_module, "STALL_AFTER", 0.3)
    async with connect(app) as c:
        assert (await c.get("/_consent/health")).status_code == 200  # the log is open
        async with write_lock(config.log):
            waiting = asyncio.ensure_future(c.post("/_consent", json={"action": "accept_all"}, headers=SAME))
            await asyncio.sleep(health_module.TTL)
            r = await c.get("/_consent/health")
            m = await scrape(c)
        assert (await waiting).status_code == 200  # the lock went before the write's deadline
        after = await scrape(c)
    assert r.status_code == 503 and r.json()["reason"] == "commit_stalled"
    assert r.json()["oldest_pending_seconds"] >= health_module.TTL / 2
    assert value(m, "consent_log_oldest_pending_seconds") >= health_module.TTL / 2
    assert value(after, "consent_log_oldest_pending_seconds") == 0
    assert value(after, "consent_log_last_commit_seconds") >= health_module.TTL / 2


async def test_health_fails_when_the_head_was_signed_by_a_key_not_listed(
    config: ConsentConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe reads the head as a write would: a server whose key cannot continue the chain is
    taken out of rotation, exactly when its decisions would get 503."""
    first = make_app(config, secret_keys=[OLD_KEY])
    async with connect(first) as c:
        assert (await c.post("/_consent", json={"action": "accept_all"}, headers=SAME)).status_code == 200
    await first.close()
    app = make_app(config)  # CONSENT_SECRET_KEYS: another key only
    try:
        async with connect(app) as c:
            r = await c.get("/_consent/health")  # before any decision: the probe alone finds it
            assert (await c.post("/_consent", json={"action": "accept_all"}, headers=SAME)).status_code == 503
    finally:
        await app.close()
    assert r.status_code == 503 and r.json()["reason"] == "log_unwritable"


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Each probe of the log, as it starts (the log's own `probe`, counted)."""
    started: list[float] = []
    real = LogCore.probe

    async def counted(self: LogCore, timeout: float) -> None:
        started.append(timeout)
        await asyncio.sleep(0.05)  # long enough for concurrent requests to arrive while it runs
        await real(self, timeout)

    monkeypatch.setattr(LogCore, "probe", counted)
    return started


async def test_a_flood_of_health_checks_probes_once(
    app: ConsentMiddleware, probes: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A million requests to /health must not each touch the database: one probe in flight is
    shared by every request, and its verdict is remembered for TTL (long here: a loaded machine)."""
    monkeypatch.setattr(health_module, "TTL", 60.0)
    async with connect(app) as c:
        answers = await asyncio.gather(*(c.get("/_consent/health") for _ in range(200)))
        answers += [await c.get("/_consent/health") for _ in range(200)]
    assert {r.status_code for r in answers} == {200}
    assert len(probes) == 1


async def test_a_commit_that_just_succeeded_spares_the_probe(
    app: ConsentMiddleware, probes: list[float]
) -> None:
    """A busy server does not probe at all: a commit that succeeded within TTL is the proof."""
    async with connect(app) as c:
        assert (await c.post("/_consent", json={"action": "accept_all"}, headers=SAME)).status_code == 200
        r = await c.get("/_consent/health")
    assert r.status_code == 200 and r.json()["probe_seconds"] is None
    assert probes == []
