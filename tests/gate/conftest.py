"""Shared pieces for the gate tests: a configuration with one service per category, consents,
and an ASGI wrapper standing in for ConsentMiddleware (which calls `ResponseGate.wrap_send`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from consent_banner.config import ConsentConfig
from consent_banner.consent import Consent
from consent_banner.gate import ResponseGate
from consent_banner.language import Languages

OWN = frozenset({"consent", "consent_csrf"})
NONCE = "TestNonce0123456789"
MARKER_HEAD = '<script nonce="{nonce}" data-consent-banner="head">window.cmDefault=1</script>'
MARKER_BODY = '<div data-consent-banner="body" lang="{lang}">banner</div>'

CONFIG: dict[str, Any] = {
    "policy_revision": "2026-11-01",
    "controller": "Example AB",
    "privacy_policy_url": "/privacy",
    "languages": ["en", "sv"],
    "categories": {
        "necessary": {"label": {"en": "Necessary", "sv": "Nödvändiga"}},
        "analytics": {"label": {"en": "Statistics", "sv": "Statistik"}},
        "marketing": {"label": {"en": "Marketing", "sv": "Marknadsföring"}},
        "media": {"label": {"en": "Embedded media", "sv": "Inbäddad media"}},
    },
    "services": [
        {
            "name": "site",
            "category": "necessary",
            "origins": ["https://cdn.example.com"],
            "cookies": [{"name": "sessionid"}, {"name": "csrftoken", "lifetime": "1 year"}],
        },
        {
            "name": "stats",
            "category": "analytics",
            "provider": "Stats & Co",
            "origins": ["https://stats.example.net"],
            "cookies": [
                {"name": "_ga", "lifetime": "2 years", "domain": ".example.com"},
                {"name": "_ga_*", "lifetime": "2 years", "domain": ".example.com"},
            ],
        },
        {
            "name": "ads",
            "category": "marketing",
            "origins": ["https://ads.example.org", "https://*.adnet.example"],
            "cookies": [{"name": "_fbp", "lifetime": "3 months"}, {"name": "__Host-ad"}],
        },
        {
            "name": "video",
            "category": "media",
            "provider": "Video <Tube>",
            "origins": ["https://video.example.tv"],
        },
    ],
}


def make_config(**overrides: Any) -> ConsentConfig:
    return ConsentConfig.from_dict({**CONFIG, **overrides})


def consent(*granted: str, **kw: Any) -> Consent:
    return Consent(id="cid", granted=frozenset(granted), revision="2026-11-01", decided_at=1, **kw)


def inject_fn(lang: str | None) -> tuple[str, str]:
    return MARKER_HEAD.format(nonce=NONCE), MARKER_BODY.format(lang=lang)


class TestPage:
    """The page hooks ConsentMiddleware hands the gate, with fixed values."""

    __test__ = False

    def __init__(self, inject: Callable[[str | None], tuple[str, str]] | None, nonce: str) -> None:
        self.inject = inject
        self._nonce = nonce

    def nonce(self) -> str:
        return self._nonce

    def language(self, html_lang: str | None) -> str:
        return Languages(CONFIG["languages"]).pick(html_lang, None)

    def html_headers(self) -> list[tuple[bytes, bytes]]:
        return []


def page(
    inject: Callable[[str | None], tuple[str, str]] | None = inject_fn, nonce: str = NONCE
) -> Callable[[Any], TestPage]:
    return lambda scope: TestPage(inject, nonce)


def gated(
    app: Any,
    gate: ResponseGate,
    the_consent: Consent,
    *,
    inject: Callable[[str | None], tuple[str, str]] | None = inject_fn,
    nonce: str = NONCE,
) -> Any:
    """`app` behind a stand-in for ConsentMiddleware: parses the Cookie header, calls wrap_send."""

    async def wrapper(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        cookies: dict[str, str] = {}
        for k, v in scope["headers"]:
            if k == b"cookie":
                for pair in v.decode("latin-1").split(";"):
                    name, _, value = pair.strip().partition("=")
                    if name:
                        cookies[name] = value
        wrapped = gate.wrap_send(send, scope, the_consent, request_cookies=cookies, page=page(inject, nonce))
        await app(scope, receive, wrapped)

    return wrapper


def client(app: Any, base_url: str = "https://www.example.com") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)


@pytest.fixture
def config() -> ConsentConfig:
    return make_config()


@pytest.fixture
def gate(config: ConsentConfig) -> ResponseGate:
    return ResponseGate(config, own_cookie_names=OWN)
