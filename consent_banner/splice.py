"""Render once, fill in per response: markup cut where its per-response values go.

A template whose output depends on a few values that change with every response (a token, an id)
and on much that does not is rendered once with a random marker for each such value, and cut at
the markers; each response then joins the fixed parts with its own values. The markers are random
(no configured text can hold one by chance) and made of letters and digits, which escaping leaves
as they are, so the cut text is exactly what the template would give, with the values escaped by
the caller as the template would have escaped them.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence


class Spliced:
    """A rendered text cut at its markers: the fixed parts, and between them which value goes there."""

    __slots__ = ("_pieces", "_slots")

    def __init__(self, pieces: list[str], slots: tuple[tuple[int, int], ...]) -> None:
        self._pieces = pieces
        self._slots = slots

    def fill(self, values: Sequence[str]) -> str:
        """The text with `values[slot]` at each marker (escaped by the caller as the template would)."""
        out = self._pieces.copy()
        for i, slot in self._slots:
            out[i] = values[slot]
        return "".join(out)


class Markers:
    """`count` random markers, `markers[slot]` standing for the value of that slot in a render."""

    __slots__ = ("markers", "_slot_of", "_split")

    def __init__(self, count: int) -> None:
        tag = secrets.token_hex(8)
        self.markers = tuple(f"cb{tag}v{slot}" for slot in range(count))
        self._slot_of = {m: slot for slot, m in enumerate(self.markers)}
        self._split = re.compile("(" + "|".join(self.markers) + ")")

    def cut(self, rendered: str) -> Spliced:
        pieces = self._split.split(rendered)  # every other piece is a marker: where its value goes
        return Spliced(pieces, tuple((i, self._slot_of[pieces[i]]) for i in range(1, len(pieces), 2)))
