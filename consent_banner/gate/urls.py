"""What host a URL in markup points at, decoded the way a browser decodes it before fetching.

Attribute values are decoded as HTML5 does (character references, named with or without `;`,
decimal, hex); the URL as the URL standard parses it (leading/trailing C0 controls and spaces
stripped, tab/newline removed anywhere, `\\` read as `/`, protocol-relative `//host`), the host
percent-decoded and mapped by IDNA/UTS-46 (full-width and ideographic dots, case, compatibility
forms), so `tracker&#46;test`, `tracker%2Etest` and `tracker\uff0etest` all name `tracker.test`.
"""

from __future__ import annotations

import codecs
import html
import re
from html.entities import html5 as _ENTITIES
from urllib.parse import unquote

import idna

_URL = re.compile(r"(?:([a-zA-Z][a-zA-Z0-9+.-]*):)?([/\\]*)([^/\\?#]*)")
_NETWORK = frozenset({"http", "https", "ws", "wss", "ftp"})
_STRIP = "".join(map(chr, range(0x21)))  # C0 controls and space, as the URL parser strips them
# A character reference in an attribute value; names are matched against the entity table by hand
# (the longest known prefix), as the HTML5 tokenizer does.
_CHARREF = re.compile(r"&(?:#[xX]([0-9a-fA-F]++);?|#([0-9]++);?|([a-zA-Z][a-zA-Z0-9]*+)(;?))")
_LONGEST_LEGACY = max(len(k) for k in _ENTITIES if not k.endswith(";"))


def _charref(m: re.Match[str], attribute: bool) -> str:
    if m.group(3) is None:  # numeric: html.unescape knows the replacement table
        return html.unescape(m.group(0) if m.group(0).endswith(";") else m.group(0) + ";")
    name, semi = m.group(3), m.group(4)
    if semi and name + ";" in _ENTITIES:
        return _ENTITIES[name + ";"]
    # Without a `;`: the longest legacy name that starts the text (`&ampx` is `&` then `x`), except
    # in an attribute when an alphanumeric or `=` follows it (then it is left as written).
    for size in range(min(len(name), _LONGEST_LEGACY), 1, -1):
        found = _ENTITIES.get(name[:size])
        if found is not None:
            rest = name[size:] + semi
            if attribute and (rest[:1].isalnum() or (not rest and m.string[m.end() : m.end() + 1] == "=")):
                return m.group(0)
            return found + rest
    return m.group(0)


def unescape(text: str, *, attribute: bool = True) -> str:
    """`text` with its character references decoded (attribute-value rules unless told otherwise)."""
    if "&" not in text:
        return text
    return _CHARREF.sub(lambda m: _charref(m, attribute), text)


def _back_to_bytes(err: UnicodeError) -> tuple[str | bytes, int]:
    """Encoding text read with surrogateescape: undecodable input bytes go back as they came, any
    other character the charset cannot hold becomes a character reference."""
    if not isinstance(err, UnicodeEncodeError):
        raise err
    part = err.object[err.start : err.end]
    if all(0xDC80 <= ord(c) <= 0xDCFF for c in part):
        return bytes(ord(c) - 0xDC00 for c in part), err.end
    return "".join(f"&#{ord(c)};" for c in part), err.end


codecs.register_error("consent-banner.markup", _back_to_bytes)
_ESCAPES = {ord("&"): "&amp;", ord('"'): "&quot;", ord("<"): "&lt;"}


def decode(data: bytes, charset: str) -> str:
    """Markup bytes as text; bytes the charset cannot read survive a round trip through `encode`."""
    return data.decode(charset, "surrogateescape")


def encode(text: str, charset: str, escape: str = "") -> bytes:
    """Text from `decode` back to bytes, the characters in `escape` (of & " <) as references."""
    if escape:
        text = text.translate({c: _ESCAPES[c] for c in map(ord, escape)})
    return text.encode(charset, "consent-banner.markup")


def attr_text(value: bytes, charset: str = "utf-8") -> str:
    """An attribute value's text, as the browser reads it: decoded, references resolved."""
    text = value.decode(charset, "replace") if not value.isascii() else value.decode("ascii")
    return unescape(text) if "&" in text else text


def host_name(host: str) -> str | None:
    """A URL's host as the browser resolves it (lower case, IDNA mapped), None when it is invalid."""
    if "%" in host:
        host = unquote(host, errors="replace")
    if host.isascii():
        return host.lower().rstrip(".") or None
    try:
        mapped = idna.uts46_remap(host, std3_rules=False, transitional=False)
        labels = [
            label if label.isascii() else "xn--" + label.encode("punycode").decode("ascii")
            for label in mapped.split(".")
        ]
    except (idna.IDNAError, UnicodeError):
        return None  # the browser refuses such a host: nothing is fetched
    return ".".join(labels).lower().rstrip(".") or None


def url_host(value: str) -> str | None:
    """The host a URL attribute points at, as a browser resolves it; None for same-origin or no host."""
    v = value.strip(_STRIP)
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
    return host_name(host)


def url_path(value: str) -> str:
    """What follows the authority of a URL attribute with a host (path, query, fragment), read as
    url_host reads the host."""
    v = value.strip(_STRIP).replace("\t", "").replace("\n", "").replace("\r", "")
    m = _URL.match(v)
    return v[m.end() :] if m is not None else ""


_SRCSET_URL = re.compile(r"[\t\n\f\r ,]*+([^\t\n\f\r ]++)")
_SRCSET_DESCRIPTORS = re.compile(r"(?:[^,(]++|\([^)]*+\)?)*+")


def srcset_urls(text: str) -> list[str]:
    """The URLs of a srcset (or imagesrcset) value, split as HTML's srcset parser splits them (a URL
    may hold commas; one that ends with commas ends its candidate)."""
    urls, pos, n = [], 0, len(text)
    while pos < n:
        m = _SRCSET_URL.match(text, pos)
        if m is None:
            break
        url = m.group(1)
        if url.endswith(","):
            url, pos = url.rstrip(","), m.end()
        else:
            pos = _SRCSET_DESCRIPTORS.match(text, m.end()).end() + 1  # type: ignore[union-attr]
        if url:
            urls.append(url)
    return urls
