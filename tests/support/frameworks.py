"""One small site written in Django and in Flask, for the gate under other frameworks
(tests/test_django.py, tests/test_wsgi.py, e2e/test_frameworks.py).

Each serves the same pages: `/` renders a template whose inline script carries the response's CSP
nonce (Django: `{{ csp_nonce }}` from `consent_banner.django.context_processor`; Jinja2 in Flask:
`{{ csp_nonce(request) }}`), with a tracker script and a pixel; it sets the necessary
`booking_session` cookie (HttpOnly) and, with `?utm_source=`, the marketing `_ads` cookie (HttpOnly,
only the server can expire it). `/whoami` answers the consent as JSON (`get_consent`),
`/collect...` is server-side tracking behind `@requires_consent("analytics")` (sync, async, Django's
class-based views), `/stream` streams plain text from a generator that waits for `RELEASE` after
its first chunk, so a test can prove the gate does not hold the body back.

The service names and hosts are those of tests/conftest.py's MODEL_TOML (stats.example.net is
analytics, ads.example.com and its `_ads` cookie marketing); e2e/test_frameworks.py routes both hosts
in the browser. Django is configured once per process; each site's URLconf and templates are put in
place with `django_settings()` (override_settings), since another test module may configure Django
for itself first.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import django
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.test import override_settings
from django.urls import path
from django.utils.decorators import method_decorator
from django.views import View
from flask import Flask, make_response, render_template_string
from flask import request as flask_request

from consent_banner import csp_nonce, get_consent, requires_consent

PAGE = """<!doctype html><html lang="en"><head><title>{title}</title>
<script nonce="{nonce}">window.appInline = "{title}";</script>
<script src="https://stats.example.net/s.js"></script></head>
<body><h1>{title}</h1><img src="https://ads.example.com/px.gif" alt=""></body></html>"""
DJANGO_PAGE = PAGE.format(title="{{ title }}", nonce="{{ csp_nonce }}")
FLASK_PAGE = PAGE.format(title="{{ title }}", nonce="{{ csp_nonce(request) }}")

RELEASE = threading.Event()  # /stream's second chunk waits for it (at most STREAM_WAIT seconds)
STREAM_WAIT = 5.0


def stream_parts() -> Iterator[bytes]:
    """A first chunk, then a second saying whether it was released while the first was on its way."""
    yield b"first chunk\n"
    released = RELEASE.wait(STREAM_WAIT)
    yield b"released\n" if released else b"held back\n"


def consent_json(request: Any) -> dict[str, Any]:
    c = get_consent(request)
    return {"decided": c.decided, "analytics": c.allows("analytics"), "marketing": c.allows("marketing")}


# --- Django ----------------------------------------------------------------------------------------


def django_page(request: HttpRequest) -> HttpResponse:
    response = render(request, "page.html", {"title": "Django page"})
    response.set_cookie("booking_session", "b1", httponly=True, samesite="Lax")
    if "utm_source" in request.GET:
        response.set_cookie("_ads", request.GET["utm_source"], httponly=True, samesite="Lax")
    return response


async def django_whoami(request: HttpRequest) -> JsonResponse:
    return JsonResponse(consent_json(request))


@requires_consent("analytics")
def django_collect(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"counted": "sync"})


@requires_consent("analytics")
async def django_collect_async(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"counted": "async"})


@method_decorator(requires_consent("analytics"), name="dispatch")
class CollectView(View):
    def get(self, request: HttpRequest) -> JsonResponse:
        return JsonResponse({"counted": "class"})


@method_decorator(requires_consent("analytics"), name="dispatch")
class AsyncCollectView(View):
    async def get(self, request: HttpRequest) -> JsonResponse:
        return JsonResponse({"counted": "async class"})


class DispatchCollectView(View):
    """The decorator on `dispatch` itself, an async view."""

    @requires_consent("analytics")
    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        return super().dispatch(request, *args, **kwargs)

    async def get(self, request: HttpRequest) -> JsonResponse:
        return JsonResponse({"counted": "dispatch"})


def django_stream(request: HttpRequest) -> StreamingHttpResponse:
    return StreamingHttpResponse(stream_parts(), content_type="text/plain")


urlpatterns = [
    path("", django_page),
    path("whoami", django_whoami),
    path("collect", django_collect),
    path("collect/async", django_collect_async),
    path("collect/class", CollectView.as_view()),
    path("collect/async-class", AsyncCollectView.as_view()),
    path("collect/dispatch", DispatchCollectView.as_view()),
    path("stream", django_stream),
]
COLLECT_PATHS = {
    "/collect": "sync",
    "/collect/async": "async",
    "/collect/class": "class",
    "/collect/async-class": "async class",
    "/collect/dispatch": "dispatch",
}


def django_settings() -> override_settings:
    """This site's URLconf and templates (Django configured first if nobody did)."""
    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="test-only-not-secret-0123456789abcdef",
            ALLOWED_HOSTS=["*"],
            MIDDLEWARE=[],
            INSTALLED_APPS=[],
            USE_TZ=True,
        )
        django.setup()
    return override_settings(
        ROOT_URLCONF=__name__,
        ALLOWED_HOSTS=["*"],
        MIDDLEWARE=[],
        TEMPLATES=[
            {
                "BACKEND": "django.template.backends.django.DjangoTemplates",
                "OPTIONS": {
                    "context_processors": ["consent_banner.django.context_processor"],
                    "loaders": [("django.template.loaders.locmem.Loader", {"page.html": DJANGO_PAGE})],
                },
            }
        ],
    )


# --- Flask -----------------------------------------------------------------------------------------


def flask_app() -> Flask:
    app = Flask(__name__)
    app.add_template_global(csp_nonce)

    @app.get("/")
    def page() -> Any:
        response = make_response(render_template_string(FLASK_PAGE, title="Flask page"))
        response.set_cookie("booking_session", "b1", httponly=True, samesite="Lax")
        if "utm_source" in flask_request.args:
            response.set_cookie("_ads", flask_request.args["utm_source"], httponly=True, samesite="Lax")
        return response

    @app.get("/whoami")
    def whoami() -> Any:
        return consent_json(flask_request)

    @app.get("/collect")
    @requires_consent("analytics")
    def collect() -> Any:
        return {"counted": "flask"}

    @app.get("/collect/async")
    @requires_consent("analytics")
    async def collect_async() -> Any:  # Flask runs it in an event loop of its own (asgiref)
        return {"counted": "flask async"}

    @app.get("/stream")
    def stream() -> Any:
        return app.response_class(stream_parts(), mimetype="text/plain")

    return app
