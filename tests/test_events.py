"""`ConsentMiddleware(..., on_decision=...)`: each durable decision, as its export line, off the path. R39."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from consent_banner import ConsentConfig
from consent_banner.log.export import ndjson_line

from .conftest import ORIGIN, make_app, rows

SAME = {"origin": ORIGIN}


async def _decide(c: httpx.AsyncClient, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
    r = await c.post("/_consent", json=body, headers={**SAME, **(headers or {})})
    assert r.status_code == 200, r.text


async def _until(check: Any, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def _export_lines(config: ConsentConfig) -> list[dict[str, Any]]:
    return [json.loads(ndjson_line(tuple(r))) for r in rows(config)]


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_on_decision_gets_every_kind_of_decision_as_its_export_line(
    config: ConsentConfig, tmp_path: Path, kind: str
) -> None:
    """R39: Accept, reject, custom, the GPC opt-out of a decided visitor, withdraw and renew each reach the
    callable once durable, as the dict their NDJSON export line parses to, in the order recorded."""
    got: list[dict[str, Any]] = []
    threads: set[str] = set()

    def sync_cb(record: dict[str, Any]) -> None:
        threads.add(threading.current_thread().name)
        got.append(record)

    async def async_cb(record: dict[str, Any]) -> None:
        got.append(record)

    app = make_app(config, on_decision=sync_cb if kind == "sync" else async_cb)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=ORIGIN) as c:
        await _decide(c, {"action": "accept_all"})
        await _decide(c, {"action": "reject_all"})
        await _decide(c, {"action": "custom", "categories": ["analytics"]})
        await c.get("/whoami", headers={"sec-gpc": "1"})  # a decided visitor's first GPC signal
        r = await c.post("/_consent/withdraw", json={}, headers=SAME)
        assert r.status_code == 200
        await _until(lambda: len(got) == 5)
    await app.close()
    # Renew: the policy changed, the visitor is asked again and decides with the old cookie.
    newer = config.model_copy(update={"policy_revision": "2027-01-01"})
    app2 = make_app(newer, on_decision=sync_cb if kind == "sync" else async_cb)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app2), base_url=ORIGIN) as c2:
        c2.cookies = c.cookies
        await _decide(c2, {"action": "accept_all"})
        await _until(lambda: len(got) == 6)
    await app2.close()
    assert [g["action"] for g in got] == ["accept_all", "reject_all", "custom", "gpc", "withdraw", "renew"]
    assert got == _export_lines(config)  # exactly the export's lines, durable in the log
    if kind == "sync":
        assert "MainThread" not in threads  # a plain function runs in a worker thread, not on the loop


async def test_a_raising_callable_is_logged_and_the_decision_stands(
    config: ConsentConfig, caplog: pytest.LogCaptureFixture
) -> None:
    """R39: An exception in on_decision is logged with the consent id; the visitor gets the cookie and the
    record stays; the next decision still reaches the callable."""
    calls: list[str] = []

    def boom(record: dict[str, Any]) -> None:
        calls.append(record["action"])
        raise RuntimeError("CRM down")

    app = make_app(config, on_decision=boom)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN) as c:
        with caplog.at_level(logging.ERROR, logger="consent_banner.events"):
            r = await c.post("/_consent", json={"action": "accept_all"}, headers=SAME)
            assert r.status_code == 200 and "consent=" in r.headers["set-cookie"]
            await _decide(c, {"action": "reject_all"})
            await _until(lambda: len(calls) == 2)
            await asyncio.sleep(0.05)
    await app.close()
    cid = rows(config)[0]["consent_id"]
    assert len(rows(config)) == 2
    failures = [r for r in caplog.records if "on_decision raised" in r.getMessage()]
    assert len(failures) == 2 and cid in failures[0].getMessage() and failures[0].exc_info is not None


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_slow_callable_does_not_delay_the_answer(
    config: ConsentConfig, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """R39: A callable that takes 2 s (blocking or awaiting) leaves the visitor's answer as fast as without
    it: it runs after the answer, off the event loop's path."""
    from consent_banner.events import callback

    monkeypatch.setattr(callback, "DRAIN", 0.2)  # the shutdown need not wait for it here
    release = threading.Event()
    done: list[int] = []

    def slow_sync(record: dict[str, Any]) -> None:
        release.wait(2)
        done.append(record["seq"])

    async def slow_async(record: dict[str, Any]) -> None:
        await asyncio.sleep(2)
        done.append(record["seq"])

    app = make_app(config, on_decision=slow_sync if kind == "sync" else slow_async)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN) as c:
        started = time.monotonic()
        for _ in range(3):
            await _decide(c, {"action": "accept_all"})
        assert time.monotonic() - started < 1.0
        assert done == []
        release.set()
    await app.close()  # lets the callable catch up (bounded) before the log closes


async def test_a_flood_is_bounded(config: ConsentConfig, caplog: pytest.LogCaptureFixture) -> None:
    """R39: Decisions faster than the callable: the queue holds QUEUE records at most; past it a record is
    dropped from the callable (logged with its consent id), never from the log."""
    from consent_banner.events import callback

    gate = asyncio.Event()
    got: list[int] = []

    async def stuck(record: dict[str, Any]) -> None:
        await gate.wait()
        got.append(record["seq"])

    app = make_app(config, on_decision=stuck)
    assert app.events.callback is not None
    app.events.callback._queue = asyncio.Queue(3)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN) as c:
        with caplog.at_level(logging.ERROR, logger="consent_banner.events"):
            for _ in range(6):
                await _decide(c, {"action": "accept_all"})
        gate.set()
        await _until(lambda: len(got) == 4)  # the one being called, and the three queued
    await app.close()
    assert len(rows(config)) == 6 and app.events.callback.dropped == 2
    assert sum("not passed to it" in r.getMessage() for r in caplog.records) == 2
    assert callback.QUEUE == 10_000
