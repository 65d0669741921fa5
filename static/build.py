"""Builds the shipped browser files (static/js/) from their readable sources (static/src/) with esbuild.

    ./run build            rebuild static/js/consent.js, static/js/consent.css and static/js/gpp.js
    ./run build --check    exit 1, saying how to rebuild, when a shipped file is not what its source builds to

esbuild is pinned in e2e/package.json (`npm ci` in e2e/ installs it). The built files are committed, so
the demo, the middleware and the wheel need no Node.js; `./run test` runs the check.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "static" / "src"
SHIPPED = ROOT / "static" / "js"
ESBUILD = ROOT / "e2e" / "node_modules" / ".bin" / "esbuild"
# gpp.js: window.__gpp, served only to visitors under the opt-out model (consent_banner/gpp.py).
FILES = ("consent.js", "consent.css", "gpp.js")
# ES2020: what the script promises browsers; esbuild fails on syntax it cannot lower to it.
OPTIONS = ("--minify", "--target=es2020", "--charset=utf8", "--legal-comments=none", "--log-level=warning")


def build(sources: Path, into: Path) -> None:
    if not ESBUILD.exists():
        sys.exit(f"{ESBUILD.relative_to(ROOT)} is missing: run `npm ci` in e2e/ (./run test does)")
    for name in FILES:
        subprocess.run([str(ESBUILD), str(sources / name), f"--outfile={into / name}", *OPTIONS], check=True)


def stale(sources: Path, shipped: Path) -> list[str]:
    """The shipped files that differ from what their sources build to now."""
    with tempfile.TemporaryDirectory() as tmp:
        build(sources, Path(tmp))
        fresh = {name: (Path(tmp) / name).read_bytes() for name in FILES}
    return [
        name
        for name in FILES
        if not (shipped / name).is_file() or (shipped / name).read_bytes() != fresh[name]
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description="Build static/js/ from static/src/ with esbuild.")
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    parser.add_argument("--sources", type=Path, default=SOURCES, help=argparse.SUPPRESS)
    parser.add_argument("--shipped", type=Path, default=SHIPPED, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.check:
        build(args.sources, args.shipped)
        return 0
    names = stale(args.sources, args.shipped)
    for name in names:
        print(
            f"{os.path.relpath(args.shipped / name)} is stale: it is not what "
            f"{os.path.relpath(args.sources / name)} builds to. "
            "Rebuild it with `./run build` and commit both.",
            file=sys.stderr,
        )
    return 1 if names else 0


if __name__ == "__main__":
    sys.exit(main())
