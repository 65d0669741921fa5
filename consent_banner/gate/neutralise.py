"""The tag decisions of the HTML rewriter: which start tags fetch from a denied host, and how each
is neutralised (the markup contract below, which the browser script undoes after consent).

What fetches: `<img|image src srcset>`, `<input src>`, `<source src srcset>`, `<video src poster>`,
`<audio|track|embed|frame|script src>`, `<object data>`, `<link href imagesrcset>`, `<iframe src>`,
`<a|area ping>`, `<table|td|th|body background>`, `<base href>`; in SVG `<image|use|feImage|script
href xlink:href>`; CSS (`css.py`) in `<style>` (HTML or SVG) and in `style` attributes, where each
`url()` or string naming a denied host becomes ``about:invalid`` (the policy's `img-src`,
`font-src` and `style-src` refuse such a fetch as well). An `<iframe srcdoc>` is a document of its
own: it is rewritten by a nested rewriter and put back, escaped, in the attribute.

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
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import TYPE_CHECKING

from .css import rewrite_css
from .hosts import Blocked, HostRules
from .markup import JS_TYPES, LIST_ATTRS, SVG_URL_ATTRS, URL_ATTRS, Attr, edit_tag, parse_attrs
from .urls import attr_text, decode, encode, srcset_urls, unescape

if TYPE_CHECKING:
    from .inline import InlineRules

MAX_MEMO_TAG = 512  # the longest tag remembered per consent state, in bytes


class TagRewriter:
    """What HtmlRewriter does to one start tag, or to CSS, given the denied hosts (the base of
    HtmlRewriter, which sets the state below)."""

    _hosts: HostRules | None  # None: nothing to neutralise
    _charset: str  # the page's, in which a URL's or CSS's non-ASCII bytes are read
    _placeholder: Callable[[Blocked, str | None], str] | None  # the HTML before a neutralised iframe
    _mark: Callable[[], str] | None  # the page's CSP nonce, drawn only when a tag is neutralised
    _mark_attr: bytes | None  # its attribute, once drawn
    _lang: str | None  # the page's <html lang>, the placeholders' language
    _uncertain: bool  # maybe HTML where SVG/MathML is followed (see OpenElements)
    _inline_rules: InlineRules | None  # the inline scripts of services (inline.py), for a srcdoc

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
        if hosts.suspect.search(low, start, end) is None and not (
            name == b"iframe" and self._inline_rules is not None and low.find(b"srcdoc", start, end) >= 0
        ):  # a srcdoc document's inline scripts may hold a denied service's signature (inline.py)
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
        assert self._hosts is not None
        is_script = name == b"script" and not ns  # its labels may ask for a reload (inline.py)
        labels = self._hosts.script_labels(blocked) if is_script else self._hosts.labels(blocked)
        extra = labels + (self._marked() if mark else b"")
        if is_script:
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
            from .html import HtmlRewriter  # the whole rewriter, which builds on this class

            nested = HtmlRewriter(
                self._hosts, None, charset=self._charset, placeholder=self._placeholder,
                mark=self._mark and self._shared_mark, inline=self._inline_rules,
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
