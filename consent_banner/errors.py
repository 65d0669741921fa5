"""Every error consent-banner raises on purpose, in one place.

ConsentBannerError
├── ConfigError          consent.toml (or a ConsentConfig built in Python) is invalid
├── MissingSecretKey     CONSENT_SECRET_KEYS is not set where a key is required
├── LogKeyError          a log signing or public key (CONSENT_LOG_SIGNING_KEY, --public-key) is malformed
├── DecisionError        a request to record a decision is refused (carries the HTTP status)
├── InvalidDecision      a decision the log cannot record (unknown action or source); a ValueError too
├── LogError             the consent log cannot be read or written
│   └── LogUnavailable   the log cannot serve a call right now: closed, unreachable, locked (503)
│       └── LogNeedsMigration  a writer found an older schema: run `consent-banner log migrate`
└── ScanError            `consent-banner scan` cannot run at all (browser, start page)
"""

from __future__ import annotations


class ConsentBannerError(Exception):
    """Base class of every error raised on purpose by consent-banner."""


class ConfigError(ConsentBannerError):
    """The configuration is invalid. `problems` lists "key.path: what is wrong" lines."""

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = problems
        self.source = source
        where = f"{source}: " if source else ""
        if len(problems) == 1:
            super().__init__(f"{where}{problems[0]}")
        else:
            super().__init__(f"{where}{len(problems)} problems:\n  " + "\n  ".join(problems))


class MissingSecretKey(ConsentBannerError):
    """No signing key: set CONSENT_SECRET_KEYS (comma-separated, newest last)."""


class LogKeyError(ConsentBannerError):
    """A log key given by the operator or auditor cannot be read: the message names where it came
    from (the variable, the file) and what is wrong, never the key itself."""


class DecisionError(ConsentBannerError):
    """A decision request is refused; `status` is the HTTP status to answer with. `reason` names the
    refusal for the metrics where the status alone does not (a 403 for the form's token)."""

    def __init__(self, status: int, message: str, *, reason: str | None = None) -> None:
        self.status = status
        self.message = message
        self.reason = reason
        super().__init__(message)


class InvalidDecision(ConsentBannerError, ValueError):
    """A Decision that cannot be logged (unknown action or source, malformed field)."""


class LogError(ConsentBannerError):
    """The consent log failed."""


class LogUnavailable(LogError):
    """The consent log cannot serve a call right now (closed, unreachable, locked): a decision is
    refused rather than acknowledged, a read answers 503. Retrying later may succeed."""


class LogNeedsMigration(LogUnavailable):
    """A writer opened a log whose schema is older than this release's. Only `consent-banner log
    migrate` changes a schema (run once, by whoever holds the rights to change tables); until then
    decisions answer 503. Readers (verify, export, the audit view) read older schemas as they are."""


class ScanError(ConsentBannerError):
    """The scan could not run at all: the browser would not start, or the start page failed to load
    (the message says which, and what the browser answered). The `scan` command exits 2 on it."""
