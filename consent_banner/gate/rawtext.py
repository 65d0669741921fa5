"""The tokenizer states of the HTML rewriter between tags: comments, CDATA, doctype, script data,
RAWTEXT/RCDATA, `<style>` (its CSS rewritten) and `<noscript>` (rewritten by a nested rewriter).

A comment or CDATA section hides its content only where the tree state says it does (`_hides`).
The CSS of a `<style>` is rewritten (`css.py`), held while a token in it may continue in the next
chunk. A `<style>` whose CSS names one denied service (a theme's `@import` of Google Fonts, an
`@font-face` on its host) is followed by held copies of what it loads, neutralised as the markup
contract says (`neutralise.py`): ``</style>``, a ``<link rel="stylesheet" data-consent-import=""
data-consent-href=URL data-consent-category=CAT data-consent-service=SVC nonce=N>`` per `@import`
of the service (the attribute tells it from the page's own links), then
``<style type="text/plain" data-consent-type="text/css" (the same labels)>`` and its original CSS
without the `@import` rules, closed by the page's own `</style>`. Activation gives them back their
`href` and type, and the browser applies them: the fonts load on the page where the service is
allowed, without a reload. Only with one denied service (activated for one, it
would load another's), an HTML `<style>` of CSS (no other `type`), up to MAX_STYLE_COPY bytes, in a
page with JavaScript on and a mark.

With JavaScript on, `<noscript>` is raw text; its content goes through a nested rewriter with
scripting off (with JavaScript off it is live markup: pixels hide there). `_closers` says what
closes the state the input stands in, for the body-end snippet (`inject.py`).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .css import rewrite_css, split_imports
from .hosts import Blocked, HostRules
from .markup import (
    BOGUS,
    CDATA,
    COMMENT,
    COMMENT_END,
    DATA,
    DOUBLE,
    ESCAPED,
    MAX_TAG,
    NOSCRIPT,
    PLAIN,
    RAW,
    SCRIPT,
    SCRIPT_STATES,
    STYLE,
    parse_attrs,
)
from .tree import OpenElements
from .urls import attr_text, decode, encode

MAX_STYLE_COPY = 32 * 1024  # bytes of a <style>'s CSS kept for its held copy; a longer one gets none
_CSS_TYPES = ("", "text/css")  # the types of a <style> browsers apply

if TYPE_CHECKING:
    from .html import HtmlRewriter


class RawText(OpenElements):
    """What HtmlRewriter (a base of it) does in the states other than data and tags."""

    _state: int  # the tokenizer state (markup.DATA, RAW, ...)
    _end: re.Pattern[bytes]  # what ends the raw text we are in
    _raw_name: bytes  # the element of that raw text
    _nested: HtmlRewriter | None  # the rewriter of the <noscript> we are in
    _css: list[bytes]  # CSS of a <style> that may continue in the next chunk, in pieces
    _css_size: int  # their size
    _css_read: int  # its size when last read
    _css_rest: bool  # _css[0] is CSS read before and put back, not new input
    # The <style> being read: its original CSS while it may get a held copy (else None), the copy's
    # start tag, and the denied services its CSS names.
    _style_copy: list[bytes] | None
    _style_copy_size: int
    _style_media: bytes  # its media attribute, for the copy and the links
    _style_blocked: dict[str, Blocked]
    _hosts: HostRules | None
    _charset: str
    _scripting: bool

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
            if m is not None and self._style_copy is not None:
                self._out.append(self._held_style())
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
        if self._style_copy is not None:
            self._copy_style((*self._css[1 if self._css_rest else 0 :], content))
        self._css, self._css_size, self._css_read, self._css_rest = [], 0, 0, False
        if self._hosts is None or not data or (final and not self._hosts.suspect.search(data.lower())):
            return data
        text = decode(data, self._charset)
        css, used = rewrite_css(text, self._style_denied, final=final)
        if not final and len(text) - used > MAX_TAG:  # one token longer than we hold: decide it as it is
            css, used = rewrite_css(text, self._style_denied, final=True)
        if used == len(text):
            return data if css == text else encode(css, self._charset)
        rest = encode(text[used:], self._charset)
        self._css, self._css_size, self._css_read, self._css_rest = [rest], len(rest), len(rest), True
        return encode(css, self._charset)

    # --- the held copy of a <style> (see the module docstring) ---

    def _style_opened(self, tag: bytes) -> None:
        """An HTML <style> start tag: whether its CSS may get a held copy, and the copy's start tag."""
        self._style_copy, self._style_copy_size, self._style_blocked = None, 0, {}
        if self._hosts is None or self._mark is None or not self._scripting:
            return  # nothing to neutralise, no mark to activate it by, or no script to do it
        attrs = parse_attrs(tag, len(b"<style"))
        kind = next((a[5] for a in attrs if a[0] == b"type"), None)
        if kind is not None and attr_text(kind, self._charset).strip(" \t\n\f\r").lower() not in _CSS_TYPES:
            return  # not CSS: typed text/css, activation would make it CSS
        media = next((a[5] for a in attrs if a[0] == b"media"), None)
        self._style_media = b""
        if media is not None:
            self._style_media = (
                b' media="' + encode(attr_text(media, self._charset), self._charset, '&"') + b'"'
            )
        self._style_copy = []

    def _copy_style(self, pieces: tuple[bytes, ...]) -> None:
        assert self._style_copy is not None
        self._style_copy_size += sum(map(len, pieces))
        if self._style_copy_size > MAX_STYLE_COPY:
            self._style_copy = None
        else:
            self._style_copy.extend(pieces)

    def _style_denied(self, url: str) -> bool:
        """`_denied_css_url` for the CSS of a <style>, remembering which services it names."""
        assert self._hosts is not None
        found = self._hosts.url(url)
        if found is None:
            return False
        self._style_blocked[found.service] = found
        return True

    def _held_style(self) -> bytes:
        """At the end of a <style>: the end tag, a held `<link rel=stylesheet>` per @import of the
        denied service, and the held copy's start tag and CSS without its @import rules (the
        browser's preload scanner fetches an @import even in a <style type="text/plain">), the page's
        own end tag to follow. Nothing when its CSS named no denied service, more than one, or an
        @import in a form `split_imports` does not take out."""
        copy, blocked, hosts = self._style_copy, self._style_blocked, self._hosts
        self._style_copy, self._style_blocked = None, {}
        if copy is None or len(blocked) != 1 or hosts is None:
            return b""
        split = split_imports(decode(b"".join(copy), self._charset))
        if split is None:
            return b""
        imports, rest = split
        held = hosts.labels(next(iter(blocked.values()))) + self._marked() + b">"
        links = [
            b'<link rel="stylesheet" data-consent-import="" data-consent-href="'
            + encode(url, self._charset, '&"')
            + b'"'
            + self._style_media
            + held
            for url in imports
            if hosts.url(url) is not None  # the others load from the <style> itself
        ]
        start = b'<style type="text/plain" data-consent-type="text/css"' + self._style_media + held
        return b"".join((b"</style>", *links, start, encode(rest, self._charset)))

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
        return b"".join(parts) + self._open_closers()
