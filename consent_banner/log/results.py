"""What the log's read and maintenance calls answer: stats, CSP report summaries, a purge, a verify."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .chain import GENESIS
from .checkpoints import Checkpoint
from .head import SignedHead
from .records import SYSTEM_ACTIONS, LoggedRecord

UNKNOWN = "unknown"  # a record that does not say its jurisdiction
# What a record's detail may say (geo.py: its models, an ISO 3166 code as geo.locate spells it).
_MODELS = frozenset({"opt-in", "opt-out", UNKNOWN})  # geo.MODELS, and records that do not say
_REGION = re.compile(r"[A-Z]{2}(?:-[A-Z0-9]{1,3})?")


@dataclass
class LogStats:
    """Totals, decisions per day by action, and acceptance rate per category."""

    total: int = 0  # decisions (the log's own records not counted)
    by_action: dict[str, int] = field(default_factory=dict)
    per_day: dict[str, dict[str, int]] = field(default_factory=dict)  # "2026-01-31" -> action -> count
    granted: dict[str, int] = field(default_factory=dict)  # category -> decisions granting it
    denied: dict[str, int] = field(default_factory=dict)  # category -> decisions denying it
    consent_ids: int = 0
    # Decisions per jurisdiction (geo.py; the record's detail): model -> count, and region -> model ->
    # count, "unknown" for records that do not say (an earlier release's, a GPC amendment's).
    by_model: dict[str, int] = field(default_factory=dict)
    by_region: dict[str, dict[str, int]] = field(default_factory=dict)
    first_at: str | None = None
    last_at: str | None = None

    @property
    def categories(self) -> list[str]:
        names = set(self.granted) | set(self.denied)
        names.discard("necessary")
        return sorted(names)

    def acceptance_rate(self, category: str) -> float:
        """Share of decisions that named this category and granted it (0..1)."""
        g, d = self.granted.get(category, 0), self.denied.get(category, 0)
        return g / (g + d) if g + d else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "consent_ids": self.consent_ids,
            "first_at": self.first_at,
            "last_at": self.last_at,
            "by_action": self.by_action,
            "per_day": self.per_day,
            "acceptance_rate": {c: round(self.acceptance_rate(c), 4) for c in self.categories},
            "by_model": self.by_model,
            "by_region": self.by_region,
        }

    def add_jurisdictions(self, rows: Iterable[Sequence[Any]]) -> None:
        """Fold in rows of (model, region, action, count); NULL model or region: unknown."""
        for model, region, action, n in rows:
            if action in SYSTEM_ACTIONS:
                continue
            m = model if isinstance(model, str) else UNKNOWN
            r = region if isinstance(region, str) else UNKNOWN
            if m not in _MODELS or (r != UNKNOWN and not _REGION.fullmatch(r)):
                # Not what geo.region_json writes (a tampered row): never a key of the split.
                m = r = UNKNOWN
            self.by_model[m] = self.by_model.get(m, 0) + n
            per = self.by_region.setdefault(r, {})
            per[m] = per.get(m, 0) + n
        self.by_model = dict(sorted(self.by_model.items()))
        self.by_region = dict(sorted(self.by_region.items()))

    def add_rows(self, rows: Iterable[Sequence[Any]]) -> None:
        """Fold in rows of (day, action, granted, denied, count, first at, last at)."""
        for day, action, granted, denied, n, first, last in rows:
            if action in SYSTEM_ACTIONS:
                continue
            self.add_group(granted, denied, action, n)
            per = self.per_day.setdefault(day, {})
            per[action] = per.get(action, 0) + n
            self.first_at = first if self.first_at is None or first < self.first_at else self.first_at
            self.last_at = last if self.last_at is None or last > self.last_at else self.last_at
        self.per_day = dict(sorted(self.per_day.items()))

    def add_group(self, granted: str, denied: str, action: str, n: int) -> None:
        if action in SYSTEM_ACTIONS:
            return
        self.total += n
        self.by_action[action] = self.by_action.get(action, 0) + n
        for c in granted.split(",") if granted else ():
            self.granted[c] = self.granted.get(c, 0) + n
        for c in denied.split(",") if denied else ():
            self.denied[c] = self.denied.get(c, 0) + n


@dataclass(frozen=True)
class BlockedSummary:
    """CSP reports grouped by page, blocked origin and directive."""

    page: str
    origin: str
    directive: str
    count: int
    first_at: str
    last_at: str
    with_consent: int  # reports from visitors who had decided
    clients: int = 0  # distinct client networks that sent them (rows from before schema 3: none)


@dataclass(frozen=True)
class BlockedOrigin:
    """CSP reports grouped by blocked origin: what `log blocked --suggest` weighs."""

    origin: str
    count: int
    clients: int  # distinct client networks (truncate_ip) that reported it; unknown ones not counted
    pages: int  # distinct pages
    page: str  # one of them (the first in text order)
    first_at: str
    last_at: str
    directives: dict[str, int]  # directive -> reports
    # distinct client networks that reported it under script-src or script-src-elem (a script element)
    script_clients: int = 0


@dataclass(frozen=True)
class PurgeResult:
    removed: int
    through_seq: int  # records 1..through_seq are gone (0: none)
    cutoff: str
    checkpoint: Checkpoint | None  # the anchor the remaining chain verifies from
    record: LoggedRecord  # the purge's own record in the chain


@dataclass(frozen=True)
class LogState:
    """The log's signed state in one snapshot, as an export carries it before its records: the head
    (None: a filtered export, or none read), every checkpoint in the order signed, the banner
    versions (id -> stored payload text)."""

    log_id: str
    head: SignedHead | None
    checkpoints: list[Checkpoint]
    versions: dict[str, str]


@dataclass
class VerifyResult:
    ok: bool
    records: int  # records checked
    first_seq: int | None = None
    last_seq: int | None = None
    head: str | None = None  # hash of the last record checked
    bad_seq: int | None = None
    problem: str | None = None  # changed | missing | inserted | reordered | rewritten | signature | version
    reason: str | None = None
    checkpoints: int = 0  # checkpoints compared with the chain
    anchor: int | None = None  # seq of the purge checkpoint the chain starts from, if any
    notes: list[str] = field(default_factory=list)
    signatures: str | None = None  # what vouched for the log: "signatures: Ed25519, log key ..." or HMAC

    @property
    def message(self) -> str:
        if self.ok:
            start = f" (from the checkpoint at record {self.anchor})" if self.anchor else ""
            return f"{self.records} records, chain intact, head {self.head or GENESIS}{start}"
        where = f"record {self.bad_seq}: " if self.bad_seq is not None else ""
        return f"{where}{self.problem}: {self.reason}"

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "records": self.records,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "head": self.head,
            "bad_seq": self.bad_seq,
            "problem": self.problem,
            "reason": self.reason,
            "checkpoints": self.checkpoints,
            "anchor": self.anchor,
            "notes": list(self.notes),
            "signatures": self.signatures,
            "message": self.message,
        }
