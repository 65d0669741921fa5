"""Ed25519 keys that sign the log's head and checkpoints, so anyone holding the public key verifies.

    CONSENT_LOG_SIGNING_KEY=ed25519:<base64url of the 32-byte seed>          (`keygen --log`)
    CONSENT_LOG_PUBLIC_KEYS=ed25519-pub:<base64url of the 32-byte public key>,...  (retired keys)

One line per key, because it lives in the environment (never the config file, never the
database): no newlines as in PEM, no commas (base64url has none), so a list splits like
CONSENT_SECRET_KEYS. The prefix names the algorithm and the half, so an HMAC secret pasted into
the wrong variable, or a private key into the public list, is refused instead of used. The seed is
RFC 8032's private key (a JWK's `d`); the public key is the JWK's `x`.

A key is named by its RFC 7638 JWK thumbprint (SHA-256 over {"crv","kty","x"}, base64url): any
JOSE library computes the same id, so a signed receipt (a JWS `kid`) can name the same key.
Auditors get public keys as PEM files (SubjectPublicKeyInfo), from `{prefix}/log-key` or
`consent-banner log pubkey`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..errors import LogKeyError

ENV_LOG_SIGNING_KEY = "CONSENT_LOG_SIGNING_KEY"
ENV_LOG_PUBLIC_KEYS = "CONSENT_LOG_PUBLIC_KEYS"
SIGNING_PREFIX = "ed25519:"
PUBLIC_PREFIX = "ed25519-pub:"


def b64url(data: bytes) -> str:
    """Base64url without padding (RFC 7515's spelling, as JWK and JWS use it)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def from_b64url(text: str) -> bytes:
    """The bytes of unpadded base64url; ValueError when it is not exactly that."""
    if not text or any(c not in _B64URL for c in text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


_B64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def thumbprint(raw_public: bytes) -> str:
    """The RFC 7638 JWK thumbprint of an Ed25519 public key: the key id."""
    jwk = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": b64url(raw_public)}, separators=(",", ":"))
    return b64url(hashlib.sha256(jwk.encode("ascii")).digest())


@dataclass(frozen=True)
class PublicKey:
    """An Ed25519 public key and its id."""

    raw: bytes  # the 32 bytes of RFC 8032
    kid: str = field(init=False)
    _key: Ed25519PublicKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.raw) != 32:
            raise ValueError("an Ed25519 public key is 32 bytes")
        object.__setattr__(self, "_key", Ed25519PublicKey.from_public_bytes(self.raw))
        object.__setattr__(self, "kid", thumbprint(self.raw))

    def verify(self, signature: str | None, message: bytes) -> bool:
        """Whether `signature` (base64url) is this key's signature of `message`."""
        if not signature:
            return False
        try:
            self._key.verify(from_b64url(signature), message)
        except (InvalidSignature, ValueError):
            return False
        return True

    def pem(self) -> str:
        return self._key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")

    def line(self) -> str:
        """The one-line form CONSENT_LOG_PUBLIC_KEYS lists."""
        return PUBLIC_PREFIX + b64url(self.raw)

    def jwk(self) -> dict[str, str]:
        """The public JWK (RFC 8037), `kid` its thumbprint; `use` and `alg` say what it is for."""
        return {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": b64url(self.raw),
            "kid": self.kid,
            "use": "sig",
            "alg": "EdDSA",
        }


@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 private key: signs log statements (and, later, receipts) under its public key's id."""

    seed: bytes = field(repr=False)
    public: PublicKey = field(init=False)
    _key: Ed25519PrivateKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.seed) != 32:
            raise ValueError("an Ed25519 private key (seed) is 32 bytes")
        key = Ed25519PrivateKey.from_private_bytes(self.seed)
        object.__setattr__(self, "_key", key)
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        object.__setattr__(self, "public", PublicKey(raw))

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(os.urandom(32))

    @property
    def kid(self) -> str:
        return self.public.kid

    def sign(self, message: bytes) -> str:
        """The Ed25519 signature of `message`, base64url (86 characters)."""
        return b64url(self._key.sign(message))

    def line(self) -> str:
        """The one-line form CONSENT_LOG_SIGNING_KEY holds."""
        return SIGNING_PREFIX + b64url(self.seed)


def parse_signing_key(text: str, where: str = ENV_LOG_SIGNING_KEY) -> SigningKey:
    """A signing key from its line; LogKeyError naming `where` (never the key) when it is not one."""
    text = text.strip()
    if text.startswith(PUBLIC_PREFIX):
        raise LogKeyError(
            f"{where}: this is a public key ({PUBLIC_PREFIX}...); "
            f"the signing key starts with {SIGNING_PREFIX}"
        )
    if not text.startswith(SIGNING_PREFIX):
        raise LogKeyError(
            f"{where}: a log signing key starts with {SIGNING_PREFIX!r} "
            "(make one with `consent-banner keygen --log`)"
        )
    try:
        return SigningKey(from_b64url(text[len(SIGNING_PREFIX) :]))
    except (ValueError, binascii.Error):
        raise LogKeyError(f"{where}: not {SIGNING_PREFIX}<base64url of 32 bytes>") from None


def parse_public_key(text: str, where: str) -> PublicKey:
    """A public key from its line (ed25519-pub:...) or a PEM block; LogKeyError naming `where`."""
    text = text.strip()
    if text.startswith(SIGNING_PREFIX):
        raise LogKeyError(
            f"{where}: this is a private signing key; "
            "list its public key (`consent-banner log pubkey --line`)"
        )
    if text.startswith(PUBLIC_PREFIX):
        try:
            return PublicKey(from_b64url(text[len(PUBLIC_PREFIX) :]))
        except (ValueError, binascii.Error):
            raise LogKeyError(f"{where}: not {PUBLIC_PREFIX}<base64url of 32 bytes>") from None
    if "-----BEGIN" in text:
        if "PRIVATE KEY-----" in text:
            raise LogKeyError(f"{where}: this is a private key; give the public key (PEM, BEGIN PUBLIC KEY)")
        try:
            key = serialization.load_pem_public_key(text.encode("ascii"))
        except (ValueError, UnicodeEncodeError) as e:
            raise LogKeyError(f"{where}: not a PEM public key ({e})") from None
        if not isinstance(key, Ed25519PublicKey):
            raise LogKeyError(f"{where}: not an Ed25519 public key")
        return PublicKey(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    raise LogKeyError(f"{where}: not a public key (PEM, or {PUBLIC_PREFIX}<base64url>)")


_PEM_BEGIN = re.compile(r"-----BEGIN ([A-Z ]{1,64})-----")
MAX_KEY_FILE_BYTES = 1024 * 1024  # a key file is a few hundred bytes; `{prefix}/log-key`'s, one per key


def _pem_blocks(text: str, where: str) -> list[str]:
    """The PEM blocks of `text`, each BEGIN line to its END line, found in one pass (a lazy pattern
    with a back reference searched to the end from every BEGIN: quadratic in a hostile file)."""
    blocks: list[str] = []
    at = 0
    while begin := _PEM_BEGIN.search(text, at):
        end_line = f"-----END {begin.group(1)}-----"
        end = text.find(end_line, begin.end())
        if end < 0:
            raise LogKeyError(f"{where}: a PEM block without its END line ({end_line})")
        at = end + len(end_line)
        blocks.append(text[begin.start() : at])
    return blocks


def parse_public_keys(text: str, where: str) -> list[PublicKey]:
    """Every public key in `text`: PEM blocks (text between them, as `{prefix}/log-key` writes
    `# key id` lines, is explanatory text RFC 7468 allows), else one key line."""
    blocks = _pem_blocks(text, where)
    if not blocks:
        return [parse_public_key(text, where)]
    return [
        parse_public_key(b, f"{where} (key {i})" if len(blocks) > 1 else where)
        for i, b in enumerate(blocks, 1)
    ]


def read_public_key_files(paths: Iterable[Path | str]) -> list[PublicKey]:
    """Public keys from PEM files (`--public-key`, each file one key or several); LogKeyError naming
    the file."""
    keys: list[PublicKey] = []
    for path in paths:
        try:
            with open(path, "rb") as f:  # bounded: the arguments swapped, an export is gigabytes
                data = f.read(MAX_KEY_FILE_BYTES + 1)
            text = data.decode("ascii")
        except (OSError, UnicodeDecodeError) as e:
            raise LogKeyError(f"--public-key {path}: cannot read it ({e})") from None
        if len(data) > MAX_KEY_FILE_BYTES:
            raise LogKeyError(
                f"--public-key {path}: larger than {MAX_KEY_FILE_BYTES} bytes: not a public key file"
            )
        keys.extend(parse_public_keys(text, f"--public-key {path}"))
    return keys


@dataclass(frozen=True)
class LogKeys:
    """The log's Ed25519 keys: those this server signs with (newest last: the newest signs; an older
    one held privately signs a rotation checkpoint with it) and every public key a signature is
    checked against (the signers' and the retired ones'), by id."""

    signers: tuple[SigningKey, ...] = ()
    retired: tuple[PublicKey, ...] = ()

    @property
    def signer(self) -> SigningKey | None:
        return self.signers[-1] if self.signers else None

    @property
    def public(self) -> dict[str, PublicKey]:
        """Every key id -> public key: the retired first, then the signers (the newest last)."""
        keys = {k.kid: k for k in self.retired}
        keys.update((s.kid, s.public) for s in self.signers)
        return keys

    def held(self, kid: str | None) -> SigningKey | None:
        """The private key of `kid`, when this server holds it."""
        return next((s for s in self.signers if s.kid == kid), None)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LogKeys:
        """From CONSENT_LOG_SIGNING_KEY (comma-separated, newest last) and CONSENT_LOG_PUBLIC_KEYS.

        Neither set: no Ed25519 keys (the log keeps its HMAC signatures only)."""
        env = os.environ if environ is None else environ
        signers = _split(env.get(ENV_LOG_SIGNING_KEY, ""))
        retired = _split(env.get(ENV_LOG_PUBLIC_KEYS, ""))
        return cls(
            tuple(parse_signing_key(t, f"{ENV_LOG_SIGNING_KEY} #{i}") for i, t in enumerate(signers, 1)),
            tuple(parse_public_key(t, f"{ENV_LOG_PUBLIC_KEYS} #{i}") for i, t in enumerate(retired, 1)),
        )

    def jwks(self) -> dict[str, Any]:
        """The JWK Set of every public key, the one that signs now first, with `status` current|retired."""
        current = self.signer.kid if self.signer else None
        keys = sorted(self.public.values(), key=lambda k: k.kid != current)
        return {"keys": [{**k.jwk(), "status": "current" if k.kid == current else "retired"} for k in keys]}

    def pem(self) -> str:
        """Every public key as PEM blocks, the one that signs now first, each after a `# key id` line."""
        current = self.signer.kid if self.signer else None
        keys = sorted(self.public.values(), key=lambda k: k.kid != current)
        return "".join(
            f"# key id {k.kid} ({'current' if k.kid == current else 'retired'})\n{k.pem()}" for k in keys
        )


def _split(value: str) -> Sequence[str]:
    return [t.strip() for t in value.split(",") if t.strip()]
