"""The log's keys and signatures: an HMAC key derived from a server key, named by a short id.

The head and every checkpoint carry an HMAC by the server key. Keys come from the caller (the
environment or the command line), never from the database: a signature whose key id names no
listed key proves nothing, or anyone could sign one.
"""

from __future__ import annotations

import hashlib
import hmac

CHECKPOINT_KEY_INFO = b"consent-banner.log.checkpoint.v1"


def derive_hmac_key(secret_key: str | bytes) -> bytes:
    """The log's HMAC key from a server signing key (CONSENT_SECRET_KEYS, newest last).

    A derived key, not the cookie key itself, so a log signature can never be replayed as a
    cookie signature or the other way round.
    """
    raw = secret_key.encode() if isinstance(secret_key, str) else secret_key
    return hmac.new(raw, CHECKPOINT_KEY_INFO, hashlib.sha256).digest()


def key_id(key: bytes) -> str:
    """A short public name of an HMAC key, so verify can say which key signed."""
    return hashlib.sha256(b"consent-banner.key-id\x00" + key).hexdigest()[:16]


def sign(
    key: bytes,
    kind: str,
    log_id: str,
    seq: int,
    head_hash: str,
    at: str,
    *,
    n: int | None = None,
    prev: str | None = None,
) -> str:
    """The HMAC of one signed statement about the log ("head", "checkpoint/<reason>")."""
    if prev is None:  # the previous release's message, kept so its signatures still verify
        msg = f"consent-banner/1|{kind}|{log_id}|{seq}|{head_hash}|{at}"
    else:
        msg = f"consent-banner/2|{kind}|{log_id}|{seq}|{head_hash}|{at}|{n if n is not None else ''}|{prev}"
    return hmac.new(key, msg.encode(), hashlib.sha256).hexdigest()


def head_mac(key: bytes, log_id: str, seq: int, head_hash: str, at: str, checkpoints: str | None) -> str:
    """The head's signature: from schema 2 on it covers the checkpoint chain's tip too (None: the
    previous release's head, which did not)."""
    return sign(key, "head", log_id, seq, head_hash, at, prev=checkpoints)
