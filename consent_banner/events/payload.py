"""What goes out: the record as a dict shaped like a line of the NDJSON export, and the webhook events.

`decision` covers what a visitor decides (accept_all, reject_all, custom), being asked again (renew)
the Global Privacy Control opt-out (gpc) and the opt-out model's "Do Not Sell or Share" (opt_out, also
logged for GPC met before any decision there); `withdraw` and `purge` are their own. The body a
webhook receives (Standard Webhooks' recommended shape: type, timestamp, data):

    {"type": "consent.decision", "timestamp": "<the record's time>", "log_id": "...", "data": {<record>}}

`webhook-id` is `msg_<log id>_<seq>`: the same for every delivery of a record, so a receiver that keeps
the ids it has seen drops a redelivery.
"""

from __future__ import annotations

import json
from typing import Any

from ..log.canonical import Row
from ..log.export import ndjson_line
from ..log.records import ACTIONS, SYSTEM_ACTIONS

# Every action of the log, by event: a visitor's action is a `decision` unless it is a withdrawal,
# so an action added later (opt_out came with jurisdictions) goes out as one without a change here.
EVENTS: dict[str, str] = {
    **{a: "withdraw" if a == "withdraw" else "decision" for a in ACTIONS},
    **{a: a for a in SYSTEM_ACTIONS},  # purge
}
TYPE_PREFIX = "consent."


def event_of(action: str) -> str | None:
    """The webhook event a record's action belongs to (None: an action of a later release)."""
    return EVENTS.get(action)


def actions_of(events: tuple[str, ...]) -> tuple[str, ...]:
    """The actions whose records the events cover."""
    return tuple(a for a, e in EVENTS.items() if e in events)


def record_dict(row: Row) -> dict[str, Any]:
    """A raw row as the dict its NDJSON export line parses to (what `on_decision` is given)."""
    data: dict[str, Any] = json.loads(ndjson_line(row))
    return data


def message_id(log_id: str, seq: int) -> str:
    """`webhook-id`: stable across redeliveries of the record, distinct across logs."""
    return f"msg_{log_id}_{seq}"


def body(log_id: str, row: Row) -> bytes:
    """The JSON a webhook is POSTed for record `row`: the same bytes at every delivery."""
    event = event_of(row[3]) or row[3]
    line = ndjson_line(row).rstrip("\n")  # the export's own line, not re-serialised
    return (
        f'{{"type":{json.dumps(TYPE_PREFIX + event)},"timestamp":{json.dumps(row[1])},'
        f'"log_id":{json.dumps(log_id)},"data":{line}}}'
    ).encode("ascii")
