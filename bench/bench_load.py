"""Bounded load test: the demo site under uvicorn, decisions posted at 64 connections for 30 s.

    .venv/bin/python bench/bench_load.py [--seconds 30] [--connections 64] [--workers 1]
                                         [--log sqlite|postgresql://...]

Starts the demo (tests/reliability/served_app.py) under uvicorn in a process of its own on a free
loopback port, with a fresh SQLite log in a temporary directory (or a fresh schema in the given
PostgreSQL), posts decisions as brand-new visitors for the given time, stops the server and
prints: requests, errors, decisions answered 200, records found in the log, lost decisions
(200s whose consent id is not in the log), throughput and latency percentiles. Exits 1 when
anything was lost or any request failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.reliability.loadclient import post_load  # noqa: E402

DECISIONS = [
    {"action": "accept_all"},
    {"action": "reject_all"},
    {"action": "custom", "categories": ["analytics"]},
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(log_url: str, workdir: Path, port: int, workers: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CONSENT_SECRET_KEYS": os.environ.get("CONSENT_SECRET_KEYS") or secrets.token_urlsafe(32),
        "CONSENT_RELIABILITY_APP": "demo",
        "CONSENT_RELIABILITY_LOG": log_url,
        "PYTHONPATH": str(ROOT),
    }
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "tests.reliability.served_app:create_app",
           "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log",
           "--workers", str(workers)]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=workdir, env=env, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"uvicorn exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/_consent/state", timeout=1).status_code == 200:
                time.sleep(0.5 if workers > 1 else 0)  # the other workers finish starting
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    raise SystemExit("uvicorn did not start within 30 s")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)  # graceful: the log is closed by the lifespan shutdown
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


async def logged_ids(log_url: str) -> set[str]:
    if log_url.startswith("sqlite:///"):
        db = sqlite3.connect(log_url.removeprefix("sqlite:///"))
        try:
            return {r[0] for r in db.execute("SELECT consent_id FROM records")}
        finally:
            db.close()
    import asyncpg

    dsn, _, query = log_url.partition("?")
    schema = dict(p.split("=", 1) for p in query.split("&"))["schema"]
    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        return {r[0] for r in await conn.fetch("SELECT consent_id FROM records")}
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--log", default="sqlite", help="sqlite (a temporary file) or a postgresql:// DSN")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="consent-bench-") as tmp:
        workdir = Path(tmp)
        if args.log == "sqlite":
            log_url = f"sqlite:///{workdir / 'bench-log.db'}"
        else:
            sep = "&" if "?" in args.log else "?"
            log_url = f"{args.log}{sep}schema=cbbench_{secrets.token_hex(4)}"
        port = free_port()
        proc = start_server(log_url, workdir, port, args.workers)
        bodies = [json.dumps(d).encode() for d in DECISIONS]
        try:
            result = asyncio.run(
                post_load("127.0.0.1", port, bodies=lambda i: bodies[i % len(bodies)],
                          connections=args.connections, seconds=args.seconds)
            )  # fmt: skip
        finally:
            stop_server(proc)
        ids = asyncio.run(logged_ids(log_url))

    lost = set(result.consent_ids) - ids
    backend = "sqlite" if args.log == "sqlite" else "postgresql"
    print(
        f"load: {args.seconds:.0f} s, {args.connections} connections, {args.workers} worker(s), {backend} log"
    )
    print(f"  requests sent       {result.sent}")
    print(f"  answered 200        {result.ok}")
    print(
        f"  errors              {len(result.errors)}"
        + (f"  e.g. {result.errors[:3]}" if result.errors else "")
    )
    print(f"  records in the log  {len(ids)}")
    print(f"  lost decisions      {len(lost)}  (answered 200, not in the log)")
    print(f"  throughput          {result.ok / result.elapsed:.0f} decisions/s")
    print("  latency             " + "  ".join(
        f"p{p:g} {result.percentile(p) * 1000:.1f} ms" for p in (50, 90, 99, 99.9)
    ) + f"  max {max(result.latencies, default=0) * 1000:.1f} ms")  # fmt: skip
    return 1 if lost or result.errors else 0


if __name__ == "__main__":
    sys.exit(main())
