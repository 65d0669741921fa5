"""The auditor's view of the consent log, and the visitor's receipt.

`build_audit_app(config, log)` returns an ASGI app to mount at `{prefix}/audit`, or None when no
credentials are configured (the middleware then answers 404: the routes do not exist). R25.
Credentials come from the environment only (`credentials.py`):

    CONSENT_AUDIT_USER + CONSENT_AUDIT_PASSWORD   HTTP Basic
    CONSENT_AUDIT_TOKEN                           Authorization: Bearer <token>

Wrong or missing credentials get 401; comparisons are constant-time. Pages are server-rendered
(Jinja2, autoescaped), the charts are inline SVG (`charts.py`): nothing is fetched from anywhere else.

`receipt(request, consent, log, banner)` answers `GET {prefix}/receipt` (`receipt.py`): the records of
the caller's own consent id (from their verified cookie), as HTML or JSON, and nobody else's. R24.
With a log signing key it is also a compact JWS (`?format=jws`, `signed_receipt.py`) that anyone
checks with the site's public key: `consent-banner receipt verify` (`receipt_commands.py`).
"""

from __future__ import annotations

from .charts import ACTION_COLORS, acceptance_chart, chart_period, daily_chart
from .credentials import Credentials, FailedLogins
from .receipt import receipt
from .view import AuditView, build_audit_app

__all__ = [
    "ACTION_COLORS",
    "AuditView",
    "Credentials",
    "FailedLogins",
    "acceptance_chart",
    "build_audit_app",
    "chart_period",
    "daily_chart",
    "receipt",
]
