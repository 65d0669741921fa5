"""docs/export-format.md is precise enough to verify with: its worked example verifies with our
verifier and with the independent one the document writes out, and both refuse it changed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature

from consent_banner.log.keys import parse_public_keys
from consent_banner.log.offline import verify_export

DOC = Path(__file__).resolve().parents[2] / "docs" / "export-format.md"


def block(lang: str) -> str:
    (found,) = re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    return str(found)


def doc_verifier() -> Any:
    namespace: dict[str, Any] = {}
    exec(compile(block("python"), str(DOC), "exec"), namespace)  # the document's own code, as written
    return namespace["verify"]


def test_the_documented_example_verifies_with_ours_and_the_documents_verifier(tmp_path: Path) -> None:
    export, pem = block("ndjson"), block("pem")
    (tmp_path / "export.ndjson").write_text(export)
    public = {k.kid: k for k in parse_public_keys(pem, "doc")}
    ours = verify_export(tmp_path / "export.ndjson", public_keys=public)
    assert ours.ok, ours.message
    assert ours.records == 2 and ours.checkpoints == 2
    assert doc_verifier()(export, pem) == ours.message


@pytest.mark.parametrize(
    ("old", "new"),
    [('"action":"reject_all"', '"action":"accept_all"'), ('"reason":"periodic"', '"reason":"purge"')],
)
def test_the_documented_example_changed_fails_both(tmp_path: Path, old: str, new: str) -> None:
    export, pem = block("ndjson"), block("pem")
    changed = export.replace(old, new, 1)
    assert changed != export
    (tmp_path / "export.ndjson").write_text(changed)
    public = {k.kid: k for k in parse_public_keys(pem, "doc")}
    assert not verify_export(tmp_path / "export.ndjson", public_keys=public).ok
    with pytest.raises((AssertionError, InvalidSignature)):
        doc_verifier()(changed, pem)


def test_a_duplicate_member_is_refused_by_both(tmp_path: Path) -> None:
    """The Strictness section, in both verifiers: a record line naming its action twice (the last one
    the signed one, as Python's json reads it) is refused, not read as either."""
    from consent_banner.log.offline import ExportError

    export, pem = block("ndjson"), block("pem")
    changed = export.replace('"action":"reject_all"', '"action":"accept_all","action":"reject_all"', 1)
    assert changed != export
    (tmp_path / "export.ndjson").write_text(changed)
    public = {k.kid: k for k in parse_public_keys(pem, "doc")}
    with pytest.raises(ExportError, match="line 7: .*the member 'action' appears twice"):
        verify_export(tmp_path / "export.ndjson", public_keys=public)
    with pytest.raises(AssertionError, match="a member appears twice"):
        doc_verifier()(changed, pem)
