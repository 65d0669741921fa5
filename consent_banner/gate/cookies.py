"""Which cookies a response may set, and which cookies of the request it must expire (R3, R16).

Pure functions of the configuration and a per-state set of allowed services; no ASGI here.

- A ``Set-Cookie`` passes when the cookie is one of the middleware's own, or matches a declared
  pattern (first match in config order, as `ConsentConfig.category_for_cookie`) whose service the
  visitor allows (necessary services always are). An undeclared cookie passes only with
  ``undeclared_cookies = "allow"``; either way its name is reported once per process.
- A cookie that arrives in the request and is declared in a denied category is expired: one
  ``Set-Cookie`` per path ("/" and the configured cookie path) and per domain variant (host-only,
  and the declared parent ``domain``), with ``Max-Age=0`` and an ``Expires`` in the past.
  Undeclared request cookies are left alone: they may belong to another application on the domain.
  At most `MAX_EXPIRED` cookies are expired per response, so a request stuffed with thousands of
  declared names cannot make a response of thousands of headers; a browser that really holds more
  loses the rest on its following requests, each expiring the next ones it still sends.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from ..config import NECESSARY, ConsentConfig, CookieDeclaration
from ..memo import Memo

logger = logging.getLogger("consent_banner.gate")

EXPIRED = b"Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT"
_MAX_REPORTED = 1000  # undeclared names remembered for "report once"; bounds memory on a noisy app
_MAX_CACHED = 4096  # cookie names whose declaration and verdict are remembered
MAX_EXPIRED = 32  # denied request cookies expired per response (each on up to 4 path/domain variants)


def set_cookie_name(value: bytes) -> str:
    """The cookie name of a Set-Cookie header value ("" for a nameless cookie, as browsers read it)."""
    pair = value.split(b";", 1)[0]
    if b"=" not in pair:
        return ""
    return pair.split(b"=", 1)[0].strip().decode("latin-1")


class CookieRules:
    """Set-Cookie filtering and expiry of denied cookies, for one configuration."""

    def __init__(self, config: ConsentConfig, own_cookie_names: frozenset[str]) -> None:
        self._own = own_cookie_names
        self._block_undeclared = config.undeclared_cookies == "block"
        self._config = config
        # Besides "/", the path the site's own cookies live on (the configured cookie path).
        self._paths = tuple(dict.fromkeys(("/", config.cookie.path)))
        self._cache: Memo[str, tuple[CookieDeclaration, str, str] | None] = Memo(_MAX_CACHED)
        # name -> (service, declaration) when it could ever be expired, else None (own, necessary,
        # undeclared): one dict lookup per request cookie on the hot path.
        self._verdicts: Memo[str, tuple[str, CookieDeclaration] | None] = Memo(_MAX_CACHED)
        self._reported: set[str] = set()

    def declaration(self, name: str) -> tuple[CookieDeclaration, str, str] | None:
        """(declaration, service, category) of the first pattern matching `name`, or None."""
        try:
            return self._cache[name]
        except KeyError:
            pass
        match = self._config.service_for_cookie(name)
        return self._cache.put(name, (match[1], match[0].name, match[0].category) if match else None)

    def allows(self, name: str, allowed_services: frozenset[str]) -> bool:
        """May a response set the cookie `name`, given the services the visitor allows?"""
        if name in self._own:
            return True
        found = self.declaration(name)
        if found is None:
            self._report_undeclared(name)
            return not self._block_undeclared
        _, service, category = found
        return category == NECESSARY or service in allowed_services

    def filter(self, values: list[bytes], allowed_services: frozenset[str]) -> tuple[list[bytes], bool]:
        """The Set-Cookie values that pass, and whether any was dropped."""
        kept = [v for v in values if self.allows(set_cookie_name(v), allowed_services)]
        return kept, len(kept) != len(values)

    def consented(self, values: list[bytes]) -> bool:
        """Whether any of these (allowed) Set-Cookie values passes only because the visitor allows
        its service: another visitor's response would not carry it."""
        for v in values:
            name = set_cookie_name(v)
            found = None if name in self._own else self.declaration(name)
            if found is not None and found[2] != NECESSARY:
                return True
        return False

    def denied_in_request(
        self, request_cookies: dict[str, str], allowed_services: frozenset[str]
    ) -> list[tuple[str, CookieDeclaration]]:
        """The request's declared cookies whose service is not allowed (undeclared ones are left alone),
        the first `MAX_EXPIRED` of them."""
        out: list[tuple[str, CookieDeclaration]] = []
        verdicts = self._verdicts
        for name in request_cookies:
            try:
                found = verdicts[name]
            except KeyError:
                found = self._verdict(name)
            if found is not None and found[0] not in allowed_services:
                out.append((name, found[1]))
                if len(out) == MAX_EXPIRED:
                    break
        return out

    def _verdict(self, name: str) -> tuple[str, CookieDeclaration] | None:
        declared = None if name in self._own else self.declaration(name)
        verdict = None if declared is None or declared[2] == NECESSARY else (declared[1], declared[0])
        return self._verdicts.put(name, verdict)

    def expire(self, name: str, decl: CookieDeclaration, *, host: str | None, secure: bool) -> list[bytes]:
        """Set-Cookie values deleting `name` on every path and domain variant it may live on."""
        return expiry_headers(name, paths=self._paths, domain=decl.domain, host=host, secure=secure)

    def _report_undeclared(self, name: str) -> None:
        if name in self._reported or len(self._reported) >= _MAX_REPORTED:
            return
        self._reported.add(name)
        if self._block_undeclared:
            logger.warning(
                "undeclared cookie %r dropped from a response (undeclared_cookies = \"block\"): "
                "declare it under a service's cookies in consent.toml",
                name,
            )
        else:
            logger.info("undeclared cookie %r passed (undeclared_cookies = \"allow\"): declare it", name)


def expiry_headers(
    name: str, *, paths: Iterable[str], domain: str | None, host: str | None, secure: bool
) -> list[bytes]:
    """Set-Cookie values deleting the cookie `name` on each of `paths`, host-only and on `domain`
    (".example.com") when the request's `host` may set cookies there."""
    # A __Secure-/__Host- cookie is only replaced by a Set-Cookie with Secure, and __Host- ones
    # may carry no Domain and live on "/" only; on https every expiry carries Secure, which never
    # hurts there.
    host_only = name.startswith("__Host-")
    sec = b"; Secure" if secure or host_only else b""
    domains: list[bytes | None] = [None]
    if domain and not host_only and _within(host, domain):
        domains.append(domain.encode("ascii"))
    head = name.encode("latin-1") + b"=; " + EXPIRED
    return [
        head + b"; Path=" + path.encode("latin-1") + (b"; Domain=" + d if d else b"") + sec
        for path in (("/",) if host_only else paths)
        for d in domains
    ]


def _within(host: str | None, domain: str) -> bool:
    """Could a page on `host` set a cookie for `domain` (".example.com")? Unknown host: assume so."""
    if not host:
        return True
    host = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    host = host.lower().rstrip(".")
    return host == domain[1:] or host.endswith(domain)
