"""Decisions: `POST {prefix}` (decide) and `POST {prefix}/withdraw`, and the GPC opt-out of a visitor
who decided before the signal appeared.

A decision is checked for its origin (`request_checks.py`), its body read within a bound and validated
strictly (JSON from the script, a form post with its token from a page without JavaScript), appended
to the log and awaited until durable; only then does the visitor get a cookie. Nothing recorded, no
cookie: a log that cannot write answers 503 (the endpoints turn `LogError` into it).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import Message, Receive, Scope

from .banner import Banner
from .config import NECESSARY, ConsentConfig
from .consent import Consent, ConsentCodec, consent_json, new_consent_id
from .errors import DecisionError, LogError
from .formtoken import FORM_FIELD, FormTokens
from .geo import OPT_IN, OPT_OUT, region_json
from .gpp import state_for as gpp_state
from .log import ConsentLog, Decision, LoggedRecord, browser_family, truncate_ip
from .memo import Memo
from .metrics import Metrics
from .paths import root_path
from .ratelimit import ClientBudget, ProxyHint
from .request_checks import OriginPolicy, media_type, read_body
from .visitor import NOTICE_SUFFIX, Visitors, set_cookie_header

logger = logging.getLogger("consent_banner")

MAX_DECISION_BODY = 8 * 1024  # bytes
JSON_TYPES = ("application/json",)
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
FORM_SEEN = "consent_banner.form"  # scope key: the form post's fields as read, for failure.py's page

OpenLog = Callable[[], Awaitable[ConsentLog]]  # the log, opened on first use by its owner (the middleware)
Recorded = Callable[[LoggedRecord], None]  # told of each durable record (Events.recorded); never blocks
Model = TypeVar("Model", bound=BaseModel)


class DecisionBody(BaseModel):
    """The JSON a decision carries (strict: no coercion, no unknown fields)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    action: Literal["accept_all", "reject_all", "custom", "opt_out"]
    categories: list[str] = []
    services: dict[str, bool] = {}
    language: str | None = None
    source: Literal["banner", "dialog", "settings", "api"] | None = None
    gpc: bool = False


class WithdrawBody(BaseModel):
    """The JSON a withdrawal carries (may be empty)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    language: str | None = None
    source: Literal["banner", "dialog", "settings", "api"] | None = None
    gpc: bool = False


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
    return_to: object  # the form's return_to field, checked to be a same-origin path before use
    cross: str | None  # the allowed other origin the decision came from, None for this site


class Decisions:
    """Validates and records decisions; one per middleware."""

    def __init__(
        self,
        config: ConsentConfig,
        codec: ConsentCodec,
        banner: Banner,
        *,
        visitors: Visitors,
        tokens: FormTokens,
        origins: OriginPolicy,
        log: OpenLog,
        metrics: Metrics | None = None,
        on_record: Recorded | None = None,
    ) -> None:
        self.config = config
        self.on_record = on_record
        self.codec = codec
        self.banner = banner
        self.visitors = visitors
        self.tokens = tokens
        self.origins = origins
        self.log = log
        self._versions: Memo[str, dict[str, Any]] = Memo(64)  # per language: what the visitor read
        rate = config.decision_rate
        self.budget = ClientBudget(rate) if rate is not None else None
        self._proxy_hint = ProxyHint()
        self.metrics = metrics or Metrics()

    async def decide(self, request: Request, consent: Consent) -> Response:
        cross = self.origins.check(request)
        kind, fields = await self._read(request)
        return_to = fields.pop("return_to", None) if kind == "form" else None
        body = _validated(DecisionBody, fields)
        granted = self._granted(body, consent)
        source = body.source or ("form" if kind == "form" else "api" if cross is None else "banner")
        services = self._services(body.services, granted)
        if body.action == "opt_out":
            # "Do Not Sell or Share" turns off what GPC would and keeps every other choice as it is.
            services = {n: v and n in self._keeps(granted) for n, v in consent.services.items()}
        choice = _Choice(body.action, granted, services, body.language, source, body.gpc)
        return await self._record(request, consent, choice, _Reply(kind, return_to, cross))

    async def withdraw(self, request: Request, consent: Consent) -> Response:
        cross = self.origins.check(request)
        kind, fields = await self._read(request, allow_empty=True)
        return_to = fields.pop("return_to", None) if kind == "form" else None
        if kind == "form":
            fields.pop("action", None)
        body = _validated(WithdrawBody, fields)
        source = body.source or ("form" if kind == "form" else "settings")
        choice = _Choice("withdraw", frozenset(), {}, body.language, source, body.gpc)
        return await self._record(request, consent, choice, _Reply(kind, return_to, cross))

    async def record_gpc(self, scope: Scope, consent: Consent) -> str | None:
        """Log a decided visitor's first GPC signal; the Set-Cookie that remembers it, or None."""
        # A visitor needs this once (the re-issued cookie remembers it); a replayed cookie would
        # reach the log's write path on every request. Over the budget the signal still applies
        # to the request, and the recording waits for a later one.
        if self.budget is not None and self.budget.take(scope.get("client")) > 0:
            self.metrics.rate_limited("gpc")
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
            logged = await (await self.log()).append(decision)
        except (LogError, OSError) as e:
            logger.error("could not record a GPC opt-out: %s", e)
            return None
        self.metrics.decided("gpc")
        if self.on_record is not None:
            self.on_record(logged)
        return self._cookie(scope, self.codec.encode(new))

    async def dismiss(self, request: Request, consent: Consent) -> Response:
        """`POST {prefix}/dismiss`: the opt-out notice goes away, remembered in a small cookie of its
        own (`<consent cookie>_notice`) and never logged. A notice at collection asks for no
        acknowledgement (CCPA regulations §7012), and dismissing it is no consent: the visitor stays
        undecided under opt-out, and "Do Not Sell or Share" stays one click away in the settings."""
        self.origins.check(request)
        kind, fields = await self._read(request, allow_empty=True)
        return_to = fields.get("return_to") if kind == "form" else None
        response: Response
        if kind == "form":
            home = root_path(request.scope) + "/"
            response = RedirectResponse(_same_origin_path(return_to, home), status_code=303)
        else:
            response = Response(status_code=204)
        name = self.visitors.names(request.scope).consent + NOTICE_SUFFIX
        response.headers.append(
            "set-cookie", set_cookie_header(name, "1", self.config.cookie, max_age=self.codec.lifetime)
        )
        response.headers["cache-control"] = "no-store"
        return response

    async def record_opt_out_gpc(self, scope: Scope, consent: Consent) -> str | None:
        """Under the opt-out model, the GPC signal of a visitor who has not decided is their opt-out:
        logged once as `opt_out` with source gpc; the Set-Cookie that remembers it, or None."""
        if self.budget is not None and self.budget.take(scope.get("client")) > 0:
            self.metrics.rate_limited("gpc")
            return None  # the signal still applies to this request; recorded with a later one
        request = Request(scope)
        new = Consent(
            id=self.codec.stale_id(self.visitors.cookies(scope).consent) or new_consent_id(),
            granted=frozenset(self.config.optional_categories) - self.config.gpc_denied,
            revision=self.config.policy_revision,
            decided_at=int(time.time()),
            source="gpc",
            gpc_recorded=True,
            opted_out=True,
            model=consent.model,
            region=consent.region,
        )
        decision = self._decision(request, new, "opt_out", self._language(None, request))
        try:
            logged = await (await self.log()).append(decision)
        except (LogError, OSError) as e:
            logger.error("could not record a GPC opt-out: %s", e)
            return None
        self.metrics.decided("opt_out")
        if self.on_record is not None:
            self.on_record(logged)
        return self._cookie(scope, self.codec.encode(new))

    # --- recording ---------------------------------------------------------------------------------

    async def _record(self, request: Request, consent: Consent, choice: _Choice, reply: _Reply) -> Response:
        language = self._language(choice.language, request)
        client = request.scope.get("client")
        wait = self.budget.take(client) if self.budget is not None else 0.0
        self._proxy_hint.seen(client, refused=wait > 0)
        if wait > 0:
            self.metrics.rate_limited("decision")
            self.metrics.refused("decide" if choice.action != "withdraw" else "withdraw", "rate_limited")
            return self._too_many(reply, math.ceil(wait), language)
        action, granted = choice.action, choice.granted
        gpc = consent.gpc or choice.gpc_claimed
        if gpc:
            # While the signal is present, a decision never grants what GPC denies (R26, R27).
            granted = granted - self.config.gpc_denied
        consent_id = consent.id
        if consent_id is None:
            consent_id = self.codec.stale_id(self.visitors.cookies(request.scope).consent)
            if consent_id is not None and action != "withdraw":
                action = "renew"  # R18/R19: asked again after expiry or a new policy revision
        elif consent.new_services and action != "withdraw":
            action = "renew"  # asked again for the services declared since the last decision
        new = Consent(
            id=consent_id or new_consent_id(),
            granted=granted,
            services=choice.services,
            revision=self.config.policy_revision,
            decided_at=int(time.time()),
            source=choice.source,
            gpc_recorded=gpc,
            # An opt-out is no consent: where the model is opt-in it counts as no decision at all.
            opted_out=action == "opt_out" and (not consent.decided or consent.opted_out),
            # What is granted under opt-out is no opt-in consent (consent.py); "Do Not Sell or Share"
            # keeps what the visitor had, and with it where that counts.
            granted_under_opt_out=consent.granted_under_opt_out
            if action == "opt_out"
            else consent.model == OPT_OUT and bool(granted),
            model=consent.model,
            region=consent.region,
        )
        decision = self._decision(request, new, action, language)
        records = [decision]
        if gpc and not consent.gpc_recorded:
            records.append(replace(decision, action="gpc", source="gpc"))
        log = await self.log()
        for record in records:
            logged = await log.append(record)  # LogUnavailable → 503 by the endpoints, no cookie
            self.metrics.decided(record.action)
            if self.on_record is not None:  # durable now: on_decision and the webhooks hear of it
                self.on_record(logged)
        value = self.codec.encode(new)
        shown = new.with_gpc(self.config.gpc_denied) if consent.gpc else new
        state = consent_json(shown, self.config.policy_revision, gpp_state(shown, self.config))
        response: Response
        if reply.kind == "form":
            home = root_path(request.scope) + "/"  # the app's root, wherever it is mounted
            response = RedirectResponse(_same_origin_path(reply.return_to, home), status_code=303)
        else:
            if reply.cross is not None:
                state = {**state, "token": value, "max_age": self.codec.lifetime}
            response = JSONResponse(state)
        if reply.cross is None:
            response.headers.append("set-cookie", self._cookie(request.scope, value))
        response.headers["cache-control"] = "no-store"
        return response

    def _cookie(self, scope: Scope, value: str) -> str:
        """The Set-Cookie of a new consent cookie, under this request's name for it."""
        name = self.visitors.names(scope).consent
        return set_cookie_header(name, value, self.config.cookie, max_age=self.codec.lifetime)

    def _too_many(self, reply: _Reply, seconds: int, language: str) -> Response:
        """429, nothing recorded (a form post gets failure.py's page instead, by the routes)."""
        headers = {"retry-after": str(seconds), "cache-control": "no-store"}
        assert self.budget is not None
        return JSONResponse(
            {
                "error": f"too many decisions from this address (decision_rate_limit "
                f"{self.budget.rate}): nothing was recorded, try again in {seconds} s",
                "retry_after": seconds,
            },
            status_code=429,
            headers=headers,
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
            version=self._version(language, consent.model),
            detail=region_json(consent.region, consent.model),
        )

    def _version(self, language: str, model: str = OPT_IN) -> dict[str, Any]:
        """What the visitor was shown: the banner, or under opt-out the notice (its own version)."""
        key = f"{language}/{model}"
        found = self._versions.get(key)
        if found is None:
            found = self._versions.put(key, self.banner.version(language, model))
        return found

    # --- validation --------------------------------------------------------------------------------

    def _keeps(self, granted: frozenset[str]) -> frozenset[str]:
        services = self.config.services
        return frozenset(s.name for s in services if s.category in granted or s.category == NECESSARY)

    def _granted(self, body: DecisionBody, consent: Consent) -> frozenset[str]:
        optional = self.config.optional_categories
        if body.action == "opt_out":
            if body.categories or body.services:
                raise DecisionError(400, "opt_out takes no categories or services")
            # What the visitor has now (under opt-out before a decision: every optional category),
            # less what an opt-out of sale and sharing turns off.
            return consent.granted - self.config.gpc_denied
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

    async def _read(self, request: Request, *, allow_empty: bool = False) -> tuple[str, dict[str, Any]]:
        """("json" | "form", fields) from a bounded body; form posts must carry the visitor's token."""
        ctype = media_type(request)
        body = await read_body(request, MAX_DECISION_BODY)
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
            if self.origins.cross_origin(request) is not None:
                raise DecisionError(403, "cross-origin decisions must be JSON")
            return "form", await self._form_fields(request, body)
        raise DecisionError(415, "send application/json (script) or an HTML form post")

    async def _form_fields(self, request: Request, body: bytes) -> dict[str, Any]:
        replay = Request(request.scope, _replay(body))
        try:
            form = await replay.form(max_files=0, max_fields=64)
        except Exception as e:  # python-multipart's errors have no common base worth naming
            raise DecisionError(400, f"the form cannot be read: {e}") from None
        request.scope[FORM_SEEN] = form  # a refusal's page links back to return_to, in `language`
        token = form.get(FORM_FIELD)
        csrf_cookie = self.visitors.cookies(request.scope).csrf
        if not isinstance(token, str) or not self.tokens.valid(token, csrf_cookie):
            raise DecisionError(
                403, "the form's token is missing or does not belong to this visitor", reason="token"
            )
        categories: list[str] = []
        services: dict[str, bool] = {}
        fields: dict[str, Any] = {}
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                raise DecisionError(400, f"{key}: files are not accepted")
            if key == FORM_FIELD:
                continue
            if key == "categories":
                categories.append(value)
            elif key.startswith("service."):
                services[key.removeprefix("service.")] = value in ("on", "1", "true")
            elif key in ("action", "language", "return_to") and key not in fields:
                fields[key] = value
            else:
                raise DecisionError(400, f"{key}: unknown or repeated form field")
        if categories:
            fields["categories"] = categories
        if services:
            fields["services"] = services
        return fields


def _validated(model: type[Model], fields: dict[str, Any]) -> Model:
    try:
        return model.model_validate(fields)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "body"
        msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
        raise DecisionError(400, f"{loc}: {msg}") from None


def _replay(body: bytes) -> Receive:
    """A `receive` that hands over `body` once, read already within its bound."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def _same_origin_path(value: object, fallback: str = "/") -> str:
    """Only a local path may be a redirect target: never another host (else `fallback`)."""
    if not isinstance(value, str) or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return fallback
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return fallback
    return value
