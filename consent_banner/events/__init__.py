"""Consent events out: `on_decision` (the site's callable) and webhooks (Standard Webhooks, durable).

`Events` is what the middleware holds: it hands each durable record to the callable and wakes the
webhook loops, starts the loops with the log and stops them before the log closes.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..config import Webhook
from ..log import ConsentLog, LoggedRecord
from .callback import DecisionCallback, OnDecision
from .delivery import OpenLog, Webhooks
from .payload import EVENTS, event_of, record_dict

__all__ = ["EVENTS", "Events", "OnDecision", "event_of", "record_dict"]


class Events:
    """The consent events of one middleware."""

    def __init__(self, on_decision: OnDecision | None, webhooks: Sequence[Webhook]) -> None:
        self.callback = DecisionCallback(on_decision) if on_decision is not None else None
        self.webhooks = Webhooks(webhooks) if webhooks else None

    @property
    def wanted(self) -> bool:
        """Whether recorded decisions go anywhere (else `recorded` need not be called)."""
        return self.callback is not None or self.webhooks is not None

    def recorded(self, record: LoggedRecord) -> None:
        """A decision is durable in the log (called on the request's path: returns at once)."""
        if self.callback is not None:
            self.callback.recorded(record)
        if self.webhooks is not None:
            self.webhooks.wake()

    def start(self, log: OpenLog) -> None:
        """Start the webhook loops (idempotent; inside the event loop)."""
        if self.webhooks is not None:
            self.webhooks.start(log)

    async def close(self, log: ConsentLog | None) -> None:
        """Before the log closes: let the callable catch up, stop the loops and release their leases."""
        if self.callback is not None:
            await self.callback.close()
        if self.webhooks is not None:
            await self.webhooks.close(log)
