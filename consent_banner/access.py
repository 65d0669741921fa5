"""What an application asks of the consent: `get_consent(request)`, `csp_nonce` and `@requires_consent`.

They take the request of whichever framework the app is written in: a Starlette/FastAPI request or
WebSocket, an ASGI scope, Django's `HttpRequest` (under ASGI it holds the scope; under WSGI its
environ), Werkzeug's/Flask's `Request`, or a WSGI environ. ConsentMiddleware puts the consent in the
scope's state; a WSGI app served through `a2wsgi.WSGIMiddleware` finds that very scope in its
environ, as ``environ["asgi.scope"]``. Nothing here imports Django or Flask: requests are recognised
by what they hold, and a framework's own response class is looked up only when its request is seen.

Each of them marks the request (`CONSENT_READ` in its ASGI state): a response built after the app
read the consent may differ per visitor, so the gate keeps it out of shared caches
(`gate/caching.py`), as it does for the responses it changes itself.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import secrets
import sys
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, Protocol, TypeVar

from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.status import WS_1008_POLICY_VIOLATION
from starlette.types import Scope
from starlette.websockets import WebSocket

from .consent import Consent

F = TypeVar("F", bound=Callable[..., Any])

CONSENT_READ = "consent_read"  # in the request's state: the app read the consent (or the nonce)
WSGI_SCOPE = "asgi.scope"  # where a2wsgi puts the ASGI scope in the WSGI environ it builds

_NO_MIDDLEWARE = (
    "add ConsentMiddleware to the application (ASGI: app.add_middleware(ConsentMiddleware, config=...); "
    "Django: ConsentMiddleware(get_asgi_application(), config=...); "
    "WSGI: ConsentMiddleware(a2wsgi.WSGIMiddleware(wsgi_app), config=...))"
)


class HasScope(Protocol):
    """A request holding its ASGI scope: Starlette's, Django's `ASGIRequest`."""

    @property
    def scope(self) -> Mapping[str, Any]: ...


class HasEnviron(Protocol):
    """A request holding its WSGI environ: Werkzeug's (Flask's), Django's `WSGIRequest`."""

    @property
    def environ(self) -> Mapping[str, Any]: ...


class HasMeta(Protocol):
    """Django's `HttpRequest` as views are annotated: its META is the environ under WSGI."""

    @property
    def META(self) -> Mapping[str, Any]: ...


AnyRequest = HTTPConnection | HasScope | HasEnviron | HasMeta | Scope
"""What `get_consent`, `csp_nonce` accept: a request of a supported framework, a scope or an environ."""


def _scope_of(request: object) -> Mapping[str, Any] | None:
    """The ASGI scope behind a request, scope or environ; None for an object that is none of them."""
    if isinstance(request, HTTPConnection):
        return request.scope
    if isinstance(request, Mapping):
        if "type" in request:  # an ASGI scope
            return request
        scope = request.get(WSGI_SCOPE)  # a WSGI environ: a2wsgi's holds the scope
        return scope if isinstance(scope, Mapping) else {}
    for name in ("scope", "environ", "META"):  # Django under ASGI; Werkzeug and Django under WSGI
        held = getattr(request, name, None)
        if isinstance(held, Mapping):
            return _scope_of(held)
    return None


def _state(request: object) -> MutableMapping[str, Any]:
    """The request's ASGI state (empty when no middleware gave it one)."""
    scope = _scope_of(request)
    if scope is None:
        raise TypeError(
            "expected a request (Starlette, FastAPI, Django, Flask/Werkzeug), an ASGI scope or a WSGI "
            f"environ, not {type(request).__qualname__}"
        )
    state: MutableMapping[str, Any] = scope.get("state") or {}
    return state


def get_consent(request: AnyRequest) -> Consent:
    """The visitor's consent for a request of any supported framework (or a scope or environ)."""
    state = _state(request)
    consent = state.get("consent")
    if not isinstance(consent, Consent):
        raise RuntimeError(f"no consent on this request: {_NO_MIDDLEWARE}")
    state[CONSENT_READ] = True
    return consent


def csp_nonce(request: AnyRequest) -> str:
    """The nonce of this response's Content-Security-Policy, for the app's own inline scripts:
    ``<script nonce="{{ nonce }}">``. Without it, an enforced policy refuses them."""
    state = _state(request)
    if "consent" not in state:
        raise RuntimeError(f"no CSP nonce on this request: {_NO_MIDDLEWARE}")
    state[CONSENT_READ] = True  # a nonce is this response's alone
    nonce = state.get("csp_nonce")
    if not isinstance(nonce, str):
        # Drawn on first use, by the app or by the gate for an HTML response; never for other responses.
        # setdefault: a WSGI app runs in a worker thread, and two draws must not give two nonces.
        nonce = state.setdefault("csp_nonce", secrets.token_urlsafe(12))
    return nonce


def requires_consent(category: str, *, service: str | None = None) -> Callable[[F], F]:
    """Call the endpoint only when the visitor allows `category` (and `service`); else answer 204 in
    the framework's own response class (a WebSocket endpoint: the handshake is refused with close
    code 1008, which clients see as 403).

    This gates server-side tracking: without consent the endpoint does not run at all. Sync and
    async endpoints alike. The endpoint must take the request (Starlette: its only argument;
    FastAPI: a `Request` or `WebSocket` parameter; Django: its first), except in Flask, where the
    request of the current context is read. A Django class-based view is gated with
    ``@method_decorator(requires_consent(...), name="dispatch")``.
    """

    def decorate(endpoint: F) -> F:
        if isinstance(endpoint, type):
            raise TypeError(
                f"@requires_consent decorates a view function, not the class {endpoint.__qualname__}: "
                "decorate its methods (a Django view: "
                '@method_decorator(requires_consent(...), name="dispatch"))'
            )

        def refusal(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any | None]:
            """The request, and the response refusing it (None: the endpoint may run)."""
            request = _find_request(endpoint, args, kwargs)
            consent = get_consent(request)
            allowed = consent.allows_service(service, category) if service else consent.allows(category)
            return request, None if allowed else _refused(request)

        if _is_async(endpoint):

            @functools.wraps(endpoint)
            async def gated_async(*args: Any, **kwargs: Any) -> Any:
                request, refused = refusal(args, kwargs)
                if refused is None:
                    return await endpoint(*args, **kwargs)
                if isinstance(request, WebSocket):
                    await request.close(code=WS_1008_POLICY_VIOLATION)
                    return None
                return refused

            return gated_async  # type: ignore[return-value]

        @functools.wraps(endpoint)
        def gated(*args: Any, **kwargs: Any) -> Any:
            _, refused = refusal(args, kwargs)
            if refused is None:
                return endpoint(*args, **kwargs)
            if _view_is_async(endpoint, args):
                return _ready(refused)  # an async Django view's dispatch: its caller awaits the answer
            return refused

        return gated  # type: ignore[return-value]

    return decorate


def _is_async(endpoint: Callable[..., Any]) -> bool:
    """A coroutine function, or one marked as returning a coroutine (Django's `as_view()` of an async
    view, asgiref's `markcoroutinefunction`, which before Python 3.12 sets `_is_coroutine`)."""
    return inspect.iscoroutinefunction(endpoint) or getattr(endpoint, "_is_coroutine", None) is not None


def _view_is_async(endpoint: Callable[..., Any], args: tuple[Any, ...]) -> bool:
    """Whether `endpoint` is the dispatch of an async Django class-based view: its caller awaits what
    it returns. The view is the bound method's owner (method_decorator hands a partial of it) or,
    when `dispatch` itself is decorated, the first argument."""
    owner = getattr(getattr(endpoint, "func", endpoint), "__self__", None)
    if owner is None and args:
        owner = args[0]
    return getattr(owner, "view_is_async", False) is True


async def _ready(response: Any) -> Any:
    return response


def _find_request(endpoint: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The request among an endpoint's arguments; in Flask, the request of the current context."""
    given = (*args, *kwargs.values())
    # Starlette's first: an HTTPEndpoint's method gets `self`, which holds a scope too.
    found = next((a for a in given if isinstance(a, HTTPConnection)), None)
    # Then objects holding a scope or environ; not mappings: a FastAPI endpoint's dict body is no scope.
    found = found or next((a for a in given if not isinstance(a, Mapping) and _scope_of(a) is not None), None)
    if found is not None:
        return found
    flask = sys.modules.get("flask")
    if flask is not None and flask.has_request_context():
        return flask.request
    raise TypeError(
        f"@requires_consent: {endpoint.__qualname__} must take the request "
        "(add a `request: Request` parameter)"
    )


def _refused(request: Any) -> Any:
    """An empty 204 in the request's framework's response class: the gate adds Vary and
    Cache-Control (the consent was read)."""
    if isinstance(request, HTTPConnection):
        return Response(status_code=204)
    if _from(request, "django"):
        return importlib.import_module("django.http").HttpResponse(status=204)
    flask = sys.modules.get("flask")
    if flask is not None and flask.has_request_context():
        return flask.current_app.response_class(status=204)
    if _from(request, "werkzeug"):
        return importlib.import_module("werkzeug.wrappers").Response(status=204)
    raise TypeError(f"@requires_consent: no response class known for a {type(request).__qualname__}")


def _from(request: object, package: str) -> bool:
    """Whether the request's class, or one it derives from, is the package's."""
    return any(c.__module__.partition(".")[0] == package for c in type(request).__mro__)
