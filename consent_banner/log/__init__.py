"""The consent log: append-only, hash-chained, privacy-minimal, on SQLite or PostgreSQL.

    log = await open_log("sqlite:///consent-log.db", hmac_key=derive_hmac_key(secret_keys[-1]))
    record = await log.append(Decision(...))   # returns once durable; LogUnavailable otherwise
    await log.close()

`hmac_key` signs the chain head and the checkpoints; derive it from the newest server key with
`derive_hmac_key()` (and pass older ones as `previous_hmac_keys` so old checkpoints still verify).

To read (verify, export, stats, the audit view), open it read-only: nothing is written, no lock is
taken, no schema changed, no file made; it works with read-only credentials:

    log = await open_log(url, hmac_key=None, previous_hmac_keys=keys, read_only=True)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..consent import SOURCES
from ..display import mask_passwords
from ..errors import InvalidDecision, LogError
from .chain import GENESIS, record_hash
from .checkpoints import Checkpoint
from .filters import RecordFilter
from .privacy import browser_family, truncate_ip
from .protocol import ConsentLog
from .records import ACTIONS, BlockedAttempt, Decision, LoggedRecord
from .results import BlockedOrigin, BlockedSummary, LogStats, PurgeResult, VerifyResult
from .signing import derive_hmac_key
from .verify import ChainVerifier

__all__ = [
    "ACTIONS",
    "GENESIS",
    "SOURCES",
    "BlockedAttempt",
    "BlockedOrigin",
    "BlockedSummary",
    "ChainVerifier",
    "Checkpoint",
    "ConsentLog",
    "Decision",
    "InvalidDecision",
    "LogStats",
    "LoggedRecord",
    "PurgeResult",
    "RecordFilter",
    "VerifyResult",
    "browser_family",
    "derive_hmac_key",
    "hmac_keys_from_secrets",
    "open_log",
    "record_hash",
    "truncate_ip",
]


def hmac_keys_from_secrets(secret_keys: Sequence[str]) -> tuple[bytes, list[bytes]]:
    """(key to sign with, older keys to verify with) from CONSENT_SECRET_KEYS (newest last)."""
    if not secret_keys:
        raise LogError("no server key: set CONSENT_SECRET_KEYS")
    derived = [derive_hmac_key(k) for k in secret_keys]
    return derived[-1], derived[:-1]


async def open_log(
    url: str,
    *,
    hmac_key: bytes | None,
    previous_hmac_keys: Sequence[bytes] = (),
    create: bool = True,
    read_only: bool = False,
    migrate: bool = False,
    **options: Any,
) -> ConsentLog:
    """Open the log at `url`: to write (creating a new log; its writer started), or to read only.

    url: "sqlite:///relative/path.db", "sqlite:////absolute/path.db", "memory://" (SQLite in
    memory, for tests and demos), or "postgresql://user@host/db[?schema=name]".
    hmac_key: signs the head and checkpoints. Creating a log needs it: a new log's head is signed
    from the start. None (and not `migrate`) opens the log read-only.
    read_only: open to read only: no writer, no write lock, no DDL, and on SQLite `mode=ro` (no file
    created or written, a read-only directory is fine); on PostgreSQL, read-only transactions that
    a role with only USAGE and SELECT can run. A log of an older schema is read as it is; appends,
    checkpoints and purges are refused. Signatures are checked with `hmac_key` and
    `previous_hmac_keys`. Raises LogError when there is no log.
    migrate: upgrade a log of an older schema (what `consent-banner log migrate` does). Without it a
    writer refuses such a log with LogNeedsMigration ("run consent-banner log migrate"); a new log
    is created either way.
    create: False refuses to create a new SQLite file.
    options: checkpoint_every (records), checkpoint_interval (seconds), max_batch (records), clock.
    Raises LogUnavailable when the database cannot be reached or opened.
    """
    read_only = read_only or (hmac_key is None and not migrate)  # nothing to sign with: nothing to write
    keys = {"hmac_key": hmac_key, "previous_hmac_keys": previous_hmac_keys, "read_only": read_only}
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres import open_postgres

        return await open_postgres(url, migrate=migrate, **keys, **options)
    if url.startswith(("sqlite:///", "memory://")):
        from .sqlite import open_sqlite

        return await open_sqlite(url, create=create, migrate=migrate, **keys, **options)
    raise LogError(
        f"{mask_passwords(url)!r}: the log URL must start with sqlite:///, postgresql:// or memory://"
    )
