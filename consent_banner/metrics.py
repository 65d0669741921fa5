"""Counters for operators, in the Prometheus text format at `{prefix}/metrics` (prometheus_client).

One `Metrics` per middleware, each with a registry of its own (never prometheus_client's global
default registry): two apps in one process, or the many a test suite makes, never share or clash.

Every label value is one of a fixed set written here, never taken from a request: whatever an
attacker sends, the registry holds the same few series (an unknown value is counted as "other").
Counts are per process: with several worker processes each answers for itself (see the README).
prometheus_client's multiprocess mode is not used: it keeps one global set of values per process in
files under a directory named before the first import, so it cannot give each middleware its own
registry, and it does not serve the scrape-time readings below (commit lag, the writer's counts).

What the log's writer counts (commits, their time, the oldest decision waiting, reports dropped) is
read from it when scraped, so a decision pays for none of it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import DecisionError
from .log import ACTIONS, ConsentLog

if TYPE_CHECKING:
    from .audit.credentials import FailedLogins

# The consent endpoints by name (the routes' table holds the same; anything else is "unknown").
ENDPOINTS = frozenset(
    {
        "decide",
        "withdraw",
        "state",
        "banner",
        "declaration",
        "consent.js",
        "consent.css",
        "receipt",
        "csp-report",
        "health",
        "audit",
        "unknown",
    }
)
# Why a request was refused; a DecisionError without its own reason is named by its status.
REASONS_BY_STATUS = {
    400: "invalid",
    403: "origin",
    404: "not_found",
    405: "method",
    413: "too_large",
    415: "media_type",
    429: "rate_limited",
}
REASONS = frozenset({*REASONS_BY_STATUS.values(), "token", "other"})
BUDGETS = ("decision", "gpc", "csp_report")  # the per-client budgets (ratelimit.ClientBudget)
REPORT_OUTCOMES = ("received", "accepted", "over_budget")

OpenedLog = Callable[[], ConsentLog | None]  # the log if it is open: a scrape never opens it


def refusal_reason(error: DecisionError) -> str:
    reason = error.reason or REASONS_BY_STATUS.get(error.status, "other")
    return reason if reason in REASONS else "other"


class Metrics:
    """The counters of one middleware and the registry that exposes them."""

    def __init__(self, opened_log: OpenedLog = lambda: None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._decisions = Counter(
            "consent_decisions", "Decisions recorded in the consent log, by action", ["action"], registry=r
        )
        self._refusals = Counter(
            "consent_refusals",
            "Requests to the consent endpoints refused (4xx), by endpoint and reason",
            ["endpoint", "reason"],
            registry=r,
        )
        self._unavailable = Counter(
            "consent_log_unavailable_responses",
            "Answers 503 because the consent log could not be opened, read or written (fail closed)",
            ["endpoint"],
            registry=r,
        )
        self._rate_limited = Counter(
            "consent_rate_limited",
            "Requests over a per-client budget: decisions answered 429, GPC opt-outs postponed, "
            "CSP reports dropped",
            ["budget"],
            registry=r,
        )
        self._reports = Counter(
            "consent_csp_reports",
            "CSP violation reports: received, accepted for the log, or over a budget and dropped",
            ["outcome"],
            registry=r,
        )
        # Every series an operator alerts on exists from the start, at 0.
        for action in ACTIONS:
            self._decisions.labels(action)
        for budget in BUDGETS:
            self._rate_limited.labels(budget)
        for outcome in REPORT_OUTCOMES:
            self._reports.labels(outcome)
        for reason in ("origin", "token", "too_large", "media_type", "invalid", "rate_limited"):
            self._refusals.labels("decide", reason)
        self._unavailable.labels("decide")
        r.register(_LogCollector(opened_log))
        ProcessCollector(registry=r)  # process_start_time_seconds tells a restart (counters at 0)

    def decided(self, action: str) -> None:
        self._decisions.labels(action if action in ACTIONS else "other").inc()

    def refused(self, endpoint: str, reason: str) -> None:
        self._refusals.labels(
            endpoint if endpoint in ENDPOINTS else "unknown", reason if reason in REASONS else "other"
        ).inc()

    def unavailable(self, endpoint: str) -> None:
        self._unavailable.labels(endpoint if endpoint in ENDPOINTS else "unknown").inc()

    def rate_limited(self, budget: str) -> None:
        self._rate_limited.labels(budget if budget in BUDGETS else "other").inc()

    def reports(self, received: int, accepted: int) -> None:
        self._reports.labels("received").inc(received)
        self._reports.labels("accepted").inc(accepted)
        if received > accepted:
            self._reports.labels("over_budget").inc(received - accepted)

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The body and its media type, in the format the scraper asks for (text or OpenMetrics)."""
        encode, media_type = choose_encoder(accept or "")
        return encode(self.registry), media_type


class _LogCollector(Collector):
    """The log writer's own counts, read at scrape time; nothing while the log is not open."""

    def __init__(self, opened_log: OpenedLog) -> None:
        self._opened = opened_log

    def collect(self) -> Iterable[Metric]:
        return list(self._families())

    def _families(self) -> Iterator[Metric]:
        log = self._opened()
        yield GaugeMetricFamily(
            "consent_log_open", "1 while this process has the consent log open", log is not None
        )
        if log is None:
            return
        s = log.commit_stats()
        commits = CounterMetricFamily(
            "consent_log_commits", "Group commits of decisions, by outcome", labels=["outcome"]
        )
        commits.add_metric(["ok"], s.batches)
        commits.add_metric(["failed"], s.failed_batches)
        yield commits
        yield CounterMetricFamily(
            "consent_log_committed_decisions", "Records written by group commits", value=s.items
        )
        yield SummaryMetricFamily(
            "consent_log_commit_seconds",
            "Time taken by group commits (failed ones included)",
            count_value=s.batches + s.failed_batches,
            sum_value=s.commit_seconds,
        )
        if s.last_commit_seconds is not None:
            yield GaugeMetricFamily(
                "consent_log_last_commit_seconds", "Time the last group commit took", s.last_commit_seconds
            )
        yield GaugeMetricFamily(
            "consent_log_oldest_pending_seconds",
            "How long the oldest decision not yet durable has waited (0: none waits)",
            s.oldest_wait,
        )
        yield CounterMetricFamily(
            "consent_log_reports_dropped",
            "CSP reports the log's writer dropped (its queue full, or their write failed)",
            value=s.side_dropped,
        )


def metrics_app(
    metrics: Metrics, failed_logins: FailedLogins, environ: Mapping[str, str] | None = None
) -> ASGIApp | None:
    """`GET {prefix}/metrics` behind the audit view's credentials, or None when none are configured
    (then the routes answer 404, as for the audit view). Wrong guesses count in `failed_logins`."""
    from .audit.credentials import Credentials, RequireCredentials

    credentials = Credentials.from_env(os.environ if environ is None else environ)
    if credentials is None:
        return None

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope)
        response: Response
        if request.method not in ("GET", "HEAD"):
            response = JSONResponse(
                {"error": f"{scope['path']} answers GET only"}, status_code=405, headers={"allow": "GET"}
            )
        else:
            body, media_type = metrics.exposition(request.headers.get("accept"))
            response = Response(body, headers={"content-type": media_type, "cache-control": "no-store"})
            if request.method == "HEAD":
                response.body = b""  # the headers (Content-Length included) as GET's
        await response(scope, receive, send)

    return RequireCredentials(app, credentials, failed_logins)
