"""Shared fixtures: a model consent.toml, signing keys, and an app under ConsentMiddleware."""

from __future__ import annotations

import sqlite3
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse
from starlette.routing import Route

from consent_banner import ConsentConfig, ConsentMiddleware, get_consent, requires_consent

KEY = "test-key-0123456789-0123456789-0123456789"
OLD_KEY = "old-key-0123456789-0123456789-0123456789"
ORIGIN = "http://testserver"

MODEL_TOML = """
policy_revision = "2026-11-01"
controller = "Example Offices AB"
privacy_policy_url = "/privacy"
languages = ["en", "sv"]
log = "sqlite:///{db}"
allowed_origins = ["http://partner.example"]

[cookie]
secure = false

[categories.necessary]
label = {{ en = "Necessary", sv = "Nödvändiga" }}
description = {{ en = "Needed for the site to work.", sv = "Behövs för att webbplatsen ska fungera." }}
[categories.analytics]
label = {{ en = "Analytics", sv = "Statistik" }}
description = "Counts visits."
[categories.marketing]
label = {{ en = "Marketing", sv = "Marknadsföring" }}
description = "Offers."

[[services]]
name = "booking"
category = "necessary"
provider = "Example Offices AB"
purpose = "Keeps the booking checkout session"
cookies = [ {{ name = "booking_session", lifetime = "session" }} ]

[[services]]
name = "stats"
category = "analytics"
provider = "Example Stats Ltd"
purpose = {{ en = "Counts visits", sv = "Räknar besök" }}
origins = ["https://stats.example.net"]
cookies = [ {{ name = "_st_id.*", lifetime = "13 months" }}, {{ name = "_st_ses", lifetime = "30 minutes" }} ]
switch = true

[[services]]
name = "pixel"
category = "marketing"
provider = "Ads Inc"
purpose = "Measures campaigns"
origins = ["https://ads.example.com"]
cookies = [ {{ name = "_ads", lifetime = "90 days", domain = ".example.com" }} ]
"""


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSENT_SECRET_KEYS", KEY)


@pytest.fixture
def toml_path(tmp_path: Path) -> Path:
    path = tmp_path / "consent.toml"
    path.write_text(textwrap.dedent(MODEL_TOML.format(db=tmp_path / "log.db")))
    return path


@pytest.fixture
def config(toml_path: Path) -> ConsentConfig:
    return ConsentConfig.from_toml(toml_path)


async def page(request: Request) -> HTMLResponse:
    return HTMLResponse(
        "<!doctype html><html lang='en'><head><title>t</title></head><body><p>hi</p></body></html>"
    )


async def page_without_lang(request: Request) -> HTMLResponse:
    return HTMLResponse("<!doctype html><html><head><title>t</title></head><body><p>hej</p></body></html>")


async def whoami(request: Request) -> JSONResponse:
    c = get_consent(request)
    return JSONResponse(
        {
            "decided": c.decided,
            "id": c.id,
            "analytics": c.allows("analytics"),
            "marketing": c.allows("marketing"),
            "categories": list(c.categories),
        }
    )


@requires_consent("analytics")
async def collect(request: Request) -> PlainTextResponse:
    return PlainTextResponse("counted")


def make_app(config: ConsentConfig, **kwargs: Any) -> ConsentMiddleware:
    inner = Starlette(
        routes=[
            Route("/", page),
            Route("/plain", page_without_lang),
            Route("/whoami", whoami),
            Route("/collect", collect, methods=["POST", "GET"]),
        ]
    )
    return ConsentMiddleware(inner, config=config, **kwargs)


ClientFactory = Callable[..., httpx.AsyncClient]


@pytest.fixture
async def client(config: ConsentConfig) -> AsyncIterator[httpx.AsyncClient]:
    app = make_app(config)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN) as c:
        c.app = app  # type: ignore[attr-defined]
        yield c
    await app.close()


def rows(config: ConsentConfig) -> list[sqlite3.Row]:
    """The records of a SQLite log, oldest first; none while the log was never written."""
    db = sqlite3.connect(config.log.removeprefix("sqlite:///"))
    db.row_factory = sqlite3.Row
    try:
        return db.execute("SELECT * FROM records ORDER BY seq").fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()
