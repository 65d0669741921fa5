"""Consent-log benchmark: append throughput, export and verify rates, peak memory.

    .venv/bin/python bench/bench_log.py                 # 1,000,000 records for export/verify
    .venv/bin/python bench/bench_log.py --records 100000  # a quick run

Prints, in one run, for SQLite (and PostgreSQL when CONSENT_TEST_POSTGRES_DSN is set):
- decisions/s appended through the log with group commit (many concurrent appends),
  vs. the same with consent ids of random bits only (no time prefix: inserts all over the index),
  vs. one commit per decision, vs. a raw executemany in one transaction (the physical limit);
- export (CSV, NDJSON) and verify rates over --records records, each measured in a fresh
  subprocess so its peak memory (max RSS, interpreter included) is its own.
Targets: group commit >= 50,000 decisions/s on SQLite; export and verify >= 100,000 records/s
with peak memory < 200 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from consent_banner.consent import new_consent_id
from consent_banner.log import GENESIS, Decision, derive_hmac_key, open_log, record_hash
from consent_banner.log.canonical import ROW_COLUMNS, version_id_for
from consent_banner.log.checkpoints import CHECKPOINT_EVERY, checkpoint_link, checkpoint_mac
from consent_banner.log.keys import LogKeys, SigningKey
from consent_banner.log.records import format_at, prepare
from consent_banner.log.signing import head_mac, key_id

KEY = derive_hmac_key("bench-secret-key-0123456789-0123456789")
SIGNED = LogKeys((SigningKey(bytes(range(32))),))  # CONSENT_LOG_SIGNING_KEY: Ed25519 beside the HMAC
PG_ENV = "CONSENT_TEST_POSTGRES_DSN"
VERSION = {
    "language": "en",
    "config_hash": "c" * 64,
    "texts": {f"text_{i}": "We use cookies to count visits and to show you offers. " * 3 for i in range(25)},
    "categories": {
        "necessary": {"label": "Necessary"},
        "analytics": {"label": "Statistics"},
        "marketing": {"label": "Marketing"},
    },
}
# Only the benches write records by hand (bulk loads, the raw baseline): one row per statement.
INSERT_RECORD = f"INSERT INTO records ({', '.join(ROW_COLUMNS)}) VALUES ({', '.join('?' * len(ROW_COLUMNS))})"
TARGET_APPEND = 50_000
TARGET_RATE = 100_000
TARGET_MB = 200


def random_id() -> str:
    """A consent id of 128 random bits and nothing else (what new_consent_id() made before it got its
    time prefix): each one lands anywhere in the consent-id index."""
    return base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode()


_CHOICES = {
    "accept_all": (("necessary", "analytics", "marketing"), ()),
    "reject_all": (("necessary",), ("analytics", "marketing")),
    "custom": (("necessary", "analytics"), ("marketing",)),
}


def decision(i: int, make_id: Callable[[], str] = new_consent_id) -> Decision:
    """A visitor's decision as the decision endpoint builds it: its consent id made just now."""
    action = ("accept_all", "reject_all", "custom")[i % 3]
    granted, denied = _CHOICES[action]
    return Decision(
        make_id(),
        action,
        granted,
        denied,
        {"stats": "analytics" in granted},
        "2026-01",
        "en",
        "banner",
        "203.0.113.0",
        "Firefox",
        VERSION,
    )


# --- appends -----------------------------------------------------------------------------------------


async def append_rate(
    url: str, n: int, concurrency: int, make_id: Callable[[], str] = new_consent_id, **options: Any
) -> tuple[float, Any]:
    """Decisions/s through open_log().append with `concurrency` callers appending in a loop.

    Each caller builds its decision (and so its new consent id) right before appending it, as the
    decision endpoint does: that cost is in the rate."""
    log: Any = await open_log(url, hmac_key=KEY, **options)
    await log.append(decision(0, make_id))  # schema, version row, first checkpoint: not part of the rate
    per = n // concurrency

    async def caller(k: int) -> None:
        for i in range(k * per, (k + 1) * per):
            await log.append(decision(i, make_id))

    t, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(caller(k) for k in range(concurrency)))
    dt, dcpu = time.perf_counter() - t, time.process_time() - cpu
    writer = log.writer
    writer.cpu_rate = per * concurrency / dcpu  # decisions per CPU-second of this process (all threads)
    await log.close()
    return per * concurrency / dt, writer


def chain(prev: str, rows: list[tuple[str | None, ...]]) -> tuple[list[tuple[str, str]], str]:
    """(prev_hash, hash) of each of `rows` (stored columns) linked after `prev`, and the last hash."""
    links = []
    for cols in rows:
        h = record_hash(prev, cols)
        links.append((prev, h))
        prev = h
    return links, prev


def raw_rows(
    n: int, start_seq: int = 1, prev: str = GENESIS, start: datetime | None = None
) -> Iterator[list[tuple[Any, ...]]]:
    """Valid chained rows in chunks, as the log would write them (for the raw baseline and bulk loads)."""
    vid, _ = version_id_for(VERSION)
    t0 = start or datetime.now(UTC) - timedelta(days=30)
    step = timedelta(days=30) / max(n, 1)
    seq = start_seq
    chunk = 20_000
    for base in range(0, n, chunk):
        cols = [
            prepare(decision(i), vid).columns(format_at(t0 + step * i))
            for i in range(base, min(n, base + chunk))
        ]
        links, prev = chain(prev, cols)
        rows = [(seq + j, *c, *link) for j, (c, link) in enumerate(zip(cols, links, strict=True))]
        seq += len(rows)
        yield rows


def raw_sqlite_rate(path: str, n: int) -> float:
    """Raw sqlite3.executemany of n prepared rows in one transaction, same schema and indexes."""
    asyncio.run(_create(f"sqlite:///{path}"))
    rows = [r for chunk in raw_rows(n) for r in chunk]
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous = FULL")
    t = time.perf_counter()
    db.execute("BEGIN IMMEDIATE")
    db.executemany(INSERT_RECORD, rows)
    db.execute("COMMIT")
    dt = time.perf_counter() - t
    db.close()
    return n / dt


async def _create(url: str) -> None:
    log: Any = await open_log(url, hmac_key=KEY)
    await log.close()


async def raw_pg_rate(url: str, n: int) -> float:
    """Raw asyncpg COPY of n prepared rows in one transaction (the PostgreSQL floor)."""
    import asyncpg

    from consent_banner.log.postgres import split_url

    await _create(url)
    dsn, schema = split_url(url)
    rows = [r for chunk in raw_rows(n) for r in chunk]
    conn = await asyncpg.connect(dsn)
    try:
        t = time.perf_counter()
        async with conn.transaction():
            await conn.copy_records_to_table("records", records=rows, columns=ROW_COLUMNS, schema_name=schema)
        return n / (time.perf_counter() - t)
    finally:
        await conn.close()


# --- bulk load for export / verify -------------------------------------------------------------------


def _checkpoint_rows(log_id: str, heads: list[tuple[int, str]]) -> tuple[list[tuple[Any, ...]], str]:
    """Periodic checkpoints at `heads`, each signing the chain before it; and the chain's tip."""
    at = format_at(datetime.now(UTC))
    rows: list[tuple[Any, ...]] = []
    tip = GENESIS
    for n, (s, h) in enumerate(heads, start=1):
        mac = checkpoint_mac(KEY, log_id, s, h, at, "periodic", n, tip)
        rows.append((s, h, at, "periodic", key_id(KEY), mac, n, tip))
        tip = checkpoint_link(tip, mac)
    return rows, tip


def bulk_sqlite(path: str, n: int) -> None:
    """A valid n-record log (chain, checkpoints, signed head), written directly for speed."""
    asyncio.run(_create(f"sqlite:///{path}"))
    db = sqlite3.connect(path, isolation_level=None)
    (log_id,) = db.execute("SELECT value FROM meta WHERE key = 'log_id'").fetchone()
    vid, text = version_id_for(VERSION)
    db.execute("BEGIN")
    db.execute("INSERT OR IGNORE INTO versions VALUES (?, ?, ?)", (vid, format_at(datetime.now(UTC)), text))
    heads: list[tuple[int, str]] = []
    last: tuple[int, str] = (0, GENESIS)
    for rows in raw_rows(n):
        db.executemany(INSERT_RECORD, rows)
        last = (rows[-1][0], rows[-1][-1])
        heads += [(r[0], r[-1]) for r in rows if r[0] % CHECKPOINT_EVERY == 0]
    cps, tip = _checkpoint_rows(log_id, heads)
    db.executemany("INSERT INTO checkpoints (seq, hash, at, reason, key_id, mac, n, prev) VALUES "
                   "(?, ?, ?, ?, ?, ?, ?, ?)", cps)  # fmt: skip
    at = format_at(datetime.now(UTC))
    db.execute(
        "UPDATE head SET seq = ?, hash = ?, at = ?, key_id = ?, mac = ?, checkpoints = ? WHERE id = 1",
        (*last, at, key_id(KEY), head_mac(KEY, log_id, *last, at, tip), tip),
    )
    db.execute("COMMIT")
    db.close()


async def bulk_pg(url: str, n: int) -> None:
    import asyncpg

    from consent_banner.log.postgres import split_url

    await _create(url)
    dsn, schema = split_url(url)
    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        log_id = await conn.fetchval("SELECT value FROM meta WHERE key = 'log_id'")
        vid, text = version_id_for(VERSION)
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO versions VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                vid,
                format_at(datetime.now(UTC)),
                text,
            )
            heads: list[tuple[int, str]] = []
            last: tuple[int, str] = (0, GENESIS)
            for rows in raw_rows(n):
                await conn.copy_records_to_table(
                    "records", records=rows, columns=ROW_COLUMNS, schema_name=schema
                )
                last = (rows[-1][0], rows[-1][-1])
                heads += [(r[0], r[-1]) for r in rows if r[0] % CHECKPOINT_EVERY == 0]
            cps, tip = _checkpoint_rows(log_id, heads)
            await conn.executemany(
                "INSERT INTO checkpoints (seq, hash, at, reason, key_id, mac, n, prev) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                cps,
            )
            at = format_at(datetime.now(UTC))
            await conn.execute(
                "UPDATE head SET seq = $1, hash = $2, at = $3, key_id = $4, mac = $5, checkpoints = $6 "
                "WHERE id = 1",
                *last,
                at,
                key_id(KEY),
                head_mac(KEY, log_id, *last, at, tip),
                tip,
            )
        await conn.execute("ANALYZE records")
    finally:
        await conn.close()


# --- measured in a child process ---------------------------------------------------------------------


async def child(task: str, url: str, out: str) -> dict[str, Any]:
    from consent_banner.log.export import stream

    log: Any = await open_log(url, hmac_key=KEY, create=False)
    try:
        t = time.perf_counter()
        if task == "verify":
            result = await log.verify()
            n = result.records
            if not result.ok:
                raise SystemExit(f"verify failed: {result.message}")
        else:
            n = 0
            with open(out, "w", encoding="utf-8", newline="") as f:
                async for text in stream(log.iter_chunks(), task):
                    f.write(text)
            with open(out, "rb") as f:
                n = sum(buf.count(b"\n") for buf in iter(lambda: f.read(1 << 20), b"")) - (task == "csv")
        dt = time.perf_counter() - t
    finally:
        await log.close()
    return {"task": task, "records": n, "seconds": dt, "maxrss_mb": _peak_rss_mb()}


def _peak_rss_mb() -> float:
    """This process's peak RSS. Not getrusage(): Linux carries ru_maxrss over from the parent
    across fork+exec, so a child would report the benchmark's own peak. VmHWM is per process image."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(task: str, url: str, tmp: str) -> dict[str, Any]:
    out = os.path.join(tmp, f"export.{task}")
    proc = subprocess.run(
        [sys.executable, __file__, "--child", task, "--url", url, "--out", out],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{task} failed:\n{proc.stderr}")
    with_size = json.loads(proc.stdout)
    if os.path.exists(out):
        with_size["bytes"] = os.path.getsize(out)
        os.remove(out)
    return with_size


# --- report ------------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "ok" if ok else "BELOW TARGET"


def report_rates(name: str, url: str, tmp: str, records: int) -> None:
    print(f"\n{name}: export and verify over {records:,} records (each in a fresh process)")
    for task in ("csv", "ndjson", "verify"):
        m = measure(task, url, tmp)
        rate = m["records"] / m["seconds"]
        size = f", {m['bytes'] / 1e6:.0f} MB written" if "bytes" in m else ""
        label = "verify" if task == "verify" else f"export {task}"
        print(
            f"  {label:<14} {m['records']:>10,} records in {m['seconds']:6.2f} s = {rate:>9,.0f} records/s  "
            f"peak RSS {m['maxrss_mb']:6.1f} MB{size}   "
            f"[{verdict(rate >= TARGET_RATE and m['maxrss_mb'] < TARGET_MB)}]"
        )


def report_appends(
    name: str,
    group: tuple[float, Any],
    randoms: tuple[float, Any],
    single: tuple[float, Any],
    raw: float,
    concurrency: int,
    target: int | None,
) -> None:
    (g, gw), (r, rw), (s, _) = group, randoms, single
    print(f"\n{name}: appending decisions")
    ok = f"   [{verdict(g >= target)}]" if target else ""
    print(
        f"  group commit        {g:>10,.0f} decisions/s  ({concurrency} concurrent callers, "
        f"{gw.items / max(gw.batches, 1):.0f} decisions per commit on average){ok}"
    )
    print(
        f"                      {gw.cpu_rate:>10,.0f} decisions per CPU-second (all threads of this process)"
    )
    print(
        f"  same, random ids    {r:>10,.0f} decisions/s  ({rw.cpu_rate:,.0f} per CPU-second; consent ids "
        "without the time prefix, as before)"
    )
    print(f"  one commit each     {s:>10,.0f} decisions/s")
    print(f"  raw bulk insert     {raw:>10,.0f} rows/s (one transaction, no chain, no callers)")
    print(f"  group / one-each    {g / s:>10.1f} x")
    print(f"  group / raw         {g / raw:>10.2f} of the physical limit")


def report_signed(group: tuple[float, Any], signed: tuple[float, Any], target: int | None) -> None:
    """Group commit with the log signing key set: the head (every commit) and each checkpoint also
    signed with Ed25519."""
    (g, _), (e, ew) = group, signed
    ok = f"   [{verdict(e >= target)}]" if target else ""
    print(
        f"  same, Ed25519 too   {e:>10,.0f} decisions/s  ({e / g:.2f} of the HMAC alone; "
        f"{ew.cpu_rate:,.0f} per CPU-second){ok}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=1_000_000, help="records for export/verify")
    ap.add_argument("--decisions", type=int, default=200_000, help="decisions for the group-commit rate")
    ap.add_argument("--single", type=int, default=5_000, help="decisions for the one-commit-each rate")
    ap.add_argument("--concurrency", type=int, default=2000, help="concurrent callers")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(child(args.child, args.url, args.out))))
        return

    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]  # progress, even into a file
    decisions = min(args.decisions, max(args.records, 20_000))
    print(
        f"consent-log benchmark  (python {sys.version.split()[0]}, sqlite {sqlite3.sqlite_version}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start)"
    )
    with tempfile.TemporaryDirectory(prefix="cb-bench-") as tmp:
        t = Path(tmp)
        group = asyncio.run(append_rate(f"sqlite:///{t / 'group.db'}", decisions, args.concurrency))
        signed = asyncio.run(
            append_rate(f"sqlite:///{t / 'signed.db'}", decisions, args.concurrency, log_keys=SIGNED)
        )
        randoms = asyncio.run(
            append_rate(f"sqlite:///{t / 'random.db'}", decisions, args.concurrency, random_id)
        )
        single = asyncio.run(append_rate(f"sqlite:///{t / 'single.db'}", args.single, 50, max_batch=1))
        raw = raw_sqlite_rate(str(t / "raw.db"), decisions)
        report_appends("SQLite", group, randoms, single, raw, args.concurrency, TARGET_APPEND)
        report_signed(group, signed, TARGET_APPEND)
        for f in t.glob("*.db*"):
            f.unlink()
        big = t / "big.db"
        t0 = time.perf_counter()
        bulk_sqlite(str(big), args.records)
        print(f"\n(loaded {args.records:,} chained records into SQLite in {time.perf_counter() - t0:.1f} s)")
        report_rates("SQLite", f"sqlite:///{big}", tmp, args.records)

        dsn = os.environ.get(PG_ENV)
        if not dsn:
            print(f"\nPostgreSQL: skipped ({PG_ENV} is not set)")
            return
        asyncio.run(run_pg(dsn, args, decisions, tmp))


async def _drop(dsn: str, schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def run_pg(dsn: str, args: argparse.Namespace, decisions: int, tmp: str) -> None:
    sep = "&" if "?" in dsn else "?"
    schemas = [f"cb_bench_{secrets.token_hex(4)}_{k}" for k in ("group", "single", "raw", "big", "random")]
    urls = [f"{dsn}{sep}schema={s}" for s in schemas]
    try:
        group = await append_rate(urls[0], decisions, args.concurrency)
        randoms = await append_rate(urls[4], decisions, args.concurrency, random_id)
        single = await append_rate(urls[1], args.single, 50, max_batch=1)
        raw = await raw_pg_rate(urls[2], decisions)
        report_appends("PostgreSQL", group, randoms, single, raw, args.concurrency, None)
        t0 = time.perf_counter()
        await bulk_pg(urls[3], args.records)
        print(
            f"\n(loaded {args.records:,} chained records into PostgreSQL in {time.perf_counter() - t0:.1f} s)"
        )
        await asyncio.to_thread(report_rates, "PostgreSQL", urls[3], tmp, args.records)
    finally:
        for s in schemas:
            await _drop(dsn, s)


if __name__ == "__main__":
    main()
