"""consent_banner/display.py: how untrusted text and secrets are shown to an operator."""

from __future__ import annotations

import json
import tomllib

import pytest

from consent_banner.display import escape_controls, mask_passwords, shown


def test_every_control_character_is_escaped_and_printable_text_is_kept() -> None:
    controls = "".join(map(chr, [*range(0x20), *range(0x7F, 0xA0), 0x202E, 0x2066]))
    escaped = escape_controls("é ü 日本 " + controls)
    assert escaped.startswith("é ü 日本 \\u0000\\u0001")
    assert escaped.isprintable()
    assert escape_controls("a\nb", newlines=True) == "a\nb"
    assert escape_controls("a\nb") == "a\\u000ab"


def test_escaped_json_and_toml_still_mean_the_same_values() -> None:
    """The \\uXXXX spelling is JSON's and TOML's: a document passed through stays valid and equal."""
    value = "k\x1b]0;t\x07\x7f\x9b\u202e"
    as_json = escape_controls(json.dumps({"key": value}, ensure_ascii=False, indent=2), newlines=True)
    assert json.loads(as_json) == {"key": value}
    as_toml = escape_controls(f"key = {json.dumps(value, ensure_ascii=False)}")
    assert tomllib.loads(as_toml) == {"key": value}


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("postgresql://bob:s3cret@db:5432/x", "postgresql://bob:***@db:5432/x"),
        (
            "log: 'postgres://bob:p@ss:w0rd@[::1/x': Invalid IPv6 URL",
            "log: 'postgres://bob:***@[::1/x': Invalid IPv6 URL",
        ),
        (
            "postgresql://bob@db/x?sslmode=require&password=s3cret",
            "postgresql://bob@db/x?sslmode=require&password=***",
        ),
        ("postgresql://db:5432/x", "postgresql://db:5432/x"),
        ("sqlite:///var/lib/consent.db", "sqlite:///var/lib/consent.db"),
    ],
)
def test_passwords_in_urls_are_masked_even_in_malformed_ones(text: str, masked: str) -> None:
    assert mask_passwords(text) == masked


def test_a_message_is_masked_and_escaped() -> None:
    assert shown("cannot open postgresql://u:pw@h/x\x1b[2J") == "cannot open postgresql://u:***@h/x\\u001b[2J"
