"""GPC is recorded once per consent id and the decision it amends, enforced by the log itself.

A decided cookie replayed with `Sec-GPC: 1` used to write one `gpc` record per request. The log now
keeps one per (consent id, decision amended): a unique index makes it hold across processes, and a
duplicate is left out before its batch is linked, so the chain stays intact.
"""

from __future__ import annotations

import asyncio
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from consent_banner import ConsentConfig
from consent_banner.log import Decision, open_log

from ..conftest import ORIGIN, make_app
from .conftest import KEY, SECRET
from .rawdb import RawDB

MakeDecision = Callable[..., Decision]
CID = "gpc-visitor-0000000000000001"


def gpc(decision: MakeDecision, cid: str = CID) -> Decision:
    return decision(
        consent_id=cid,
        action="gpc",
        source="gpc",
        granted=("necessary", "analytics"),
        denied=("marketing",),
    )


async def gpc_rows(log_url: str, cid: str = CID) -> list[tuple[Any, ...]]:
    async with RawDB(log_url) as raw:
        return await raw.fetch(
            "SELECT seq, detail FROM records WHERE consent_id = ? AND action = 'gpc' ORDER BY seq", cid
        )


async def test_gpc_replayed_concurrently_is_recorded_once(
    log: Any, log_url: str, decision: MakeDecision
) -> None:
    """50 concurrent GPC records for one decision (one batch and several): one record, every caller
    answered with it, the chain intact."""
    await log.append(decision(consent_id=CID))
    first = await asyncio.gather(*(log.append(gpc(decision)) for _ in range(25)))
    again = [await log.append(gpc(decision)) for _ in range(25)]
    rows = await gpc_rows(log_url)
    assert rows == [(2, '{"amends":1}')]
    assert {r.seq for r in first + again} == {2}
    assert first[0].detail == {"amends": 1}
    assert await log.count() == 2
    result = await log.verify()
    assert result.ok, result.message


async def test_gpc_after_a_new_decision_is_recorded_again(
    log: Any, log_url: str, decision: MakeDecision
) -> None:
    """Once per decision, not once per visitor: a new decision followed by GPC is a new record."""
    await log.append(decision(consent_id=CID))
    await log.append(gpc(decision))
    await log.append(decision(consent_id=CID, action="accept_all"))
    await log.append(gpc(decision))
    await log.append(gpc(decision))
    assert await gpc_rows(log_url) == [(2, '{"amends":1}'), (4, '{"amends":3}')]
    assert (await log.verify()).ok


async def test_gpc_in_one_batch_with_its_decision(log: Any, log_url: str, decision: MakeDecision) -> None:
    """A decision and its GPC records committed together: the GPC record amends the decision's seq."""
    other = decision()
    results = await asyncio.gather(
        log.append(other),
        log.append(decision(consent_id=CID)),
        log.append(gpc(decision)),
        log.append(gpc(decision)),
    )
    seqs = [r.seq for r in results]
    assert seqs[2] == seqs[3]
    rows = await gpc_rows(log_url)
    assert len(rows) == 1 and rows[0][1] == f'{{"amends":{seqs[1]}}}'
    assert (await log.verify()).ok


async def test_the_log_refuses_a_second_gpc_record_itself(
    log: Any, log_url: str, decision: MakeDecision
) -> None:
    """The unique key holds even for a writer that skips the library's check."""
    await log.append(decision(consent_id=CID))
    await log.append(gpc(decision))
    async with RawDB(log_url) as raw:
        (row,) = await raw.fetch("SELECT * FROM records WHERE action = 'gpc'")
        with pytest.raises(Exception, match="(?i)unique"):
            await raw.execute(f"INSERT INTO records VALUES ({', '.join('?' * len(row))})", 99, *row[1:])


async def test_two_log_handles_record_gpc_once(log_url: str, decision: MakeDecision) -> None:
    """Two handles on one log (as two workers have), replaying at once: one record."""
    a = await open_log(log_url, hmac_key=KEY)
    b = await open_log(log_url, hmac_key=KEY)
    try:
        await a.append(decision(consent_id=CID))
        await asyncio.gather(*(lg.append(gpc(decision)) for _ in range(20) for lg in (a, b)))
        assert len(await gpc_rows(log_url)) == 1
        assert (await b.verify()).ok
    finally:
        await a.close()
        await b.close()


WORKER = textwrap.dedent(
    """
    import asyncio, sys
    from consent_banner.log import Decision, derive_hmac_key, open_log

    async def main(url, secret):
        log = await open_log(url, hmac_key=derive_hmac_key(secret))
        d = Decision(sys.argv[3], "gpc", ("necessary", "analytics"), ("marketing",), {}, "2026-01", "en",
                     "gpc", None, None, None)
        records = await asyncio.gather(*(log.append(d) for _ in range(30)))
        await log.close()
        print(len({r.seq for r in records}))

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


async def test_two_processes_record_gpc_once(log_url: str, decision: MakeDecision) -> None:
    """Two processes replaying the same cookie with GPC at the same time: one record between them."""
    lg = await open_log(log_url, hmac_key=KEY)
    try:
        await lg.append(decision(consent_id=CID))
    finally:
        await lg.close()
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", WORKER, log_url, SECRET, CID, stdout=asyncio.subprocess.PIPE
        )
        for _ in range(2)
    ]
    outs = await asyncio.gather(*(asyncio.wait_for(p.communicate(), 120) for p in procs))
    assert [p.returncode for p in procs] == [0, 0]
    assert [o[0].strip() for o in outs] == [b"1", b"1"]
    assert len(await gpc_rows(log_url)) == 1
    lg = await open_log(log_url, hmac_key=KEY)
    try:
        assert (await lg.verify()).ok
    finally:
        await lg.close()


async def test_500_requests_with_gpc_give_one_record(tmp_path: Path, toml_path: Path) -> None:
    """Over HTTP: a decided cookie replayed 500 times with Sec-GPC: 1 writes one gpc record."""
    config = ConsentConfig.from_toml(toml_path)
    app = make_app(config)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN) as client:
            r = await client.post("/_consent", json={"action": "accept_all"}, headers={"origin": ORIGIN})
            assert r.status_code == 200, r.text
            name = config.cookie.name
            cookie = f"{name}={client.cookies[name]}"
            for _ in range(500):
                client.cookies.clear()
                answer = await client.get("/whoami", headers={"cookie": cookie, "sec-gpc": "1"})
                assert answer.status_code == 200 and not answer.json()["marketing"]
    finally:
        await app.close()
    async with RawDB(config.log) as raw:
        actions = [a for (a,) in await raw.fetch("SELECT action FROM records ORDER BY seq")]
    assert actions == ["accept_all", "gpc"]
