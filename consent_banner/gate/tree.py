"""What the HTML rewriter follows of the tree builder: open SVG/MathML elements and HTML templates.

The tree builder's switch is followed: inside `<svg>` and `<math>` a `<style>` or `<plaintext>` is
an ordinary element (its content is markup, and `<img>`, `<p>`... leave SVG/MathML again), with the
integration points (foreignObject, desc, title, annotation-xml as HTML; mi, mo, mn, ms, mtext)
where HTML starts over. Open HTML `<template>` elements are counted (for the injection); other open
HTML elements are not tracked: when an end tag inside SVG/MathML may or may not close one, the
rewriter stays in SVG/MathML but from then on (`_uncertain`) lets no comment hide a raw text
element's content and neutralises what either reading would fetch.
"""

from __future__ import annotations

from .inject import Injection
from .markup import FOREIGN, FOREIGN_TAG, SWITCH, close_one

MAX_DEPTH = 1024  # SVG/MathML elements nested deeper than this are not followed one by one
# HTML elements the closers leave alone: a <template> is closed before them, the others cannot be.
_NOT_CLOSED = frozenset({b"template", b"body", b"html", b"head"})


class OpenElements(Injection):
    """The open elements HtmlRewriter (a base of it) follows, and what they change in how it reads."""

    # Open SVG/MathML elements: (namespace, name, kind, HTML elements open in it per name).
    _foreign: list[tuple[bytes, bytes, int, dict[bytes, int]]]
    # Open HTML <template> elements: per template, how many SVG/MathML elements were open at it.
    _templates: list[int]
    _floor: int  # SVG/MathML elements open outside this (nested <noscript>) rewriter

    def _push(self, frame: tuple[bytes, bytes, int, dict[bytes, int]]) -> None:
        if len(self._foreign) < MAX_DEPTH:
            self._foreign.append(frame)
        else:  # deeper than we follow: later end tags may close what we did not push
            self._uncertain = True

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

    def _close(self, name: bytes) -> None:
        """An end tag `name` read in the data state: what it closes among the elements followed."""
        frames = self._foreign
        if name == b"template" and self._templates and self._ends_template():
            del frames[self._templates.pop() :]  # the HTML parser pops all that is open in it
            if frames:
                close_one(frames[-1][3], name)
            self._uncertain = self._uncertain and bool(frames)
            return
        if not frames:
            return
        # frames[base] is the nearest integration point with HTML elements open in it (-1: none), so
        # frames[base + 1:] are the SVG/MathML elements the end tag meets before any HTML element.
        base = len(frames) - 1
        while base >= 0 and not frames[base][3]:
            base -= 1
        if base == len(frames) - 1:  # the current node is HTML: only HTML elements can close
            if name in frames[base][3]:
                close_one(frames[base][3], name)
                return
            # The standard ignores it (an integration point stands in the way); html5lib closes the
            # SVG/MathML element of that name. Follow the latter, unsure from now on.
            for i in range(len(frames) - 1, -1, -1):
                if frames[i][1] == name:
                    del frames[i:]
                    self._uncertain = bool(frames)
                    break
            return
        if name == b"br" or name == b"p":  # these two leave SVG/MathML content
            while len(frames) > base + 1 and frames[-1][2] == FOREIGN:
                frames.pop()
            self._uncertain = self._uncertain and bool(frames)
            return
        for i in range(len(frames) - 1, base, -1):
            if frames[i][1] == name:
                del frames[i:]
                self._uncertain = self._uncertain and bool(frames)
                return
        # An end tag of an HTML element open below closes the SVG/MathML inside it, unless an
        # integration point (a scope boundary) stands in between.
        if base >= 0:
            if frames[base][3].get(name) and all(f[2] == FOREIGN for f in frames[base + 1 :]):
                del frames[base + 1 :]
                close_one(frames[base][3], name)
        else:
            self._uncertain = True  # whether an HTML element of that name is open: not tracked
        return

    def _open_closers(self) -> bytes:
        """The end tags that close, innermost first, each open <template> (the HTML parser pops all
        that is open in it), then the SVG/MathML elements still open outside them, with the HTML
        elements open in their integration points first."""
        parts: list[bytes] = []
        frames = self._foreign
        depth = len(frames)
        for at in reversed(self._templates):
            parts.append(b"</template>")
            depth = min(depth, at)
        for _, name, _, opened in reversed(frames[self._floor : depth]):
            parts.extend((b"</" + n + b">") * c for n, c in reversed(opened.items()) if n not in _NOT_CLOSED)
            parts.append(b"</" + name + b">")
        return b"".join(parts)
