"""Red team, issue 15 (B and C): the cookie's service tags and size bound, renew, Consent Mode by config.

Through HTTP, as the other issue 15 tests: the app is the middleware over a page, a "restart" a new app.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from consent_banner import ConfigError
from tests.test_consent_mode_config import GA_ADS, STATS_ADS, label, open_client, page, site
from tests.test_consent_renew import SAME, base, client, decide_switches, make, service

# --- the size bound ------------------------------------------------------------------------------


@pytest.mark.parametrize("count", range(64, 74))
async def test_a_configuration_that_starts_never_issues_a_cookie_it_then_refuses(
    tmp_path: Path, count: int
) -> None:
    """R17/R33: the start check took every switch off (one bitmap); switches on and off both reaching the
    last services make two bitmaps as long, and 73 services with a 64-character revision passed the check
    but their cookie read back as undecided: the banner again on every page, a record per visit."""
    data = base(tmp_path)
    data["policy_revision"] = "r" * 64
    data["services"] = [service(f"vendor-{i:02d}") for i in range(count)]
    try:
        app = make(data)
    except ConfigError:
        return  # refused at start, naming the numbers: fine
    switches = {
        f"vendor-{i:02d}": i % 2 == count % 2 for i in range(count)
    }  # the last on, the one before off
    async with client(app) as c:
        await decide_switches(c, switches)
        state = (await c.get("/_consent/state")).json()
        assert state["decided"], f"{count} services: the server's own cookie reads undecided"
        assert state["services"] == switches
    await app.close()


# --- Consent Mode: nothing granted before consent ---------------------------------------------------


@pytest.mark.parametrize("signal", ["ad_storage", "ad_user_data", "ad_personalization", "analytics_storage"])
def test_necessary_cannot_claim_an_advertising_or_analytics_signal(tmp_path: Path, signal: str) -> None:
    """R30: `necessary` is granted before any decision and under GPC: claiming ad_* or analytics_storage
    would send them granted to Google for a visitor who never decided (or refused everything)."""
    categories = {"necessary": label("necessary", consent_mode=[signal]), **STATS_ADS}
    with pytest.raises(ConfigError, match=f"categories.necessary.consent_mode: '{signal}'"):
        site(tmp_path, categories, GA_ADS)


async def test_a_google_preset_declared_necessary_grants_no_signal_before_a_decision(tmp_path: Path) -> None:
    """R30: Google Analytics declared (by its preset) in `necessary` made analytics_storage follow
    `necessary`: granted on the first page, before any decision, and for a visitor who refused all."""
    services = [{"name": "ga", "preset": "google-analytics", "category": "necessary"}, GA_ADS[1]]
    config = site(tmp_path, STATS_ADS, services)
    async for client_ in open_client(config):
        before = await page(client_)
        assert before.default["analytics_storage"] == "denied"
        assert before.default["ad_storage"] == "denied"
        r = await client_.post("/_consent", json={"action": "reject_all"}, headers=SAME)
        assert r.status_code == 200, r.text
        after = await page(client_)
        assert after.default["analytics_storage"] == "denied"
        assert after.mode_attr.get("analytics_storage") != "necessary"


# --- the renew banner ----------------------------------------------------------------------------


@pytest.mark.parametrize("lang", ["en", "sv"])
async def test_the_renew_banner_escapes_a_new_services_name_and_provider(tmp_path: Path, lang: str) -> None:
    """Held: a provider from the config with markup is text in the renew line, in both languages."""
    data = base(tmp_path)
    data["services"] = [service("alpha")]
    app = make(data)
    async with client(app) as c:
        await c.post("/_consent", json={"action": "accept_all"}, headers=SAME)
        cookie = c.cookies["consent"]
    await app.close()
    hostile = service("beta")
    hostile["provider"] = '<img src=x onerror=alert(1)>"&'
    data["services"] = [service("alpha"), hostile]
    app = make(data)
    async with client(app, cookie) as c:
        html = (await c.get("/", headers={"accept-language": lang})).text
    await app.close()
    assert 'class="cb-renew"' in html
    assert "<img src=x" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
