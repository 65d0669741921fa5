"""Consent Mode by configuration in Chromium (R30, R31; issue 15): a site whose categories are
`statistics` and `advertising`, holding the Google Analytics, Google Ads and Microsoft UET presets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ServerThread, _free_socket
from playwright.sync_api import Page
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from consent_banner import ConsentConfig, ConsentMiddleware

PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title></head>
<body><main><h1>{title}</h1><p><a href="/other">Another page</a></p></main></body></html>"""
V2 = ("ad_storage", "ad_user_data", "ad_personalization", "analytics_storage")


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("consent-mode") / "log.db"
    config = ConsentConfig.from_dict(
        {
            "policy_revision": "2026-11-01",
            "controller": "Example AB",
            "privacy_policy_url": "/privacy",
            "log": f"sqlite:///{Path(log)}",
            "cookie": {"secure": False},
            "categories": {
                "necessary": {"label": "Necessary"},
                "statistics": {"label": "Statistics"},
                "advertising": {"label": "Advertising"},
            },
            "services": [
                {"name": "ga", "preset": "google-analytics", "category": "statistics"},
                {"name": "ads", "preset": "google-ads", "category": "advertising"},
                {"name": "bing", "preset": "microsoft-uet", "category": "advertising"},
            ],
        }
    )

    def serve(title: str) -> Any:
        async def endpoint(request: Request) -> Response:
            return HTMLResponse(PAGE.format(title=title))

        return endpoint

    app = Starlette(routes=[Route("/", serve("Home")), Route("/other", serve("Other"))])
    sock = _free_socket()
    with ServerThread(ConsentMiddleware(app, config=config), sock) as server:
        yield f"http://127.0.0.1:{server.port}"


def consent_calls(page: Page) -> list[list[Any]]:
    """The Consent Mode calls in window.dataLayer (gtag pushes its arguments), in order."""
    return page.evaluate(
        "(window.dataLayer || []).filter(a => a && typeof a === 'object' && a[0] === 'consent')"
        ".map(a => Array.from(a))"
    )


def uet_calls(page: Page) -> list[list[Any]]:
    # uetq.push('consent', 'default', {...}) pushes three items, not one array: read them back in threes.
    items = page.evaluate("Array.from(window.uetq || [])")
    return [items[i : i + 3] for i in range(len(items)) if items[i] == "consent"]


def test_statistics_and_advertising_presets_grant_consent_mode_after_accept(page: Page, url: str) -> None:
    """R30, R31: before a decision Google's and UET's defaults are denied; Accept all sends one
    update granting the four signals (mapped to statistics and advertising by the presets), and the
    next page's defaults, Google's and UET's, start granted."""
    page.goto(url + "/")
    denied = dict.fromkeys(V2, "denied")
    assert consent_calls(page) == [["consent", "default", {**denied, "wait_for_update": 500}]]
    assert uet_calls(page) == [["consent", "default", {"ad_storage": "denied"}]]
    page.get_by_role("button", name="Accept all").click()
    page.wait_for_function("() => dataLayer.some(a => a[0] === 'consent' && a[1] === 'update')")
    granted = dict.fromkeys(V2, "granted")
    assert [c[1:] for c in consent_calls(page)] == [
        ["default", {**denied, "wait_for_update": 500}],
        ["update", granted],
    ]
    page.goto(url + "/other")
    assert consent_calls(page) == [["consent", "default", granted]]
    assert uet_calls(page) == [["consent", "default", {"ad_storage": "granted"}]]
