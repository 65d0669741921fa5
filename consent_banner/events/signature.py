"""Standard Webhooks signatures (https://www.standardwebhooks.com), with the standard library's hmac.

    webhook-signature: v1,<base64 of HMAC-SHA256(secret, "{webhook-id}.{webhook-timestamp}.{body}")>

The scheme is one HMAC, so no signing library: `standardwebhooks` (the specification's own package)
checks ours in the tests. The secret is the specification's `whsec_<base64>`, from the environment
variable a webhook's `secret_env` names, never from consent.toml.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os

from ..errors import ConfigError

PREFIX = "whsec_"
MIN_SECRET, MAX_SECRET = 24, 64  # bytes, as the specification recommends


def parse_secret(text: str, where: str) -> bytes:
    """The key bytes of a `whsec_<base64>` secret; ConfigError naming `where` (the variable and key)."""
    if not text.startswith(PREFIX):
        raise ConfigError([f"{where}: the secret must be in the form whsec_<base64> (Standard Webhooks)"])
    try:
        key = base64.b64decode(text[len(PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError([f"{where}: the part after whsec_ is not base64"]) from None
    if not MIN_SECRET <= len(key) <= MAX_SECRET:
        raise ConfigError(
            [f"{where}: the secret is {len(key)} bytes; use {MIN_SECRET} to {MAX_SECRET} random bytes"]
        )
    return key


def secret_from_env(variable: str, key_path: str) -> bytes:
    """The secret in environment variable `variable` (the webhook's `secret_env`, at `key_path`)."""
    where = f"{key_path} ({variable})"
    text = os.environ.get(variable, "").strip()
    if not text:
        raise ConfigError(
            [f"{where}: the environment variable {variable} is not set; it holds the webhook's whsec_ secret"]
        )
    return parse_secret(text, where)


def new_secret() -> str:
    """A new secret in the specification's form (32 random bytes)."""
    return PREFIX + base64.b64encode(os.urandom(32)).decode("ascii")


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value for one delivery."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode("ascii")


def headers(key: bytes, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers (and the body's type)."""
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(key, msg_id, timestamp, body),
    }
