"""Benchmark of `consent-banner proxy`: the site through the proxy against the same site directly.

    .venv/bin/python bench/bench_proxy.py [--quick]

The upstream is a Starlette app under uvicorn (one worker) serving a small HTML page (about 2 KB,
one tracker), a 100 KB product page with five trackers (bench_gate's), the small page after 5 ms of
CPU (what a CMS spends rendering one: the proxy's cost against a site that does real work) and a
10 MB binary download.
wrk loads it directly, then through `ConsentMiddleware(ProxyApp(upstream))` under uvicorn (one
worker, as `consent-banner proxy` runs it), then through `ProxyApp` alone (the hop without the
gate: what the proxy costs apart from what the gate costs). Every run sends a real signed consent
cookie granting nothing, so the pages are rewritten and get the settings button, as a returning
visitor's. Server under test on one core, wrk (and in the proxied runs the upstream) on the other;
5 s runs after a 1 s warm-up, best of two. Printed: requests/s, p99, the ratio to direct (target
>= 0.5x on HTML), the proxy's CPU time per request; for the download also MB/s, and the proxy's peak
RSS growth while four clients download at once (target < 20 MB).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_gate import CONFIG, KEY, PAGE, cpu_seconds, free_port, wait_for_port, wrk
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from consent_banner import ConsentConfig, ConsentMiddleware
from consent_banner.proxy import ProxyApp

MB = 1024 * 1024
SMALL = (
    b'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Offices</title>'
    b'<script async src="https://stats.example.net/gtag/js?id=G-XXXX"></script></head><body>'
    + b"<p>Book a desk, a room or a whole floor, by the hour or the month.</p>\n" * 24
    + b"</body></html>\n"
)
BIG = bytes(range(256)) * (10 * MB // 256)
UPSTREAM = "BENCH_PROXY_UPSTREAM"
LOG_DIR = "BENCH_PROXY_LOG_DIR"


def _small(request: Any) -> Response:
    return Response(SMALL, media_type="text/html; charset=utf-8")


def _page(request: Any) -> Response:
    return Response(PAGE, media_type="text/html; charset=utf-8")


def _rendered(request: Any) -> Response:
    """The small page after 5 ms of CPU, as a CMS spends rendering one (PHP, WordPress, a template)."""
    end = time.thread_time() + 0.005
    while time.thread_time() < end:
        pass
    return Response(SMALL, media_type="text/html; charset=utf-8")


def _big(request: Any) -> Response:
    return Response(BIG, media_type="application/octet-stream")


upstream_app = Starlette(
    routes=[
        Route("/small", _small),
        Route("/page", _page),
        Route("/rendered", _rendered),
        Route("/big", _big),
    ]
)


def proxy_app() -> ConsentMiddleware:
    """`uvicorn --factory bench_proxy:proxy_app`: what `consent-banner proxy` serves."""
    config = ConsentConfig.from_dict(
        {**CONFIG.model_dump(), "log": f"sqlite:///{os.environ[LOG_DIR]}/log.db"}
    )
    return ConsentMiddleware(ProxyApp(os.environ[UPSTREAM]), config=config, secret_keys=[KEY])


def bare_proxy_app() -> ProxyApp:
    """The hop alone, no gate."""
    return ProxyApp(os.environ[UPSTREAM])


def serve(target: str, cpu: str, env: dict[str, str], factory: bool) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    cmd = ["taskset", "-c", cpu, sys.executable, "-m", "uvicorn", target, *(["--factory"] if factory else [])]
    cmd += ["--app-dir", str(Path(__file__).parent), "--host", "127.0.0.1", "--port", str(port)]
    cmd += [
        "--workers",
        "1",
        "--log-level",
        "warning",
        "--no-access-log",
        "--no-server-header",
        "--no-date-header",
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **env}
    )
    try:
        wait_for_port(port)
    except RuntimeError:
        proc.kill()
        raise
    return proc, port


def rss_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


def reset_peak(pid: int) -> int:
    """Resets the process's peak RSS (VmHWM) to its RSS now, where Linux allows it (clear_refs 5), and
    returns that RSS in KB: the peak after a run minus this is what the run added."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return rss_kb(pid, "VmHWM")  # no reset: the growth is measured from the peak so far
    return rss_kb(pid, "VmRSS")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 s runs (smoke test of the benchmark)")
    args = parser.parse_args()
    seconds = 1 if args.quick else 5
    if not shutil.which("wrk") or not shutil.which("taskset"):
        sys.exit("bench_proxy needs wrk and taskset (apt-get install wrk util-linux)")
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        sys.exit("bench_proxy needs two cores to pin the server under test and the load apart")
    near, far = str(cpus[0]), str(cpus[1])
    tmp = tempfile.mkdtemp(prefix="bench-proxy-")
    print(
        f"consent-banner proxy vs direct (server under test on cpu {near}; wrk -t1 and the upstream on cpu "
        f"{far}; {seconds} s runs, best of two; consent cookie granting nothing sent)"
    )
    rows: dict[str, dict[str, tuple[float, float, str, float]]] = {}
    mb_s: dict[str, float] = {}
    growth_kb = base_kb = 0
    for label in ("direct", "proxy", "hop only", "direct", "proxy", "hop only"):
        upstream, up_port = serve("bench_proxy:upstream_app", near if label == "direct" else far, {}, False)
        proc = None
        try:
            port, pid = up_port, upstream.pid
            if label != "direct":
                env = {UPSTREAM: f"http://127.0.0.1:{up_port}", LOG_DIR: tmp}
                target = "bench_proxy:proxy_app" if label == "proxy" else "bench_proxy:bare_proxy_app"
                proc, port = serve(target, near, env, True)
                pid = proc.pid
            for path, connections in (("/small", 32), ("/page", 32), ("/rendered", 32)):
                wrk(port, path, 1, far, connections, pid)  # warm-up
                result = wrk(port, path, seconds, far, connections, pid)
                best = rows.setdefault(label, {}).get(path)
                if best is None or result[0] > best[0]:
                    rows[label][path] = result
            before = reset_peak(pid)
            used = cpu_seconds(pid)
            rps, p99, err, _ = wrk(port, "/big", seconds, far, 4, pid)
            if label == "proxy":
                growth_kb = max(growth_kb, rss_kb(pid, "VmHWM") - before)
                base_kb = before
            mb_s[label] = max(mb_s.get(label, 0.0), rps * len(BIG) / MB)
            rows[label]["/big"] = max(rows[label].get("/big", (0.0, 0.0, "", 0.0)), (rps, p99, err, used))
        finally:
            for p in (proc, upstream):
                if p is not None:
                    p.terminate()
                    p.wait(timeout=10)
    pages = (("/small", "2 KB page"), ("/page", "100 KB page"), ("/rendered", "2 KB, 5 ms CPU"))
    for path, what in (*pages, ("/big", "10 MB download")):
        direct = rows["direct"][path][0]
        for label in ("direct", "proxy", "hop only"):
            rps, p99, err, cpu = rows[label][path]
            extra = f"{mb_s[label]:8.0f} MB/s" if path == "/big" else f"{cpu:.3f} ms CPU/request"
            ratio = f"{rps / direct:5.2f}x" if label != "direct" else "     "
            print(f"  {what:<15} {label:<8} {rps:>8,.0f} req/s {ratio}  p99 {p99:8.2f} ms  {extra}  {err}")
    print(
        f"  target: >= 0.50x direct on HTML (proxy, gate included); peak RSS growth of the proxy during the "
        f"download, 4 clients at once: {growth_kb:,} KB over {base_kb / 1024:.0f} MB (target < 20 MB)"
    )


if __name__ == "__main__":
    main()
