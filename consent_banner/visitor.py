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
and a planted one would let a sibling know the token of a visitor's form. Pure functions of the
configuration and one Cookie header.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from .config import CookieSettings

HOST_PREFIX = "__Host-"
CSRF_SUFFIX = "_csrf"


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
MEMO_BYTES = 2 * 1024 * 1024  # readings of short Cookie headers kept (header and reading), in bytes
MEMO_HEADER = 1024  # bytes: a longer header is read on every request


class CookieReader:
    """`read_cookies` for one set of names, remembering the readings of short headers: a returning
    visitor sends the same header on every request. Bounded by bytes, so a flood of distinct or
    large headers empties the memo, never grows it."""

    __slots__ = ("names", "_memo", "_bytes")

    def __init__(self, names: CookieNames) -> None:
        self.names = names
        self._memo: dict[bytes, VisitorCookies] = {}
        self._bytes = 0

    def read(self, header: bytes) -> VisitorCookies:
        found = self._memo.get(header)
        if found is not None:
            return found
        found = read_cookies(header, self.names)
        if len(header) <= MEMO_HEADER:
            # the header, its pieces as str and their dict slots, the tuple (tracemalloc, rounded up)
            size = 256 + 2 * len(header) + 96 * (header.count(b";") + 1)
            if self._bytes + size > MEMO_BYTES:
                self._memo.clear()
                self._bytes = 0
            self._memo[header] = found
            self._bytes += size
        return found


def request_cookie_header(headers: list[tuple[bytes, bytes]]) -> bytes:
    """A request's Cookie fields as one header. HTTP/2 may send one field per cookie (RFC 9113
    8.2.3) and an ASGI server may pass them on unjoined: reading only one would miss a twin."""
    fields = [v for k, v in headers if k == b"cookie"]
    return fields[0] if len(fields) == 1 else b"; ".join(fields)


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
