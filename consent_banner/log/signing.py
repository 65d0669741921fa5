"""The log's signatures: the HMAC by a key derived from a server key, and the Ed25519 message.

The head and every checkpoint carry an HMAC by the server key, and, when CONSENT_LOG_SIGNING_KEY
is set (keys.py), an Ed25519 signature anyone can check with the public key. Keys come from the
caller (the environment or the command line), never from the database: a signature whose key id
names no listed key proves nothing, or anyone could sign one.
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


ED25519_DOMAIN = "consent-banner/ed25519/1"


def ed25519_message(
    kind: str,
    log_id: str,
    seq: int,
    head_hash: str,
    at: str,
    n: int | None,
    prev: str,
    kid: str,
    prior_kid: str | None = None,
) -> bytes:
    """What an Ed25519 signature of the log covers: everything the HMAC (version 2) covers, and the
    signing key's id; a rotation checkpoint also names the key before it (`prior_kid`), and both
    keys sign this same message, so each vouches for the other.

    kind: "head" or "checkpoint/<reason>"; n: the checkpoint's place (None for the head); prev: the
    checkpoint chain before it (for the head: the chain's tip). Every field is drawn from an
    alphabet without "|" (hex, digits, ISO time, base64url, a fixed reason), so the joined text
    has one reading. Domain-separated from the HMAC messages (consent-banner/1, /2) and versioned.
    """
    fields = (ED25519_DOMAIN, kind, log_id, str(seq), head_hash, at, "" if n is None else str(n), prev)
    return "|".join((*fields, kid, prior_kid or "")).encode("ascii")
