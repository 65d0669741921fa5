"""Streaming HTML rewrite: tracker tags of denied services neutralised, our snippets injected.

`HtmlRewriter.feed(chunk)` returns what can be sent now; `finish()` returns the rest. It never
holds the page: only a tag or tail that straddles two chunks (at most MAX_TAG bytes), the `<head>`
until `</head>` (to see whether the page already carries our snippet, at most MAX_HOLD bytes) and
the output after the latest `</body>` (where the body-end snippet goes, at most MAX_HOLD bytes).
Everything but the tags of interest is copied byte for byte; the scanner works on bytes, so any
ASCII-compatible charset works (the caller passes UTF-16/32 bodies through untouched).

How it reads (on a lower-cased copy of each buffer, offsets shared): as the HTML5 tokenizer does,
in every state that decides where a tag or attribute is: data, tag and attribute states (quoted,
unquoted, a name that starts with `=`), self-closing, comments (`<!-->`, `<!--->`, `--!>`), bogus
comments (`<?...>`, `</3...>`, `<!x...>`), doctype, CDATA (only in SVG/MathML), RCDATA (title,
textarea), RAWTEXT (style, xmp, iframe, noembed, noframes), PLAINTEXT, and script data with its
escaped and double-escaped states. The tree builder's switch is followed too: inside `<svg>` and
`<math>` a `<style>` or `<plaintext>` is an ordinary element (its content is markup, and `<img>`,
`<p>`... leave SVG/MathML again), with the integration points (foreignObject, desc, title,
annotation-xml as HTML; mi, mo, mn, ms, mtext) where HTML starts over. Open HTML `<template>`
elements are counted (for the injection); other open HTML elements are not tracked: when an end
tag inside SVG/MathML may or may not close one, the rewriter stays in SVG/MathML but from then on
lets no comment hide a raw text element's content and neutralises what either reading would fetch.
With JavaScript on, `<noscript>` is raw text; its content goes through a nested rewriter with
scripting off (with JavaScript off it is live markup: pixels hide there).

Text and tags that can fetch nothing are skipped in one regex match (which stops where the marker's
bytes could be an attribute name: see Injection); so are fetching tags whose values hold no byte
that could spell a host another way (`&`, `%`, `\\`, controls, non-ASCII) and no denied host as
written (inside SVG/MathML too, where such tags are followed by name). A tag rewritten once is
remembered, per consent state without the page's mark (MAX_MEMO) and per page (MAX_SEEN), and the
same bytes again are not read again. Every other fetching tag is parsed and each URL decoded as the
browser does (`urls.py`: references, percent, IDNA, stripped whitespace, backslashes, `//host`).
Every pattern is possessive, each byte is looked at a bounded number of times, and a tag that does
not end in the chunk is resumed where it stopped, not rescanned: linear time on any input
(bench/bench_gate.py measures the worst cases). Before `<head>` the prolog (doctype, comments,
`<html lang>`) is read too.

What fetches: `<img|image src srcset>`, `<input src>`, `<source src srcset>`, `<video src poster>`,
`<audio|track|embed|frame|script src>`, `<object data>`, `<link href imagesrcset>`, `<iframe src>`,
`<a|area ping>`, `<table|td|th|body background>`, `<base href>`; in SVG `<image|use|feImage|script
href xlink:href>`; CSS (`css.py`) in `<style>` (HTML or SVG) and in `style` attributes, where each
`url()` or string naming a denied host becomes ``about:invalid`` (the policy's `img-src`,
`font-src` and `style-src` refuse such a fetch as well). An `<iframe srcdoc>` is a document of its
own: it is rewritten by a nested rewriter and put back, escaped, in the attribute.

A tag longer than MAX_TAG is not held: it streams through, and every attribute in it that could
fetch (or holds CSS) is renamed to ``data-consent-*`` whatever its value (unless a data: URL), with
the mark but no labels: it is never activated. Non-ASCII bytes of a URL or CSS are read in the
page's charset; the caller passes charsets that are not ASCII-compatible (UTF-16/32, ISO-2022-*)
through untouched, under a policy that admits only what is granted.

A URL belongs to a service when its host is one of the service's origins' hosts (scheme and port
are ignored: a tracker reached over http or another port is still the tracker); `*.example.com`
matches every subdomain. A tag is neutralised when any service claiming its host is denied, and
is labelled with the first such service in config order.

Markup contract (what the browser script re-activates after consent; CAT = category, SVC = service):

- Mark: given ``mark`` (a zero-argument callable returning the page's CSP nonce, called at most once
  and only when something is neutralised), every tag below also gets ``nonce="NONCE"``. Any nonce
  or ``data-consent-*`` attribute a neutralised tag had is dropped, so that every ``data-consent-*``
  attribute on a marked tag was written here. The script activates only elements whose ``el.nonce``
  is the page's nonce, so markup reflected into the page cannot pass for a neutralised tracker; a URL
  attribute given twice keeps one occurrence (the denied one), so a script activated with the nonce
  is the tracker's.

- Script: ``<script src="U" async>`` becomes
  ``<script data-consent-src="U" async type="text/plain" data-consent-category="CAT"
  data-consent-service="SVC">``; an original ``type`` (e.g. "module") is kept as
  ``data-consent-type``. Every ``src`` attribute is renamed, so the browser fetches nothing. To
  activate: create a new script element, copy the attributes, set ``src`` from
  ``data-consent-src`` and ``type`` from ``data-consent-type`` (or none), and replace the old one.
  Scripts that do not execute (a non-JavaScript ``type``, such as the site's own
  ``type="text/plain" data-consent-category=...`` inline scripts) are left as they are.
- Every other fetching element (image, source, video, audio, embed, object, link, a ping, table
  background, SVG image/use...): each of its URL attributes ``A`` -> ``data-consent-A`` (``src``,
  ``srcset``, ``poster``, ``data``, ``href``, ``imagesrcset``, ``ping``, ``background``,
  ``xlink:href``), plus ``data-consent-category`` and ``data-consent-service``. To activate: move
  them back.
- Iframe: ``src`` -> ``data-consent-src``, plus the two labels, and ``hidden=""
  data-consent-hidden=""`` (the second only when we added ``hidden``). Right before it::

      <div class="consent-placeholder" data-consent-placeholder="SVC" data-consent-category="CAT">
      <p>Content from NAME will load once you allow LABEL.</p>
      <button type="button" data-consent-allow="CAT">Allow LABEL</button></div>

  (one line in the output; NAME is the service's provider or name, LABEL the category's label in
  the page's language; every text is HTML-escaped). To activate: set ``src``, remove ``hidden``
  when ``data-consent-hidden`` is present, remove the placeholder (the iframe's previous sibling
  with ``data-consent-placeholder``).

Injection (`inject(html_lang)` gives head_html and body_end_html): head_html right after the
opening `<head ...>` tag, or, when the page has none, before the first element or text after the
doctype / `<html>`; body_end_html before the last `</body>`, or at the end when there is none (or
when every `</body>` was text: inside raw text, a comment, script). Markup reflected into the page
may leave something open there that would make the snippet inert (template content, SVG/MathML) or
text (a comment, `<textarea>`, `<xmp>`, script, `<noscript>` with JavaScript on), and the visitor
could not decide: body_end_html is preceded by what closes it all as the tokenizer and tree state
say (`_closers`: `-->`, `</textarea>`, `--></script>`, `</template>`, `</desc></svg>`...), so that it
is live HTML in the body, with JavaScript on and off; at the end, a tag the input ends in is ended
first (`">`, read then as any tag), or the snippet would be its attributes. `<plaintext>` cannot be
closed: there the snippet is left out (it would be text, its nonce shown), and the page has no
banner. Both are skipped when the page already carries our snippet (two gates nested, a page the gate
rewrote before): a start tag with the marker attribute ``data-consent-banner`` (in the head for
head_html, anywhere for body_end_html). It counts only as an HTML5 parser reads it, as the name of
an attribute of a start tag read in HTML content, where it makes an HTML element with that attribute;
never as text (a reflected search term, however well escaped, would take the banner out of the
page), an attribute value or a longer name, in a comment, raw text (`<textarea>`, `<title>`,
`<script>`, `<style>`, `<noscript>` with JavaScript on...), an end tag or SVG/MathML content, nor on
a tag the input ends in, a `<head>` tag the parser drops (past the prolog) or a tag over MAX_TAG
(not read whole). The skips stop where the marker's bytes could be an attribute name (`_data`).
Empty bodies get nothing.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass

from ..memo import Memo
from .css import rewrite_css
from .markup import (
    BEFORE,
    BLANK,
    BOGUS,
    BREAKOUT,
    CDATA,
    COMMENT,
    COMMENT_END,
    CSS_AND_HTML,
    DATA,
    DOUBLE,
    DQ,
    ESCAPED,
    FOREIGN,
    FOREIGN_SKIP,
    FOREIGN_TAG,
    IN_NAME,
    JS_TYPES,
    LANG,
    LIST_ATTRS,
    MARKER,
    MARKUP,
    NOSCRIPT,
    PLAIN,
    PROLOG_TAG,
    RAW,
    REPEAT,
    SCRIPT,
    SCRIPT_STATES,
    SKIP,
    SKIP_PLAIN,
    SQ,
    STYLE,
    SVG_URL_ATTRS,
    SWITCH,
    TAG,
    TAG_NAME,
    TEXT_POINT,
    UNMARKED_TAG,
    URL_ATTRS,
    VALUE_START,
    VOID,
    Attr,
    attr_value,
    close_one,
    edit_tag,
    end_tag_pattern,
    frame_kind,
    has_any,
    long_tag_attrs,
    marker_candidate,
    parse_attrs,
    scan_tag,
    self_closing,
)
from .urls import attr_text, decode, encode, srcset_urls, unescape, url_host

MAX_TAG = 64 * 1024  # a tag, attribute, or CSS token held whole at most this long (then decided as it stands)
MAX_HOLD = 64 * 1024  # output held for an injection decision before it is made anyway
MAX_DEPTH = 1024  # SVG/MathML elements nested deeper than this are not followed one by one
MAX_MEMO = 32 * 1024  # bytes of rewritten tags remembered per consent state (then all forgotten)
MAX_SEEN = 64 * 1024  # bytes of rewritten tags remembered per response (then all forgotten)
MAX_MEMO_TAG = 512  # the longest tag remembered, in bytes
NEEDLE_WINDOW = 32 * 1024  # bytes searched at once for the denied hosts as written
RUN = 4096  # the least bytes of markup whose skip is remembered as one run (see _known_runs)
MAX_RUNS = 1024 * 1024  # bytes of such runs remembered in the process (then all forgotten)
# Top SVG/MathML elements under which FOREIGN_SKIP does not run: in annotation-xml an <svg> is SVG.
_NO_RUN = frozenset({b"annotation-xml", b"style"})
# HTML start tags whose effect on what is open goes beyond their rewrite: never replayed (`_repeats`).
_EFFECTS = frozenset({b"body", b"template"})
# HTML elements the closers leave alone: a <template> is closed before them, the others cannot be.
_NOT_CLOSED = frozenset({b"template", b"body", b"html", b"head"})

Inject = Callable[[str | None], tuple[str, str]]
# Runs of markup by content (and the denied hosts as written): how far the skip goes in them, from
# where it starts in HTML content to a `<` (see `_known_runs`). Shared by all responses and states.
_RUNS: Memo[tuple[tuple[bytes, ...], bytes], int] = Memo(MAX_RUNS, lambda key, _: len(key[1]))


def _memo_weight(key: tuple[bytes, bytes, bool, str], found: tuple[bytes, bool]) -> int:
    return len(key[0]) + len(found[0])


def _seen_weight(tag: bytes, rewritten: bytes) -> int:
    return len(tag) + len(rewritten)


@dataclass(frozen=True, slots=True)
class Blocked:
    """The denied service a URL belongs to, and the placeholder text for it (iframes)."""

    service: str
    category: str
    name: str  # shown in the placeholder: the provider, else the service name
    category_labels: dict[str, str]  # language -> label ("*": any)


# A URL attribute whose raw bytes hold none of these (nor a needle) cannot name any host in a
# spelling other than its own: no reference, escape, percent-encoding, stripped or non-ASCII byte.
_SUSPECT = rb"[&%\\\t\n\r\f\x00-\x08\x0b\x0e-\x1f\x80-\xff]"


class HostRules:
    """Which hosts are denied in one consent state."""

    __slots__ = ("exact", "wildcard", "needles", "suspect", "memo", "labels")

    def __init__(self, exact: dict[str, Blocked], wildcard: dict[str, Blocked]) -> None:
        self.exact = exact  # "stats.example.net" -> Blocked
        self.wildcard = wildcard  # "example.net" (from *.example.net) -> Blocked
        # What a tag naming one of these hosts must contain (lower case): a cheap first test.
        self.needles = (*(h.encode() for h in exact), *(b"." + h.encode() for h in wildcard))
        # What makes a tag worth decoding: a needle as written, or a byte that may spell one otherwise.
        self.suspect = re.compile(b"|".join([_SUSPECT, *map(re.escape, self.needles)]))
        # The tags HtmlRewriter rewrote under these rules (see HtmlRewriter._rewrite), unmarked.
        self.memo: Memo[tuple[bytes, bytes, bool, str], tuple[bytes, bool]] = Memo(MAX_MEMO, _memo_weight)
        self.labels: dict[str, bytes] = {}  # per denied service: its data-consent-* labels

    def __bool__(self) -> bool:
        return bool(self.exact or self.wildcard)

    def denied(self, host: str) -> Blocked | None:
        found = self.exact.get(host)
        if found is not None or not self.wildcard:
            return found
        i = host.find(".")
        while i >= 0:
            found = self.wildcard.get(host[i + 1 :])
            if found is not None:
                return found
            i = host.find(".", i + 1)
        return None

    def url(self, value: str) -> Blocked | None:
        host = url_host(value)
        return self.denied(host) if host else None


class _Mark:
    """An injection point held in the output until it is decided."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


class HtmlRewriter:
    """Rewrites one HTML response body, chunk by chunk."""

    def __init__(
        self,
        hosts: HostRules | None,
        inject: Inject | None,
        *,
        charset: str = "utf-8",
        placeholder: Callable[[Blocked, str | None], str] | None = None,
        mark: Callable[[], str] | None = None,
        scripting: bool = True,
    ) -> None:
        self._hosts = hosts if hosts else None  # None: nothing to neutralise
        self._inject = inject
        self._charset = charset
        self._placeholder = placeholder
        self._mark = mark  # the page's CSP nonce, drawn only when a tag is neutralised
        self._mark_attr: bytes | None = None
        # JavaScript on: <noscript> holds raw text, and a nested rewriter (scripting off) reads it as markup.
        self._scripting = scripting
        self._buf = b""  # input not yet processed: a tag or tail straddling chunks
        self._more: list[bytes] = []  # chunks come since, not read yet
        self._waiting = 0  # their size
        self._out: list[bytes | _Mark] = []  # processed output; marks hold injection points
        self._state = DATA
        self._end: re.Pattern[bytes] = end_tag_pattern(b"script")  # what ends the raw text we are in
        self._raw_name = b"script"  # the element of that raw text
        # Open HTML <template> elements: per template, how many SVG/MathML elements were open at it.
        self._templates: list[int] = []
        self._floor = 0  # SVG/MathML elements open outside this (nested <noscript>) rewriter
        # Open SVG/MathML elements: (namespace, name, kind, HTML elements open in it per name).
        self._foreign: list[tuple[bytes, bytes, int, dict[bytes, int]]] = []
        # An end tag left SVG/MathML content or not, depending on HTML elements we did not track: from
        # then on, raw text elements and comments inside SVG/MathML hide nothing from the rewrite.
        self._uncertain = False
        self._nested: HtmlRewriter | None = None  # the rewriter of the <noscript> we are in
        # Tags rewritten in HTML content, and their output here.
        self._seen: Memo[bytes, bytes] = Memo(MAX_SEEN, _seen_weight)
        self._tag: list = []  # an unfinished tag: [name, is_end, state, resume offset]
        self._long_tag: tuple[bytes, bool] | None = None  # an over-long tag streaming through: (name, denied)
        self._final = False
        self._hits: dict[bytes, int] = {}  # the next place of each needle in the buffer being scanned
        self._hits_in = b""
        self._hit = -1
        self._css: list[bytes] = []  # CSS of a <style> that may continue in the next chunk, in pieces
        self._css_size = 0  # their size
        self._css_read = 0  # its size when last read
        self._prolog = inject is not None  # still before <head> or the first element
        self._lang: str | None = None
        self._marker_at: int | None = None  # input offset of the first tag with the marker attribute
        self._marker_in = b""  # the buffer whose next marker bytes are at _marker_next
        self._marker_next = -1
        self._fed = 0  # input bytes fed so far
        self._base = 0  # input offset of the first byte of the buffer being scanned
        self._content = False  # seen any non-blank input
        self._parts: tuple[bytes, bytes] | None = None
        self._head: _Mark | None = None
        self._body: _Mark | None = None
        self._body_closers = b""  # what closes everything open at the body mark (see _closers)
        self._body_done = inject is None

    # --- public ---

    def feed(self, chunk: bytes) -> bytes:
        if not chunk:
            return b""
        if self._inject is not None:  # what it watches decides the injection only
            self._watch(chunk)
        if self._buf and self._waiting + len(chunk) < len(self._buf):
            # What is held needs more input; read it again only once as much again has come, so that
            # small chunks never make it read the same bytes over and over (linear time).
            self._more.append(chunk)
            self._waiting += len(chunk)
            return b""
        if self._css_read and self._state == STYLE and not self._more and b"<" not in self._buf + chunk:
            # More of a CSS token held open, and nothing that could end the <style>: held with it
            # until it has doubled, as _raw holds it, without the rest of the scan.
            buf = self._buf + chunk
            stop = max(0, len(buf) - 12)  # _raw keeps as many back
            if self._css_size + stop < 2 * self._css_read:
                self._css.append(buf[:stop])
                self._css_size += stop
                self._base += stop
                self._buf = buf[stop:]
                return b""
        buf = b"".join((self._buf, *self._more, chunk)) if self._buf else chunk
        self._buf, self._more, self._waiting = b"", [], 0
        self._scan(buf, final=False)
        return self._flush(final=False)

    def finish(self) -> bytes:
        buf = b"".join((self._buf, *self._more))
        self._buf, self._more, self._waiting = b"", [], 0
        at_end = self._body is None and not self._body_done  # _body_done: no inject
        if at_end:
            # The snippet goes at the end (unless what is complete holds the marker): a tag the input
            # ends in would take it in as attributes.
            self._scan(buf, final=False)
            buf, self._buf = self._buf + (self._tag_closer() if self._marker_at is None else b""), b""
        marker = self._marker_at
        self._scan(buf, final=True)
        if at_end:  # a tag that only that closer ended is ours, not the page's: its marker is not
            self._marker_at = marker
        if self._buf:  # never lose a byte, whatever state the scan stopped in
            self._out.append(self._buf)
            self._buf = b""
        if self._css:
            self._out.append(self._style_css(b"", final=True))
        if self._nested is not None:
            self._out.append(self._nested.finish())
        closers = self._closers() if not self._body_done and self._body is None else b""
        self._nested = None
        if self._inject is not None and self._content:
            if self._prolog:  # nothing but doctype / <html> / comments: inject at the end
                self._prolog = False
                self._out.append(self._head_bytes(self._fed))
            self._decide_head(self._fed)
            if self._body is not None:
                self._decide_body(inject=True)
            elif not self._body_done:
                self._body_done = True
                if self._marker_at is None and closers is not None:
                    self._out.append(closers + self._parts_bytes()[1])
        return self._flush(final=True)

    # --- scanning ---

    def _watch(self, chunk: bytes) -> None:
        if not self._content and chunk.strip():
            self._content = True
        self._fed += len(chunk)

    def _next_marker(self, low: bytes, pos: int) -> int:
        """Where the marker's bytes next stand in `low` from `pos` on where they could be an
        attribute name (len(low) if nowhere, or once the marker decides nothing more): the skips
        stop there, so that a tag holding them is read by `_start_tag`, which decides."""
        if self._marker_at is not None or self._body_done:
            return len(low)
        if self._marker_in is not low or self._marker_next < pos:
            self._marker_in, self._marker_next = low, marker_candidate(low, pos)
        return self._marker_next

    def _note_marker(self, low: bytes, start: int, end: int, name: bytes) -> None:
        """Whether the HTML start tag at low[start:end] (complete, read in HTML content) carries
        the marker as an attribute name: the page then carries our snippet (see the docstring)."""
        if self._marker_at is None and not self._body_done and low.find(MARKER, start, end) >= 0:
            if any(a[0] == MARKER for a in parse_attrs(low[start:end], 1 + len(name))):
                self._marker_at = self._base + start

    def _scan(self, buf: bytes, *, final: bool) -> None:
        """Run the tokenizer over `buf`; what may continue in the next chunk is left in self._buf."""
        low = buf.lower()  # ASCII-only lowering: offsets are the same as in buf
        pos, n = 0, len(buf)
        while pos < n:
            state = self._state
            if state == DATA:
                if self._prolog:
                    pos = self._scan_prolog(buf, low, pos, final)
                    if self._prolog and self._state == DATA:
                        break  # needs more input
                    continue
                pos = self._data(buf, low, pos, final)
            elif state == SCRIPT or state == ESCAPED or state == DOUBLE:
                pos = self._script(buf, low, pos, final)
            elif state == RAW or state == STYLE or state == NOSCRIPT:
                pos = self._raw(buf, low, pos, final)
            elif state == TAG:
                pos = self._unfinished_tag(buf, low, pos, final)
            elif state == PLAIN:
                self._out.append(buf[pos:])
                pos = n
            else:  # a comment, bogus comment or CDATA section
                pos = self._comment(buf, low, pos, final)
            if pos < 0:  # needs more input from ~pos on
                pos = ~pos
                break
        self._buf = buf[pos:]
        self._base += pos

    def _data(self, buf: bytes, low: bytes, pos: int, final: bool) -> int:
        out = self._out
        if not self._foreign:
            if self._seen:
                pos = self._repeats(buf, low, pos)
            skip = pos
            needles = self._hosts.needles if self._hosts is not None else ()
            while True:
                skip = _known_runs(low, skip, needles)
                hit = self._next_needle(low, skip)
                marker = self._next_marker(low, skip)  # a tag that may hold it is read by _start_tag
                skip = SKIP_PLAIN.match(low, skip, min(hit, marker)).end()  # type: ignore[union-attr]
                if skip == hit < marker:  # a denied host as written: only inert tags skip it
                    if not any(low.startswith(n, hit) for n in needles):
                        continue  # only the end of what was searched for them
                    skip = SKIP.match(low, skip, marker).end()  # type: ignore[union-attr]
                if marker == len(low):
                    break
                if skip == marker:  # a skip ends at a `<` or where it was told: text, up to a `<`
                    skip = low.find(b"<", skip + len(MARKER))
                    if skip < 0:
                        skip = len(low)
                        break
                    continue
                m = UNMARKED_TAG.match(low, skip)
                if m is None or m.end() <= marker:
                    break  # a tag to read (the one holding the marker's bytes, or one before it)
                skip = m.end()  # an inert tag that holds them but not as an attribute name
            if skip > pos:
                out.append(buf[pos:skip])
                pos = skip
                if pos == len(buf):
                    return pos
        elif self._foreign[-1][2] == FOREIGN and self._foreign[-1][1] not in _NO_RUN:
            skip = FOREIGN_SKIP.match(low, pos, self._next_needle(low, pos)).end()  # type: ignore[union-attr]
            if skip > pos:
                self._open_foreign(low, pos, skip)
                out.append(buf[pos:skip])
                pos = skip
                if pos == len(buf):
                    return pos
        m = MARKUP.search(low, pos)
        if m is None:
            n = len(buf)
            if self._in_foreign_style():
                return self._foreign_css(buf, pos, n, final)
            end = n - 1 if not final and low[-1] == 60 else n  # a "<" that may start a tag
            out.append(buf[pos:end])
            return end if end == n else ~end
        start = m.start()
        if start > pos:
            if self._in_foreign_style():
                self._foreign_css(buf, pos, start, True)
            else:
                out.append(buf[pos:start])
        name = m.group(1)
        if name is not None:
            if m.group(2) is None:
                return self._begin_unfinished(buf, start, name, False, final)
            return self._start_tag(buf, low, start, m.end(), name)
        name = m.group(3)
        if name is not None:
            if m.group(4) is None:
                return self._begin_unfinished(buf, start, name, True, final)
            return self._end_tag(buf, start, m.end(), name)
        kind = m.group(5)
        if kind == b"!":
            return self._declaration(buf, low, start, final)
        if kind == b"?":  # a processing instruction is a bogus comment, up to ">"
            out.append(b"<")
            self._state = BOGUS
            return start + 1
        # "</" not followed by a letter: "</>" is dropped, anything else starts a bogus comment
        if start + 2 >= len(buf):
            if final:
                out.append(buf[start:])
                return len(buf)
            return ~start
        if low[start + 2] == 62:
            out.append(buf[start : start + 3])
            return start + 3
        out.append(buf[start : start + 2])
        self._state = BOGUS
        return start + 2

    def _repeats(self, buf: bytes, low: bytes, pos: int) -> int:
        """Text and tags rewritten before, each replaced with its earlier output, from `pos` on;
        where that stops."""
        out, seen, match = self._out, self._seen, REPEAT.match
        while True:
            m = match(low, pos)
            if m is None:
                return pos
            start, end = m.span(1)
            done = seen.get(buf[start:end])
            if done is None:
                return pos
            if start > pos:
                out.append(buf[pos:start])
            out.append(done)
            pos = end

    def _open_foreign(self, low: bytes, start: int, end: int) -> None:
        """The SVG/MathML elements the tags FOREIGN_SKIP skipped in low[start:end] open, followed
        up to MAX_DEPTH as `_push` follows them."""
        frames = self._foreign
        ns = frames[-1][0]
        for m in FOREIGN_TAG.finditer(low, start, end):
            if low[m.end() - 2] == 47:  # "/>": a plain tag ending so closes itself
                continue
            if len(frames) >= MAX_DEPTH:
                self._uncertain = True
                return
            frames.append((ns, m.group(1), FOREIGN, {}))

    def _next_needle(self, low: bytes, pos: int) -> int:
        """Where the next denied host as written starts (len(low) if none), or where the search for
        them stopped (NEEDLE_WINDOW on: no page is searched further than its skips go, which
        `_known_runs` may take far), each needle's next place remembered per buffer so that no byte
        is searched twice."""
        if self._hosts is None:
            return len(low)
        if self._hits_in is not low:
            self._hits, self._hits_in, self._hit = {}, low, -1
        elif pos < self._hit:
            return self._hit  # still the nearest
        hits = self._hits
        best = n = len(low)
        for needle in self._hosts.needles:
            at = hits.get(needle, -1)
            if at < pos or (at == pos and not low.startswith(needle, pos)):
                limit = pos + NEEDLE_WINDOW
                at = low.find(needle, pos, limit + len(needle) - 1)
                hits[needle] = at = min(limit, n) if at < 0 else at
            best = min(best, at)
        self._hit = best
        return best

    def _declaration(self, buf: bytes, low: bytes, start: int, final: bool) -> int:
        """`<!`: a comment, a doctype, a CDATA section (SVG/MathML only) or a bogus comment."""
        out = self._out
        after = low[start + 2 : start + 9]
        if not final and len(after) < 7 and any(w.startswith(after) for w in (b"--", b"doctype", b"[cdata[")):
            return ~start  # cannot tell yet
        if not self._hides() and (after.startswith(b"--") or after.startswith(b"[cdata[")):
            out.append(buf[start : start + 2])  # read on as markup: in HTML this is raw text
            return start + 2
        if after.startswith(b"--"):
            rest = low[start + 4 : start + 6]
            if not final and len(rest) < 2 and rest in (b"", b"-"):
                return ~start
            if rest[:1] == b">" or rest == b"->":  # <!--> and <!---> end at once
                end = start + 4 + (1 if rest[:1] == b">" else 2)
                out.append(buf[start:end])
                return end
            out.append(buf[start : start + 4])
            self._state = COMMENT
            return start + 4
        if after.startswith(b"[cdata[") and buf.startswith(b"[CDATA[", start + 2) and self._in_foreign():
            out.append(buf[start : start + 9])
            self._state = CDATA
            return start + 9
        out.append(buf[start : start + 2])  # a doctype ends at the first ">" as a bogus comment does
        self._state = BOGUS
        return start + 2

    def _comment(self, buf: bytes, low: bytes, pos: int, final: bool) -> int:
        state, n, out = self._state, len(buf), self._out
        if state == BOGUS:
            end = low.find(b">", pos)
            keep = 0
        elif state == COMMENT:
            m = COMMENT_END.search(low, pos)
            end, keep = (m.end() - 1 if m else -1), 3
        else:
            end = low.find(b"]]>", pos)
            end, keep = (end + 2 if end >= 0 else -1), 2
        if end < 0:
            stop = n if final else max(pos, n - keep)
            if state == CDATA and self._in_foreign_style():
                if not final and n - pos <= MAX_TAG:
                    return ~pos  # CSS: held whole until the section ends (a URL may straddle chunks)
                out.append(self._css_text(buf[pos:stop], escaped=False))
            else:
                out.append(buf[pos:stop])
            return stop if stop == n else ~stop
        if state == CDATA and self._in_foreign_style():
            out.append(self._css_text(buf[pos : end - 2], escaped=False) + buf[end - 2 : end + 1])
        else:
            out.append(buf[pos : end + 1])
        self._state = DATA
        return end + 1

    def _script(self, buf: bytes, low: bytes, pos: int, final: bool) -> int:
        """Script data, with its escaped (`<!--`) and double-escaped (`<!--<script>`) states."""
        out, n = self._out, len(buf)
        while True:
            state = self._state
            m = SCRIPT_STATES[state].search(low, pos)
            if m is None:
                stop = n if final else max(pos, n - 9)  # "</script" and one more byte may straddle
                out.append(buf[pos:stop])
                return stop if stop == n else ~stop
            start, end = m.span()
            token = low[start : start + 3]
            if token == b"<!-":  # script data -> escaped; its dashes may also close it ("<!-->")
                out.append(buf[pos : start + 2])
                self._state, pos = ESCAPED, start + 2
            elif token == b"-->":
                out.append(buf[pos:end])
                self._state, pos = SCRIPT, end
            elif state == DOUBLE:  # "</script" ends the double escape, not the script
                out.append(buf[pos:end])
                self._state, pos = ESCAPED, end
            elif m.group(1) if state == ESCAPED else True:  # "</script": the end tag, read in the data state
                out.append(buf[pos:start])
                self._state = DATA
                return start
            else:  # "<script" inside an escaped comment: double escaped
                out.append(buf[pos:end])
                self._state, pos = DOUBLE, end

    def _raw(self, buf: bytes, low: bytes, pos: int, final: bool) -> int:
        """RAWTEXT, RCDATA, <style> (its CSS rewritten) and <noscript> (rewritten by a nested rewriter)."""
        n = len(buf)
        m = self._end.search(low, pos)
        stop = m.start() if m else n if final else max(pos, n - 12)  # "</noscript" and one more byte
        content = buf[pos:stop]
        done = m is not None or final
        if self._state == STYLE:
            self._out.append(self._style_css(content, final=done))
        elif self._state == NOSCRIPT:
            assert self._nested is not None
            self._out.append(self._nested.feed(content))
            if done:
                self._out.append(self._nested.finish())
                if m is not None:  # at the end of input it stays: what is open in it is closed (_closers)
                    self._nested = None
        else:
            self._out.append(content)
        if m is None:
            return stop if stop == n else ~stop
        self._state = DATA  # the end tag itself is read in the data state
        return stop

    # --- tags ---

    def _begin_unfinished(self, buf: bytes, start: int, name: bytes, is_end: bool, final: bool) -> int:
        """A tag that does not end in this buffer: held from its `<` until it does."""
        if final:  # the input ends inside a tag: the browser drops it, and nothing after it is markup
            self._out.append(buf[start:])
            return len(buf)
        self._tag = [is_end, IN_NAME, 1 + is_end]  # resume at the name, offsets from the `<`
        self._state = TAG
        return ~start

    def _unfinished_tag(self, buf: bytes, low: bytes, pos: int, final: bool) -> int:
        is_end, state, at = self._tag
        end, state, done = scan_tag(low, pos + at, state)
        if self._long_tag is not None:
            self._final = final
            return self._stream_long_tag(buf, low, pos, end, state, done)
        if done:
            self._state = DATA
            name = TAG_NAME.match(low, pos + 1 + is_end).group(0)  # type: ignore[union-attr]
            if is_end:
                return self._end_tag(buf, pos, end, name)
            return self._start_tag(buf, low, pos, end, name)
        if final:
            self._out.append(buf[pos:])
            self._state = DATA
            return len(buf)
        self._tag = [is_end, state, end - pos]
        if end - pos <= MAX_TAG:
            return ~pos
        # Too long to hold: it streams through from now on, what could fetch in it renamed.
        name = TAG_NAME.match(low, pos + 1 + is_end).group(0)  # type: ignore[union-attr]
        self._long_tag, self._final = (name, False), final
        return self._stream_long_tag(buf, low, pos, end, state, done)

    def _stream_long_tag(self, buf: bytes, low: bytes, pos: int, end: int, state: int, done: bool) -> int:
        """An over-long tag, sent on in pieces: every attribute in it that could fetch (on a fetching
        element) or holds CSS is renamed to data-consent-*, whatever its value (too long to be sure
        of) unless that is a data: URL, and so is such a word inside a value (a few bytes changed,
        never a fetch)."""
        assert self._long_tag is not None
        name, denied = self._long_tag
        stop = end if done else len(buf) if self._final else end
        parts, last = [], pos
        if self._hosts is not None and not self._tag[0]:
            names = URL_ATTRS.get(name, ()) + SVG_URL_ATTRS.get(name, ()) + CSS_AND_HTML
            for m in long_tag_attrs(low, pos, stop):
                if m.group(1) not in names:
                    continue
                v = VALUE_START.match(low, m.end(1))
                if v is None:
                    continue  # no value: nothing to fetch
                if v.end() + 5 >= len(low) and not (done or self._final):
                    stop = m.start(1)  # its value begins in the next chunk: decided there
                    break
                if low.startswith(b"data:", v.end()):
                    continue
                parts.append(buf[last : m.start(1)] + b"data-consent-")
                last, denied = m.start(1), True
        if done:
            tail = buf[last:end]
            if denied:
                tail = tail[:-1] + self._marked() + b">"
            parts.append(tail)
            self._long_tag, self._state = None, DATA
            # the tag's effects (SVG/MathML, raw text, the injection landmarks) as for any other
            if self._tag[0]:
                return self._end_tag(buf, pos, end, name, b"".join(parts))
            return self._start_tag(buf, low, pos, end, name, b"".join(parts))
        parts.append(buf[last:stop])
        self._out.append(b"".join(parts))
        if self._final:
            self._long_tag, self._state = None, DATA
            return len(buf)
        self._long_tag = (name, denied)
        self._tag = [self._tag[0], state, end - stop]
        return ~stop

    def _start_tag(
        self, buf: bytes, low: bytes, start: int, end: int, name: bytes, sent: bytes | None = None
    ) -> int:
        """A start tag at buf[start:end]: rewritten, and followed into SVG/MathML or raw text; `sent`:
        an over-long tag already streamed but for this last piece of it."""
        if sent is None and end - start > MAX_TAG:  # too long to decide whole: streamed
            self._long_tag, self._final, self._tag = (name, False), False, [False, BEFORE, 0]
            return self._stream_long_tag(buf, low, start, end, BEFORE, True)
        tag = buf[start:end]
        emit = self._out.append if sent is None else lambda _: self._out.append(sent)
        frames = self._foreign
        if frames:
            ns, top, kind, inside = frames[-1]
            mathml_in_text = kind == TEXT_POINT and not inside and name in (b"mglyph", b"malignmark")
            if kind == FOREIGN or mathml_in_text:
                if name in BREAKOUT or (name == b"font" and has_any(tag, (b"color", b"face", b"size"))):
                    while frames and frames[-1][2] == FOREIGN:
                        frames.pop()
                    self._uncertain = self._uncertain and bool(frames)
                else:
                    if top == b"annotation-xml" and name == b"svg":
                        ns = b"svg"
                    emit(self._rewrite(ns, name, tag, low, start))
                    if not self_closing(tag):
                        self._push((ns, name, frame_kind(ns, name, tag), {}))
                    return end
        if name == b"svg" or name == b"math":
            emit(self._rewrite(name, name, tag, low, start))
            if not self_closing(tag):
                self._push((name, name, FOREIGN, {}))
            return end
        if name == b"body":
            self._decide_head(self._base + start)
        if sent is None and name != b"head":  # the parser drops a <head> past the prolog; an
            self._note_marker(low, start, end, name)  # over-long tag is not read whole
        rewritten = self._rewrite(b"", name, tag, low, start)
        emit(rewritten)
        if name == b"template":
            self._templates.append(len(frames))
        switch = SWITCH.get(name)
        if switch is not None:
            if switch == NOSCRIPT:
                if not self._scripting:
                    return end
                self._nested = nested = HtmlRewriter(
                    self._hosts, None, charset=self._charset, placeholder=self._placeholder,
                    mark=self._mark and self._shared_mark, scripting=False,
                )
                # it starts where this one stands
                nested._foreign = [(*f[:3], dict(f[3])) for f in frames]
                nested._uncertain = self._uncertain
                nested._floor = len(frames)
            self._state = switch
            if switch != SCRIPT:
                self._end, self._raw_name = end_tag_pattern(name), name
        elif frames and name not in VOID:  # HTML inside an integration point
            opened = frames[-1][3]
            if name in opened or len(opened) < MAX_DEPTH:
                opened[name] = opened.get(name, 0) + 1
            else:  # more kinds of element than we follow: an end tag may close one we did not count
                self._uncertain = True
        elif rewritten is not tag and sent is None and name not in _EFFECTS and len(tag) <= MAX_MEMO_TAG:
            # Rewriting was all this tag did here: the same bytes again in HTML content are replaced
            # with the same output (`_repeats`), a tracker repeated down a page read once.
            self._seen.put(tag, rewritten)
        return end

    def _end_tag(self, buf: bytes, start: int, end: int, name: bytes, sent: bytes | None = None) -> int:
        if name == b"body":
            self._mark_body(self._base + start)
        elif name == b"head":
            self._decide_head(self._base + start)
        self._out.append(buf[start:end] if sent is None else sent)
        frames = self._foreign
        if name == b"template" and self._templates and self._ends_template():
            del frames[self._templates.pop() :]  # the HTML parser pops all that is open in it
            if frames:
                close_one(frames[-1][3], name)
            self._uncertain = self._uncertain and bool(frames)
            return end
        if not frames:
            return end
        # frames[base] is the nearest integration point with HTML elements open in it (-1: none), so
        # frames[base + 1:] are the SVG/MathML elements the end tag meets before any HTML element.
        base = len(frames) - 1
        while base >= 0 and not frames[base][3]:
            base -= 1
        if base == len(frames) - 1:  # the current node is HTML: only HTML elements can close
            if name in frames[base][3]:
                close_one(frames[base][3], name)
                return end
            # The standard ignores it (an integration point stands in the way); html5lib closes the
            # SVG/MathML element of that name. Follow the latter, unsure from now on.
            for i in range(len(frames) - 1, -1, -1):
                if frames[i][1] == name:
                    del frames[i:]
                    self._uncertain = bool(frames)
                    break
            return end
        if name == b"br" or name == b"p":  # these two leave SVG/MathML content
            while len(frames) > base + 1 and frames[-1][2] == FOREIGN:
                frames.pop()
            self._uncertain = self._uncertain and bool(frames)
            return end
        for i in range(len(frames) - 1, base, -1):
            if frames[i][1] == name:
                del frames[i:]
                self._uncertain = self._uncertain and bool(frames)
                return end
        # An end tag of an HTML element open below closes the SVG/MathML inside it, unless an
        # integration point (a scope boundary) stands in between.
        if base >= 0:
            if frames[base][3].get(name) and all(f[2] == FOREIGN for f in frames[base + 1 :]):
                del frames[base + 1 :]
                close_one(frames[base][3], name)
        else:
            self._uncertain = True  # whether an HTML element of that name is open: not tracked
        return end

    def _ends_template(self) -> bool:
        """Whether a `</template>` here reaches the HTML rules (which close the innermost template),
        not an SVG/MathML element of that name open above the nearest HTML element."""
        frames = self._foreign
        for i in range(len(frames) - 1, -1, -1):
            if frames[i][3]:  # an HTML element is open in it: the end tag meets that first
                return True
            if frames[i][1] == b"template":
                return False
        return True

    def _push(self, frame: tuple[bytes, bytes, int, dict[bytes, int]]) -> None:
        if len(self._foreign) < MAX_DEPTH:
            self._foreign.append(frame)
        else:  # deeper than we follow: later end tags may close what we did not push
            self._uncertain = True

    def _hides(self) -> bool:
        """Whether a comment or CDATA section here hides its content: not inside an SVG/MathML
        element named like an HTML raw text element once we are unsure we are still in SVG/MathML
        (there, in HTML, `<!--` is text and `</style>` ends the element)."""
        return not (self._uncertain and self._foreign and self._foreign[-1][1] in SWITCH)

    def _in_foreign(self) -> bool:
        """Whether the adjusted current node is an SVG/MathML element (where CDATA sections exist)."""
        return bool(self._foreign) and not self._foreign[-1][3]

    def _in_foreign_style(self) -> bool:
        return bool(self._foreign) and self._foreign[-1][1] == b"style" and self._hosts is not None

    # --- CSS ---

    def _denied_css_url(self, url: str) -> bool:
        assert self._hosts is not None
        return self._hosts.url(url) is not None

    def _css_text(self, data: bytes, *, escaped: bool) -> bytes:
        """`data` with the CSS URLs of denied hosts made inert; `escaped`: it is markup text, whose
        character references are CSS text too."""
        if self._hosts is None or not self._hosts.suspect.search(data.lower()):
            return data
        text = decode(data, self._charset)
        decoded = unescape(text, attribute=False) if escaped else text
        css, _ = rewrite_css(decoded, self._denied_css_url)
        if css == decoded:
            return data
        return encode(css, self._charset, "<&" if escaped else "")

    def _foreign_css(self, buf: bytes, pos: int, end: int, final: bool) -> int:
        """Text of an SVG/MathML <style>: held until the next tag (bounded), then rewritten."""
        if not final and end - pos <= MAX_TAG:
            return ~pos
        self._out.append(self._css_text(buf[pos:end], escaped=True))
        return end

    def _style_css(self, content: bytes, *, final: bool) -> bytes:
        if not final and self._css_size + len(content) < 2 * self._css_read:
            # A token still open: read again once it has doubled, and joined only then (linear time).
            self._css.append(content)
            self._css_size += len(content)
            return b""
        data = b"".join((*self._css, content)) if self._css else content
        self._css, self._css_size, self._css_read = [], 0, 0
        if self._hosts is None or not data or (final and not self._hosts.suspect.search(data.lower())):
            return data
        text = decode(data, self._charset)
        css, used = rewrite_css(text, self._denied_css_url, final=final)
        if not final and len(text) - used > MAX_TAG:  # one token longer than we hold: decide it as it is
            css, used = rewrite_css(text, self._denied_css_url, final=True)
        if used == len(text):
            return data if css == text else encode(css, self._charset)
        rest = encode(text[used:], self._charset)
        self._css, self._css_size, self._css_read = [rest], len(rest), len(rest)
        return encode(css, self._charset)

    # --- rewriting one tag ---

    def _rewrite(self, ns: bytes, name: bytes, tag: bytes, low: bytes, start: int) -> bytes:
        """The start tag `tag` (namespace `ns`: b"" for HTML), its fetches of denied hosts neutralised."""
        hosts = self._hosts
        if hosts is None:
            return tag
        names = SVG_URL_ATTRS.get(name, ()) if ns == b"svg" else URL_ATTRS.get(name, ()) if not ns else ()
        if ns and self._uncertain:  # maybe HTML after all: what the HTML element would fetch too
            names += URL_ATTRS.get(name, ())
        end = start + len(tag)
        styled = low.find(b"style", start, end) >= 0
        if not names and not styled:
            return tag
        if hosts.suspect.search(low, start, end) is None:
            return tag  # names no denied host in any spelling: the common case, decided without parsing
        if name == b"iframe" and not ns:  # its placeholder and srcdoc depend on the page
            return self._neutralise(ns, name, tag, names, mark=True)[0]
        # The same tag in the same state is rewritten the same way in every response of this consent
        # state, but for the page's mark: remembered without it (trackers repeat across pages, and a
        # page may repeat one tag many times).
        key = (tag, ns, self._uncertain and bool(ns), self._charset)
        found = hosts.memo.get(key)
        if found is None:
            found = self._neutralise(ns, name, tag, names, mark=False)
            if len(tag) <= MAX_MEMO_TAG:
                hosts.memo.put(key, found)
        edited, marked = found
        if not marked or self._mark is None:
            return edited
        cut = len(edited) - (2 if edited.endswith(b"/>") else 1)  # the mark goes last, as _neutralise puts it
        return edited[:cut] + self._marked() + edited[cut:]

    def _neutralise(
        self, ns: bytes, name: bytes, tag: bytes, names: tuple[bytes, ...], *, mark: bool
    ) -> tuple[bytes, bool]:
        """`_rewrite`'s work once the tag may name a denied host: the tag (its CSS rewritten, if that
        fetches from one), and whether it was neutralised, then with the page's mark unless `mark`
        is false."""
        attrs = parse_attrs(tag, len(name) + 1)
        edits: list[tuple[int, int, bytes]] = []
        for a in attrs:
            if a[0] == b"style" or (a[0] == b"srcdoc" and name == b"iframe" and not ns):
                value = self._inline(a[0], a[5])
                if value is not None:
                    edits.append((a[3], a[4], value))
        blocked = next(filter(None, (self._blocked(attrs, a) for a in names)), None)
        if blocked is not None and name == b"script" and not ns:
            kind = next((a[5] for a in attrs if a[0] == b"type"), None)  # the first one counts
            kind_text = attr_text(kind, self._charset).strip(" \t\n\f\r").lower() if kind is not None else ""
            if kind_text not in JS_TYPES:
                blocked = None  # not executed, not fetched: a data block or an already neutralised script
        if blocked is None:
            return (edit_tag(tag, attrs, edits, b"") if edits else tag), False
        renames = {a: b"data-consent-" + a for a in names}
        labels = self._hosts.labels  # type: ignore[union-attr]
        extra = labels.get(blocked.service) or labels.setdefault(blocked.service, _labels(blocked))
        extra += self._marked() if mark else b""
        if name == b"script" and not ns:
            renames[b"type"] = b"data-consent-type"
            extra = b' type="text/plain"' + extra
        elif name == b"iframe" and not ns and not any(a[0] == b"hidden" for a in attrs):
            extra = b' hidden="" data-consent-hidden=""' + extra
        kept = self._kept(attrs, names)
        for i, a in enumerate(attrs):
            new = renames.get(a[0])
            if new is not None and (i in kept or a[0] not in names):
                edits.append((a[1], a[2], new))
            elif new is not None:
                edits.append((a[1], a[4], b""))  # a duplicate the browser would not have used first
            elif a[0] == b"nonce" or a[0].startswith(b"data-consent-"):
                # Ours to write: markup that came with its own (reflected into the page, say) could
                # otherwise pick the URL, category or attributes the script restores on activation.
                edits.append((a[1], a[4], b""))
        edited = edit_tag(tag, attrs, edits, extra)
        if name == b"iframe" and not ns and self._placeholder is not None:
            placeholder = self._placeholder(blocked, self._lang).encode(self._charset, "xmlcharrefreplace")
            return placeholder + edited, True
        return edited, True

    def _blocked(self, attrs: list[Attr], name: bytes) -> Blocked | None:
        for a in attrs:  # every duplicate: renaming one exposes the next
            if a[0] == name:
                found = self._denies(a)
                if found is not None:
                    return found
        return None

    def _denies(self, a: Attr) -> Blocked | None:
        """The denied service a URL attribute fetches from, if any."""
        assert self._hosts is not None
        text = attr_text(a[5], self._charset)
        if a[0] in LIST_ATTRS:
            urls = text.split() if a[0] == b"ping" else srcset_urls(text)
        else:
            urls = [text]
        for url in urls:
            found = self._hosts.url(url)
            if found is not None:
                return found
        return None

    def _kept(self, attrs: list[Attr], names: tuple[bytes, ...]) -> set[int]:
        """Per URL attribute name, the one occurrence a neutralised tag keeps: the first that fetches
        from a denied host, else the first. Activation gives a script the page's nonce, so the URL it
        restores must be the tracker's, never a duplicate `src` beside it."""
        kept: dict[bytes, int] = {}
        for i, a in enumerate(attrs):
            if a[0] not in names:
                continue
            first = kept.setdefault(a[0], i)
            if first != i and self._denies(attrs[first]) is None and self._denies(a) is not None:
                kept[a[0]] = i
        return set(kept.values())

    def _inline(self, name: bytes, raw: bytes) -> bytes | None:
        """A new quoted value for a style or srcdoc attribute that fetches from a denied host, else None."""
        text = unescape(decode(raw, self._charset))
        if name == b"style":
            new, _ = rewrite_css(text, self._denied_css_url)
        else:  # srcdoc: an HTML document of its own
            nested = HtmlRewriter(
                self._hosts, None, charset=self._charset, placeholder=self._placeholder,
                mark=self._mark and self._shared_mark,
            )
            data = encode(text, self._charset)
            out = nested.feed(data) + nested.finish()
            new = text if out == data else decode(out, self._charset)
        if new == text:
            return None
        return b'"' + encode(new, self._charset, '&"') + b'"'

    def _marked(self) -> bytes:
        """The mark attribute for a neutralised tag."""
        if self._mark is None:
            return b""
        if self._mark_attr is None:
            self._mark_attr = b' nonce="' + html.escape(self._mark()).encode() + b'"'
        return self._mark_attr

    def _shared_mark(self) -> str:
        """The page's mark for a nested rewriter (srcdoc, noscript), drawn once for the page."""
        return html.unescape(self._marked()[8:-1].decode())

    # --- before the head ---

    def _scan_prolog(self, buf: bytes, low: bytes, pos: int, final: bool) -> int:
        """Before the head injection point: blanks, doctype, comments, <html>, then <head> or other."""
        out, n = self._out, len(buf)
        while pos < n:
            m = BLANK.match(buf, pos)
            if m:
                out.append(m.group(0))
                pos = m.end()
                continue
            if buf.startswith(b"<!--", pos):
                end = self._declaration(buf, low, pos, final)
                if end < 0 or self._state != DATA:
                    return ~end if end < 0 else end  # needs more input / inside the comment
                pos = end  # an abrupt <!--> or <!--->
                continue
            if buf.startswith((b"<!", b"<?"), pos):
                end = buf.find(b">", pos)
                if end < 0:
                    if not final and n - pos <= MAX_TAG:
                        return pos
                    end = n - 1
                out.append(buf[pos : end + 1])
                pos = end + 1
                continue
            m = PROLOG_TAG.match(low, pos)
            if m:
                t = MARKUP.match(low, pos)
                complete = t is not None and t.group(2) is not None
                if not complete and not final and n - pos <= MAX_TAG:
                    return pos
                if complete:
                    assert t is not None
                    tag = buf[pos : t.end()]
                    self._note_marker(low, pos, t.end(), m.group(1))
                    out.append(tag)
                    pos = t.end()
                    if m.group(1) == b"html":
                        self._lang = attr_value(tag, 5, b"lang", LANG)
                        continue
                    self._prolog = False
                    self._head = _Mark("head")
                    out.append(self._head)
                    return pos
            elif not final and n - pos < 6 and buf[pos : pos + 1] == b"<":
                return pos  # maybe the start of "<html" or "<head"
            # the first element or text: head_html goes before it
            self._prolog = False
            out.append(self._head_bytes(self._base + pos))
            return pos
        return pos

    # --- injection ---

    def _parts_bytes(self) -> tuple[bytes, bytes]:
        if self._parts is None:
            assert self._inject is not None
            head, body = self._inject(self._lang)
            self._parts = (
                head.encode(self._charset, "xmlcharrefreplace"),
                body.encode(self._charset, "xmlcharrefreplace"),
            )
        return self._parts

    def _head_bytes(self, at: int) -> bytes:
        """head_html, unless the page carries our marker before input offset `at`."""
        return b"" if self._marker_at is not None and self._marker_at < at else self._parts_bytes()[0]

    def _decide_head(self, at: int) -> None:
        if self._head is not None:
            self._replace(self._head, self._head_bytes(at))
            self._head = None

    def _mark_body(self, at: int) -> None:
        """A `</body>`: the body-end snippet goes here unless a later one comes."""
        self._decide_head(at)
        if self._body_done:
            return
        if self._body is not None:
            self._replace(self._body, b"")
        self._body = _Mark("body")
        self._body_closers = self._closers() or b""  # never None: </body> is read in the data state
        self._out.append(self._body)

    def _decide_body(self, *, inject: bool) -> None:
        assert self._body is not None
        injected = self._body_closers + self._parts_bytes()[1] if inject and self._marker_at is None else b""
        self._replace(self._body, injected)
        self._body = None
        self._body_done = True

    def _tag_closer(self) -> bytes:
        """What ends the tag the held input ends in (its quoted value, then the tag), if it does: the
        tag is then read as any other (rewritten, followed into raw text, SVG...)."""
        if self._state != TAG or self._long_tag is not None:
            return b""
        _, state, at = self._tag
        state = scan_tag(self._buf.lower(), at, state)[1]
        return b'">' if state == DQ else b"'>" if state == SQ else b">"

    def _closers(self) -> bytes | None:
        """What closes everything the tokenizer and tree state say is open here, innermost first, so
        that the body-end snippet after it is live HTML in the body, not text, a comment, template
        content or SVG/MathML: the raw text, comment or script we are in (in the states that decide
        what ends it), then each open <template> (the HTML parser pops all that is open in it), then
        the SVG/MathML elements still open outside them, with the HTML elements open in their
        integration points first. None inside <plaintext>, which nothing ends: the snippet would be
        text there, so it is left out."""
        state, parts = self._state, []
        if state == PLAIN:
            return None
        if state == COMMENT:
            parts.append(b"-->")  # after "-", "--" or "--!" as well
        elif state == BOGUS:
            parts.append(b">")
        elif state == CDATA:
            parts.append(b"]]>")
        elif state == SCRIPT:
            parts.append(b"</script>")
        elif state == ESCAPED or state == DOUBLE:
            parts.append(b"--></script>")  # "-->" leaves either escape; "</script" only the single one
        elif state == NOSCRIPT:  # with JavaScript off its content is markup: what is open in it first
            inner = self._nested._closers() if self._nested is not None else None
            parts.append((inner or b"") + b"</noscript>")
        elif state == RAW or state == STYLE:
            parts.append(b"</" + self._raw_name + b">")
        frames = self._foreign
        depth = len(frames)
        for at in reversed(self._templates):
            parts.append(b"</template>")
            depth = min(depth, at)
        for _, name, _, opened in reversed(frames[self._floor : depth]):
            parts.extend((b"</" + n + b">") * c for n, c in reversed(opened.items()) if n not in _NOT_CLOSED)
            parts.append(b"</" + name + b">")
        return b"".join(parts)

    def _replace(self, mark: _Mark, data: bytes) -> None:
        out = self._out
        for i in range(len(out) - 1, -1, -1):
            if out[i] is mark:
                out[i] = data
                return

    def _flush(self, *, final: bool) -> bytes:
        """Join what can be sent: everything before the first undecided injection point."""
        out = self._out
        while True:
            # the marks in the output are the undecided points
            first = None if self._head is None and self._body is None else next(
                (i for i, p in enumerate(out) if isinstance(p, _Mark)), None
            )
            if first is None:
                data = b"".join(out)  # type: ignore[arg-type]
                out.clear()
                return data
            held = sum(len(p) for p in out[first + 1 :] if isinstance(p, bytes))
            if not final and held <= MAX_HOLD:
                break
            # Held too long (or the end): decide the point where it stands.
            if out[first] is self._head:
                self._decide_head(self._fed)
            else:
                self._decide_body(inject=True)
        data = b"".join(out[:first])  # type: ignore[arg-type]
        del out[:first]
        return data


def _known_runs(low: bytes, pos: int, needles: tuple[bytes, ...]) -> int:
    """Where the skip from `pos` in HTML content stops, as far as runs of markup seen before tell:
    a page served again, or its template, is mostly the same runs, and a dict lookup costs a
    fraction of SKIP_PLAIN (which reads each byte of every tag) and of searching every run for each
    denied host and the marker. A run ends at a `<` after a newline (else any `<`) at least RUN
    bytes on, so that the runs after a part that differs per response are the same again. A run
    holding a denied host as written or the marker's bytes is never passed: the skip stops at
    them. Elsewhere what SKIP_PLAIN does in a run depends on its bytes alone: it is bounded by the
    run's end, which it reaches when every tag in the run is one it skips."""
    while True:
        cut = low.find(b"\n<", pos + RUN, pos + 4 * RUN) + 1
        if not cut:
            cut = low.find(b"<", pos + RUN)
            if cut < 0:
                return pos
        key = (needles, low[pos:cut])
        size = _RUNS.get(key)
        if size is None:
            run = key[1]
            if MARKER in run or any(n in run for n in needles):
                size = 0
            else:
                size = SKIP_PLAIN.match(low, pos, cut).end() - pos  # type: ignore[union-attr]
            _RUNS.put(key, size)
        pos += size
        if pos < cut:
            return pos


def _labels(blocked: Blocked) -> bytes:
    cat = html.escape(blocked.category).encode()
    svc = html.escape(blocked.service).encode()
    return b' data-consent-category="' + cat + b'" data-consent-service="' + svc + b'"'


