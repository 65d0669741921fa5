"""Checkpoints: signed statements "after `seq` records, the head hash was `hash`" (R22), and when
the writer owes one.

Checkpoints form a chain of their own: the `n`-th signs `prev`, the chain of the n-1 before it
(checkpoint_link), and the head signs the chain's tip, so deleting any one of them is seen. Only a
*purge* checkpoint may stand in for deleted records; the reason is under the signature.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from .signing import ed25519_message, sign

CHECKPOINT_EVERY = 10_000  # records between periodic checkpoints
CHECKPOINT_INTERVAL = 3600  # seconds: a checkpoint at least hourly while records come in


def checkpoint_mac(
    key: bytes,
    log_id: str,
    seq: int,
    head_hash: str,
    at: str,
    reason: str,
    n: int | None = None,
    prev: str | None = None,
) -> str:
    """A checkpoint's signature. It covers the reason: only a *purge* checkpoint may stand in for
    deleted records, so an ordinary periodic one must not be relabelled into one. From schema 2 on
    (`prev` given) it also covers its place `n` and the chain of the checkpoints before it, so that
    none of them can be deleted unseen; without `prev` it is the previous release's signature."""
    return sign(key, f"checkpoint/{reason}", log_id, seq, head_hash, at, n=n, prev=prev)


def rotation_reason(n: int) -> str:
    """The reason of a rotation checkpoint, `rotation/<n>` (its own place in the chain). Checkpoints
    are keyed by (seq, reason), and two rotations can fall on one record (`<k1>,<k2>` then
    `<k2>,<k3>`, or back, with no decision between): a bare `rotation` would collide there and
    leave the log unwritable. `n` is unique by construction and under every signature. Logs written
    before say `rotation`; a verifier knows a rotation by its `prior_key_id`, never by its reason."""
    return f"rotation/{n}"


def checkpoint_link(tip: str, mac: str) -> str:
    """The checkpoint chain after one more checkpoint: what the head and the next checkpoint sign."""
    return hashlib.sha256(f"consent-banner/checkpoints\x00{tip}\x00{mac}".encode()).hexdigest()


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement "after `seq` records, the head hash was `hash`" (R22).

    `seq` is also the count of records ever appended up to it (sequence numbers start at 1 and
    have no gaps). Checkpoints of the previous release have `prev` None (their `n` was given at the
    upgrade). Export these and keep them elsewhere: a log rewritten from scratch, or rolled back
    to an older copy, cannot reproduce a pinned checkpoint.
    """

    log_id: str
    seq: int
    hash: str
    at: str
    reason: str  # periodic | purge | manual | rotation/<n> (rotation_reason; `rotation` before)
    key_id: str
    mac: str
    n: int | None = None
    prev: str | None = None
    # Schema 4: the Ed25519 signature (keys.py) by key `sig_key_id`; a rotation checkpoint is also
    # signed, over the same message, by the key before it (`prior_key_id`).
    sig_key_id: str | None = None
    sig: str | None = None
    prior_key_id: str | None = None
    prior_sig: str | None = None

    @property
    def count(self) -> int:
        return self.seq

    def ed25519_message(self) -> bytes:
        """What `sig` (and `prior_sig`) sign: signing.ed25519_message of this checkpoint."""
        return ed25519_message(
            f"checkpoint/{self.reason}",
            self.log_id,
            self.seq,
            self.hash,
            self.at,
            self.n,
            self.prev or "",
            self.sig_key_id or "",
            self.prior_key_id,
        )

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "log_id": self.log_id,
            "seq": self.seq,
            "count": self.seq,
            "hash": self.hash,
            "at": self.at,
            "reason": self.reason,
            "key_id": self.key_id,
            "mac": self.mac,
        }
        if self.n is not None:
            data["n"] = self.n
        if self.prev is not None:
            data["prev"] = self.prev
        for name in ("sig_key_id", "sig", "prior_key_id", "prior_sig"):
            if getattr(self, name) is not None:
                data[name] = getattr(self, name)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Checkpoint:
        n, prev = data.get("n"), data.get("prev")
        return cls(
            log_id=str(data["log_id"]),
            seq=int(data["seq"]),
            hash=str(data["hash"]),
            at=str(data["at"]),
            reason=str(data.get("reason", "")),
            key_id=str(data.get("key_id", "")),
            mac=str(data["mac"]),
            n=int(n) if n is not None else None,
            prev=str(prev) if prev is not None else None,
            **{k: _text(data.get(k)) for k in ("sig_key_id", "sig", "prior_key_id", "prior_sig")},
        )

    def valid(self, keys: Mapping[str, bytes]) -> bool | None:
        """True/False when one of `keys` (by key id) made it; None when no known key did."""
        key = keys.get(self.key_id)
        if key is None:
            return None
        expected = checkpoint_mac(
            key, self.log_id, self.seq, self.hash, self.at, self.reason, self.n, self.prev
        )
        return hmac.compare_digest(expected, self.mac)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


class CheckpointLink(NamedTuple):
    """What a writer needs of a stored checkpoint to extend the chain: its place, its prev, its MAC."""

    n: int
    prev: str | None
    mac: str


def checkpoint_due(
    new_seq: int, last_seq: int | None, last_at: str | None, now: str, every: int, interval: float
) -> bool:
    """Whether a batch that ends at record `new_seq`, at time `now`, owes a periodic checkpoint,
    given the newest one (at record `last_seq`, time `last_at`; None: there is none yet)."""
    last = last_seq or 0
    if new_seq <= last:
        return False
    if new_seq - last >= every or new_seq // every > last // every:
        return True
    if last_at is None:  # the first batch of a new log gets one, so the log is pinned early
        return True
    try:
        age = (
            datetime.strptime(now, "%Y-%m-%dT%H:%M:%S.%fZ")
            - datetime.strptime(last_at, "%Y-%m-%dT%H:%M:%S.%fZ")
        ).total_seconds()
    except ValueError:
        return True
    return age >= interval
