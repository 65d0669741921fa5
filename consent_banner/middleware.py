"""`ConsentMiddleware`: reads the consent on every request and enforces it on every response.

A pure ASGI middleware (no BaseHTTPMiddleware): `__init__` does every costly thing once,
`__call__` decodes the consent, answers its own routes under the prefix, and hands the app a
`send` wrapped by the response gate. WebSocket handshakes get the consent too, and their
``Set-Cookie`` headers go through the same cookie rules. See DESIGN.md, "The flow of one request".
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Sequence
from pathlib import Path

from itsdangerous import BadSignature, Signer
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .access import csp_nonce
from .banner import Banner
from .config import ConsentConfig
from .consent import Consent, ConsentCodec, secret_keys_from_env
from .gate import ResponseGate
from .gate.cookies import expiry_headers
from .gate.handshake import gate_handshake
from .routes import ConsentRoutes, set_cookie_header
from .visitor import (
    CookieNames,
    CookieReader,
    VisitorCookies,
    cookie_names,
    own_cookie_names,
    request_cookie_header,
)

logger = logging.getLogger("consent_banner")

CSRF_SALT = "consent-banner.csrf"
_SECURE_SCHEMES = frozenset({"https", "wss"})


class ConsentMiddleware:
    """Keeps trackers out until the visitor consents, and records every decision.

    `config` is a ConsentConfig (or a path to a consent.toml); signing keys come from the
    CONSENT_SECRET_KEYS environment variable unless `secret_keys` is given (newest last).
    """

    def __init__(
        self,
        app: ASGIApp,
        config: ConsentConfig | str | Path,
        *,
        secret_keys: Sequence[str] | None = None,
    ) -> None:
        self.app = app
        self.config = config if isinstance(config, ConsentConfig) else ConsentConfig.from_toml(config)
        keys = list(secret_keys) if secret_keys else secret_keys_from_env()
        cfg = self.config
        self.codec = ConsentCodec(
            keys,
            revision=cfg.policy_revision,
            lifetime=cfg.cookie.lifetime_days * 86400,
            categories=cfg.categories,
            services=cfg.services_by_name,
        )
        self.banner = Banner(cfg, prefix=cfg.prefix)
        names_http, names_https = cookie_names(cfg.cookie)
        self._reader_http = CookieReader(names_http)
        self._reader_https = CookieReader(names_https) if names_https != names_http else self._reader_http
        self._csrf_signer = Signer(keys, salt=CSRF_SALT, digest_method=hashlib.sha256)
        self.gate = ResponseGate(cfg, own_cookie_names=own_cookie_names(cfg.cookie))
        # The gate's own rules: one verdict cache, each undeclared name reported once.
        self._cookie_rules = self.gate._cookies
        self._own_paths = tuple(dict.fromkeys(("/", cfg.cookie.path)))
        self._own_domain = "." + cfg.cookie.domain.lstrip(".") if cfg.cookie.domain else None
        self.routes = ConsentRoutes(cfg, self.codec, self.banner, keys=keys, csrf=self)
        self._prefix = cfg.prefix
        self._prefix_slash = cfg.prefix + "/"
        self._gpc_denied = cfg.gpc_denied
        self._inject = cfg.inject
        self._page = self.page  # bound once: the gate calls it for HTML responses only

    # --- the request ---------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            if kind == "lifespan":
                send = self._closing_on_shutdown(send)
            await self.app(scope, receive, send)
            return

        cookie_header = gpc = b""
        for key, value in scope["headers"]:
            if key == b"cookie":  # several fields are one header (see visitor.request_cookie_header)
                cookie_header = cookie_header + b"; " + value if cookie_header else value
            elif key == b"sec-gpc":
                gpc = value
        reader = self._reader_https if scope.get("scheme") in _SECURE_SCHEMES else self._reader_http
        names = reader.names
        cookies = reader.read(cookie_header)
        # Verified once per consent value (a cache bounded by bytes, verified values only): the rest
        # of a header, however large or varied, costs one reading and is dropped.
        consent = self.codec.decode(cookies.consent)
        if gpc and gpc.strip() == b"1":
            consent = consent.with_gpc(self._gpc_denied)
        state = scope.get("state")
        if state is None:
            state = scope["state"] = {}
        state["consent"] = consent
        upkeep = (
            self._upkeep(scope, names, cookies, consent)
            if cookies.expire or cookies.migrate_consent
            else None
        )

        if kind == "websocket":
            await self.app(scope, receive, self._gated_handshake(send, scope, consent, cookies, upkeep))
            return
        if upkeep:
            send = _prepending_set_cookies(send, upkeep)
        path: str = scope["path"]
        if path.startswith(self._prefix) and (path == self._prefix or path.startswith(self._prefix_slash)):
            await self.routes(scope, receive, send, consent, cookie_header)
            return

        if consent.gpc and consent.decided and not consent.gpc_recorded:
            # R26/R27: the first time a decided visitor meets the signal it is logged, and the
            # re-issued cookie no longer grants what GPC denies, even on a later visit without it.
            cookie = await self.routes.record_gpc(scope, consent)
            if cookie:
                send = _adding_set_cookie(send, cookie)
        others = cookies.others
        denied = self._denied(consent, others) if others else others
        send = self.gate.wrap_send(send, scope, consent, request_cookies=denied, page=self._page)
        await self.app(scope, receive, send)

    def _reader(self, scope: Scope) -> CookieReader:
        return self._reader_https if scope.get("scheme") in _SECURE_SCHEMES else self._reader_http

    def cookie_names(self, scope: Scope) -> CookieNames:
        """The names of the consent and form-token cookies on this request (``__Host-`` on https
        where the configuration allows it)."""
        return self._reader(scope).names

    def cookies(self, scope: Scope) -> VisitorCookies:
        """The request's cookies as the middleware read them (the same remembered reading: the routes
        and the page ask again without parsing the header again)."""
        return self._reader(scope).read(request_cookie_header(scope["headers"]))

    def _denied(self, consent: Consent, others: dict[str, str]) -> dict[str, str]:
        """The request's cookies the gate must expire, and only those: the gate is handed a dict of a
        few names, never a huge Cookie header's."""
        denied = self._cookie_rules.denied_in_request(others, self.gate.plan(consent).allowed)
        return {name: others[name] for name, _ in denied} if denied else {}

    def _upkeep(
        self, scope: Scope, names: CookieNames, cookies: VisitorCookies, consent: Consent
    ) -> list[bytes]:
        """Set-Cookie values that tidy the middleware's own cookies: twins expired wherever this host
        can reach them, a cookie read under the previous release's name re-issued under the new one
        (same value, what is left of its lifetime) and the old one expired."""
        out: list[bytes] = []
        expire = list(cookies.expire)
        if cookies.migrate_consent and consent.decided and cookies.consent:
            assert consent.decided_at is not None and names.old_consent is not None
            left = consent.decided_at + self.codec.lifetime - int(time.time())
            out.append(
                set_cookie_header(names.consent, cookies.consent, self.config.cookie, max_age=left).encode()
            )
            expire.append(names.old_consent)
        host = Headers(scope=scope).get("host")
        secure = scope.get("scheme") in _SECURE_SCHEMES
        gone = [
            v
            for name in expire
            for v in expiry_headers(
                name, paths=self._own_paths, domain=self._own_domain, host=host, secure=secure
            )
        ]
        return gone + out

    def _gated_handshake(
        self, send: Send, scope: Scope, consent: Consent, cookies: VisitorCookies, upkeep: list[bytes] | None
    ) -> Send:
        """A WebSocket handshake obeys the same cookie rules as an HTTP response."""
        rules = self._cookie_rules
        allowed = self.gate.plan(consent).allowed
        extra = list(upkeep or ())
        denied = rules.denied_in_request(cookies.others, allowed) if cookies.others else ()
        if denied:
            host = Headers(scope=scope).get("host")
            secure = scope.get("scheme") in _SECURE_SCHEMES
            extra.extend(
                v for name, decl in denied for v in rules.expire(name, decl, host=host, secure=secure)
            )
        return gate_handshake(send, rules, allowed, extra)

    # --- helpers for the banner's form token (R34) ----------------------------------------------

    def csrf_token(self, csrf_cookie: str) -> str:
        return self._csrf_signer.sign(csrf_cookie).decode()

    def csrf_valid(self, token: str, csrf_cookie: str | None) -> bool:
        if not csrf_cookie or not token:
            return False
        try:
            value = self._csrf_signer.unsign(token).decode()
        except (BadSignature, UnicodeDecodeError):
            return False
        # Only the exact token issued counts (itsdangerous would also take a padded signature).
        return secrets.compare_digest(value, csrf_cookie) and secrets.compare_digest(
            token, self.csrf_token(csrf_cookie)
        )

    def page(self, scope: Scope) -> _Page:
        return _Page(self, scope)

    def csrf_set_cookie(self, value: str, name: str) -> str:
        return set_cookie_header(
            name, value, self.config.cookie, max_age=None, http_only=True, same_site="strict"
        )

    def _closing_on_shutdown(self, send: Send) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                await self.routes.close()
            await send(message)

        return wrapped


def _prepending_set_cookies(send: Send, set_cookies: list[bytes]) -> Send:
    """Adds the middleware's cookie upkeep ahead of the response's own Set-Cookie headers: a browser
    applies them in order, so a cookie the response itself sets (a new decision) comes later and wins."""

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers") or ())
            # The upkeep depends on the request's cookies: no shared cache may hand it to another.
            vary = any(k.lower() == b"vary" and b"cookie" in v.lower() for k, v in headers)
            message["headers"] = [
                *((b"set-cookie", v) for v in set_cookies),
                *headers,
                *(() if vary else ((b"vary", b"Cookie"),)),
            ]
        await send(message)

    return wrapped


def _adding_set_cookie(send: Send, set_cookie: str) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            MutableHeaders(scope=message).append("set-cookie", set_cookie)
        await send(message)

    return wrapped


class _Page:
    """What one HTML page needs: its CSP nonce, the banner in its language, the form token.

    Built only for an HTML response. A visitor without a form-token cookie gets one with the
    headers of the first HTML page (R34: the token is bound to a value the visitor holds); the
    value is made when either the body or the headers first need it, since the gate may render
    the body before it releases the headers.
    """

    __slots__ = ("mw", "scope", "consent", "_csrf", "_csrf_name", "_csrf_is_new", "accept_language", "inject")

    def __init__(self, mw: ConsentMiddleware, scope: Scope) -> None:
        self.mw = mw
        self.scope = scope
        self.consent: Consent = scope["state"]["consent"]
        headers = Headers(scope=scope)
        self._csrf = mw.cookies(scope).csrf
        self._csrf_name = mw.cookie_names(scope).csrf
        self._csrf_is_new = not self._csrf
        self.accept_language = headers.get("accept-language", "")
        self.inject = self._render if mw._inject else None

    def nonce(self) -> str:
        return csp_nonce(self.scope)

    def csrf_value(self) -> str:
        if not self._csrf:
            self._csrf = secrets.token_urlsafe(16)
        return self._csrf

    def html_headers(self) -> list[tuple[bytes, bytes]]:
        """The form-token cookie, for a visitor who has none yet."""
        if not self._csrf_is_new or self.inject is None:
            return []
        return [
            (b"set-cookie", self.mw.csrf_set_cookie(self.csrf_value(), self._csrf_name).encode("latin-1"))
        ]

    def _render(self, html_lang: str | None) -> tuple[str, str]:
        mw = self.mw
        language = mw.banner.pick_language(html_lang, self.accept_language)
        nonce = self.nonce()
        return (
            mw.banner.head_html(self.consent, nonce=nonce),
            mw.banner.body_html(
                self.consent,
                language=language,
                nonce=nonce,
                csrf_token=mw.csrf_token(self.csrf_value()),
                return_to=self.scope["path"],
            ),
        )
