"""What each webhook's delivery stands at: delivered through which record, pending, failing (and why,
and when it is tried next). Read from the log (its cursors, and a count of the records after each),
so any reader, the read-only ones included, shows the same: the audit view and `log webhooks`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..config import Webhook
from ..display import mask_passwords
from ..log import ConsentLog
from ..log.outbox import WebhookCursor
from .payload import actions_of


@dataclass(frozen=True)
class WebhookStatus:
    """One webhook, as an operator sees it."""

    name: str  # its cursor's key (the URL unless named), passwords masked
    url: str | None  # None: a cursor in the log whose webhook is no longer configured
    events: tuple[str, ...]
    cursor: WebhookCursor | None  # None: it has not run yet
    pending: int | None  # records after the cursor it takes (None: not started)

    @property
    def state(self) -> str:
        if self.url is None:
            return "not configured"
        if self.cursor is None:
            return "not started"
        if self.cursor.failing:
            return "failing"
        return "pending" if self.pending else "up to date"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "url": self.url,
            "events": list(self.events),
            "state": self.state,
            "pending": self.pending,
        }
        if self.cursor is not None:
            data.update(self.cursor.to_json(), name=self.name)
        return data


async def webhook_status(log: ConsentLog, hooks: Sequence[Webhook]) -> list[WebhookStatus]:
    """Every configured webhook, then every cursor of one no longer configured."""
    cursors = {c.name: c for c in await log.webhook_states()}
    found = []
    for hook in hooks:
        c = cursors.pop(hook.key, None)
        pending = await log.webhook_pending(c.seq, actions_of(hook.events)) if c is not None else None
        found.append(
            WebhookStatus(mask_passwords(hook.key), mask_passwords(hook.url), hook.events, c, pending)
        )
    for name, c in sorted(cursors.items()):
        found.append(WebhookStatus(mask_passwords(name), None, (), c, None))
    return found


def describe(s: WebhookStatus) -> list[str]:
    """Lines of text for one webhook (values from the database: the caller escapes controls)."""
    head = f"{s.name}: {s.state}"
    if s.url is not None and s.url != s.name:
        head += f" ({s.url})"
    lines = [head, f"  events: {', '.join(s.events) or '-'}"]
    c = s.cursor
    if c is not None:
        when = f" at {c.delivered_at}" if c.delivered_at else ""
        pending = f"; {s.pending} pending" if s.pending is not None else ""
        lines.append(f"  delivered through record {c.seq}{when}{pending}")
        if c.failing:
            lines.append(f"  failed {c.attempts} times in a row, last at {c.failed_at}: {c.last_error}")
            lines.append(f"  next attempt at {c.next_attempt}")
    return lines
