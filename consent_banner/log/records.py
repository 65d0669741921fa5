"""What a consent-log record is: the decision that goes in, the record that comes out.

A record is one visitor decision (or one event of the log itself, such as a purge) as it was
made durable, with its server time, its sequence number and its links in the hash chain. A
`Decision` is validated and turned into its stored column values once (`prepare`), off the
writer's critical path; the `LoggedRecord` a caller gets back is built from those values without
parsing them again.

Pure functions and values only: no I/O, no HTTP.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from ..consent import SOURCES
from ..errors import InvalidDecision
from ..memo import Memo
from .canonical import Row, detail_text, services_text, sorted_dumps, tail

# opt_out: "Do Not Sell or Share" under the opt-out model (geo.py), or GPC met there before any decision
ACTIONS = ("accept_all", "reject_all", "custom", "withdraw", "gpc", "renew", "opt_out")
# Records the log writes about itself. They are in the chain, but are not visitor decisions.
SYSTEM_ACTIONS = ("purge",)
SYSTEM_CONSENT_ID = ""  # a visitor's consent id is never empty, so this one can never be a visitor's
GPC_ACTION = "gpc"

_AT_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # fixed width, so text order is time order


def format_at(at: datetime) -> str:
    """The stored form of a record time: UTC, microseconds, fixed width."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).strftime(_AT_FORMAT)


def parse_at(text: str) -> datetime:
    # fromisoformat reads "...Z" since 3.11 and is far faster than strptime.
    t = datetime.fromisoformat(text)
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


# --- what goes in ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """One visitor decision, as the decision endpoints hand it to the log."""

    consent_id: str
    action: str  # accept_all | reject_all | custom | withdraw | gpc | renew | opt_out
    granted: tuple[str, ...]  # categories granted, "necessary" included
    denied: tuple[str, ...]
    services: dict[str, bool]
    revision: str
    language: str
    source: str  # banner | dialog | form | settings | api | gpc
    ip: str | None  # already truncated by truncate_ip()
    browser: str | None  # browser family from browser_family()
    version: dict[str, Any] | None  # banner version payload, stored once under its content hash
    # The record's `detail`: the jurisdiction it was made in ({"region": "US-CA", "model": "opt-out"},
    # geo.region_json), hashed with the record; None (records of earlier releases): unknown.
    detail: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class BlockedAttempt:
    """A CSP violation report, privacy-minimal: path only, the blocked origin, the directive."""

    page: str  # path only, no query
    origin: str  # blocked origin (scheme://host[:port]) or "inline"/"eval"
    directive: str
    consent_id: str | None
    at: datetime | None = None  # set by the log when None
    # The reporting client's network (truncate_ip): reports are unauthenticated, so what they name
    # counts by how many distinct networks sent it. None when unknown (and for rows of schema < 3).
    client: str | None = None

    def sanitized(self) -> BlockedAttempt:
        """Cut to what the log keeps: no query or fragment, bounded lengths."""
        page = (self.page or "/").split("?", 1)[0].split("#", 1)[0][:512] or "/"
        origin = (self.origin or "")[:256]
        directive = (self.directive or "")[:64]
        cid = self.consent_id[:64] if self.consent_id else None
        client = self.client[:64] if self.client else None
        return BlockedAttempt(page, origin, directive, cid, self.at, client)


# The few distinct category tuples, service maps and stored category lists a site sees, done once.
_CATEGORY_TEXT: Memo[tuple[str, ...], str] = Memo(4096)
_SERVICES: Memo[tuple[tuple[Any, Any], ...], tuple[dict[str, bool], str]] = Memo(4096)
_SPLIT: Memo[str, tuple[str, ...]] = Memo(4096)


def _categories_text(cats: Iterable[str]) -> str:
    key = cats if isinstance(cats, tuple) else None
    if key is not None:
        hit = _CATEGORY_TEXT.get(key)
        if hit is not None:
            return hit
    unique = set(cats)
    for c in unique:
        if not isinstance(c, str) or not c or "," in c:
            raise InvalidDecision(f"category {c!r} cannot be logged")
    # "necessary" first, the rest sorted: one spelling for one set.
    ordered = sorted(unique - {"necessary"})
    if "necessary" in unique:
        ordered.insert(0, "necessary")
    text = ",".join(ordered)
    if key is not None:
        _CATEGORY_TEXT.put(key, text)
    return text


def _services(services: Mapping[str, Any] | None) -> tuple[dict[str, bool], str]:
    """(normalised map, canonical JSON) of per-service choices."""
    if not services:
        return {}, "{}"
    key = tuple(services.items())
    try:
        hit = _SERVICES.get(key)
    except TypeError:  # an unhashable value: normalise without caching
        norm = {str(k): bool(v) for k, v in services.items()}
        return norm, sorted_dumps(norm)
    if hit is None:
        norm = {str(k): bool(v) for k, v in services.items()}
        hit = _SERVICES.put(key, (norm, sorted_dumps(norm)))
    return hit


def _split(text: str | None) -> tuple[str, ...]:
    if not text:
        return ()
    hit = _SPLIT.get(text)
    if hit is None:
        hit = _SPLIT.put(text, tuple(text.split(",")))
    return hit


class Prepared(NamedTuple):
    """A decision turned into its column values (all but `at`, which is set at commit).

    A NamedTuple rather than a frozen dataclass: one is built per decision on the hot path.
    """

    consent_id: str
    action: str
    granted: str
    denied: str
    services: str
    revision: str
    language: str
    source: str
    version_id: str | None
    ip: str | None
    browser: str | None
    detail: str | None = None
    services_map: Mapping[str, bool] | None = None  # the parsed form of `services`, not stored
    # canonical(columns(at)) without its leading '["<at>",': the part of the hashed encoding that does
    # not depend on the commit, built once per decision outside the writer's critical path.
    tail: str = ""

    def record(self, seq: int, at: datetime, prev_hash: str, hash_: str) -> LoggedRecord:
        """The LoggedRecord this becomes once written (without re-parsing its own columns)."""
        # LoggedRecord is a frozen dataclass; its generated __init__ sets each of 16 fields through
        # object.__setattr__, four times slower than filling __dict__ once. One is built per decision.
        r = object.__new__(LoggedRecord)
        r.__dict__.update(
            seq=seq,
            at=at,
            consent_id=self.consent_id,
            action=self.action,
            granted=_split(self.granted),
            denied=_split(self.denied),
            services=dict(self.services_map) if self.services_map is not None else json.loads(self.services),
            revision=self.revision,
            language=self.language,
            source=self.source,
            version_id=self.version_id,
            ip=self.ip,
            browser=self.browser,
            prev_hash=prev_hash,
            hash=hash_,
            detail=json.loads(self.detail) if self.detail else None,
        )
        return r

    def columns(self, at: str) -> tuple[str | None, ...]:
        """The stored column values (COLUMNS order), at time `at`."""
        return (at, *self[:12])


_ACTION_SET = frozenset(ACTIONS)
_SOURCE_SET = frozenset(SOURCES)


def prepare(d: Decision, version_id: str | None) -> Prepared:
    """Validate a Decision and compute its stored column values. Called once per decision."""
    cid, action, source = d.consent_id, d.action, d.source
    if action not in _ACTION_SET:
        raise InvalidDecision(f"action {action!r} is not one of {', '.join(ACTIONS)}")
    if source not in _SOURCE_SET:
        raise InvalidDecision(f"source {source!r} is not one of {', '.join(SOURCES)}")
    if type(cid) is not str or not 0 < len(cid) <= 64:
        raise InvalidDecision("consent_id must be a non-empty string of at most 64 characters")
    services, services_json = _services(d.services)
    revision, language, ip, browser = d.revision, d.language, d.ip, d.browser
    values = (
        cid,
        action,
        _categories_text(d.granted),
        _categories_text(d.denied),
        services_json,
        revision[:64] if type(revision) is str else str(revision)[:64],
        language[:35] if type(language) is str else str(language)[:35],
        source,
        version_id,
        ip[:64] if ip else None,
        browser[:32] if browser else None,
        detail_text(d.detail) if d.detail else None,
    )
    # Positional: a NamedTuple built by keyword costs twice as much.
    return Prepared(*values, services, tail(values))


def prepare_system(action: str, detail: Mapping[str, Any], revision: str = "") -> Prepared:
    """A record the log writes about itself (a purge)."""
    if action not in SYSTEM_ACTIONS:
        raise InvalidDecision(f"{action!r} is not a log event")
    values = (
        SYSTEM_CONSENT_ID,
        action,
        "",
        "",
        "{}",
        revision,
        "",
        "api",
        None,
        None,
        None,
        detail_text(detail),
    )
    return Prepared(*values, None, tail(values))


def purge_record(
    cutoff: str, older_than_days: int, removed: int, through: int, anchor: str | None
) -> Prepared:
    """The log's own record of a purge: what went, and the checkpoint (its hash) the rest verifies from."""
    return prepare_system(
        "purge",
        {
            "cutoff": cutoff,
            "older_than_days": older_than_days,
            "removed": removed,
            "through_seq": through if removed else 0,
            "anchor": anchor,
        },
    )


# --- what comes out -------------------------------------------------------------------------


@dataclass(frozen=True)
class LoggedRecord:
    """A record as stored: the decision, its server time and sequence number, its chain links."""

    seq: int
    at: datetime
    consent_id: str
    action: str
    granted: tuple[str, ...]
    denied: tuple[str, ...]
    services: dict[str, bool]
    revision: str
    language: str
    source: str
    version_id: str | None
    ip: str | None
    browser: str | None
    prev_hash: str
    hash: str
    detail: dict[str, Any] | None = field(default=None)

    @property
    def is_decision(self) -> bool:
        return self.action not in SYSTEM_ACTIONS

    @classmethod
    def from_row(cls, row: Row | list[Any], at: datetime | None = None) -> LoggedRecord:
        """From a raw row in ROW_COLUMNS order (`at`: its time, already parsed)."""
        (seq, at_text, cid, action, granted, denied, services, revision, language, source, version_id,
         ip, browser, detail, prev_hash, h) = row  # fmt: skip
        return cls(
            seq=int(seq),
            at=at if at is not None else parse_at(at_text),
            consent_id=cid,
            action=action,
            granted=_split(granted),
            denied=_split(denied),
            services=json.loads(services) if services else {},
            revision=revision,
            language=language,
            source=source,
            version_id=version_id,
            ip=ip,
            browser=browser,
            prev_hash=prev_hash,
            hash=h,
            detail=json.loads(detail) if detail else None,
        )

    def columns(self) -> tuple[str | None, ...]:
        """The stored column values (COLUMNS order) this record hashes."""
        return (
            format_at(self.at),
            self.consent_id,
            self.action,
            ",".join(self.granted),
            ",".join(self.denied),
            services_text(self.services),
            self.revision,
            self.language,
            self.source,
            self.version_id,
            self.ip,
            self.browser,
            detail_text(self.detail) if self.detail is not None else None,
        )

    def row(self) -> Row:
        """The raw row (ROW_COLUMNS order), as the verifier takes it."""
        return (self.seq, *self.columns(), self.prev_hash, self.hash)

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": format_at(self.at),
            "consent_id": self.consent_id,
            "action": self.action,
            "granted": list(self.granted),
            "denied": list(self.denied),
            "services": dict(self.services),
            "revision": self.revision,
            "language": self.language,
            "source": self.source,
            "version_id": self.version_id,
            "ip": self.ip,
            "browser": self.browser,
            "detail": self.detail,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LoggedRecord:
        return cls(
            seq=int(data["seq"]),
            at=parse_at(data["at"]),
            consent_id=data["consent_id"],
            action=data["action"],
            granted=tuple(data["granted"]),
            denied=tuple(data["denied"]),
            services={k: bool(v) for k, v in data["services"].items()},
            revision=data["revision"],
            language=data["language"],
            source=data["source"],
            version_id=data.get("version_id"),
            ip=data.get("ip"),
            browser=data.get("browser"),
            prev_hash=data["prev_hash"],
            hash=data["hash"],
            detail=data.get("detail"),
        )
