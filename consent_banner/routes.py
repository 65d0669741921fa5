"""The `/_consent/*` endpoints, answered by the middleware itself (the app never sees them).

decide (POST {prefix}), state, withdraw, banner fragment, declaration, script and stylesheet,
receipt, CSP reports, and the audit view. A decision is validated, checked for its origin,
appended to the log and awaited until durable; only then does the visitor get a cookie.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

from markupsafe import escape
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .banner import Banner
from .config import NECESSARY, ConsentConfig, CookieSettings
from .consent import Consent, ConsentCodec, consent_json, new_consent_id
from .errors import DecisionError, LogError, LogUnavailable
from .gate.csp import parse_reports
from .log import ConsentLog, InvalidDecision, hmac_keys_from_secrets, open_log
from .log.events import BlockedAttempt, Decision, browser_family, truncate_ip
from .ratelimit import ClientBudget, ProxyHint, Rate
from .visitor import CookieNames, VisitorCookies

logger = logging.getLogger("consent_banner")

MAX_DECISION_BODY = 8 * 1024  # bytes
MAX_REPORT_BODY = 64 * 1024  # bytes
REPORTS_PER_SECOND = 20  # CSP reports stored per process and second; the rest are dropped
REPORTS_PER_CLIENT = Rate(10, 1)  # and per client address: one client gets at most half of them
JSON_TYPES = ("application/json",)
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
TOKEN_HEADER = "x-consent-token"


class _CsrfCheck(Protocol):
    def cookie_names(self, scope: Scope) -> CookieNames: ...

    def cookies(self, scope: Scope) -> VisitorCookies: ...

    def csrf_token(self, csrf_cookie: str) -> str: ...

    def csrf_valid(self, token: str, csrf_cookie: str | None) -> bool: ...


class DecisionBody(BaseModel):
    """The JSON a decision carries (strict: no coercion, no unknown fields)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    action: Literal["accept_all", "reject_all", "custom"]
    categories: list[str] = []
    services: dict[str, bool] = {}
    language: str | None = None
    source: Literal["banner", "dialog", "settings", "api"] | None = None
    gpc: bool = False


class WithdrawBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    language: str | None = None
    source: Literal["banner", "dialog", "settings", "api"] | None = None
    gpc: bool = False


def set_cookie_header(
    name: str,
    value: str,
    settings: CookieSettings,
    *,
    max_age: int | None,
    http_only: bool = False,
    same_site: str | None = None,
) -> str:
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


@dataclass(frozen=True)
class _Choice:
    """What a visitor decided, as the decision endpoints read it."""

    action: str
    granted: frozenset[str]
    services: dict[str, bool]
    language: str | None
    source: str
    gpc_claimed: bool  # the browser script saw navigator.globalPrivacyControl


@dataclass(frozen=True)
class _Reply:
    """How to answer it: a redirect for the form, JSON for the script, a token for another origin."""

    kind: str  # "form" or "json"
    return_to: Any  # the form's return_to field, checked to be a same-origin path before use
    cross: str | None  # the allowed other origin the decision came from, None for this site


class ConsentRoutes:
    """Dispatches requests under the prefix. One instance per middleware."""

    def __init__(
        self,
        config: ConsentConfig,
        codec: ConsentCodec,
        banner: Banner,
        *,
        keys: Sequence[str],
        csrf: _CsrfCheck,
    ) -> None:
        self.config = config
        self.codec = codec
        self.banner = banner
        self.csrf = csrf
        self.prefix = config.prefix
        # The log's head and checkpoints are HMAC-signed with keys derived from the signing keys.
        self._log_key, self._previous_log_keys = hmac_keys_from_secrets(keys)
        self._log: ConsentLog | None = None
        self._log_lock = asyncio.Lock()
        self._audit_app: ASGIApp | None | Literal[False] = False  # False: not built yet
        self._versions: dict[str, dict[str, Any]] = {}
        self._report_window = (0, 0)  # (second, count)
        self._report_budget = ClientBudget(REPORTS_PER_CLIENT)
        rate = config.decision_rate
        self._decision_budget = ClientBudget(rate) if rate is not None else None
        self._proxy_hint = ProxyHint()
        self._handlers = {
            "": ("POST", self.decide),
            "/state": ("GET", self.state),
            "/withdraw": ("POST", self.withdraw),
            "/banner": ("GET", self.fragment),
            "/declaration": ("GET", self.declaration),
            "/consent.js": ("GET", self.script),
            "/consent.css": ("GET", self.stylesheet),
            "/receipt": ("GET", self.receipt),
            "/csp-report": ("POST", self.csp_report),
        }

    # --- dispatch -------------------------------------------------------------------------------

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, consent: Consent, cookie_header: bytes
    ) -> None:
        sub = scope["path"][len(self.prefix) :]
        request = Request(scope, receive)
        if sub == "/audit" or sub.startswith("/audit/"):
            try:
                await self._audit(scope, receive, send, sub)
            except LogError as e:
                await self._unavailable(e)(scope, receive, send)
            return
        handler = self._handlers.get(sub.rstrip("/") if sub != "/" else "")
        try:
            if handler is None:
                raise DecisionError(404, f"no such consent endpoint: {scope['path']}")
            method, endpoint = handler
            if request.method == "OPTIONS":
                response = self._preflight(request, method)
            elif request.method != method and not (method == "GET" and request.method == "HEAD"):
                raise DecisionError(405, f"{scope['path']} answers {method} only")
            else:
                response = await endpoint(request, self._consent_of(request, consent))
        except ClientDisconnect:
            return
        except LogError as e:
            response = self._unavailable(e)
        except InvalidDecision as e:  # the log's own validation; the checks above should have caught it
            response = JSONResponse({"error": str(e)}, status_code=400)
        except DecisionError as e:
            response = JSONResponse({"error": e.message}, status_code=e.status)
            if e.status == 405:
                response.headers["allow"] = handler[0] if handler else "GET"
        self._cors(request, response)
        await response(scope, receive, send)

    @staticmethod
    def _unavailable(error: LogError) -> Response:
        """Fail closed: nothing recorded, no cookie; the visitor stays as they were."""
        logger.error("the consent log is unavailable: %s", error)
        return JSONResponse(
            {"error": "the consent log is unavailable; nothing was recorded, try again later"},
            status_code=503,
            headers={"retry-after": "5"},
        )

    def _consent_of(self, request: Request, consent: Consent) -> Consent:
        """Embedded sites keep the cookie first-party and send its value in a header instead."""
        token = request.headers.get(TOKEN_HEADER)
        if consent.decided or not token or self._cross_origin(request) is None:
            return consent
        found = self.codec.decode(token)
        return found.with_gpc(self.config.gpc_denied) if consent.gpc else found

    # --- decisions ------------------------------------------------------------------------------

    async def decide(self, request: Request, consent: Consent) -> Response:
        cross = self._check_origin(request)
        kind, fields = await self._read_decision(request, consent)
        return_to = fields.pop("return_to", None) if kind == "form" else None
        body = _validated(DecisionBody, fields)
        granted = self._granted(body)
        source = body.source or ("form" if kind == "form" else "api" if cross is None else "banner")
        choice = _Choice(
            body.action, granted, self._services(body.services, granted), body.language, source, body.gpc
        )
        return await self._record(request, consent, choice, _Reply(kind, return_to, cross))

    async def withdraw(self, request: Request, consent: Consent) -> Response:
        cross = self._check_origin(request)
        kind, fields = await self._read_decision(request, consent, allow_empty=True)
        return_to = fields.pop("return_to", None) if kind == "form" else None
        fields.pop("action", None) if kind == "form" else None
        body = _validated(WithdrawBody, fields)
        source = body.source or ("form" if kind == "form" else "settings")
        choice = _Choice("withdraw", frozenset(), {}, body.language, source, body.gpc)
        return await self._record(request, consent, choice, _Reply(kind, return_to, cross))

    async def _record(self, request: Request, consent: Consent, choice: _Choice, reply: _Reply) -> Response:
        language = self._language(choice.language, request)
        client = request.scope.get("client")
        wait = self._decision_budget.take(client) if self._decision_budget is not None else 0.0
        self._proxy_hint.seen(client, refused=wait > 0)
        if wait > 0:
            return self._too_many(reply, math.ceil(wait), language)
        action, granted = choice.action, choice.granted
        gpc = consent.gpc or choice.gpc_claimed
        if gpc:
            # While the signal is present, a decision never grants what GPC denies (R26, R27).
            granted = granted - self.config.gpc_denied
        consent_id = consent.id
        if consent_id is None:
            consent_id = self.codec.stale_id(self.csrf.cookies(request.scope).consent)
            if consent_id is not None and action != "withdraw":
                action = "renew"  # R18/R19: asked again after expiry or a new policy revision
        new = Consent(
            id=consent_id or new_consent_id(),
            granted=granted,
            services=choice.services,
            revision=self.config.policy_revision,
            decided_at=int(time.time()),
            source=choice.source,
            gpc_recorded=gpc,
        )
        decision = self._decision(request, new, action, language)
        records = [decision]
        if gpc and not consent.gpc_recorded:
            records.append(replace(decision, action="gpc", source="gpc"))
        log = await self.log()
        for record in records:
            await log.append(record)  # LogUnavailable → 503 below, and no cookie (fail closed)
        value = self.codec.encode(new)
        state = consent_json(
            new.with_gpc(self.config.gpc_denied) if consent.gpc else new, self.config.policy_revision
        )
        response: Response
        if reply.kind == "form":
            response = RedirectResponse(_same_origin_path(reply.return_to), status_code=303)
        else:
            if reply.cross is not None:
                state = {**state, "token": value, "max_age": self.codec.lifetime}
            response = JSONResponse(state)
        if reply.cross is None:
            response.headers.append(
                "set-cookie",
                set_cookie_header(
                    self.csrf.cookie_names(request.scope).consent,
                    value,
                    self.config.cookie,
                    max_age=self.codec.lifetime,
                ),
            )
        response.headers["cache-control"] = "no-store"
        return response

    def _too_many(self, reply: _Reply, seconds: int, language: str) -> Response:
        """429, nothing recorded: JSON for the script, a short page for a form post (JavaScript off)."""
        headers = {"retry-after": str(seconds), "cache-control": "no-store"}
        if reply.kind == "form":
            text = _TOO_MANY.get(language.split("-")[0], _TOO_MANY["en"])
            back = escape(_same_origin_path(reply.return_to))
            page = (
                f'<!doctype html><html lang="{escape(language)}"><meta charset="utf-8">'
                f"<title>{text[0]}</title><h1>{text[0]}</h1>"
                f'<p>{text[1].format(seconds=seconds)}</p><p><a href="{back}">{text[2]}</a></p></html>'
            )
            return HTMLResponse(page, status_code=429, headers=headers)
        assert self._decision_budget is not None
        return JSONResponse(
            {
                "error": f"too many decisions from this address (decision_rate_limit "
                f"{self._decision_budget.rate}): nothing was recorded, try again in {seconds} s",
                "retry_after": seconds,
            },
            status_code=429,
            headers=headers,
        )

    async def record_gpc(self, scope: Scope, consent: Consent) -> str | None:
        """Log a decided visitor's first GPC signal; the Set-Cookie that remembers it, or None."""
        # A visitor needs this once (the re-issued cookie remembers it); a replayed cookie would
        # reach the log's write path on every request. Over the budget the signal still applies
        # to the request, and the recording waits for a later one.
        if self._decision_budget is not None and self._decision_budget.take(scope.get("client")) > 0:
            return None
        new = replace(
            consent,
            granted=consent.granted - self.config.gpc_denied,
            gpc_recorded=True,
            gpc=False,
            gpc_denied=frozenset(),
        )
        request = Request(scope)
        decision = self._decision(request, new, "gpc", self._language(None, request))
        decision = replace(decision, source="gpc")
        try:
            await (await self.log()).append(decision)
        except (LogError, OSError) as e:
            logger.error("could not record a GPC opt-out: %s", e)
            return None
        return set_cookie_header(
            self.csrf.cookie_names(scope).consent,
            self.codec.encode(new),
            self.config.cookie,
            max_age=self.codec.lifetime,
        )

    def _decision(self, request: Request, consent: Consent, action: str, language: str) -> Decision:
        assert consent.id is not None
        granted = consent.categories if not consent.gpc else (NECESSARY, *sorted(consent.granted))
        return Decision(
            consent_id=consent.id,
            action=action,
            granted=tuple(granted),
            denied=tuple(c for c in self.config.optional_categories if c not in granted),
            services=dict(consent.services),
            revision=self.config.policy_revision,
            language=language,
            source=consent.source or "api",
            ip=truncate_ip(request.client.host if request.client else None),
            browser=browser_family(request.headers.get("user-agent")),
            version=self._version(language),
        )

    def _version(self, language: str) -> dict[str, Any]:
        if language not in self._versions:
            self._versions[language] = self.banner.version(language)
        return self._versions[language]

    def _granted(self, body: DecisionBody) -> frozenset[str]:
        optional = self.config.optional_categories
        if body.action == "accept_all":
            if body.categories or body.services:
                raise DecisionError(400, "accept_all takes no categories or services")
            return frozenset(optional)
        if body.action == "reject_all":
            if body.categories or body.services:
                raise DecisionError(400, "reject_all takes no categories or services")
            return frozenset()
        unknown = [c for c in body.categories if c not in self.config.categories]
        if unknown:
            raise DecisionError(
                400,
                f"categories: unknown category {unknown[0]!r} (known: {', '.join(self.config.categories)})",
            )
        return frozenset(body.categories) - {NECESSARY}

    def _services(self, chosen: Mapping[str, bool], granted: frozenset[str]) -> dict[str, bool]:
        by_name = self.config.services_by_name
        for name in chosen:
            if name not in by_name:
                raise DecisionError(400, f"services: unknown service {name!r}")
        # A service of a refused category is refused whatever its switch says; a necessary one is
        # always on, so the record says so whatever its switch says.
        return {
            n: by_name[n].category == NECESSARY or (v and by_name[n].category in granted)
            for n, v in sorted(chosen.items())
        }

    def _language(self, language: str | None, request: Request) -> str:
        if language is None:
            return self.banner.pick_language(None, request.headers.get("accept-language"))
        if language not in self.config.languages:
            raise DecisionError(
                400,
                f"language: {language!r} is not configured (languages: {', '.join(self.config.languages)})",
            )
        return language

    # --- request checks (R34) -------------------------------------------------------------------

    def _own_origin(self, request: Request) -> str:
        return f"{request.url.scheme}://{request.headers.get('host', '')}".lower()

    def _cross_origin(self, request: Request) -> str | None:
        """The allowed foreign origin this request comes from, if any."""
        origin = request.headers.get("origin")
        if origin and origin.lower() != self._own_origin(request) and origin in self.config.allowed_origins:
            return origin
        return None

    def _check_origin(self, request: Request) -> str | None:
        """None for a same-origin request, the origin for an allowed one; refuses everything else."""
        origin = request.headers.get("origin")
        if origin is not None:
            if origin.lower() == self._own_origin(request):
                return None
            if origin in self.config.allowed_origins:
                return origin
            raise DecisionError(403, f"cross-site decision refused: origin {origin!r} is not allowed")
        site = request.headers.get("sec-fetch-site")
        if site == "same-origin":
            return None
        if site is not None:
            raise DecisionError(403, f"cross-site decision refused: Sec-Fetch-Site is {site!r}")
        raise DecisionError(403, "decision refused: the request carries neither Origin nor Sec-Fetch-Site")

    async def _read_decision(
        self, request: Request, consent: Consent, *, allow_empty: bool = False
    ) -> tuple[str, dict[str, Any]]:
        """("json" | "form", fields) from a bounded body; form posts must carry the visitor's token."""
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        body = await _read_body(request, MAX_DECISION_BODY)
        if not body and allow_empty and ctype in ("", *JSON_TYPES):
            return "json", {}
        if ctype in JSON_TYPES:
            try:
                data = json.loads(body)
            except (ValueError, RecursionError) as e:  # RecursionError: nested deeper than Python parses
                raise DecisionError(400, f"the body is not valid JSON: {str(e)[:200]}") from None
            if not isinstance(data, dict):
                raise DecisionError(400, "the body must be a JSON object")
            return "json", data
        if ctype in FORM_TYPES:
            if self._cross_origin(request) is not None:
                raise DecisionError(403, "cross-origin decisions must be JSON")
            return "form", await self._form_fields(request, body)
        raise DecisionError(415, "send application/json (script) or an HTML form post")

    async def _form_fields(self, request: Request, body: bytes) -> dict[str, Any]:
        replay = Request(request.scope, _replay(body))
        try:
            form = await replay.form(max_files=0, max_fields=64)
        except Exception as e:  # python-multipart's errors have no common base worth naming
            raise DecisionError(400, f"the form cannot be read: {e}") from None
        token = form.get("csrf")
        csrf_cookie = self.csrf.cookies(request.scope).csrf
        if not isinstance(token, str) or not self.csrf.csrf_valid(token, csrf_cookie):
            raise DecisionError(403, "the form's token is missing or does not belong to this visitor")
        fields: dict[str, Any] = {"categories": [], "services": {}}
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                raise DecisionError(400, f"{key}: files are not accepted")
            if key == "csrf":
                continue
            if key == "categories":
                fields["categories"].append(value)
            elif key.startswith("service."):
                fields["services"][key.removeprefix("service.")] = value in ("on", "1", "true")
            elif key in ("action", "language", "return_to") and key not in fields:
                fields[key] = value
            else:
                raise DecisionError(400, f"{key}: unknown or repeated form field")
        if not fields["categories"]:
            del fields["categories"]
        if not fields["services"]:
            del fields["services"]
        return fields

    # --- reading ----------------------------------------------------------------------------------

    async def state(self, request: Request, consent: Consent) -> Response:
        return JSONResponse(
            consent_json(consent, self.config.policy_revision),
            headers={"cache-control": "private, no-store", "vary": "Cookie, Sec-GPC"},
        )

    async def fragment(self, request: Request, consent: Consent) -> Response:
        language = self._query_language(request)
        csrf_value = self.csrf.cookies(request.scope).csrf
        token = self.csrf.csrf_token(csrf_value) if csrf_value else ""
        html = self.banner.fragment(consent, language=language, csrf_token=token, return_to="/")
        return HTMLResponse(html, headers={"cache-control": "private, no-cache", "vary": "Cookie, Sec-GPC"})

    async def declaration(self, request: Request, consent: Consent) -> Response:
        return HTMLResponse(
            self.banner.declaration(self._query_language(request)),
            headers={"cache-control": "public, max-age=300"},
        )

    def _query_language(self, request: Request) -> str:
        # A page in a language we have no texts for still gets a banner: the nearest we have.
        return self.banner.pick_language(
            request.query_params.get("lang"), request.headers.get("accept-language")
        )

    async def script(self, request: Request, consent: Consent) -> Response:
        return self._asset(request, self.banner.script_path, self.banner.script_hash, "text/javascript")

    async def stylesheet(self, request: Request, consent: Consent) -> Response:
        return self._asset(request, self.banner.css_path, self.banner.css_hash, "text/css")

    def _asset(self, request: Request, path: Any, digest: str, media_type: str) -> Response:
        # A URL carrying the content hash never changes: cache it for a year.
        immutable = request.query_params.get("v") == digest
        cache = "public, max-age=31536000, immutable" if immutable else "public, max-age=300"
        return FileResponse(
            path, media_type=media_type, headers={"cache-control": cache, "etag": f'"{digest}"'}
        )

    async def receipt(self, request: Request, consent: Consent) -> Response:
        from .audit import receipt

        return await receipt(request, consent, await self.log())

    async def csp_report(self, request: Request, consent: Consent) -> Response:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        body = await _read_body(request, MAX_REPORT_BODY)
        try:
            reports = parse_reports(body, ctype)
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
        if stored:
            log = await self.log()
            for page, origin, directive in stored:
                await log.add_blocked(
                    BlockedAttempt(page=page, origin=origin, directive=directive, consent_id=consent.id)
                )
        return Response(status_code=204)

    async def _audit(self, scope: Scope, receive: Receive, send: Send, sub: str) -> None:
        if self._audit_app is False:
            from .audit import build_audit_app

            self._audit_app = build_audit_app(self.config, await self.log())
        if self._audit_app is None:
            await JSONResponse({"error": "the audit view is not enabled"}, status_code=404)(
                scope, receive, send
            )
            return
        child = dict(scope)
        child["root_path"] = scope.get("root_path", "") + self.prefix + "/audit"
        child["path"] = sub.removeprefix("/audit") or "/"
        await self._audit_app(child, receive, send)

    # --- CORS for embedded sites -----------------------------------------------------------------

    def _preflight(self, request: Request, method: str) -> Response:
        if self._cross_origin(request) is None:
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
        origin = self._cross_origin(request)
        if origin is not None:
            response.headers["access-control-allow-origin"] = origin
            response.headers.append("vary", "Origin")

    # --- the log ----------------------------------------------------------------------------------

    async def log(self) -> ConsentLog:
        if self._log is None:
            async with self._log_lock:
                if self._log is None:
                    try:
                        self._log = await open_log(
                            self.config.log,
                            hmac_key=self._log_key,
                            previous_hmac_keys=self._previous_log_keys,
                        )
                    except OSError as e:
                        raise LogUnavailable(f"the consent log cannot be opened: {e}") from e
        return self._log

    async def close(self) -> None:
        if self._log is not None:
            await self._log.close()
            self._log = None


# The page a form post gets over the decision rate limit: title, what happened, the way back.
_TOO_MANY = {
    "en": (
        "Too many choices",
        "Too many cookie choices came from your network just now, so this one was not saved. "
        "Please go back and try again in {seconds} seconds.",
        "Back",
    ),
    "sv": (
        "För många val",
        "För många cookieval kom från ditt nätverk nyss, så det här sparades inte. "
        "Gå tillbaka och försök igen om {seconds} sekunder.",
        "Tillbaka",
    ),
}


def _validated(model: type[BaseModel], fields: dict[str, Any]) -> Any:
    try:
        return model.model_validate(fields)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "body"
        msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
        raise DecisionError(400, f"{loc}: {msg}") from None


async def _read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and (not (length.isascii() and length.isdigit()) or int(length) > limit):
        raise DecisionError(413, f"the body is limited to {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise DecisionError(413, f"the body is limited to {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def _same_origin_path(value: Any) -> str:
    """Only a local path may be a redirect target: never another host."""
    if not isinstance(value, str) or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return "/"
    return value
