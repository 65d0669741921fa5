"""Hostile request data vs ordinary request data, measured in the same run (issue 12, item 2).

Run: .venv/bin/python bench/bench_parsers.py [--rounds 5]

1. Each parser that reads request data (Accept-Language, the User-Agent summary of the log, CSP
   reports), fed an ordinary input and the worst shapes we know of at the size a server lets
   through (64 KB headers, a 64 KB report body): time per call and the ratio to the ordinary one.
2. A whole HTML page through ConsentMiddleware (the banner picks its language from the header),
   with an ordinary Accept-Language and with each hostile one: requests/s and the ratio.

Target: a hostile page request at least 0.9x the ordinary one, and no parser over 50x its
ordinary input (before the fix, a 64 KB Accept-Language took 28 s: about 10^7 times a page).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).parent))
from asgi_loop import make_scope, requests_per_second  # noqa: E402

from consent_banner import ConsentConfig, ConsentMiddleware  # noqa: E402
from consent_banner.gate.csp import parse_reports  # noqa: E402
from consent_banner.language import parse_accept_language  # noqa: E402
from consent_banner.log import browser_family  # noqa: E402

KEY = "bench-key-0123456789-0123456789-0123456789"
BIG = 64 * 1024  # bytes: what a server configured for big headers lets through

LANGUAGE = "sv-SE,sv;q=0.9,en-US;q=0.8,en;q=0.7"
HOSTILE_LANGUAGES = {
    "spaces in a range": "sv-SE," + " " * BIG + "x",
    "spaces after a weight": "sv,en;q=0.1" + " " * BIG + "x",
    "endless subtags": "sv,de" + "-abc" * (BIG // 4),
    "endless weights": "sv" + ";q=1" * (BIG // 4),
    "commas": "sv" + "," * BIG,
}
AGENT = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.1 Safari/605.1.15"
)
HOSTILE_AGENTS = {
    "Version/ repeated": "Version/1 " * (BIG // 10),
    "AppleWebKit/ repeated": "AppleWebKit/ " * (BIG // 13),
    "no word boundary": "a" * BIG,
}
REPORT = json.dumps(
    {
        "csp-report": {
            "document-uri": "https://shop.example/cart?x=1",
            "blocked-uri": "https://ads.example.com/pixel.gif",
            "effective-directive": "img-src",
        }
    }
).encode()
VIOLATION = {"type": "csp-violation", "body": {"documentURL": "/", "blockedURL": "https://" + "x" * 3000}}
HOSTILE_REPORTS = {
    "long directive": json.dumps(
        {"csp-report": {"document-uri": "/", "blocked-uri": "https://a.b", "effective-directive": "a" * BIG}}
    ).encode()[:BIG],
    "long URLs": json.dumps(
        {"csp-report": {"document-uri": "/" + "a" * 4000, "blocked-uri": "https://" + "b." * 2000 + "c"}}
    ).encode(),
    "a batch of 20": json.dumps([VIOLATION] * 20).encode(),
}


def per_call(fn: Callable[[], object], *, seconds: float = 0.2) -> float:
    """Seconds per call over about `seconds`."""
    n, start = 0, time.perf_counter()
    while True:
        for _ in range(10):
            fn()
        n += 10
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return elapsed / n


def parsers(rounds: int) -> list[tuple[str, float, float]]:
    cases: list[tuple[str, Callable[[], object], Callable[[], object]]] = []
    normal_lang = lambda: parse_accept_language(LANGUAGE)  # noqa: E731
    for name, header in HOSTILE_LANGUAGES.items():
        cases.append((f"Accept-Language: {name}", normal_lang, lambda h=header: parse_accept_language(h)))
    normal_agent = lambda: browser_family(AGENT)  # noqa: E731
    for name, agent in HOSTILE_AGENTS.items():
        cases.append((f"User-Agent: {name}", normal_agent, lambda a=agent: browser_family(a)))
    normal_report = lambda: parse_reports(REPORT, "application/csp-report")  # noqa: E731
    for name, body in HOSTILE_REPORTS.items():
        ctype = "application/reports+json" if body.startswith(b"[") else "application/csp-report"
        cases.append((f"CSP report: {name}", normal_report, lambda b=body, t=ctype: parse_reports(b, t)))
    results = []
    for name, normal, hostile in cases:
        # Interleaved, best of each: a busy machine slows some rounds, never speeds one up.
        base = worst = float("inf")
        for _ in range(rounds):
            base = min(base, per_call(normal))
            worst = min(worst, per_call(hostile))
        results.append((name, base, worst))
    return results


async def page(request: Request) -> HTMLResponse:
    return HTMLResponse("<!doctype html><html><head><title>t</title></head><body><p>hej</p></body></html>")


def pages(rounds: int, seconds: float) -> list[tuple[str, float]]:
    tmp = tempfile.mkdtemp()
    config = ConsentConfig(
        policy_revision="r1",
        controller="Bench AB",
        privacy_policy_url="/privacy",
        languages=("en", "sv"),
        log=f"sqlite:///{tmp}/bench.db",
        categories={"necessary": {"label": "Necessary"}, "analytics": {"label": "Analytics"}},
    )
    os.environ["CONSENT_SECRET_KEYS"] = KEY
    app = ConsentMiddleware(Starlette(routes=[Route("/", page)]), config=config)
    # The ordinary header again last: how far apart two identical cases land is the noise.
    cases = [("ordinary Accept-Language", LANGUAGE), *HOSTILE_LANGUAGES.items(), ("ordinary again", LANGUAGE)]
    best = [0.0] * len(cases)
    for _ in range(rounds):
        for i, (_name, header) in enumerate(cases):
            scope = make_scope("/", [(b"accept-language", header.encode())])
            best[i] = max(best[i], requests_per_second(app, scope, seconds=seconds, warmup=50))
    return [(name, rps) for (name, _h), rps in zip(cases, best, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the best of each counts")
    parser.add_argument("--seconds", type=float, default=0.5, help="per page case and round")
    args = parser.parse_args()

    print(f"{'parser, hostile input':40} {'ordinary':>11} {'hostile':>11} {'ratio':>8}")
    for name, base, worst in parsers(args.rounds):
        print(f"{name:40} {base * 1e6:9.2f}us {worst * 1e6:9.2f}us {worst / base:7.1f}x")
    print()
    results = pages(args.rounds, args.seconds)
    base_rps = results[0][1]
    print(f"{'HTML page, Accept-Language':40} {'req/s':>11} {'ratio':>8}")
    for name, rps in results:
        print(f"{name:40} {rps:11.0f} {rps / base_rps:7.2f}x")


if __name__ == "__main__":
    main()
