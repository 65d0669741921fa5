"""The hash chain: each record's hash covers the previous record's hash and its own columns.

    hash = SHA-256( "consent-banner/1" 0x00 prev_hash 0x00 canonical(columns) )

The sequence number is *not* hashed: order is carried by the links, so verify can tell a
reordering from an edit. The first record links to GENESIS.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from .canonical import COLUMNS, Row, canonical, encode, tail
from .records import Prepared

GENESIS = "0" * 64  # prev_hash of the first record ever written
HASH_PREFIX = b"consent-banner/1\x00"


def link_rows(prepared: Sequence[Prepared], at: str, seq0: int, prev_hash: str) -> tuple[list[Row], str]:
    """The raw rows (ROW_COLUMNS order) of `prepared` appended after record `seq0` whose hash is
    `prev_hash`, all at time `at`; and the new head hash.

    Each hash is record_hash() of the row's columns, built from each decision's tail made in
    prepare() so that the writer only adds the time and the link."""
    head = ("[" + encode(at)).encode("ascii")
    prefix = HASH_PREFIX
    sha256 = hashlib.sha256
    rows: list[Row] = []
    prev = prev_hash
    seq = seq0
    for p in prepared:
        seq += 1
        t = p.tail or tail(p[:12])  # a Prepared made by hand has none
        h = sha256(prefix + prev.encode("ascii") + b"\x00" + head + t.encode("ascii")).hexdigest()
        rows.append((seq, at, *p[:12], prev, h))
        prev = h
    return rows, prev


def record_hash(prev_hash: str, columns: Sequence[Any]) -> str:
    """The hash of a record with these stored columns (COLUMNS order) after `prev_hash`.

    The canonical bytes are built as link_rows builds them (tail(), which encodes the few distinct
    middle columns once) when every value is text or NULL, as every stored value is; anything
    else (a hand-edited export) goes through canonical() itself, so it hashes what it is."""
    prev = prev_hash if isinstance(prev_hash, str) else str(prev_hash)
    try:
        if len(columns) != len(COLUMNS):
            raise TypeError("not a record's columns")
        body = ("[" + encode(columns[0]) + tail(columns[1:])).encode("ascii")
    except (TypeError, AttributeError):
        body = canonical(columns)
    return hashlib.sha256(HASH_PREFIX + prev.encode("utf-8", "backslashreplace") + b"\x00" + body).hexdigest()
