"""The `/_consent/*` endpoints: a plain ASGI app the middleware hands the requests under its prefix.

Dispatch by path and method, CORS for the configured `allowed_origins`, and the endpoints that are
not decisions: the visitor's state, the banner fragment and declaration for embedding sites, the
script and stylesheet, the receipt, CSP violation reports, the log's public keys (`/log-key`,
`log_key.py`), the audit view mounted at `/audit`, and the operators' `/health` (`health.py`) and
`/metrics` (`metrics.py`, which every endpoint counts into).
Decisions and withdrawals are `decisions.py`'s. The log is the middleware's: it is handed down as a
function that opens it on first use, and a log that fails answers 503 (fail closed).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from . import failure
from .banner import Banner
from .config import ConsentConfig
from .consent import Consent, ConsentCodec, consent_json
from .decisions import Decisions, OpenLog
from .errors import DecisionError, LogError
from .formtoken import FormTokens
from .gate.caching import private
from .gate.csp import MAX_REPORT_BYTES, parse_reports
from .gpp import state_for as gpp_state
from .health import Health
from .log import BlockedAttempt, InvalidDecision, truncate_ip
from .log.keys import LogKeys
from .log_key import LogKeyEndpoint
from .metrics import Metrics, metrics_app, refusal_reason
from .paths import root_path, route_path
from .ratelimit import ClientBudget, Rate
from .request_checks import media_type, read_body
from .visitor import Visitors

if TYPE_CHECKING:
    from .audit.credentials import FailedLogins

logger = logging.getLogger("consent_banner")

REPORTS_PER_SECOND = 20  # CSP reports stored per process and second; the rest are dropped
REPORTS_PER_CLIENT = Rate(10, 1)  # and per client address: one client gets at most half of them
TOKEN_HEADER = "x-consent-token"
# Endpoints whose answer is the visitor's own (their state, decision, banner, receipt): kept out of
# shared caches (gate/caching.py). The script, stylesheet and declaration are everyone's, and cacheable.
PER_VISITOR = frozenset({"", "/state", "/withdraw", "/dismiss", "/banner", "/receipt"})

Endpoint = Callable[[Request, Consent], Awaitable[Response]]


class ConsentRoutes:
    """Answers the requests under the prefix; one instance per middleware."""

    def __init__(
        self,
        config: ConsentConfig,
        codec: ConsentCodec,
        banner: Banner,
        *,
        visitors: Visitors,
        tokens: FormTokens,
        decisions: Decisions,
        log: OpenLog,
        metrics: Metrics | None = None,
        log_keys: LogKeys | None = None,
        audit_log: OpenLog | None = None,
    ) -> None:
        self.config = config
        self.codec = codec
        self.banner = banner
        self.visitors = visitors
        self.tokens = tokens
        self.decisions = decisions
        self.origins = decisions.origins
        self.audit_log = audit_log or log  # what the audit view reads: a read-only log (the middleware's)
        self.log = log
        self.prefix = config.prefix
        self._audit_app: ASGIApp | None | Literal[False] = False  # False: not built yet
        self.metrics = metrics or Metrics()
        self.log_keys = log_keys or LogKeys()  # the newest signing key signs the receipt's JWS too
        self._metrics_app: ASGIApp | None | Literal[False] = False  # False: not built yet
        self._logins: FailedLogins | None = None
        self._report_window = (0, 0)  # (second, count)
        self._report_budget = ClientBudget(REPORTS_PER_CLIENT)
        self._handlers: dict[str, tuple[str, Endpoint]] = {
            "": ("POST", decisions.decide),
            "/state": ("GET", self.state),
            "/withdraw": ("POST", decisions.withdraw),
            "/dismiss": ("POST", decisions.dismiss),
            "/banner": ("GET", self.fragment),
            "/declaration": ("GET", self.declaration),
            "/consent.js": ("GET", self.script),
            "/consent.css": ("GET", self.stylesheet),
            "/receipt": ("GET", self.receipt),
            "/csp-report": ("POST", self.csp_report),
            "/health": ("GET", Health(log).endpoint),
            "/log-key": ("GET", LogKeyEndpoint(self.log_keys).endpoint),
        }
        if config.geo is not None and config.geo.uses_opt_out:
            # window.__gpp: only where a visitor can be under the opt-out model (gpp.py).
            self._handlers["/gpp.js"] = ("GET", self.gpp_script)

    # --- dispatch -------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sub = route_path(scope)[len(self.prefix) :]  # the middleware matched the prefix there
        if sub == "/audit" or sub.startswith("/audit/"):
            try:
                await self._audit(scope, receive, send, sub)
            except LogError as e:
                self.metrics.unavailable("audit")
                await _unavailable(e)(scope, receive, send)
            return
        if sub == "/metrics":
            await self._metrics(scope, receive, send)
            return
        request = Request(scope, receive)
        name = sub.rstrip("/") if sub != "/" else ""
        handler = self._handlers.get(name)
        response: Response
        try:
            if handler is None:
                raise DecisionError(404, f"no such consent endpoint: {scope['path']}")
            method, endpoint = handler
            if request.method == "OPTIONS":
                response = self._preflight(request, method)
            elif request.method != method and not (method == "GET" and request.method == "HEAD"):
                raise DecisionError(405, f"{scope['path']} answers {method} only")
            else:
                response = await endpoint(request, self._consent_of(request, scope["state"]["consent"]))
        except ClientDisconnect:
            return
        except LogError as e:
            self.metrics.unavailable(_endpoint_name(sub) if handler else "unknown")
            response = _unavailable(e)
        except InvalidDecision as e:  # the log's own validation; the checks above should have caught it
            response = JSONResponse({"error": str(e)}, status_code=400)
        except DecisionError as e:
            self.metrics.refused(_endpoint_name(sub) if handler else "unknown", refusal_reason(e))
            response = JSONResponse({"error": e.message}, status_code=e.status)
            if e.status == 405:
                response.headers["allow"] = handler[0] if handler else "GET"
        if response.status_code >= 400:  # the banner's form post (JavaScript off) gets a page, not JSON
            response = failure.instead(request, self.banner, response)
        if handler is not None and name in PER_VISITOR and response.status_code < 400:
            # A refusal says no-store already (the failure page) or depends on no consent.
            response.raw_headers[:] = private(response.raw_headers)  # in place: `headers` is a view of it
        self._cors(request, response)
        await response(scope, receive, send)

    def _consent_of(self, request: Request, consent: Consent) -> Consent:
        """Embedded sites keep the cookie first-party and send its value in a header instead."""
        token = request.headers.get(TOKEN_HEADER)
        if consent.decided or not token or self.origins.cross_origin(request) is None:
            return consent
        found = self.codec.decode(token)
        if not found.decided:
            return consent  # undecided either way: as the middleware applied it (its model included)
        found = found.under(consent.region, consent.model, self.config.optional_categories)
        return found.with_gpc(self.config.gpc_denied) if consent.gpc else found

    # --- reading ----------------------------------------------------------------------------------

    async def state(self, request: Request, consent: Consent) -> Response:
        return JSONResponse(
            consent_json(consent, self.config.policy_revision, gpp_state(consent, self.config)),
            headers={"cache-control": "private, no-store", "vary": "Cookie, Sec-GPC"},
        )

    async def fragment(self, request: Request, consent: Consent) -> Response:
        language = self._query_language(request)
        csrf_value = self.visitors.cookies(request.scope).csrf
        token = self.tokens.token(csrf_value) if csrf_value else ""
        root = root_path(request.scope)
        html = self.banner.fragment(
            consent, language=language, csrf_token=token, return_to=root + "/", root_path=root
        )
        # The language follows Accept-Language when ?lang= names none we have: a cache must key on it.
        return HTMLResponse(
            html, headers={"cache-control": "private, no-cache", "vary": "Cookie, Sec-GPC, Accept-Language"}
        )

    async def declaration(self, request: Request, consent: Consent) -> Response:
        return HTMLResponse(
            self.banner.declaration(self._query_language(request)),
            headers={"cache-control": "public, max-age=300", "vary": "Accept-Language"},
        )

    def _query_language(self, request: Request) -> str:
        # A page in a language we have no texts for still gets a banner: the nearest we have.
        return self.banner.pick_language(
            request.query_params.get("lang"), request.headers.get("accept-language")
        )

    async def script(self, request: Request, consent: Consent) -> Response:
        return _asset(request, self.banner.script_path, self.banner.script_hash, "text/javascript")

    async def stylesheet(self, request: Request, consent: Consent) -> Response:
        return _asset(request, self.banner.css_path, self.banner.css_hash, "text/css")

    async def gpp_script(self, request: Request, consent: Consent) -> Response:
        return _asset(request, self.banner.gpp_path, self.banner.gpp_hash, "text/javascript")

    async def receipt(self, request: Request, consent: Consent) -> Response:
        from .audit import receipt

        return await receipt(
            request, consent, await self.log(), self.banner, log_keys=self.log_keys, site=self.origins.site
        )

    async def csp_report(self, request: Request, consent: Consent) -> Response:
        body = await read_body(request, MAX_REPORT_BYTES)
        try:
            reports = parse_reports(body, media_type(request))
        except ValueError as e:
            raise DecisionError(400, str(e)) from None
        second = int(time.monotonic())
        window, count = self._report_window
        count = count if window == second else 0
        stored = reports[: max(0, REPORTS_PER_SECOND - count)]
        client = request.scope.get("client")
        for n in range(len(stored)):
            if self._report_budget.take(client) > 0:
                stored = stored[:n]
                break
        self._report_window = (second, count + len(stored))
        self.metrics.reports(len(reports), len(stored))
        if len(stored) < len(reports):
            self.metrics.rate_limited("csp_report")
        if stored:
            log = await self.log()
            # The network, as a decision records it: `log blocked --suggest` counts distinct ones.
            network = truncate_ip(client[0] if client else None)
            for page, origin, directive in stored:
                await log.add_blocked(
                    BlockedAttempt(
                        page=page, origin=origin, directive=directive, consent_id=consent.id, client=network
                    )
                )
        return Response(status_code=204)

    async def _audit(self, scope: Scope, receive: Receive, send: Send, sub: str) -> None:
        if self._audit_app is False:
            from .audit import build_audit_app

            self._audit_app = build_audit_app(
                self.config, await self.audit_log(), failed_logins=self._failed_logins()
            )
        if self._audit_app is None:
            await JSONResponse({"error": "the audit view is not enabled"}, status_code=404)(
                scope, receive, send
            )
            return
        child = dict(scope)
        child["root_path"] = root_path(scope) + self.prefix + "/audit"
        child["path"] = sub.removeprefix("/audit") or "/"
        await self._audit_app(child, receive, send)

    def _failed_logins(self) -> FailedLogins:
        """One count of wrong credentials for the audit view and the metrics: two doors, one budget."""
        if self._logins is None:
            from .audit.credentials import FailedLogins

            self._logins = FailedLogins()
        return self._logins

    async def _metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The counters, behind the audit view's credentials; 404 when none are configured (no log
        needed: the counts matter most when the log is down)."""
        if self._metrics_app is False:
            self._metrics_app = metrics_app(self.metrics, self._failed_logins())
        if self._metrics_app is None:
            missing = JSONResponse({"error": "the metrics are not enabled"}, status_code=404)
            await missing(scope, receive, send)
            return
        await self._metrics_app(scope, receive, send)

    # --- CORS for embedded sites -----------------------------------------------------------------

    def _preflight(self, request: Request, method: str) -> Response:
        if self.origins.cross_origin(request) is None:
            raise DecisionError(403, "preflight refused: origin not allowed")
        return Response(
            status_code=204,
            headers={
                "access-control-allow-methods": f"{method}, OPTIONS",
                "access-control-allow-headers": f"content-type, {TOKEN_HEADER}",
                "access-control-max-age": "600",
            },
        )

    def _cors(self, request: Request, response: Response) -> None:
        origin = self.origins.cross_origin(request)
        if origin is not None:
            response.headers["access-control-allow-origin"] = origin
            response.headers.append("vary", "Origin")


def _endpoint_name(sub: str) -> str:
    """The metrics' name of an endpoint in the table: its path under the prefix, "decide" for the prefix."""
    return sub.strip("/") or "decide"


def _unavailable(error: LogError) -> Response:
    """Fail closed: nothing recorded, no cookie; the visitor stays as they were."""
    logger.error("the consent log is unavailable: %s", error)
    return JSONResponse(
        {"error": "the consent log is unavailable; nothing was recorded, try again later"},
        status_code=503,
        headers={"retry-after": "5"},
    )


def _asset(request: Request, path: Path, digest: str, media_type: str) -> Response:
    # A URL carrying the content hash never changes: cache it for a year.
    immutable = request.query_params.get("v") == digest
    cache = "public, max-age=31536000, immutable" if immutable else "public, max-age=300"
    return FileResponse(path, media_type=media_type, headers={"cache-control": cache, "etag": f'"{digest}"'})
