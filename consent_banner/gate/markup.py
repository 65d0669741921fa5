"""The HTML5 tokenizer's tables, as the rewriter (html.py) reads markup with them: the states that
decide where a tag or attribute is, the elements that switch the tokenizer or fetch, SVG/MathML
integration points, and the tag and attribute patterns (possessive, on lower-cased bytes: linear
time on any input). Pure data and pure functions; no state.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from .urls import attr_text

MAX_TAG = 64 * 1024  # a tag, attribute, or CSS token held whole at most this long (then decided as it stands)

# --- the tokenizer's tables ------------------------------------------------------------------------
# Every pattern runs on the lower-cased copy of the buffer (same offsets, ASCII-only lowering), so
# none needs re.I. All are possessive or bounded: linear time on any input, no backtracking.

# After a tag name: attributes as the HTML5 tokenizer reads them (a name may start with `=` and hold
# quotes; a quote opens a value only right after `=`), up to the `>` that ends the tag.
REST = (
    rb"(?:[\t\n\f\r /]++|[^\t\n\f\r />][^\t\n\f\r />=]*+"
    rb"""(?:[\t\n\f\r ]*+=[\t\n\f\r ]*+(?:"[^"]*+"|'[^']*+'|(?!["'])[^\t\n\f\r >]*+)"""
    rb"|(?![\t\n\f\r ]*+=)))*+>"
)
# In the data state: a start tag (name, rest or None when unfinished), an end tag (same), or `<!`,
# `</` not followed by a letter, `<?`. Any other `<` is text.
MARKUP = re.compile(
    rb"<(?:([a-z][^\t\n\f\r />]*+)(" + REST + rb")?|/([a-z][^\t\n\f\r />]*+)(" + REST + rb")?|([!/?]))"
)
# Outside SVG/MathML: text and the tags the rewriter leaves alone, skipped in one match. A start tag
# is left alone when its name neither switches the tokenizer (nor is <template>, counted for the
# injection) nor fetches, and it has no attribute that fetches on any element or holds CSS; an end
# tag unless it is </body>, </head> or </template>.
INERT_ATTR = rb"(?!(?:s(?:tyle|rcdoc)|ping|background)[\t\n\f\r />=])"
SWITCHING = (  # by first letter: `re` tries alternatives one by one
    rb"(?:s(?:cript|tyle|vg)|t(?:e(?:xtarea|mplate)|itle)|iframe|no(?:embed|frames|script)|plaintext|math|body|h(?:ead|tml)"
    rb"|xmp)[\t\n\f\r />]"
)
FETCHING = (
    rb"(?:s(?:ource)|t(?:rack)|i(?:mg|mage|nput)|b(?:ase)|v(?:ideo)|a(?:udio)|e(?:mbed)|o(?:bject)|l(?:ink)"
    rb"|f(?:rame))[\t\n\f\r />]"
)
INERT_REST = REST.replace(rb"|[^\t\n\f\r />][^", rb"|" + INERT_ATTR + rb"[^\t\n\f\r />][^", 1)
# A fetching tag may be skipped too when no value in it holds a byte that could spell a host another
# way (references, escapes, percent, controls, non-ASCII); the skipped text is then searched for the
# denied hosts as written, and only what names one is read tag by tag.
RESPELL = rb"&%\\\x00-\x1f\x80-\xff"  # bytes that may spell a host another way
PLAIN_REST = INERT_REST.replace(
    rb"""(?:"[^"]*+"|'[^']*+'|(?!["'])[^\t\n\f\r >]*+)""",
    rb"""(?:"[^\"""" + RESPELL + rb"""]*+"|'[^'""" + RESPELL + rb"""]*+'|(?!["'])[^\t\n\f\r >"""
    + RESPELL + rb"""]*+(?=[\t\n\f\r >]))""",
    1,
)
# A start tag in the form most markup has (a name, then `name="value"`, `name='value'` or bare
# names apart), with no byte that may spell a host another way anywhere in it, read with far fewer
# steps than REST: every `=` directly follows an attribute name character and directly precedes a
# quote, so every quote is a value's and the first `>` after the last value ends the tag, as the
# tokenizer reads it (in such a tag no unquoted value can start, and an attribute name cannot start
# with `=`). Such a tag, whatever its name and attributes, is left as it is unless it names a denied
# host as written (the needles, searched apart), or switches the tokenizer.
_PLAIN_RUN = rb"[^>\"'=&%\\\x00-\x08\x0b\x0e-\x1f\x80-\xff]*+"  # no `>`, quote, `=`, nor RESPELL but blanks
_PLAIN_REST = (
    _PLAIN_RUN + rb"""(?:(?<=[^\t\n\f\r /"'])=(?:"[^\"""" + RESPELL + rb"""]*+"|'[^'""" + RESPELL + rb"]*+')"
    + _PLAIN_RUN + rb")*+>"
)
PLAIN_TAG = rb"<(?!" + SWITCHING + rb")[a-z][^\t\n\f\r />" + RESPELL + rb"]*+" + _PLAIN_REST
# Text and the tags skipped, one tag and the text after it per step (`re` tries alternatives in order,
# most frequent first): end tags, plain start tags (SKIP_PLAIN only), a `<` that is text, inert start
# tags, fetching tags with plain values (SKIP_PLAIN only).
_END_TAG = rb"</(?!(?:body|head|template)[\t\n\f\r />])[a-z][^\t\n\f\r />]*+(?:>|" + REST + rb")"
_TEXT = rb"|<++(?=[^a-z!/?])|<+(?=<)"  # a run of `<` in one step: all of it, or all but the last
_INERT_TAG = rb"|<(?!" + SWITCHING + rb"|" + FETCHING + rb")[a-z][^\t\n\f\r />]*+" + INERT_REST
SKIP = re.compile(rb"(?:[^<]*+(?:" + _END_TAG + _TEXT + _INERT_TAG + rb"))*+[^<]*+")
# The attribute that marks our snippet (html.py: a page carrying it gets no second one), and the bytes
# around it where an attribute name can stand: after a blank, `/` or a quoted value's quote, before
# a blank, `/`, `>` or `=`.
MARKER = b"data-consent-banner"
_BEFORE_NAME = frozenset(b"\t\n\f\r /\"'")
_AFTER_NAME = frozenset(b"\t\n\f\r />=")
# A tag a skip stopped at because MARKER's bytes in it may be an attribute name, skipped after all
# when it is an end tag (no attributes) or an inert start tag with no attribute of that name.
_UNMARKED_REST = INERT_REST.replace(INERT_ATTR, INERT_ATTR + rb"(?!" + MARKER + rb"[\t\n\f\r />=])", 1)
UNMARKED_TAG = re.compile(
    _END_TAG + rb"|<(?!" + SWITCHING + rb"|" + FETCHING + rb")[a-z][^\t\n\f\r />]*+" + _UNMARKED_REST
)


def marker_candidate(low: bytes, pos: int) -> int:
    """Where MARKER's bytes next stand in `low`, from `pos` on, where they could be an attribute's
    whole name (len(low) if nowhere); at either end of the buffer they always could. Elsewhere they
    are certainly text or part of a value or longer name, which the skips may pass over."""
    n, size = len(low), len(MARKER)
    at = low.find(MARKER, pos)
    while at > 0 and (
        low[at - 1] not in _BEFORE_NAME or (at + size < n and low[at + size] not in _AFTER_NAME)
    ):
        at = low.find(MARKER, at + 1)
    return n if at < 0 else at


ATTR = re.compile(
    rb"[\t\n\f\r /]*+([^\t\n\f\r />][^\t\n\f\r />=]*+)"
    rb"""(?:[\t\n\f\r ]*+=[\t\n\f\r ]*+("[^"]*+"|'[^']*+'|[^\t\n\f\r >]*+))?"""
)
# Text, then a whole start tag (HtmlRewriter._repeats).
REPEAT = re.compile(rb"[^<]*+(<[a-z][^\t\n\f\r />]*+" + REST + rb")")
COMMENT_END = re.compile(rb"--!?>")
SCRIPT_DATA = re.compile(rb"<!--|</script[\t\n\f\r />]")
SCRIPT_ESCAPED = re.compile(rb"-->|<(/?)script[\t\n\f\r />]")
SCRIPT_DOUBLE = re.compile(rb"-->|</script[\t\n\f\r />]")
PROLOG_TAG = re.compile(rb"<(html|head)(?=[\t\n\f\r />])")
BLANK = re.compile(rb"(?:[\t\n\f\r ]|\xef\xbb\xbf)+")
LANG = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})*")
END_TAGS: dict[bytes, re.Pattern[bytes]] = {}

# The tokenizer states this rewriter tracks (the tag and attribute states live in REST / scan_tag).
DATA, RAW, STYLE, NOSCRIPT, SCRIPT, ESCAPED, DOUBLE, PLAIN, COMMENT, BOGUS, CDATA, TAG = range(12)
# HTML elements whose start tag switches the tokenizer (the tree builder does it, HTML namespace only).
SWITCH = {
    b"script": SCRIPT,
    b"style": STYLE,
    b"textarea": RAW,
    b"title": RAW,
    b"xmp": RAW,
    b"iframe": RAW,
    b"noembed": RAW,
    b"noframes": RAW,
    b"noscript": NOSCRIPT,
    b"plaintext": PLAIN,
}
VOID = frozenset(
    b"area base br col embed hr img image input link meta source track wbr param keygen frame basefont "
    b"bgsound".split()
)
# Start tags that leave SVG/MathML content (the parser pops back to HTML), and the integration points
# whose content is HTML again.
BREAKOUT = frozenset(
    b"b big blockquote body br center code dd div dl dt em embed h1 h2 h3 h4 h5 h6 head hr i img li "
    b"listing menu meta nobr ol p pre ruby s small span strong strike sub sup table tt u ul var".split()
)
SVG_HTML_POINTS = frozenset({b"foreignobject", b"desc", b"title"})
MATH_TEXT_POINTS = frozenset({b"mi", b"mo", b"mn", b"ms", b"mtext"})
FOREIGN, HTML_POINT, TEXT_POINT = 0, 1, 2

# Inside SVG/MathML, under an element whose content is SVG/MathML too: text and plain start tags (as
# above) that open one more such element, or none (`/>`), with no other effect; skipped in one match
# (FOREIGN_SKIP), then read for their names (FOREIGN_TAG) only while they are followed one by one
# (up to MAX_DEPTH). Not: what leaves SVG/MathML, an integration point, a <style> (CSS follows).


def _trie(names: set[bytes]) -> bytes:
    """A pattern matching exactly `names`, branching one byte at a time (`re` tries alternatives one
    by one: a flat list of 60 names costs every tag 60 tries)."""
    if names == {b""}:
        return b""
    groups: dict[bytes, set[bytes]] = {}
    for n in names:
        groups.setdefault(n[:1], set()).add(n[1:])
    parts = []
    for first, rests in sorted(groups.items()):
        if not first:
            continue
        inner = _trie(rests)
        if b"" in rests and rests != {b""}:
            inner = rb"(?:" + _trie(rests - {b""}) + rb")?"
        elif len(rests) > 1:
            inner = rb"(?:" + inner + rb")"
        parts.append(re.escape(first) + inner)
    return b"|".join(parts)


_FOREIGN_OTHER = _trie(
    set(BREAKOUT | SVG_HTML_POINTS | MATH_TEXT_POINTS | {b"font", b"annotation-xml", b"style"})
)
_FOREIGN_TAG = (
    rb"<(?!(?:" + _FOREIGN_OTHER + rb")[\t\n\f\r />])([a-z][^\t\n\f\r />" + RESPELL + rb"]*+)" + _PLAIN_REST
)
FOREIGN_SKIP = re.compile(rb"(?:[^<]*+" + _FOREIGN_TAG + rb")*+[^<]*+")
# An inline SVG in HTML content whose children are all plain: self-closing, or holding only text and
# closed right after it (an icon: `<svg ...><path .../><text>A</text></svg>`). Each child opens and
# closes, the </svg> closes the <svg>: back in HTML as before it (SKIP_PLAIN skips it whole).
_PLAIN_OPEN = _PLAIN_REST[:-1] + rb"(?<!/)>"  # a plain start tag that opens an element
_PLAIN_CLOSED = _PLAIN_REST[:-1] + rb"(?<=/)>"  # one that closes itself
_PLAIN_SVG = (
    rb"<svg(?=[\t\n\f\r />])" + _PLAIN_OPEN
    + rb"(?:[^<]*+<(?!(?:" + _FOREIGN_OTHER + rb")[\t\n\f\r />])(?P<leaf>[a-z][^\t\n\f\r />" + RESPELL
    + rb"]*+)(?:" + _PLAIN_OPEN + rb"[^<]*+</(?P=leaf)>|" + _PLAIN_CLOSED + rb"))*+[^<]*+</svg>"
)
SKIP_PLAIN = re.compile(
    rb"(?:[^<]*+(?:" + _END_TAG + rb"|" + PLAIN_TAG + rb"|" + _PLAIN_SVG + _TEXT + _INERT_TAG
    + rb"|<(?=" + FETCHING + rb")[a-z]++" + PLAIN_REST + rb"))*+[^<]*+"
)
FOREIGN_TAG = re.compile(rb"[^<]*+" + _FOREIGN_TAG)
# Attributes that make the browser fetch, per element: HTML, then SVG.
URL_ATTRS: dict[bytes, tuple[bytes, ...]] = {
    b"img": (b"src", b"srcset"),
    b"image": (b"src", b"srcset"),  # parsed as <img>
    b"input": (b"src",),
    b"source": (b"src", b"srcset"),
    b"video": (b"src", b"poster"),
    b"audio": (b"src",),
    b"track": (b"src",),
    b"embed": (b"src",),
    b"object": (b"data",),
    b"link": (b"href", b"imagesrcset"),
    b"iframe": (b"src",),
    b"frame": (b"src",),
    b"script": (b"src",),
    b"a": (b"ping",),
    b"area": (b"ping",),
    b"table": (b"background",),
    b"td": (b"background",),
    b"th": (b"background",),
    b"body": (b"background",),
    b"base": (b"href",),
}
SVG_URL_ATTRS: dict[bytes, tuple[bytes, ...]] = {
    name: (b"href", b"xlink:href") for name in (b"image", b"use", b"feimage", b"script")
}
LIST_ATTRS = frozenset({b"srcset", b"imagesrcset", b"ping"})
JS_TYPES = frozenset(
    {
        "", "module", "text/javascript", "application/javascript", "text/ecmascript",
        "application/ecmascript", "application/x-javascript", "application/x-ecmascript", "text/x-javascript",
        "text/x-ecmascript", "text/jscript", "text/livescript",
    }
)


def end_tag_pattern(name: bytes) -> re.Pattern[bytes]:
    found = END_TAGS.get(name)
    if found is None:
        found = END_TAGS[name] = re.compile(rb"</" + re.escape(name) + rb"[\t\n\f\r />]")
    return found


SCRIPT_STATES = {SCRIPT: SCRIPT_DATA, ESCAPED: SCRIPT_ESCAPED, DOUBLE: SCRIPT_DOUBLE}


Attr = tuple[bytes, int, int, int, int, bytes]  # lower-case name, name start/end, value start/end, raw value

# The tag and attribute states, resumable: for a tag that does not end in the buffer at hand.
IN_NAME, BEFORE, ATTR_NAME, AFTER_NAME, BEFORE_VALUE, DQ, SQ, UNQUOTED = range(8)
TAG_NAME = re.compile(rb"[^\t\n\f\r />]*+")
# Whole attributes, in one match, up to one that may go on in the next chunk.
ATTRS_RUN = re.compile(
    # first, names without values in one step each: a name, blanks, then a name that starts another
    rb"(?:(?:[^\t\n\f\r />=]++[\t\n\f\r ]++(?=[^\t\n\f\r />=]))++"
    rb"|[\t\n\f\r /]++|[^\t\n\f\r />][^\t\n\f\r />=]*+(?=[\t\n\f\r />=])"
    rb"""(?:[\t\n\f\r ]*+=[\t\n\f\r ]*+(?:"[^"]*+"|'[^']*+'|(?!["'])[^\t\n\f\r >]*+(?=[\t\n\f\r >]))"""
    rb"|(?![\t\n\f\r ]*+(?:=|\Z))))*+"
)
# In an over-long tag, a name that may fetch (or holds CSS) where an attribute name may start: after
# a blank, slash or quote (matched, not looked behind for, so that `re` skips to the candidates), or
# at the start of a buffer (a tag resumed there); see `long_tag_attrs`.
_LONG_TAG_NAME = (
    rb"(src|srcset|data|href|imagesrcset|ping|background|poster|xlink:href|style|srcdoc)(?=[\t\n\f\r />=])"
)
LONG_TAG_ATTR = re.compile(rb"[\t\n\f\r /\"']" + _LONG_TAG_NAME)
LONG_TAG_FIRST = re.compile(_LONG_TAG_NAME)
CSS_AND_HTML = (b"style", b"srcdoc")
VALUE_START = re.compile(rb"[\t\n\f\r ]*+=[\t\n\f\r ]*+[\"']?[\x00-\x20]*+")
NAME_CHARS = re.compile(rb"[^\t\n\f\r />=]*+")
SPACES = re.compile(rb"[\t\n\f\r ]*+")
UNQUOTED_CHARS = re.compile(rb"[^\t\n\f\r >]*+")


# Per tag state but the quoted values: the run of bytes that stays in it, then the move on each byte
# that ends the run (but ">", which ends the tag): (next state, bytes consumed), by byte, else default.
_TAG_STEPS: dict[int, tuple[re.Pattern[bytes], dict[int, tuple[int, int]], tuple[int, int]]] = {
    IN_NAME: (TAG_NAME, {}, (BEFORE, 1)),
    BEFORE: (ATTRS_RUN, {}, (ATTR_NAME, 1)),  # the first character of a name may be "="
    ATTR_NAME: (NAME_CHARS, {61: (BEFORE_VALUE, 1), 47: (BEFORE, 1)}, (AFTER_NAME, 1)),
    AFTER_NAME: (SPACES, {61: (BEFORE_VALUE, 1), 47: (BEFORE, 1)}, (BEFORE, 0)),  # a new attribute
    BEFORE_VALUE: (SPACES, {34: (DQ, 1), 39: (SQ, 1)}, (UNQUOTED, 0)),
    UNQUOTED: (UNQUOTED_CHARS, {}, (BEFORE, 1)),
}


def scan_tag(low: bytes, pos: int, state: int) -> tuple[int, int, bool]:
    """Run the tag states from `pos`: (where it stopped, the state there, whether `>` ended the tag);
    an unfinished attribute name is reported as a stop where it began."""
    n = len(low)
    name_start = pos
    while pos < n:
        if state == DQ or state == SQ:
            j = low.find(b'"' if state == DQ else b"'", pos)
            if j < 0:
                pos = n
                break
            state, pos = BEFORE, j + 1  # after a quoted value: as before an attribute name
            continue
        run, moves, default = _TAG_STEPS[state]
        pos = run.match(low, pos).end()  # type: ignore[union-attr]
        if pos >= n:
            break
        c = low[pos]
        if c == 62:  # ">"
            return pos + 1, state, True
        if state == BEFORE:
            name_start = pos
        state, step = moves.get(c, default)
        pos += step
    if state == ATTR_NAME:  # unfinished: report where it began, so that it is held
        return name_start, BEFORE, False
    return pos, state, False

def long_tag_attrs(low: bytes, pos: int, stop: int) -> Iterator[re.Match[bytes]]:
    """The names LONG_TAG_ATTR finds in low[pos:stop] (group 1), in order."""
    if pos == 0:
        first = LONG_TAG_FIRST.match(low, 0, stop)
        if first is not None:
            yield first
    yield from LONG_TAG_ATTR.finditer(low, pos, stop)


def parse_attrs(tag: bytes, offset: int) -> list[Attr]:
    """The attributes of a start tag as the HTML5 tokenizer reads them, in order, duplicates included."""
    found: list[Attr] = []
    end = len(tag) - 1  # the closing ">"
    pos = offset
    while pos < end:
        m = ATTR.match(tag, pos, end)
        if m is None:
            break
        value = m.group(2)
        if value is None:
            raw, vs, ve = b"", m.end(1), m.end(1)
        else:
            vs, ve = m.span(2)
            raw = value[1:-1] if value[:1] in (b'"', b"'") else value
        found.append((m.group(1).lower(), m.start(1), m.end(1), vs, ve, raw))
        pos = m.end()
    return found


def attr_value(tag: bytes, offset: int, name: bytes, valid: re.Pattern[str]) -> str | None:
    for a in parse_attrs(tag, offset):
        if a[0] == name:
            text = attr_text(a[5]).strip()
            return text if valid.fullmatch(text) else None
    return None


def close_one(opened: dict[bytes, int], name: bytes) -> None:
    count = opened.get(name)
    if count == 1:
        del opened[name]  # an empty table means no HTML element is open there
    elif count:
        opened[name] = count - 1


def has_any(tag: bytes, names: tuple[bytes, ...]) -> bool:
    return any(a[0] in names for a in parse_attrs(tag, tag.find(b"<") + 1))


def self_closing(tag: bytes) -> bool:
    """Whether a start tag ends with the self-closing `/>` (not a `/` ending an unquoted value)."""
    if not tag.endswith(b"/>"):
        return False
    attrs = parse_attrs(tag, 1)
    return not attrs or attrs[-1][4] != len(tag) - 1 or tag[attrs[-1][3] : attrs[-1][3] + 1] in (b'"', b"'")


def frame_kind(ns: bytes, name: bytes, tag: bytes) -> int:
    """Whether an SVG/MathML element's content is foreign, HTML, or HTML for start tags (MathML text)."""
    if ns == b"svg":
        return HTML_POINT if name in SVG_HTML_POINTS else FOREIGN
    if name in MATH_TEXT_POINTS:
        return TEXT_POINT
    if name == b"annotation-xml":
        for a in parse_attrs(tag, 1):
            if a[0] == b"encoding":
                kind = attr_text(a[5]).lower()
                return HTML_POINT if kind in ("text/html", "application/xhtml+xml") else FOREIGN
    return FOREIGN


def edit_tag(tag: bytes, attrs: list[Attr], edits: list[tuple[int, int, bytes]], extra: bytes) -> bytes:
    """The tag with the spans in `edits` replaced and `extra` attributes added before its end."""
    parts, last = [], 0
    for s, e, new in sorted(edits):
        parts.append(tag[last:s])
        parts.append(new)
        last = e
    body = b"".join(parts) + tag[last:-1]
    if not extra:
        return body + b">"
    # Before a final "/" only when it is a self-closing slash, not the end of an unquoted value.
    if body.endswith(b"/") and self_closing(tag):
        return body[:-1].rstrip() + extra + b"/>"
    return body + extra + b">"
