"""Instructions ConsentMiddleware adds to a JSON request, counted by callgrind (repeatable on a busy machine).

Run: .venv/bin/python bench/count_middleware.py [--requests 2000]
Needs valgrind. Each case runs in its own process under ``valgrind --tool=callgrind`` twice, with
`--requests` and twice as many requests; the difference of the two totals, divided by `--requests`,
is one request's instructions with the start-up and the warm-up cancelled out. Printed per case,
and as what it adds to the bare app (the JSON request with a valid consent cookie is the one issue 13
budgets at 2.5 us; a do-nothing pure-ASGI middleware is the floor any middleware pays).
`--one CASE N` is the driver each valgrind process runs: N requests of one case, nothing printed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from asgi_loop import make_scope, one_request  # noqa: E402
from bench_middleware import KEY, bare, bench_config  # noqa: E402

from consent_banner import ConsentMiddleware  # noqa: E402
from consent_banner.consent import Consent, new_consent_id  # noqa: E402

CASES = ("bare", "do-nothing", "gated", "gated-https")
WARMUP = 200


def _case(name: str) -> tuple[object, dict]:  # type: ignore[type-arg]
    """The app and the scope of one case, as bench_middleware times them."""
    if name == "bare":
        return bare(), make_scope("/")
    if name == "do-nothing":
        inner = bare()

        async def passing(scope, receive, send):  # type: ignore[no-untyped-def]
            await inner(scope, receive, send)

        return passing, make_scope("/")
    os.environ["CONSENT_SECRET_KEYS"] = KEY
    gated = ConsentMiddleware(bare(), config=bench_config(tempfile.mkdtemp()))
    value = gated.codec.encode(
        Consent(id=new_consent_id(), granted=frozenset({"analytics"}), revision="r1", source="banner")
    )
    if name == "gated":
        return gated, make_scope("/", [(b"cookie", f"consent={value}".encode())])
    return gated, {**make_scope("/", [(b"cookie", f"__Host-consent={value}".encode())]), "scheme": "https"}


def _drive(name: str, n: int) -> None:
    app, scope = _case(name)
    gc.disable()  # a collection falls in one run and not in the other: counts would differ by thousands

    async def run() -> None:
        for _ in range(WARMUP + n):
            status, _ = await one_request(app, scope)  # type: ignore[arg-type]
            assert status == 200, status

    asyncio.run(run())


def _instructions(name: str, n: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={tmp}/out",
                sys.executable,
                __file__,
                "--one",
                name,
                str(n),
            ],
            env={**os.environ, "PYTHONHASHSEED": "0"},  # the same dict layouts in every run
            capture_output=True,
            text=True,
            check=True,
        )
    found = re.search(r"Collected : (\d+)", out.stderr)
    assert found, out.stderr
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000, help="the difference between the two runs")
    parser.add_argument("--one", nargs=2, metavar=("CASE", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        _drive(args.one[0], int(args.one[1]))
        return
    n = args.requests
    per = {c: (_instructions(c, 2 * n) - _instructions(c, n)) / n for c in CASES}
    print(f"{'case':12} {'instructions/request':>21} {'added':>8}")
    for c in CASES:
        print(f"{c:12} {per[c]:21,.0f} {per[c] - per['bare']:8,.0f}")


if __name__ == "__main__":
    main()
