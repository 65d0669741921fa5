"""Fixtures for the consent-log tests: a log per backend, keys, decisions.

Every test that takes `log_url` runs against SQLite and, when CONSENT_TEST_POSTGRES_DSN is set,
against PostgreSQL too (each test in a schema of its own, so parallel workers never collide).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from consent_banner.log import Decision, derive_hmac_key, open_log

PG_ENV = "CONSENT_TEST_POSTGRES_DSN"
PG_DSN = os.environ.get(PG_ENV)
needs_postgres = pytest.mark.skipif(
    not PG_DSN,
    reason=f"{PG_ENV} is not set: PostgreSQL log tests need a server (e.g. "
    "postgresql://postgres@127.0.0.1:5432/test)",
)

SECRET = "s" * 40
KEY = derive_hmac_key(SECRET)

VERSION_EN = {
    "language": "en",
    "config_hash": "c" * 64,
    "texts": {"title": "We use cookies", "accept_all": "Accept all", "reject_all": "Reject all"},
    "categories": {"necessary": {"label": "Necessary"}, "analytics": {"label": "Statistics"}},
    "services": [{"name": "plausible", "category": "analytics"}],
}


def pg_schema_url(dsn: str, schema: str) -> str:
    sep = "&" if "?" in dsn else "?"
    return f"{dsn}{sep}schema={schema}"


async def drop_pg_schema(dsn: str, schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, needs_postgres])])
async def log_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty log location on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'consent-log.db'}"
        return
    assert PG_DSN is not None
    schema = f"cbtest_{secrets.token_hex(6)}"
    try:
        yield pg_schema_url(PG_DSN, schema)
    finally:
        await drop_pg_schema(PG_DSN, schema)


@pytest.fixture
async def pg_log_url() -> AsyncIterator[str]:
    """A fresh, empty log location on PostgreSQL only, for what only PostgreSQL has (roles, grants);
    a test taking it is marked `needs_postgres` too."""
    assert PG_DSN is not None
    schema = f"cbtest_{secrets.token_hex(6)}"
    try:
        yield pg_schema_url(PG_DSN, schema)
    finally:
        await drop_pg_schema(PG_DSN, schema)


@pytest.fixture
async def log(log_url: str) -> AsyncIterator[Any]:
    lg = await open_log(log_url, hmac_key=KEY)
    try:
        yield lg
    finally:
        await lg.close()


@pytest.fixture
def decision() -> Callable[..., Decision]:
    def make(**kw: Any) -> Decision:
        base: dict[str, Any] = dict(
            consent_id=secrets.token_urlsafe(16)[:22],
            action="accept_all",
            granted=("necessary", "analytics", "marketing"),
            denied=(),
            services={"plausible": True},
            revision="2026-01",
            language="en",
            source="banner",
            ip="203.0.113.0",
            browser="Firefox",
            version=VERSION_EN,
        )
        base.update(kw)
        return Decision(**base)

    return make
