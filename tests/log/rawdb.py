"""Direct access to a log's tables, bypassing the library: how the tests tamper and look."""

from __future__ import annotations

import re
import sqlite3
from typing import Any
from urllib.parse import parse_qs, urlsplit


class RawDB:
    """`?` placeholders on both backends; PostgreSQL gets them rewritten to $1, $2, ..."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.postgres = url.startswith(("postgresql://", "postgres://"))
        self._sqlite: sqlite3.Connection | None = None
        self._pg: Any = None

    async def __aenter__(self) -> RawDB:
        if self.postgres:
            import asyncpg

            parts = urlsplit(self.url)
            schema = parse_qs(parts.query)["schema"][0]
            dsn = parts._replace(query="").geturl()
            self._pg = await asyncpg.connect(dsn, server_settings={"search_path": schema})
        else:
            self._sqlite = sqlite3.connect(
                self.url.removeprefix("sqlite:///"), isolation_level=None, timeout=10
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._pg is not None:
            await self._pg.close()
        if self._sqlite is not None:
            self._sqlite.close()

    def _pg_sql(self, sql: str) -> str:
        n = iter(range(1, 1000))
        return re.sub(r"\?", lambda _: f"${next(n)}", sql)

    async def execute(self, sql: str, *args: Any) -> None:
        if self._pg is not None:
            await self._pg.execute(self._pg_sql(sql), *args)
        else:
            assert self._sqlite is not None
            self._sqlite.execute(sql, args)

    async def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        if self._pg is not None:
            return [tuple(r) for r in await self._pg.fetch(self._pg_sql(sql), *args)]
        assert self._sqlite is not None
        return list(self._sqlite.execute(sql, args).fetchall())

    async def fetchval(self, sql: str, *args: Any) -> Any:
        rows = await self.fetch(sql, *args)
        return rows[0][0] if rows else None

    # --- sabotage ---------------------------------------------------------------------------------

    async def break_inserts(self) -> None:
        """Make every insert into records fail, as a full disk or a lost server would."""
        if self.postgres:
            await self.execute(
                "CREATE OR REPLACE FUNCTION sabotage() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'disk full'; END $$"
            )
            await self.execute(
                "CREATE TRIGGER sabotage BEFORE INSERT ON records FOR EACH ROW EXECUTE FUNCTION sabotage()"
            )
        else:
            await self.execute(
                "CREATE TRIGGER sabotage BEFORE INSERT ON records BEGIN SELECT RAISE(ABORT, 'disk full'); END"
            )

    async def repair_inserts(self) -> None:
        await self.execute("DROP TRIGGER sabotage" + (" ON records" if self.postgres else ""))

    async def allow_tampering(self) -> None:
        """Drop the append-only triggers, as someone with write access to the database could."""
        if self.postgres:
            await self.execute("DROP TRIGGER IF EXISTS records_append_only ON records")
            await self.execute("DROP TRIGGER IF EXISTS versions_immutable ON versions")
            await self.execute("DROP TRIGGER IF EXISTS checkpoints_immutable ON checkpoints")
            await self.execute("DROP TRIGGER IF EXISTS checkpoints_kept ON checkpoints")
        else:
            for t in (
                "records_append_only",
                "versions_immutable_u",
                "versions_immutable_d",
                "checkpoints_immutable",
                "checkpoints_kept",
            ):
                await self.execute(f"DROP TRIGGER IF EXISTS {t}")
