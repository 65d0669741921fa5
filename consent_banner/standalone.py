"""The app behind `consent-banner serve`: only the consent endpoints, for embedding sites.

A site that is not written in Python includes `{server}{prefix}/consent.js` with
`data-consent-server`; the script fetches the banner from here and posts decisions here
(cross-origin, CORS only for `allowed_origins`), then keeps the signed token as a first-party cookie.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .config import ConsentConfig
from .middleware import ConsentMiddleware
from .paths import root_path


def build_app(config: ConsentConfig, secret_keys: Sequence[str] | None = None) -> Starlette:
    async def index(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "service": "consent-banner",
                "script": f"{root_path(request.scope)}{config.prefix}/consent.js",  # where it is mounted
                "allowed_origins": list(config.allowed_origins),
            }
        )

    return Starlette(
        routes=[Route("/", index)],
        middleware=[Middleware(ConsentMiddleware, config=config, secret_keys=secret_keys)],
    )
