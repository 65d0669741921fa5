"""CSV and NDJSON forms of the log, streamed, and reading them back (for offline verification).

Both forms carry every stored column, so an auditor can recompute the hash chain from an export
alone (`consent-banner log verify --file export.ndjson`). CSV cells hold the stored text as is
(categories comma-joined, services as JSON); NDJSON lines hold the same values as JSON types.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Iterable, Iterator
from json.encoder import encode_basestring_ascii
from typing import Any, TextIO

from ..memo import Memo
from .canonical import ROW_COLUMNS
from .records import LoggedRecord

FORMATS = ("csv", "ndjson")
CONTENT_TYPES = {"csv": "text/csv; charset=utf-8", "ndjson": "application/x-ndjson"}

_LIST_JSON: Memo[str, str] = Memo(4096)  # the few distinct category lists, as JSON arrays


def _list_json(text: str | None) -> str:
    if not text:
        return "[]"
    hit = _LIST_JSON.get(text)
    if hit is None:
        hit = _LIST_JSON.put(text, json.dumps(text.split(","), separators=(",", ":")))
    return hit


def _s(v: Any) -> str:
    return "null" if v is None else encode_basestring_ascii(v if isinstance(v, str) else str(v))


def ndjson_line(row: tuple[Any, ...]) -> str:
    """One raw row (ROW_COLUMNS order) as a JSON line, equal to LoggedRecord.to_json() in content.

    Built by hand from the stored text (services and detail are stored as JSON already): an export
    of a million records should not parse and re-serialise each one.
    """
    (
        seq,
        at,
        cid,
        action,
        granted,
        denied,
        services,
        revision,
        language,
        source,
        version_id,
        ip,
        browser,
        detail,
        prev_hash,
        h,
    ) = row
    return (
        f'{{"seq":{int(seq)},"at":{_s(at)},"consent_id":{_s(cid)},"action":{_s(action)},'
        f'"granted":{_list_json(granted)},"denied":{_list_json(denied)},"services":{services or "{}"},'
        f'"revision":{_s(revision)},"language":{_s(language)},"source":{_s(source)},'
        f'"version_id":{_s(version_id)},"ip":{_s(ip)},"browser":{_s(browser)},"detail":{detail or "null"},'
        f'"prev_hash":{_s(prev_hash)},"hash":{_s(h)}}}\n'
    )


def csv_header() -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(ROW_COLUMNS)
    return buf.getvalue()


def csv_lines(rows: Iterable[tuple[Any, ...]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


async def stream(chunks: AsyncIterator[list[tuple[Any, ...]]], fmt: str) -> AsyncIterator[str]:
    """Text chunks of an export (header included for CSV), from lists of raw rows (`iter_chunks`)."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r}: use csv or ndjson")
    if fmt == "csv":
        yield csv_header()
    async for rows in chunks:
        yield csv_lines(rows) if fmt == "csv" else "".join(map(ndjson_line, rows))


def _csv_row(cells: list[str]) -> tuple[Any, ...]:
    row: list[Any] = [c if c != "" else None for c in cells]
    row[0] = int(cells[0])
    # Columns that are never NULL but may be empty text.
    for name in ("granted", "denied", "revision", "language", "consent_id"):
        i = ROW_COLUMNS.index(name)
        row[i] = cells[i]
    return tuple(row)


def read_rows(f: TextIO) -> Iterator[tuple[Any, ...]]:
    """Raw rows back from a CSV or NDJSON export (sniffed from the first line)."""
    first = f.readline()
    if not first:
        return
    if first.lstrip().startswith("{"):
        for line in (first, *f):
            if line.strip():
                yield LoggedRecord.from_json(json.loads(line)).row()
        return
    header = next(csv.reader([first]))
    if tuple(header) != ROW_COLUMNS:
        raise ValueError("not a consent-log CSV export: the header row differs")
    for cells in csv.reader(f):
        if cells:
            yield _csv_row(cells)
