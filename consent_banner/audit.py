"""The auditor's view of the consent log, and the visitor's receipt.

`build_audit_app(config, log)` returns an ASGI app to mount at `{prefix}/audit`, or None when no
credentials are configured (the middleware then answers 404: the routes do not exist). R25.
Credentials come from the environment only:

    CONSENT_AUDIT_USER + CONSENT_AUDIT_PASSWORD   HTTP Basic
    CONSENT_AUDIT_TOKEN                           Authorization: Bearer <token>

Wrong or missing credentials get 401; comparisons are constant-time. Pages are server-rendered
(Jinja2, autoescaped), the charts are inline SVG: nothing is fetched from anywhere else.

`receipt(request, consent, log)` answers `GET {prefix}/receipt`: the records of the caller's own
consent id (from their verified cookie), as HTML or JSON, and nobody else's. R24.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import logging
import math
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .config import ConsentConfig
from .consent import Consent
from .errors import LogError
from .language import Languages
from .log import ACTIONS, LoggedRecord, LogStats, RecordFilter
from .log.base import parse_day, valid_action
from .log.export import CONTENT_TYPES, stream
from .ratelimit import Client, ClientBudget, Key, Rate, client_key
from .texts import Texts, shipped_languages

if TYPE_CHECKING:
    from .banner import Banner

logger = logging.getLogger("consent_banner.audit")

ENV_USER = "CONSENT_AUDIT_USER"
ENV_PASSWORD = "CONSENT_AUDIT_PASSWORD"
ENV_TOKEN = "CONSENT_AUDIT_TOKEN"
REALM = "consent-banner audit"
PAGE_SIZE = 50
CHART_DAYS = 60  # days shown in the dashboard chart when no period is chosen
MAX_CHART_DAYS = 731  # days shown at most, whatever the period
_EARLIEST = datetime.min.replace(tzinfo=UTC)

TEMPLATES = Path(__file__).parent / "templates" / "audit"
_env = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)

# One colour per action, distinguishable in grey scale too (R8 contrast on white).
ACTION_COLORS = {
    "accept_all": "#1b7f3b",
    "custom": "#2f5fb3",
    "reject_all": "#b3261e",
    "withdraw": "#7a4d00",
    "gpc": "#5b2c83",
    "renew": "#4a4a4a",
}


# --- credentials ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    user: bytes | None
    password: bytes | None
    token: bytes | None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Credentials | None:
        user, password = environ.get(ENV_USER, ""), environ.get(ENV_PASSWORD, "")
        token = environ.get(ENV_TOKEN, "").strip()
        if bool(user) != bool(password):
            logger.warning(
                "audit view: set both %s and %s for HTTP Basic; ignoring the one that is set",
                ENV_USER,
                ENV_PASSWORD,
            )
            user = password = ""
        if ":" in user:
            logger.warning("audit view: %s cannot contain ':'; Basic credentials ignored", ENV_USER)
            user = password = ""
        if not (user or token):
            return None
        for name, value in ((ENV_PASSWORD, password), (ENV_TOKEN, token)):
            if value and len(value) < 12:
                logger.warning("audit view: %s is shorter than 12 characters", name)
        return cls(
            user.encode() if user else None,
            password.encode() if password else None,
            token.encode() if token else None,
        )

    def check(self, authorization: str | None) -> bool:
        if not authorization:
            return False
        scheme, _, value = authorization.strip().partition(" ")
        scheme = scheme.lower()
        value = value.strip()
        if scheme == "bearer" and self.token is not None:
            return hmac.compare_digest(value.encode(), self.token)
        if scheme == "basic" and self.user is not None and self.password is not None:
            try:
                raw = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                return False
            user, sep, password = raw.partition(b":")
            # Both compared every time, so the timing does not tell which one was wrong.
            ok_user = hmac.compare_digest(user, self.user)
            ok_password = hmac.compare_digest(password, self.password)
            return bool(sep) and ok_user & ok_password
        return False

    @property
    def challenge(self) -> str:
        parts = []
        if self.user is not None:
            parts.append(f'Basic realm="{REALM}", charset="UTF-8"')
        if self.token is not None:
            parts.append(f'Bearer realm="{REALM}"')
        return ", ".join(parts)


class FailedLogins:
    """Wrong credentials per client, to slow down guessing (per process, in memory).

    A client (an IPv4 address, an IPv6 /64: `ratelimit.client_key`) may send FREE_FAILURES wrong
    credentials; each further one makes it wait twice as long as the last, from 1 second up to
    MAX_WAIT. While it waits, its requests get 429 with Retry-After and their credentials are not
    even checked, so a wait cannot be used to learn a guess was right. Right credentials forget
    the client's failures; so does an hour without one. At most `max_clients` are remembered, the
    least recently failing forgotten first, so memory stays bounded whatever the number of addresses.

    Whoever holds more addresses than that (one IPv6 /48 is 65,536 /64s) is forgotten before any of
    them waits, so all failures together also have a budget, GLOBAL_FAILURES: past it every
    client waits, the auditor too. An attacker can thus keep the audit view answering 429 (the
    `consent-banner log` commands still work) but cannot guess faster than that budget.
    """

    FREE_FAILURES = 10
    MAX_WAIT = 15 * 60  # seconds
    FORGET_AFTER = 3600  # seconds after a client's last failure
    # Wrong credentials from everyone together: 120 a minute, after a first 200 (far more than
    # a few mistyping auditors make, so one client's own budget runs out long before this one).
    GLOBAL_FAILURES = Rate(120, 60, at_once=200)

    def __init__(self, *, max_clients: int = 10_000) -> None:
        self._max_clients = max_clients
        # client -> (failures, time of the last one, waiting until); times from time.monotonic()
        self._clients: OrderedDict[Key, tuple[int, float, float]] = OrderedDict()
        self._all = ClientBudget(self.GLOBAL_FAILURES, max_clients=1)
        self._all_wait_until = 0.0

    def __len__(self) -> int:
        return len(self._clients)

    def wait(self, client: Client, now: float) -> float:
        """Seconds the client must still wait before its credentials are checked again (0: none)."""
        entry = self._clients.get(client_key(client))
        own = entry[2] - now if entry else 0.0
        return max(0.0, own, self._all_wait_until - now)

    def failed(self, client: Client, now: float) -> None:
        over = self._all.take(None, now=now)  # one key for everyone
        if over > 0:
            self._all_wait_until = now + over
        key = client_key(client)
        failures, last, _ = self._clients.pop(key, (0, now, now))
        failures = 1 if now - last > self.FORGET_AFTER else failures + 1
        extra = failures - self.FREE_FAILURES
        until = now + min(2.0 ** (extra - 1), self.MAX_WAIT) if extra > 0 else now
        self._clients[key] = (failures, now, until)
        while len(self._clients) > self._max_clients:
            self._clients.popitem(last=False)

    def succeeded(self, client: Client) -> None:
        self._clients.pop(client_key(client), None)


class _RequireCredentials:
    """Pure ASGI: every request must carry the configured credentials, or gets 401 (429 while
    the client waits after too many wrong ones)."""

    def __init__(self, app: ASGIApp, credentials: Credentials) -> None:
        self.app = app
        self.credentials = credentials
        self.failed_logins = FailedLogins()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":  # the audit view has none: refuse without looking further
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        auth = None
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                auth = value.decode("latin-1")
                break
        client, now = scope.get("client"), time.monotonic()
        wait = self.failed_logins.wait(client, now)
        if wait > 0:
            seconds = math.ceil(wait)
            response: Response = JSONResponse(
                {"error": f"too many wrong credentials from this address: try again in {seconds} s"},
                status_code=429,
                headers={"retry-after": str(seconds), "cache-control": "no-store"},
            )
            await response(scope, receive, send)
            return
        if not self.credentials.check(auth):
            if auth:  # a request without credentials is a browser asking for them, not a guess
                self.failed_logins.failed(client, now)
            response = Response(
                "Credentials required for the consent log audit view.\n",
                status_code=401,
                media_type="text/plain",
                headers={"www-authenticate": self.credentials.challenge, "cache-control": "no-store"},
            )
            await response(scope, receive, send)
            return
        self.failed_logins.succeeded(client)
        await self.app(scope, receive, send)


# --- charts (pure) -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    color: str
    title: str


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def daily_chart(
    per_day: Mapping[str, Mapping[str, int]],
    *,
    first: date | None = None,
    last: date | None = None,
    width: int = 720,
    height: int = 220,
) -> dict[str, Any]:
    """Geometry of a stacked bar chart of decisions per day by action (rendered as inline SVG)."""
    if not per_day and (first is None or last is None):
        return {"bars": [], "width": width, "height": height, "empty": True}
    days_present = sorted(per_day)
    first = first or date.fromisoformat(days_present[0])
    last = last or date.fromisoformat(days_present[-1])
    days = _days(first, last)
    top = max((sum(per_day.get(d.isoformat(), {}).values()) for d in days), default=0) or 1
    left, bottom, plot_h = 44, 28, height - 28 - 10
    slot = (width - left - 8) / max(len(days), 1)
    bars: list[Bar] = []
    for i, d in enumerate(days):
        y: float = 10 + plot_h
        counts = per_day.get(d.isoformat(), {})
        for action in ACTIONS:
            n = counts.get(action, 0)
            if not n:
                continue
            h = plot_h * n / top
            y -= h
            bars.append(
                Bar(
                    round(left + i * slot + slot * 0.1, 2),
                    round(y, 2),
                    round(max(slot * 0.8, 1), 2),
                    round(h, 2),
                    ACTION_COLORS[action],
                    f"{d.isoformat()}: {n} {action}",
                )
            )
    return {
        "bars": bars,
        "width": width,
        "height": height,
        "empty": False,
        "top": top,
        "left": left,
        "plot_bottom": 10 + plot_h,
        "first": first.isoformat(),
        "last": last.isoformat(),
        "bottom": bottom,
        "legend": [(a, ACTION_COLORS[a]) for a in ACTIONS],
    }


def chart_period(flt: RecordFilter, per_day: Mapping[str, Any]) -> tuple[date | None, date | None]:
    """The days the dashboard chart covers: the chosen period, else the last CHART_DAYS days with
    decisions; at most MAX_CHART_DAYS, the latest (a period of centuries would draw a million bars)."""
    first = flt.since.date() if flt.since else None
    last = (flt.until - timedelta(microseconds=1)).date() if flt.until and flt.until > _EARLIEST else None
    if per_day:
        last = last or date.fromisoformat(max(per_day))
    span = MAX_CHART_DAYS
    if first is None and per_day:
        first, span = date.fromisoformat(min(per_day)), CHART_DAYS
    if first is not None and last is not None:
        first = max(first, date.fromordinal(max(1, last.toordinal() - span + 1)))
    return first, last


def acceptance_chart(stats: LogStats, labels: Mapping[str, str], *, width: int = 720) -> dict[str, Any]:
    rows = []
    for i, c in enumerate(stats.categories):
        rate = stats.acceptance_rate(c)
        total = stats.granted.get(c, 0) + stats.denied.get(c, 0)
        rows.append(
            {
                "y": 8 + i * 30,
                "label": labels.get(c, c),
                "rate": rate,
                "pct": f"{rate * 100:.1f}%",
                "bar": round((width - 260) * rate, 2),
                "n": total,
                "granted": stats.granted.get(c, 0),
            }
        )
    return {"rows": rows, "width": width, "height": 16 + 30 * len(rows)}


# --- the app -------------------------------------------------------------------------------------


class AuditView:
    def __init__(self, config: ConsentConfig, log: Any) -> None:
        self.config = config
        self.log = log
        lang = config.default_language
        self.labels = {name: config.localize(c.label, lang) for name, c in config.categories.items()}

    def render(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        nonce = secrets.token_urlsafe(16)
        base = request.scope.get("root_path", "").rstrip("/")
        html = _env.get_template(template).render(base=base, nonce=nonce, config=self.config, **context)
        return HTMLResponse(html, status_code=status, headers=_security_headers(nonce))

    def _filter(self, request: Request) -> tuple[RecordFilter, dict[str, str], str | None]:
        q = request.query_params
        raw = {k: q.get(k, "").strip() for k in ("action", "consent_id", "since", "until")}
        parsed: dict[str, Any] = {}
        for name, parse in (
            ("action", valid_action),
            ("since", parse_day),
            ("until", functools.partial(parse_day, end=True)),
        ):
            try:
                parsed[name] = parse(raw[name])
            except ValueError as e:
                return RecordFilter(), {k: "" for k in raw}, f"{name}: {e}"
        return RecordFilter(consent_id=raw["consent_id"] or None, **parsed), raw, None

    async def dashboard(self, request: Request) -> Response:
        flt, raw, error = self._filter(request)
        stats: LogStats = await self.log.stats(flt)
        first, last = chart_period(flt, stats.per_day)
        per_day = {
            d: c
            for d, c in stats.per_day.items()
            if (first is None or d >= first.isoformat()) and (last is None or d <= last.isoformat())
        }
        return self.render(
            request,
            "dashboard.html",
            status=400 if error else 200,
            stats=stats,
            filters=raw,
            error=error,
            chart=daily_chart(per_day, first=first, last=last),
            acceptance=acceptance_chart(stats, self.labels),
            query=_query(raw),
            actions=ACTIONS,
            colors=ACTION_COLORS,
        )

    async def records(self, request: Request) -> Response:
        flt, raw, error = self._filter(request)
        before = _int(request.query_params.get("before"))
        page: list[LoggedRecord] = await self.log.page(flt, limit=PAGE_SIZE + 1, before=before)
        more = len(page) > PAGE_SIZE
        page = page[:PAGE_SIZE]
        total = await self.log.count(flt)
        next_q = _query({**raw, "before": str(page[-1].seq)}) if more and page else None
        return self.render(
            request,
            "records.html",
            status=400 if error else 200,
            records=page,
            filters=raw,
            error=error,
            total=total,
            next_query=next_q,
            query=_query(raw),
            actions=ACTIONS,
            first_page=before is None,
        )

    async def record(self, request: Request) -> Response:
        seq = _int(request.path_params.get("seq"))
        rec = await self.log.get_record(seq) if seq is not None else None
        if rec is None:
            return self.render(
                request,
                "message.html",
                status=404,
                title="No such record",
                message=f"There is no record {request.path_params.get('seq')}.",
            )
        return self.render(request, "record.html", r=rec)

    async def version(self, request: Request) -> Response:
        vid = str(request.path_params.get("version_id", ""))
        payload = await self.log.get_version(vid) if len(vid) == 64 else None
        if payload is None:
            return self.render(
                request,
                "message.html",
                status=404,
                title="No such banner version",
                message="No banner version is stored under that id.",
            )
        texts = payload.get("texts") if isinstance(payload.get("texts"), dict) else {}
        return self.render(
            request, "version.html", vid=vid, v=payload, texts=texts, pretty=_pretty_json(payload)
        )

    async def chain(self, request: Request) -> Response:
        result = await self.log.verify()
        cps = await self.log.checkpoints()
        return self.render(
            request,
            "chain.html",
            result=result,
            checkpoints=list(reversed(cps))[:100],
            total_checkpoints=len(cps),
        )

    async def blocked(self, request: Request) -> Response:
        return self.render(request, "blocked.html", rows=await self.log.blocked(limit=500))

    async def export(self, request: Request) -> Response:
        fmt = request.path_params["fmt"]
        if fmt not in CONTENT_TYPES:
            return _plain_error("Not found.", 404)
        flt, _, error = self._filter(request)
        if error:
            return JSONResponse({"error": error}, status_code=400, headers={"cache-control": "no-store"})
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        return StreamingResponse(
            stream(self.log.iter_chunks(flt), fmt),
            media_type=CONTENT_TYPES[fmt],
            headers={
                "content-disposition": f'attachment; filename="consent-log-{stamp}.{fmt}"',
                "cache-control": "no-store",
                "x-content-type-options": "nosniff",
            },
        )

    async def checkpoints_ndjson(self, request: Request) -> Response:
        import json

        cps = await self.log.checkpoints()
        body = "".join(json.dumps(cp.to_json()) + "\n" for cp in cps)
        return Response(
            body,
            media_type="application/x-ndjson",
            headers={
                "content-disposition": 'attachment; filename="consent-log-checkpoints.ndjson"',
                "cache-control": "no-store",
            },
        )


def _plain_error(message: str, status: int) -> Response:
    return Response(
        message + "\n", status_code=status, media_type="text/plain", headers={"cache-control": "no-store"}
    )


def _security_headers(nonce: str) -> dict[str, str]:
    return {
        "cache-control": "no-store",
        "content-security-policy": (
            f"default-src 'none'; style-src 'nonce-{nonce}'; img-src 'self' data:; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'"
        ),
        "referrer-policy": "no-referrer",
        "x-content-type-options": "nosniff",
        "x-frame-options": "DENY",
    }


def _int(value: Any) -> int | None:
    try:
        n = int(value)
    except (TypeError, ValueError):
        return None
    return n if 0 <= n < 2**62 else None


def _query(params: Mapping[str, str]) -> str:
    from urllib.parse import urlencode

    return urlencode({k: v for k, v in params.items() if v})


def _pretty_json(payload: Any) -> str:
    import json

    return json.dumps(payload, indent=2, ensure_ascii=False, sort_keys=True)


def build_audit_app(
    config: ConsentConfig, log: Any, environ: Mapping[str, str] | None = None
) -> ASGIApp | None:
    """The audit view for `{prefix}/audit`, or None when no credentials are configured (R25)."""
    credentials = Credentials.from_env(os.environ if environ is None else environ)
    if credentials is None:
        return None
    view = AuditView(config, log)
    app = Starlette(
        routes=[
            Route("/", view.dashboard),
            Route("/records", view.records),
            Route("/records/{seq}", view.record),
            Route("/versions/{version_id}", view.version),
            Route("/chain", view.chain),
            Route("/blocked", view.blocked),
            Route("/export.{fmt:str}", view.export),
            Route("/checkpoints.ndjson", view.checkpoints_ndjson),
        ],
        exception_handlers={LogError: _log_error, 404: _not_found},
    )
    return _RequireCredentials(app, credentials)


async def _log_error(request: Request, exc: Exception) -> Response:
    logger.error("audit view: the consent log failed: %s", exc)
    return _plain_error("The consent log cannot be read right now.", 503)


async def _not_found(request: Request, exc: Exception) -> Response:
    return _plain_error("Not found.", 404)


# --- the visitor's receipt -------------------------------------------------------------------------

# Without a banner (a receipt served apart from the middleware): the shipped languages and texts.
_SHIPPED_LANGUAGES = Languages(shipped_languages())
_SHIPPED_TEXTS = Texts()


def _wants_json(request: Request) -> bool:
    if request.query_params.get("format") == "json":
        return True
    accept = request.headers.get("accept", "")
    types = [part.split(";")[0].strip().lower() for part in accept.split(",")]
    return "application/json" in types and (
        "text/html" not in types or types.index("application/json") < types.index("text/html")
    )


async def receipt(request: Request, consent: Consent, log: Any, banner: Banner | None = None) -> Response:
    """`GET {prefix}/receipt`: the caller's own records, from their verified consent cookie (R24).

    No valid cookie, no records: the consent id comes only from the signed cookie, never from
    the request, so nobody can ask for someone else's history. In the language and with the texts
    of `banner` (the page's banner: `?lang=`, then Accept-Language), or the shipped ones without it.
    """
    records: list[LoggedRecord] = []
    if consent.decided and consent.id:
        try:
            records = [r for r in await log.records_for(consent.id) if r.is_decision]
        except LogError as e:
            logger.error("receipt: the consent log failed: %s", e)
            return _plain_error("The consent log cannot be read right now.", 503)
    headers = {"cache-control": "no-store", "vary": "Cookie"}
    if _wants_json(request):
        return JSONResponse(
            {
                "consent_id": consent.id if consent.decided else None,
                "records": [r.to_json() for r in records],
            },
            headers=headers,
        )
    languages, texts = (banner.languages, banner.catalog) if banner else (_SHIPPED_LANGUAGES, _SHIPPED_TEXTS)
    lang = languages.pick(request.query_params.get("lang"), request.headers.get("accept-language"))
    nonce = secrets.token_urlsafe(16)
    html = _env.get_template("receipt.html").render(
        t=texts.of(lang),
        lang=lang,
        records=records,
        consent_id=consent.id if consent.decided else None,
        nonce=nonce,
        json_url=f"{request.url.path}?format=json",
    )
    return HTMLResponse(html, headers={**_security_headers(nonce), **headers})
