"""Several server processes writing one log (uvicorn --workers N, or several app servers)."""

from __future__ import annotations

import asyncio
import sys
import textwrap
from typing import Any

from consent_banner.log import Decision, open_log

from .conftest import KEY, SECRET

WORKER = textwrap.dedent(
    """
    import asyncio, random, sys
    from consent_banner.log import Decision, derive_hmac_key, open_log

    async def main(url, tag, bursts, per_burst):
        log = await open_log(url, hmac_key=derive_hmac_key(sys.argv[5]))
        async def one(i):
            await asyncio.sleep(random.random() * 0.02)
            return await log.append(Decision(f"{tag}-{i:015d}", "custom", ("necessary", "analytics"),
                                             ("marketing",), {}, "r1", "en", "api", None, None,
                                             {"language": "en", "texts": {"tag": tag}}))
        done = 0
        for b in range(bursts):
            recs = await asyncio.gather(*(one(b * per_burst + i) for i in range(per_burst)))
            done += len(recs)
        await log.close()
        print(done)

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
    """
)


async def run_worker(url: str, tag: str, bursts: int, per_burst: int) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WORKER,
        url,
        tag,
        str(bursts),
        str(per_burst),
        SECRET,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_processes_writing_one_log_keep_one_chain(log_url: str) -> None:
    """R22, R23: three processes append at once (creating the schema at once, too): no record lost,
    the chain unbroken, and no "database is locked" reaching a caller."""
    tags = ["alpha", "bravo", "charlie"]
    results = await asyncio.gather(*(run_worker(log_url, t, 4, 60) for t in tags))
    for code, out, err in results:
        assert code == 0, err
        assert out.strip() == "240"
        assert "locked" not in err
    lg: Any = await open_log(log_url, hmac_key=KEY)
    try:
        assert await lg.count() == 720
        v = await lg.verify()
        assert v.ok, v.message
        assert v.records == 720
        for t in tags:
            assert len(await lg.records_for(f"{t}-{0:015d}")) == 1
        stats = await lg.stats()
        assert stats.consent_ids == 720
    finally:
        await lg.close()


CRASHER = textwrap.dedent(
    """
    import asyncio, os, sys
    from consent_banner.log import Decision, derive_hmac_key, open_log

    async def main(url):
        log = await open_log(url, hmac_key=derive_hmac_key(sys.argv[2]))
        def d(i):
            return Decision(f"crash-{i:016d}", "reject_all", ("necessary",), ("analytics",), {}, "r1", "en",
                            "banner", None, None, None)
        recs = await asyncio.gather(*(log.append(d(i)) for i in range(50)))
        print(" ".join(r.hash for r in recs), flush=True)
        os._exit(0)  # no close, no flush, no atexit: as abrupt as a crash right after answering

    asyncio.run(main(sys.argv[1]))
    """
)


async def test_acknowledged_decisions_survive_a_crash(log_url: str) -> None:
    """R23: once append() has answered, the record is in the log even if the process dies at once."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CRASHER,
        log_url,
        SECRET,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    acknowledged = out.decode().split()
    assert len(acknowledged) == 50
    lg: Any = await open_log(log_url, hmac_key=KEY)
    try:
        stored = {r[-1] async for r in lg.iter_rows()}
        assert set(acknowledged) <= stored
        assert (await lg.verify()).ok
    finally:
        await lg.close()


async def test_a_writer_whose_head_is_stale_links_after_the_real_one(log_url: str) -> None:
    """R22: each log links a batch after the head it last wrote, and checks that head inside the write
    lock. Two logs on one store, taking turns, make every batch find another writer's records first:
    each must then link afresh after the real head, at a time no earlier than the records before."""
    a: Any = await open_log(log_url, hmac_key=KEY)
    b: Any = await open_log(log_url, hmac_key=KEY)

    def d(tag: str, i: int) -> Decision:
        return Decision(
            f"{tag}-{i}", "custom", ("necessary",), ("analytics",), {}, "r1", "en", "api", None, None, None
        )

    try:
        written = []
        for turn in range(6):
            writer = (a, b)[turn % 2]
            written += await asyncio.gather(*(writer.append(d(f"t{turn}", i)) for i in range(25)))
        assert sorted(r.seq for r in written) == list(range(1, 151))
        v = await a.verify()
        assert v.ok and v.records == 150, v.message
        rows = [r async for r in a.iter_rows()]
        assert [r[1] for r in rows] == sorted(r[1] for r in rows)  # time order follows the chain
        for r in written:  # what each caller was told is what is stored
            assert rows[r.seq - 1][-1] == r.hash and rows[r.seq - 1][-2] == r.prev_hash
    finally:
        await a.close()
        await b.close()
