"""The banner form's token (R34): what lets a form post without JavaScript record a decision.

A visitor gets a random form-token cookie (HttpOnly, SameSite=Strict) with their first HTML page; the
banner's form carries a token signed from that value, and a form post counts only when its token is
exactly the one issued for the cookie the request carries. Another site can make the browser post the
form, but cannot read the cookie or the page, so it cannot know the token. JSON posts from the script
need none: the origin checks (`request_checks.py`) stop those from other sites.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence

from itsdangerous import BadSignature, Signer

from .config import CookieSettings
from .visitor import set_cookie_header

SALT = "consent-banner.csrf"
FORM_FIELD = "csrf"  # the form field that carries the token


class FormTokens:
    """Issues and checks form tokens, signed with the middleware's keys (the newest signs)."""

    __slots__ = ("_signer", "_settings")

    def __init__(self, keys: Sequence[str], settings: CookieSettings) -> None:
        self._signer = Signer(list(keys), salt=SALT, digest_method=hashlib.sha256)
        self._settings = settings

    @staticmethod
    def new_value() -> str:
        """A fresh value for a visitor's form-token cookie."""
        return secrets.token_urlsafe(16)

    def token(self, cookie_value: str) -> str:
        """The token a form carries for a visitor holding the form-token cookie `cookie_value`."""
        return self._signer.sign(cookie_value).decode()

    def valid(self, token: str, cookie_value: str | None) -> bool:
        """Whether a posted `token` is the one issued for the cookie the request carries."""
        if not cookie_value or not token:
            return False
        try:
            value = self._signer.unsign(token).decode()
        except (BadSignature, UnicodeDecodeError):
            return False
        # Only the exact token issued counts (itsdangerous would also take a padded signature).
        return secrets.compare_digest(value, cookie_value) and secrets.compare_digest(
            token, self.token(cookie_value)
        )

    def set_cookie(self, name: str, value: str) -> str:
        """The Set-Cookie of a new form-token cookie: for this session, script-proof, same-site only."""
        return set_cookie_header(
            name, value, self._settings, max_age=None, http_only=True, same_site="strict"
        )
