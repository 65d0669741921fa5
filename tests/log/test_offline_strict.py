"""How strictly `log verify --export` reads a line (issue 18 follow-up; docs/export-format.md,
"Strictness"). R22.

A record's hash covers its stored text, which the reader rebuilds from the line's JSON values. A line
whose values two JSON readers read apart (a member twice: one takes the first, another the last), or
that only our rebuilding equates with the stored text (`1` for `true`, `true` for a sequence number,
one category "a,b" for two), would verify while an auditor's own tool reads something else: each is
refused, named by its line. Spelling alone (spaces, member order, escapes, CRLF) carries no value and
is accepted. An export we wrote is read on the fast path: its lines are exactly the exporter's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from consent_banner.log import offline
from consent_banner.log.offline import ExportError, verify_export

from .test_offline_verify import PUBLIC, exported, records, rewrite  # noqa: F401 (a fixture)

Exported = tuple[Path, list[str], Any]


def first_record(lines: list[str]) -> int:
    return records(lines)[0]


def typed(lines: list[str], kind: str) -> int:
    return next(i for i, line in enumerate(lines) if line.startswith(f'{{"type":"{kind}"'))


def swap(line: str, old: str, new: str) -> str:
    assert line.count(old) == 1, (old, line)
    return line.replace(old, new)


# (which line, how it is re-spelled, what the refusal says): each verified before, reading the
# same stored text as the record's hash covers.
REFUSED = [
    pytest.param(
        first_record,
        lambda line: swap(line, '"action":"reject_all"', '"action":"accept_all","action":"reject_all"'),
        "the member 'action' appears twice",
        id="record-duplicate-member",
    ),
    pytest.param(
        first_record,
        lambda line: swap(
            line, '"services":{"plausible":true}', '"services":{"plausible":false,"plausible":true}'
        ),
        "the member 'plausible' appears twice",
        id="nested-duplicate-member",
    ),
    pytest.param(
        first_record,
        lambda line: swap(line, '"services":{"plausible":true}', '"services":{"plausible":1}'),
        "'services' must map each service to true or false",
        id="number-for-true",
    ),
    pytest.param(
        first_record,
        lambda line: swap(line, '"seq":1,', '"seq":true,'),
        "a record's 'seq' must be a whole number, not true",
        id="true-for-seq-1",
    ),
    pytest.param(
        first_record,
        lambda line: swap(line, '"seq":1,', '"seq":1.0,'),
        "a record's 'seq' must be a whole number, not 1.0",
        id="fraction-for-seq",
    ),
    pytest.param(
        first_record,
        lambda line: swap(
            line,
            '"granted":["necessary","analytics","marketing"]',
            '"granted":["necessary,analytics","marketing"]',
        ),
        "'granted' is not the list its stored text 'necessary,analytics,marketing' splits into",
        id="one-category-for-two",
    ),
    pytest.param(
        first_record,
        lambda line: swap(line, '"hash":', '"note":"approved by the DPO","hash":'),
        "a record has no member 'note'",
        id="unsigned-extra-member",
    ),
    pytest.param(
        lambda lines: typed(lines, "checkpoint"),
        lambda line: swap(line, '"seq":1,"count":1,', '"seq":"1","count":1,'),
        "a checkpoint line's 'seq' must be a whole number, not \"1\"",
        id="checkpoint-text-for-number",
    ),
    pytest.param(
        lambda lines: typed(lines, "checkpoint"),
        lambda line: swap(line, '"count":1,', '"count":2,'),
        "a checkpoint line's 'count' differs from its 'seq'",
        id="checkpoint-count-not-seq",
    ),
    pytest.param(
        lambda lines: typed(lines, "head"),
        lambda line: swap(line, '"type":"head",', '"type":"head","seq":1,'),
        "the member 'seq' appears twice",
        id="head-duplicate-member",
    ),
    pytest.param(
        lambda lines: typed(lines, "header"),
        lambda line: swap(line, '"complete":true', '"complete":1'),
        "a header line's 'complete' must be true or false, not 1",
        id="header-number-for-true",
    ),
    pytest.param(
        lambda lines: typed(lines, "version"),
        lambda line: swap(line, '"type":"version",', '"type":"version","extra":NaN,'),
        "NaN is not JSON",
        id="nan",
    ),
]


@pytest.mark.parametrize(("where", "respell", "refusal"), REFUSED)
def test_a_line_two_readers_could_read_apart_is_refused_by_its_line(
    exported: Exported,  # noqa: F811
    where: Any,
    respell: Any,
    refusal: str | None,
) -> None:
    """R22: a duplicate member (top level or nested), a number or text where the format has true or
    false, a whole number or a text, one category for two, a member the format has not (unsigned,
    yet shown by a reader), a checkpoint's count that is not its seq, NaN: refused, naming the line."""
    path, lines, in_db = exported
    assert verify_export(path, public_keys=PUBLIC).ok
    i = where(lines)
    changed = [*lines]
    changed[i] = respell(lines[i])
    assert changed[i] != lines[i]
    rewrite(path, changed)
    if refusal is None:
        result = verify_export(path, public_keys=PUBLIC)
        assert not result.ok and result.problem == "changed", result.message
        return
    with pytest.raises(ExportError) as e:
        verify_export(path, public_keys=PUBLIC)
    assert str(e.value).startswith(f"line {i + 1}: not a line of a log export ("), str(e.value)
    assert refusal in str(e.value), str(e.value)


def test_spelling_alone_is_the_same_record(exported: Exported) -> None:  # noqa: F811
    """R22: spaces (before the object too), another member order, \\u escapes of plain letters and
    CRLF line ends change no value any JSON reader sees: the export still verifies, with the same
    answer. (A typed line keeps its first 8 bytes, `{"type":`, by which the format tells it from a
    record.)"""
    path, lines, in_db = exported
    respelled = []
    for n, line in enumerate(lines):
        data = json.loads(line)
        kind = data.pop("type", None)
        if n % 2:
            data = dict(reversed(list(data.items())))
        text = json.dumps(data)  # ", " and ": " separators
        if kind is not None:  # a typed line still starts with the 8 bytes {"type": (the format's mark)
            text = f'{{"type":{json.dumps(kind)}, {text[1:]}'
        else:
            text = text.replace('"Firefox"', '"\\u0046irefox"')
            text = " " + text if n % 3 else text  # whitespace before the object too
        assert text != line.rstrip("\n")
        respelled.append(text + "\r\n")
    rewrite(path, respelled)
    result = verify_export(path, public_keys=PUBLIC)
    assert result.ok and result.message == in_db.message, result.message


def test_an_export_we_wrote_is_read_on_the_fast_path(
    exported: Exported,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every record line of our own export is exactly the exporter's spelling, so the strict reading
    (the cost of a second parse) is never taken for it."""
    path, _, in_db = exported

    def never(line: str) -> None:
        raise AssertionError(f"read strictly: {line[:60]}")

    monkeypatch.setattr(offline, "strict_record", never)
    result = verify_export(path, public_keys=PUBLIC)
    assert result.ok and result.message == in_db.message


def test_a_pins_file_refuses_a_duplicate_member_and_a_text_for_a_number(tmp_path: Path) -> None:
    """The auditor's own pins are read as strictly: a pinned head naming its seq twice is no pin."""
    from consent_banner.log.offline import read_pins

    pins = tmp_path / "pins.ndjson"
    pins.write_text('{"seq": 3, "hash": "aa", "seq": 4}\n')
    with pytest.raises(ExportError, match="line 1: .*the member 'seq' appears twice"):
        read_pins(pins)
    pins.write_text('{"type":"checkpoint","log_id":"x","seq":"3","hash":"aa","at":"t","mac":"m"}\n')
    with pytest.raises(ExportError, match="line 1: .*'seq' must be a whole number"):
        read_pins(pins)
