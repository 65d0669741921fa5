"""Whole pages rewritten before, replayed: the same body in the same consent state is rewritten the
same way in every response, but for what the caller gives per response (the nonce that marks
neutralised tags, the snippets injected, the iframe placeholders).

`HtmlRewriter.rewrite(body)` on a fresh rewriter records, the second time, its output with holes where
those go: the rewriter runs as ever, with callables that return a hole (a secret drawn per process,
which no page can hold) instead of the nonce, the snippets and the placeholders, and note what they
were asked for (the page's language, which service's placeholder). Later responses of that body and
state fill the holes with this response's values, in the order and as escaped as the rewriter
would have, without reading the page again. A page with `srcdoc` bytes is never remembered (a
nested document's output is escaped into an attribute, holes with it), nor one over MAX_PAGE.
"""

from __future__ import annotations

import html
import re
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..memo import Memo

if TYPE_CHECKING:
    from .hosts import Blocked, HostRules
    from .inline import InlineRules

MAX_PAGE = 512 * 1024  # the largest body remembered, in bytes
MAX_PAGES = 4 * 1024 * 1024  # bytes of pages remembered, entries weighed by _weight (then all forgotten)
MAX_SEEN = 4096  # bodies seen once remembered, by hash
_ENTRY = 512  # bytes a page remembered costs beside its body, its rewrite and its parts
_PART = 48  # bytes a part of a template costs beside its bytes

_HOLE = "cbhole" + secrets.token_hex(16)  # ASCII: the same bytes in every charset the rewriter reads
_HOLES = re.compile(re.escape(_HOLE.encode()) + rb"([mhb]|p[0-9]+)\.")

# (rules, inline script rules, body, charset, scripting, injects, has placeholders, marks) -> the
# rewrite, with holes
PageKey = tuple["HostRules | None", "InlineRules | None", bytes, str, bool, bool, bool, bool]


class Template:
    """A page's rewrite with holes: literal bytes at even indexes, a hole's code at odd ones."""

    __slots__ = ("parts", "lang", "placeholders", "size")

    def __init__(self, out: bytes, lang: str | None, placeholders: list[tuple[Blocked, str | None]]) -> None:
        self.parts = _HOLES.split(out)
        self.lang = lang  # what the snippets were asked for
        self.placeholders = placeholders  # what each placeholder was asked for, by number
        self.size = len(out)

    def fill(
        self,
        charset: str,
        inject: Callable[[str | None], tuple[str, str]] | None,
        placeholder: Callable[[Blocked, str | None], str] | None,
        mark: Callable[[], str] | None,
    ) -> bytes:
        parts = list(self.parts)
        nonce: bytes | None = None
        snippets: tuple[bytes, bytes] | None = None
        for i in range(1, len(parts), 2):
            code = parts[i]
            if code == b"m":
                assert mark is not None
                if nonce is None:  # drawn once, escaped as HtmlRewriter._marked does
                    nonce = html.escape(mark()).encode()
                parts[i] = nonce
            elif code == b"h" or code == b"b":
                assert inject is not None
                if snippets is None:
                    head, body = inject(self.lang)
                    snippets = (
                        head.encode(charset, "xmlcharrefreplace"),
                        body.encode(charset, "xmlcharrefreplace"),
                    )
                parts[i] = snippets[code == b"b"]
            else:
                assert placeholder is not None
                blocked, lang = self.placeholders[int(code[1:])]
                parts[i] = placeholder(blocked, lang).encode(charset, "xmlcharrefreplace")
        return b"".join(parts)


class Recorder:
    """The callables a recording rewriter gets: each returns a hole and notes what it was asked."""

    def __init__(self) -> None:
        self.lang: str | None = None
        self.placeholders: list[tuple[Blocked, str | None]] = []

    def inject(self, lang: str | None) -> tuple[str, str]:
        self.lang = lang
        return f"{_HOLE}h.", f"{_HOLE}b."

    def placeholder(self, blocked: Blocked, lang: str | None) -> str:
        self.placeholders.append((blocked, lang))
        return f"{_HOLE}p{len(self.placeholders) - 1}."

    def mark(self) -> str:
        return f"{_HOLE}m."

    def template(self, out: bytes) -> Template:
        """The recorded rewrite `out` as a template."""
        return Template(out, self.lang, self.placeholders)


def replayable(body: bytes) -> bool:
    """Whether the rewrite of `body` may be recorded and replayed."""
    return len(body) <= MAX_PAGE and _HOLE.encode() not in body and b"srcdoc" not in body.lower()


def _weight(key: PageKey, found: Template) -> int:
    # Not its bytes alone: a page that reflects a query parameter makes small distinct bodies, each
    # entry costing its key, template and parts (tracemalloc: about 400 bytes, and 48 a part) too.
    return _ENTRY + len(key[2]) + found.size + _PART * len(found.parts)


NOT_REPLAYED = Template(b"", None, [])  # remembered for a body that is rewritten afresh every time
PAGES: Memo[PageKey, Template] = Memo(MAX_PAGES, _weight)
# The hashes of bodies seen once: a body is recorded the second time only, so that pages that differ
# in every response (a token in them) cost no recording and take no room in PAGES.
SEEN: Memo[int, bool] = Memo(MAX_SEEN)
