"""URLs in CSS (`<style>` blocks, `style` attributes): every `url(...)` and every string (`@import
"..."`, `image-set("...")`, `@font-face { src: url(...) }`) that names a denied host, after CSS
escapes are decoded (`\\2e`, `u\\72l(`), is replaced by ``about:invalid``, which fetches nothing.
The Content-Security-Policy refuses such a fetch too (`img-src`, `font-src`, `style-src`); this
keeps the request from being made at all.

`rewrite_css(text, denied, final)` reads the text one token at a time; with `final=False` it stops
before a token that may go on in the next piece and says how much it consumed. `split_imports`
takes the `@import` rules a stylesheet starts with out of it (for the held copy of a `<style>`,
`rawtext.py`: the browser's preload scanner fetches an `@import` even in a `<style>` that does not
apply).
"""

from __future__ import annotations

import re
from collections.abc import Callable

INERT = "about:invalid"

# What cannot name a host, skipped in one go: other characters, identifiers that are not a function
# name, strings without ":", "/" or "\" (no URL of a host can do without them), finished comments;
# never what ends the text (it may go on in the next piece).
_SKIP = (
    r"""(?:[^"'/\\\w-]++|[-\w]++(?![-\w\\(]|\Z)|"[^"\\\n:/]*+"|'[^'\\\n:/]*+'"""
    r"""|/\*(?:[^*]++|\*(?!/))*+\*/|/(?![*]|\Z))*+"""
)
# Then one token that may: a string, a function name (escapes included: `u\72l(`), an unfinished
# comment, a lone backslash or a slash that ends the text. Possessive throughout: linear time.
_TOKEN = re.compile(
    _SKIP
    + r"""(?P<t>"(?:[^"\\\n]++|\\.)*+"?
    |'(?:[^'\\\n]++|\\.)*+'?
    |((?:[-\w]|\\[0-9a-fA-F]{1,6}+[ \t\n\r\f]?|\\[^\n0-9a-fA-F])++)(\()?
    |/\*.*
    |[/\\])""",
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
    match = _TOKEN.match
    while pos < n:
        m = match(text, pos)
        if m is None:
            break  # nothing but what cannot name a host, to the end
        start, end = m.span("t")
        first = text[start]
        if first in "\"'":
            closed = end - start > 1 and text[end - 1] == first
            if not final and not closed and text[end : end + 1] != "\n":  # may go on
                return "".join(out) + text[last:start], start
            if denied(unescape(text[start + 1 : end - 1 if closed else end])):
                out.append(text[last:start] + first + INERT + first)
                last = end
        elif m.group(3) is not None and unescape(m.group(2)).lower() == "url":
            u = _URL_TOKEN.match(text, end)
            assert u is not None  # every part of it is optional
            if not final and (u.end(1) == n or (u.end() == n and not u.group(2))):
                return "".join(out) + text[last:start], start
            if u.group(1) and denied(unescape(u.group(1)).rstrip(" \t\n\r\f")):
                out.append(text[last : u.start(1)] + INERT)
                last = u.end(1)
            end = max(u.end(), end)
        elif end == n and not final:  # a name, an escape or an unfinished comment at the end
            return "".join(out) + text[last:start], start
        pos = end
    out.append(text[last:])
    return "".join(out), n


# Between the rules a stylesheet starts with: blanks, comments, the CDO/CDC of old pages.
_BETWEEN = re.compile(r"(?:[ \t\n\r\f]++|/\*(?:[^*]++|\*(?!/))*+\*/|<!--|-->)*+")
_QUOTED = r"""(?:"((?:[^"\\\n]++|\\.)*+)"|'((?:[^'\\\n]++|\\.)*+)')"""
# A plain @import: a string or url(), then ";" (a media list, layer() or supports() makes it another).
_IMPORT = re.compile(
    r"@import[ \t\n\r\f]*+(?:"
    + _QUOTED
    + r"|url\([ \t\n\r\f]*+(?:"
    + _QUOTED
    + r"""|((?:[^)\\"' \t\n\r\f]++|\\.)*+))[ \t\n\r\f]*+\))[ \t\n\r\f]*+;""",
    re.I | re.S,
)
_STATEMENT = re.compile(r"@(?:charset|layer)[ \t\n\r\f][^;{}]*+;", re.I)  # may come before them
_ANY_IMPORT = re.compile(r"@import", re.I)


def split_imports(text: str) -> tuple[list[str], str] | None:
    """The URLs of the plain `@import` rules `text` starts with, and `text` without them; None when
    an @import in any other form (escaped, conditional, later, in a comment or string) is left."""
    urls: list[str] = []
    kept: list[str] = []
    pos = 0
    while True:
        between = _BETWEEN.match(text, pos)
        assert between is not None  # every part of it is optional
        kept.append(text[pos : between.end()])
        pos = between.end()
        found = _IMPORT.match(text, pos)
        if found is not None:
            urls.append(unescape(next(g for g in found.groups() if g is not None)))
        else:
            found = _STATEMENT.match(text, pos)
            if found is None:
                break
            kept.append(found.group())
        pos = found.end()
    rest = "".join(kept) + text[pos:]
    return None if _ANY_IMPORT.search(unescape(rest)) else (urls, rest)
