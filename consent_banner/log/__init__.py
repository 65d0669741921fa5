"""The consent log: append-only, hash-chained, privacy-minimal, on SQLite or PostgreSQL.

    log = await open_log("sqlite:///consent-log.db", hmac_key=derive_hmac_key(secret_keys[-1]))
    record = await log.append(Decision(...))   # returns once durable; LogUnavailable otherwise
    await log.close()

`hmac_key` signs the chain head and the checkpoints; derive it from the newest server key with
`derive_hmac_key()` (and pass older ones as `previous_hmac_keys` so old checkpoints still verify).
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
    **options: Any,
) -> ConsentLog:
    """Open (and create or migrate) the log at `url` and start its writer.

    url: "sqlite:///relative/path.db", "sqlite:////absolute/path.db", "memory://" (SQLite in
    memory, for tests and demos), or "postgresql://user@host/db[?schema=name]".
    hmac_key: signs the head and checkpoints; None opens the log read-only (appends refused;
    signatures are checked with `previous_hmac_keys`, if any). Creating a log needs it: a new
    log's head is signed from the start.
    create: False refuses to create a new SQLite file (the CLI's read commands).
    options: checkpoint_every (records), checkpoint_interval (seconds), max_batch (records), clock.
    Raises LogUnavailable when the database cannot be reached or opened.
    """
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres import open_postgres

        return await open_postgres(url, hmac_key=hmac_key, previous_hmac_keys=previous_hmac_keys, **options)
    if url.startswith(("sqlite:///", "memory://")):
        from .sqlite import open_sqlite

        return await open_sqlite(
            url, hmac_key=hmac_key, previous_hmac_keys=previous_hmac_keys, create=create, **options
        )
    raise LogError(
        f"{mask_passwords(url)!r}: the log URL must start with sqlite:///, postgresql:// or memory://"
    )
