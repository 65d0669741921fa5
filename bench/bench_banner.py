"""Benchmark of the banner on the HTML hot path: what the gate adds to each HTML response.

    nice .venv/bin/python bench/bench_banner.py [--quick]

In process (direct ASGI calls, best of 5 interleaved rounds), on a small HTML page with nothing to
rewrite, so that what is measured is the per-response work of the gate itself (the form token, the
nonce, the Content-Security-Policy, the banner and dialog markup) rather than the rewriter's per-byte
work (`bench/bench_gate.py` measures that on a 100 KB page):
  - the bare app;
  - the gated app with the page left alone (rewrite_html = false, no injection);
  - the gated app injecting the banner, for an undecided visitor and for a decided one.
Printed: requests/s, and the milliseconds the gate adds per HTML response (target < 0.3 ms).
Then the banner's own render (head + body markup) per call, per state and language.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from asgi_loop import best_of_rounds  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.responses import Response  # noqa: E402
from starlette.routing import Route  # noqa: E402

from consent_banner import ConsentMiddleware  # noqa: E402
from consent_banner.banner import Banner  # noqa: E402
from consent_banner.config import ConsentConfig  # noqa: E402
from consent_banner.consent import UNDECIDED, Consent, ConsentCodec  # noqa: E402

KEY = "bench-only-signing-key-0123456789abcdef"  # not a secret: signs the benchmark's own cookie
TARGET_MS = 0.3

CONFIG = ConsentConfig.from_dict(
    {
        "policy_revision": "2026-11-01",
        "controller": "Bench AB",
        "privacy_policy_url": "/privacy",
        "languages": ["en", "sv"],
        "categories": {
            "necessary": {"label": "Necessary"},
            "analytics": {"label": {"en": "Statistics", "sv": "Statistik"}},
            "marketing": {"label": {"en": "Marketing", "sv": "Marknadsföring"}},
        },
        "services": [
            {"name": "site", "category": "necessary", "cookies": [{"name": "sessionid"}]},
            {
                "name": "stats",
                "category": "analytics",
                "origins": ["https://stats.example.net"],
                "cookies": [{"name": "_ga*", "lifetime": "13 months", "domain": ".shop.example"}],
            },
            {
                "name": "ads",
                "category": "marketing",
                "switch": True,
                "origins": ["https://ads.example.org"],
                "cookies": [{"name": "_fbp", "lifetime": "3 months"}],
            },
        ],
    }
)

PAGE = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Shop</title></head><body><main>'
    + "<p>A paragraph of an ordinary page, with <a href='/x'>a link</a>.</p>\n" * 25
    + "</main></body></html>\n"
).encode()


async def page(request: Any) -> Response:
    return Response(PAGE, media_type="text/html; charset=utf-8")


def make_app() -> Starlette:
    return Starlette(routes=[Route("/page", page)])


def cookie_for(granted: frozenset[str]) -> str:
    codec = ConsentCodec([KEY], revision=CONFIG.policy_revision, lifetime=3600, categories=CONFIG.categories)
    return codec.encode(
        Consent(
            id="bench-consent-id-000001", granted=granted, source="banner", revision=CONFIG.policy_revision
        )
    )


def scope(cookie: str | None) -> dict[str, Any]:
    headers = [
        (b"host", b"www.shop.example"),
        (b"accept", b"text/html"),
        (b"accept-language", b"sv,en;q=0.5"),
    ]
    # The form-token cookie is sent too, as by a returning visitor: no Set-Cookie each time.
    cookies = "__Host-consent_csrf=bench-form-token-value-0000"
    if cookie:
        cookies += f"; __Host-consent={cookie}"
    headers.append((b"cookie", cookies.encode()))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "https",
        "path": "/page",
        "raw_path": b"/page",
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: dict[str, Any]) -> None:
    pass


async def _round(app: Any, cookie: str | None, seconds: float) -> float:
    n, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(20):
            await app(scope(cookie), _receive, _send)
        n += 20
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


async def compare(rows: list[tuple[Any, Any]], seconds: float, rounds: int = 5) -> list[float]:
    return await best_of_rounds(_round, rows, seconds, rounds)


async def in_process(seconds: float) -> None:
    bare = make_app()
    gated = ConsentMiddleware(make_app(), config=CONFIG, secret_keys=[KEY])
    untouched = ConsentMiddleware(
        make_app(),
        config=ConsentConfig.from_dict({**CONFIG.model_dump(), "rewrite_html": False, "inject": False}),
        secret_keys=[KEY],
    )
    decided = cookie_for(frozenset({"analytics"}))
    b, u, g_undecided, g_decided = await compare(
        [(bare, None), (untouched, None), (gated, None), (gated, decided)], seconds
    )
    print(f"In process, a {len(PAGE)}-byte HTML page (best of 5 interleaved rounds, {seconds:.0f} s per row)")
    for name, rps in (
        ("bare app", b),
        ("gated, page left alone", u),
        ("gated, banner injected, undecided", g_undecided),
        ("gated, banner injected, decided", g_decided),
    ):
        print(f"  {name:<36}{rps:>10,.0f} req/s   {1000 / rps:.3f} ms")
    for name, rps in (("undecided", g_undecided), ("decided", g_decided)):
        added = (1 / rps - 1 / b) * 1000
        print(f"  the gate adds {added:.3f} ms per HTML response, {name} (target < {TARGET_MS} ms)")


def _per_call(seconds: float, call: Any) -> float:
    """Milliseconds per call, the best of 5 rounds (the machine may be busy)."""
    best = float("inf")
    for _ in range(5):
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 5:
            for _ in range(20):
                call()
            n += 20
        best = min(best, (time.perf_counter() - start) / n * 1000)
    return best


def render(seconds: float) -> None:
    banner = Banner(CONFIG, prefix="/_consent")
    undecided = UNDECIDED
    decided = Consent(
        id="x" * 30, granted=frozenset({"analytics"}), source="banner", revision="2026-11-01", decided_at=1
    )
    nonce, token = "bench-nonce-0123456789", "t" * 40
    print(
        "The banner's head + body markup alone, per call: remembered and spliced, against a fresh "
        "Jinja2 render of the same markup (what each HTML response did before), same run:"
    )
    for name, consent, language in (
        ("undecided, en", undecided, "en"),
        ("undecided, sv", undecided, "sv"),
        ("decided, sv", decided, "sv"),
    ):

        def spliced(consent: Consent = consent, language: str = language) -> None:
            banner.head_html(consent, nonce=nonce)
            banner.body_html(consent, language=language, nonce=nonce, csrf_token=token, return_to="/page")

        def fresh(consent: Consent = consent, language: str = language) -> None:
            banner.head_html(consent, nonce=nonce)
            banner._render(consent, language, token, "/page", "form-id-0123", banner._state(consent))

        now, before = _per_call(seconds, spliced), _per_call(seconds, fresh)
        print(f"  {name:<16}{now:.4f} ms   fresh render {before:.4f} ms   {before / now:.0f}x less")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs (smoke test of the benchmark)")
    args = parser.parse_args()
    asyncio.run(in_process(1.0 if args.quick else 5.0))
    render(0.2 if args.quick else 1.0)


if __name__ == "__main__":
    main()
