"""Which of a request's cookies are the consent and the form token, under which names.

A cookie named `consent` can be planted by any sibling subdomain (`Domain=` the parent); the
browser then sends two, and whichever the server reads last would decide. Where the configuration
allows it (`secure`, no `domain`, path `/`) and the request came over https, the cookies are named
``__Host-consent`` and ``__Host-consent_csrf``: the browser accepts those only host-only, Secure,
on `/`, set by this very host, so no sibling can plant one. Elsewhere (plain http, a configured
`domain`) the plain names stay, and two cookies of one name in a request decide nothing.

The previous release's plain consent name is still read over https while no ``__Host-`` cookie
is present, so an upgrade loses nobody's choice: the value is re-issued under the new name and the
old cookie expired. The old form-token name is only expired, never read: a token holds no choice,
and a planted one would let a sibling know the token of a visitor's form.

A request may carry its Cookie header in several fields (HTTP/2 sends one per cookie): the one rule,
`request_cookies`, joins them all in order, so a twin in another field is seen as a twin. `Visitors`
is the one cache of what a Cookie header says and proves (its reading and the consent it verified):
the middleware, the page and the endpoints all read a request through it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from .config import CookieSettings
from .consent import UNDECIDED, Consent, ConsentCodec
from .memo import Memo

if TYPE_CHECKING:
    from .gate.send import Gating

HOST_PREFIX = "__Host-"
CSRF_SUFFIX = "_csrf"
# The opt-out notice dismissed (decisions.Decisions.dismiss): no consent, not logged.
NOTICE_SUFFIX = "_notice"


@dataclass(frozen=True, slots=True)
class CookieNames:
    """The names the consent and form-token cookies have on one kind of request."""

    consent: str
    csrf: str
    # The previous release's names, read while no cookie of the new name is present (migration).
    old_consent: str | None = None
    old_csrf: str | None = None
    all: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        own = {self.consent, self.csrf, self.old_consent, self.old_csrf} - {None}
        object.__setattr__(self, "all", frozenset(own))


def cookie_names(settings: CookieSettings) -> tuple[CookieNames, CookieNames]:
    """(names on plain http, names on https) for the configured `[cookie]`."""
    plain = CookieNames(settings.name, settings.name + CSRF_SUFFIX)
    if not settings.secure or settings.domain or settings.path != "/":
        return plain, plain
    return plain, CookieNames(
        HOST_PREFIX + plain.consent, HOST_PREFIX + plain.csrf, plain.consent, plain.csrf
    )


def own_cookie_names(settings: CookieSettings) -> frozenset[str]:
    """Every name the middleware's own cookies may carry, on http and on https."""
    return frozenset(n for names in cookie_names(settings) for n in (names.consent, names.csrf))


class VisitorCookies(NamedTuple):
    """What one Cookie header says, for the names of its request."""

    consent: str | None  # the one consent cookie value that counts; None: none, or ambiguous
    csrf: str | None  # the one form-token cookie value, likewise
    others: dict[str, str]  # every other cookie (the last of duplicates)
    migrate_consent: bool = False  # `consent` was read under the old name: re-issue it
    expire: tuple[str, ...] = ()  # own cookie names to expire wherever this host can reach them


NO_COOKIES = VisitorCookies(None, None, {})
_SECURE_SCHEMES = frozenset({"https", "wss"})
VISITS_BYTES = 4 * 1024 * 1024  # per kind of request: readings of Cookie headers kept, in bytes
MAX_APPLIED = 4  # applied states kept per visit (a cookie replayed from many regions is worked out anew)
MEMO_HEADER = 1024  # bytes: a longer header is read (and its consent verified) on every request
_CONSENT_BYTES = 1024  # a verified Consent and its services (tracemalloc, rounded up)


def set_cookie_header(
    name: str,
    value: str,
    settings: CookieSettings,
    *,
    max_age: int | None,  # seconds; None: a session cookie
    http_only: bool = False,
    same_site: str | None = None,  # None: the configured one
) -> str:
    """A Set-Cookie value for one of the middleware's own cookies, with the configured attributes."""
    parts = [f"{name}={value}", f"Path={settings.path}"]
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    if settings.domain:
        parts.append(f"Domain={settings.domain}")
    if settings.secure:
        parts.append("Secure")
    if http_only:
        parts.append("HttpOnly")
    parts.append(f"SameSite={(same_site or settings.same_site).capitalize()}")
    return "; ".join(parts)


def request_cookies(headers: Iterable[tuple[bytes, bytes]]) -> tuple[bytes, bool, bool]:
    """(the request's Cookie header, whether it carries ``Sec-GPC: 1``, whether it carries an ``If-*``
    header): the one rule for which Cookie header counts. Every Cookie field counts, joined in order:
    HTTP/2 may send one field per cookie (RFC 9113 8.2.3) and an ASGI server may pass them on
    unjoined, and reading only one field (the first or the last) would miss a twin planted in another.
    The third is only a hint, for the middleware to look closer (`gate.caching.unconditional`)."""
    cookie = gpc = b""
    conditional = False
    for key, value in headers:
        # Sorted, so that a name past "ig" (sec-*, user-agent...) costs the two comparisons it cost
        # before If-* was looked for, and one before it (accept*, host, cookie) one more.
        if key < b"ig":
            if key == b"cookie":
                cookie = cookie + b"; " + value if cookie else value
            elif key > b"if":  # if-none-match, if-modified-since, if-range...
                conditional = True
        elif key == b"sec-gpc":
            gpc = value
    return cookie, gpc == b"1" or (gpc != b"" and gpc.strip() == b"1"), conditional


class Visit:
    """What one Cookie header says (`cookies`) and proves (`consent`, verified), remembered per header.

    `until` is when the reading stops counting as it is (unix seconds): the consent's expiry, never
    for a header without a consent cookie, and already past for a value that did not verify, which
    is checked again on every request (a value signed by a server whose clock runs ahead verifies a
    moment later) and never remembered as verified. `applied` remembers, per Sec-GPC signal, the
    consent as it applies to the request and the gate as it applies to that (its plan, the request's
    cookies it denies; the middleware fills it): a returning visitor's request looks them up instead
    of working them out.
    """

    __slots__ = ("cookies", "consent", "until", "tidy", "applied")

    def __init__(self, cookies: VisitorCookies, consent: Consent, until: float) -> None:
        self.cookies = cookies
        self.consent = consent
        self.until = until
        self.tidy = bool(cookies.expire or cookies.migrate_consent)  # own cookies to expire or move
        # Keyed by the Sec-GPC signal, and with [geo] by (signal, region): at most MAX_APPLIED.
        self.applied: dict[object, tuple[Consent, Gating]] = {}


def _weight(header: bytes, visit: Visit) -> int:
    # the header, its pieces as str and their dict slots, the tuple (tracemalloc, rounded up)
    pieces = header.count(b";") + 1
    size = 256 + 2 * len(header) + 96 * pieces
    # `applied`, filled after this is weighed: per Sec-GPC signal a consent, a tuple and a dict of the
    # denied cookies (up to one slot a piece), or a header of tracker cookies sent with and without
    # the signal outweighs its estimate by a third.
    size += 2 * (256 + 48 * pieces)
    return size + _CONSENT_BYTES if visit.consent.decided else size


class Visitors:
    """The one cache of Cookie headers: for each kind of request (http, https) its cookie names, and
    per header what it says and proves. Bounded by bytes, so a flood of distinct or large headers
    empties it, never grows it; headers over MEMO_HEADER bytes are read on every request."""

    __slots__ = ("_codec", "_http", "_https", "_memo_http", "_memo_https")

    def __init__(self, settings: CookieSettings, codec: ConsentCodec, *, https_site: bool = False) -> None:
        self._codec = codec
        self._http, self._https = cookie_names(settings)
        if https_site:
            # Every site origin is https (`site_origins`): the browser is on https even when a proxy
            # that terminates TLS reaches the app over http, so the names are the __Host- ones there too.
            self._http = self._https
        self._memo_http: Memo[bytes, Visit] = Memo(VISITS_BYTES, weigh=_weight)
        self._memo_https = (
            self._memo_http if self._https == self._http else Memo[bytes, Visit](VISITS_BYTES, weigh=_weight)
        )

    def names(self, scope: Mapping[str, object]) -> CookieNames:
        """The names of the consent and form-token cookies on this request (``__Host-`` on https
        where the configuration allows it)."""
        return self._https if scope.get("scheme") in _SECURE_SCHEMES else self._http

    def visit(self, header: bytes, secure: bool) -> Visit:
        """What `header` says and proves, on an https (`secure`) or plain request."""
        memo = self._memo_https if secure else self._memo_http
        found = memo.get(header)
        if found is not None and time.time() < found.until:
            return found
        return self.read(header, secure, found)

    def read(self, header: bytes, secure: bool, known: Visit | None = None) -> Visit:
        """`visit` past its cache: `known` is what the cache holds for `header`, if it has run out."""
        if known is not None:
            cookies = known.cookies
        else:
            cookies = read_cookies(header, self._https if secure else self._http)
        value = cookies.consent
        consent = self._codec.decode(value) if value else UNDECIDED
        if consent.decided:
            assert consent.decided_at is not None
            until = float(consent.decided_at + self._codec.lifetime)
        else:
            until = -math.inf if value else math.inf
        visit = Visit(cookies, consent, until)
        if len(header) <= MEMO_HEADER:
            (self._memo_https if secure else self._memo_http).put(header, visit)
        return visit

    def cookies(self, scope: Mapping[str, object]) -> VisitorCookies:
        """The request's own cookies as the middleware read them (the same remembered reading)."""
        headers = scope["headers"]
        assert isinstance(headers, list)
        return self.visit(request_cookies(headers)[0], scope.get("scheme") in _SECURE_SCHEMES).cookies


def read_cookies(header: bytes, names: CookieNames) -> VisitorCookies:
    """Split a Cookie header as browsers and Starlette do (`;`, then the first `=`, stripped; a
    chunk without `=` is a nameless cookie) and pick out the middleware's own cookies."""
    if not header:
        return NO_COOKIES
    own = names.all
    mine: dict[str, str] = {}
    others: dict[str, str] = {}
    twins = False
    for chunk in header.decode("latin-1").split(";"):
        name, eq, value = chunk.partition("=")
        if not eq:
            name, value = "", name
        name = name.strip()
        if name in own:
            twins = twins or name in mine
            mine[name] = value.strip()
        elif name or value:
            others[name] = value.strip()
    if not twins and names.old_consent not in mine and names.old_csrf not in mine:
        return VisitorCookies(mine.get(names.consent), mine.get(names.csrf), others)
    return _sorted_out(header, names, others)


def _sorted_out(header: bytes, names: CookieNames, others: dict[str, str]) -> VisitorCookies:
    """The rare request with twins or old names: every value of each own name, then the rules."""
    values: dict[str | None, list[str]] = {n: [] for n in names.all}
    for chunk in header.decode("latin-1").split(";"):
        name, _, value = chunk.partition("=")
        if name.strip() in values:
            values[name.strip()].append(value.strip())
    expire: list[str] = []
    consent, migrate_consent = _pick(
        values[names.consent], values.get(names.old_consent, []), names.consent, names.old_consent, expire
    )
    # The form token holds no choice, so nothing is lost by not reading the old name: a sibling
    # could plant `consent_csrf` with a value whose token it knows. It is expired, and a new token
    # comes with the next page.
    if values.get(names.old_csrf):
        assert names.old_csrf is not None
        expire.append(names.old_csrf)
    csrf, _ = _pick(values[names.csrf], [], names.csrf, None, expire)
    return VisitorCookies(consent, csrf, others, migrate_consent, tuple(expire))


def _pick(
    new: list[str], old: list[str], name: str, old_name: str | None, expire: list[str]
) -> tuple[str | None, bool]:
    """(the value that counts, whether it came under the old name); names to expire go to `expire`."""
    if new:
        if old:
            assert old_name is not None
            expire.append(old_name)  # migrated already: the old cookie only lingers
        if len(new) > 1:
            expire.append(name)  # a planted twin: neither counts, both go
            return None, False
        return new[0], False
    if len(old) > 1:
        assert old_name is not None
        expire.append(old_name)
        return None, False
    return (old[0], True) if old else (None, False)
