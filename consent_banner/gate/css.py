"""URLs in CSS (`<style>` blocks, `style` attributes): every `url(...)` and every string (`@import
"..."`, `image-set("...")`, `@font-face { src: url(...) }`) that names a denied host, after CSS
escapes are decoded (`\\2e`, `u\\72l(`), is replaced by ``about:invalid``, which fetches nothing.
The Content-Security-Policy refuses such a fetch too (`img-src`, `font-src`, `style-src`); this
keeps the request from being made at all.

`rewrite_css(text, denied, final)` works on text read as latin-1 (so any ASCII-compatible charset
keeps its bytes), one token at a time; with `final=False` it stops before a token that may go on in
the next piece and says how much it consumed.
"""

from __future__ import annotations

import re
from collections.abc import Callable

INERT = "about:invalid"

# One CSS token of interest per match; everything between matches is copied. Possessive: linear.
_TOKEN = re.compile(
    r"""/\*(?:[^*]++|\*(?!/))*+(?:\*/)?
    |"(?:[^"\\\n]++|\\.)*+"?
    |'(?:[^'\\\n]++|\\.)*+'?
    |((?:[-\w]|\\[0-9a-fA-F]{1,6}+[ \t\n\r\f]?|\\[^\n0-9a-fA-F])++)(\()?
    |\\""",
    re.X | re.S,
)
_URL_TOKEN = re.compile(r"[ \t\n\r\f]*+((?:[^)\\\"']++|\\.)*+)(\)?)", re.S)
_ESCAPE = re.compile(r"\\(?:([0-9a-fA-F]{1,6}+)[ \t\n\r\f]?|(\n)|(.))", re.S)


def _escape(m: re.Match[str]) -> str:
    if m.group(1) is not None:
        code = int(m.group(1), 16)
        return chr(code) if 0 < code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF else "\ufffd"
    return "" if m.group(2) is not None else m.group(3)


def unescape(text: str) -> str:
    """CSS escapes decoded (a backslash-newline, which continues a string, disappears)."""
    return _ESCAPE.sub(_escape, text) if "\\" in text else text


def rewrite_css(text: str, denied: Callable[[str], bool], *, final: bool = True) -> tuple[str, int]:
    """(the rewritten text up to where it stopped, how many characters of `text` that consumed)."""
    out: list[str] = []
    pos = last = 0
    n = len(text)
    search = _TOKEN.search
    while True:
        m = search(text, pos)
        if m is None:
            break
        start, end = m.span()
        if end == n and not final:  # may go on in the next piece
            return "".join(out) + text[last:start], start
        first = text[start]
        if first in "\"'":
            body = text[start + 1 : end - 1 if end - start > 1 and text[end - 1] == first else end]
            if denied(unescape(body)):
                out.append(text[last:start] + first + INERT + first)
                last = end
            pos = end
            continue
        if m.group(2) is not None and unescape(m.group(1)).lower() == "url":
            u = _URL_TOKEN.match(text, end)
            assert u is not None  # every part of it is optional
            if u.end(1) == n and not final:
                return "".join(out) + text[last:start], start
            if u.group(1) and denied(unescape(u.group(1)).rstrip(" \t\n\r\f")):
                out.append(text[last : u.start(1)] + INERT)
                last = u.end(1)
            pos = max(u.end(), end)
            continue
        pos = end
    out.append(text[last:])
    return "".join(out), n
