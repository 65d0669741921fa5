"""consent-banner: cookie consent enforced on the server, with a tamper-evident consent log."""

from .access import csp_nonce, get_consent, requires_consent
from .config import ConsentConfig
from .consent import Consent
from .errors import (
    ConfigError,
    ConsentBannerError,
    DecisionError,
    LogError,
    LogUnavailable,
    MissingSecretKey,
)
from .middleware import ConsentMiddleware

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "Consent",
    "ConsentBannerError",
    "ConsentConfig",
    "ConsentMiddleware",
    "DecisionError",
    "LogError",
    "LogUnavailable",
    "MissingSecretKey",
    "csp_nonce",
    "get_consent",
    "requires_consent",
]
