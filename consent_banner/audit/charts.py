"""The dashboard's charts, as geometry for inline SVG (pure: no I/O, no HTML)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from ..log import ACTIONS, LogStats, RecordFilter

CHART_DAYS = 60  # days shown in the dashboard chart when no period is chosen
MAX_CHART_DAYS = 731  # days shown at most, whatever the period
_EARLIEST = datetime.min.replace(tzinfo=UTC)

# One colour per action, distinguishable in grey scale too (R8 contrast on white).
ACTION_COLORS = {
    "accept_all": "#1b7f3b",
    "custom": "#2f5fb3",
    "reject_all": "#b3261e",
    "withdraw": "#7a4d00",
    "gpc": "#5b2c83",
    "renew": "#4a4a4a",
    "opt_out": "#8a3b12",
}


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
