"""The gate under real frameworks: Starlette (Mount, StreamingResponse), FastAPI and Django ASGI."""

from __future__ import annotations

import django
from django.conf import settings
from fastapi import FastAPI
from fastapi.responses import HTMLResponse as FastHTML
from starlette.applications import Starlette
from starlette.responses import HTMLResponse, StreamingResponse
from starlette.routing import Mount, Route

from consent_banner.gate import ResponseGate

from .conftest import MARKER_BODY, MARKER_HEAD, NONCE, client, consent, gated

HEAD = MARKER_HEAD.format(nonce=NONCE)
PAGE = (
    '<!doctype html><html lang="en"><head><title>t</title>'
    '<script src="https://stats.example.net/s.js"></script></head>'
    '<body><img src="https://px.adnet.example/p.gif"><p>hello</p></body></html>'
)


def assert_gated(r) -> None:  # type: ignore[no-untyped-def]
    """The common promise: trackers neutralised, snippets injected, policy, Vary, cookies filtered."""
    assert r.status_code == 200
    assert ' src="https://' not in r.text
    assert r.text.count("data-consent-src=") == 2
    assert f"<head>{HEAD}<title>" in r.text
    assert r.text.endswith(MARKER_BODY.format(lang="en") + "</body></html>")
    assert "script-src 'self' 'nonce-" in r.headers["content-security-policy"]
    assert "Cookie" in r.headers["vary"]
    names = {v.split("=", 1)[0] for v in r.headers.get_list("set-cookie")}
    assert names == {"sessionid"}


def starlette_app() -> Starlette:
    async def page(request):  # type: ignore[no-untyped-def]
        r = HTMLResponse(PAGE)
        r.set_cookie("sessionid", "s", httponly=True)
        r.set_cookie("_ga", "1")
        return r

    async def stream(request):  # type: ignore[no-untyped-def]
        async def parts():  # type: ignore[no-untyped-def]
            for i in range(0, len(PAGE), 7):  # cut everywhere, tags included
                yield PAGE[i : i + 7]

        r = StreamingResponse(parts(), media_type="text/html")
        r.set_cookie("sessionid", "s")
        r.set_cookie("_fbp", "1")
        return r

    shop = Starlette(routes=[Route("/", page), Route("/stream", stream)])
    return Starlette(routes=[Route("/", page), Route("/stream", stream), Mount("/shop", app=shop)])


async def test_starlette_page_streaming_and_mounted(gate: ResponseGate) -> None:
    """R2, R3, R30, R35 under Starlette: plain, streaming and mounted sub-app responses."""
    async with client(gated(starlette_app(), gate, consent())) as c:
        for path in ("/", "/stream", "/shop/", "/shop/stream"):
            r = await c.get(path)
            assert_gated(r)
        assert "content-length" not in (await c.get("/stream")).headers


async def test_fastapi(gate: ResponseGate) -> None:
    """R2, R3, R30, R35 under FastAPI (streaming, a mounted Starlette app), JSON routes untouched."""
    api = FastAPI()

    @api.get("/", response_class=FastHTML)
    async def page():  # type: ignore[no-untyped-def]
        r = FastHTML(PAGE)
        r.set_cookie("sessionid", "s")
        r.set_cookie("_fbp", "x")
        return r

    @api.get("/items")
    async def items() -> dict[str, int]:
        return {"n": 1}

    @api.get("/stream")
    async def stream():  # type: ignore[no-untyped-def]
        async def parts():  # type: ignore[no-untyped-def]
            for i in range(0, len(PAGE), 5):
                yield PAGE[i : i + 5]

        r = StreamingResponse(parts(), media_type="text/html")
        r.set_cookie("sessionid", "s")
        r.set_cookie("_ga", "1")
        return r

    api.mount("/legacy", starlette_app())

    async with client(gated(api, gate, consent())) as c:
        for path in ("/", "/stream", "/legacy/", "/legacy/stream", "/legacy/shop/stream"):
            assert_gated(await c.get(path))
        j = await c.get("/items")
    assert j.json() == {"n": 1} and "vary" not in j.headers and "content-security-policy" not in j.headers


def _django_app():  # type: ignore[no-untyped-def]
    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="test-only-not-secret-0123456789abcdef",
            ROOT_URLCONF=__name__,
            ALLOWED_HOSTS=["*"],
            MIDDLEWARE=[],
            INSTALLED_APPS=[],
            USE_TZ=True,
        )
        django.setup()
    from django.core.asgi import get_asgi_application

    return get_asgi_application()


def _django_page(request):  # type: ignore[no-untyped-def]
    from django.http import HttpResponse

    r = HttpResponse(PAGE)
    r.set_cookie("sessionid", "s", httponly=True)
    r.set_cookie("_ga", "1")
    return r


def _django_stream(request):  # type: ignore[no-untyped-def]
    from django.http import StreamingHttpResponse

    async def parts():  # type: ignore[no-untyped-def]
        for i in range(0, len(PAGE), 11):
            yield PAGE[i : i + 11].encode()

    r = StreamingHttpResponse(parts(), content_type="text/html; charset=utf-8")
    r.set_cookie("sessionid", "s")
    r.set_cookie("_fbp", "1")
    return r


def _urlpatterns():  # type: ignore[no-untyped-def]
    from django.urls import path

    return [path("", _django_page), path("stream", _django_stream)]


def __getattr__(name: str):  # type: ignore[no-untyped-def]
    # Django imports ROOT_URLCONF lazily and reads `urlpatterns` from this module.
    if name == "urlpatterns":
        return _urlpatterns()
    raise AttributeError(name)


async def test_django_asgi(gate: ResponseGate) -> None:
    """R2, R3, R30, R35 under Django's ASGI handler (mixed-case header names, streaming)."""
    from django.test import override_settings

    app = _django_app()
    # Django is configured once per process, maybe by another test module: this module's URLconf.
    with override_settings(ROOT_URLCONF=__name__):
        async with client(gated(app, gate, consent()), base_url="http://testserver") as c:
            assert_gated(await c.get("/"))
            assert_gated(await c.get("/stream"))
