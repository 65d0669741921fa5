"""The audit view and the receipt read a consent log: the log tests' fixtures (a log on each backend,
decisions to append) are shared from there rather than written twice."""

from __future__ import annotations

from ..log.conftest import decision, log, log_url

__all__ = ["decision", "log", "log_url"]
