"""What the reliability tests and bench/bench_load.py run under uvicorn, in a separate process.

    uvicorn --factory tests.reliability.served_app:create_app [--workers N]

CONSENT_RELIABILITY_APP picks the app: "demo" (default: the demo site, server/app.py, with its
own consent.toml) or "plain" (a two-route Starlette app under ConsentMiddleware, for tests that
need their own consent.toml). CONSENT_RELIABILITY_LOG overrides the config's `log` URL;
CONSENT_RELIABILITY_CONFIG names the consent.toml ("plain": required; "demo": optional).
Signing keys come from CONSENT_SECRET_KEYS, as in production.
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from consent_banner import ConsentConfig, ConsentMiddleware, get_consent

ENV_APP = "CONSENT_RELIABILITY_APP"
ENV_LOG = "CONSENT_RELIABILITY_LOG"
ENV_CONFIG = "CONSENT_RELIABILITY_CONFIG"


async def home(request: Request) -> HTMLResponse:
    return HTMLResponse("<!doctype html><html lang='en'><head><title>t</title></head><body>hi</body></html>")


async def whoami(request: Request) -> JSONResponse:
    c = get_consent(request)
    return JSONResponse({"decided": c.decided, "id": c.id, "categories": list(c.categories)})


def plain_app(config: ConsentConfig) -> ASGIApp:
    inner = Starlette(routes=[Route("/", home), Route("/whoami", whoami)])
    return ConsentMiddleware(inner, config=config)


def create_app() -> ASGIApp:
    kind = os.environ.get(ENV_APP, "demo")
    log = os.environ.get(ENV_LOG)
    config_path = os.environ.get(ENV_CONFIG)
    if kind == "plain":
        if not config_path:
            raise RuntimeError(f"{ENV_APP}=plain needs {ENV_CONFIG}")
        config = ConsentConfig.from_toml(config_path)
        if log:
            config = config.model_copy(update={"log": log})
        return plain_app(config)
    from server.app import build

    # Load: every decision comes from this machine's one address, so the rate limit is off.
    app, _ = build(
        Path(config_path) if config_path else None,
        workdir=Path.cwd(),
        overrides={"decision_rate_limit": "off", **({"log": log} if log else {})},
    )
    return app
