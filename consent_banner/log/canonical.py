"""The canonical encoding of a record: the exact bytes its hash covers.

A record's hash covers the compact, ASCII-only JSON array of its stored column values in COLUMNS
order (see chain.py). Hashing the stored text, not a re-serialisation of parsed values, means the
verifier needs no parser of its own and any change to a stored byte is seen. This order and this
spelling are the log's format: changing either breaks every log ever written.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from json.encoder import encode_basestring_ascii
from typing import Any

from ..memo import Memo

# The column order of the canonical encoding, and of every raw row the backends hand around.
COLUMNS = (
    "at",
    "consent_id",
    "action",
    "granted",
    "denied",
    "services",
    "revision",
    "language",
    "source",
    "version_id",
    "ip",
    "browser",
    "detail",
)
ROW_COLUMNS = ("seq", *COLUMNS, "prev_hash", "hash")

Row = tuple[Any, ...]  # a raw row in ROW_COLUMNS order, as the databases and exports hand it

_ascii: Callable[[str], str] = encode_basestring_ascii
# One encoder instance each: json.dumps() with options builds a new encoder on every call.
_dumps = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode
sorted_dumps = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode


def canonical(columns: Sequence[Any]) -> bytes:
    """The canonical encoding of a record's stored values (in COLUMNS order)."""
    return _dumps(columns).encode("ascii")  # a tuple encodes as the same JSON array


def encode(value: str | None) -> str:
    """One stored value as canonical() spells it (every stored value is text or NULL)."""
    return "null" if value is None else _ascii(value)


_MIDDLES: Memo[tuple[str | None, ...], str] = Memo(4096)


def tail(values: Sequence[str | None]) -> str:
    """canonical() of the columns after `at`, without the opening: ',"<consent id>",...]'.

    The same bytes json.JSONEncoder(ensure_ascii=True, separators=(",", ":")) writes for text
    and None (it uses this very function for strings), without building an encoder per call.
    The columns from action to version id take few distinct values on a site: encoded once.
    """
    middle_values = tuple(values[1:9])  # hashable, whatever sequence `values` is
    middle = _MIDDLES.get(middle_values)
    if middle is None:
        middle = _MIDDLES.put(middle_values, ",".join([encode(v) for v in middle_values]))
    cid, ip, browser, detail = values[0], values[9], values[10], values[11]
    return f",{encode(cid)},{middle},{encode(ip)},{encode(browser)},{encode(detail)}]"


def services_text(services: Mapping[str, bool]) -> str:
    """The stored form of per-service choices: sorted, compact JSON of booleans."""
    if not services:
        return "{}"
    return sorted_dumps({str(k): bool(v) for k, v in services.items()})


def detail_text(detail: Mapping[str, Any]) -> str:
    """The stored form of a record's detail (a log event's own data)."""
    return json.dumps(dict(detail), sort_keys=True, separators=(",", ":"))


def version_id_for(payload: Mapping[str, Any]) -> tuple[str, str]:
    """(content hash, canonical JSON) of a banner version payload. R20."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest(), text
