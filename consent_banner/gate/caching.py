"""What a cache may keep: the headers of a response that depends on the visitor's consent, and the
validators of a request for a page whose earlier copy may have been made for another consent state.

A response whose body or headers depend on the consent (a page the gate rewrote, a cookie it
filtered, our own endpoints, a response the app built after asking `get_consent`) must never be
handed by a shared cache to another visitor, nor reused by the browser after the visitor changed
their mind: it gets ``Vary: Cookie, Sec-GPC`` and ``Cache-Control: private, no-cache``, and loses
every header that would let a CDN keep it (``public``, ``s-maxage``, ``max-age``, ``Expires``,
``Surrogate-Control``, ``CDN-Cache-Control``...). A page the gate rewrote carries a per-response
nonce, so no ``304`` can ever stand for it: its validators (``ETag``, ``Last-Modified``) go, and a
request for a document loses the validators a browser kept from before (`unconditional`).
Responses that depend on nothing of this pass untouched and stay cacheable.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import Message, Send

Headers = list[tuple[bytes, bytes]]

VARY_TOKENS = (b"Cookie", b"Sec-GPC")
_VARY = b", ".join(VARY_TOKENS)
PRIVATE = b"private, no-cache"
# The app's Cache-Control directives that survive: both only ever keep a cache from doing more.
_KEPT = (b"no-store", b"no-transform")
# Fields a shared cache obeys besides (or before) Cache-Control: RFC 9213's targeted fields and the
# vendors' own (`Cloudflare-CDN-Cache-Control`...), Fastly's and Akamai's surrogate fields, nginx's
# X-Accel-Expires (which overrides Cache-Control in proxy_cache), and Expires (HTTP/1.0 caches).
_SHARED_CACHE = frozenset(
    {b"expires", b"surrogate-control", b"cdn-cache-control", b"edge-control", b"x-accel-expires"}
)
_TARGETED = b"-cdn-cache-control"
_VALIDATORS = frozenset({b"etag", b"last-modified"})
# A request for a document: what a navigation sends, what it sends into a frame, and what <object>,
# <embed> and a fenced frame send (each renders an HTML document just the same).
_DOCUMENTS = frozenset({b"document", b"iframe", b"frame", b"object", b"embed", b"fencedframe"})
_HTML_FIRST = (b"text/html", b"application/xhtml+xml")
_CONDITIONAL = frozenset({b"if-none-match", b"if-modified-since", b"if-range"})


def private(headers: Iterable[tuple[bytes, bytes]], *, validators: bool = False) -> Headers:
    """`headers` of a response that depends on the visitor's consent (see the module docstring).

    `validators`: keep the app's ETag and Last-Modified (a response the app built itself after
    reading the consent: its validators are its own); otherwise they go. Idempotent.
    """
    out: Headers = []
    varies: list[bytes] = []
    kept: list[bytes] = []
    for k, v in headers:
        lk = k.lower()
        if lk == b"cache-control":
            for d in _directives(v):
                if d in _KEPT and d not in kept:
                    kept.append(d)
        elif lk == b"vary":
            varies.append(v)
        elif lk in _SHARED_CACHE or lk.endswith(_TARGETED) or (not validators and lk in _VALIDATORS):
            continue
        else:
            out.append((k, v))
    out.append((b"cache-control", b", ".join((PRIVATE, *kept))))
    out.append((b"vary", merge_vary(varies) if varies else _VARY))
    return out


def _directives(value: bytes) -> Iterable[bytes]:
    for part in value.split(b","):
        yield part.split(b"=", 1)[0].strip().lower()


def merge_vary(values: list[bytes]) -> bytes:
    """The app's Vary values and ours, as one value (``*`` stays ``*``)."""
    tokens = [t.strip() for v in values for t in v.split(b",") if t.strip()]
    if b"*" in tokens:
        return b"*"
    present = {t.lower() for t in tokens}
    tokens.extend(t for t in VARY_TOKENS if t.lower() not in present)
    return b", ".join(tokens)


def asks_document(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether a request asks for a document: `Sec-Fetch-Dest` a document, frame, object or embed, or
    an Accept that puts HTML first (a browser without Sec-Fetch-Dest navigating, htmx asking)."""
    dest = accept = None
    for k, v in headers:
        if k == b"sec-fetch-dest":
            dest = v
        elif k == b"accept":
            accept = v
    if dest is not None and dest.strip().lower() in _DOCUMENTS:
        return True
    return accept is not None and accept.lstrip().lower().startswith(_HTML_FIRST)


def unconditional(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The request's headers without ``If-None-Match``, ``If-Modified-Since`` and ``If-Range`` when
    it asks for a document (`Sec-Fetch-Dest` a document, frame, object or embed, or an Accept that
    puts HTML first, as a browser without Sec-Fetch-Dest navigates and as htmx asks for a fragment);
    otherwise
    `headers` itself.

    Such validators were minted for a page the browser (or a cache) kept from before this release, or
    from another consent state: the app would answer ``304`` and the browser show that copy, with its
    old policy and its old nonce. Without them the app answers in full, and the gate rewrites the page
    for the consent as it is now. A ``Range`` sent with ``If-Range`` goes too: without its condition
    it would splice bytes of one representation into another's.
    """
    if not asks_document(headers):
        return headers
    ranged = any(k == b"if-range" for k, _ in headers)
    return [(k, v) for k, v in headers if k not in _CONDITIONAL and not (ranged and k == b"range")]


def with_region_vary(send: Send, tokens: tuple[bytes, ...]) -> Send:
    """A `send` that adds the region headers to the Vary of a response made private for its consent
    state (gate/caching.py: its Vary names Sec-GPC, which only our private() adds beside Cookie):
    a cache must not hand an opt-out visitor's page to an opt-in one. Other responses stay as they are."""

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = message.get("headers") or ()
            if any(k.lower() == b"vary" and b"sec-gpc" in v.lower() for k, v in headers):
                out = [(k, v) for k, v in headers if k.lower() != b"vary"]
                values = [v for k, v in headers if k.lower() == b"vary"]
                out.append((b"vary", merge_vary([*values, b", ".join(tokens)])))
                message["headers"] = out
        await send(message)

    return wrapped
