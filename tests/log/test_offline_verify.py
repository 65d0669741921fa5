"""Offline verification: an NDJSON export checked with the log's public key alone (no database, no
secret), and every kind of tampering with the file named at its first bad record. R22."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from consent_banner.log import Decision, open_log, record_hash
from consent_banner.log.checkpoints import Checkpoint
from consent_banner.log.export import stream_export
from consent_banner.log.keys import LogKeys, SigningKey
from consent_banner.log.offline import read_pins, verify_export

from .conftest import KEY

MakeDecision = Callable[..., Decision]
LOG_KEY = SigningKey(bytes(range(32)))  # fixed, so a failure names the same key id every run
OTHER_KEY = SigningKey(bytes(range(1, 33)))
PUBLIC = {LOG_KEY.kid: LOG_KEY.public}


async def signed_log(log_url: str, decision: MakeDecision, n: int = 25, **options: Any) -> Any:
    """A log signed with LOG_KEY: n decisions, a periodic checkpoint every 10 records."""
    lg = await open_log(log_url, hmac_key=KEY, log_keys=LogKeys((LOG_KEY,)), checkpoint_every=10, **options)
    for i in range(n):
        await lg.append(
            decision(consent_id=f"visitor-{i:014d}", action="accept_all" if i % 2 else "reject_all")
        )
    return lg


async def export_to(lg: Any, path: Path) -> list[str]:
    """`log export --format ndjson` of the whole log, written to `path`; its lines."""
    with open(path, "w", encoding="utf-8", newline="") as f:
        async for text in stream_export(lg.export_chunks(), await lg.schema_version()):
            f.write(text)
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


@pytest.fixture
async def exported(log_url: str, decision: MakeDecision, tmp_path: Path) -> tuple[Path, list[str], Any]:
    lg = await signed_log(log_url, decision)
    try:
        path = tmp_path / "log.ndjson"
        lines = await export_to(lg, path)
        return path, lines, await lg.verify()
    finally:
        await lg.close()


def records(lines: list[str]) -> list[int]:
    """The indexes of the record lines (a record line starts with {"seq":)."""
    return [i for i, line in enumerate(lines) if line.startswith('{"seq":')]


def rewrite(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(lines), encoding="utf-8")
    return path


async def test_export_verifies_offline_with_only_the_public_key(
    exported: tuple[Path, list[str], Any],
) -> None:
    """R22: the whole chain, the checkpoints and the head's Ed25519 signature, from the file and
    the public key alone; the same answer as `log verify` over the database."""
    path, lines, in_db = exported
    result = verify_export(path, public_keys=PUBLIC)
    assert result.ok, result.message
    assert result.message == in_db.message and result.records == 25
    assert result.checkpoints >= 2  # the periodic checkpoints at 10 and 20 were compared with the chain
    assert (
        result.signatures == f"signatures: Ed25519, log key {LOG_KEY.kid} (checked with the public key alone)"
    )
    kinds = [json.loads(line).get("type") for line in lines if line.startswith('{"type":')]
    assert kinds[0] == "header" and kinds[-1] == "head" and "checkpoint" in kinds and "version" in kinds
    assert len(records(lines)) == 25 and records(lines) == list(range(len(lines) - 25, len(lines)))


async def test_record_lines_are_as_before(exported: tuple[Path, list[str], Any], log_url: str) -> None:
    """The record lines are byte for byte what a record line was before schema 4 (ndjson_line)."""
    from consent_banner.log.export import ndjson_line

    path, lines, _ = exported
    lg = await open_log(log_url, hmac_key=None, create=False)
    try:
        rows = [r async for r in lg.iter_rows()]
    finally:
        await lg.close()
    assert [lines[i] for i in records(lines)] == [ndjson_line(r) for r in rows]


def _edit(lines: list[str], i: int, **changes: Any) -> list[str]:
    data = json.loads(lines[i])
    data.update(changes)
    return [*lines[:i], json.dumps(data, separators=(",", ":")) + "\n", *lines[i + 1 :]]


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        ("edit", "record 5: changed"),
        ("drop", "record 5: missing: record 5 is missing (deleted)"),
        ("reorder", "record 6: reordered: it links to record 5, which comes after it"),
        ("insert", "record 5: inserted"),
        ("drop-last", "record 25: missing"),
    ],
)
async def test_tampered_records_are_named(
    exported: tuple[Path, list[str], Any], tamper: str, expected: str
) -> None:
    """R22: an edited field, a dropped line, two lines swapped, a record inserted (its hash
    recomputed, so only its link gives it away), the last record cut off: each named."""
    path, lines, _ = exported
    at = records(lines)
    r5 = at[4]
    if tamper == "edit":
        lines = _edit(lines, r5, granted=["necessary"], denied=["analytics", "marketing"])
    elif tamper == "drop":
        lines = lines[:r5] + lines[r5 + 1 :]
    elif tamper == "reorder":
        lines[r5], lines[r5 + 1] = lines[r5 + 1], lines[r5]
    elif tamper == "insert":
        forged = json.loads(lines[r5])
        forged.update(consent_id="forged-000000000000", prev_hash=forged["hash"])
        columns = [
            forged["at"], forged["consent_id"], forged["action"], ",".join(forged["granted"]),
            ",".join(forged["denied"]), json.dumps(forged["services"], separators=(",", ":"), sort_keys=True),
            forged["revision"], forged["language"], forged["source"], forged["version_id"], forged["ip"],
            forged["browser"], None,
        ]  # fmt: skip
        forged["hash"] = record_hash(forged["prev_hash"], columns)
        forged["seq"] = 6
        lines = [*lines[: r5 + 1], json.dumps(forged, separators=(",", ":")) + "\n", *lines[r5 + 1 :]]
    else:
        lines = lines[:-1]
    result = verify_export(rewrite(path, lines), public_keys=PUBLIC)
    assert not result.ok
    assert result.message.startswith(expected), result.message


async def test_a_checkpoint_forged_with_another_key_is_named(exported: tuple[Path, list[str], Any]) -> None:
    """R22: a checkpoint signed by a key the auditor did not list fails, naming that key's id."""
    path, lines, _ = exported
    i = next(i for i, line in enumerate(lines) if '"type":"checkpoint"' in line)
    cp = Checkpoint.from_json(json.loads(lines[i]))
    forged = Checkpoint(cp.log_id, cp.seq, "f" * 64, cp.at, cp.reason, cp.key_id, cp.mac, cp.n, cp.prev)
    forged = Checkpoint(**{**forged.__dict__, "sig_key_id": OTHER_KEY.kid})
    forged = Checkpoint(**{**forged.__dict__, "sig": OTHER_KEY.sign(forged.ed25519_message())})
    lines[i] = json.dumps({"type": "checkpoint", **forged.to_json()}, separators=(",", ":")) + "\n"
    result = verify_export(rewrite(path, lines), public_keys=PUBLIC)
    assert not result.ok and result.problem == "signature"
    assert OTHER_KEY.kid in result.message and "not listed" in result.message


async def test_a_checkpoint_whose_signature_was_removed_is_named(
    exported: tuple[Path, list[str], Any],
) -> None:
    path, lines, _ = exported
    i = [i for i, line in enumerate(lines) if '"type":"checkpoint"' in line][-1]
    data = json.loads(lines[i])
    del data["sig"], data["sig_key_id"]
    lines[i] = json.dumps(data, separators=(",", ":")) + "\n"
    result = verify_export(rewrite(path, lines), public_keys=PUBLIC)
    assert (
        not result.ok and result.problem == "signature" and "carries no Ed25519 signature" in result.message
    )


async def test_a_changed_checkpoint_fails_its_signature(exported: tuple[Path, list[str], Any]) -> None:
    path, lines, _ = exported
    i = next(i for i, line in enumerate(lines) if '"type":"checkpoint"' in line)
    lines = _edit(lines, i, hash="0" * 64)
    result = verify_export(rewrite(path, lines), public_keys=PUBLIC)
    assert not result.ok and result.problem == "signature" and "does not match" in result.message


async def test_a_head_from_another_log_is_named(
    exported: tuple[Path, list[str], Any], decision: MakeDecision, tmp_path: Path
) -> None:
    """R22: the signed head of another log (same key, same length) does not pass for this one's."""
    path, lines, _ = exported
    other = await signed_log(f"sqlite:///{tmp_path / 'other.db'}", decision)
    try:
        other_lines = await export_to(other, tmp_path / "other.ndjson")
    finally:
        await other.close()
    head = next(line for line in other_lines if '"type":"head"' in line)
    lines = [head if '"type":"head"' in line else line for line in lines]
    result = verify_export(rewrite(path, lines), public_keys=PUBLIC)
    assert not result.ok and result.problem == "signature" and "another log" in result.message


async def test_an_export_without_its_head_fails_with_the_public_key(
    exported: tuple[Path, list[str], Any],
) -> None:
    """Dropping the head line (or every typed line) leaves nothing the public key checks: it fails."""
    path, lines, _ = exported
    no_head = [line for line in lines if '"type":"head"' not in line]
    result = verify_export(rewrite(path, no_head), public_keys=PUBLIC)
    assert not result.ok and result.message == "missing: the head row is missing"
    bare = [lines[i] for i in records(lines)]
    result = verify_export(rewrite(path, bare), public_keys=PUBLIC)
    assert not result.ok and result.problem == "signature" and "no signed head" in result.message


async def test_the_head_signature_is_checked(exported: tuple[Path, list[str], Any]) -> None:
    path, lines, _ = exported
    i = next(i for i, line in enumerate(lines) if '"type":"head"' in line)
    resigned = _edit(lines, i, sig=OTHER_KEY.sign(b"anything"))
    result = verify_export(rewrite(path, resigned), public_keys=PUBLIC)
    assert not result.ok and result.problem == "signature" and "does not match" in result.message
    only_other = {OTHER_KEY.kid: OTHER_KEY.public}
    result = verify_export(rewrite(path, lines), public_keys=only_other)
    assert not result.ok and LOG_KEY.kid in result.message and "not listed" in result.message


async def test_pinned_heads_catch_a_rewritten_history(
    exported: tuple[Path, list[str], Any], tmp_path: Path
) -> None:
    """R22, --pins: a head an auditor kept (an earlier export's head line, or seq and hash) must be on
    the chain; a pinned head that is not = the history was rewritten."""
    path, lines, _ = exported
    r10 = json.loads(lines[records(lines)[9]])
    pins = tmp_path / "pins.ndjson"
    pins.write_text(json.dumps({"seq": 10, "hash": r10["hash"]}) + "\n")
    assert verify_export(path, public_keys=PUBLIC, pins=read_pins(pins)).ok
    pins.write_text(json.dumps({"seq": 10, "hash": "e" * 64}) + "\n")
    result = verify_export(path, public_keys=PUBLIC, pins=read_pins(pins))
    assert not result.ok and result.bad_seq == 10 and result.problem == "rewritten"
    head = next(line for line in lines if '"type":"head"' in line)
    later = json.loads(head)
    later["seq"] += 5  # a head the auditor saw later than this copy: the copy was rolled back
    pins.write_text(head + json.dumps(later) + "\n")
    result = verify_export(path, public_keys=PUBLIC, pins=read_pins(pins))
    assert not result.ok and result.problem == "missing" and "cut off" in result.message


def test_a_malformed_export_is_named_by_its_line(tmp_path: Path) -> None:
    from consent_banner.log.offline import ExportError

    bad = tmp_path / "bad.ndjson"
    bad.write_text(
        '{"type":"header","format":"consent-banner/log-export","version":2,"log_id":"x"}\n{"seq":1}\n'
    )
    with pytest.raises(ExportError, match=r"line 2: not a line of a log export \('detail' is missing\)"):
        verify_export(bad, public_keys=PUBLIC)
