"""How the browser will decode a page, from its Content-Type and its first bytes.

The gate rewrites a page only in an encoding that is an ASCII superset it can read as the browser
does; in any other (UTF-16/32, ISO-2022-*, UTF-7, HZ, an EBCDIC label) the page passes unrewritten
with a policy that admits only what is granted. The order is the browser's: a byte order mark, then
the header's charset, then a <meta> charset in the first PEEK bytes or on through <head>, as
Chromium reads them.
"""

from __future__ import annotations

import codecs
import re

from ..memo import Memo

PEEK = 1024  # body bytes browsers prescan for a <meta> charset
MAX_HEAD = 64 * 1024  # body bytes held, at most, while a page whose header names no charset is in <head>
UNKNOWN = ""  # the header names no charset a browser knows: the body decides

# WHATWG labels of encodings that are not ASCII supersets (UTF-16, ISO-2022-JP, the "replacement"
# encoding for ISO-2022-KR/CN and HZ) that Python does not know by these names; UTF-7 and UTF-32 are
# no browser's, but a browser that ignores the label still may guess them.
_UNREADABLE_LABELS = frozenset(
    {"unicode", "unicodefeff", "unicodefffe", "csunicode", "iso-10646-ucs-2", "ucs-2", "replacement",
     "hz-gb-2312", "csiso2022kr", "csiso2022jp", "iso-2022-cn", "iso-2022-cn-ext"}
)
_UNREADABLE_CODECS = ("utf-16", "utf-32", "utf-7", "iso2022", "hz")
# Python codecs of the ASCII-compatible encodings browsers know. Any other codec Python finds for a
# label (EBCDIC, rot13, base64, "undefined"...) names nothing a browser decodes with: the label is
# ignored, as browsers ignore it, and never used to encode what the gate injects.
_BROWSER_CODECS = (
    "utf-8", "ascii", "iso8859", "cp125", "cp866", "cp874", "koi8", "mac-roman", "tis-620",
    "gbk", "gb2312", "gb18030", "big5", "euc_", "shift_jis", "cp932", "cp936", "cp949", "cp950",
)
# Every charset named in the held bytes (a <meta charset>, an http-equiv content, anywhere): one
# naming an unreadable encoding makes the page unreadable, whichever meta the browser picks.
_CHARSET_IN_BODY = re.compile(
    rb"charset[\t\n\f\r ]*=[\t\n\f\r ]*[\"']?[\t\n\f\r ]*([^\t\n\f\r \"';>/]+)", re.I
)
# Chromium keeps reading <meta> charsets past the first PEEK bytes while it is still in <head>.
_HEAD_END = re.compile(rb"<body|</head", re.I)
# An app sends few distinct types; the lookup costs a page 4 us.
_header_codecs: Memo[bytes, str | None] = Memo(64)


def label_codec(label: str) -> str | None:
    """The Python codec for a charset label: None when not ASCII-compatible, UNKNOWN when unknown."""
    label = label.strip().lower()
    if label in _UNREADABLE_LABELS:
        return None
    try:
        name = codecs.lookup(label).name
    except LookupError:
        return UNKNOWN
    if name.startswith(_UNREADABLE_CODECS):
        return None
    return name if name.startswith(_BROWSER_CODECS) and name != "utf-8-sig" else UNKNOWN


def header_codec(content_type: bytes) -> str | None:
    """The codec the Content-Type's charset names (see `label_codec`); UNKNOWN when it names none
    the browser knows, so that the body decides."""
    if content_type in _header_codecs:
        return _header_codecs[content_type]
    low = content_type.lower()
    i = low.find(b"charset=")
    if i < 0:
        found: str | None = UNKNOWN
    else:
        found = label_codec(low[i + 8 :].split(b";", 1)[0].strip(b" \t\"'").decode("latin-1"))
    return _header_codecs.put(content_type, found)


def enough(header: str | None, held: bytes, searched: int) -> bool:
    """Whether the held body start decides how the browser decodes the page (`searched`: bytes
    already searched for the end of <head>)."""
    if header != UNKNOWN:
        return len(held) >= 3  # only a byte order mark overrides the header
    if len(held) < PEEK:
        return False
    return len(held) >= MAX_HEAD or _HEAD_END.search(held, max(0, searched - 6)) is not None


def body_codec(header: str | None, head: bytes | None, *, complete: bool = True) -> str | None:
    """The codec the browser decodes a page with when it is an ASCII superset the gate can read,
    else None. `header` is `header_codec`'s, `head` the held body start (None: no body),
    `complete` whether it reaches past <head> or the end. The order is the browser's: a byte order
    mark, then the header's charset, then a <meta> charset in the head."""
    if head:
        if head[:3] == b"\xef\xbb\xbf":
            return "utf-8"
        if head[:2] in (b"\xfe\xff", b"\xff\xfe"):
            return None
    if header != UNKNOWN:
        return header
    if not head:
        return "utf-8"
    found = [label_codec(m.decode("latin-1")) for m in _CHARSET_IN_BODY.findall(head)]
    if None in found:
        return None
    declared = next((c for c in found if c), None)
    if declared is None and (b"\x1b" in head or not complete):
        # undeclared, with escape sequences (a browser may detect ISO-2022-JP), or a <head> longer
        # than MAX_HEAD, where a <meta> charset may still follow
        return None
    return declared or "utf-8"
