"""Durations written by people: cookie lifetimes ("13 months", "session") and retention periods ("3y").

One grammar and one length per unit for both: a number and a unit, long or short (`30 minutes`,
`90d`, `6m`, `3y`). A month is 31 days and a year 366, the longest each can be, because both uses
need the longest reading to stay on the safe side:

- a declared cookie lifetime is the most a cookie may live: a cookie seen living 13 calendar months
  (up to 397 days; CNIL's limit for consent cookies) is not longer than a declared "13 months";
- a retention period is the least the log keeps: `log purge --older-than 6m` must never remove a
  record younger than six calendar months (up to 184 days), which a 30-day month (180) would.
"""

from __future__ import annotations

import re

DAY = 86400  # seconds
_DURATION = re.compile(r"^\s*(\d+)\s*([a-z]+?)s?\s*$")
# Each spelling of a unit: its name (the key of its text in i18n/*.toml) and its length in seconds.
UNITS: dict[str, tuple[str, int]] = {
    "second": ("seconds", 1),
    "sec": ("seconds", 1),
    "s": ("seconds", 1),
    "minute": ("minutes", 60),
    "min": ("minutes", 60),
    "hour": ("hours", 3600),
    "h": ("hours", 3600),
    "day": ("days", DAY),
    "d": ("days", DAY),
    "week": ("weeks", 7 * DAY),
    "w": ("weeks", 7 * DAY),
    "month": ("months", 31 * DAY),
    "m": ("months", 31 * DAY),
    "year": ("years", 366 * DAY),
    "y": ("years", 366 * DAY),
}
SESSION = ("session", "end of session", "browser session")  # a lifetime that ends with the browser


def duration_parts(text: str) -> tuple[int, str, int]:
    """(number, unit name, seconds per unit) of "13 months" or "3y". Raises ValueError."""
    m = _DURATION.match(text.strip().lower())
    unit = m and (UNITS.get(m.group(2)) or UNITS.get(m.group(2) + "s"))
    if not m or not unit:
        raise ValueError(
            f"{text!r} is not a duration: write a number and a unit (seconds, minutes, hours, days, "
            "weeks, months, years, or s, min, h, d, w, m, y), e.g. 13 months or 3y"
        )
    return int(m.group(1)), unit[0], unit[1]


def lifetime_parts(text: str) -> tuple[int, str, int] | None:
    """`duration_parts` of a cookie lifetime; None for "session". Raises ValueError."""
    if text.strip().lower() in SESSION:
        return None
    try:
        return duration_parts(text)
    except ValueError as e:
        raise ValueError(f"{e}, or session") from None


def parse_lifetime(text: str) -> int | None:
    """Seconds of a cookie lifetime: "13 months", "30 minutes", "1 year"; None for "session"."""
    parts = lifetime_parts(text)
    return None if parts is None else parts[0] * parts[2]


def parse_duration(text: str) -> int:
    """Days in a retention period: "30d", "6m", "3y", "2 weeks". Raises ValueError.

    Whole days or longer only: "12h" would be 0 days, which would purge everything.
    """
    n, _, seconds = duration_parts(text)
    if seconds < DAY:
        raise ValueError(f"{text!r}: a retention period is counted in days, weeks, months or years")
    return n * seconds // DAY
