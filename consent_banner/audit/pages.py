"""What every page of the audit view and the receipt shares: the templates and the response headers.

Pages are server-rendered (Jinja2, autoescaped) and self-contained: the only style is inline, allowed
by a per-response nonce, and nothing is fetched from anywhere else.
"""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.responses import Response

TEMPLATES = Path(__file__).parent.parent / "templates" / "audit"
env = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def plain_error(message: str, status: int) -> Response:
    return Response(
        message + "\n", status_code=status, media_type="text/plain", headers={"cache-control": "no-store"}
    )


def security_headers(nonce: str) -> dict[str, str]:
    return {
        "cache-control": "no-store",
        "content-security-policy": (
            f"default-src 'none'; style-src 'nonce-{nonce}'; img-src 'self' data:; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'"
        ),
        "referrer-policy": "no-referrer",
        "x-content-type-options": "nosniff",
        "x-frame-options": "DENY",
    }
