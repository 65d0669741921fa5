"""Which records a listing, an export or the stats look at, and the dates an operator types."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from .records import ACTIONS, SYSTEM_ACTIONS, format_at


@dataclass(frozen=True)
class RecordFilter:
    """Which records an export, a listing or the stats look at. Empty: all of them."""

    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive
    action: str | None = None
    consent_id: str | None = None
    decisions_only: bool = False  # leave out the log's own records (purges)

    def clauses(self, placeholder: Callable[[int], str], first: int = 1) -> tuple[str, list[object]]:
        """SQL WHERE text and its parameters; `placeholder(i)` spells the i-th parameter, counted
        from `first` (1-based)."""
        parts: list[str] = []
        params: list[object] = []

        def add(sql: str, value: object) -> None:
            params.append(value)
            parts.append(sql.format(placeholder(first + len(params) - 1)))

        if self.since is not None:
            add("at >= {}", format_at(self.since))
        if self.until is not None:
            add("at < {}", format_at(self.until))
        if self.action:
            add("action = {}", self.action)
        if self.consent_id:
            add("consent_id = {}", self.consent_id)
        if self.decisions_only:
            # The log's own records (purges) carry the empty consent id; this form can use the index.
            parts.append("consent_id <> ''")
        return (" WHERE " + " AND ".join(parts)) if parts else "", params


ALL_RECORDS = RecordFilter()  # the default filter (frozen, so one instance serves every call)


def parse_day(text: str | None, *, end: bool = False) -> datetime | None:
    """ "2026-01-31" or an ISO time, as UTC; with end=True a bare day means the day after (exclusive)."""
    if not text:
        return None
    text = text.strip()
    try:
        if len(text) == 10:
            d = datetime.combine(date.fromisoformat(text), datetime.min.time(), tzinfo=UTC)
            return d + timedelta(days=1) if end else d
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
        # In UTC now: the stored form is UTC, and 0001-01-01T00:00+01:00 has no UTC time.
        return t.astimezone(UTC) if t.tzinfo else t.replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"{text!r} is not a date (YYYY-MM-DD) or an ISO time") from None
    except OverflowError:
        raise ValueError(f"{text!r} is outside the dates the log can hold (years 1 to 9999, UTC)") from None


def valid_action(action: str | None) -> str | None:
    """An --action / ?action= value, checked."""
    if not action:
        return None
    if action not in ACTIONS and action not in SYSTEM_ACTIONS:
        raise ValueError(f"{action!r} is not an action: {', '.join(ACTIONS + SYSTEM_ACTIONS)}")
    return action
