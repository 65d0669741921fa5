"""Where the rewriter puts our snippets: the injection points, held in the output until decided.

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

Fragments get nothing either: a body that does not start as a document (no doctype, `<html>`,
`<head>` or `<body>` before its first element or text, blanks and comments aside; or nothing but
those) is a piece of a page, swapped into one that has its banner already (`<li>row 3</li>`, a
`<tr>`): it is still rewritten, byte for byte but for the tags neutralised, and carries no banner,
dialog, script, stylesheet or Consent Mode default (`_document`, `_fragment_at`). A doctype later
in the body (reflected text) changes nothing: only the prolog is read. A request that asks for a
fragment by its headers (`FRAGMENT_HEADERS`, `asks_fragment`) gets no `Inject` at all (the
middleware's page hooks), and HTML the middleware could inject into varies on those headers
(`FRAGMENT_VARY`).

"""

from __future__ import annotations

import re
from collections.abc import Callable

from .markup import MARKER, marker_candidate, parse_attrs
from .neutralise import TagRewriter

MAX_HOLD = 64 * 1024  # output held for an injection decision before it is made anyway

Inject = Callable[[str | None], tuple[str, str]]

# The request headers of an answer swapped into a page already loaded: htmx's, Turbo's frames',
# and the one jQuery and most XHR wrappers send. HTML we could inject into varies on them.
FRAGMENT_VARY = (b"HX-Request", b"Turbo-Frame", b"X-Requested-With")
FRAGMENT_HEADERS = frozenset(name.lower() for name in FRAGMENT_VARY)  # as ASGI names them
_BODY_TAG = re.compile(rb"<body(?=[\t\n\f\r />])")  # on the lower-cased buffer


def asks_fragment(name: bytes, value: bytes) -> bool:
    """Whether a request header named in FRAGMENT_HEADERS asks for a piece of a page, not a page:
    `HX-Request: true` (htmx sends no other value), any `Turbo-Frame`, `X-Requested-With: XMLHttpRequest`."""
    if name == b"turbo-frame":
        return True
    if name == b"hx-request":
        return value.strip() == b"true"
    return value.strip().lower() == b"xmlhttprequest"


class Mark:
    """An injection point held in the output until it is decided."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


class Injection(TagRewriter):
    """The injection points of HtmlRewriter (a base of it): where head_html and
    body_end_html go, decided as the tokenizer reads on. HtmlRewriter sets the state below."""

    _inject: Inject | None  # gives head_html and body_end_html for the page's language
    _out: list[bytes | Mark]  # processed output; marks hold injection points
    _prolog: bool  # still before <head> or the first element
    _document: bool  # a doctype or <html> read in the prolog: the body is a document, not a fragment
    _marker_at: int | None  # input offset of the first tag with the marker attribute
    _marker_in: bytes  # the buffer whose next marker bytes are at _marker_next
    _marker_next: int
    _fed: int  # input bytes fed so far
    _base: int  # input offset of the first byte of the buffer being scanned
    _content: bool  # seen any non-blank input
    _parts: tuple[bytes, bytes] | None  # head_html and body_end_html, encoded
    _head: Mark | None
    _body: Mark | None
    _body_closers: bytes  # what closes everything open at the body mark
    _body_done: bool

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

    def _fragment_at(self, low: bytes, pos: int) -> bool:
        """At the body's first element or text (`low[pos:]`), past the prolog: whether the body is a
        fragment (nothing said it is a document, and this is no `<body>` tag); then nothing is
        injected into it, from here to the end."""
        if self._document or _BODY_TAG.match(low, pos):
            return False
        self._no_injection()
        return True

    def _no_injection(self) -> None:
        """The body is a fragment: it is rewritten, and gets no snippet, no injection point held."""
        self._inject = None
        self._prolog = False
        self._body_done = True

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

    def _mark_body(self, at: int, closers: Callable[[], bytes | None]) -> None:
        """A `</body>`: the body-end snippet goes here unless a later one comes, after `closers()`
        (what closes everything open there)."""
        self._decide_head(at)
        if self._body_done:
            return
        if self._body is not None:
            self._replace(self._body, b"")
        self._body = Mark("body")
        self._body_closers = closers() or b""  # never None: </body> is read in the data state
        self._out.append(self._body)

    def _decide_body(self, *, inject: bool) -> None:
        assert self._body is not None
        injected = self._body_closers + self._parts_bytes()[1] if inject and self._marker_at is None else b""
        self._replace(self._body, injected)
        self._body = None
        self._body_done = True

    def _replace(self, mark: Mark, data: bytes) -> None:
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
                (i for i, p in enumerate(out) if isinstance(p, Mark)), None
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
