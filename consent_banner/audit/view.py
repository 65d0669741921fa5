"""The auditor's pages: dashboard, records, a record and its banner version, chain, blocked attempts,
exports; and `build_audit_app`, which puts them behind the credentials.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from ..config import ConsentConfig
from ..errors import LogError
from ..events.status import webhook_status
from ..log import ACTIONS, ConsentLog, LoggedRecord, LogStats, RecordFilter
from ..log.export import CONTENT_TYPES, stream, stream_export
from ..log.filters import parse_day, valid_action
from .charts import ACTION_COLORS, acceptance_chart, chart_period, daily_chart
from .credentials import Credentials, FailedLogins, RequireCredentials
from .pages import env, plain_error, security_headers

logger = logging.getLogger("consent_banner.audit")

PAGE_SIZE = 50


class AuditView:
    def __init__(self, config: ConsentConfig, log: ConsentLog) -> None:
        self.config = config
        self.log = log
        lang = config.default_language
        self.labels = {name: config.localize(c.label, lang) for name, c in config.categories.items()}

    def render(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        nonce = secrets.token_urlsafe(16)
        base = request.scope.get("root_path", "").rstrip("/")
        html = env.get_template(template).render(base=base, nonce=nonce, config=self.config, **context)
        return HTMLResponse(html, status_code=status, headers=security_headers(nonce))

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

    async def webhooks(self, request: Request) -> Response:
        found = await webhook_status(self.log, self.config.webhooks)
        return self.render(request, "webhooks.html", webhooks=found)

    async def export(self, request: Request) -> Response:
        fmt = request.path_params["fmt"]
        if fmt not in CONTENT_TYPES:
            return plain_error("Not found.", 404)
        flt, _, error = self._filter(request)
        if error:
            return JSONResponse({"error": error}, status_code=400, headers={"cache-control": "no-store"})
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        # NDJSON as `log export --format ndjson` writes it: the whole log's carries its checkpoints
        # and signed head (one snapshot), so the auditor's download verifies offline with the public
        # key alone (`log verify --export`); a filtered one is records only, as the command's is.
        body = (
            stream_export(self.log.export_chunks(flt), await self.log.schema_version())
            if fmt == "ndjson"
            else stream(self.log.iter_chunks(flt), fmt)
        )
        return StreamingResponse(
            body,
            media_type=CONTENT_TYPES[fmt],
            headers={
                "content-disposition": f'attachment; filename="consent-log-{stamp}.{fmt}"',
                "cache-control": "no-store",
                "x-content-type-options": "nosniff",
            },
        )

    async def checkpoints_ndjson(self, request: Request) -> Response:
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


def _int(value: Any) -> int | None:
    try:
        n = int(value)
    except (TypeError, ValueError):
        return None
    return n if 0 <= n < 2**62 else None


def _query(params: Mapping[str, str]) -> str:
    return urlencode({k: v for k, v in params.items() if v})


def _pretty_json(payload: Any) -> str:
    return json.dumps(payload, indent=2, ensure_ascii=False, sort_keys=True)


def build_audit_app(
    config: ConsentConfig,
    log: ConsentLog,
    environ: Mapping[str, str] | None = None,
    *,
    failed_logins: FailedLogins | None = None,
) -> ASGIApp | None:
    """The audit view for `{prefix}/audit`, or None when no credentials are configured (R25).
    `failed_logins`: wrong credentials counted with another door's (the metrics)."""
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
            Route("/webhooks", view.webhooks),
            Route("/export.{fmt:str}", view.export),
            Route("/checkpoints.ndjson", view.checkpoints_ndjson),
        ],
        exception_handlers={LogError: _log_error, 404: _not_found},
    )
    return RequireCredentials(app, credentials, failed_logins)


async def _log_error(request: Request, exc: Exception) -> Response:
    logger.error("audit view: the consent log failed: %s", exc)
    return plain_error("The consent log cannot be read right now.", 503)


async def _not_found(request: Request, exc: Exception) -> Response:
    return plain_error("Not found.", 404)
