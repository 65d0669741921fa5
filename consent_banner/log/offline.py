"""Offline verification: an NDJSON export checked with the log's public key alone.

No database, no secret: the export carries the checkpoints and the signed head it was taken at
(export.state_lines), and ChainVerifier, the one verifier `log verify` runs over the database,
runs over the file's rows here, so the first bad record is named the same way. Records are read
one line at a time (constant memory); only the typed lines before them (checkpoints, banner
versions) are held. The format is docs/export-format.md.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ..memo import Memo
from .canonical import Row, detail_text, services_text
from .checkpoints import Checkpoint
from .export import EXPORT_FORMAT, head_from_json, read_rows
from .head import SignedHead
from .keys import PublicKey
from .results import VerifyResult
from .verify import PIN, ChainVerifier

TYPED = '{"type":'  # how every line but a record's starts, as the exporter writes it
# What a hand-edited or truncated file raises while it is read; named with its line.
MALFORMED = (ValueError, KeyError, IndexError, TypeError, AttributeError)


class ExportError(ValueError):
    """A line of an export or a pins file (a record of a CSV export) is not what it should be; `line`
    is its number (from 1)."""

    def __init__(self, line: int, message: str, unit: str = "line") -> None:
        self.line = line
        super().__init__(f"{unit} {line}: {message}")


@dataclass
class ExportState:
    """The typed lines of an export (before its records)."""

    log_id: str | None = None
    complete: bool = False  # the header says: a whole log's export, so a head line must follow
    head: SignedHead | None = None
    checkpoints: list[Checkpoint] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    typed: bool = False  # the file has a header (an export of schema 4 on); False: records only


# The few distinct per-service choices of a site, stored text by their items: re-serialised once.
_SERVICES: Memo[tuple[tuple[Any, Any], ...], str] = Memo(4096)


def record_row(line: str) -> Row:
    """A record line as the raw row (ROW_COLUMNS order) its hash covers: the stored text, rebuilt
    exactly as the log stores it (categories comma-joined, services and detail as canonical JSON)."""
    d = json.loads(line)
    detail, services = d["detail"], d["services"]
    key = tuple(services.items())
    stored = _SERVICES.get(key)
    if stored is None:
        stored = _SERVICES.put(key, services_text(services))
    return (
        d["seq"],
        d["at"],
        d["consent_id"],
        d["action"],
        ",".join(d["granted"]),
        ",".join(d["denied"]),
        stored,
        d["revision"],
        d["language"],
        d["source"],
        d["version_id"],
        d["ip"],
        d["browser"],
        None if detail is None else detail_text(detail),
        d["prev_hash"],
        d["hash"],
    )


class ExportReader:
    """An NDJSON export read once: `state` (the typed lines) first, then `rows()`, one at a time.
    `line` is the number of the line being read, to name a malformed one."""

    def __init__(self, f: TextIO) -> None:
        self._f = f
        self.line = 0
        self.state = ExportState()
        self._first: str | None = None

    def read_state(self) -> None:
        """Read the typed lines (up to the first record line) into `state`."""
        st = self.state
        for text in self._f:
            self.line += 1
            if not text.strip():
                continue
            if not text.startswith(TYPED):
                self._first = text
                return
            data = json.loads(text)
            kind = data.get("type")
            if self.line == 1 and kind != "header":
                raise ExportError(1, "an export starts with its header line")
            if kind == "header":
                if self.line != 1 or data.get("format") != EXPORT_FORMAT:
                    raise ExportError(self.line, f"not the header of a {EXPORT_FORMAT}")
                st.typed, st.log_id, st.complete = True, str(data["log_id"]), data.get("complete") is True
            elif kind == "version":
                st.versions[str(data["id"])] = str(data["payload"])
            elif kind == "checkpoint":
                st.checkpoints.append(Checkpoint.from_json(data))
            elif kind == "head":
                if st.head is not None:
                    raise ExportError(self.line, "a second head line")
                st.head = head_from_json(data)
            else:
                raise ExportError(self.line, f"unknown line type {kind!r}")

    def rows(self) -> Iterator[Row]:
        if self._first is None:
            return
        yield record_row(self._first)
        for text in self._f:
            self.line += 1
            if text.startswith(TYPED):
                raise ExportError(self.line, "a typed line among the records (lines were moved)")
            if text.strip():
                yield record_row(text)


def verify_export(
    path: Path,
    *,
    pins: Sequence[Checkpoint] = (),
    keys: Mapping[str, bytes] | None = None,
    public_keys: Mapping[str, PublicKey] | None = None,
) -> VerifyResult:
    """Verify an export file: the whole chain, every signature, the purge anchors, the pins.

    An NDJSON export of the whole log (with its head) is held to its head and checkpoints as the
    database is; with `public_keys` the head must carry an Ed25519 signature by one of them. A CSV
    export, a filtered one or one of before schema 4 has no head: its chain is only
    self-consistent, unless pinned checkpoints vouch for it (the result's notes say so), and with
    `public_keys` it fails, since nothing in it is signed. Raises ExportError (or one
    of MALFORMED) naming the line when the file is not an export."""
    with open(path, encoding="utf-8", newline="") as f:
        if f.read(1) != "{":  # CSV: records only
            f.seek(0)
            counted = _Counted(read_rows(f))
            try:
                return _verify_headless(iter(counted), pins, keys, public_keys)
            except MALFORMED as e:
                raise ExportError(
                    counted.n + 1, f"not a record of a log export ({_why(e)})", "record"
                ) from None
        f.seek(0)
        reader = ExportReader(f)
        try:
            return _verify(reader, pins, keys, public_keys)
        except ExportError:
            raise
        except MALFORMED as e:
            raise ExportError(reader.line, f"not a line of a log export ({_why(e)})") from None


def _why(e: Exception) -> str:
    return f"{e.args[0]!r} is missing" if isinstance(e, KeyError) else str(e)


class _Counted:
    """Rows, counted as they are read (to name a malformed one)."""

    def __init__(self, rows: Iterator[Row]) -> None:
        self.rows, self.n = rows, 0

    def __iter__(self) -> Iterator[Row]:
        for row in self.rows:
            self.n += 1
            yield row


def _verify(
    reader: ExportReader,
    pins: Sequence[Checkpoint],
    keys: Mapping[str, bytes] | None,
    public_keys: Mapping[str, PublicKey] | None,
) -> VerifyResult:
    reader.read_state()
    st = reader.state
    if st.head is None and not st.complete:
        return _verify_headless(reader.rows(), pins, keys, public_keys)
    v = ChainVerifier(
        checkpoints=st.checkpoints,
        keys=keys,
        public_keys=public_keys,
        require_public=public_keys is not None,
        head=st.head,
        head_required=True,
        versions=st.versions,
        log_id=st.log_id,
        pins=pins,
    )
    v.feed_all(reader.rows())
    return v.finish()


def _verify_headless(
    rows: Iterator[Row],
    pins: Sequence[Checkpoint],
    keys: Mapping[str, bytes] | None,
    public_keys: Mapping[str, PublicKey] | None,
) -> VerifyResult:
    """Records without a head: anchored when they start at record 1 or pins are given, else a
    partial chain whose first link is taken as given."""
    first = next(rows, None)
    anchored = first is None or first[0] == 1 or bool(pins)
    v = ChainVerifier(
        checkpoints=pins,
        keys=keys,
        public_keys=public_keys,
        require_public=public_keys is not None,
        anchored=anchored,
    )
    if first is not None:
        v.feed_all(itertools.chain((first,), rows))
    return v.finish()


def read_pins(path: Path) -> list[Checkpoint]:
    """The pins an auditor kept: checkpoints (`log checkpoints`, or an export's checkpoint lines),
    signed heads (an export's head line) or bare {"seq": N, "hash": H} lines, one per line. A head
    or bare pin is the auditor's own record: compared with the chain as it is."""
    pins: list[Checkpoint] = []
    n = 0
    with open(path, encoding="utf-8") as f:
        for n, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                pins.append(_pin(json.loads(text)))
            except MALFORMED as e:
                raise ExportError(
                    n, f"not a pin (a checkpoint, a head, or seq and hash) ({_why(e)})"
                ) from None
    return pins


def _pin(data: Any) -> Checkpoint:
    if not isinstance(data, dict):
        raise TypeError("not a JSON object")
    if data.get("type") == "checkpoint" or (data.get("type") is None and "mac" in data):
        return Checkpoint.from_json(data)
    if data.get("type") not in (None, "head"):
        raise ValueError(f"a {data['type']!r} line")
    seq, hash_ = data["seq"], data["hash"]
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0 or not isinstance(hash_, str):
        raise ValueError("seq must be a whole number and hash a text")
    return Checkpoint(str(data.get("log_id") or ""), seq, hash_, str(data.get("at") or ""), PIN, "", "")
