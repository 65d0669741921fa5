"""`ConsentMiddleware`: reads the consent on every request and enforces it on every response.

A pure ASGI middleware (no BaseHTTPMiddleware): `__init__` does every costly thing once,
`__call__` reads the consent (`visitor.Visitors`, the one cache of Cookie headers), hands the
requests under the prefix to the endpoints (`routes.ConsentRoutes`, a plain ASGI app), and hands the
app a `send` wrapped by the response gate. WebSocket handshakes get the consent too, and their
``Set-Cookie`` headers go through the same cookie rules. The middleware owns the consent log: it
opens it on first use, hands the endpoints the function that does so, and closes it on shutdown
(answering the lifespan itself for an app that does not speak it, as Django's ASGI handler), and
with it the consent events (`events.Events`: `on_decision` and the webhook loops).
See DESIGN.md, "The flow of one request".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .access import csp_nonce
from .banner import Banner
from .config import NECESSARY, ConsentConfig
from .consent import Consent, ConsentCodec, secret_keys_from_env
from .decisions import Decisions
from .errors import LogError, LogUnavailable
from .events import Events, OnDecision
from .formtoken import FormTokens
from .gate import ResponseGate
from .gate.caching import asks_document, private, unconditional, with_region_vary
from .gate.cookies import expiry_headers
from .gate.handshake import gate_handshake
from .gate.html import Inject
from .gate.inject import FRAGMENT_HEADERS, FRAGMENT_VARY, asks_fragment
from .gate.send import Gating
from .geo import OPT_OUT, Geo
from .log import ConsentLog, hmac_keys_from_secrets, open_log
from .log.keys import LogKeys
from .metrics import Metrics
from .paths import public_path, root_path, route_path
from .request_checks import OriginPolicy, SiteOrigins
from .routes import ConsentRoutes
from .visitor import (
    MAX_APPLIED,
    NOTICE_SUFFIX,
    Visit,
    VisitorCookies,
    Visitors,
    own_cookie_names,
    request_cookies,
    set_cookie_header,
)

logger = logging.getLogger("consent_banner")

_SECURE_SCHEMES = frozenset({"https", "wss"})
# A Vary field beside the gate's own, on pages where the banner is injected: a fragment request gets
# none, and a page without `lang` gets the banner in the visitor's Accept-Language.
_PAGE_VARY = (b"vary", b", ".join((*FRAGMENT_VARY, b"Accept-Language")))


class ConsentMiddleware:
    """Keeps trackers out until the visitor consents, and records every decision.

    `config` is a ConsentConfig (or a path to a consent.toml); signing keys come from the
    CONSENT_SECRET_KEYS environment variable unless `secret_keys` is given (newest last).
    `on_decision` (sync or async) is called with each decision once it is durable in the log, as a
    dict shaped like a line of the NDJSON export, off the visitor's path (events/callback.py).
    """

    def __init__(
        self,
        app: ASGIApp,
        config: ConsentConfig | str | Path,
        *,
        secret_keys: Sequence[str] | None = None,
        on_decision: OnDecision | None = None,
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
            necessary_services=[s.name for s in cfg.services_in(NECESSARY)],
            retired_services=cfg.retired_services,
        )
        # Ed25519 (CONSENT_LOG_SIGNING_KEY) signs the log so anyone with the public key verifies it, and
        # the visitors' receipts (the settings dialog links the signed one); a malformed key stops the
        # start here, naming the variable.
        self.log_keys = LogKeys.from_env()
        self.banner = Banner(cfg, prefix=cfg.prefix, signed_receipts=self.log_keys.signer is not None)
        self.site = SiteOrigins(cfg.site_origins)  # this site's origins as the browser sees them
        self.visitors = Visitors(cfg.cookie, self.codec, https_site=self.site.https)
        self.tokens = FormTokens(keys, cfg.cookie)
        self.gate = ResponseGate(cfg, own_cookie_names=own_cookie_names(cfg.cookie))
        self._cookie_rules = self.gate.cookie_rules  # one verdict cache, each undeclared name reported once
        self._own_paths = tuple(dict.fromkeys(("/", cfg.cookie.path)))
        self._own_domain = "." + cfg.cookie.domain.lstrip(".") if cfg.cookie.domain else None
        # The log's head and checkpoints are HMAC-signed with keys derived from the signing keys.
        self._log_key, self._previous_log_keys = hmac_keys_from_secrets(keys)
        # And with Ed25519 (self.log_keys, above).
        self._log: ConsentLog | None = None
        self._log_lock = asyncio.Lock()
        self._audit_reader: ConsentLog | None = None  # the log as the audit view reads it
        self._audit_lock = asyncio.Lock()
        self.metrics = Metrics(lambda: self._log)  # a scrape reads the log's writer, never opens it
        # on_decision and [[webhooks]]; a webhook whose secret is missing stops the start here.
        self.events = Events(on_decision, cfg.webhooks)
        self.decisions = Decisions(
            cfg,
            self.codec,
            self.banner,
            visitors=self.visitors,
            tokens=self.tokens,
            origins=OriginPolicy(cfg.allowed_origins, self.site),
            log=self.log,
            metrics=self.metrics,
            on_record=self.events.recorded if self.events.wanted else None,
        )
        self.routes = ConsentRoutes(
            cfg,
            self.codec,
            self.banner,
            visitors=self.visitors,
            tokens=self.tokens,
            decisions=self.decisions,
            log=self.log,
            metrics=self.metrics,
            log_keys=self.log_keys,
            audit_log=self.audit_log,
        )
        self._prefix = cfg.prefix
        self._prefix_slash = cfg.prefix + "/"
        self._gpc_denied = cfg.gpc_denied
        # [geo]: the consent model by the region the site's edge names (geo.py); None: opt-in for all.
        self.geo = Geo(cfg.geo) if cfg.geo is not None else None
        self._optional = frozenset(cfg.optional_categories)
        self._inject = cfg.inject
        self._page = self.page  # bound once: the gate calls it for HTML responses only
        self._visit = self.visitors.visit

    # --- the request ---------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            if kind == "lifespan":
                await self._lifespan(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return

        header, gpc, conditional = request_cookies(scope["headers"])
        visit = self._visit(header, scope.get("scheme") in _SECURE_SCHEMES)
        # Remembered with the reading: a returning visitor's request costs two lookups here.
        if self.geo is None:
            consent, gating = visit.applied.get(gpc) or self._apply(visit, gpc)
        else:
            region, model = self.geo.locate(scope["headers"])
            consent, gating = visit.applied.get((gpc, region)) or self._apply(
                visit, gpc, region, model, self.visitors.names(scope).consent + NOTICE_SUFFIX
            )
            if self.geo.vary:  # what the gate makes private depends on the region too
                send = with_region_vary(send, self.geo.vary)
        state = scope.get("state")
        if state is None:
            state = scope["state"] = {}
        state["consent"] = consent
        upkeep = self._upkeep(scope, visit.cookies, consent) if visit.tidy else None

        if kind == "websocket":
            if self._ours(scope):
                # No consent route is a WebSocket, and a path under the prefix is never the app's: a
                # handshake there is refused (403) rather than handed to the app (a proxied upstream).
                await send({"type": "websocket.close", "code": 1008})
                return
            await self.app(scope, receive, self._gated_handshake(send, scope, consent, visit, upkeep))
            return
        if upkeep:
            send = _prepending_set_cookies(send, upkeep)
        if self._ours(scope):
            await self.routes(scope, receive, send)
            return

        if gpc and consent.decided and not consent.gpc_recorded:
            # R26/R27: the first time a decided visitor meets the signal it is logged, and the
            # re-issued cookie no longer grants what GPC denies, even on a later visit without it.
            cookie = await self.decisions.record_gpc(scope, consent)
            if cookie:
                send = _adding_set_cookie(send, cookie)
        elif gpc and consent.model == OPT_OUT and not consent.decided and asks_document(scope["headers"]):
            # Under opt-out, GPC before any decision is the visitor's opt-out: logged once as `opt_out`
            # (source gpc) with the navigation that brought it (not each of the page's subresources,
            # which arrive before the cookie), and remembered in a cookie as for the decided visitor.
            cookie = await self.decisions.record_opt_out_gpc(scope, consent)
            if cookie:
                send = _adding_set_cookie(send, cookie)
        if conditional and self.gate.handles_html:
            # Validators a browser kept for a page from before this release (or a consent state ago):
            # a 304 would bring back that page and its policy, so a document is answered in full.
            scope["headers"] = unconditional(scope["headers"])
        # What `gate.wrap_send` makes, from the gating remembered with the visit.
        await self.app(scope, receive, gating.wrap(send, scope))

    def _ours(self, scope: Scope) -> bool:
        """Whether the request's path is under the prefix: the consent routes', never the app's. The
        prefix is inside the app: after the root path when the scope's path holds one (paths.py)."""
        if self._prefix not in scope["path"]:
            return False
        sub = route_path(scope)
        return sub == self._prefix or sub.startswith(self._prefix_slash)

    def _apply(
        self,
        visit: Visit,
        gpc: bool,
        region: str | None = None,
        model: str | None = None,
        notice: str = "",
    ) -> tuple[Consent, Gating]:
        """The consent as it applies to a request with or without Sec-GPC (and, with [geo], in its
        region's model), and the gate as it applies to it: its plan, and the request's cookies it must
        expire (only those: the gate is handed a dict of a few names, never a huge Cookie header's).
        Remembered in the visit, a few per visit: a cookie replayed from many regions is not."""
        consent = visit.consent
        key: object = gpc
        if model is not None:
            consent = consent.under(region, model, self._optional, dismissed=notice in visit.cookies.others)
            key = (gpc, region)
        if gpc:
            consent = consent.with_gpc(self._gpc_denied)
        plan = self.gate.plan(consent)
        others = visit.cookies.others
        denied: dict[str, str] = {}
        if others:
            found = self._cookie_rules.denied_in_request(others, plan.allowed)
            denied = {name: others[name] for name, _ in found}
        applied = (consent, Gating(self.gate, plan, denied, self._page))
        if len(visit.applied) < MAX_APPLIED:
            visit.applied[key] = applied
        return applied

    def _upkeep(self, scope: Scope, cookies: VisitorCookies, consent: Consent) -> list[bytes]:
        """Set-Cookie values that tidy the middleware's own cookies: twins expired wherever this host
        can reach them, a cookie read under the previous release's name re-issued under the new one
        (same value, what is left of its lifetime) and the old one expired."""
        names = self.visitors.names(scope)
        out: list[bytes] = []
        expire = list(cookies.expire)
        if cookies.migrate_consent and consent.decided and cookies.consent:
            assert consent.decided_at is not None and names.old_consent is not None
            left = consent.decided_at + self.codec.lifetime - int(time.time())
            out.append(
                set_cookie_header(names.consent, cookies.consent, self.config.cookie, max_age=left).encode()
            )
            expire.append(names.old_consent)
        host, secure = self.site.host(scope), self.site.secure(scope)
        gone = [
            v
            for name in expire
            for v in expiry_headers(
                name, paths=self._own_paths, domain=self._own_domain, host=host, secure=secure
            )
        ]
        return gone + out

    def _gated_handshake(
        self, send: Send, scope: Scope, consent: Consent, visit: Visit, upkeep: list[bytes] | None
    ) -> Send:
        """A WebSocket handshake obeys the same cookie rules as an HTTP response."""
        rules = self._cookie_rules
        allowed = self.gate.plan(consent).allowed
        extra = list(upkeep or ())
        others = visit.cookies.others
        denied = rules.denied_in_request(others, allowed) if others else ()
        if denied:
            host, secure = self.site.host(scope), self.site.secure(scope)
            extra.extend(
                v for name, decl in denied for v in rules.expire(name, decl, host=host, secure=secure)
            )
        return gate_handshake(send, rules, allowed, extra)

    def page(self, scope: Scope) -> _Page:
        """What the gate needs for one HTML response (see `gate.PageHooks`)."""
        return _Page(self, scope)

    # --- the log ---------------------------------------------------------------------------------

    async def log(self) -> ConsentLog:
        """The consent log, opened on first use (LogUnavailable when it cannot be)."""
        if self._log is None:
            async with self._log_lock:
                if self._log is None:
                    try:
                        self._log = await open_log(
                            self.config.log,
                            hmac_key=self._log_key,
                            previous_hmac_keys=self._previous_log_keys,
                            log_keys=self.log_keys,
                        )
                    except OSError as e:
                        raise LogUnavailable(f"the consent log cannot be opened: {e}") from e
                    self.events.start(self.log)  # the webhooks deliver while the log is open
        return self._log

    async def audit_log(self) -> ConsentLog:
        """The log as the audit view reads it, opened read-only on first use (`audit_log`, else `log`):
        the auditor's pages never write, lock or migrate, may use credentials that only SELECT, and
        still answer while the writer cannot (a schema waiting for `log migrate`). An in-memory log
        has no second connection to it: there the audit view reads through the writer's."""
        url = self.config.audit_log or self.config.log
        if url.startswith("memory://"):
            return await self.log()
        if self._audit_reader is None:
            if self.config.audit_log is None:
                # The app's own log: opened by its writer first, which creates it when new (as a first
                # request would); a writer refused (an older schema) still leaves it to read.
                with contextlib.suppress(LogError):
                    await self.log()
            async with self._audit_lock:
                if self._audit_reader is None:
                    try:
                        self._audit_reader = await open_log(
                            url,
                            hmac_key=None,
                            previous_hmac_keys=[self._log_key, *self._previous_log_keys],
                            read_only=True,
                            log_keys=self.log_keys,
                        )
                    except OSError as e:
                        raise LogUnavailable(f"the consent log cannot be opened to read: {e}") from e
        return self._audit_reader

    async def close(self) -> None:
        """Close the log (done on ASGI lifespan shutdown; call it where the server sends none)."""
        await self.events.close(self._log)  # before the log: the loops release their leases in it
        if self._log is not None:
            await self._log.close()
            self._log = None
        if self._audit_reader is not None:
            await self._audit_reader.close()
            self._audit_reader = None

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The app's lifespan, or ours when the app does not speak the protocol.

        Django's ASGI handler raises on a lifespan scope ("Django can only handle ASGI/HTTP
        connections"), and a2wsgi or a bare app may return at once: a server with lifespan "on", or a
        test client that runs it, would then refuse to start, and nothing would close the log. An app
        that speaks lifespan receives `lifespan.startup` before anything else, so an app that ends,
        raising or not, without having received a message does not speak it and the middleware
        answers instead. An app that received its startup and then failed has a real startup failure:
        that is raised, never swallowed."""
        receiving = _Receiving(receive)
        try:
            await self.app(scope, receiving, self._closing_on_shutdown(send))
        except Exception as e:
            if receiving.used:
                raise
            logger.info("the app refused the ASGI lifespan protocol (%s): ConsentMiddleware answers it", e)
        else:
            if receiving.used:
                return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.events.start(self.log)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _closing_on_shutdown(self, send: Send) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                await self.close()
            elif message["type"] == "lifespan.startup.complete":
                self.events.start(self.log)  # webhooks owed from before a restart go out without a request
            await send(message)

        return wrapped


class _Receiving:
    """An ASGI `receive` that remembers whether the app called it."""

    __slots__ = ("_receive", "used")

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self.used = False

    async def __call__(self) -> Message:
        self.used = True
        return await self._receive()


def _prepending_set_cookies(send: Send, set_cookies: list[bytes]) -> Send:
    """Adds the middleware's cookie upkeep ahead of the response's own Set-Cookie headers: a browser
    applies them in order, so a cookie the response itself sets (a new decision) comes later and wins."""

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            # The upkeep depends on the request's cookies: no shared cache may hand it to another.
            headers = [*((b"set-cookie", v) for v in set_cookies), *(message.get("headers") or ())]
            message["headers"] = private(headers, validators=True)
        await send(message)

    return wrapped


def _adding_set_cookie(send: Send, set_cookie: str) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            # The visitor's own consent cookie, re-issued: for no shared cache to hand to another.
            headers = [*(message.get("headers") or ()), (b"set-cookie", set_cookie.encode("latin-1"))]
            message["headers"] = private(headers, validators=True)
        await send(message)

    return wrapped


class _Page:
    """What one HTML page needs: its CSP nonce, its language, the banner in it, the form token.

    Built only for an HTML response. A visitor without a form-token cookie gets one with the
    headers of the first HTML page (R34: the token is bound to a value the visitor holds); the
    value is made when either the body or the headers first need it, since the gate may render
    the body before it releases the headers. A request for a fragment (htmx, a Turbo frame, XHR:
    `gate.inject.asks_fragment`) is swapped into a page that has its banner: nothing is injected
    into its answer, and every HTML answer, where injection is on, varies on those headers.
    """

    __slots__ = ("mw", "scope", "consent", "_csrf", "_csrf_name", "_csrf_is_new", "accept_language", "inject")

    def __init__(self, mw: ConsentMiddleware, scope: Scope) -> None:
        self.mw = mw
        self.scope = scope
        self.consent: Consent = scope["state"]["consent"]
        self._csrf = mw.visitors.cookies(scope).csrf
        self._csrf_name = mw.visitors.names(scope).csrf
        self._csrf_is_new = not self._csrf
        # One pass over the request's headers (built for every HTML response): the first
        # Accept-Language, and whether the request asks for a fragment.
        language: bytes | None = None
        fragment = False
        for name, value in scope["headers"]:
            if name == b"accept-language":
                if language is None:
                    language = value
            elif name in FRAGMENT_HEADERS and asks_fragment(name, value):
                fragment = True
        self.accept_language = language.decode("latin-1") if language else ""
        self.inject: Inject | None = self._render if mw._inject and not fragment else None

    def nonce(self) -> str:
        return csp_nonce(self.scope)

    def language(self, html_lang: str | None) -> str:
        """The page's language: its banner's and its placeholders' (the page's `lang`, else the
        visitor's Accept-Language, else the default)."""
        return self.mw.banner.pick_language(html_lang, self.accept_language)

    def csrf_value(self) -> str:
        if not self._csrf:
            self._csrf = self.mw.tokens.new_value()
        return self._csrf

    def html_headers(self) -> list[tuple[bytes, bytes]]:
        """Vary on the fragment headers and Accept-Language (where injection is on), and the form-token
        cookie for a visitor who has none yet, unless nothing is injected."""
        if not self.mw._inject:
            return []
        if not self._csrf_is_new or self.inject is None:
            return [_PAGE_VARY]
        cookie = self.mw.tokens.set_cookie(self._csrf_name, self.csrf_value())
        return [_PAGE_VARY, (b"set-cookie", cookie.encode("latin-1"))]

    def _render(self, html_lang: str | None) -> tuple[str, str]:
        banner = self.mw.banner
        nonce = self.nonce()
        if self.scope.get("root_path"):  # mounted: our URLs, and the page's, start at the mount point
            root, return_to = root_path(self.scope), public_path(self.scope)
        else:
            root, return_to = "", self.scope["path"]
        return (
            banner.head_html(self.consent, nonce=nonce, root_path=root),
            banner.body_html(
                self.consent,
                language=self.language(html_lang),
                nonce=nonce,
                csrf_token=self.mw.tokens.token(self.csrf_value()),
                return_to=return_to,
                root_path=root,
            ),
        )
