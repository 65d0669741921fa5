"""Webhooks outbox benchmark: group commit with a webhook delivering, against the same without.

    .venv/bin/python bench/bench_outbox.py                    # 200,000 decisions each way
    .venv/bin/python bench/bench_outbox.py --decisions 50000  # a quick run

Appends decisions through the log's group commit (the log signing key set: HMAC and Ed25519 on the
head at every commit) with many concurrent callers, twice in one run on fresh SQLite files: with no
webhook, and with one webhook's delivery loop running in the same process (as in a server: it reads
the log after its cursor, verifies the chain up to a signed anchor, signs and POSTs each event to a
receiver in another process, and moves its cursor about once a second). Reports both rates and their
ratio, the events the loop delivered while the decisions were being made, and how fast it caught up
after. A decision writes nothing for its webhooks, so the target stays: >= 50,000 decisions/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_log import KEY, SIGNED, TARGET_APPEND, decision

from consent_banner.config import Webhook
from consent_banner.events.delivery import Webhooks
from consent_banner.events.signature import new_secret
from consent_banner.log import open_log

# A receiver that answers 204 to every POST, keep-alive, as fast as asyncio parses HTTP/1.1.
RECEIVER = r"""
import asyncio, sys
async def handle(r, w):
    try:
        while True:
            line = await r.readline()
            if not line:
                return
            n = 0
            while (h := await r.readline()) not in (b"\r\n", b""):
                if h[:15].lower() == b"content-length:":
                    n = int(h[15:])
            await r.readexactly(n)
            w.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            await w.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
async def main():
    s = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]))
    print("ready", flush=True)
    await s.serve_forever()
asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run(url: str, n: int, concurrency: int, hook_url: str | None) -> dict[str, Any]:
    """Decisions/s with (hook_url) or without a webhook delivering; what the loop did."""
    log: Any = await open_log(url, hmac_key=KEY, log_keys=SIGNED)
    await log.append(decision(0))  # schema, version row, first checkpoint: not part of the rate
    hooks = None
    if hook_url is not None:
        hooks = Webhooks([Webhook(url=hook_url, start="beginning")])

        async def opened() -> Any:
            return log

        hooks.start(opened)
    per = n // concurrency

    async def caller(k: int) -> None:
        for i in range(k * per, (k + 1) * per):
            await log.append(decision(i))
            if hooks is not None:
                hooks.wake()  # what the middleware does after each durable decision

    t, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(caller(k) for k in range(concurrency)))
    dt, dcpu = time.perf_counter() - t, time.process_time() - cpu
    # Per CPU-second of this process (all its threads; with the outbox on, its delivery too): the
    # figure that holds still on a shared machine.
    out: dict[str, Any] = {
        "rate": per * concurrency / dt,
        "seconds": dt,
        "cpu_rate": per * concurrency / dcpu,
    }
    if hooks is not None:
        d = hooks._deliveries[0]
        out["during"] = d.sent
        head = per * concurrency + 1
        t = time.perf_counter()
        while d.sent < head and time.perf_counter() - t < 30:
            await asyncio.sleep(0.1)
        out["after"] = d.sent - out["during"]
        out["catch_up_rate"] = out["after"] / (time.perf_counter() - t)
        await hooks.close(log)
    await log.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--decisions", type=int, default=200_000)
    ap.add_argument("--concurrency", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=2, help="off/on pairs; the best of each is reported")
    args = ap.parse_args()
    os.environ["CONSENT_WEBHOOK_SECRET"] = new_secret()
    port = free_port()
    receiver = subprocess.Popen(
        [sys.executable, "-c", RECEIVER, str(port)], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert receiver.stdout is not None and receiver.stdout.readline().strip() == "ready"
        print(f"webhooks outbox benchmark  ({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f})")
        hook = f"http://127.0.0.1:{port}/hook"
        offs, ons = [], []
        with tempfile.TemporaryDirectory(prefix="cb-bench-outbox-") as tmp:
            # Alternated, the best of each kept: on a shared machine the load moves between runs.
            for i in range(args.rounds):
                t = Path(tmp) / str(i)
                t.mkdir()
                offs.append(
                    asyncio.run(run(f"sqlite:///{t / 'off.db'}", args.decisions, args.concurrency, None))
                )
                ons.append(
                    asyncio.run(run(f"sqlite:///{t / 'on.db'}", args.decisions, args.concurrency, hook))
                )
        off = max(offs, key=lambda r: r["rate"])
        on = max(ons, key=lambda r: r["rate"])
    finally:
        receiver.terminate()
        receiver.wait(10)
    ok = "PASS" if on["rate"] >= TARGET_APPEND else "FAIL"
    print(
        f"\nSQLite, group commit, {args.concurrency} concurrent callers, Ed25519 + HMAC head signing "
        f"(best of {args.rounds}):"
    )
    print(f"  outbox off          {off['rate']:>10,.0f} decisions/s  ({off['cpu_rate']:,.0f} per CPU-second)")
    ratio = on["rate"] / off["rate"]
    print(f"  outbox on           {on['rate']:>10,.0f} decisions/s  ({ratio:.2f} of off)   [{ok}]")
    cpu_ratio = on["cpu_rate"] / off["cpu_rate"]
    print(
        f"                      {on['cpu_rate']:>10,.0f} per CPU-second, delivery included "
        f"({cpu_ratio:.2f} of off)"
    )
    print(f"  delivered meanwhile {on['during']:>10,} events (signed POSTs acknowledged)")
    print(f"  catching up after   {on['catch_up_rate']:>10,.0f} events/s  ({on['after']:,} events)")


if __name__ == "__main__":
    main()
