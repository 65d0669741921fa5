"""Benchmark of the response gate: what enforcing consent on responses costs per request.

    .venv/bin/python bench/bench_gate.py [--quick] [--no-http] [--only rewriter|process|http]

In process (a direct ASGI call loop, no client or transport in the way), requests/s of:
  - the bare app on a JSON response;
  - the gated app on the same JSON response (consent cookie decoded on every request);
  - the gated app on a 100 KB HTML page with five trackers to rewrite (plus injection), against
    the same page passed through untouched (rewrite_html = false, no injection), rewritten with
    nothing injected (what the banner costs is the difference), and the page with a value that
    differs on every response near its top (a form token: what the rewriter remembers of a page
    served again helps less);
with the ratios and the time added per response. Rates here are per second of the process's CPU
time, not of the wall clock, which other work on a busy machine stretches.

Over HTTP: uvicorn with one worker (bare app, then gated app) loaded by wrk on loopback, server
and load generator pinned to different cores with taskset, 5 s runs; requests/s, their ratio and
the p99 latency of each, for the JSON response, the page and the page with a token.

The gated app is the bare app under `ConsentMiddleware`, sent a real signed consent cookie (which
grants nothing, so every tracker on the page is rewritten); the rewritten page also gets the real
banner markup injected.

The HTML rewriter alone (`HtmlRewriter`, fed 4 KB chunks as a streaming app sends them): MB/s on
the product page (the baseline) and on hostile inputs built to make a scanner rescan or work per
byte (an unfinished `<script ` tag, a denied host in text every 20 bytes, unfinished quotes and
comments, `<` runs, one over-long tag, CSS made of tokens, SVG nesting, a tracker tag every 30
bytes, the same or each one different, held input in 64-byte chunks), each with its cost per MB as
a multiple of the baseline's (target: within 3x).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from asgi_loop import best_of_rounds
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from consent_banner import ConsentMiddleware
from consent_banner.config import ConsentConfig
from consent_banner.consent import Consent, ConsentCodec
from consent_banner.gate import ResponseGate
from consent_banner.gate.html import HtmlRewriter

KEY = "bench-only-signing-key-0123456789abcdef"  # not a secret: signs the benchmark's own cookie

CONFIG = ConsentConfig.from_dict(
    {
        "policy_revision": "2026-11-01",
        "controller": "Bench AB",
        "privacy_policy_url": "/privacy",
        "categories": {
            "necessary": {"label": "Necessary"},
            "analytics": {"label": "Statistics"},
            "marketing": {"label": "Marketing"},
            "media": {"label": "Media"},
        },
        "services": [
            {
                "name": "site",
                "category": "necessary",
                "origins": ["https://cdn.shop.example"],
                "cookies": [{"name": "sessionid"}],
            },
            {
                "name": "stats",
                "category": "analytics",
                "origins": ["https://stats.example.net"],
                "cookies": [{"name": "_ga*", "domain": ".shop.example"}],
            },
            {
                "name": "ads",
                "category": "marketing",
                "cookies": [{"name": "_fbp"}],
                "origins": ["https://ads.example.org", "https://*.adnet.example"],
            },
            {"name": "video", "category": "media", "origins": ["https://video.example.tv"]},
        ],
    }
)

TRACKERS = [
    '<script async src="https://stats.example.net/gtag/js?id=G-XXXX"></script>',
    '<script src="https://ads.example.org/fbevents.js"></script>',
    '<iframe src="https://video.example.tv/embed/abc" width="560" height="315" allowfullscreen></iframe>',
    '<img height="1" width="1" style="display:none" src="https://px.adnet.example/tr?id=1&amp;ev=PageView"/>',
    '<script src="https://ads.example.org/pixel.js" defer></script>',
]
CARD = (
    '<article class="card product" data-id="{i}"><a class="card__link" href="/products/{i}">'
    '<img class="card__img" src="https://cdn.shop.example/img/{i}.webp" '
    'srcset="https://cdn.shop.example/img/{i}@2x.webp 2x" alt="Product {i}" width="320" height="240" '
    'loading="lazy"></a><div class="card__body">'
    '<h3 class="card__title"><a href="/products/{i}">Product number {i}</a></h3>'
    '<p class="card__text">A short description of product {i}, with <em>some</em> markup and a '
    '<a href="/category/{i}">link</a>.</p><span class="price">{i}9.00 SEK</span>'
    '<button type="button" class="btn" data-action="add" data-id="{i}">Add to cart</button>'
    "</div></article>\n"
)


def build_page(size: int = 100_000) -> bytes:
    """A 100 KB product listing with five trackers spread over head and body."""
    head = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Shop</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="stylesheet" href="/static/site.css"><style>.card{display:grid}</style>'
        + TRACKERS[0]
        + TRACKERS[1]
        + "<script>window.dataLayer = window.dataLayer || [];</script></head>"
        '<body><header><nav><a href="/">Home</a> <a href="/cart">Cart</a></nav></header><main>'
    )
    tail = (
        "</main>" + TRACKERS[3] + TRACKERS[4] + '<script src="/static/app.js" defer></script></body></html>\n'
    )
    cards, i = [], 0
    while len(head) + sum(map(len, cards)) + len(tail) + len(TRACKERS[2]) < size:
        cards.append(CARD.format(i=i))
        i += 1
    cards.insert(len(cards) // 2, TRACKERS[2])
    return (head + "".join(cards) + tail).encode()


PAGE = build_page()
JSON_BODY = {"items": [{"id": i, "name": f"Product {i}", "price": i * 10} for i in range(5)]}


async def json_endpoint(request: Any) -> Response:
    return JSONResponse(JSON_BODY)


async def page_endpoint(request: Any) -> Response:
    return Response(PAGE, media_type="text/html; charset=utf-8")


_TOKEN_AT = PAGE.index(b"<main>") + len(b"<main>")
_served = 0


async def token_page_endpoint(request: Any) -> Response:
    """The page with a value that differs on every response (a form token, say) near its top."""
    global _served
    _served += 1
    token = b'<form><input type="hidden" name="csrf" value="%032d"></form>' % _served
    return Response(PAGE[:_TOKEN_AT] + token + PAGE[_TOKEN_AT:], media_type="text/html; charset=utf-8")


def make_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/json", json_endpoint),
            Route("/page", page_endpoint),
            Route("/token-page", token_page_endpoint),
        ]
    )


def consent_cookie() -> str:
    """A real signed cookie granting analytics only (so marketing and media trackers are rewritten)."""
    codec = ConsentCodec(
        [KEY],
        revision=CONFIG.policy_revision,
        lifetime=CONFIG.cookie.lifetime_days * 86400,
        categories=CONFIG.categories,
    )
    return codec.encode(
        Consent(
            id="bench-consent-id-000001",
            granted=frozenset(),
            source="banner",
            revision=CONFIG.policy_revision,
        )
    )


COOKIE = consent_cookie()
bare_app = make_app()
gated_app = ConsentMiddleware(make_app(), config=CONFIG, secret_keys=[KEY])
# The same middleware with the HTML left alone: what rewriting and injection cost is the difference.
passthrough_app = ConsentMiddleware(
    make_app(),
    config=ConsentConfig.from_dict({**CONFIG.model_dump(), "rewrite_html": False, "inject": False}),
    secret_keys=[KEY],
)
# Rewritten but nothing injected: what the banner's markup costs is the difference with gated_app.
rewrite_app = ConsentMiddleware(
    make_app(),
    config=ConsentConfig.from_dict({**CONFIG.model_dump(), "inject": False}),
    secret_keys=[KEY],
)


# --- in process -------------------------------------------------------------------------------------


def scope_for(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"www.shop.example"),
            (b"accept", b"*/*"),
            # over https the consent cookie is __Host-consent: the plain name would be migrated
            # (re-issued and expired) on every request of a benchmark that keeps no cookies
            (b"cookie", f"sessionid=abc; __Host-consent={COOKIE}".encode()),
        ],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _round(app: Any, path: str, seconds: float) -> float:
    async def send(message: dict[str, Any]) -> None:
        pass

    n, cpu, deadline = 0, time.process_time(), time.perf_counter() + seconds
    while True:
        for _ in range(20):
            await app(scope_for(path), _receive, send)
        n += 20
        if time.perf_counter() >= deadline:
            return n / (time.process_time() - cpu)


async def body_size(app: Any, path: str) -> int:
    size = 0

    async def send(message: dict[str, Any]) -> None:
        nonlocal size
        if message["type"] == "http.response.body":
            size += len(message.get("body", b""))

    await app(scope_for(path), _receive, send)
    return size


async def compare(rows: list[tuple[Any, Any]], seconds: float, rounds: int = 5) -> list[float]:
    return await best_of_rounds(_round, rows, seconds, rounds)


async def in_process(seconds: float) -> None:
    print(
        f"In process (direct ASGI calls; best of 5 interleaved rounds, {seconds:.0f} s per row); "
        f"page = {len(PAGE)} bytes"
    )
    bare_json, gated_json = await compare([(bare_app, "/json"), (gated_app, "/json")], seconds)
    bare_page, passed, rewritten_only, rewritten, token = await compare(
        [
            (bare_app, "/page"),
            (passthrough_app, "/page"),
            (rewrite_app, "/page"),
            (gated_app, "/page"),
            (gated_app, "/token-page"),
        ],
        seconds,
    )
    rows = [
        ("bare app, JSON", bare_json, ""),
        ("gated app, JSON", gated_json, f"{gated_json / bare_json:.2f}x bare (target >= 0.80x)"),
        ("bare app, 100 KB page", bare_page, ""),
        ("gated, page passed untouched", passed, f"{passed / bare_page:.2f}x bare page"),
        ("gated, page rewritten, no banner", rewritten_only, f"{rewritten_only / passed:.2f}x untouched"),
        ("gated, page rewritten+injected", rewritten, f"{rewritten / passed:.2f}x untouched"),
        ("  the same, a token in each page", token, f"{token / passed:.2f}x untouched"),
    ]
    for name, rps, note in rows:
        print(f"  {name:<34}{rps:>10,.0f} req/s   {note}")
    added = (1 / rewritten - 1 / passed) * 1000
    banner = (1 / rewritten - 1 / rewritten_only) * 1000
    sizes = await body_size(passthrough_app, "/page"), await body_size(gated_app, "/page")
    print(
        f"  rewriting adds {added:.3f} ms per response (target < 1 ms), of which the banner "
        f"{banner:.3f} ms; body {sizes[0]} -> {sizes[1]} bytes"
    )
    print(
        f"  per request: bare JSON {1e6 / bare_json:.1f} us, gated JSON {1e6 / gated_json:.1f} us "
        f"(+{1e6 / gated_json - 1e6 / bare_json:.1f} us, cookie parse + decode + gate)"
    )


# --- the rewriter alone -----------------------------------------------------------------------------

HOSTILE = {
    "unfinished `<script ` tag, 250 KB": b"<script " * 32_000,
    "denied host in text every 20 B, 4 MB": b"ads.example.org xxx " * 200_000,
    "unfinished quoted value, 250 KB": b'<a title="' + b"<img src=x>" * 23_000,
    "unfinished comment of tags, 250 KB": b"<!--" + b"<p>x</p>" * 32_000,
    "`<` runs, 500 KB": b"<" * 500_000,
    "one 400 KB tag of attributes": b"<img " + b"a b " * 100_000 + b">",
    "one 400 KB tag of quoted values": b"<img " + b"a='b' " * 66_000 + b">",
    "`<style>` of one-byte tokens, 200 KB": b"<style>" + b"''" * 100_000,
    "nested `<svg>`, 250 KB": b"<svg>" * 50_000,
    "a denied tracker tag every 30 B, 1 MB": b'<img src=//px.adnet.example>\n' * 35_000,
    # each tag different, so none is rewritten from memory: the per-tag work itself
    "a different denied tag every 35 B, 1 MB": b"".join(
        b"<img src=//px.adnet.example/%05d>\n" % i for i in range(32_000)
    ),
}
# Held input (an open tag, CSS token, SVG <style> text or CDATA) fed in 64-byte chunks: read again only
# once it has doubled, never once per chunk.
TINY_CHUNKS = {
    "60 KB `<img alt=` in 64 B chunks": b'<img alt="' + b"a" * 60_000 + b'">',
    "60 KB CSS comment in 64 B chunks": b"<style>/*" + b"a" * 60_000 + b"*/</style>",
    "60 KB SVG `<style>` text in 64 B chunks": b"<svg><style>" + b"a" * 60_000 + b"</style></svg>",
    "60 KB SVG `<style>` CDATA in 64 B chunks": b"<svg><style><![CDATA[" + b"a" * 60_000 + b"]]></style>",
}


def rewrite_rate(data: bytes, seconds: float, chunk: int = 4096) -> float:
    """MB/s of one HtmlRewriter over `data` in chunks (best of a few runs within `seconds`)."""
    hosts = ResponseGate(CONFIG, own_cookie_names=frozenset({"consent"})).plan(
        Consent(id="bench", granted=frozenset(), revision=CONFIG.policy_revision, decided_at=1)
    ).hosts
    best, deadline = 0.0, time.perf_counter() + seconds
    while True:
        rw = HtmlRewriter(hosts, None, mark=lambda: "bench")
        start = time.process_time()
        for i in range(0, len(data), chunk):
            rw.feed(data[i : i + chunk])
        rw.finish()
        best = max(best, len(data) / 1e6 / max(time.process_time() - start, 1e-6))
        if time.perf_counter() >= deadline:
            return best


def rewriter(seconds: float) -> None:
    print("The rewriter alone (4 KB chunks unless said, best run); cost per MB relative to the product page:")
    base = rewrite_rate(PAGE * 10, seconds)
    print(f"  {'product page (baseline), 1 MB':<42}{base:8.1f} MB/s   1.00x")
    worst = 0.0
    cases = [(n, d, 4096) for n, d in HOSTILE.items()] + [(n, d, 64) for n, d in TINY_CHUNKS.items()]
    for name, data, chunk in cases:
        rate = rewrite_rate(data, seconds, chunk)
        worst = max(worst, base / rate)
        print(f"  {name:<42}{rate:8.1f} MB/s   {base / rate:.2f}x")
    print(f"  worst case: {worst:.2f}x the baseline's cost per MB (target <= 3x)")


# --- over HTTP ----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"uvicorn did not start on port {port}")


_P99 = re.compile(r"^\s*99%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_SERVED = re.compile(r"^\s*(\d+) requests in", re.M)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(
    port: int, path: str, seconds: int, cpu: str, connections: int, server: int
) -> tuple[float, float, str, float]:
    """requests/s, p99 in ms, wrk's error line (if any), and the server's CPU time per request in ms
    (which a busy machine disturbs far less than requests/s: a run is compared on both)."""
    cmd = [
        "taskset",
        "-c",
        cpu,
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "-H",
        f"Cookie: sessionid=abc; consent={COOKIE}",
        f"http://127.0.0.1:{port}{path}",
    ]
    used = cpu_seconds(server)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=seconds + 30).stdout
    used = cpu_seconds(server) - used
    rps = float(_RPS.search(out).group(1))  # type: ignore[union-attr]
    value, unit = _P99.search(out).groups()  # type: ignore[union-attr]
    p99 = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    errors = next((ln.strip() for ln in out.splitlines() if "Non-2xx" in ln or "Socket errors" in ln), "")
    served = int(_SERVED.search(out).group(1))  # type: ignore[union-attr]
    return rps, p99, errors, used * 1000 / max(served, 1)


def serve(app_name: str, cpu: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    cmd = [
        "taskset",
        "-c",
        cpu,
        sys.executable,
        "-m",
        "uvicorn",
        f"bench_gate:{app_name}",
        "--app-dir",
        str(Path(__file__).parent),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port)
    except RuntimeError:
        proc.kill()
        raise
    return proc, port


def over_http(seconds: int) -> None:
    if not shutil.which("wrk") or not shutil.which("taskset"):
        print("Over HTTP: skipped (wrk or taskset missing)")
        return
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        print("Over HTTP: skipped (needs two cores to pin server and load apart)")
        return
    server_cpu, load_cpu = str(cpus[0]), str(cpus[1])
    print(
        f"Over HTTP (uvicorn 1 worker on cpu {server_cpu}, wrk -t1 -c32 on cpu {load_cpu}, "
        f"{seconds} s runs, best of two, valid consent cookie sent; the server's CPU time per request "
        "is measured too: on a busy machine its ratio is the one to compare)"
    )
    for path in ("/json", "/page", "/token-page"):
        results: dict[str, list[tuple[float, float, str, float]]] = {"bare_app": [], "gated_app": []}
        for app_name in ("bare_app", "gated_app", "bare_app", "gated_app"):  # interleaved, best of two
            proc, port = serve(app_name, server_cpu)
            try:
                wrk(port, path, 1, load_cpu, 32, proc.pid)  # warm-up
                results[app_name].append(wrk(port, path, seconds, load_cpu, 32, proc.pid))
            finally:
                proc.terminate()
                proc.wait(timeout=10)
        bare, gated = (max(results[a]) for a in ("bare_app", "gated_app"))
        b_cpu, g_cpu = (min(r[3] for r in results[a]) for a in ("bare_app", "gated_app"))
        for name, (rps, p99, err, _), cpu in (("bare ", bare, b_cpu), ("gated", gated, g_cpu)):
            print(f"  {path:<11} {name} {rps:>9,.0f} req/s  p99 {p99:7.2f} ms  {cpu:.3f} ms CPU  {err}")
        target = "  (target >= 0.90x)" if path == "/json" else "  (target >= 0.60x)"
        print(
            f"  {path:<11} ratio {gated[0] / bare[0]:.2f}x{target}; "
            f"server CPU per request: {b_cpu / g_cpu:.2f}x (gated adds {g_cpu - b_cpu:.3f} ms)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs (smoke test of the benchmark)")
    parser.add_argument("--no-http", action="store_true", help="skip the uvicorn + wrk part")
    parser.add_argument("--only", choices=("rewriter", "process", "http"), help="run only this part")
    args = parser.parse_args()
    if args.only in (None, "rewriter"):
        rewriter(0.3 if args.quick else 1.5)
    if args.only in (None, "process"):
        asyncio.run(in_process(1.5 if args.quick else 6.0))
    if args.only == "http" or (args.only is None and not args.no_http):
        over_http(1 if args.quick else 5)


if __name__ == "__main__":
    main()
