"""Django under ASGI behind ConsentMiddleware: `get_consent`, `@requires_consent` (sync, async and
class-based views), the nonce in Django templates, and the lifespan Django refuses, answered by the
middleware. Real requests through the whole stack: an ASGI client that runs the lifespan, and
uvicorn (Django's own test `Client` calls the handler directly and would bypass the middleware)."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from django.core.asgi import get_asgi_application
from starlette.testclient import TestClient

from consent_banner import ConsentConfig, ConsentMiddleware

from .conftest import ORIGIN
from .support.frameworks import COLLECT_PATHS, django_settings
from .support.servers import free_port, wait_for_port


@pytest.fixture
def django_app(config: ConsentConfig) -> Iterator[ConsentMiddleware]:
    with django_settings():
        yield ConsentMiddleware(get_asgi_application(), config=config)


def decide(c: TestClient | httpx.Client, action: str = "accept_all") -> None:
    r = c.post("/_consent", json={"action": action}, headers={"origin": str(c.base_url).rstrip("/")})
    assert r.status_code == 200, r.text


def nonce_of(r: httpx.Response) -> str:
    """The nonce of the policy, which the app's own inline script must carry."""
    found = re.search(r"'nonce-([^']+)'", r.headers["content-security-policy"])
    assert found, r.headers["content-security-policy"]
    return found.group(1)


def test_django_views_get_the_consent_through_an_asgi_client_with_lifespan(
    django_app: ConsentMiddleware,
) -> None:
    """R35: the client runs the lifespan, which Django refuses; the middleware answers it and closes
    its log at shutdown. Every kind of view reads the same consent, and its response is private."""
    with TestClient(django_app, base_url=ORIGIN) as c:
        assert c.get("/whoami").json() == {"decided": False, "analytics": False, "marketing": False}
        for path in COLLECT_PATHS:
            r = c.get(path)
            assert r.status_code == 204 and r.content == b"", (path, r.status_code, r.text)
            assert "private" in r.headers["cache-control"], path  # the view read the consent
        decide(c)
        assert c.get("/whoami").json() == {"decided": True, "analytics": True, "marketing": True}
        for path, kind in COLLECT_PATHS.items():
            r = c.get(path)
            assert r.json() == {"counted": kind}, path
            assert "private" in r.headers["cache-control"], path
        assert django_app._log is not None
    assert django_app._log is None


def test_a_django_template_carries_the_policys_nonce_and_the_page_is_gated(
    django_app: ConsentMiddleware,
) -> None:
    """R2, R3 under Django: trackers neutralised, the banner injected, the app's marketing cookie
    dropped; `{{ csp_nonce }}` is the nonce of the policy sent with the page, a new one each time."""
    with TestClient(django_app, base_url=ORIGIN) as c:
        r = c.get("/?utm_source=mail")
        nonce = nonce_of(r)
        assert f'<script nonce="{nonce}">window.appInline = "Django page";</script>' in r.text
        assert ' src="https://stats.example.net/s.js"' not in r.text  # neutralised
        assert 'data-consent-src="https://stats.example.net/s.js"' in r.text
        assert 'id="cb-banner"' in r.text  # the banner, injected
        names = {v.split("=", 1)[0] for v in r.headers.get_list("set-cookie")}
        assert "booking_session" in names and "_ads" not in names  # the marketing cookie was dropped
        assert "private" in r.headers["cache-control"]
        other = c.get("/")
        assert nonce_of(other) != nonce and nonce_of(other) in other.text


def test_a_template_that_does_not_use_the_nonce_draws_none() -> None:
    """The context processor is lazy: a template without `{{ csp_nonce }}` leaves the request's
    state alone, so a response that only rendered a template is not marked as reading the consent."""
    from consent_banner.django import context_processor

    scope: dict[str, object] = {"type": "http", "state": {"consent": object()}}
    nonce = context_processor(scope)["csp_nonce"]
    assert "csp_nonce" not in scope["state"]  # type: ignore[operator]
    assert str(nonce) == nonce.__html__() == scope["state"]["csp_nonce"]  # type: ignore[index]


def test_django_under_uvicorn_with_lifespan_on(config: ConsentConfig) -> None:
    """uvicorn with lifespan "on" exits at startup when the app refuses the lifespan: it starts,
    serves a gated page and a decision, and the log is closed when it stops."""
    port = free_port()
    with django_settings():
        app = ConsentMiddleware(get_asgi_application(), config=config)
        server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning", lifespan="on"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            wait_for_port("127.0.0.1", port, server=thread)
            base = f"http://127.0.0.1:{port}"
            with httpx.Client(base_url=base) as c:
                page = c.get("/")
                assert page.status_code == 200 and nonce_of(page) in page.text
                assert c.get("/collect/async-class").status_code == 204
                decide(c)
                assert c.get("/collect/async-class").json() == {"counted": "async class"}
            assert app._log is not None
        finally:
            server.should_exit = True
            thread.join(15)
    assert not thread.is_alive() and server.started
    assert app._log is None  # the lifespan's shutdown closed it
