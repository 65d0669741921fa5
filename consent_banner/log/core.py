"""The log core: everything the two backends share, written once.

The append path (validation, banner versions, the group-commit writer), the head a writer builds
on and when it may trust it, the checkpoint chain, purge, migrations, blocked-attempt pruning and
every read (reads.py). Each write is a plan (plan.py) that a driver runs in one transaction; a
driver (sqlite.py, postgres.py) adds only its connections, how it runs a plan, and its tuned path
for a batch of decisions (`_commit`).
"""

from __future__ import annotations

import logging
import secrets
from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from ..errors import InvalidDecision, LogError, LogNeedsMigration, LogUnavailable
from ..memo import Memo
from .batch import Item, Outcome, Written, gpc_ids, has_gpc, settle_gpc, written_settled
from .canonical import Row, version_id_for
from .chain import GENESIS, link_rows
from .checkpoints import (
    CHECKPOINT_EVERY,
    CHECKPOINT_INTERVAL,
    Checkpoint,
    CheckpointLink,
    checkpoint_due,
    checkpoint_link,
    checkpoint_mac,
    rotation_reason,
)
from .head import HeadState, SignedHead, trusted_state
from .keys import LogKeys, SigningKey
from .outbox import LogOutbox
from .plan import All, Exec, Insert, One, Part, Plan
from .queries import Queries
from .records import BlockedAttempt, Decision, LoggedRecord, format_at, prepare, purge_record
from .results import PurgeResult
from .schema import SCHEMA_VERSION, Dialect, migrations
from .signing import ed25519_message, head_mac, key_id
from .writer import GroupCommitWriter, WriterStats

logger = logging.getLogger("consent_banner.log")
T = TypeVar("T")
BLOCKED_KEEP = 100_000  # CSP report rows kept at most; the oldest go first
BLOCKED_PRUNE_EVERY = 1000  # reports written between two prunings
# Rows one client network keeps at a pruning (its oldest go first): reports are unauthenticated, and
# without a share one client's flood would push every genuine report out of BLOCKED_KEEP.
BLOCKED_PER_CLIENT = 1000

# What a batch's commit hands back to the driver: the items kept (GPC duplicates left out), their raw
# rows, the time they were linked at, where each item's answer comes from, the banner versions stored.
Committed = tuple[list[Item], list[Row], str, list[Outcome] | None, dict[str, str]]


class LogCore(LogOutbox):
    """A consent log (see ConsentLog) less its driver."""

    dialect: Dialect
    migrated_from: int | None = None  # the schema version found when this process opened the log
    read_only: bool  # a reader (open_log(..., read_only=True)): no writer, no write lock, no DDL
    _reading_schema = False  # a reader, opened: its reads follow the schema (`_follow_schema`)

    def __init__(
        self,
        *,
        hmac_key: bytes | None,
        previous_hmac_keys: Sequence[bytes] = (),
        log_keys: LogKeys | None = None,
        checkpoint_every: int = CHECKPOINT_EVERY,
        checkpoint_interval: float = CHECKPOINT_INTERVAL,
        max_batch: int = 1000,
        clock: Callable[[], datetime] | None = None,
        read_only: bool = False,
    ) -> None:
        if hmac_key is not None and not isinstance(hmac_key, bytes | bytearray):
            raise TypeError("hmac_key must be bytes (see consent_banner.log.derive_hmac_key)")
        self.read_only = read_only
        if read_only and hmac_key is not None:  # a reader signs nothing: the key only checks signatures
            previous_hmac_keys, hmac_key = (hmac_key, *previous_hmac_keys), None
        self._hmac_key = bytes(hmac_key) if hmac_key is not None else None
        self._key_id = key_id(self._hmac_key) if self._hmac_key is not None else None
        keys = [k for k in (self._hmac_key, *previous_hmac_keys) if k is not None]
        self.keys = {key_id(k): bytes(k) for k in keys} if keys else None
        # The server time of records; replaceable so tests (and demos) can write an old log.
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self.checkpoint_every = checkpoint_every
        self.checkpoint_interval = checkpoint_interval
        self.sql = Queries(self.dialect)
        self._migrations = migrations(self.dialect)
        self._known_versions: set[str] = set()
        # Banner version payloads are hashed once per object: id() -> (object, version id, text).
        # The object is held so its id() cannot be reused by another dict while remembered.
        self._version_cache: Memo[int, tuple[Mapping[str, Any], str, str]] = Memo(256)
        self._blocked_since_prune = 0
        self._state: HeadState | None = None  # the head as this process last wrote (or checked) it
        # The Ed25519 keys (CONSENT_LOG_SIGNING_KEY): the newest signs the head and each checkpoint
        # beside the HMAC; none given, the log keeps the HMAC alone (as before schema 4).
        self.log_keys = log_keys or LogKeys()
        self._signer = self.log_keys.signer
        self.public_keys = self.log_keys.public or None
        self.writer: GroupCommitWriter[Item, Written, BlockedAttempt] = GroupCommitWriter(
            self._commit, side_commit=self._commit_blocked, max_batch=max_batch
        )

    # --- what a driver supplies ------------------------------------------------------------------

    @abstractmethod
    async def _transact(self, plan: Plan[T]) -> T:
        """Run `plan` in one transaction under the write lock; remember the state it leaves once
        committed. LogUnavailable when the log is closed or stays locked; LogError when it was
        opened read-only (`_refuse_read_only`)."""

    def _refuse_read_only(self) -> None:
        if self.read_only:
            raise LogError(
                f"the consent log {self.name} was opened read-only: it cannot write (open it with the "
                "server key to write; `consent-banner log migrate` to change its schema)"
            )

    @abstractmethod
    async def _commit(self, items: list[Item]) -> list[Written]:
        """Write a batch of decisions (the driver's tuned path; `_commit_plan` is the algorithm)."""

    @abstractmethod
    async def _close_driver(self) -> None: ...

    @property
    @abstractmethod
    def name(self) -> str:
        """Where the log is, for messages."""

    # --- opening ---------------------------------------------------------------------------------

    async def _open_core(self, migrate: bool) -> None:
        """A writer's opening (inside `open`): create the schema of a new log, or upgrade an older
        one when `migrate` (only `log migrate` asks: else LogNeedsMigration); read the log's id and
        adopt its head."""
        self.migrated_from, _ = await self._transact(self._migrate_plan(upgrade=migrate))
        await self._transact(self._meta_plan())
        if self._hmac_key is not None:
            await self._transact(self._adopt_plan())

    async def _open_read_only_core(self) -> None:
        """A reader's opening (inside `open`, once its read connection is made): the schema version
        and the log's id, read in one snapshot; nothing written, no lock taken, no DDL. An older
        schema is read as it is (see Queries); a newer one, or none, is refused."""
        version = await self._read_plan(self._schema_version_plan())
        if version == 0:
            rights = " (or this database user may not see it)" if self.dialect == "postgres" else ""
            raise LogError(
                f"there is no consent log {self.name}{rights}: `consent-banner log migrate` creates one"
            )
        if version > SCHEMA_VERSION:
            raise LogError(
                f"the consent log's schema is version {version}; this consent-banner reads up to "
                f"{SCHEMA_VERSION}: upgrade consent-banner"
            )
        self.migrated_from = version
        self.sql = Queries(self.dialect, schema=version)
        await self._read_plan(self._meta_plan())
        self._reading_schema = True  # from now on every read checks the version first

    def _follow_schema(self, found: Row | None, sql: str = "") -> str:
        """A reader's statements for the schema version `found` (its meta row) in the snapshot being
        read: `log migrate` may have run since the reader opened, and the statements of the old
        version would read the new columns as NULL (a head or checkpoint then fails to verify).
        Returns `sql`, rendered for the old version, as the new version renders it."""
        version = int(found[0]) if found else 0
        if version == self.sql.schema:
            return sql
        if not 0 < version <= SCHEMA_VERSION:
            raise LogError(
                f"the consent log's schema is now version {version}; this consent-banner reads 1 to "
                f"{SCHEMA_VERSION}"
            )
        old, self.sql = self.sql, Queries(self.dialect, schema=version)
        name = next((k for k, v in vars(old).items() if v == sql), None)
        return str(getattr(self.sql, name)) if name else sql

    async def _read_plan(self, plan: Plan[T]) -> T:
        """Run a plan that only reads (One and All steps) in one read session: how a reader, which
        has no write transaction, runs the core's plans. A write step is refused, never run."""
        with self._reading():
            async with self._session() as s:
                try:
                    step = next(plan)
                    while True:
                        if not isinstance(step, One | All):
                            raise LogError(
                                f"the consent log {self.name} was opened read-only: it cannot write"
                            )
                        rows = await s.fetch(step.sql, step.params)
                        step = plan.send((rows[0] if rows else None) if isinstance(step, One) else rows)
                except StopIteration as done:
                    value, _ = done.value
        return value  # type: ignore[no-any-return]

    def _meta_plan(self) -> Plan[None]:
        if (yield from self._schema_version_part()) == 0:
            raise LogError("the consent log has no schema yet: run `consent-banner log migrate`")
        row = yield One(self.sql.meta, ("log_id",))
        self.log_id = row[0] if row else ""
        return None, None

    def _schema_version_part(self) -> Part[int]:
        (exists,) = yield One(self.sql.meta_exists)
        if not exists:
            return 0
        row = yield One(self.sql.meta, ("schema_version",))
        return int(row[0]) if row else 0

    def _schema_version_plan(self) -> Plan[int]:
        return (yield from self._schema_version_part()), None

    async def schema_version(self) -> int:
        if self.read_only:
            return await self._read_plan(self._schema_version_plan())
        return await self._transact(self._schema_version_plan())

    async def migrate(self) -> tuple[int, int]:
        """Create or upgrade the schema; (version before, version after)."""
        return await self._transact(self._migrate_plan(upgrade=True))

    def _migrate_plan(self, *, upgrade: bool) -> Plan[tuple[int, int]]:
        """Create a new log's schema; bring an older one to this version's only when `upgrade`."""
        if self.sql.migration_lock:
            yield Exec(self.sql.migration_lock)
        before = yield from self._schema_version_part()
        if before > SCHEMA_VERSION:
            raise LogError(
                f"the consent log's schema is version {before}; this consent-banner knows up to "
                f"{SCHEMA_VERSION}: upgrade consent-banner"
            )
        if 0 < before < SCHEMA_VERSION and not upgrade:
            # Creating a log is not migrating one: a new log is made at once (demos, a first start).
            raise LogNeedsMigration(
                f"the consent log {self.name} is at schema {before}; this consent-banner writes schema "
                f"{SCHEMA_VERSION}: run `consent-banner log migrate` (it keeps every record and hash)"
            )
        for version in range(before + 1, SCHEMA_VERSION + 1):
            for statement in self._migrations[version]:
                yield Exec(statement)
            yield Exec(self.sql.set_meta, ("schema_version", str(version)))
        if before == 0:
            # Signed from the start: an unsigned empty head is then always an emptied log.
            if self._hmac_key is None:
                raise LogError(
                    "creating a consent log needs the server key (set CONSENT_SECRET_KEYS): "
                    "its first head is signed"
                )
            self.log_id = secrets.token_hex(16)
            yield Exec(self.sql.set_meta, ("log_id", self.log_id))
            yield Exec(self.sql.insert_head, self._signed_head(0, GENESIS, self._now(), GENESIS))
        return (before, SCHEMA_VERSION), None

    def _adopt_plan(self) -> Plan[None]:
        """At start: re-sign the head with the newest key when a listed older key (or the previous
        release's format) signed it, so it still verifies once that key is removed; sign it with the
        log signing key when it is not yet (rotating, with a checkpoint both keys sign, from an older
        one this server holds)."""
        head, last, cp_seq, cp_at = yield from self._read_state()
        keys = self.keys or {}
        problem = head.problem(keys)
        state = None
        step = head.ed25519_step(self.log_keys)
        if isinstance(step, str):
            problem = problem or step
        signer = self._signer
        unsigned = signer is not None and head.sig_key_id != signer.kid
        if problem is None and (unsigned or head.resign_reason(keys, self._key_id) is not None):
            chain = (yield from self._chain()) if head.needs_chain(last) else None
            try:
                state = trusted_state(head, last, chain, keys, cp_seq, cp_at)
            except LogUnavailable as e:
                problem = str(e)
            else:
                at = head.at or self._now()
                if isinstance(step, SigningKey):
                    at = self._now()
                    _, state = yield from self._insert_checkpoint(
                        state, state.seq, state.hash, at, "rotation", prior=step
                    )
                yield self._move_head(state, at)
        if problem is not None:
            logger.error("the consent log %s cannot be written: %s", self.name, problem)
        return None, state

    # --- the write side --------------------------------------------------------------------------

    def _version(self, payload: Mapping[str, Any] | None) -> tuple[str, str] | None:
        if payload is None:
            return None
        hit = self._version_cache.get(id(payload))
        if hit is not None and hit[0] is payload:
            return hit[1], hit[2]
        try:
            vid, text = version_id_for(payload)
        except (TypeError, ValueError) as e:
            raise InvalidDecision(f"the banner version is not JSON data: {e}") from None
        self._version_cache.put(id(payload), (payload, vid, text))
        return vid, text

    async def append(self, d: Decision) -> LoggedRecord:
        """Record a decision; return once it is durable. Raises LogUnavailable (fail closed)."""
        if self._hmac_key is None:
            raise LogUnavailable("the consent log was opened without a key: it can be read, not written")
        version = self._version(d.version)
        item = (prepare(d, version[0] if version else None), version)
        p, seq, at, prev_hash, hash_ = await self.writer.submit(item)
        return p.record(seq, at, prev_hash, hash_)

    async def add_blocked(self, b: BlockedAttempt) -> None:
        """Keep a CSP report, best effort: dropped (and counted) when the log is busy or failing."""
        self.writer.offer(b.sanitized())

    async def flush(self) -> None:
        """Wait until queued writes (CSP reports included) are done; for tests and shutdown."""
        await self.writer.flush()

    async def close(self) -> None:
        await self.writer.close()
        await self._close_driver()

    def commit_stats(self) -> WriterStats:
        """The group commit so far: batches, failures, how long commits take, the oldest wait."""
        return self.writer.stats()

    async def probe(self, timeout: float) -> None:
        """Whether a decision could be written now, without writing one: the writer runs, the write
        lock is taken within `timeout` seconds, the head is read and trusted as a write would, and
        the transaction is rolled back. LogUnavailable (or the driver's error) when not."""
        if self._hmac_key is None:
            raise LogUnavailable("the consent log was opened without a key: it can be read, not written")
        if not self.writer.running:
            raise LogUnavailable("the consent log's writer is stopped")
        await self._probe(self._probe_plan(), timeout)

    def _probe_plan(self) -> Plan[None]:
        yield from self._writable_state()
        return None, None

    @abstractmethod
    async def _probe(self, plan: Plan[None], timeout: float) -> None:
        """Run `plan` under the write lock, waiting at most `timeout` seconds for it, then roll back."""

    def _now(self) -> str:
        return format_at(self.clock())

    def _require_key(self) -> bytes:
        if self._hmac_key is None:
            raise LogError("this needs the server key: set CONSENT_SECRET_KEYS")
        return self._hmac_key

    async def _committed(self, plan: Plan[Committed]) -> list[Written]:
        kept, rows, at, outcomes, versions = await self._transact(plan)
        self._known_versions.update(versions)
        return written_settled(kept, rows, outcomes, at)

    def _commit_plan(
        self, items: list[Item], at: str, expected: HeadState | None, linked: tuple[list[Row], str] | None
    ) -> Plan[Committed]:
        """A batch of decisions: linked after the head found inside the lock. `linked` (rows linked at
        `at` after `expected`) is taken when the head is still `expected`, else the batch is linked
        afresh at a time taken inside the lock, so time order follows the chain."""
        state = yield from self._writable_state()
        kept, outcomes = items, None
        if has_gpc(items):
            ids = gpc_ids(items)
            latest = {cid: seq for cid, seq in (yield All(*self.sql.gpc_latest(ids)))}
            recorded = {(r[2], r[13]): r for r in (yield All(*self.sql.gpc_recorded(ids)))}
            kept, outcomes = settle_gpc(items, state.seq, latest, recorded)
            linked = None  # whether a GPC record is written at all depends on what the log holds
        if linked is None or state != expected:
            at = self._now()
            linked = link_rows([p for p, _ in kept], at, state.seq, state.hash)
        rows, new_head = linked
        versions = {v[0]: v[1] for _, v in kept if v is not None and v[0] not in self._known_versions}
        if versions:
            yield Insert(
                "versions", [(vid, at, text) for vid, text in versions.items()], ignore_conflicts=True
            )
        if rows:
            yield Insert("records", rows)
            state = state._replace(seq=state.seq + len(rows), hash=new_head)
            if self._due(state, at):
                _, state = yield from self._insert_checkpoint(state, state.seq, state.hash, at, "periodic")
            yield self._move_head(state, at)
        return (kept, rows, at, outcomes, versions), state

    def _due(self, state: HeadState, at: str, new_seq: int | None = None) -> bool:
        """Whether a batch ending at record `new_seq` (default: the state's) owes a periodic checkpoint."""
        seq = state.seq if new_seq is None else new_seq
        return checkpoint_due(
            seq, state.cp_seq, state.cp_at, at, self.checkpoint_every, self.checkpoint_interval
        )

    async def _commit_blocked(self, attempts: list[BlockedAttempt]) -> None:
        if attempts:
            await self._transact(self._blocked_plan(attempts))

    def _blocked_plan(self, attempts: list[BlockedAttempt]) -> Plan[None]:
        at = self._now()
        rows = [
            (format_at(a.at) if a.at else at, a.page, a.origin, a.directive, a.consent_id, a.client)
            for a in attempts
        ]
        yield Insert("blocked", rows)
        self._blocked_since_prune += len(rows)
        if self._blocked_since_prune >= BLOCKED_PRUNE_EVERY:
            # Only a network that reported since the last pruning can have outgrown its share.
            recent, self._blocked_since_prune = self._blocked_since_prune, 0
            yield Exec(self.sql.prune_blocked_per_client, (recent, BLOCKED_PER_CLIENT))
            yield Exec(self.sql.prune_blocked, (BLOCKED_KEEP,))
        return None, None

    async def checkpoint(self, reason: str = "manual") -> Checkpoint:
        """Sign the current head now (to export and pin elsewhere)."""
        return await self._transact(self._checkpoint_plan(reason))

    def _checkpoint_plan(self, reason: str) -> Plan[Checkpoint]:
        state = yield from self._writable_state()
        row = yield One(self.sql.checkpoint_at, (state.seq, None))
        if row is not None:
            return Checkpoint(self.log_id, *row), state
        at = self._now()
        cp, state = yield from self._insert_checkpoint(state, state.seq, state.hash, at, reason)
        yield self._move_head(state, at)
        return cp, state

    async def purge(self, older_than: timedelta) -> PurgeResult:
        """Remove records older than `older_than`, anchored by a signed checkpoint; log the purge. R21."""
        self._require_key()
        try:
            return await self._transact(self._purge_plan(older_than))
        except self.read_errors as e:
            raise LogUnavailable(f"the purge failed and was rolled back: {e}") from e

    def _purge_plan(self, older_than: timedelta) -> Plan[PurgeResult]:
        cutoff = format_at(self.clock() - older_than)
        state = yield from self._writable_state()
        seq0 = state.seq
        # Only a prefix of the chain can go: up to the first record at or after the cutoff.
        (first_kept,) = yield One(self.sql.first_kept, (cutoff,))
        through = (first_kept - 1) if first_kept is not None else seq0
        removed, through_hash = yield One(self.sql.purge_span, (through, through))
        anchor = None
        at = self._now()
        if removed:
            row = yield One(self.sql.checkpoint_at, (through, "purge"))
            if row is not None:
                anchor = Checkpoint(self.log_id, *row)
            else:
                anchor, state = yield from self._insert_checkpoint(state, through, through_hash, at, "purge")
            yield Exec(self.sql.delete_through, (through,))
        p = purge_record(cutoff, older_than.days, removed, through, anchor.hash if anchor else None)
        (row,), new_head = link_rows([p], at, seq0, state.hash)
        yield Insert("records", [row])
        state = state._replace(seq=seq0 + 1, hash=new_head)
        yield self._move_head(state, at)
        result = PurgeResult(removed, through if removed else 0, cutoff, anchor, LoggedRecord.from_row(row))
        return result, state

    # --- the head and the checkpoint chain, as a writer sees them ----------------------------------

    def _read_state(self) -> Part[tuple[SignedHead, CheckpointLink | None, int | None, str | None]]:
        """The head (locked), the last checkpoint of the chain, and (seq, at) of the newest checkpoint."""
        row = yield One(self.sql.head_for_update)
        if row is None:
            raise LogError("the consent log's head row is missing: the log was tampered with")
        n, prev, mac, cp_seq, cp_at = yield One(self.sql.last_checkpoints)
        last = CheckpointLink(n, prev, mac) if n is not None else None
        return SignedHead(self.log_id, *row), last, cp_seq, cp_at

    def _chain(self) -> Part[list[CheckpointLink]]:
        rows = yield All(self.sql.chain_links)
        return [CheckpointLink(*r) for r in rows]

    def _writable_state(self) -> Part[HeadState]:
        """Inside the write lock: the state to build on. The head this process wrote last stands as
        remembered; any other must be signed by a listed key and agree with the checkpoints."""
        head, last, cp_seq, cp_at = yield from self._read_state()
        state = self._state
        if state is not None and state.is_head(head):
            return state._replace(cp_seq=cp_seq, cp_at=cp_at)
        chain = (yield from self._chain()) if head.needs_chain(last) else None
        state = trusted_state(head, last, chain, self.keys or {}, cp_seq, cp_at)
        step = head.ed25519_step(self.log_keys)
        if isinstance(step, str):
            raise LogUnavailable(
                f"the consent log will not write after a head it cannot trust: {step}; "
                "run `consent-banner log verify`"
            )
        if isinstance(step, SigningKey):  # another process still signed with the older key
            at = self._now()
            _, state = yield from self._insert_checkpoint(
                state, state.seq, state.hash, at, "rotation", prior=step
            )
            yield self._move_head(state, at)
        return state

    def _insert_checkpoint(
        self, state: HeadState, seq: int, hash_: str, at: str, reason: str, prior: SigningKey | None = None
    ) -> Part[tuple[Checkpoint, HeadState]]:
        """The next checkpoint of the chain after `state`, stored; and the state with it (then move
        the head to that state: the head signs the chain's new tip). Signed with the HMAC and, when
        a log signing key is set, with Ed25519; `prior`: a rotation, which the older key signs too
        (its reason `rotation/<n>`: rotation_reason)."""
        key = self._require_key()
        assert self._key_id is not None
        n, prev = state.checkpoints + 1, state.tip
        if prior is not None:
            reason = rotation_reason(n)
        mac = checkpoint_mac(key, self.log_id, seq, hash_, at, reason, n, prev)
        cp = Checkpoint(self.log_id, seq, hash_, at, reason, self._key_id, mac, n, prev)
        if self._signer is not None:
            prior_kid = prior.kid if prior is not None else None
            cp = replace(cp, sig_key_id=self._signer.kid, prior_key_id=prior_kid)
            message = cp.ed25519_message()
            cp = replace(
                cp,
                sig=self._signer.sign(message),
                prior_sig=prior.sign(message) if prior is not None else None,
            )
        yield Exec(
            self.sql.insert_checkpoint,
            (
                seq,
                hash_,
                at,
                reason,
                self._key_id,
                mac,
                n,
                prev,
                cp.sig_key_id,
                cp.sig,
                cp.prior_key_id,
                cp.prior_sig,
            ),
        )
        newest = seq >= (state.cp_seq or 0)  # of two at one record, the later signed counts
        return cp, state._replace(
            checkpoints=n,
            tip=checkpoint_link(prev, mac),
            cp_seq=seq if newest else state.cp_seq,
            cp_at=at if newest else state.cp_at,
        )

    def _signed_head(
        self, seq: int, hash_: str, at: str, tip: str
    ) -> tuple[int, str, str, str | None, str, str, str | None, str | None]:
        """(seq, hash, at, key_id, mac, checkpoints, sig_key_id, sig): the head row, signed with the
        newest HMAC key and the log signing key (when set)."""
        mac = head_mac(self._require_key(), self.log_id, seq, hash_, at, tip)
        signer = self._signer
        if signer is None:
            return (seq, hash_, at, self._key_id, mac, tip, None, None)
        sig = signer.sign(ed25519_message("head", self.log_id, seq, hash_, at, None, tip, signer.kid))
        return (seq, hash_, at, self._key_id, mac, tip, signer.kid, sig)

    def _move_head(self, state: HeadState, at: str) -> Exec:
        return Exec(self.sql.move_head, self._signed_head(state.seq, state.hash, at, state.tip))
