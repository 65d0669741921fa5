"""CSV and NDJSON forms of the log, streamed, and reading them back (for offline verification).

Both forms carry every stored column, so an auditor can recompute the hash chain from an export
alone (`consent-banner log verify --export export.ndjson`). CSV cells hold the stored text as is
(categories comma-joined, services as JSON); NDJSON lines hold the same values as JSON types.

An NDJSON export opens with lines that carry a `type` (docs/export-format.md): a header, the
banner versions, the checkpoints and the signed head it was taken at, so whoever holds the file
and the log's public key verifies it with no database and no secret. Record lines are as they
always were and carry no `type`: a record line starts with `{"seq":`, every other with `{"type":`.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from json.encoder import encode_basestring_ascii
from typing import Any, TextIO

from ..memo import Memo
from .canonical import ROW_COLUMNS, Row
from .head import SignedHead
from .records import LoggedRecord
from .results import LogState

FORMATS = ("csv", "ndjson")
EXPORT_FORMAT = "consent-banner/log-export"
EXPORT_VERSION = 2  # 1: record lines only (before schema 4); 2: typed lines before them
CONTENT_TYPES = {"csv": "text/csv; charset=utf-8", "ndjson": "application/x-ndjson"}

_LIST_JSON: Memo[str, str] = Memo(4096)  # the few distinct category lists, as JSON arrays


def _list_json(text: str | None) -> str:
    if not text:
        return "[]"
    hit = _LIST_JSON.get(text)
    if hit is None:
        hit = _LIST_JSON.put(text, json.dumps(text.split(","), separators=(",", ":")))
    return hit


_ascii: Callable[[str], str] = encode_basestring_ascii


def _s(v: Any) -> str:
    return "null" if v is None else encode_basestring_ascii(v if isinstance(v, str) else str(v))


# The columns from action to version_id take few distinct values on a site: their part of a line is
# built once (an export's cost, and offline.record_row's, which renders each line to compare).
_MIDDLES: Memo[tuple[Any, ...], str] = Memo(4096)


def ndjson_line(row: tuple[Any, ...]) -> str:
    """One raw row (ROW_COLUMNS order) as a JSON line, equal to LoggedRecord.to_json() in content.

    Built by hand from the stored text (services and detail are stored as JSON already): an export
    of a million records should not parse and re-serialise each one. This is the canonical spelling
    of a record line (docs/export-format.md): the offline reader compares each line with it.
    """
    seq, at, cid = row[0], row[1], row[2]
    ip, browser, detail, prev_hash, h = row[11], row[12], row[13], row[14], row[15]
    middle_values = row[3:11]
    middle = _MIDDLES.get(middle_values)
    if middle is None:
        action, granted, denied, services, revision, language, source, version_id = middle_values
        middle = _MIDDLES.put(
            middle_values,
            f'"action":{_s(action)},"granted":{_list_json(granted)},"denied":{_list_json(denied)},'
            f'"services":{services or "{}"},"revision":{_s(revision)},"language":{_s(language)},'
            f'"source":{_s(source)},"version_id":{_s(version_id)},',
        )
    # at, consent_id and the hashes are never NULL: encoded directly (a call fewer each, per record).
    ip_text = "null" if ip is None else _ascii(ip)
    browser_text = "null" if browser is None else _ascii(browser)
    return (
        f'{{"seq":{int(seq)},"at":{_ascii(at)},"consent_id":{_ascii(cid)},{middle}'
        f'"ip":{ip_text},"browser":{browser_text},"detail":{detail or "null"},'
        f'"prev_hash":{_ascii(prev_hash)},"hash":{_ascii(h)}}}\n'
    )


def state_lines(state: LogState, schema: int) -> str:
    """The typed lines an NDJSON export opens with: header, banner versions, checkpoints, head."""
    header = {
        "type": "header",
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "log_id": state.log_id,
        "schema": schema,
        "complete": state.head is not None,  # the whole log, held against its head
    }
    lines = [header]
    lines += [{"type": "version", "id": vid, "payload": text} for vid, text in sorted(state.versions.items())]
    lines += [{"type": "checkpoint", **cp.to_json()} for cp in state.checkpoints]
    if state.head is not None:
        lines.append(head_json(state.head))
    return "".join(json.dumps(line, ensure_ascii=True, separators=(",", ":")) + "\n" for line in lines)


def head_json(head: SignedHead) -> dict[str, Any]:
    """The signed head as an export line (and a pins file line)."""
    data: dict[str, Any] = {
        "type": "head",
        "log_id": head.log_id,
        "seq": head.seq,
        "hash": head.hash,
        "at": head.at,
        "key_id": head.key_id,
        "mac": head.mac,
        "checkpoints": head.checkpoints,
    }
    if head.sig_key_id is not None:
        data["sig_key_id"], data["sig"] = head.sig_key_id, head.sig
    return data


def head_from_json(data: dict[str, Any]) -> SignedHead:
    """A head line back; KeyError/ValueError/TypeError when it is not one."""
    opt = {k: None if data.get(k) is None else str(data[k]) for k in ("at", "key_id", "mac", "checkpoints")}
    sig = {k: None if data.get(k) is None else str(data[k]) for k in ("sig_key_id", "sig")}
    return SignedHead(str(data["log_id"]), _int(data["seq"]), str(data["hash"]), **opt, **sig)


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{value!r} is not a whole number")
    return value


async def stream_export(parts: AsyncIterator[LogState | list[Row]], schema: int) -> AsyncIterator[str]:
    """Text chunks of an NDJSON export from export_chunks(): the typed lines, then the records."""
    async for part in parts:
        yield state_lines(part, schema) if isinstance(part, LogState) else "".join(map(ndjson_line, part))


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
