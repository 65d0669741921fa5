"""A batch of appends: what the group-commit writer hands a backend, and what comes back.

A GPC record amends the visitor's latest decision; a replayed cookie must not add one per request.
Its `detail` names the record it amends, and a unique index on (consent_id, detail) for gpc
records makes "once per consent id and decision" hold across processes. A duplicate is found
inside the write lock and left out before the batch is linked, so it never enters the chain: it
answers with the record that stands.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from .canonical import Row
from .records import GPC_ACTION, Prepared, parse_at

Item = tuple[Prepared, tuple[str, str] | None]  # a prepared decision and its (version id, payload) if any
Written = tuple[
    Prepared, int, datetime, str, str
]  # what a commit hands back: (item, seq, at, prev_hash, hash)
Outcome = int | Row  # an index into the written rows, or the raw row already in the log


def gpc_detail(amends: int) -> str:
    return f'{{"amends":{amends}}}'  # json.dumps(sort_keys, compact) of {"amends": n}, as hashed


def has_gpc(items: list[Item]) -> bool:
    return any(p.action == GPC_ACTION for p, _ in items)


def gpc_ids(items: list[Item]) -> list[str]:
    """The consent ids of a batch's GPC records, to look up what the log holds for them."""
    return sorted({p.consent_id for p, _ in items if p.action == GPC_ACTION})


def settle_gpc(
    items: list[Item], seq0: int, latest: Mapping[str, int], recorded: Mapping[tuple[str, str], Row]
) -> tuple[list[Item], list[Outcome]]:
    """The items of a batch to write after record `seq0`, GPC records given the decision they amend,
    and for each item where its answer comes from.

    latest: consent id -> seq of its latest record in the log that is not a GPC record;
    recorded: (consent id, detail) -> raw row of a GPC record already in the log."""
    kept: list[Item] = []
    outcomes: list[Outcome] = []
    batch_latest: dict[str, int] = {}
    batch_gpc: dict[tuple[str, str], int] = {}
    for p, version in items:
        cid = p.consent_id
        if p.action == GPC_ACTION:
            key = (cid, gpc_detail(batch_latest.get(cid, latest.get(cid, 0))))
            if key in batch_gpc:
                outcomes.append(batch_gpc[key])
                continue
            if key in recorded:
                outcomes.append(recorded[key])
                continue
            p = p._replace(detail=key[1], tail="")  # the tail is rebuilt with the detail when linked
            batch_gpc[key] = len(kept)
        else:
            batch_latest[cid] = seq0 + len(kept) + 1
        outcomes.append(len(kept))
        kept.append((p, version))
    return kept, outcomes


def written(items: list[Item], rows: list[Row], at: str) -> list[Written]:
    """What a commit of `items` as raw `rows` (ROW_COLUMNS order), all at time `at`, hands back.

    The callers build their LoggedRecord themselves, after the commit: that work then overlaps
    with the next batch's insert instead of holding up this one."""
    at_dt = parse_at(at)
    return [(p, r[0], at_dt, r[-2], r[-1]) for (p, _), r in zip(items, rows, strict=True)]


def written_settled(
    kept: list[Item], rows: list[Row], outcomes: list[Outcome] | None, at: str
) -> list[Written]:
    """written() for a batch that settle_gpc() thinned: duplicates answer with the record that stands."""
    fresh = written(kept, rows, at)
    if outcomes is None:
        return fresh
    out: list[Written] = []
    for o in outcomes:
        if isinstance(o, int):
            out.append(fresh[o])
        else:
            out.append((Prepared(*o[2:14]), o[0], parse_at(o[1]), o[-2], o[-1]))
    return out
