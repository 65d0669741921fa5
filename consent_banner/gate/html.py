"""Streaming HTML rewrite: tracker tags of denied services neutralised, our snippets injected.

`HtmlRewriter.feed(chunk)` returns what can be sent now; `finish()` returns the rest. It never
holds the page: only a tag or tail that straddles two chunks (at most MAX_TAG bytes), the `<head>`
until `</head>` (to see whether the page already carries our snippet, at most MAX_HOLD bytes) and
the output after the latest `</body>` (where the body-end snippet goes, at most MAX_HOLD bytes).
Everything but the tags of interest is copied byte for byte; the scanner works on bytes, so any
ASCII-compatible charset works (the caller passes UTF-16/32 bodies through untouched).

This module is the tokenizer: the loop over one buffer that switches between its states, the data
state, and tags (held across chunks, streamed when over-long, then rewritten and followed). It
stays over 400 lines because those share one buffer, its lower-cased copy and their offsets, which
every step hands on. What the tokenizer leans on has its own module, each a class in the line of
bases of `HtmlRewriter`, each using only those before it, all state set by `HtmlRewriter.__init__`:
`neutralise.py` (TagRewriter: the tag decisions and the markup contract), `inject.py` (Injection:
the injection points), `tree.py` (OpenElements: SVG/MathML elements and templates), `rawtext.py`
(RawText: comments, script data, raw text, CSS, `<noscript>`); with `markup.py` (the tokenizer's
tables and patterns), `hosts.py` (the denied hosts of a consent state) and `runs.py` (runs of
markup remembered).

How it reads (on a lower-cased copy of each buffer, offsets shared): as the HTML5 tokenizer does,
in every state that decides where a tag or attribute is: data, tag and attribute states (quoted,
unquoted, a name that starts with `=`), self-closing, comments (`<!-->`, `<!--->`, `--!>`), bogus
comments (`<?...>`, `</3...>`, `<!x...>`), doctype, CDATA (only in SVG/MathML), RCDATA (title,
textarea), RAWTEXT (style, xmp, iframe, noembed, noframes), PLAINTEXT, and script data with its
escaped and double-escaped states; and the tree builder's switch into and out of SVG/MathML
(`tree.py`).

Text and tags that can fetch nothing are skipped in one regex match (which stops where the marker's
bytes could be an attribute name: see `inject.py`); so are fetching tags whose values hold no byte
that could spell a host another way (`&`, `%`, `\\`, controls, non-ASCII) and no denied host as
written (inside SVG/MathML too, where such tags are followed by name). Runs of markup that skip
passed whole are remembered by content (`runs.py`): a page served again is mostly looked up, not
read; the denied hosts are searched for NEEDLE_WINDOW bytes at a time, never far past where the
skips go. A tag rewritten once is remembered, per consent state without the page's mark (MAX_MEMO)
and per page (MAX_SEEN), and the same bytes again are not read again. Every other fetching tag is
parsed and each URL decoded as the browser does (`urls.py`: references, percent, IDNA, stripped
whitespace, backslashes, `//host`). Every pattern is possessive, each byte is looked at a bounded
number of times, and a tag that does not end in the chunk is resumed where it stopped, not
rescanned: linear time on any input (bench/bench_gate.py measures the worst cases). Before
`<head>` the prolog (doctype, comments, `<html lang>`) is read too.

A tag longer than MAX_TAG is not held: it streams through, and every attribute in it that could
fetch (or holds CSS) is renamed to ``data-consent-*`` whatever its value (unless a data: URL), with
the mark but no labels: it is never activated. Non-ASCII bytes of a URL or CSS are read in the
page's charset; the caller passes charsets that are not ASCII-compatible (UTF-16/32, ISO-2022-*)
through untouched, under a policy that admits only what is granted.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ..memo import Memo
from .hosts import Blocked, HostRules
from .inject import MAX_HOLD, Inject, Mark
from .inline import InlineRules, InlineScripts
from .markup import (
    BEFORE,
    BLANK,
    BOGUS,
    BREAKOUT,
    CSS_AND_HTML,
    DATA,
    DOUBLE,
    DQ,
    ESCAPED,
    FOREIGN,
    FOREIGN_SKIP,
    IN_NAME,
    LANG,
    MARKER,
    MARKUP,
    MAX_TAG,
    NOSCRIPT,
    PLAIN,
    PROLOG_TAG,
    RAW,
    REPEAT,
    SCRIPT,
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
    attr_value,
    end_tag_pattern,
    frame_kind,
    has_any,
    long_tag_attrs,
    scan_tag,
    self_closing,
)
from .neutralise import MAX_MEMO_TAG
from .pages import NOT_REPLAYED, PAGES, SEEN, PageKey, Recorder, replayable
from .runs import known_runs
from .tree import MAX_DEPTH
from .urls import url_host

__all__ = ["MAX_DEPTH", "MAX_HOLD", "MAX_TAG", "Blocked", "HostRules", "HtmlRewriter", "Inject", "url_host"]

MAX_SEEN = 64 * 1024  # bytes of rewritten tags remembered per response (then all forgotten)
NEEDLE_WINDOW = 32 * 1024  # bytes searched at once for the denied hosts as written
# Top SVG/MathML elements under which FOREIGN_SKIP does not run: in annotation-xml an <svg> is SVG.
_NO_RUN = frozenset({b"annotation-xml", b"style"})
# HTML start tags whose effect on what is open goes beyond their rewrite: never replayed (`_repeats`).
_EFFECTS = frozenset({b"body", b"template"})


def _seen_weight(tag: bytes, rewritten: bytes) -> int:
    return len(tag) + len(rewritten)


class HtmlRewriter(InlineScripts):
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
        inline: InlineRules | None = None,
    ) -> None:
        self._hosts = hosts if hosts else None  # None: nothing to neutralise
        self._inline_rules = inline if inline else None  # None: inline scripts stream as they are
        self._held_script: list[bytes] | None = None  # an inline script held until decided (inline.py)
        self._held_size = 0
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
        self._out: list[bytes | Mark] = []  # processed output; marks hold injection points
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
        # An unfinished tag: (whether an end tag, its state, where to resume from its `<`).
        self._tag: tuple[bool, int, int] = (False, DATA, 0)
        self._long_tag: tuple[bytes, bool] | None = None  # an over-long tag streaming through: (name, denied)
        self._final = False
        self._hits: dict[bytes, int] = {}  # the next place of each needle in the buffer being scanned
        self._hits_in = b""
        # No run is looked up in _runs_in before _runs_from: the end of the run the last lookup
        # stopped in (a page with many tags to read costs a lookup per run, not one per tag).
        self._runs_in = b""
        self._runs_from = 0
        self._hit = -1
        self._css: list[bytes] = []  # CSS of a <style> that may continue in the next chunk, in pieces
        self._css_size = 0  # their size
        self._css_read = 0  # its size when last read
        self._css_rest = False  # _css[0] is CSS read before and put back
        self._style_copy: list[bytes] | None = None  # the <style>'s CSS for its held copy (rawtext.py)
        self._style_copy_size = 0
        self._style_media = b""
        self._style_blocked: dict[str, Blocked] = {}
        self._prolog = inject is not None  # still before <head> or the first element
        self._document = False  # a doctype or <html> read in the prolog (else a fragment: inject.py)
        self._lang: str | None = None
        self._marker_at: int | None = None  # input offset of the first tag with the marker attribute
        self._marker_in = b""  # the buffer whose next marker bytes are at _marker_next
        self._marker_next = -1
        self._fed = 0  # input bytes fed so far
        self._base = 0  # input offset of the first byte of the buffer being scanned
        self._content = False  # seen any non-blank input
        self._parts: tuple[bytes, bytes] | None = None
        self._head: Mark | None = None
        self._body: Mark | None = None
        self._body_closers = b""  # what closes everything open at the body mark (see _closers)
        self._body_done = inject is None
        self._fresh = True  # nothing fed yet

    def feed(self, chunk: bytes) -> bytes:
        if not chunk:
            return b""
        self._fresh = False
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

    def rewrite(self, body: bytes) -> bytes:
        """`feed(body) + finish()`: the rest of the response is `body`. A whole body given to a fresh
        rewriter is replayed when the same body was rewritten twice before in the same consent
        state (`pages.py`): what differs per response is filled in, nothing is read again."""
        if (self._hosts is None and self._inline_rules is None) or not self._fresh or not body:
            return self.feed(body) + self.finish()
        key: PageKey = (
            self._hosts, self._inline_rules, body, self._charset, self._scripting,
            self._inject is not None, self._placeholder is not None, self._mark is not None,
        )
        found = PAGES.get(key)
        if found is None:
            seen = hash(key)
            if seen not in SEEN:
                SEEN.put(seen, True)
                return self.feed(body) + self.finish()
            if not replayable(body):
                PAGES.put(key, NOT_REPLAYED)
                return self.feed(body) + self.finish()
            recorder, given = Recorder(), (self._inject, self._placeholder, self._mark)
            self._inject = recorder.inject if self._inject is not None else None
            self._placeholder = recorder.placeholder if self._placeholder is not None else None
            self._mark = recorder.mark if self._mark is not None else None
            out = self.feed(body) + self.finish()
            self._inject, self._placeholder, self._mark = given
            found = PAGES.put(key, recorder.template(out))
        elif found is NOT_REPLAYED:
            return self.feed(body) + self.finish()
        return found.fill(self._charset, self._inject, self._placeholder, self._mark)

    def finish(self) -> bytes:
        self._fresh = False
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
        self._release_script(complete=True)  # one the input ends in, with no text left to read
        if at_end:  # a tag that only that closer ended is ours, not the page's: its marker is not
            self._marker_at = marker
        if self._buf:  # never lose a byte, whatever state the scan stopped in
            self._out.append(self._buf)
            self._buf = b""
        if self._css:
            self._out.append(self._style_css(b"", final=True))
        if self._nested is not None:
            self._out.append(self._nested.finish())
        if self._prolog and not self._document:  # blanks and comments only: a fragment
            self._no_injection()
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
                if skip >= self._runs_from or self._runs_in is not low:
                    skip, self._runs_from = known_runs(low, skip, needles)
                    self._runs_in = low
                hit = self._next_needle(low, skip)
                marker = self._next_marker(low, skip)  # a tag that may hold it is read by _start_tag
                stop = min(hit, marker)
                skip = SKIP_PLAIN.match(low, skip, min(stop, self._runs_from)).end()  # type: ignore[union-attr]
                if skip == self._runs_from < stop:
                    continue  # where a run to look up starts
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

    def _next_needle(self, low: bytes, pos: int) -> int:
        """Where the next denied host as written starts (len(low) if none), or where the search for
        them stopped (NEEDLE_WINDOW on, or about where the next run is looked up: no page is searched
        further than its skips go, which `known_runs` may take far), each needle's next place
        remembered per buffer so that no byte is searched twice."""
        if self._hosts is None:
            return len(low)
        if self._hits_in is not low:
            self._hits, self._hits_in, self._hit = {}, low, -1
        elif pos < self._hit:
            return self._hit  # still the nearest
        hits = self._hits
        best = n = len(low)
        limit = pos + NEEDLE_WINDOW
        if self._runs_in is low and pos < self._runs_from < limit:
            limit = max(self._runs_from, pos + 1024)
        for needle in self._hosts.needles:
            at = hits.get(needle, -1)
            if at < pos or (at == pos and not low.startswith(needle, pos)):
                at = low.find(needle, pos, limit + len(needle) - 1)
                hits[needle] = at = min(limit, n) if at < 0 else at
            best = min(best, at)
        self._hit = best
        return best

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
                self._document = self._document or low.startswith(b"<!doctype", pos)
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
                    self._document = True
                    if m.group(1) == b"html":
                        self._lang = attr_value(tag, 5, b"lang", LANG)
                        continue
                    self._prolog = False
                    self._head = Mark("head")
                    out.append(self._head)
                    return pos
            elif not final and n - pos < 6 and buf[pos : pos + 1] == b"<":
                return pos  # maybe the start of "<html" or "<head"
            # the first element or text: head_html goes before it, unless the body is a fragment
            if not self._fragment_at(low, pos):
                self._prolog = False
                out.append(self._head_bytes(self._base + pos))
            return pos
        return pos

    def _begin_unfinished(self, buf: bytes, start: int, name: bytes, is_end: bool, final: bool) -> int:
        """A tag that does not end in this buffer: held from its `<` until it does."""
        if final:  # the input ends inside a tag: the browser drops it, and nothing after it is markup
            self._out.append(buf[start:])
            return len(buf)
        self._tag = (is_end, IN_NAME, 1 + is_end)  # resume at the name, offsets from the `<`
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
        self._tag = (is_end, state, end - pos)
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
        self._tag = (self._tag[0], state, end - stop)
        return ~stop

    def _start_tag(
        self, buf: bytes, low: bytes, start: int, end: int, name: bytes, sent: bytes | None = None
    ) -> int:
        """A start tag at buf[start:end]: rewritten, and followed into SVG/MathML or raw text; `sent`:
        an over-long tag already streamed but for this last piece of it."""
        if sent is None and end - start > MAX_TAG:  # too long to decide whole: streamed
            self._long_tag, self._final, self._tag = (name, False), False, (False, BEFORE, 0)
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
        if name != b"script" or sent is not None or not self._hold_script(rewritten):
            emit(rewritten)  # else an inline script, held until its text is known (inline.py)
        if name == b"template":
            self._templates.append(len(frames))
        switch = SWITCH.get(name)
        if switch is not None:
            if switch == NOSCRIPT:
                if not self._scripting:
                    return end
                self._nested = nested = HtmlRewriter(
                    self._hosts, None, charset=self._charset, placeholder=self._placeholder,
                    mark=self._mark and self._shared_mark, scripting=False, inline=self._inline_rules,
                )
                # it starts where this one stands
                nested._foreign = [(*f[:3], dict(f[3])) for f in frames]
                nested._uncertain = self._uncertain
                nested._floor = len(frames)
            self._state = switch
            if switch != SCRIPT:
                self._end, self._raw_name = end_tag_pattern(name), name
            if switch == STYLE:
                self._style_opened(tag)  # whether its CSS may get a held copy (rawtext.py)
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
            self._mark_body(self._base + start, self._closers)
        elif name == b"head":
            self._decide_head(self._base + start)
        self._out.append(buf[start:end] if sent is None else sent)
        self._close(name)
        return end

    def _tag_closer(self) -> bytes:
        """What ends the tag the held input ends in (its quoted value, then the tag), if it does: the
        tag is then read as any other (rewritten, followed into raw text, SVG...)."""
        if self._state != TAG or self._long_tag is not None:
            return b""
        _, state, at = self._tag
        state = scan_tag(self._buf.lower(), at, state)[1]
        return b'">' if state == DQ else b"'>" if state == SQ else b">"
