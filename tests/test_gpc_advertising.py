"""Global Privacy Control denies advertising whatever its category is called (issue 15; threat model,
"GPC on a site whose ad_* Consent Mode signals belong to a category not named marketing").

GPC is California's opt-out of sale and sharing for targeted advertising: a category that carries
Google Consent Mode's ad_* signals (its own `consent_mode`, or an advertising preset among its
services) is denied under `Sec-GPC: 1` as `marketing` is, without `gpc_denies` naming it, unless the
site says `gpc_denies_advertising = false` (warned about at start). Through HTTP: the state JSON, a
decision, the page's Consent Mode default, its cookies and its policy.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from consent_banner import ConsentConfig, ConsentMiddleware

from .conftest import ORIGIN
from .test_consent_mode_config import Page

SAME = {"origin": ORIGIN}
GPC = {"sec-gpc": "1"}
ADS_ORIGIN = "https://www.googleadservices.com"


def site(tmp_path: Path, advertising: dict[str, Any] | None = None, **overrides: Any) -> ConsentConfig:
    """Statistics and an "advertising" category holding Google Ads by its preset; no `gpc_denies`."""
    return ConsentConfig.from_dict(
        {
            "policy_revision": "1",
            "controller": "Example AB",
            "privacy_policy_url": "/privacy",
            "log": f"sqlite:///{tmp_path / 'log.db'}",
            "cookie": {"secure": False},
            "categories": {
                "necessary": {"label": "Necessary"},
                "statistics": {"label": "Statistics", "consent_mode": ["analytics_storage"]},
                "advertising": {"label": "Advertising", **(advertising or {})},
            },
            "services": [
                {"name": "ga", "preset": "google-analytics", "category": "statistics"},
                {"name": "ads", "preset": "google-ads", "category": "advertising"},
            ],
            **overrides,
        }
    )


async def ad_page(request: Request) -> HTMLResponse:
    """A page that sets Google Ads' conversion cookie."""
    response = HTMLResponse(
        "<!doctype html><html lang='en'><head><title>t</title></head><body></body></html>"
    )
    response.set_cookie("_gcl_au", "1")
    return response


@asynccontextmanager
async def client(config: ConsentConfig) -> AsyncIterator[httpx.AsyncClient]:
    app = ConsentMiddleware(Starlette(routes=[Route("/", ad_page)]), config=config)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN) as c:
            yield c
    finally:
        await app.close()  # also when an assertion failed: the log's writer thread must stop


async def test_gpc_denies_an_advertising_category_not_named_marketing(tmp_path: Path) -> None:
    """R26: with Sec-GPC: 1, Accept all grants statistics but not advertising (its Google Ads preset
    carries ad_*); the page's Consent Mode default keeps ad_* denied, the ad cookie is dropped, and the
    ad origin is in no directive. Before: advertising was granted with every ad_* signal."""
    async with client(site(tmp_path)) as c:
        state = (await c.get("/_consent/state", headers=GPC)).json()
        assert state["gpc"] is True and state["decided"] is False
        r = await c.post("/_consent", json={"action": "accept_all"}, headers={**SAME, **GPC})
        assert r.status_code == 200, r.text
        assert r.json()["categories"] == ["necessary", "statistics"]
        response = await c.get("/", headers=GPC)
        page = Page(response)
        assert page.default["analytics_storage"] == "granted"
        assert {page.default[s] for s in ("ad_storage", "ad_user_data", "ad_personalization")} == {"denied"}
        assert not any(h.startswith("_gcl_au=") for h in response.headers.get_list("set-cookie"))
        assert ADS_ORIGIN not in response.headers["content-security-policy"]
        assert 'data-gpc-denied="advertising"' in response.text  # the dialog locks its switch


async def test_a_decided_visitor_arriving_with_gpc_loses_advertising(tmp_path: Path) -> None:
    """R27: accepted everything without the signal, then GPC: advertising no longer counts, and the
    re-issued cookie keeps it off on a later visit without the signal."""
    async with client(site(tmp_path)) as c:
        await c.post("/_consent", json={"action": "accept_all"}, headers=SAME)
        assert (await c.get("/_consent/state")).json()["categories"] == [
            "necessary",
            "advertising",
            "statistics",
        ]
        page = Page(await c.get("/", headers=GPC))
        assert page.default["ad_storage"] == "denied"
        state = (await c.get("/_consent/state")).json()  # no signal now: the recorded opt-out stays
        assert state["categories"] == ["necessary", "statistics"]


async def test_a_category_claiming_ad_signals_by_consent_mode_is_denied_under_gpc(tmp_path: Path) -> None:
    """R26: the category's own `consent_mode` says it carries ad_storage: denied under GPC too."""
    config = site(tmp_path, {"consent_mode": ["ad_storage", "ad_user_data", "ad_personalization"]})
    assert config.gpc_denied == {"advertising"}
    config = site(tmp_path, {"consent_mode": []})  # says it carries none: the owner decided
    assert config.gpc_denied == frozenset()


async def test_opting_out_keeps_advertising_under_gpc_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`gpc_denies_advertising = false`: only `gpc_denies` counts, and the start warns which
    categories GPC leaves granted."""
    with caplog.at_level(logging.WARNING, logger="consent_banner"):
        config = site(tmp_path, gpc_denies_advertising=False)
    assert "'advertising' stays granted" in caplog.text
    async with client(config) as c:
        r = await c.post("/_consent", json={"action": "accept_all"}, headers={**SAME, **GPC})
        assert r.json()["categories"] == ["necessary", "advertising", "statistics"]
    plain = site(tmp_path).config_hash  # the default is left out of the hash: configs keep theirs
    assert site(tmp_path, gpc_denies_advertising=True).config_hash == plain


def test_a_marketing_preset_without_ad_signals_is_named_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Meta Pixel carries no Consent Mode signal, so GPC cannot tell its category is advertising: the
    start says so, naming the category and the service, and what to do."""
    with caplog.at_level(logging.WARNING, logger="consent_banner"):
        config = site(tmp_path, {"consent_mode": []})
        config = ConsentConfig.from_dict(
            {
                **config.model_dump(mode="json", exclude={"services"}),
                "services": [{"name": "fb", "preset": "meta-pixel", "category": "advertising"}],
            }
        )
    assert "advertising" not in config.gpc_denied
    assert "leaves category 'advertising' granted, though it holds 'fb'" in caplog.text
    assert "add 'advertising' to gpc_denies" in caplog.text
