"""Offline verification benchmark: `log verify --export FILE --public-key KEY` over a million records.

    .venv/bin/python bench/bench_verify_export.py                   # 1,000,000 records
    .venv/bin/python bench/bench_verify_export.py --records 100000  # a quick run
    .venv/bin/python bench/bench_verify_export.py --baseline /tmp/base  # against another checkout

Writes an NDJSON export as `log export --format ndjson` does (the typed lines, then the records,
with a periodic checkpoint every 10,000 records, each signed with the HMAC and Ed25519, and a
signed head), then verifies it in a fresh subprocess with the public key alone, so the rate and
the peak memory (max RSS, interpreter included) are the verifier's own.
Targets: >= 100,000 records/s; memory constant (peak < 200 MB whatever the size).
With --baseline DIR (a worktree of an earlier commit: `git worktree add DIR REV`), the same file is
also verified by the consent_banner in DIR, the two alternating (--rounds each, the best kept, so a
busy machine slows both alike), and the ratio of their rates is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from consent_banner.log import GENESIS, Decision, derive_hmac_key
from consent_banner.log.canonical import version_id_for
from consent_banner.log.chain import link_rows
from consent_banner.log.checkpoints import CHECKPOINT_EVERY, Checkpoint, checkpoint_link, checkpoint_mac
from consent_banner.log.export import ndjson_line, state_lines
from consent_banner.log.head import SignedHead
from consent_banner.log.keys import SigningKey
from consent_banner.log.records import format_at, prepare
from consent_banner.log.results import LogState
from consent_banner.log.signing import ed25519_message, head_mac, key_id

HMAC = derive_hmac_key("bench-secret-key-0123456789-0123456789")
LOG_KEY = SigningKey(bytes(range(32)))
TARGET_RATE = 100_000
TARGET_MB = 200
VERSION = {"language": "en", "config_hash": "c" * 64, "texts": {"title": "We use cookies"}}
LOG_ID = "b" * 32


def write_export(path: Path, n: int) -> None:
    """An export of `n` records, as the exporter writes it (state lines first, then the records)."""
    vid, payload = version_id_for(VERSION)
    at = format_at(datetime(2026, 1, 1, tzinfo=UTC))
    prepared = [
        prepare(
            Decision(
                f"bench-{i:022d}",
                ("accept_all", "reject_all", "custom")[i % 3],
                ("necessary", "analytics") if i % 3 != 1 else ("necessary",),
                ("marketing",) if i % 3 != 1 else ("analytics", "marketing"),
                {"plausible": i % 3 != 1},
                "2026-01",
                "en",
                "banner",
                "203.0.113.0",
                "Firefox",
                VERSION,
            ),
            vid,
        )
        for i in range(CHECKPOINT_EVERY)
    ]
    checkpoints: list[Checkpoint] = []
    tip, prev, seq = GENESIS, GENESIS, 0
    kid = key_id(HMAC)
    records = path.with_suffix(".records")
    with open(records, "w", encoding="utf-8") as out:
        while seq < n:
            batch = prepared[: min(CHECKPOINT_EVERY, n - seq)]
            rows, prev = link_rows(batch, at, seq, prev)
            out.write("".join(map(ndjson_line, rows)))
            seq += len(rows)
            cp_n = len(checkpoints) + 1
            mac = checkpoint_mac(HMAC, LOG_ID, seq, prev, at, "periodic", cp_n, tip)
            cp = Checkpoint(LOG_ID, seq, prev, at, "periodic", kid, mac, cp_n, tip, sig_key_id=LOG_KEY.kid)
            cp = Checkpoint(**{**cp.__dict__, "sig": LOG_KEY.sign(cp.ed25519_message())})
            checkpoints.append(cp)
            tip = checkpoint_link(tip, mac)
    hmac = head_mac(HMAC, LOG_ID, seq, prev, at, tip)
    sig = LOG_KEY.sign(ed25519_message("head", LOG_ID, seq, prev, at, None, tip, LOG_KEY.kid))
    head = SignedHead(LOG_ID, seq, prev, at, kid, hmac, tip, LOG_KEY.kid, sig)
    with open(path, "w", encoding="utf-8") as out:
        out.write(state_lines(LogState(LOG_ID, head, checkpoints, {vid: payload}), 4))
        with open(records, encoding="utf-8") as f:
            while chunk := f.read(1 << 20):
                out.write(chunk)
    records.unlink()


def child(path: str) -> dict[str, object]:
    from consent_banner.log.offline import verify_export

    t, cpu = time.perf_counter(), time.process_time()
    result = verify_export(Path(path), public_keys={LOG_KEY.kid: LOG_KEY.public})
    dt, dcpu = time.perf_counter() - t, time.process_time() - cpu
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux
    return {
        "ok": result.ok,
        "message": result.message,
        "records": result.records,
        "seconds": dt,
        "cpu_seconds": dcpu,
        "rss_mb": rss,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--baseline", help="also verify with the consent_banner of this checkout, and compare")
    ap.add_argument("--rounds", type=int, default=3, help="runs of each, alternating, with --baseline")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child)))
        return
    print(
        f"offline verify benchmark  (python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f} at start)"
    )
    with tempfile.TemporaryDirectory(prefix="cb-bench-verify-") as tmp:
        path = Path(tmp) / "export.ndjson"
        t = time.perf_counter()
        write_export(path, args.records)
        size = path.stat().st_size
        print(f"(wrote {args.records:,} records, {size / 1e6:,.0f} MB, in {time.perf_counter() - t:.1f} s)")
        runs: dict[str, list[dict[str, Any]]] = {"this checkout": []}
        if args.baseline:
            runs = {"baseline": [], "this checkout": []}
        for _ in range(args.rounds if args.baseline else 1):
            for name, found in runs.items():
                found.append(_verify_in_child(path, args.baseline if name == "baseline" else None))
    rates: dict[str, tuple[float, float]] = {}
    for name, found in runs.items():
        r = max(found, key=lambda r: r["records"] / r["cpu_seconds"])
        assert r["ok"], r["message"]
        rate, per_cpu = r["records"] / r["seconds"], r["records"] / r["cpu_seconds"]
        rates[name] = rate, per_cpu
        ok = rate >= TARGET_RATE and r["rss_mb"] < TARGET_MB
        print(
            f"  {name:<14} verify --export --public-key  {rate:>10,.0f} records/s  ({r['records']:,} records "
            f"in {r['seconds']:.1f} s, peak memory {r['rss_mb']:.0f} MB)   [{'ok' if ok else 'BELOW TARGET'}]"
        )
        print(f"{'':45}{per_cpu:>10,.0f} records per CPU-second")
        print(f"  {r['message'][:100]}")
    if args.baseline:
        (rate, per_cpu), (base_rate, base_per_cpu) = rates["this checkout"], rates["baseline"]
        print(
            f"  this checkout / baseline: {rate / base_rate:.3f} (records/s), "
            f"{per_cpu / base_per_cpu:.3f} (records per CPU-second)"
        )


def _verify_in_child(path: Path, baseline: str | None) -> dict[str, Any]:
    """Verify `path` in a fresh interpreter (its own rate and peak memory), importing consent_banner
    from `baseline` when given."""
    env = dict(os.environ)
    if baseline:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [baseline, env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, __file__, "--child", str(path)], capture_output=True, text=True, check=True, env=env
    )
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


if __name__ == "__main__":
    main()
