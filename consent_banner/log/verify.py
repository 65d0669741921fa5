"""Recompute the hash chain and say either "intact" or which record is the first bad one, and why.

`ChainVerifier` is fed raw rows in sequence order (from the database or from an NDJSON export)
and keeps O(1) state plus one row of look-ahead, so a million records verify in constant memory.
It tells apart (R22):

- changed:    a record's stored fields no longer match its own hash;
- missing:    sequence numbers skip, or the tail ends before a signed checkpoint or head;
- inserted:   a record that the next record's link steps over;
- reordered:  a record whose link points at a record that comes after it;
- rewritten:  the chain is self-consistent but disagrees with a signed checkpoint or head;
- signature:  the head is not signed by a key listed now (CONSENT_SECRET_KEYS or --key; the log's
              public keys: --public-key, CONSENT_LOG_SIGNING_KEY, CONSENT_LOG_PUBLIC_KEYS), a
              checkpoint carries a signature a listed key did not make, or the log's Ed25519 key
              changed without a rotation checkpoint both keys signed;
- checkpoints: the checkpoint chain lost, gained or changed a checkpoint;
- version:    a banner version was changed, or a record points at one that is not stored.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from typing import Any

from .canonical import Row
from .chain import GENESIS, record_hash
from .checkpoints import Checkpoint, checkpoint_link
from .head import SignedHead
from .keys import PublicKey
from .results import VerifyResult

PIN = "pin"  # the reason of a pinned head (seq and hash an auditor kept): trusted as the auditor's own


class _Failed(Exception):
    def __init__(self, seq: int | None, problem: str, reason: str) -> None:
        self.seq, self.problem, self.reason = seq, problem, reason


class ChainVerifier:
    """Feed rows (seq, *COLUMNS, prev_hash, hash) in seq order, then call finish()."""

    def __init__(
        self,
        *,
        checkpoints: Iterable[Checkpoint] = (),
        keys: Mapping[str, bytes] | None = None,  # key id -> HMAC key; None: HMACs not checked
        public_keys: Mapping[str, PublicKey] | None = None,  # key id -> Ed25519 key; None: not checked
        require_public: bool = False,  # True: the head must carry an Ed25519 signature (offline)
        head: SignedHead | None = None,  # given: `checkpoints` are all the log's own, a chain
        pins: Iterable[Checkpoint] = (),  # checkpoints kept outside the log, from `log checkpoints`
        versions: Mapping[str, str] | None = None,  # version id -> stored payload text
        log_id: str | None = None,
        anchored: bool = True,  # False: trust the first row's link (a partial export)
        head_required: bool = False,  # True: the rows are a database's, whose head row must be there
    ) -> None:
        self._keys = keys
        self._public = public_keys
        self._require_public = require_public
        self._ed_key: str | None = None  # the log's Ed25519 key at the checkpoint being walked
        self._ed_since: int | None = None  # the checkpoint from which it signs
        self._ed_first: str | None = None  # the first Ed25519 key of the log, for the summary
        self._head = head
        self._head_required = head_required
        self._versions = versions
        self._log_id = log_id
        self._anchored = anchored
        self._checkpoints: dict[int, list[Checkpoint]] = {}  # by seq; periodic and purge may share one
        # Purge checkpoints signed by a key no longer listed: not checked, so never compared with the
        # chain; one may still mark where a purge cut the log, if the purge record names it.
        self._unchecked_purges: dict[int, Checkpoint] = {}
        self._tip: str | None = None  # the stored checkpoints' chain, for the head to vouch for
        self._unconfirmed_anchor: Checkpoint | None = None  # a purge anchor no purge record named yet
        self._result = VerifyResult(ok=True, records=0)
        self._buffered: Row | None = None
        self._expected_prev = GENESIS
        self._before_prev: str | None = None  # hash of the record before the last good one
        self._expected_seq: int | None = None
        self._failed: _Failed | None = None
        self._versions_ok: set[str] = set()
        self._vouched = 0  # the last record a signed checkpoint was compared with
        notes = self._result.notes
        if keys is None and public_keys is None:
            notes.append("signatures not checked: no server key available (set CONSENT_SECRET_KEYS)")
        try:
            stored = list(checkpoints)
            own = head is not None or head_required  # the checkpoints are all the log's own, a chain
            if own:
                self._tip = self._chain_checkpoints(stored)
            for cp in stored:
                self._add_checkpoint(cp)
            for cp in pins:
                self._add_pin(cp, stored if own else None)
        except _Failed as f:
            self._failed = f

    # --- input ---------------------------------------------------------------------------------

    def _chain_checkpoints(self, stored: list[Checkpoint]) -> str:
        """Walk the log's checkpoints in the order they were signed; the chain's tip.

        Each one from schema 2 on signs the chain before it, so a deleted, reordered or inserted
        checkpoint breaks the walk here; the head signs the tip, so a deleted last one is seen too."""
        tip = GENESIS
        numbered = sorted((cp for cp in stored if cp.n is not None), key=lambda cp: cp.n or 0)
        for expected_n, cp in enumerate(numbered, start=1):
            if cp.n != expected_n:
                raise _Failed(
                    cp.seq,
                    "checkpoints",
                    f"checkpoint {expected_n} is missing: the checkpoints jump from {expected_n - 1} to "
                    f"{cp.n} (deleted)",
                )
            if cp.prev is not None and cp.prev != tip:
                raise _Failed(
                    cp.seq,
                    "checkpoints",
                    f"checkpoint {cp.n} (at record {cp.seq}) does not follow the checkpoints before it: "
                    "one of them was deleted, changed or inserted",
                )
            self._walk_keys(cp)
            tip = checkpoint_link(tip, cp.mac)
        return tip

    def _walk_keys(self, cp: Checkpoint) -> None:
        """The log's Ed25519 key along its checkpoints, in the order they were signed: it changes only
        at a rotation checkpoint that names the key before it and that both keys signed, and once a
        checkpoint is signed with it, every later one is (its signature was not removed)."""
        if self._public is None:
            return
        where = f"checkpoint {cp.n} (at record {cp.seq})"
        kid, current = cp.sig_key_id, self._ed_key
        if kid is not None:  # a key nobody listed, or a forged signature, is named before the sequence
            self._ed_valid(kid, cp.sig, cp.ed25519_message(), f"the {where}", cp.seq)
        if kid is None:
            if current is not None:
                raise _Failed(
                    cp.seq,
                    "signature",
                    f"{where} carries no Ed25519 signature, though the log signs with key {current} since "
                    f"checkpoint {self._ed_since}: its signature was removed, or it was made without the key",
                )
            return
        if cp.prior_key_id is not None:
            if current is not None and cp.prior_key_id != current:
                raise _Failed(
                    cp.seq,
                    "signature",
                    f"{where} rotates from log key {cp.prior_key_id}, but the log signs with key {current} "
                    f"since checkpoint {self._ed_since}",
                )
            self._ed_valid(
                cp.prior_key_id, cp.prior_sig, cp.ed25519_message(), where + ", the old key's signature"
            )
        elif current is not None and kid != current:
            raise _Failed(
                cp.seq,
                "signature",
                f"{where} is signed by log key {kid}, but the log signs with key {current} since "
                f"checkpoint {self._ed_since}, and no rotation checkpoint signed by both links them",
            )
        if kid != current:
            self._ed_key, self._ed_since = kid, cp.n
            # A log whose first signed checkpoint is a rotation (its head was signed, no checkpoint
            # yet) began with the key before it.
            self._ed_first = self._ed_first or cp.prior_key_id or kid

    def _ed_valid(self, kid: str, sig: str | None, message: bytes, what: str, seq: int | None = None) -> None:
        """The Ed25519 signature `sig` by key `kid` of `message`, or _Failed naming the key."""
        assert self._public is not None
        key = self._public.get(kid)
        if key is None:
            raise _Failed(
                seq,
                "signature",
                f"{what} is by log key {kid}, which is not listed (--public-key, CONSENT_LOG_SIGNING_KEY or "
                "CONSENT_LOG_PUBLIC_KEYS): it cannot be trusted",
            )
        if not key.verify(sig, message):
            raise _Failed(
                seq, "signature", f"{what} (log key {kid}) does not match: it was changed or forged"
            )

    def _add_checkpoint(self, cp: Checkpoint, kind: str = "checkpoint") -> None:
        if cp.reason == PIN and not cp.mac:  # a head the auditor pinned: their own, compared as it is
            if cp.log_id and self._log_id is not None and cp.log_id != self._log_id:
                raise _Failed(
                    cp.seq, "signature", f"the pinned head at record {cp.seq} belongs to another log"
                )
            self._checkpoints.setdefault(cp.seq, []).append(cp)
            return
        if self._log_id is not None and cp.log_id != self._log_id:
            raise _Failed(cp.seq, "signature", f"the {kind} at record {cp.seq} belongs to another log")
        checked: bool | None = None  # whether a listed key made it: its HMAC, or its Ed25519 signature
        if self._public is not None and cp.sig_key_id is not None:
            self._ed_valid(
                cp.sig_key_id, cp.sig, cp.ed25519_message(), f"the {kind} at record {cp.seq}", cp.seq
            )
            checked = True
        if self._keys is not None:
            valid = cp.valid(self._keys)
            if valid is False:
                raise _Failed(
                    cp.seq, "signature", f"the {kind} at record {cp.seq} is not signed by the server key"
                )
            checked = checked or valid
        elif self._public is None:
            checked = True  # no key at all: compared as they are (the note above says so)
        if not checked:
            self._result.notes.append(
                f"{kind} at record {cp.seq} ({cp.reason}) is signed by key {cp.key_id!r}, which is not "
                "listed: not checked"
                if self._keys is not None
                else f"{kind} at record {cp.seq} ({cp.reason}) carries only an HMAC, which needs the server "
                "key: not checked by itself (the signed head covers it through the checkpoint chain)"
            )
            if cp.reason == "purge":
                self._unchecked_purges.setdefault(cp.seq, cp)
            return
        self._checkpoints.setdefault(cp.seq, []).append(cp)

    def _add_pin(self, pin: Checkpoint, stored: list[Checkpoint] | None) -> None:
        """A pinned checkpoint: compared with the chain like a stored one and, when it has its place
        in the checkpoint chain, it must still be there: an older copy of the log lacks it."""
        self._add_checkpoint(pin, "pinned checkpoint")
        if stored is None or pin.n is None:
            return
        same = next((cp for cp in stored if cp.n == pin.n), None)
        if same is None or same.mac != pin.mac:
            raise _Failed(
                pin.seq,
                "rewritten",
                f"the pinned checkpoint {pin.n} (at record {pin.seq}) is not in the log's checkpoints: "
                "the log was rolled back to an older copy or rewritten",
            )

    @property
    def failed(self) -> bool:
        return self._failed is not None

    def feed(self, row: Row | list[Any]) -> bool:
        """Take the next row; False once a failure is found (feeding more is pointless)."""
        if self._failed is not None:
            return False
        previous, self._buffered = self._buffered, tuple(row)
        if previous is not None:
            self._check(previous, self._buffered)
        return self._failed is None

    def feed_all(self, rows: Iterable[Row]) -> bool:
        """Feed rows until one fails (the rest are not read); False once a failure is found."""
        feed = self.feed
        return all(map(feed, rows))

    def finish(self) -> VerifyResult:
        if self._failed is None and self._buffered is not None:
            self._check(self._buffered, None)
            self._buffered = None
        if self._failed is None:
            try:
                self._check_tail()
            except _Failed as f:
                self._failed = f
        r = self._result
        r.signatures = self.signatures()
        if self._failed is not None:
            r.ok = False
            r.bad_seq, r.problem, r.reason = self._failed.seq, self._failed.problem, self._failed.reason
        return r

    # --- one row -------------------------------------------------------------------------------

    def _check(self, row: Row, nxt: Row | None) -> None:
        try:
            self._check_row(row, nxt)
        except _Failed as f:
            self._failed = f

    def _start(self, seq: int, prev: str) -> None:
        r = self._result
        r.first_seq = seq
        if not self._anchored:
            self._expected_prev, self._expected_seq = prev, seq
            r.notes.append(
                f"partial chain: starts at record {seq}, its link to record {seq - 1} is taken as given"
            )
            return
        if seq == 1:
            self._expected_seq = 1
            return
        # Only a signed *purge* checkpoint (its reason is under the signature) stands in for the
        # records before the first one; a periodic checkpoint there means they were just deleted.
        anchor = next((cp for cp in self._checkpoints.get(seq - 1, ()) if cp.reason == "purge"), None)
        if anchor is None:
            # Signed by a key no longer listed: it is not trusted by itself, only as far as the purge
            # record in the chain (under the signed head) names it; _check_tail insists on that.
            anchor = self._unchecked_purges.get(seq - 1)
        if anchor is None:
            raise _Failed(
                1,
                "missing",
                f"the log starts at record {seq}, and no signed purge checkpoint at record {seq - 1} "
                "vouches for the records before it (deleted without a purge)",
            )
        self._expected_prev, self._expected_seq = anchor.hash, seq
        self._unconfirmed_anchor = anchor
        r.anchor = anchor.seq
        r.checkpoints += 1

    def _check_row(self, row: Row, nxt: Row | None) -> None:
        seq, cols, prev, h = row[0], row[1:-2], row[-2], row[-1]
        if not isinstance(seq, int):
            raise _Failed(None, "changed", f"a record has the sequence number {seq!r}")
        if self._expected_seq is None:
            self._start(seq, prev)
        expected_seq = self._expected_seq
        assert expected_seq is not None
        content_ok = record_hash(prev, cols) == h
        link_ok = prev == self._expected_prev
        if not (content_ok and link_ok and seq == expected_seq):
            self._diagnose(seq, content_ok, link_ok, prev, nxt)
        for cp in self._checkpoints.get(seq, ()):
            self._result.checkpoints += 1
            if cp.hash != h:
                raise _Failed(
                    seq,
                    "rewritten",
                    f"the signed checkpoint at record {seq} has head {cp.hash[:16]}..., the chain has "
                    f"{str(h)[:16]}...: the log was rewritten from here or before",
                )
            self._vouched = seq
        if self._versions is not None:
            self._check_version(seq, cols[9])
        if self._unconfirmed_anchor is not None and cols[2] == "purge":
            self._confirm_anchor(cols[12])
        self._before_prev, self._expected_prev = self._expected_prev, h
        self._expected_seq = seq + 1
        r = self._result
        r.records += 1
        r.last_seq = seq
        r.head = h

    def _diagnose(self, seq: int, content_ok: bool, link_ok: bool, prev: str, nxt: Row | None) -> None:
        expected_seq = self._expected_seq
        assert expected_seq is not None
        before = seq - 1
        if content_ok and not link_ok and self._before_prev is not None and prev == self._before_prev:
            raise _Failed(
                before,
                "inserted",
                f"record {seq} links to the record before {before}: record {before} was inserted",
            )
        if not link_ok and nxt is not None and prev == nxt[-1]:
            raise _Failed(
                seq,
                "reordered",
                f"it links to record {nxt[0]}, which comes after it: records {seq} and "
                f"{nxt[0]} are out of order",
            )
        if nxt is not None and nxt[-2] == self._expected_prev and record_hash(nxt[-2], nxt[1:-2]) == nxt[-1]:
            raise _Failed(
                seq, "inserted", f"record {nxt[0]} links to record {before}, stepping over this one"
            )
        if seq > expected_seq:
            if content_ok and link_ok:
                raise _Failed(
                    expected_seq,
                    "missing",
                    f"sequence numbers jump from {expected_seq - 1} to {seq} "
                    "although the links are intact: records were renumbered",
                )
            span = (
                f"record {expected_seq} is"
                if seq == expected_seq + 1
                else f"records {expected_seq}..{seq - 1} are"
            )
            raise _Failed(expected_seq, "missing", f"{span} missing (deleted)")
        if seq < expected_seq:
            raise _Failed(seq, "reordered", f"it comes after record {expected_seq - 1}")
        if not content_ok:
            raise _Failed(seq, "changed", "its stored fields do not match its hash")
        raise _Failed(
            seq,
            "missing",
            f"its link to record {before} is broken: a record before it was removed or replaced",
        )

    def _confirm_anchor(self, detail: Any) -> None:
        """A purge record in the chain (itself hash-linked) names the anchor it left behind."""
        anchor = self._unconfirmed_anchor
        assert anchor is not None
        try:
            d = json.loads(detail) if isinstance(detail, str) else {}
        except ValueError:
            return
        if isinstance(d, dict) and d.get("through_seq") == anchor.seq and d.get("anchor") == anchor.hash:
            self._unconfirmed_anchor = None

    def _check_version(self, seq: int, version_id: Any) -> None:
        if version_id is None or version_id in self._versions_ok:
            return
        assert self._versions is not None
        payload = self._versions.get(version_id)
        if payload is None:
            raise _Failed(seq, "version", f"it points at banner version {version_id}, which is not stored")
        if not hmac.compare_digest(hashlib.sha256(payload.encode()).hexdigest(), str(version_id)):
            raise _Failed(seq, "version", f"banner version {version_id} was changed after it was stored")
        self._versions_ok.add(version_id)

    # --- the end of the chain --------------------------------------------------------------------

    def _check_head_ed25519(self, head: SignedHead) -> None:
        if self._public is None:
            return
        current = self._ed_key
        if head.sig_key_id is None:
            if current is not None or self._require_public:
                raise _Failed(
                    None,
                    "signature",
                    "the head carries no Ed25519 signature"
                    + (f", though the log signs with key {current}" if current else "")
                    + ": nothing vouches for it to whoever holds only the public key",
                )
            return
        if current is not None and head.sig_key_id != current:
            raise _Failed(
                None,
                "signature",
                f"the head is signed by log key {head.sig_key_id}, but the log signs with key {current} "
                f"since checkpoint {self._ed_since}, and no rotation checkpoint links them",
            )
        self._ed_valid(head.sig_key_id, head.sig, head.ed25519_message(), "the head's signature")
        self._ed_first = self._ed_first or head.sig_key_id
        self._ed_key = head.sig_key_id

    def signatures(self) -> str:
        """What vouched for the log, in one line (`log verify` prints it)."""
        head = self._head
        kid = head.sig_key_id if head is not None else None
        if self._public is not None and kid is not None and self._ed_key == kid:
            rotated = f", rotated from key {self._ed_first}" if self._ed_first not in (None, kid) else ""
            return f"signatures: Ed25519, log key {kid}{rotated} (checked with the public key alone)"
        if self._keys is not None:
            if kid is not None:
                return (
                    f"signatures: HMAC (server secret); the Ed25519 signatures (log key {kid}) were not "
                    "checked: give the public key (--public-key, or CONSENT_LOG_SIGNING_KEY)"
                )
            return "signatures: HMAC (server secret) — set CONSENT_LOG_SIGNING_KEY for public verification"
        return "signatures: not checked (no key: CONSENT_SECRET_KEYS, --key or --public-key)"

    def _check_tail(self) -> None:
        r = self._result
        if self._unconfirmed_anchor is not None:
            a = self._unconfirmed_anchor.seq
            raise _Failed(
                1,
                "missing",
                f"records 1..{a} are gone and a purge checkpoint stands at record {a}, but no purge "
                "record in the chain names it",
            )
        last = r.last_seq or 0
        later = [cp for seq, cps in self._checkpoints.items() if seq > last for cp in cps]
        if later and self._anchored:
            top = max(later, key=lambda c: c.seq)
            if not (r.records == 0 and top.seq == last):
                raise _Failed(
                    last + 1,
                    "missing",
                    f"the log ends at record {last}, but a signed checkpoint vouches for {top.seq} records: "
                    f"records {last + 1}..{top.seq} were cut off",
                )
        head = self._head
        if head is None and self._head_required:
            raise _Failed(None, "missing", "the head row is missing")
        if head is None and self._require_public:
            raise _Failed(
                None,
                "signature",
                "no signed head: a filtered or CSV export, or one whose head line was removed, carries "
                "nothing the public key can check (export the whole log as NDJSON)",
            )
        if head is None:
            # An export carries no signed head: whoever holds a copy can rewrite records and
            # recompute every hash after them. Only pinned checkpoints vouch for a file's records.
            if r.records and self._vouched < last:
                first = max(self._vouched + 1, r.first_seq or 1)
                r.notes.append(
                    f"records {first}..{last} are vouched for by no signed checkpoint: a file has no "
                    "signed head, so their chain is only self-consistent (anyone can recompute it); "
                    "pin checkpoints with `log checkpoints` and pass --pins to check them"
                )
            return
        if self._log_id is not None and head.log_id != self._log_id:
            raise _Failed(None, "signature", "the head belongs to another log")
        if self._keys is not None:
            problem = head.problem(self._keys)
            if problem is not None:
                raise _Failed(None, "signature", problem)
        self._check_head_ed25519(head)
        if head.checkpoints is None:
            r.notes.append(
                "the head has the previous release's signature, which does not cover the checkpoints "
                "(it is re-signed when the log is next opened with the key)"
            )
        elif self._tip is not None and head.checkpoints != self._tip:
            raise _Failed(
                None,
                "checkpoints",
                "the checkpoints are not those the signed head vouches for: one was deleted, added or "
                "changed",
            )
        if not self._anchored:
            return
        if head.seq > last:
            raise _Failed(
                last + 1,
                "missing",
                f"the log ends at record {last}, but the signed head is at record {head.seq}: "
                f"records {last + 1}..{head.seq} were cut off",
            )
        if head.seq < last:
            raise _Failed(
                head.seq + 1,
                "inserted",
                f"the signed head is at record {head.seq}: records {head.seq + 1}..{last} were added "
                "without the log's key",
            )
        if r.records and head.hash != r.head:
            raise _Failed(last, "rewritten", "the chain's head differs from the signed head")
