"""Fixtures of the reliability suite: hypothesis profiles, servers in their own processes, logs.

Hypothesis: the profile comes from the environment and is applied to this suite's tests only
(`@FUZZ`), never loaded globally, so the rest of the test suite keeps its own example counts.
CI=true (or CONSENT_FUZZ_PROFILE=ci): 10,000 examples per property, derandomized; locally 1,000.
CONSENT_FUZZ_EXAMPLES=N overrides the count.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, settings

from ..conftest import KEY, MODEL_TOML
from ..support.servers import free_port  # also imported from here by test_secrets, test_forgery

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
PG_ENV = "CONSENT_TEST_POSTGRES_DSN"
PG_DSN = os.environ.get(PG_ENV)
PG_SKIP_REASON = (
    f"{PG_ENV} is not set: the PostgreSQL reliability tests need a server "
    "(e.g. postgresql://postgres@127.0.0.1:5432/test)"
)
needs_postgres = pytest.mark.skipif(not PG_DSN, reason=PG_SKIP_REASON)

# --- hypothesis ----------------------------------------------------------------------------------

_CI = (
    os.environ.get("CI", "").lower() in ("1", "true", "yes") or os.environ.get("CONSENT_FUZZ_PROFILE") == "ci"
)
FUZZ_EXAMPLES = int(os.environ.get("CONSENT_FUZZ_EXAMPLES", "10000" if _CI else "1000"))
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    derandomize=_CI,
    deadline=None,
    database=None if _CI else settings.default.database,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    print_blob=True,
)

# --- config ---------------------------------------------------------------------------------------


def write_config(directory: Path, log_url: str | None = None, **top: Any) -> Path:
    """The model consent.toml of tests/conftest.py with its log at `log_url` (default: a SQLite
    file in `directory`); `top` replaces top-level keys given as TOML literals. The decision rate
    limit is off unless `top` sets it: this suite sends thousands of decisions from one address."""
    top = {"decision_rate_limit": '"off"', **top}
    text = textwrap.dedent(MODEL_TOML.format(db=directory / "log.db"))
    if log_url is not None:
        text = re.sub(r'(?m)^log = ".*"$', f"log = {json.dumps(log_url)}", text)
    for key, literal in top.items():
        text, n = re.subn(rf"(?m)^{key} = .*$", f"{key} = {literal}", text)
        if not n:
            text = f"{key} = {literal}\n" + text
    path = directory / "consent.toml"
    path.write_text(text)
    return path


def sqlite_path(url: str) -> Path:
    return Path(url.removeprefix("sqlite:///"))


# --- PostgreSQL -----------------------------------------------------------------------------------


def pg_url(schema: str) -> str:
    assert PG_DSN is not None
    return f"{PG_DSN}{'&' if '?' in PG_DSN else '?'}schema={schema}"


async def drop_schema(schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, needs_postgres])])
async def log_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty log location, on SQLite and (when CONSENT_TEST_POSTGRES_DSN is set) PostgreSQL,
    where each test gets a schema of its own (parallel workers never meet)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'log.db'}"
        return
    schema = f"cbrel_{secrets.token_hex(6)}"
    try:
        yield pg_url(schema)
    finally:
        await drop_schema(schema)


# --- raw access to a log, bypassing the library ---------------------------------------------------


class RawLog:
    """SQL on a log's tables as an auditor with database access (or an attacker) would run it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.postgres = url.startswith(("postgresql://", "postgres://"))

    async def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return await self._run(sql, args, fetch=True)

    async def execute(self, *statements: str) -> None:
        for sql in statements:
            await self._run(sql, (), fetch=False)

    async def _run(self, sql: str, args: Sequence[Any], *, fetch: bool) -> list[tuple[Any, ...]]:
        if self.postgres:
            import asyncpg

            dsn, _, query = self.url.partition("?")
            schema = dict(p.split("=", 1) for p in query.split("&"))["schema"]
            conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
            try:
                n = iter(range(1, 100))
                pg_sql = re.sub(r"\?", lambda _: f"${next(n)}", sql)
                if fetch:
                    return [tuple(r) for r in await conn.fetch(pg_sql, *args)]
                await conn.execute(pg_sql, *args)
                return []
            finally:
                await conn.close()
        import sqlite3

        db = sqlite3.connect(sqlite_path(self.url), isolation_level=None, timeout=30)
        try:
            if fetch:
                return list(db.execute(sql, args).fetchall())
            db.executescript(sql) if not args else db.execute(sql, args)
            return []
        finally:
            db.close()

    async def consent_ids(self) -> list[str]:
        return [r[0] for r in await self.fetch("SELECT consent_id FROM records ORDER BY seq")]

    async def count(self) -> int:
        return int((await self.fetch("SELECT count(*) FROM records"))[0][0])


def verify_cli(config: Path, *, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any] | str]:
    """`consent-banner log verify --config PATH --json`: (exit status, the JSON or the raw output)."""
    proc = subprocess.run(
        [str(VENV_BIN / "consent-banner"), "log", "verify", "--config", str(config), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CONSENT_SECRET_KEYS": KEY, **(env or {})},
        cwd=config.parent,
    )
    try:
        return proc.returncode, json.loads(proc.stdout)
    except ValueError:
        return proc.returncode, proc.stdout + proc.stderr


# --- servers in their own processes ---------------------------------------------------------------


class ServerProcess:
    """uvicorn serving tests/reliability/served_app.py in a process group of its own."""

    def __init__(
        self,
        *,
        log_url: str,
        workdir: Path,
        app: str = "demo",
        config: Path | None = None,
        workers: int = 1,
        keys: str = KEY,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.log_url, self.workdir, self.app, self.config = log_url, workdir, app, config
        self.workers, self.keys, self.extra_env = workers, keys, extra_env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.stderr_path = workdir / f"uvicorn-{secrets.token_hex(3)}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> ServerProcess:
        self.port = free_port()
        env = {
            **os.environ,
            "CONSENT_SECRET_KEYS": self.keys,
            "CONSENT_RELIABILITY_APP": self.app,
            "CONSENT_RELIABILITY_LOG": self.log_url,
            "PYTHONPATH": str(ROOT),
            **self.extra_env,
        }
        if self.config is not None:
            env["CONSENT_RELIABILITY_CONFIG"] = str(self.config)
        cmd = [
            sys.executable, "-m", "uvicorn", "--factory", "tests.reliability.served_app:create_app",
            "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning", "--no-access-log",
        ]  # fmt: skip
        if self.workers > 1:
            cmd += ["--workers", str(self.workers)]
        with self.stderr_path.open("ab") as err:
            self.proc = subprocess.Popen(
                cmd, cwd=self.workdir, env=env, stdout=err, stderr=err, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"uvicorn exited ({self.proc.returncode}):\n{self.output()}")
            try:
                r = httpx.get(f"{self.url}/_consent/state", timeout=2)
                if r.status_code == 200 and (self.workers == 1 or self._all_workers_up()):
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"uvicorn did not answer within {timeout} s:\n{self.output()}")

    def _all_workers_up(self) -> bool:
        # Every worker process imports the app before accepting; with N children alive, all listen.
        assert self.proc is not None
        out = subprocess.run(["pgrep", "-g", str(self.proc.pid)], capture_output=True, text=True).stdout
        return len(out.split()) >= self.workers + 1

    def output(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def kill(self) -> None:
        """kill -9 the whole group (the server and any workers): no shutdown code runs."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        """A graceful stop (SIGTERM: lifespan shutdown closes the log), kill -9 after 20 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.kill()
        with contextlib.suppress(ProcessLookupError):  # orphaned workers, if any
            os.killpg(self.proc.pid, signal.SIGKILL)


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    """Every ServerProcess a test appends here is stopped when it ends, pass or fail."""
    started: list[ServerProcess] = []
    yield started
    for s in started:
        s.kill()


# --- clients ----------------------------------------------------------------------------------------

DECISIONS = (
    {"action": "accept_all"},
    {"action": "reject_all"},
    {"action": "custom", "categories": ["analytics"]},
)


async def post_decision(client: httpx.AsyncClient, base: str, body: dict[str, Any]) -> httpx.Response:
    """One decision from a brand-new visitor, same-origin as a browser would send it. The explicit
    Cookie header keeps the client's jar out of it: every decision gets a consent id of its own."""
    return await client.post(f"{base}/_consent", json=body, headers={"origin": base, "cookie": "visitor=new"})


def run(coro: Any) -> Any:
    return asyncio.run(coro)
