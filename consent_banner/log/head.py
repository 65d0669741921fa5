"""The head: the single row that says where the log stands, signed at every commit, and the state
a writer builds on once it trusts that row.

A head this process did not write itself must be signed by a listed key and agree with the stored
checkpoints: writing (and so re-signing) after a forged head would launder the forgery, so the log
fails closed instead.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from ..errors import LogUnavailable
from .chain import GENESIS
from .checkpoints import CheckpointLink, checkpoint_link
from .keys import LogKeys, SigningKey
from .signing import ed25519_message, head_mac


@dataclass(frozen=True)
class SignedHead:
    """The single head row: the last record's seq and hash and the checkpoint chain's tip, signed
    at every commit (`checkpoints` None: a head of the previous release, which did not sign it)."""

    log_id: str
    seq: int
    hash: str
    at: str | None
    key_id: str | None
    mac: str | None
    checkpoints: str | None = None
    sig_key_id: str | None = None  # schema 4: the Ed25519 key that signed it, and its signature
    sig: str | None = None

    def ed25519_message(self) -> bytes:
        """What `sig` signs: signing.ed25519_message of this head (its prev: the checkpoints' tip)."""
        return ed25519_message(
            "head",
            self.log_id,
            self.seq,
            self.hash,
            self.at or "",
            None,
            self.checkpoints or "",
            self.sig_key_id or "",
        )

    def problem(self, keys: Mapping[str, bytes]) -> str | None:
        """Why this head cannot be trusted under `keys` (key id -> key), or None: a listed key signed it."""
        if not self.mac or not self.key_id:
            if self.seq == 0:
                return (
                    "the head of this empty log is not signed: a log is signed when it is created, "
                    "so this one was emptied (or created without a key)"
                )
            return "the head is not signed"
        key = keys.get(self.key_id)
        if key is None:
            return (
                f"the head is signed by key {self.key_id!r}, which is not listed "
                "(CONSENT_SECRET_KEYS or --key): it cannot be trusted"
            )
        expected = head_mac(key, self.log_id, self.seq, self.hash, self.at or "", self.checkpoints)
        if not hmac.compare_digest(expected, self.mac):
            return "the head's signature does not match it: it was changed without the key"
        return None

    def ed25519_step(self, keys: LogKeys) -> str | SigningKey | None:
        """What a writer holding `keys` does about this head's Ed25519 signature: a problem (text)
        when it must not write after it; the older key it holds and rotates from (a rotation
        checkpoint both sign); None when it signs on (or keeps the HMAC alone, having no key).

        A head signed by a key the writer does not hold privately stops it: signing on alone would
        change the log's key with no link between the two (or, without any key, sign the next
        checkpoints with the HMAC alone, which public verification refuses)."""
        kid, signer = self.sig_key_id, keys.signer
        if kid is None:
            return None
        if signer is None:
            return (
                f"the head is signed with the log signing key {kid} (Ed25519): set "
                "CONSENT_LOG_SIGNING_KEY, or what is signed after it would carry the HMAC alone"
            )
        public = keys.public.get(kid)
        if public is None:
            return (
                f"the head is signed by log key {kid}, which is not listed "
                "(CONSENT_LOG_SIGNING_KEY or CONSENT_LOG_PUBLIC_KEYS): it cannot be trusted"
            )
        if not public.verify(self.sig, self.ed25519_message()):
            return (
                f"the head's Ed25519 signature (key {kid}) does not match it: it was changed without the key"
            )
        if kid == signer.kid:
            return None
        held = keys.held(kid)
        if held is None:
            return (
                f"the head is signed by log key {kid}, which this server holds only as a public key: "
                "a rotation checkpoint is signed by both keys, so start once with "
                f"CONSENT_LOG_SIGNING_KEY=<key {kid}>,<the new key> (then list the old one in "
                "CONSENT_LOG_PUBLIC_KEYS)"
            )
        return held

    def resign_reason(self, keys: Mapping[str, bytes], newest_key_id: str | None) -> str | None:
        """Why a writer should sign this head again when it opens the log, or None.

        Re-signing keeps the head verifiable once an older key is removed, and brings a head of the
        previous release to this format. Only a head a listed key signed is re-signed."""
        if newest_key_id is None or self.problem(keys) is not None:
            return None
        if self.checkpoints is None:
            return "upgrade"
        if self.key_id != newest_key_id:
            return "rotation"
        return None

    def needs_chain(self, last: CheckpointLink | None) -> bool:
        """Whether trusting this head needs every checkpoint: a head or a last checkpoint of the
        previous release does not carry the chain's tip."""
        return self.checkpoints is None or (last is not None and last.prev is None)


class HeadState(NamedTuple):
    """Where the log stands, as a writer may build on it: the last record, the checkpoint chain,
    and the newest checkpoint by record (for when the next periodic one is due)."""

    seq: int
    hash: str
    checkpoints: int  # checkpoints signed so far (the last one's n)
    tip: str  # their chain (checkpoint_link), which the head signs
    cp_seq: int | None = None  # the record of the checkpoint at the highest record
    cp_at: str | None = None  # and its time

    def is_head(self, head: SignedHead) -> bool:
        """The head is the one this state describes (this process wrote it last): the state stands
        (the MAC and the checkpoint count need no second look; a change to either makes the next
        verify fail)."""
        return (head.seq, head.hash, head.checkpoints) == (self.seq, self.hash, self.tip)


def trusted_state(
    head: SignedHead,
    last: CheckpointLink | None,
    chain: Sequence[CheckpointLink] | None,
    keys: Mapping[str, bytes],
    cp_seq: int | None,
    cp_at: str | None,
) -> HeadState:
    """The state a writer may build on after `head`, read inside the write lock; LogUnavailable when
    the head is not signed by a listed key or disagrees with the stored checkpoints.

    last: the newest checkpoint of the chain; chain: all of them, when head.needs_chain(last)."""
    problem = head.problem(keys)
    if problem is not None:
        raise LogUnavailable(
            f"the consent log will not write after a head it cannot trust: {problem}; "
            "run `consent-banner log verify`"
        )
    if chain is not None:
        n, tip = 0, GENESIS
        for link in chain:
            n, tip = link.n, checkpoint_link(tip, link.mac)
    elif last is not None and last.prev is not None:
        n, tip = last.n, checkpoint_link(last.prev, last.mac)
    else:
        n, tip = 0, GENESIS
    if head.checkpoints is not None and head.checkpoints != tip:
        raise LogUnavailable(
            "the consent log will not write: its checkpoints are not those the signed head vouches "
            "for; run `consent-banner log verify`"
        )
    return HeadState(head.seq, head.hash, n, tip, cp_seq, cp_at)
