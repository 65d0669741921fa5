"""Runs of markup remembered by content: how far the rewriter's skip goes in each.

A page served again, or another page of the same templates, is mostly the same bytes. Where the
rewriter would run its skip (SKIP_PLAIN: text and tags that fetch nothing from a denied host) over
HTML content, it first cuts the input into runs and looks each up here; only a run not seen before
(or one the skip stops in) is read by the regex. Keyed by the run's bytes themselves (never a
digest: a run crafted to collide would pass a tracker) and the denied hosts as written; shared by
all responses and consent states of the process, bounded in bytes.
"""

from __future__ import annotations

from ..memo import Memo
from .markup import MARKER, SKIP_PLAIN

RUN = 4096  # the least bytes of markup in a run
MAX_RUNS = 1024 * 1024  # bytes of runs remembered (then all forgotten)
# (denied hosts as written, run) -> how far SKIP_PLAIN goes in the run (0: a run it may not pass).
RUNS: Memo[tuple[tuple[bytes, ...], bytes], int] = Memo(MAX_RUNS, lambda key, _: len(key[1]))


def known_runs(low: bytes, pos: int, needles: tuple[bytes, ...]) -> tuple[int, int]:
    """Where the skip from `pos` in HTML content stops, as far as runs of markup seen before tell:
    a page served again, or its template, is mostly the same runs, and a dict lookup costs a
    fraction of SKIP_PLAIN (which reads each byte of every tag) and of searching every run for each
    denied host and the marker. A run ends at a `<` after a newline (else any `<`) at least RUN
    bytes on, or at the end of the buffer, so that the runs after a part that differs per response
    are the same again. What SKIP_PLAIN does in a run depends on its bytes alone: it is bounded by
    the run's end, and by the first denied host as written or marker bytes in it, where the skip
    stops as it does without runs. Returns where the skip stops, and where the next run may be
    looked up: a newline a little further on (a page with many tags to read costs a lookup per
    RUN // 4 bytes at most, not one per tag)."""
    n = len(low)
    while True:
        cut = low.find(b"\n<", pos + RUN, pos + 4 * RUN) + 1
        if not cut:
            cut = low.find(b"<", pos + RUN)
            if cut < 0:
                if n - pos < RUN // 4:
                    return pos, n
                cut = n  # the rest of the buffer
        key = (needles, low[pos:cut])
        size = RUNS.get(key)
        if size is None:
            run = key[1]
            stop = min((at for at in map(run.find, (MARKER, *needles)) if at >= 0), default=len(run))
            size = RUNS.put(key, SKIP_PLAIN.match(low, pos, pos + stop).end() - pos)  # type: ignore[union-attr]
        pos += size
        if pos < cut or cut == n:
            return pos, (low.find(b"\n<", pos + RUN // 4, pos + RUN) + 1 or cut)
