"""Which configured language a visitor gets: the one negotiation every visible text follows (R14).

The banner, the dialog, the placeholders of blocked embeds, the embedded banner (`?lang=`) and the
visitor's receipt all ask `Languages.pick(wanted, accept_language)`: the language the page (or the
query) asks for first, then the visitor's Accept-Language by weight, then the default (the first
configured). A tag counts when it names a configured language or shares its primary subtag with one
(`sv-SE` picks `sv`; `de` picks the first configured `de-…`), case-insensitively.

Both inputs come from the request, so the work is linear in them and bounded: Accept-Language is read
only up to MAX_ACCEPT_LANGUAGE characters and MAX_LANGUAGE_RANGES ranges, and what a pair of inputs
picked is remembered in a `Memo` bounded by the characters it holds.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .memo import Memo

# Accept-Language (RFC 9110 12.5.4): each part is matched on its own, whitespace already stripped,
# so no pattern ever sees more than one range or one weight and none can backtrack across them.
_LANGUAGE_RANGE = re.compile(r"[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*|\*")
_QVALUE = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")
MAX_ACCEPT_LANGUAGE = 1024  # characters of the header considered; real ones are under 200
MAX_LANGUAGE_RANGES = 32  # ranges considered, in the order sent
_PICKED_CHARS = 256 * 1024  # characters of inputs remembered with what they picked, at most


def parse_accept_language(header: str | None) -> list[str]:
    """Language tags of an Accept-Language header, best first (q=0 and malformed ranges dropped).

    Linear in the header and bounded: only the first MAX_ACCEPT_LANGUAGE characters and the first
    MAX_LANGUAGE_RANGES ranges count, and a range cut by the first limit is dropped, never misread.
    """
    if not header:
        return []
    parts = header[:MAX_ACCEPT_LANGUAGE].split(",", MAX_LANGUAGE_RANGES)
    if len(header) > MAX_ACCEPT_LANGUAGE and len(parts) <= MAX_LANGUAGE_RANGES:
        parts.pop()  # runs past the limit: its end was not read
    items = parts[:MAX_LANGUAGE_RANGES]
    ranked: list[tuple[float, int, str]] = []
    for i, item in enumerate(items):
        tag, *params = item.split(";")
        tag = tag.strip()
        if not _LANGUAGE_RANGE.fullmatch(tag):
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() != "q" or not _QVALUE.fullmatch(value.strip()):
                break
            q = float(value)
        else:
            if q > 0:
                ranked.append((-q, i, tag))
    return [tag for _, _, tag in sorted(ranked)]


def _weight(key: tuple[str | None, str | None], picked: str) -> int:
    return len(key[0] or "") + len(key[1] or "") + 64  # 64: the entry's own overhead, roughly


class Languages:
    """The configured languages (the first is the default) and the negotiation among them."""

    __slots__ = ("configured", "default", "_exact", "_primary", "_picked")

    def __init__(self, configured: Sequence[str]) -> None:
        if not configured:
            raise ValueError("name at least one language")
        self.configured = tuple(configured)
        self.default = self.configured[0]
        self._exact = {lang.lower(): lang for lang in self.configured}
        self._primary: dict[str, str] = {}
        for lang in self.configured:
            self._primary.setdefault(lang.split("-")[0].lower(), lang)
        self._picked: Memo[tuple[str | None, str | None], str] = Memo(_PICKED_CHARS, weigh=_weight)

    def pick(self, wanted: str | None, accept_language: str | None) -> str:
        """The configured language for `wanted` (a page's `lang`, a `?lang=`), else for the
        Accept-Language header, else the default."""
        key = (wanted, accept_language)
        found = self._picked.get(key)
        if found is None:
            found = self._picked.put(key, self._negotiate(wanted, accept_language))
        return found

    def match(self, tag: str) -> str | None:
        """The configured language a single tag names, exactly or by its primary subtag."""
        t = tag.lower()
        found = self._exact.get(t)
        if found is None:
            found = self._primary.get(t.split("-", 1)[0])
        return found

    def _negotiate(self, wanted: str | None, accept_language: str | None) -> str:
        if wanted and wanted.strip():
            found = self.match(wanted.strip())
            if found is not None:
                return found
        for tag in parse_accept_language(accept_language):
            found = self.match(tag)
            if found is not None:
                return found
        return self.default
