"""Streaming HTML rewrite: tracker tags of denied services neutralised, our snippets injected.

`HtmlRewriter.feed(chunk)` returns what can be sent now; `finish()` returns the rest. It never
holds the page: only a tag or tail that straddles two chunks (at most MAX_TAG bytes), the `<head>`
until `</head>` (to see whether the page already carries our snippet, at most MAX_HOLD bytes) and
the output after the latest `</body>` (where the body-end snippet goes, at most MAX_HOLD bytes).
Everything but the tags of interest is copied byte for byte; the scanner works on bytes, so any
ASCII-compatible charset works (the caller passes UTF-16/32 bodies through untouched).

How it scans (on a lower-cased copy of each buffer, offsets shared): one regex finds the
structural stops only (`<script`, `<iframe`, `<style`, `<textarea`, `<title`, `<xmp`, `<noembed`,
`<noframes`, `<plaintext`, `<!--`, `<body`, `</head>`, `</body>`); comments and raw-text elements
are skipped whole, so a `"</body>"` or `<img` inside a script string or a comment is never taken
for a tag, and a stop that sits inside an earlier tag's attribute value (`<img alt="<script>">`)
is text, as browsers read it. Between stops, `bytes.find` looks for the denied hosts themselves;
only the tag around a hit (`<img>`, `<link>`, `<source>`, `<video>`, `<audio>`, `<embed>`) is
parsed. `<noscript>` content is rewritten too: with JavaScript off it is live markup (tracking
pixels hide there). Before `<head>` the prolog (doctype, comments, `<html lang>`) is read too.
A host spelled with character references or percent-escapes in the markup is not recognised
here; the Content-Security-Policy still refuses it in the browser.

A URL belongs to a service when its host is one of the service's origins' hosts (scheme and port
are ignored: a tracker reached over http or another port is still the tracker); `*.example.com`
matches every subdomain. A tag is neutralised when any service claiming its host is denied, and
is labelled with the first such service in config order.

Markup contract (what the browser script re-activates after consent; CAT = category, SVC = service):

- Mark: given ``mark`` (a zero-argument callable returning the page's CSP nonce, called at most once
  and only when something is neutralised), every tag below also gets ``nonce="NONCE"`` (any nonce
  attribute it had is dropped). The script activates only elements whose ``el.nonce`` is the page's
  nonce, so markup reflected into the page cannot pass for a neutralised tracker.

- Script: ``<script src="U" async>`` becomes
  ``<script data-consent-src="U" async type="text/plain" data-consent-category="CAT"
  data-consent-service="SVC">``; an original ``type`` (e.g. "module") is kept as
  ``data-consent-type``. Every ``src`` attribute is renamed, so the browser fetches nothing. To
  activate: create a new script element, copy the attributes, set ``src`` from
  ``data-consent-src`` and ``type`` from ``data-consent-type`` (or none), and replace the old one.
  Scripts that do not execute (a non-JavaScript ``type``, such as the site's own
  ``type="text/plain" data-consent-category=...`` inline scripts) are left as they are.
- Image, source, video, audio, embed: ``src`` -> ``data-consent-src``, ``srcset`` ->
  ``data-consent-srcset``, ``poster`` -> ``data-consent-poster``, plus ``data-consent-category``
  and ``data-consent-service``. To activate: move them back.
- Link (preload, preconnect, stylesheet...): ``href`` -> ``data-consent-href``, plus the two labels.
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
doctype / `<html>`; body_end_html before the last `</body>`, or at the end when there is none.
Both are skipped when the page already contains the marker attribute ``data-consent-banner``
(in the head for head_html, anywhere for body_end_html). Empty bodies get nothing.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote

MAX_TAG = 64 * 1024  # a tag of interest longer than this (unclosed quote...) is copied as text
MAX_HOLD = 64 * 1024  # output held for an injection decision before it is made anyway
MARKER = b"data-consent-banner"

Inject = Callable[[str | None], tuple[str, str]]


@dataclass(frozen=True, slots=True)
class Blocked:
    """The denied service a URL belongs to, and the placeholder text for it (iframes)."""

    service: str
    category: str
    name: str  # shown in the placeholder: the provider, else the service name
    category_labels: dict[str, str]  # language -> label ("*": any)


class HostRules:
    """Which hosts are denied in one consent state."""

    __slots__ = ("exact", "wildcard", "needles")

    def __init__(self, exact: dict[str, Blocked], wildcard: dict[str, Blocked]) -> None:
        self.exact = exact  # "stats.example.net" -> Blocked
        self.wildcard = wildcard  # "example.net" (from *.example.net) -> Blocked
        # What a tag naming one of these hosts must contain (lower case): a cheap first test.
        self.needles = (*(h.encode() for h in exact), *(b"." + h.encode() for h in wildcard))

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


# Placeholder texts shipped for the two shipped languages; config `texts.<lang>` may override
# "placeholder" and "placeholder_allow" ({service} and {category} are filled in).
PLACEHOLDER_TEXTS = {
    "en": ("Content from {service} will load once you allow {category}.", "Allow {category}"),
    "sv": ("Innehåll från {service} laddas när du tillåter {category}.", "Tillåt {category}"),
}


def placeholder_html(blocked: Blocked, language: str, texts: tuple[str, str]) -> str:
    from ..config import localized

    label = localized(blocked.category_labels, language, language) or blocked.category
    text, allow = (t.format(service=blocked.name, category=label) for t in texts)
    cat = html.escape(blocked.category)
    return (
        f'<div class="consent-placeholder" data-consent-placeholder="{html.escape(blocked.service)}" '
        f'data-consent-category="{cat}"><p>{html.escape(text)}</p>'
        f'<button type="button" data-consent-allow="{cat}">{html.escape(allow)}</button></div>'
    )


# --- scanning ---------------------------------------------------------------------------------------
# Every pattern below runs on the lower-cased copy of the buffer (same offsets), so none needs re.I:
# case-insensitive alternations are several times slower in `re`.

# Structural stops: raw-text elements and comments (skipped whole), the injection landmarks.
_STOP = re.compile(
    rb"<(?:(s(?:cript|tyle)|iframe|t(?:extarea|itle)|/body|/head|body|xmp|no(?:embed|frames)|plaintext)"
    rb"(?=[\s/>])|(!--))"
)
_PROLOG_TAG = re.compile(rb"<(html|head)(?=[\s/>])")
_WS = re.compile(rb"(?:\s|\xef\xbb\xbf)+")
# The rest of a start tag after its name: attribute names, values (a quote opened after `=` must
# close), stray quotes, up to `>`. Possessive: linear time, no backtracking on hostile markup.
_TAG_REST = re.compile(rb"""(?:[^>"'=]++|=\s*+(?:"[^"]*+"|'[^']*+'|(?!["'])[^\s>]*+)|["'])*+>""")
_ATTR = re.compile(rb"""([^\s/>=]+)(?:\s*=\s*+(?:"([^"]*)"|'([^']*)'|([^\s>]*)))?""")
# Tags outside raw text whose URL attributes can fetch from a tracker's host.
_URL_TAG = re.compile(rb"<(img|link|source|video|audio|embed)(?=[\s/>])")
_URL_ATTRS = {
    b"img": (b"src", b"srcset"),
    b"source": (b"src", b"srcset"),
    b"video": (b"src", b"poster"),
    b"audio": (b"src",),
    b"embed": (b"src",),
    b"link": (b"href",),
}
_RAW_END = {
    name: re.compile(rb"</" + name + rb"(?=[\s/>])")
    for name in (b"script", b"style", b"textarea", b"title", b"xmp", b"noembed", b"noframes", b"iframe")
}
_COMMENT_END = re.compile(rb"--!?>")
_NEVER = re.compile(rb"(?!)")
_LANG = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})*")
_JS_TYPES = frozenset(
    {
        "", "module", "text/javascript", "application/javascript", "text/ecmascript",
        "application/ecmascript", "application/x-javascript", "application/x-ecmascript", "text/x-javascript",
        "text/x-ecmascript", "text/jscript", "text/livescript",
    }
)
_URL = re.compile(r"(?:([a-zA-Z][a-zA-Z0-9+.-]*):)?([/\\]*)([^/\\?#]*)")
_NETWORK = frozenset({"http", "https", "ws", "wss"})


def url_host(value: str) -> str | None:
    """The host a URL attribute points at, as a browser resolves it; None for same-origin or no host."""
    v = value.strip(" \t\n\r\f")
    if "\t" in v or "\n" in v or "\r" in v:  # the URL parser drops these anywhere
        v = v.replace("\t", "").replace("\n", "").replace("\r", "")
    m = _URL.match(v)
    if m is None:
        return None
    scheme, slashes, authority = m.groups()
    if scheme:
        if scheme.lower() not in _NETWORK:
            return None
    elif len(slashes) < 2:
        return None  # a path: same origin
    host = authority.rpartition("@")[2]
    host = host[: host.find("]") + 1] if host.startswith("[") else host.split(":", 1)[0]
    if "%" in host:
        host = unquote(host)
    return host.lower().rstrip(".") or None


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
    ) -> None:
        self._mark = mark  # the page's CSP nonce, drawn only when a tag is neutralised
        self._mark_attr: bytes | None = None
        self._hosts = hosts if hosts else None  # None: nothing to neutralise
        self._needles = hosts.needles if hosts else ()
        self._inject = inject
        self._charset = charset
        self._placeholder = placeholder
        self._buf = b""  # input not yet processed: a tag or tail straddling chunks
        self._out: list[bytes | _Mark] = []  # processed output; marks hold injection points
        self._raw_end: re.Pattern[bytes] | None = None  # inside a comment or raw-text element
        self._prolog = inject is not None  # still before <head> or the first element
        self._lang: str | None = None
        self._marker_at: int | None = None  # input offset of the first marker attribute
        self._fed = 0  # input bytes fed so far
        self._base = 0  # input offset of the first byte of the buffer being scanned
        self._tail = b""  # the input's last bytes, to find the marker across chunk boundaries
        self._content = False  # seen any non-blank input
        self._parts: tuple[bytes, bytes] | None = None
        self._head: _Mark | None = None
        self._body: _Mark | None = None
        self._body_done = inject is None

    # --- public ---

    def feed(self, chunk: bytes) -> bytes:
        if not chunk:
            return b""
        self._watch(chunk)
        buf = self._buf + chunk if self._buf else chunk
        self._buf = b""
        self._scan(buf, final=False)
        return self._flush(final=False)

    def finish(self) -> bytes:
        buf, self._buf = self._buf, b""
        self._scan(buf, final=True)
        if self._buf:  # never lose a byte, whatever state the scan stopped in
            self._out.append(self._buf)
            self._buf = b""
        if self._inject is not None and self._content:
            if self._prolog:  # nothing but doctype / <html> / comments: inject at the end
                self._prolog = False
                self._out.append(self._head_bytes(self._fed))
            self._decide_head(self._fed)
            if self._body is not None:
                self._decide_body(inject=True)
            elif not self._body_done:
                self._body_done = True
                self._out.append(b"" if self._marker_at is not None else self._parts_bytes()[1])
        return self._flush(final=True)

    # --- scanning ---

    def _watch(self, chunk: bytes) -> None:
        if not self._content and chunk.strip():
            self._content = True
        if self._marker_at is None:
            window = self._tail + chunk
            i = window.find(MARKER)
            if i >= 0:
                self._marker_at = self._fed - len(self._tail) + i
            self._tail = window[-len(MARKER) :]
        self._fed += len(chunk)

    def _scan(self, buf: bytes, *, final: bool) -> None:
        out = self._out
        low = buf.lower()  # ASCII-only lowering: offsets are the same as in buf
        pos, n = 0, len(buf)
        while pos < n:
            if self._raw_end is not None:
                m = self._raw_end.search(low, pos)
                if m is None:
                    keep = n if final else max(pos, n - 16)  # an end tag may straddle the chunks
                    if keep > pos:
                        out.append(buf[pos:keep])
                    pos = keep
                    break
                out.append(buf[pos : m.end()])
                pos = m.end()
                self._raw_end = None
                continue
            if self._prolog:
                pos = self._scan_prolog(buf, low, pos, final)
                if self._prolog and self._raw_end is None:
                    break  # needs more input
                continue
            m = _STOP.search(low, pos)
            if m is None:
                end = n if final else _cut(low, pos, n)
                pos = self._text(buf, low, pos, end)
                if pos < n and not final:
                    break
                continue
            start = m.start()
            inside = _open_tag_end(low, pos, start, final)
            if inside > 0:  # the stop sits in an attribute value of an earlier tag: text, not a tag
                pos = self._text(buf, low, pos, inside)
                continue
            if inside < 0:  # that earlier tag may go on in the next chunk: wait for it
                pos = self._text(buf, low, pos, -inside - 1)
                break
            if start > pos:
                pos = self._text(buf, low, pos, start)
                if pos > start:  # a tag of the text ran past the stop: the stop was in an attribute
                    continue
            name = m.group(1)
            if name is None:  # a comment
                pos = self._comment(buf, m.end(), final)
                if pos < 0:
                    pos = start
                    break
                continue
            if name in (b"/body", b"/head", b"body"):
                if name == b"/body":
                    self._mark_body(self._base + start)
                else:
                    self._decide_head(self._base + start)
                out.append(buf[start : m.end()])
                pos = m.end()
                continue
            if name == b"plaintext":  # everything after it is text
                self._raw_end = _NEVER
                out.append(buf[start : m.end()])
                pos = m.end()
                continue
            t = _TAG_REST.match(low, m.end())
            if t is None:  # the tag is not complete in this buffer
                if final or n - start > MAX_TAG:
                    out.append(b"<")
                    pos = start + 1
                    continue
                pos = start
                break
            tag = buf[start : t.end()]
            if (name == b"script" or name == b"iframe") and self._hosts is not None:
                tag = self._rewrite(name, tag, low, start)
            out.append(tag)
            pos = t.end()
            self._raw_end = _RAW_END[name]
        self._buf = buf[pos:]
        self._base += pos

    def _text(self, buf: bytes, low: bytes, pos: int, end: int) -> int:
        """Copy buf[pos:end], neutralising URL tags that name a denied host; returns where it stopped."""
        out = self._out
        if self._hosts is None:
            out.append(buf[pos:end])
            return end
        hits = sorted(h for needle in self._needles for h in _find_all(low, needle, pos, end))
        cursor = pos
        for h in hits:
            if h < cursor:
                continue  # inside a tag already handled
            found = _enclosing_url_tag(low, cursor, h)
            if found is None:
                continue
            start, stop, name = found
            out.append(buf[cursor:start])
            out.append(self._rewrite(name, buf[start:stop], low, start))
            cursor = stop
        if cursor < end:
            out.append(buf[cursor:end])
            cursor = end
        return cursor

    def _comment(self, buf: bytes, pos: int, final: bool) -> int:
        """Copy `<!--` and enter comment mode; -1 when more input is needed to tell."""
        rest = buf[pos : pos + 2]
        if rest[:1] == b">" or rest == b"->":  # <!--> and <!---> end at once
            end = pos + (1 if rest[:1] == b">" else 2)
            self._out.append(buf[pos - 4 : end])
            return end
        if len(rest) < 2 and not final:
            return -1
        self._out.append(buf[pos - 4 : pos])
        self._raw_end = _COMMENT_END
        return pos

    def _scan_prolog(self, buf: bytes, low: bytes, pos: int, final: bool) -> int:
        """Before the head injection point: blanks, doctype, comments, <html>, then <head> or other."""
        out, n = self._out, len(buf)
        while pos < n:
            m = _WS.match(buf, pos)
            if m:
                out.append(m.group(0))
                pos = m.end()
                continue
            if buf.startswith(b"<!--", pos):
                end = self._comment(buf, pos + 4, final)
                if end < 0 or self._raw_end is not None:
                    return pos if end < 0 else end  # needs more input / inside the comment
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
            m = _PROLOG_TAG.match(low, pos)
            if m:
                t = _TAG_REST.match(low, m.end())
                if t is None and not final and n - pos <= MAX_TAG:
                    return pos
                if t is not None:
                    tag = buf[pos : t.end()]
                    out.append(tag)
                    pos = t.end()
                    if m.group(1) == b"html":
                        self._lang = _attr_value(tag, 5, b"lang", _LANG)
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

    # --- rewriting one tag ---

    def _rewrite(self, name: bytes, tag: bytes, low: bytes, start: int) -> bytes:
        assert self._hosts is not None
        if not any(low.find(needle, start, start + len(tag)) >= 0 for needle in self._needles):
            return tag  # names no denied host: the common case, decided without parsing
        attrs = _attrs(tag, len(name) + 1)
        if name == b"script":
            kind = attrs.get(b"type")
            if kind is not None and _text(kind[0][2]).strip().lower() not in _JS_TYPES:
                return tag  # not executed, not fetched: a data block or an already neutralised script
            blocked = self._blocked(attrs, b"src")
            if blocked is None:
                return tag
            renames = {b"src": b"data-consent-src", b"type": b"data-consent-type"}
            return _edit(tag, attrs, renames, _labels(blocked, b' type="text/plain"') + self._marked())
        if name == b"iframe":
            blocked = self._blocked(attrs, b"src")
            if blocked is None:
                return tag
            extra = b"" if b"hidden" in attrs else b' hidden="" data-consent-hidden=""'
            extra = _labels(blocked, extra) + self._marked()
            edited = _edit(tag, attrs, {b"src": b"data-consent-src"}, extra)
            if self._placeholder is None:
                return edited
            return self._placeholder(blocked, self._lang).encode(self._charset, "xmlcharrefreplace") + edited
        names = _URL_ATTRS[name]
        blocked = next(filter(None, (self._blocked(attrs, a) for a in names)), None)
        if blocked is None:
            return tag
        return _edit(tag, attrs, {a: b"data-consent-" + a for a in names}, _labels(blocked) + self._marked())

    def _marked(self) -> bytes:
        """The mark attribute for a neutralised tag (its own nonce attributes are dropped by _edit)."""
        if self._mark is None:
            return b""
        if self._mark_attr is None:
            self._mark_attr = b' nonce="' + html.escape(self._mark()).encode() + b'"'
        return self._mark_attr

    def _blocked(self, attrs: dict[bytes, list[tuple[int, int, bytes, int]]], name: bytes) -> Blocked | None:
        assert self._hosts is not None
        for _, _, value, _ in attrs.get(name, ()):  # every duplicate: renaming one exposes the next
            text = _text(value)
            urls = [c.split()[0] for c in text.split(",") if c.split()] if name == b"srcset" else [text]
            for url in urls:
                host = url_host(url)
                found = self._hosts.denied(host) if host else None
                if found is not None:
                    return found
        return None

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
        self._out.append(self._body)

    def _decide_body(self, *, inject: bool) -> None:
        assert self._body is not None
        self._replace(self._body, self._parts_bytes()[1] if inject and self._marker_at is None else b"")
        self._body = None
        self._body_done = True

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
            first = next((i for i, p in enumerate(out) if isinstance(p, _Mark)), None)
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


def _text(value: bytes) -> str:
    s = value.decode("latin-1")
    return html.unescape(s) if "&" in s else s


def _attrs(tag: bytes, offset: int) -> dict[bytes, list[tuple[int, int, bytes, int]]]:
    """Attribute name (lower case) -> [(name start, name end, raw value)] of a start tag."""
    found: dict[bytes, list[tuple[int, int, bytes, int]]] = {}
    end = len(tag) - 1  # the closing ">"
    for m in _ATTR.finditer(tag, offset, end):
        value = m.group(2) if m.group(2) is not None else m.group(3) if m.group(3) is not None else m.group(4)
        found.setdefault(m.group(1).lower(), []).append((m.start(1), m.end(1), value or b"", m.end()))
    return found


def _attr_value(tag: bytes, offset: int, name: bytes, valid: re.Pattern[str]) -> str | None:
    for _, _, value, _ in _attrs(tag, offset).get(name, ())[:1]:
        text = _text(value).strip()
        return text if valid.fullmatch(text) else None
    return None


def _labels(blocked: Blocked, before: bytes = b"") -> bytes:
    cat = html.escape(blocked.category).encode()
    svc = html.escape(blocked.service).encode()
    return before + b' data-consent-category="' + cat + b'" data-consent-service="' + svc + b'"'


def _edit(
    tag: bytes,
    attrs: dict[bytes, list[tuple[int, int, bytes, int]]],
    renames: dict[bytes, bytes],
    extra: bytes,
) -> bytes:
    """The tag with attribute names renamed, its nonce attributes dropped when `extra` carries one,
    and `extra` attributes added before its end."""
    spans = sorted((s, e, renames[k]) for k in renames for s, e, _, _ in attrs.get(k, ()))
    if b" nonce=" in extra:
        spans = sorted([*spans, *((s, e, b"") for s, _, _, e in attrs.get(b"nonce", ()))])
    parts, last = [], 0
    for s, e, new in spans:
        parts.append(tag[last:s])
        parts.append(new)
        last = e
    body = b"".join(parts) + tag[last:-1]
    # Before a final "/" only when it is a self-closing slash, not the end of an unquoted value.
    if body.endswith(b"/") and body[-2:-1] in (b" ", b'"', b"'", b"\t", b"\n"):
        return body[:-1].rstrip() + extra + b"/>"
    return body + extra + b">"


def _find_all(low: bytes, needle: bytes, pos: int, end: int) -> list[int]:
    found = []
    i = low.find(needle, pos, end)
    while i >= 0:
        found.append(i)
        i = low.find(needle, i + 1, end)
    return found


def _enclosing_url_tag(low: bytes, lo: int, h: int) -> tuple[int, int, bytes] | None:
    """(start, end, name) of the URL tag (img, link...) whose attributes contain offset `h`, if any.

    Looks back over a few `<`: the nearest may sit inside an attribute value of the tag we want.
    """
    j = h
    for _ in range(4):
        j = low.rfind(b"<", lo, j)
        if j < 0 or h - j > MAX_TAG:
            return None
        m = _URL_TAG.match(low, j)
        rest = _TAG_REST.match(low, m.end() if m else j + 1)
        if rest is None or rest.end() <= h:
            return None  # h is in text after a complete tag
        if m:
            return j, rest.end(), m.group(1)
    return None


_TAG_START = re.compile(rb"</?[a-z]")


def _open_tag_end(low: bytes, pos: int, at: int, final: bool) -> int:
    """Whether offset `at` lies inside the attributes of the tag opened by the nearest `<` before it
    (`<img alt="<script>">`: the "<script>" is attribute text, as browsers read it): that tag's end if
    so, 0 if not, and -1 - (the tag's start) when the tag is unfinished in a non-final buffer."""
    j = low.rfind(b"<", pos, at)
    if j < 0 or not _TAG_START.match(low, j):
        return 0
    rest = _TAG_REST.match(low, j + 2)
    if rest is None:
        return 0 if final or at - j > MAX_TAG else -1 - j
    return rest.end() if rest.end() > at else 0


def _cut(low: bytes, pos: int, n: int) -> int:
    """Where to stop processing a non-final buffer: before any tag that may continue in the next chunk.

    Looks at the last few `<`: the earliest whose tag is unfinished sets the cut (an unfinished quoted
    attribute can hold a finished-looking `<...>` of its own), as does a short tail like "<scr".
    """
    cut = j = n
    for _ in range(4):
        j = low.rfind(b"<", pos, j)
        if j < 0 or n - j > MAX_TAG:
            break
        if _TAG_REST.match(low, j + 1) is None or (cut == n and n - j < 16):
            cut = j
    return cut
