"""The signed receipt: a visitor's records as a compact JWS anyone holding the log's public key verifies.

    header   {"alg": "EdDSA", "kid": <the log key's id>, "typ": "consent-receipt+jwt"}
    payload  {"iss": <the site's origin>, "sub": <consent id>, "iat": <seconds>, "log_id": ...,
              "log_key": <URL of {prefix}/log-key>, "records": [<record as the JSON receipt has it>...]}

Signed with the log's Ed25519 key (CONSENT_LOG_SIGNING_KEY, `log/keys.py`) by PyJWT: `alg` EdDSA is
what the published JWK names and what JOSE verifiers accept (RFC 9864's "Ed25519" is its newer name;
few verifiers know it yet). `kid` is the key's RFC 7638 thumbprint, the id `{prefix}/log-key` lists it
under, so a retired key still names its receipts. The payload is a JWT claims set (`iss`, `sub`, `iat`);
`typ` says which kind of JWT (RFC 8725 §3.11, explicit typing), so nothing that accepts JWTs signed by
the same key can take a receipt for a login token, and a receipt verifier refuses any other JWT. The
same key signs the log's heads and checkpoints, but those messages start with "consent-banner/ed25519/1|"
and a JWS signing input with base64url of "{": neither can pass for the other.

Verification trusts nothing the token says about keys: the key is picked by `kid` among the keys the
verifier was given (or fetched, and said so), and a header carrying a key (`jwk`, `jku`, `x5c`, `x5u`)
is refused outright: our receipts never carry one, so such a token was made to be checked against the
key inside it. Each refusal names its reason (`ReceiptInvalid.reason`).
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..log import LoggedRecord
from ..log.chain import record_hash
from ..log.keys import PublicKey, SigningKey, from_b64url

MEDIA_TYPE = "application/jose"  # RFC 7515 §9.2.1: the compact serialization
TYP = "consent-receipt+jwt"
ALG = "EdDSA"
FILENAME = "consent-receipt.jws"
MAX_TOKEN_BYTES = 4 * 1024 * 1024  # a receipt file larger than this is not one of ours
# Header parameters that carry or point at a key: a verifier that used them would check the token
# against a key its maker chose.
KEY_HEADERS = ("jwk", "jku", "x5c", "x5u")
LAST_SECOND = 253402300800  # 10000-01-01: an `iat` past it is no time a receipt was issued

_JWS = jwt.PyJWS(algorithms=[ALG])  # the only algorithm it will ever sign or verify with


class ReceiptInvalid(Exception):
    """The token is not a valid receipt; `reason` says why in one line (shown to the user as it is)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def receipt_claims(
    *,
    issuer: str,
    consent_id: str,
    log_id: str,
    log_key_url: str,
    records: Sequence[LoggedRecord],
    issued_at: int,
) -> dict[str, Any]:
    """The payload: who issues it, whose records, and each record whole (its hash recomputes from it).

    A record keeps every column its hash covers (as the JSON receipt has it, the consent id said once
    as `sub`), so the verifier recomputes each hash and an auditor finds the same hash at the same
    position in the log's export."""
    return {
        "iss": issuer,
        "sub": consent_id,
        "iat": issued_at,
        "log_id": log_id,
        "log_key": log_key_url,
        "records": [{k: v for k, v in r.to_json().items() if k != "consent_id"} for r in records],
    }


def sign_receipt(claims: Mapping[str, Any], key: SigningKey) -> str:
    """The compact JWS of `claims`, signed by `key` and naming it by its id."""
    payload = json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    private = Ed25519PrivateKey.from_private_bytes(key.seed)
    return _JWS.encode(payload, private, algorithm=ALG, headers={"kid": key.kid, "typ": TYP})


@dataclass(frozen=True)
class VerifiedReceipt:
    """A receipt whose signature verified: its header, its claims, the key that signed it."""

    header: dict[str, Any]
    claims: dict[str, Any]
    key: PublicKey


def unverified_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and the payload of a compact JWS, NOT verified: to say why a token is refused and to
    find where its issuer publishes its key. ReceiptInvalid when it is not a compact JWS of JSON."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ReceiptInvalid(
            f"malformed token: a compact JWS has 3 parts separated by '.', this has {len(parts)}"
        )
    decoded = []
    for name, part in zip(("header", "payload"), parts[:2], strict=True):
        try:
            value = json.loads(from_b64url(part))
        # RecursionError: [[[[... nested a million deep fits in a token's 4 MB
        except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):
            raise ReceiptInvalid(f"malformed token: its {name} is not base64url of JSON") from None
        if not isinstance(value, dict):
            raise ReceiptInvalid(f"malformed token: its {name} is not a JSON object")
        decoded.append(value)
    return decoded[0], decoded[1]


def check_header(header: Mapping[str, Any]) -> str:
    """The header's key id, once the header is one a receipt may have; ReceiptInvalid naming what is wrong."""
    alg = header.get("alg")
    if not isinstance(alg, str) or alg.lower() == "none":
        raise ReceiptInvalid(f"alg {alg!r}: an unsigned token is never accepted")
    if alg != ALG:
        raise ReceiptInvalid(f"alg {alg!r} is not {ALG}: a receipt is signed with the log's Ed25519 key")
    embedded = [h for h in KEY_HEADERS if h in header]
    if embedded:
        raise ReceiptInvalid(
            f"the header carries a key ({', '.join(embedded)}): a receipt names its key by kid only, "
            "and a key inside the token is never trusted"
        )
    if "crit" in header:
        raise ReceiptInvalid(
            f"the header has critical extensions ({header['crit']!r}) this verifier does not know"
        )
    if header.get("typ") != TYP:
        raise ReceiptInvalid(f"typ {header.get('typ')!r} is not {TYP!r}: this token is not a consent receipt")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise ReceiptInvalid("the header names no key (kid)")
    return kid


def verify_receipt(token: str, keys: Mapping[str, PublicKey]) -> VerifiedReceipt:
    """Verify `token` against `keys` (key id -> public key) alone; ReceiptInvalid naming why not.

    The checks, in order: a compact JWS of JSON; alg EdDSA (never none, never an HMAC keyed with the
    public key); no key in the header; typ; a kid among `keys`; the signature; the payload's shape;
    each record's hash recomputed from its fields."""
    token = token.strip()
    header, _ = unverified_parts(token)
    kid = check_header(header)  # before the signature: an unsigned token is named as such
    if not token.rsplit(".", 1)[1]:
        raise ReceiptInvalid("malformed token: it has no signature")
    key = keys.get(kid)
    if key is None:
        known = ", ".join(sorted(keys)) or "none"
        raise ReceiptInvalid(f"unknown kid {kid!r}: signed by none of the given public keys (ids: {known})")
    public = Ed25519PublicKey.from_public_bytes(key.raw)
    try:
        decoded = _JWS.decode_complete(token, public, algorithms=[ALG])
    except jwt.InvalidSignatureError:
        raise ReceiptInvalid(
            f"bad signature: the token was changed after it was signed, or key {kid} did not sign it"
        ) from None
    except jwt.PyJWTError as e:
        raise ReceiptInvalid(f"malformed token: {e}") from None
    claims = json.loads(decoded["payload"])
    _check_claims(claims)
    return VerifiedReceipt(dict(decoded["header"]), claims, key)


def _check_claims(claims: dict[str, Any]) -> None:
    for name, kind in (("iss", str), ("sub", str), ("iat", int), ("log_id", str), ("records", list)):
        if not isinstance(claims.get(name), kind):
            raise ReceiptInvalid(f"malformed payload: {name!r} is missing or not a {kind.__name__}")
    if not 0 <= claims["iat"] < LAST_SECOND:
        raise ReceiptInvalid(f"malformed payload: iat {claims['iat']} is not a time")
    for i, r in enumerate(claims["records"], 1):
        try:
            record = LoggedRecord.from_json({**r, "consent_id": claims["sub"]})
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ReceiptInvalid(f"malformed payload: record {i} is not a log record") from None
        if record_hash(record.prev_hash, record.columns()) != record.hash:
            raise ReceiptInvalid(f"record {i} (#{record.seq}): its hash does not match its fields")
