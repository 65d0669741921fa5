"""What the scanner observed and what it found: plain values, no browser, no I/O.

The crawler (`crawl.py`) fills `PageResult`s; `classify.py` turns them into `Finding`s against a
`ConsentConfig`; `report.py` renders a `ScanReport`. Everything here converts to JSON-ready dicts.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from ..schemes import DEFAULT_PORTS

State = Literal["before", "reject", "accept", "gpc", "opt_out"]
# The states a page is observed in, by the consent model the site gives the scanner (its
# `{prefix}/state`, under the --header values sent): opt-in asks for a decision before anything
# optional; opt-out lets it run until Global Privacy Control or "Do Not Sell or Share" turns it off.
STATES: tuple[State, ...] = ("before", "reject", "accept")
OPT_OUT_STATES: tuple[State, ...] = ("before", "gpc", "opt_out")
STATES_BY_MODEL: dict[str, tuple[State, ...]] = {"opt-in": STATES, "opt-out": OPT_OUT_STATES}
STATE_LABELS: dict[State, str] = {
    "before": "before any decision",
    "reject": "after Reject all",
    "accept": "after Accept all",
    "gpc": "with Global Privacy Control, before any decision",
    "opt_out": 'after "Do Not Sell or Share"',
}
Severity = Literal["error", "warning"]
DecisionVia = Literal["banner", "post"]  # clicked our banner's button, or posted to {prefix} from the page


def origin_of(url: str) -> str | None:
    """`scheme://host[:port]` of a URL, the port left out when it is the scheme's default; None for
    data:, blob:, about: and other URLs that reach no host."""
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        return None
    shown = f":{port}" if port and port != DEFAULT_PORTS[parts.scheme] else ""
    return f"{parts.scheme}://{host}{shown}"


@dataclass(frozen=True)
class SetCookie:
    """What one Set-Cookie header asks of the browser (RFC 6265 section 5.2, what matters here)."""

    name: str
    host: str  # of the response
    path: str  # the Path attribute, or the default path of the response's URL
    domain: str | None  # the Domain attribute without its leading dot; None: host-only
    deletes: bool  # Max-Age <= 0 or an Expires in the past: an expiry, not a cookie
    response: str  # "GET https://..." of the response

    def may_have_set(self, name: str, domain: str, path: str) -> bool:
        """Could this header have stored the jar's cookie (name, domain, path)?"""
        d = domain.lstrip(".").lower()
        host_ok = self.host == d or (self.domain is not None and self.domain == d)
        return self.name == name and self.path == path and host_ok


def default_path(url: str) -> str:
    """RFC 6265 5.1.4: the directory of the request path."""
    path = urlsplit(url).path
    if not path.startswith("/") or path.count("/") == 1:
        return "/"
    return path[: path.rindex("/")]


def parse_set_cookie(
    header: str, url: str, method: str = "GET", now: float | None = None
) -> SetCookie | None:
    """One Set-Cookie header value received for `url`; None when it names no cookie."""
    pair, *attributes = header.split(";")
    if "=" not in pair:
        return None
    name = pair.split("=", 1)[0].strip()
    if not name:
        return None
    path, domain, deletes = default_path(url), None, False
    now = time.time() if now is None else now
    for attribute in attributes:
        key, _, value = attribute.partition("=")
        key, value = key.strip().lower(), value.strip()
        if key == "path" and value.startswith("/"):
            path = value
        elif key == "domain" and value:
            domain = value.lstrip(".").lower()
        elif key == "max-age":
            try:
                deletes = int(value) <= 0
            except ValueError:
                pass
        elif key == "expires" and "max-age" not in header.lower():
            try:
                deletes = parsedate_to_datetime(value).timestamp() <= now
            except (TypeError, ValueError):
                pass
    host = (urlsplit(url).hostname or "").lower()
    return SetCookie(name, host, path, domain, deletes, f"{method} {url}")


@dataclass(frozen=True)
class CookieSeen:
    """One cookie in the browser's jar at the end of a state."""

    name: str
    domain: str
    path: str
    http_only: bool
    secure: bool
    lifetime: float | None  # seconds it had left when read (expires - now); None: a session cookie
    set_by: str | None  # "GET https://..." of the response whose Set-Cookie stored it; None: a script
    existed_before_decision: bool = False  # in the jar already before the decision (reject/accept only)
    expiry_missed: str | None = None  # a response that tried to expire it on another path or domain

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.name, self.domain, self.path)


@dataclass(frozen=True)
class StorageSeen:
    """One key in the top page's localStorage or sessionStorage at the end of a state."""

    area: Literal["localStorage", "sessionStorage"]
    key: str
    existed_before_decision: bool = False


@dataclass
class HostSeen:
    """Every request the browser made to one origin during a state."""

    origin: str
    first_url: str
    resource_types: list[str] = field(default_factory=list)
    before_decision: int = 0  # requests before the decision was recorded (all of them in "before")
    after_decision: int = 0  # requests once the decision was recorded, reload included
    first_url_after_decision: str | None = None


@dataclass
class StateResult:
    """One fresh browser context on one page, in one consent state."""

    state: State
    cookies: list[CookieSeen] = field(default_factory=list)
    storage: list[StorageSeen] = field(default_factory=list)
    hosts: dict[str, HostSeen] = field(default_factory=dict)
    decision_via: DecisionVia | None = None  # how the decision was made
    decision_error: str | None = None  # why it could not be recorded

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "decision_via": self.decision_via,
            "decision_error": self.decision_error,
            "cookies": [asdict(c) for c in self.cookies],
            "storage": [asdict(s) for s in self.storage],
            "hosts": [asdict(h) for h in self.hosts.values()],
        }


@dataclass
class PageResult:
    """One crawled page: its three states."""

    url: str
    path: str  # path and query: how findings name the page
    status: int
    states: dict[State, StateResult]

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "path": self.path,
            "status": self.status,
            "states": {name: s.to_json() for name, s in self.states.items()},
        }


@dataclass(frozen=True)
class Finding:
    """One broken promise, with where it was seen and the evidence."""

    kind: str  # a stable identifier, e.g. "cookie-before-decision"
    severity: Severity
    requirement: str  # "R1", "R16", ... of REQUIREMENTS.md
    page: str | None  # path of the page; None for site-wide findings (a stale declaration)
    subject: str  # the cookie, storage key, origin or service concerned
    message: str  # one sentence a site owner can act on
    evidence: tuple[str, ...]  # what the browser showed, one fact per line

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "evidence": list(self.evidence)}


@dataclass
class ScanReport:
    """The whole scan: pages crawled, pages skipped, findings, and the suggestions if asked for."""

    url: str
    config: str | None
    started_at: str
    finished_at: str = ""
    model: str = "opt-in"  # the consent model the site gave the scanner: which rules were checked
    region: str | None = None  # the region the site saw in the --header values, if it names one
    headers: tuple[str, ...] = ()  # the names of the headers sent on every request (values left out)
    pages: list[PageResult] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (url, why)
    findings: list[Finding] = field(default_factory=list)
    suggestions: str | None = None

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def exit_code(self) -> int:
        """0 for a report without errors (warnings allowed), 1 otherwise."""
        return 1 if self.errors else 0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "url": self.url,
            "config": self.config,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "model": self.model,
            "region": self.region,
            "headers": list(self.headers),
            "summary": {
                "pages": len(self.pages),
                "errors": len(self.errors),
                "warnings": len(self.warnings),
                "exit_code": self.exit_code,
            },
            "findings": [f.to_json() for f in self.findings],
            "pages": [p.to_json() for p in self.pages],
            "skipped": [{"url": u, "reason": r} for u, r in self.skipped],
        }
        if self.suggestions is not None:
            out["suggestions"] = self.suggestions
        return out
