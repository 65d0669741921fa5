"""Requests/s in-process: bare Starlette vs ConsentMiddleware vs SessionMiddleware (issue 2).

Run: .venv/bin/python bench/bench_middleware.py [--seconds 1] [--rounds 5]
Target: what ConsentMiddleware adds to a JSON request with a valid consent cookie, 1/gated - 1/bare
in the same run (the "added" column), at most 2.5 microseconds.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from starlette.applications import Starlette
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).parent))
from asgi_loop import make_scope, requests_per_second  # noqa: E402

from consent_banner import ConsentConfig, ConsentMiddleware  # noqa: E402
from consent_banner.consent import Consent, new_consent_id  # noqa: E402

KEY = "bench-key-0123456789-0123456789-0123456789"


async def endpoint(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


def bare() -> Starlette:
    return Starlette(routes=[Route("/", endpoint)])


def naive(app: Starlette) -> Starlette:
    """What a hand-rolled gate does: verify the signed cookie on every request, no cache."""
    serializer = URLSafeTimedSerializer(KEY, salt="naive", signer_kwargs={"digest_method": hashlib.sha256})

    async def middleware(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] == "http":
            cookie = dict(scope["headers"]).get(b"cookie", b"").decode()
            value = cookie.split("naive=", 1)[1] if "naive=" in cookie else ""
            try:
                scope.setdefault("state", {})["consent"] = serializer.loads(value, max_age=3600)
            except Exception:
                scope.setdefault("state", {})["consent"] = None
        await app(scope, receive, send)

    middleware.cookie = serializer.dumps({"c": ["analytics"]})  # type: ignore[attr-defined]
    return middleware  # type: ignore[return-value]


def bench_config(tmp: str) -> ConsentConfig:
    """One service in a category of three, its log in `tmp`: the configuration every case is timed with."""
    return ConsentConfig(
        policy_revision="r1",
        controller="Bench AB",
        privacy_policy_url="/privacy",
        log=f"sqlite:///{tmp}/bench.db",
        categories={
            "necessary": {"label": "Necessary"},
            "analytics": {"label": "Analytics"},
            "marketing": {"label": "Marketing"},
        },
        services=[
            {
                "name": "stats",
                "category": "analytics",
                "origins": ["https://stats.example.net"],
                "cookies": [{"name": "_st_id.*", "lifetime": "13 months"}],
            }
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=1.0, help="per case and round")
    parser.add_argument(
        "--rounds", type=int, default=5, help="interleaved rounds; the best of each case counts"
    )
    parser.add_argument(
        "--wall",
        action="store_true",
        help="time by the wall clock (default: this thread's CPU time, which a busy machine disturbs less)",
    )
    args = parser.parse_args()
    clock = time.perf_counter if args.wall else time.thread_time
    config = bench_config(tempfile.mkdtemp())
    os.environ["CONSENT_SECRET_KEYS"] = KEY
    gated = ConsentMiddleware(bare(), config=config)
    consent_cookie = gated.codec.encode(
        Consent(id=new_consent_id(), granted=frozenset({"analytics"}), revision="r1", source="banner")
    )
    session = SessionMiddleware(bare(), secret_key=KEY)
    session_cookie = TimestampSigner(KEY).sign(b"eyJ1c2VyIjogMX0=").decode()  # {"user": 1}
    naive_app = naive(bare())

    cookie = [(b"cookie", f"consent={consent_cookie}".encode())]
    host_cookie = [(b"cookie", f"__Host-consent={consent_cookie}".encode())]
    https = {"scheme": "https"}  # over https the consent cookie is __Host-consent: the production path
    cases = [
        ("bare Starlette", bare(), make_scope("/")),
        ("ConsentMiddleware, valid consent cookie", gated, make_scope("/", cookie)),
        ("ConsentMiddleware, valid __Host- cookie, https", gated, {**make_scope("/", host_cookie), **https}),
        ("ConsentMiddleware, no cookie", gated, make_scope("/")),
        (
            "SessionMiddleware, session cookie",
            session,
            make_scope("/", [(b"cookie", f"session={session_cookie}".encode())]),
        ),
        (
            "naive itsdangerous check per request",
            naive_app,
            make_scope("/", [(b"cookie", f"naive={naive_app.cookie}".encode())]),  # type: ignore[attr-defined]
        ),
    ]
    # Interleaved rounds, best of each: a busy machine slows some rounds, never speeds one up.
    best = [0.0] * len(cases)
    for _ in range(args.rounds):
        for i, (_name, app, scope) in enumerate(cases):
            best[i] = max(best[i], requests_per_second(app, scope, seconds=args.seconds, clock=clock))
    results = [(name, rps) for (name, _app, _scope), rps in zip(cases, best, strict=True)]
    base = results[0][1]
    print(f"{'case':45} {'req/s':>10} {'ratio':>7} {'added':>9}")
    for name, rps in results:
        # What the middleware costs per request, independent of how fast the bare app is.
        added = (1 / rps - 1 / base) * 1e6
        print(f"{name:45} {rps:10.0f} {rps / base:6.2f}x {added:6.2f} us")


if __name__ == "__main__":
    main()
