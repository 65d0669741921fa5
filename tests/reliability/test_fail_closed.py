"""Fail closed: when the log cannot write, nobody gets a consent that is not on record (R23, R33).

A read-only log (a read-only filesystem), a full disk (a tiny tmpfs) and an unreachable PostgreSQL
(a loopback proxy in front of it that the test stops and starts). In each case a decision answers
503 with no granting cookie, the gate keeps the visitor as they were (undecided, or their last
recorded choice), and the same app instance records again once the log is back, chain intact.
The tmpfs tests need mount(8) (root); where it is not permitted they run on a failing backend
instead (the filesystem made unwritable by permissions, or the write path raising ENOSPC).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from consent_banner import ConsentConfig

from ..conftest import make_app
from .asgi_driver import Answer, call
from .conftest import PG_DSN, drop_schema, needs_postgres, pg_url, write_config

HOST = b"testserver"
SAME = [(b"origin", b"http://testserver"), (b"content-type", b"application/json")]
ACCEPT = json.dumps({"action": "accept_all"}).encode()
REJECT = json.dumps({"action": "reject_all"}).encode()


# --- helpers ------------------------------------------------------------------------------------------


async def decide(app: Any, body: bytes = ACCEPT, cookie: str | None = None) -> Answer:
    headers = [*SAME, *([(b"cookie", f"consent={cookie}".encode())] if cookie else [])]
    return await call(app, "POST", "/_consent", headers=headers, body=body, host=HOST)


async def whoami(app: Any, cookie: str | None = None) -> dict[str, Any]:
    headers = [(b"cookie", f"consent={cookie}".encode())] if cookie else []
    answer = await call(app, "GET", "/whoami", headers=headers, host=HOST)
    return json.loads(answer.body)


def assert_refused(answer: Answer, app: Any) -> None:
    """503 and no cookie that would count as a decision."""
    assert answer.status == 503, (answer.status, answer.body)
    cookie = answer.set_cookie("consent")
    assert cookie is None or not app.codec.decode(cookie).decided, "a granting cookie with a 503"


async def until_recorded(app: Any, attempts: int = 50) -> Answer:
    """Recovery by itself: the same app records again within a few seconds of the log coming back."""
    for _ in range(attempts):
        answer = await decide(app)
        if answer.status == 200:
            return answer
        assert_refused(answer, app)
        await asyncio.sleep(0.1)
    raise AssertionError(f"the log came back but decisions still fail: {answer.status} {answer.body!r}")


async def assert_log_intact(app: Any, acked: list[str]) -> None:
    log = await app.log()
    ids = {r.consent_id for cid in acked for r in await log.records_for(cid)}
    assert ids == set(acked), f"acknowledged but missing: {set(acked) - ids}"
    result = await log.verify()
    assert result.ok, result.message


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[bool]:
    """A tmpfs of `size` at `path`; yields False (nothing mounted) where mounting is not permitted."""
    path.mkdir()
    mounted = os.geteuid() == 0 and _mount("-t", "tmpfs", "-o", f"size={size},mode=0777", "tmpfs", str(path))
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def set_immutable(directory: Path, on: bool) -> bool:
    """chattr +i / -i on the log's directory and every file in it: even root's open file descriptors
    can no longer write (EPERM), which is what a read-only log looks like to a running server.
    The -shm file stays writable: SQLite maps it into memory, and a mapped page of an immutable
    file kills the process with SIGBUS (a crash of the test's making, not a read-only log).
    False where chattr is not available or not permitted."""
    paths = [directory, *(p for p in directory.iterdir() if not p.name.endswith("-shm"))]
    done = subprocess.run(["chattr", "+i" if on else "-i", *map(str, paths)], capture_output=True)
    return done.returncode == 0


@contextlib.contextmanager
def read_only(directory: Path, log: Any | None) -> Iterator[str]:
    """The log read-only for the duration: chattr +i, or (without it) a backend whose writes fail."""
    if set_immutable(directory, True):
        try:
            yield "chattr +i"
        finally:
            set_immutable(directory, False)
        return
    if log is None:
        pytest.skip("chattr +i is not permitted here, and there is no open log to make fail")
    original = log._commit  # noqa: SLF001 - the fallback needs the backend's write path

    async def failing(items: Any) -> Any:
        raise OSError(errno.EROFS, "Read-only file system (simulated)")

    log._commit = failing  # noqa: SLF001
    try:
        yield "simulated"
    finally:
        log._commit = original  # noqa: SLF001


@pytest.fixture
async def closing() -> AsyncIterator[list[Any]]:
    apps: list[Any] = []
    yield apps
    for app in apps:
        with contextlib.suppress(Exception):
            await app.close()


# --- SQLite --------------------------------------------------------------------------------------------


async def test_read_only_log_refuses_then_recovers(tmp_path: Path, closing: list[Any]) -> None:
    """R23, R33: the log's files turn read-only under a running app: decisions answer 503
    without a granting cookie, an undecided visitor stays undecided and a visitor who rejected keeps
    their rejection; when it is writable again the same app records again, nothing acknowledged lost."""
    logdir = tmp_path / "logdir"
    logdir.mkdir()
    config = ConsentConfig.from_toml(write_config(tmp_path, f"sqlite:///{logdir / 'log.db'}"))
    app = make_app(config)
    closing.append(app)
    first = await decide(app, REJECT)
    assert first.status == 200
    rejected = first.set_cookie("consent")
    acked = [json.loads(first.body)["consent_id"]]

    with read_only(logdir, await app.log()):
        for _ in range(3):
            assert_refused(await decide(app), app)
        assert (await whoami(app))["decided"] is False
        refused = await decide(app, ACCEPT, cookie=rejected)
        assert_refused(refused, app)
        who = await whoami(app, rejected)
        assert who["decided"] and not who["analytics"] and not who["marketing"]
    back = await until_recorded(app)
    acked.append(json.loads(back.body)["consent_id"])
    await assert_log_intact(app, acked)


async def test_log_on_a_read_only_filesystem_from_the_start(tmp_path: Path, closing: list[Any]) -> None:
    """R23, R33: an app whose log file is read-only when it starts answers 503 to decisions (never a cookie)
    and opens it by itself once the filesystem is writable."""
    logdir = tmp_path / "logdir"
    logdir.mkdir()
    config = ConsentConfig.from_toml(write_config(tmp_path, f"sqlite:///{logdir / 'log.db'}"))
    creator = make_app(config)  # an earlier run created the log, then the files were locked down
    assert (await decide(creator)).status == 200
    await creator.close()
    app = make_app(config)
    closing.append(app)
    with read_only(logdir, None):
        assert_refused(await decide(app), app)
        assert (await whoami(app))["decided"] is False
    answer = await until_recorded(app)
    await assert_log_intact(app, [json.loads(answer.body)["consent_id"]])


async def test_full_disk_refuses_then_recovers(tmp_path: Path, closing: list[Any]) -> None:
    """R23, R33: the disk fills up (a 2 MB tmpfs and a filler file): every decision answered 200 is
    in the log, the first that cannot be written answers 503 without a cookie, and after space is
    freed the same app records again with the chain intact."""
    mnt = tmp_path / "logfs"
    with tmpfs(mnt, "2m") as mounted:
        config = ConsentConfig.from_toml(write_config(tmp_path, f"sqlite:///{mnt / 'log.db'}"))
        app = make_app(config)
        closing.append(app)
        first = await decide(app)
        assert first.status == 200
        acked = [json.loads(first.body)["consent_id"]]
        filler = mnt / "filler"
        log = await app.log()
        original_commit = log._commit  # noqa: SLF001 - only where no tmpfs can be mounted
        if mounted:
            fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                while os.write(fd, b"\0" * 4096):
                    pass
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
            finally:
                os.close(fd)
        else:

            async def full(items: Any) -> Any:
                raise OSError(errno.ENOSPC, "No space left on device (simulated)")

            log._commit = full  # noqa: SLF001
        refused = None
        for _ in range(3000):  # the WAL may still have room for a few
            answer = await decide(app)
            if answer.status != 200:
                refused = answer
                break
            acked.append(json.loads(answer.body)["consent_id"])
        assert refused is not None, "the disk never filled up"
        assert_refused(refused, app)
        assert_refused(await decide(app), app)
        assert (await whoami(app))["decided"] is False
        if mounted:
            filler.unlink()
        else:
            log._commit = original_commit  # noqa: SLF001
        back = await until_recorded(app)
        acked.append(json.loads(back.body)["consent_id"])
        await assert_log_intact(app, acked)
        print(f"\n[fail-closed] full disk ({'tmpfs' if mounted else 'simulated'}): {len(acked)} recorded")


# --- PostgreSQL ------------------------------------------------------------------------------------------


class Proxy:
    """A loopback TCP proxy to PostgreSQL that can be stopped (connections cut) and started again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.server: asyncio.base_events.Server | None = None
        self.port = 0
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for w in list(self.writers):
                w.transport.abort()
            await self.server.wait_closed()
            self.server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.writers -= {writer, up_writer}


@needs_postgres
@pytest.mark.postgres
async def test_postgres_unreachable_refuses_then_recovers(tmp_path: Path, closing: list[Any]) -> None:
    """R23, R33: PostgreSQL unreachable when the app starts, then again under a running app: 503,
    no granting cookie, visitor undecided; each time it comes back the app records by itself."""
    assert PG_DSN is not None
    target = urlsplit(PG_DSN)
    proxy = Proxy((target.hostname or "127.0.0.1", target.port or 5432))
    await proxy.start()
    await proxy.stop()  # the port is known and now closed
    schema = f"cbrel_{os.urandom(6).hex()}"
    via_proxy = pg_url(schema).replace(
        target.netloc, f"{target.username or 'postgres'}@127.0.0.1:{proxy.port}"
    )
    config = ConsentConfig.from_toml(write_config(tmp_path, via_proxy))
    app = make_app(config)
    closing.append(app)
    try:
        assert_refused(await decide(app), app)
        assert (await whoami(app))["decided"] is False
        await proxy.start()
        acked = [json.loads((await until_recorded(app)).body)["consent_id"]]
        await proxy.stop()
        for _ in range(3):
            assert_refused(await decide(app), app)
        assert (await whoami(app))["decided"] is False
        await proxy.start()
        acked.append(json.loads((await until_recorded(app)).body)["consent_id"])
        await assert_log_intact(app, acked)
    finally:
        with contextlib.suppress(Exception):
            await app.close()
        await proxy.stop()
        await drop_schema(schema)
