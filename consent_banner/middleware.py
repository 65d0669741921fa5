"""`ConsentMiddleware`: reads the consent on every request and enforces it on every response.

A pure ASGI middleware (no BaseHTTPMiddleware): `__init__` does every costly thing once,
`__call__` decodes the consent, answers its own routes under the prefix, and hands the app a
`send` wrapped by the response gate. See DESIGN.md, "The flow of one request".
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
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .access import csp_nonce
from .banner import Banner
from .config import ConsentConfig
from .consent import UNDECIDED, Consent, ConsentCodec, secret_keys_from_env
from .gate import ResponseGate
from .routes import ConsentRoutes, set_cookie_header

logger = logging.getLogger("consent_banner")

CSRF_SALT = "consent-banner.csrf"
VISITOR_CACHE_SIZE = 8192  # distinct Cookie headers whose consent and parse are kept


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
        self.csrf_cookie = f"{cfg.cookie.name}_csrf"
        self._csrf_signer = Signer(keys, salt=CSRF_SALT, digest_method=hashlib.sha256)
        self.gate = ResponseGate(cfg, own_cookie_names=frozenset({cfg.cookie.name, self.csrf_cookie}))
        self.routes = ConsentRoutes(cfg, self.codec, self.banner, keys=keys, csrf=self)
        self._prefix = cfg.prefix
        self._prefix_slash = cfg.prefix + "/"
        self._gpc_denied = cfg.gpc_denied
        self._inject = cfg.inject
        self._page = self.page  # bound once: the gate calls it for HTML responses only
        self._visitors: dict[bytes, tuple[Consent, dict[str, str]]] = {}

    # --- the request ---------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                send = self._closing_on_shutdown(send)
            await self.app(scope, receive, send)
            return

        cookie_header = gpc = b""
        for key, value in scope["headers"]:
            if key == b"cookie":
                cookie_header = value
            elif key == b"sec-gpc":
                gpc = value
        consent, request_cookies = self._visitor(cookie_header)
        if gpc and gpc.strip() == b"1":
            consent = consent.with_gpc(self._gpc_denied)
        state = scope.get("state")
        if state is None:
            state = scope["state"] = {}
        state["consent"] = consent

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
        send = self.gate.wrap_send(send, scope, consent, request_cookies=request_cookies, page=self._page)
        await self.app(scope, receive, send)

    def _visitor(self, cookie_header: bytes) -> tuple[Consent, dict[str, str]]:
        """The verified consent and the parsed cookies of a Cookie header, cached per header value
        so that a returning visitor costs a dict lookup (expiry is still checked on every hit)."""
        if not cookie_header:
            return UNDECIDED, {}
        hit = self._visitors.get(cookie_header)
        if hit is not None:
            decided_at = hit[0].decided_at
            if decided_at is None or decided_at + self.codec.lifetime >= time.time():
                return hit
        cookies = cookie_parser(cookie_header.decode("latin-1"))
        consent = self.codec.decode(cookies.get(self.config.cookie.name))
        if len(self._visitors) >= VISITOR_CACHE_SIZE:
            self._visitors.clear()
        self._visitors[cookie_header] = (consent, cookies)
        return consent, cookies

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

    def csrf_set_cookie(self, value: str) -> str:
        return set_cookie_header(
            self.csrf_cookie, value, self.config.cookie, max_age=None, http_only=True, same_site="strict"
        )

    def _closing_on_shutdown(self, send: Send) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                await self.routes.close()
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

    __slots__ = ("mw", "scope", "consent", "_csrf", "_csrf_is_new", "accept_language", "inject")

    def __init__(self, mw: ConsentMiddleware, scope: Scope) -> None:
        self.mw = mw
        self.scope = scope
        self.consent: Consent = scope["state"]["consent"]
        headers = Headers(scope=scope)
        _, cookies = mw._visitor(headers.get("cookie", "").encode("latin-1"))  # cached: no second parse
        self._csrf = cookies.get(mw.csrf_cookie)
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
        return [(b"set-cookie", self.mw.csrf_set_cookie(self.csrf_value()).encode("latin-1"))]

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
