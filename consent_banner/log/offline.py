"""Offline verification: an NDJSON export checked with the log's public key alone.

No database, no secret: the export carries the checkpoints and the signed head it was taken at
(export.state_lines), and ChainVerifier, the one verifier `log verify` runs over the database,
runs over the file's rows here, so the first bad record is named the same way. Records are read
one line at a time (constant memory); only the typed lines before them (checkpoints, banner
versions) are held. The format is docs/export-format.md.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from ..memo import Memo
from .canonical import Row, detail_text, services_text
from .checkpoints import Checkpoint
from .export import EXPORT_FORMAT, head_from_json, ndjson_line, read_rows
from .head import SignedHead
from .keys import PublicKey
from .results import VerifyResult
from .verify import PIN, ChainVerifier

TYPED = '{"type":'  # how every line but a record's starts, as the exporter writes it
# What a hand-edited or truncated file raises while it is read; named with its line.
MALFORMED = (
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    AttributeError,
    RecursionError,  # JSON nested a million deep: `[[[[...` fits in one line of a megabyte
    csv.Error,  # a CSV field over the csv module's 128 KB limit
)
# The longest line read: no line a log writes comes near it (a banner version is kilobytes), and a
# line is held whole while it is read, so a hostile 2 GB line would otherwise be held whole.
MAX_LINE_BYTES = 16 * 1024 * 1024


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
    exactly as the log stores it (categories comma-joined, services and detail as canonical JSON).

    The hash covers those stored values, so a line is only trusted as far as every reader reads the
    same values from it: a line that is not spelled exactly as the exporter writes it (ndjson_line)
    is read again strictly (`strict_record`), which refuses what two JSON readers could read apart
    or what only our rebuilding would equate (a duplicate member, `1` for `true`, a text for a list).
    An export we wrote never takes that second path, so the check costs one line's rendering."""
    try:
        # raw_decode: the C scanner alone (no check of what follows: a line equal to its rendering
        # has nothing after the object, and any other is decoded whole below).
        row = _row(_raw_decode(line)[0])
        rendered = ndjson_line(row)
        if rendered == line or rendered[:-1] == line.rstrip("\r\n"):
            return row
    except (ValueError, KeyError, TypeError, AttributeError):
        pass  # named below, by the strict reading or the plain one
    strict_record(line)
    return _row(json.loads(line))


_raw_decode = json.JSONDecoder().raw_decode


def _row(d: dict[str, Any]) -> Row:
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


class NotCanonical(ValueError):
    """A line's JSON is valid but not what the format allows (export-format.md, "Strictness")."""


def _members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise NotCanonical(f"the member {name!r} appears twice (JSON readers differ on which counts)")
            seen.add(name)
    return obj


def _no_constant(name: str) -> Any:
    raise NotCanonical(f"{name} is not JSON")


def _exact_float(text: str) -> float:
    """A number with a fraction or exponent, refused unless spelled as the exporter spells it (Python's
    repr): otherwise two readers may round it to different values (1.00000000000000001)."""
    value = float(text)
    if repr(value) != text:
        raise NotCanonical(f"the number {text} is not spelled as the export spells it ({value!r})")
    return value


# JSON as the format allows it: no member twice, no NaN or Infinity, numbers exactly as written.
strict_json = json.JSONDecoder(
    object_pairs_hook=_members, parse_constant=_no_constant, parse_float=_exact_float
).decode

_TEXT = (str,)
_TEXT_OR_NULL = (str, type(None))
_RECORD: dict[str, tuple[type, ...]] = {
    "seq": (int,),
    "at": _TEXT,
    "consent_id": _TEXT,
    "action": _TEXT,
    "granted": (list,),
    "denied": (list,),
    "services": (dict,),
    "revision": _TEXT,
    "language": _TEXT,
    "source": _TEXT,
    "version_id": _TEXT_OR_NULL,
    "ip": _TEXT_OR_NULL,
    "browser": _TEXT_OR_NULL,
    "detail": (dict, type(None)),
    "prev_hash": _TEXT,
    "hash": _TEXT,
}


def _typed(data: dict[str, Any], spec: Mapping[str, tuple[type, ...]], what: str) -> None:
    """Each member of `data` of its exact JSON type in `spec` (a bool is not a number); none other."""
    for name, value in data.items():
        types = spec.get(name)
        if types is None:
            raise NotCanonical(f"{what} has no member {name!r}")
        if type(value) not in types:
            expected = " or ".join(_JSON_NAMES[t] for t in types)
            raise NotCanonical(f"{what}'s {name!r} must be {expected}, not {json.dumps(value)[:40]}")


_JSON_NAMES = {
    str: "a string",
    int: "a whole number",
    bool: "true or false",
    list: "an array",
    dict: "an object",
    type(None): "null",
}


_OPTIONAL_TEXT = (str, type(None))
# The typed lines' members and their JSON types (null: the member may also be absent). Read by
# Checkpoint.from_json and head_from_json, which would turn a number into text or text into a number.
_TYPED_LINES: dict[str, dict[str, tuple[type, ...]]] = {
    "header": {
        "type": _TEXT,
        "format": _TEXT,
        "version": (int,),
        "log_id": _TEXT,
        "schema": (int,),
        "complete": (bool,),
    },
    "version": {"type": _TEXT, "id": _TEXT, "payload": _TEXT},
    "checkpoint": {
        "type": _TEXT,
        "log_id": _TEXT,
        "seq": (int,),
        "count": (int,),
        "hash": _TEXT,
        "at": _TEXT,
        "reason": _TEXT,
        "key_id": _TEXT,
        "mac": _TEXT,
        "n": (int, type(None)),
        **dict.fromkeys(("prev", "sig_key_id", "sig", "prior_key_id", "prior_sig"), _OPTIONAL_TEXT),
    },
    "head": {
        "type": _TEXT,
        "log_id": _TEXT,
        "seq": (int,),
        "hash": _TEXT,
        **dict.fromkeys(("at", "key_id", "mac", "checkpoints", "sig_key_id", "sig"), _OPTIONAL_TEXT),
    },
}


def typed_line(data: dict[str, Any], kind: str) -> None:
    """NotCanonical unless a typed line (or a pinned checkpoint or head) has only its own members,
    each of its JSON type; a checkpoint's `count` is its `seq` (a reader of either sees one value)."""
    _typed(data, _TYPED_LINES[kind], f"a {kind} line")
    if kind == "checkpoint" and data.get("count", data.get("seq")) != data.get("seq"):
        raise NotCanonical("a checkpoint line's 'count' differs from its 'seq'")


def strict_record(line: str) -> None:
    """NotCanonical unless `line` is a record line whose values are exactly those its stored text
    spells: the members of a record, once each, each of its JSON type; categories as the comma-joined
    text splits (no comma in a name, no [""]); per-service choices true or false."""
    d = strict_json(line)
    if not isinstance(d, dict):
        raise NotCanonical("a record line is a JSON object")
    _typed(d, _RECORD, "a record")  # a missing member: KeyError, as record_row reads it
    for name in ("granted", "denied"):
        names = d.get(name, [])
        if not all(type(n) is str for n in names):
            raise NotCanonical(f"a record's {name!r} must hold strings")
        joined = ",".join(names)
        if (joined.split(",") if joined else []) != names:
            raise NotCanonical(f"a record's {name!r} is not the list its stored text {joined!r} splits into")
    if not all(type(v) is bool for v in d.get("services", {}).values()):
        raise NotCanonical("a record's 'services' must map each service to true or false")


class ExportReader:
    """An NDJSON export read once: `state` (the typed lines) first, then `rows()`, one at a time.
    `line` is the number of the line being read, to name a malformed one."""

    def __init__(self, f: BinaryIO) -> None:
        self.line = 0
        self._lines = self._read_lines(f)
        self.state = ExportState()
        self._first: str | None = None

    def _read_lines(self, f: BinaryIO) -> Iterator[str]:
        """The file's lines, counted in `line`: each at most MAX_LINE_BYTES, and decoded alone, so a
        byte that is not UTF-8 is named at its own line (a text file decodes blocks ahead of it)."""
        while raw := f.readline(MAX_LINE_BYTES + 1):
            self.line += 1
            if len(raw) > MAX_LINE_BYTES:
                raise ExportError(
                    self.line, f"longer than {MAX_LINE_BYTES} bytes: not a line of a log export"
                )
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ExportError(
                    self.line, f"not UTF-8 (byte {e.start + 1} is {raw[e.start]:#04x})"
                ) from None

    def read_state(self) -> None:
        """Read the typed lines (up to the first record line) into `state`."""
        st = self.state
        for text in self._lines:
            if not text.strip():
                continue
            if not text.startswith(TYPED):
                self._first = text
                return
            data = strict_json(text)
            kind = data.get("type") if isinstance(data, dict) else None
            if kind in _TYPED_LINES:
                typed_line(data, kind)
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
        for text in self._lines:
            if text.startswith(TYPED):
                raise ExportError(self.line, "a typed line among the records (lines were moved)")
            if not text.isspace():  # not strip(): that copies every line to test for a blank one
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
    with open(path, "rb") as f:
        # NDJSON by its first character after any blank: a file opening with a space or a blank line
        # is read by the export reader all the same, never by a laxer one. Peeked, not read: the
        # file may be a pipe (`--export /dev/stdin`, `<(curl ...)`), which cannot go back.
        if f.peek(4096)[:4096].lstrip()[:1] != b"{":  # CSV: records only
            return _verify_csv(io.TextIOWrapper(f, encoding="utf-8", newline=""), pins, keys, public_keys)
        reader = ExportReader(f)
        try:
            return _verify(reader, pins, keys, public_keys)
        except ExportError:
            raise
        except MALFORMED as e:
            raise ExportError(reader.line, f"not a line of a log export ({_why(e)})") from None


def _verify_csv(
    f: TextIO,
    pins: Sequence[Checkpoint],
    keys: Mapping[str, bytes] | None,
    public_keys: Mapping[str, PublicKey] | None,
) -> VerifyResult:
    counted = _Counted(read_rows(f))
    try:
        return _verify_headless(iter(counted), pins, keys, public_keys)
    except MALFORMED as e:
        raise ExportError(counted.n + 1, f"not a record of a log export ({_why(e)})", "record") from None


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
                pins.append(_pin(strict_json(text)))
            except MALFORMED as e:
                raise ExportError(
                    n, f"not a pin (a checkpoint, a head, or seq and hash) ({_why(e)})"
                ) from None
    return pins


def _pin(data: Any) -> Checkpoint:
    if not isinstance(data, dict):
        raise TypeError("not a JSON object")
    if data.get("type") == "checkpoint" or (data.get("type") is None and "mac" in data):
        typed_line(data, "checkpoint")
        return Checkpoint.from_json(data)
    if data.get("type") not in (None, "head"):
        raise ValueError(f"a {data['type']!r} line")
    typed_line(data, "head")
    seq, hash_ = data["seq"], data["hash"]
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0 or not isinstance(hash_, str):
        raise ValueError("seq must be a whole number and hash a text")
    return Checkpoint(str(data.get("log_id") or ""), seq, hash_, str(data.get("at") or ""), PIN, "", "")
