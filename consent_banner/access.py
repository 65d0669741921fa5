"""What an application asks of the consent: `get_consent(request)` and `@requires_consent`.

Each of them marks the request (`CONSENT_READ` in its ASGI state): a response built after the app
read the consent may differ per visitor, so the gate keeps it out of shared caches
(`gate/caching.py`), as it does for the responses it changes itself.
"""

from __future__ import annotations

import functools
import inspect
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeVar

from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.status import WS_1008_POLICY_VIOLATION
from starlette.types import Scope
from starlette.websockets import WebSocket

from .consent import Consent

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

CONSENT_READ = "consent_read"  # in the request's state: the app read the consent (or the nonce)


def _state(request: HTTPConnection | Scope) -> MutableMapping[str, Any]:
    """The request's ASGI state (empty when no middleware gave it one)."""
    scope = request.scope if isinstance(request, HTTPConnection) else request
    state: MutableMapping[str, Any] = scope.get("state") or {}
    return state


def get_consent(request: HTTPConnection | Scope) -> Consent:
    """The visitor's consent for a Starlette/FastAPI request (or an ASGI scope)."""
    state = _state(request)
    consent = state.get("consent")
    if not isinstance(consent, Consent):
        raise RuntimeError(
            "no consent on this request: add ConsentMiddleware to the application "
            "(app.add_middleware(ConsentMiddleware, config=...))"
        )
    state[CONSENT_READ] = True
    return consent


def csp_nonce(request: HTTPConnection | Scope) -> str:
    """The nonce of this response's Content-Security-Policy, for the app's own inline scripts:
    ``<script nonce="{{ nonce }}">``. Without it, an enforced policy refuses them."""
    state = _state(request)
    if "consent" not in state:
        raise RuntimeError("no CSP nonce on this request: add ConsentMiddleware to the application")
    state[CONSENT_READ] = True  # a nonce is this response's alone
    nonce = state.get("csp_nonce")
    if not isinstance(nonce, str):
        # Drawn on first use, by the app or by the gate for an HTML response; never for other responses.
        nonce = state["csp_nonce"] = secrets.token_urlsafe(12)
    return nonce


def requires_consent(category: str, *, service: str | None = None) -> Callable[[F], F]:
    """Call the endpoint only when the visitor allows `category` (and `service`); else answer 204
    (a WebSocket endpoint: the handshake is refused with close code 1008, which clients see as 403).

    This gates server-side tracking: without consent the endpoint does not run at all. The
    endpoint must take the request (Starlette: its only argument; FastAPI: a `Request` or
    `WebSocket` parameter).
    """

    def decorate(endpoint: F) -> F:
        if not inspect.iscoroutinefunction(endpoint):
            raise TypeError(f"@requires_consent needs an async endpoint, {endpoint.__qualname__} is not")

        @functools.wraps(endpoint)
        async def gated(*args: Any, **kwargs: Any) -> Any:
            request = next((a for a in (*args, *kwargs.values()) if isinstance(a, HTTPConnection)), None)
            if request is None:
                raise TypeError(
                    f"@requires_consent: {endpoint.__qualname__} must take the request "
                    "(add a `request: Request` parameter)"
                )
            consent = get_consent(request)
            allowed = consent.allows_service(service, category) if service else consent.allows(category)
            if not allowed:
                if isinstance(request, WebSocket):
                    await request.close(code=WS_1008_POLICY_VIOLATION)
                    return None
                return Response(status_code=204)  # the gate adds Vary and Cache-Control (read above)
            return await endpoint(*args, **kwargs)

        return gated  # type: ignore[return-value]

    return decorate
