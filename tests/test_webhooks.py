"""Webhooks: consent events POSTed to a local receiver, signed per Standard Webhooks, driven by the
log's durable cursor (at least once, never lost, ids stable across redelivery). R39.

The receiver is a raw asyncio HTTP/1.1 server on a free loopback port that checks every signature
with the specification's own package (`standardwebhooks`), and can be stopped (its connections
closed) and started again on the same port.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from standardwebhooks import Webhook as Verifier

from consent_banner import ConsentConfig, ConsentMiddleware
from consent_banner.errors import ConfigError
from consent_banner.events import delivery
from consent_banner.events.signature import new_secret
from consent_banner.log.chain import record_hash

from .conftest import ORIGIN, make_app, rows
from .log.conftest import PG_DSN, drop_pg_schema, needs_postgres, pg_schema_url
from .log.rawdb import RawDB
from .support.servers import free_port

SAME = {"origin": ORIGIN}
SECRET = new_secret()


class Receiver:
    """A receiver on 127.0.0.1:`port`: verifies, records, answers 200 (500 once to ids in `fail_once`)."""

    def __init__(self, port: int, secret: str = SECRET) -> None:
        self.port = port
        self.verifier = Verifier(secret)
        self.got: list[tuple[str, dict[str, Any]]] = []  # (webhook-id, payload), every delivery
        self.bad: list[str] = []  # deliveries whose signature did not verify
        self.fail_once: set[str] = set()
        self.failed: list[str] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for w in list(self._writers):
            w.close()
        await self._server.wait_closed()
        self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                headers: dict[str, str] = {}
                while (h := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = h.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                status = self._receive(headers, body)
                reason = b"OK" if status == 200 else b"Server Error"
                writer.write(b"HTTP/1.1 %d %s\r\ncontent-length: 0\r\n\r\n" % (status, reason))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()

    def _receive(self, headers: dict[str, str], body: bytes) -> int:
        msg_id = headers.get("webhook-id", "")
        try:
            payload = self.verifier.verify(body, headers)
        except Exception:
            self.bad.append(msg_id)
            return 400
        if msg_id in self.fail_once:
            self.fail_once.discard(msg_id)
            self.failed.append(msg_id)
            return 500
        self.got.append((msg_id, payload))
        return 200

    def seqs(self) -> list[int]:
        return [p["data"]["seq"] for _, p in self.got]


@pytest.fixture(autouse=True)
def _fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seconds become tens of milliseconds: polls, retries and their cap."""
    monkeypatch.setattr(delivery, "POLL", 0.05)
    monkeypatch.setattr(delivery, "RETRY_BASE", 0.05)
    monkeypatch.setattr(delivery, "RETRY_CAP", 0.2)
    monkeypatch.setenv("CONSENT_WEBHOOK_SECRET", SECRET)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver(free_port())
    await r.start()
    yield r
    if r._server is not None:
        await r.stop()


def hooked(
    toml_path: Path, url: str, extra: str = 'start = "beginning"\n', log: str | None = None
) -> ConsentConfig:
    text = toml_path.read_text()
    if log is not None:
        text = text.replace(f'log = "sqlite:///{toml_path.parent / "log.db"}"', f'log = "{log}"')
    # Many decisions from one test client: no per-client budget.
    text = 'decision_rate_limit = "off"\n' + text.replace('decision_rate_limit = "off"\n', "")
    toml_path.write_text(text + f'\n[[webhooks]]\nurl = "{url}"\n{extra}')
    return ConsentConfig.from_toml(toml_path)


async def until(check: Callable[[], Any], seconds: float = 20.0) -> None:
    """Wait for `check()` (or the awaitable it returns) to be true."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def decide_n(app: ConsentMiddleware, n: int, action: str = "accept_all") -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN) as c:
        for _ in range(n):
            c.cookies.clear()
            r = await c.post("/_consent", json={"action": action}, headers=SAME)
            assert r.status_code == 200, r.text


async def test_events_are_signed_and_shaped_as_the_export(toml_path: Path, receiver: Receiver) -> None:
    """R39: Each record goes out once, in order, as {type, timestamp, log_id, data: its export line}, signed
    so that `standardwebhooks` verifies it; webhook-id is msg_<log id>_<seq>; a withdrawal is
    consent.withdraw, the rest consent.decision."""
    config = hooked(toml_path, receiver.url)
    app = make_app(config)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN) as c:
        assert (await c.post("/_consent", json={"action": "accept_all"}, headers=SAME)).status_code == 200
        assert (await c.post("/_consent/withdraw", json={}, headers=SAME)).status_code == 200
        await until(lambda: len(receiver.got) == 2)
    log = await app.log()
    await app.close()
    assert receiver.bad == []
    (id1, p1), (id2, p2) = receiver.got
    assert (id1, id2) == (f"msg_{log.log_id}_1", f"msg_{log.log_id}_2")
    assert [p1["type"], p2["type"]] == ["consent.decision", "consent.withdraw"]
    assert p1["log_id"] == log.log_id and p1["timestamp"] == p1["data"]["at"]
    from consent_banner.log.export import ndjson_line

    assert [p1["data"], p2["data"]] == [json.loads(ndjson_line(tuple(r))) for r in rows(config)]


async def test_the_receiver_down_then_back_nothing_is_lost(toml_path: Path, receiver: Receiver) -> None:
    """R39: The issue's test: the receiver killed, 100 decisions, the app restarted and the receiver back:
    every event is delivered with a valid signature, none lost; a redelivery keeps its webhook-id;
    while it was down, deciding was not slowed and the failure was recorded for the status."""
    config = hooked(toml_path, receiver.url)
    await receiver.stop()
    app = make_app(config)
    started = time.monotonic()
    await decide_n(app, 100)
    took = time.monotonic() - started
    log = await app.log()
    await until(lambda: failing(log), 10)
    (state,) = await log.webhook_states()
    assert state.seq == 0 and state.last_error and "ConnectError" in state.last_error
    await app.close()
    # The app restarts (a new process: a new lease owner) and the receiver comes back; one event is
    # refused once, to be redelivered under the same id.
    receiver.fail_once = {f"msg_{state_log_id(config)}_50"}
    await receiver.start()
    app2 = make_app(config)
    await app2.log()  # as a lifespan startup would: the loops start with the log
    await until(lambda: len(receiver.got) >= 100)
    await app2.close()
    assert receiver.bad == []
    assert sorted(set(receiver.seqs())) == list(range(1, 101))
    assert receiver.failed == [f"msg_{state_log_id(config)}_50"]
    assert f"msg_{state_log_id(config)}_50" in [i for i, _ in receiver.got]
    assert all(i == f"msg_{state_log_id(config)}_{p['data']['seq']}" for i, p in receiver.got)
    assert took < 10  # 100 decisions while failing: the decisions never wait on the webhook


def state_log_id(config: ConsentConfig) -> str:
    import sqlite3

    db = sqlite3.connect(config.log.removeprefix("sqlite:///"))
    try:
        return str(db.execute("SELECT value FROM meta WHERE key = 'log_id'").fetchone()[0])
    finally:
        db.close()


async def failing(log: Any) -> bool:
    return any(s.attempts for s in await log.webhook_states())


async def test_lifespan_startup_resumes_delivery_without_a_request(
    toml_path: Path, receiver: Receiver
) -> None:
    """R39: Events owed from before a restart go out once the server has started, before any request."""
    config = hooked(toml_path, receiver.url)
    await receiver.stop()
    app = make_app(config)
    await decide_n(app, 3)
    await app.close()
    await receiver.start()
    app2 = make_app(config)
    sent: list[dict[str, Any]] = []
    messages = iter([{"type": "lifespan.startup"}])
    stop = asyncio.Event()

    async def receive() -> dict[str, Any]:
        try:
            return next(messages)
        except StopIteration:
            await stop.wait()
            return {"type": "lifespan.shutdown"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    task = asyncio.create_task(app2({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send))
    await until(lambda: len(receiver.got) == 3)
    stop.set()
    await task
    assert {"type": "lifespan.shutdown.complete"} in sent


async def test_a_record_inserted_behind_the_logs_back_is_never_sent(
    toml_path: Path, receiver: Receiver
) -> None:
    """R39: Whoever can write the database but holds no key inserts a record (hash-linked correctly) and moves
    the head over it: the chain no longer ends at a signed head, so nothing after the cursor is signed
    or sent; the failure is recorded with the reason. The genuine records before it went out."""
    config = hooked(toml_path, receiver.url)
    app = make_app(config)
    await decide_n(app, 2)
    await until(lambda: len(receiver.got) == 2)
    log = await app.log()
    last = await log.get_record(2)
    row = last.row()
    forged = (3, row[1], "forged-by-a-db-writer", *row[3:14])
    forged_hash = record_hash(last.hash, forged[1:14])
    async with RawDB(config.log) as db:
        await db.execute(
            "INSERT INTO records VALUES (" + ", ".join("?" * 16) + ")", *forged, last.hash, forged_hash
        )
        await db.execute("UPDATE head SET seq = 3, hash = ? WHERE id = 1", forged_hash)
    app.events.webhooks.wake()  # type: ignore[union-attr]
    await until(lambda: failing(log), 10)
    (state,) = await log.webhook_states()
    await app.close()
    assert receiver.seqs() == [1, 2] and receiver.bad == []
    assert state.seq == 2 and state.last_error is not None and "does not verify" in state.last_error


async def test_two_servers_on_one_sqlite_file_deliver_once(toml_path: Path, receiver: Receiver) -> None:
    """R39: Two app instances (two lease owners) on one log, deciding at once: every event arrives, and in
    this common case none twice (one holds the lease, the cursor moves by compare-and-set)."""
    await _two_servers(hooked(toml_path, receiver.url), receiver)


@pytest.mark.postgres
@needs_postgres
async def test_two_servers_on_postgresql_deliver_once(toml_path: Path, receiver: Receiver) -> None:
    """R39: the same with two servers on one PostgreSQL log (the cursor's row locked FOR UPDATE)."""
    assert PG_DSN is not None
    schema = f"cbtest_{os.urandom(6).hex()}"
    try:
        await _two_servers(hooked(toml_path, receiver.url, log=pg_schema_url(PG_DSN, schema)), receiver)
    finally:
        await drop_pg_schema(PG_DSN, schema)


async def _two_servers(config: ConsentConfig, receiver: Receiver) -> None:
    a, b = make_app(config), make_app(config)
    await a.log()
    await b.log()
    assert a.events.webhooks is not None and b.events.webhooks is not None
    assert a.events.webhooks.owner != b.events.webhooks.owner
    await asyncio.gather(decide_n(a, 40), decide_n(b, 40))
    await until(lambda: len(set(receiver.seqs())) == 80)
    await asyncio.sleep(0.3)  # a second delivery would have arrived by now
    await a.close()
    await b.close()
    counts = Counter(receiver.seqs())
    assert sorted(counts) == list(range(1, 81)) and max(counts.values()) == 1 and receiver.bad == []


async def test_a_purge_from_the_cli_goes_out_when_a_server_runs(toml_path: Path, receiver: Receiver) -> None:
    """R39: `log purge` writes a purge record; no server runs then. The next server delivers it as
    consent.purge (to a webhook that asked for purge events only)."""
    config = hooked(toml_path, receiver.url, extra='events = ["purge"]\nstart = "beginning"\n')
    app = make_app(config)
    await decide_n(app, 2)
    await app.close()
    from consent_banner.log.commands import log as log_group

    result = await asyncio.to_thread(
        CliRunner().invoke, log_group, ["purge", "--older-than", "0d", "--yes", "--config", str(toml_path)]
    )
    assert result.exit_code == 0, result.output
    assert receiver.got == []
    app2 = make_app(config)
    await app2.log()
    await until(lambda: len(receiver.got) == 1)
    await app2.close()
    ((_, payload),) = receiver.got
    assert payload["type"] == "consent.purge" and payload["data"]["action"] == "purge"


def test_a_missing_or_malformed_secret_stops_the_start(
    toml_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The site does not start with a webhook it cannot sign for: the error names the key and the variable."""
    config = hooked(toml_path, "https://crm.example/hook", extra='secret_env = "CRM_HOOK_SECRET"\n')
    with pytest.raises(ConfigError, match=r"webhooks\[0\]\.secret_env \(CRM_HOOK_SECRET\).*not set"):
        make_app(config)
    monkeypatch.setenv("CRM_HOOK_SECRET", "not-whsec")
    with pytest.raises(ConfigError, match=r"webhooks\[0\]\.secret_env.*whsec_<base64>"):
        make_app(config)
    monkeypatch.setenv("CRM_HOOK_SECRET", "whsec_c2hvcnQ=")
    with pytest.raises(ConfigError, match=r"is 5 bytes"):
        make_app(config)


async def test_a_new_webhook_starts_at_the_head(toml_path: Path, receiver: Receiver) -> None:
    """A webhook added to a site with history gets the decisions from when it first ran, not the past."""
    plain = ConsentConfig.from_toml(toml_path)
    old = make_app(plain)
    await decide_n(old, 3)
    await old.close()
    app = make_app(hooked(toml_path, receiver.url, extra=""))
    await app.log()
    log = await app.log()
    await until(log.webhook_states, 10)
    await decide_n(app, 2)
    await until(lambda: len(receiver.got) == 2)
    await app.close()
    assert receiver.seqs() == [4, 5]


async def test_the_status_shows_delivered_pending_and_failing(
    toml_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """R39: the audit view and `consent-banner log webhooks` (read-only) show, per webhook, the record
    delivered through, what is pending, and a failure with its error and next attempt; text from the
    receiver and the database is escaped (HTML autoescape, control characters in the terminal)."""
    monkeypatch.setattr(delivery, "RETRY_BASE", 60.0)  # the failure stays on record while we look
    monkeypatch.setattr(delivery, "RETRY_CAP", 60.0)
    monkeypatch.setenv("CONSENT_AUDIT_TOKEN", "t" * 32)
    config = hooked(toml_path, receiver.url)
    app = make_app(config)
    await decide_n(app, 2)
    await until(lambda: len(receiver.got) == 2)
    log = await app.log()
    receiver.fail_once = {f"msg_{log.log_id}_3"}
    await decide_n(app, 2)
    await until(lambda: failing(log), 10)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN) as c:
        page = await c.get("/_consent/audit/webhooks", headers={"authorization": "Bearer " + "t" * 32})
    await app.close()
    assert page.status_code == 200
    text = page.text
    assert receiver.url in text and ">failing<" in text and "HTTP 500 for record 3 (decision)" in text
    assert '<a href="/_consent/audit/records/2">2</a>' in text and '<td class="num">2</td>' in text
    from consent_banner.log.commands import log as log_group

    out = await asyncio.to_thread(
        CliRunner().invoke, log_group, ["webhooks", "--config", str(toml_path)], catch_exceptions=False
    )
    assert out.exit_code == 0, out.output
    assert f"{receiver.url}: failing" in out.output
    assert "delivered through record 2 at " in out.output and "; 2 pending" in out.output
    assert "failed 1 times in a row" in out.output and "HTTP 500 for record 3" in out.output
    as_json = await asyncio.to_thread(
        CliRunner().invoke, log_group, ["webhooks", "--json", "--config", str(toml_path)]
    )
    (state,) = json.loads(as_json.output)
    assert (state["state"], state["delivered_through"], state["pending"], state["attempts"]) == (
        "failing",
        2,
        2,
        1,
    )
    assert state["next_attempt"] > state["failed_at"]


def test_every_action_of_the_log_is_an_event() -> None:
    """R39: every action the log writes goes out as one of the three events (decision covers accept,
    reject, custom, renew, the GPC opt-out and the opt-out of sale): none is left unsent."""
    from consent_banner.events.payload import EVENTS
    from consent_banner.log.records import ACTIONS, SYSTEM_ACTIONS

    assert set(EVENTS) == {*ACTIONS, *SYSTEM_ACTIONS}
    assert {a for a, e in EVENTS.items() if e == "decision"} >= {
        "accept_all",
        "reject_all",
        "custom",
        "renew",
        "gpc",
        "opt_out",
    }
    assert (EVENTS["withdraw"], EVENTS["purge"]) == ("withdraw", "purge")


def test_keygen_webhook_prints_a_secret_the_specification_reads() -> None:
    """`consent-banner keygen --webhook`: a whsec_ secret both our signer and standardwebhooks accept."""
    from consent_banner.cli import cli
    from consent_banner.events.signature import headers, parse_secret

    out = CliRunner().invoke(cli, ["keygen", "--webhook"])
    secret = out.output.strip()
    assert out.exit_code == 0 and secret.startswith("whsec_")
    key = parse_secret(secret, "test")
    body = b'{"type":"consent.decision"}'
    assert Verifier(secret).verify(body, headers(key, "msg_x_1", int(time.time()), body)) == {
        "type": "consent.decision"
    }
    assert CliRunner().invoke(cli, ["keygen", "--webhook", "--log"]).exit_code == 2


async def test_a_receiver_that_never_answers_is_a_failure_with_a_deadline(
    toml_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """R39: A hostile or hung receiver (it reads the request and trickles one header byte a second, never
    finishing) cannot hold the loop: the exchange has a deadline, the failure is recorded, decisions
    go on; the event goes out later."""
    monkeypatch.setattr(delivery, "TIMEOUT", 0.3)
    monkeypatch.setattr(delivery, "RETRY_BASE", 60.0)
    monkeypatch.setattr(delivery, "RETRY_CAP", 60.0)

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\n")
            for _ in range(100):
                writer.write(b"x")
                await writer.drain()
                await asyncio.sleep(0.2)  # each byte within the read timeout: only a deadline ends it
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    port = free_port()
    server = await asyncio.start_server(trickle, "127.0.0.1", port)
    try:
        config = hooked(toml_path, f"http://127.0.0.1:{port}/hook")
        app = make_app(config)
        started = time.monotonic()
        await decide_n(app, 3)
        assert time.monotonic() - started < 3
        log = await app.log()
        await until(lambda: failing(log), 10)
        (state,) = await log.webhook_states()
        await app.close()
        assert state.seq == 0 and state.last_error is not None
        assert "no answer within" in state.last_error or "Timeout" in state.last_error
        assert time.monotonic() - started < 8
    finally:
        server.close()


async def test_decisions_while_a_retry_waits_cost_no_claims(
    toml_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """R39: While a failed delivery waits for its retry, the decisions coming in do not wake the loop into
    claiming the cursor again (each claim is a write under the log's lock): one claim per wait."""
    monkeypatch.setattr(delivery, "RETRY_BASE", 60.0)
    monkeypatch.setattr(delivery, "RETRY_CAP", 60.0)
    config = hooked(toml_path, receiver.url)
    await receiver.stop()
    app = make_app(config)
    await decide_n(app, 1)
    log = await app.log()
    await until(lambda: failing(log), 10)
    claims = 0
    claim = log.claim_webhook

    async def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal claims
        claims += 1
        return await claim(*args, **kwargs)

    log.claim_webhook = counting
    await decide_n(app, 50)
    await asyncio.sleep(0.3)
    await app.close()
    assert claims <= 1


@pytest.mark.parametrize(
    ("webhooks", "message"),
    [
        ([{"url": "http://crm.example/hook"}], "webhooks[0].url: 'http://crm.example/hook': use https"),
        (
            [{"url": "ftp://crm.example/hook"}],
            "webhooks[0].url: 'ftp://crm.example/hook': a webhook URL is https",
        ),
        ([{"url": "https://:pw@/x"}], "webhooks[0].url: 'https://:***@/x': a webhook URL is https"),
        (
            [{"url": "https://a.example/h#x"}],
            "webhooks[0].url: 'https://a.example/h#x': a webhook URL has no",
        ),
        (
            [{"url": "https://a.example/h", "events": ["decision", "gpc"]}],
            "webhooks[0].events[1]: Input should",
        ),
        ([{"url": "https://a.example/h", "events": []}], "webhooks[0].events: name at least one event"),
        (
            [{"url": "https://a.example/h", "events": ["purge", "purge"]}],
            "webhooks[0].events: 'purge' is listed twice",
        ),
        (
            [{"url": "https://a.example/h", "secret_env": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}],
            "webhooks[0].secret_env: this is a secret, not the name of the environment variable",
        ),
        (
            [{"url": "https://a.example/h"}, {"url": "https://a.example/h"}],
            "webhooks[1].url: 'https://a.example/h' is",
        ),
        ([{"url": "https://a.example/h", "colour": "red"}], "webhooks[0].colour: unknown key"),
    ],
)
def test_a_bad_webhook_is_refused_naming_its_key(webhooks: list[dict[str, Any]], message: str) -> None:
    """R39: consent.toml's [[webhooks]]: https only (plain http to a loopback receiver alone), events
    from decision/withdraw/purge, a variable's name (never the secret) in secret_env, one cursor each."""
    base = {
        "policy_revision": "1",
        "controller": "x",
        "privacy_policy_url": "/p",
        "categories": {"necessary": {"label": "N"}},
    }
    with pytest.raises(ConfigError) as e:
        ConsentConfig.from_dict({**base, "webhooks": webhooks})
    assert message in str(e.value) and "MfKQ9r8G" not in str(e.value)
    ok = ConsentConfig.from_dict(
        {**base, "webhooks": [{"url": "http://[::1]:9/h"}, {"url": "https://a.example/h"}]}
    )
    assert ok.config_hash == ConsentConfig.from_dict(base).config_hash  # no banner depends on webhooks
