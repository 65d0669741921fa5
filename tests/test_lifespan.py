"""The ASGI lifespan through ConsentMiddleware: answered for an app that does not speak it (Django's
ASGI handler raises on it), passed through to one that does, whose startup failure still fails."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.testclient import TestClient
from starlette.types import Receive, Scope, Send

from consent_banner import ConsentConfig, ConsentMiddleware

from .conftest import ORIGIN
from .support.servers import free_port


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    await PlainTextResponse("hello")(scope, receive, send)


async def refusing(scope: Scope, receive: Receive, send: Send) -> None:
    """Django's ASGIHandler: it raises on any scope but HTTP, before reading a message."""
    if scope["type"] != "http":
        raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
    await hello(scope, receive, send)


async def ignoring(scope: Scope, receive: Receive, send: Send) -> None:
    """An app that returns at once from any scope but HTTP."""
    if scope["type"] == "http":
        await hello(scope, receive, send)


@pytest.mark.parametrize("app", [refusing, ignoring], ids=["raises", "returns"])
def test_an_app_without_lifespan_starts_and_its_log_is_closed_on_shutdown(config: ConsentConfig, app) -> None:
    mw = ConsentMiddleware(app, config=config)
    with TestClient(mw, base_url=ORIGIN) as c:  # the client runs the lifespan: startup, then shutdown
        assert c.get("/").text == "hello"
        r = c.post("/_consent", json={"action": "reject_all"}, headers={"origin": ORIGIN})
        assert r.status_code == 200
        assert mw._log is not None
    assert mw._log is None


def test_a_startup_failure_of_an_app_that_speaks_lifespan_still_fails(config: ConsentConfig) -> None:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        raise RuntimeError("the database is down")
        yield

    mw = ConsentMiddleware(Starlette(lifespan=lifespan), config=config)
    with pytest.raises(RuntimeError, match="the database is down"), TestClient(mw, base_url=ORIGIN):
        pass


def test_an_app_that_read_its_startup_and_then_raised_still_fails(config: ConsentConfig) -> None:
    """No `lifespan.startup.failed` sent: the exception itself is the failure, and it is raised."""

    async def crashing(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await receive()
            raise ConnectionError("cannot reach the cache")
        await hello(scope, receive, send)

    mw = ConsentMiddleware(crashing, config=config)
    with pytest.raises(ConnectionError, match="cannot reach the cache"), TestClient(mw, base_url=ORIGIN):
        pass


def test_uvicorn_refuses_to_start_an_app_whose_startup_failed(config: ConsentConfig) -> None:
    """The same through a server: with lifespan "on", uvicorn exits at startup instead of serving."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        raise RuntimeError("the database is down")
        yield

    mw = ConsentMiddleware(Starlette(lifespan=lifespan), config=config)
    server = uvicorn.Server(uvicorn.Config(mw, port=free_port(), log_level="critical", lifespan="on"))
    exits: list[object] = []

    def run() -> None:
        try:
            server.run()
        except SystemExit as e:  # uvicorn's own way to say the startup failed
            exits.append(e.code)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(15)
    stopped = not thread.is_alive()
    server.should_exit = True  # a server that started after all is stopped, then the test fails
    thread.join(15)
    assert stopped and not server.started and exits == [3]  # uvicorn's STARTUP_FAILURE
