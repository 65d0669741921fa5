"""Size of what a visitor downloads: consent.js + consent.css, gzipped, against other consent managers.

    .venv/bin/python bench/bench_size.py

The anchors are the published gzipped sizes of each project's JS and CSS (vanilla-cookieconsent 3.1,
klaro 0.7, tarteaucitron); ours is measured here from the files that are served: those built by
`./run build` (static/js/). The readable sources (static/src/) are shown beside them, for scale.
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from consent_banner.banner import static_dir  # noqa: E402

BUDGET = 4 * 1024  # bytes: everything our code loads into a page before a decision
SOURCES = Path(__file__).resolve().parent.parent / "static" / "src"
ANCHORS = {  # bytes, gzipped JS + CSS
    "vanilla-cookieconsent 3.1": 15.5 * 1024,
    "tarteaucitron": 60 * 1024,
    "klaro 0.7": 69 * 1024,
}


def measure(directory: Path) -> dict[str, tuple[int, int]]:
    """{file name: (raw bytes, gzipped bytes)} for the script and stylesheet in a directory."""
    out = {}
    for name in ("consent.js", "consent.css"):
        data = (directory / name).read_bytes()
        out[name] = (len(data), len(gzip.compress(data, 9)))
    return out


def main() -> int:
    sizes = measure(static_dir())
    total = sum(gz for _, gz in sizes.values())
    print(f"{'file':<28}{'raw':>10}{'gzipped':>10}")
    for name, (raw, gz) in sizes.items():
        print(f"{name:<28}{raw:>10}{gz:>10}")
    if SOURCES.is_dir():
        for name, (raw, gz) in measure(SOURCES).items():
            print(f"{name + ' (source)':<28}{raw:>10}{gz:>10}")
    print(f"{'consent-banner (total)':<28}{'':>10}{total:>10}   budget {BUDGET} ({total / BUDGET:.0%})")
    for name, size in ANCHORS.items():
        print(f"{name:<28}{'':>10}{int(size):>10}   {size / total:.1f}x ours")
    return 0 if total <= BUDGET else 1


if __name__ == "__main__":
    sys.exit(main())
