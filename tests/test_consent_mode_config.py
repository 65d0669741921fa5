"""Consent Mode by configuration, through HTTP (R30, R31; issue 15): which category each Google
Consent Mode signal follows (a category's `consent_mode`, else its services' presets, else the names
`analytics`/`marketing`), the head default a visitor's page carries before and after a decision, and
Microsoft UET's consent call when its preset is declared."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from consent_banner import ConfigError, ConsentConfig

from .conftest import ORIGIN, make_app

SAME = {"origin": ORIGIN}
V2 = ("ad_storage", "ad_user_data", "ad_personalization", "analytics_storage")


def site(tmp_path: Path, categories: dict[str, Any], services: list[dict[str, Any]]) -> ConsentConfig:
    return ConsentConfig.from_dict(
        {
            "policy_revision": "1",
            "controller": "Example AB",
            "privacy_policy_url": "/privacy",
            "log": f"sqlite:///{tmp_path / 'log.db'}",
            "cookie": {"secure": False},
            "categories": {"necessary": {"label": "Necessary"}, **categories},
            "services": services,
        }
    )


def label(name: str, **extra: Any) -> dict[str, Any]:
    return {"label": name.title(), **extra}


async def open_client(config: ConsentConfig) -> AsyncIterator[httpx.AsyncClient]:
    app = make_app(config)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN) as c:
        yield c
    await app.close()


class Page:
    """The head default and the browser script's signal map of one page."""

    def __init__(self, response: httpx.Response) -> None:
        assert response.status_code == 200, response.text
        self.html = response.text
        nonce = re.search(r"'nonce-([^']+)'", response.headers["content-security-policy"])
        assert nonce, response.headers["content-security-policy"]
        self.nonce = nonce.group(1)
        script = re.search(r'<script nonce="([^"]*)">(window\.dataLayer=.*?)</script>', self.html)
        assert script, self.html
        assert script.group(1) == self.nonce, "the default script is not nonce'd with the page's nonce"
        self.script = script.group(2)
        gtag = re.search(r"gtag\('consent','default',(\{.*?\})\);", self.script)
        assert gtag, self.script
        self.default: dict[str, Any] = json.loads(gtag.group(1))
        uet = re.search(r"uetq\.push\('consent','default',(\{.*?\})\);", self.script)
        self.uet: dict[str, Any] | None = json.loads(uet.group(1)) if uet else None
        attr = re.search(r'data-consent-mode="([^"]*)"', self.html)
        assert attr, "no data-consent-mode on the banner root"
        self.mode_attr = dict(pair.split(":") for pair in attr.group(1).split())


async def page(client: httpx.AsyncClient) -> Page:
    return Page(await client.get("/"))


async def decide(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    r = await client.post("/_consent", json=body, headers=SAME)
    assert r.status_code == 200, r.text


def signals(default: dict[str, Any], granted: set[str]) -> dict[str, str]:
    return {s: "granted" if s in granted else "denied" for s in default if s != "wait_for_update"}


STATS_ADS = {"statistics": label("statistics"), "advertising": label("advertising")}
GA_ADS = [
    {"name": "ga", "preset": "google-analytics", "category": "statistics"},
    {"name": "ads", "preset": "google-ads", "category": "advertising"},
]


async def test_statistics_and_advertising_with_presets_grant_consent_mode(tmp_path: Path) -> None:
    """R30, R31: categories named `statistics` and `advertising` holding the GA and Google Ads presets
    map analytics_storage and the ad_* signals to themselves; the head default of a decided visitor
    says what they chose, on every page after the decision."""
    config = site(tmp_path, STATS_ADS, GA_ADS)
    async for client in open_client(config):
        before = await page(client)
        assert before.mode_attr == {
            "ad_storage": "advertising",
            "ad_user_data": "advertising",
            "ad_personalization": "advertising",
            "analytics_storage": "statistics",
        }
        assert before.default == {**dict.fromkeys(V2, "denied"), "wait_for_update": 500}
        await decide(client, {"action": "custom", "categories": ["statistics"]})
        stats_only = await page(client)
        assert stats_only.default == signals(stats_only.default, {"analytics_storage"})
        assert "wait_for_update" not in stats_only.default
        await decide(client, {"action": "accept_all"})
        assert set((await page(client)).default.values()) == {"granted"}


async def test_a_category_key_maps_signals_before_presets_and_names(tmp_path: Path) -> None:
    """R30, R31: `consent_mode` on a category wins over its presets and over the name default;
    `consent_mode = []` maps nothing (the signals it would have had stay denied even after Accept all);
    signals beyond the four of v2 are sent when a category claims them."""
    config = site(
        tmp_path,
        {
            "analytics": label("analytics", consent_mode=["functionality_storage"]),
            "marketing": label("marketing", consent_mode=[]),
            "ads": label("ads", consent_mode=["ad_storage", "analytics_storage"]),
        },
        [{"name": "ga", "preset": "google-analytics", "category": "analytics"}],
    )
    async for client in open_client(config):
        before = await page(client)
        assert before.mode_attr == {
            "ad_storage": "ads",
            "analytics_storage": "ads",
            "functionality_storage": "analytics",
        }
        assert before.default["functionality_storage"] == "denied"
        await decide(client, {"action": "custom", "categories": ["analytics", "marketing"]})
        after = await page(client)
        assert after.default == signals(after.default, {"functionality_storage"})
        assert set(after.default) == {*V2, "functionality_storage"}


async def test_a_signal_the_necessary_category_claims_is_granted_before_a_decision(tmp_path: Path) -> None:
    """R30: security_storage claimed by `necessary` is granted for everyone; the rest stay denied."""
    categories = {"necessary": label("necessary", consent_mode=["security_storage"]), **STATS_ADS}
    config = site(tmp_path, categories, GA_ADS)
    async for client in open_client(config):
        before = await page(client)
        assert before.default["security_storage"] == "granted"
        assert before.default["analytics_storage"] == "denied"


def _raw(tmp_path: Path, categories: dict[str, Any]) -> dict[str, Any]:
    return {
        "policy_revision": "1",
        "controller": "Example AB",
        "privacy_policy_url": "/privacy",
        "log": f"sqlite:///{tmp_path / 'log.db'}",
        "categories": categories,
    }


@pytest.mark.parametrize(
    ("categories", "message"),
    [
        (
            {
                "stats": label("stats", consent_mode=["analytics_storage"]),
                "more": label("more", consent_mode=["analytics_storage"]),
            },
            "categories.more.consent_mode: 'analytics_storage' is already claimed by category 'stats'",
        ),
        ({"stats": label("stats", consent_mode=["analytics"])}, "'analytics' is not a Consent Mode signal"),
        (
            {"stats": label("stats", consent_mode=["ad_storage", "ad_storage"])},
            "'ad_storage' is listed twice",
        ),
        ({"stats": label("stats", consent_mode="analytics_storage")}, "categories.stats.consent_mode"),
        ({"stats": label("stats", consent_mode=["<script>"])}, "is not a Consent Mode signal"),
    ],
)
def test_consent_mode_keys_are_validated(tmp_path: Path, categories: dict[str, Any], message: str) -> None:
    """R30: only known Consent Mode signals, each in one category (the error names both)."""
    with pytest.raises(ConfigError) as e:
        ConsentConfig.from_dict(_raw(tmp_path, {"necessary": label("necessary"), **categories}))
    assert message in str(e.value)


def test_the_hash_covers_the_key_and_configs_without_it_keep_theirs(tmp_path: Path) -> None:
    """R30 (and R20): a config without `consent_mode` dumps as before; the key, when given, is hashed."""
    plain = ConsentConfig.from_dict(_raw(tmp_path, {"necessary": label("necessary"), **STATS_ADS}))
    assert "consent_mode" not in plain.model_dump()["categories"]["statistics"]
    keyed = _raw(tmp_path, {"necessary": label("necessary"), **STATS_ADS})
    keyed["categories"]["statistics"] = label("statistics", consent_mode=["analytics_storage"])
    assert ConsentConfig.from_dict(keyed).config_hash != plain.config_hash


async def test_unmapped_consent_mode_is_said_at_start_and_stays_denied(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """R30, R31: `statistics`/`advertising` without presets and without the key: a warning at start
    names the unmapped signals (never silent), and Accept all leaves them denied."""
    config = site(tmp_path, STATS_ADS, [])
    with caplog.at_level("WARNING", logger="consent_banner"):
        async for client in open_client(config):
            await decide(client, {"action": "accept_all"})
            after = await page(client)
            assert after.default == dict.fromkeys(V2, "denied")
            assert after.mode_attr == {}
    warned = [r.getMessage() for r in caplog.records if "Consent Mode" in r.getMessage()]
    assert warned and "ad_storage, ad_user_data, ad_personalization, analytics_storage" in warned[0]
    assert "stay denied" in warned[0]


async def test_the_name_default_still_maps_and_does_not_warn(
    config: ConsentConfig, caplog: pytest.LogCaptureFixture
) -> None:
    """R30, R31: `analytics` and `marketing` without presets or key map as before; nothing is warned."""
    with caplog.at_level("WARNING", logger="consent_banner"):
        async for client in open_client(config):
            assert (await page(client)).mode_attr == {
                "ad_storage": "marketing",
                "ad_user_data": "marketing",
                "ad_personalization": "marketing",
                "analytics_storage": "analytics",
            }
            await decide(client, {"action": "custom", "categories": ["marketing"]})
            after = await page(client)
            assert after.default == signals(
                after.default, {"ad_storage", "ad_user_data", "ad_personalization"}
            )
            assert after.uet is None, "no UET call without the microsoft-uet preset"
    assert "Consent Mode" not in caplog.text


async def test_microsoft_uet_consent_default_follows_its_category_and_switch(tmp_path: Path) -> None:
    """R30: with the microsoft-uet preset declared, the nonce'd head script also sets UET's consent
    default (ad_storage), denied before a decision and after a refusal or the service's switch off,
    granted when its category is."""
    config = site(
        tmp_path,
        STATS_ADS,
        [*GA_ADS, {"name": "bing", "preset": "microsoft-uet", "category": "advertising", "switch": True}],
    )
    async for client in open_client(config):
        before = await page(client)
        assert before.uet == {"ad_storage": "denied"}
        assert before.script.index("gtag('consent'") < before.script.index("uetq.push('consent'")
        # UET's own signal does not claim Google's: google-ads decides the ad_* signals.
        assert before.mode_attr["ad_storage"] == "advertising"
        await decide(client, {"action": "accept_all"})
        assert (await page(client)).uet == {"ad_storage": "granted"}
        await decide(client, {"action": "custom", "categories": ["advertising"], "services": {"bing": False}})
        off = await page(client)
        assert off.uet == {"ad_storage": "denied"} and off.default["ad_storage"] == "granted"
        await decide(client, {"action": "reject_all"})
        assert (await page(client)).uet == {"ad_storage": "denied"}
