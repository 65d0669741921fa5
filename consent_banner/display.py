"""Text shown to an operator: control characters escaped, passwords masked.

What the CLI prints and what the scanner reports carries data that others chose: paths and
origins from CSP reports any visitor can post, cookie names and storage keys from the pages a scan
visits, whatever someone with write access to the log's database put there. A terminal obeys the
escape sequences in such data (`ESC [8m` hides a row, `OSC 0` sets the window title, `OSC 8` plants
a link) and XML 1.0 forbids most C0 characters, so before any of it is shown `escape_controls`
writes C0 controls, DEL, C1 controls and the bidirectional overrides (which reorder a line as it is
displayed) as `\\uXXXX`. That is the JSON and TOML spelling of the same character, so a JSON or TOML
text passed through it stays valid and means the same values.

Files that are data (the CSV and NDJSON exports) keep the stored text as it is: `log verify
--file` recomputes the hash chain from them.
"""

from __future__ import annotations

import re

_CONTROLS = [*range(0x00, 0x20), *range(0x7F, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_ESCAPES = {c: f"\\u{c:04x}" for c in _CONTROLS}
_KEEP_NEWLINES = {c: e for c, e in _ESCAPES.items() if c != 0x0A}

# scheme://user:password@host, anywhere in a text (a message quoting a URL, the URL itself); the
# password runs to the last "@" before the path, as URL parsers read it.
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^\s/?#@:'\"]*:)[^\s/?#'\"]*@")
_QUERY_PASSWORD = re.compile(r"([?&](?:password|sslpassword)=)[^&#\s'\"]*", re.IGNORECASE)
MASK = "***"


def escape_controls(text: str, *, newlines: bool = False) -> str:
    """`text` without control characters: each written as `\\uXXXX`; with newlines=True a line
    feed stays (for a text whose lines this program made, such as a JSON document)."""
    return text.translate(_KEEP_NEWLINES if newlines else _ESCAPES)


def mask_passwords(text: str) -> str:
    """`text` with the password of every URL in it replaced by ***; works on malformed URLs too."""
    if "://" not in text and "password" not in text.lower():
        return text
    return _QUERY_PASSWORD.sub(rf"\g<1>{MASK}", _URL_PASSWORD.sub(rf"\g<1>{MASK}@", text))


def shown(text: object) -> str:
    """A message for an operator: passwords masked, control characters escaped."""
    return escape_controls(mask_passwords(str(text)))
