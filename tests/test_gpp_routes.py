"""The GPP answer as the middleware serves it (issue 17): the `gpp` member of the visitor's state,
window.__gpp in the page's head with the nonce, the script's route, and `[geo.gpp]` in consent.toml.
The string's encoding itself is proved against IAB's library in tests/test_gpp.py."""

from __future__ import annotations

import html
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from consent_banner import ConsentConfig
from consent_banner.errors import ConfigError
from consent_banner.gpp import GppSettings, for_visitor

from .conftest import ORIGIN, make_app

GEO = """
[geo]
country_header = "CF-IPCountry"
subdivision_header = "CF-Region-Code"
default = "opt-in"
{gpp}
[[geo.rules]]
where = ["US-CA", "US-CO"]
model = "opt-out"
"""
CALIFORNIA = {"CF-IPCountry": "US", "CF-Region-Code": "CA"}
SWEDEN = {"CF-IPCountry": "SE"}
GPC = {"Sec-GPC": "1"}


def us_config(toml_path: Path, gpp: str = "") -> ConsentConfig:
    toml_path.write_text(toml_path.read_text() + GEO.format(gpp=gpp))
    return ConsentConfig.from_toml(toml_path)


@pytest.fixture
async def us(toml_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = make_app(us_config(toml_path))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN) as c:
        yield c
    await app.close()


async def state(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    response = await client.get("/_consent/state", headers=headers)
    assert response.status_code == 200
    answer: dict[str, Any] = response.json()
    return answer


def sale(gpp: dict[str, Any]) -> int:
    value: int = gpp["parsedSections"]["usnat"]["SaleOptOut"]
    return value


async def test_an_opt_out_visitor_state_carries_the_gpp_answer_and_others_none(us: httpx.AsyncClient) -> None:
    """R38: A Californian gets the usnat string ("did not opt out"; GPC subsection saying no signal);
    a Swede and a visitor without the headers get `gpp: null`."""
    ca = await state(us, CALIFORNIA)
    assert ca["model"] == "opt-out"
    expected = for_visitor(opted_out=False, gpc=False, settings=GppSettings())
    assert ca["gpp"]["gppString"] == expected.string
    assert ca["gpp"]["gppString"].startswith("DBABLA~")
    assert sale(ca["gpp"]) == 2 and ca["gpp"]["parsedSections"]["usnat"]["Gpc"] is False
    assert ca["gpp"]["cmpDisplayStatus"] == "visible"  # the notice at collection is on the page
    assert ca["gpp"]["applicableSections"] == [7] and ca["gpp"]["supportedAPIs"] == ["7:usnat"]
    assert (await state(us, SWEDEN))["gpp"] is None
    assert (await state(us, {}))["gpp"] is None


async def test_gpc_is_an_opt_out_in_the_string_and_its_own_subsection(us: httpx.AsyncClient) -> None:
    gpp = (await state(us, {**CALIFORNIA, **GPC}))["gpp"]
    assert sale(gpp) == 1
    usnat = gpp["parsedSections"]["usnat"]
    assert usnat["SharingOptOut"] == usnat["TargetedAdvertisingOptOut"] == 1 and usnat["Gpc"] is True
    assert gpp["gppString"] == for_visitor(opted_out=True, gpc=True, settings=GppSettings()).string


async def test_do_not_sell_answers_with_the_new_string_and_it_sticks(us: httpx.AsyncClient) -> None:
    """R38: The decision's answer carries the new `gpp` (gpp.js updates from it); the next state too."""
    response = await us.post(
        "/_consent", json={"action": "opt_out"}, headers={**CALIFORNIA, "Origin": ORIGIN}
    )
    assert response.status_code == 200, response.text
    gpp = response.json()["gpp"]
    assert sale(gpp) == 1 and gpp["parsedSections"]["usnat"]["Gpc"] is False
    assert gpp["cmpDisplayStatus"] == "hidden"
    assert sale((await state(us, CALIFORNIA))["gpp"]) == 1


async def test_a_choice_that_denies_marketing_is_an_opt_out_too(us: httpx.AsyncClient) -> None:
    """Reject all (or marketing switched off) denies what GPC denies: sale and sharing opted out."""
    response = await us.post(
        "/_consent", json={"action": "reject_all"}, headers={**CALIFORNIA, "Origin": ORIGIN}
    )
    assert response.status_code == 200, response.text
    assert sale(response.json()["gpp"]) == 1
    response = await us.post(
        "/_consent", json={"action": "accept_all"}, headers={**CALIFORNIA, "Origin": ORIGIN}
    )
    assert sale(response.json()["gpp"]) == 2


def gpp_script(page: str) -> re.Match[str] | None:
    return re.search(r'<script src="([^"]+)" nonce="([^"]+)" data-gpp="([^"]+)"></script>', page)


async def test_the_page_of_an_opt_out_visitor_loads_gpp_first_with_the_nonce(us: httpx.AsyncClient) -> None:
    """window.__gpp at the top of <head>, before any tag, with the response's nonce and its answer."""
    response = await us.get("/", headers={**CALIFORNIA, **GPC})
    found = gpp_script(response.text)
    assert found is not None, response.text[:400]
    src, nonce, data = found.groups()
    assert re.fullmatch(r"/_consent/gpp\.js\?v=[0-9a-f]{16}", src)
    assert f"'nonce-{nonce}'" in response.headers["content-security-policy"]
    assert response.text.index(found.group(0)) < response.text.index("gtag('consent','default'")
    assert sale(json.loads(html.unescape(data))) == 1
    script = await us.get(src)
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert "immutable" in script.headers["cache-control"] and "__gpp" in script.text


async def test_no_gpp_for_opt_in_visitors(us: httpx.AsyncClient) -> None:
    for headers in (SWEDEN, {}, {"CF-IPCountry": "US", "CF-Region-Code": "NY"}):
        page = (await us.get("/", headers=headers)).text
        assert "gpp.js" not in page and "data-gpp" not in page, headers


async def test_the_script_is_not_served_where_no_rule_uses_opt_out(client: httpx.AsyncClient) -> None:
    """Without [geo] (or with only opt-in rules) there is no window.__gpp to serve."""
    assert (await client.get("/_consent/gpp.js")).status_code == 404
    assert (await client.get("/_consent/consent.js")).status_code == 200


async def test_mspa_settings_reach_the_string(toml_path: Path) -> None:
    config = us_config(
        toml_path, '[geo.gpp]\nmspa_covered_transaction = true\nmspa_mode = "service-provider"\n'
    )
    app = make_app(config)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN) as c:
        usnat = (await state(c, CALIFORNIA))["gpp"]["parsedSections"]["usnat"]
    await app.close()
    assert (
        usnat["MspaCoveredTransaction"],
        usnat["MspaOptOutOptionMode"],
        usnat["MspaServiceProviderMode"],
    ) == (
        1,
        2,
        1,
    )


@pytest.mark.parametrize(
    ("gpp", "says"),
    [
        ("[geo.gpp]\nmspa_covered_transaction = true\n", "geo.gpp"),
        ('[geo.gpp]\nmspa_mode = "opt-out"\n', "only with mspa_covered_transaction"),
        ('[geo.gpp]\nmspa_covered_transaction = true\nmspa_mode = "yes"\n', "geo.gpp.mspa_mode"),
        ("[geo.gpp]\ncmp_id = -3\n", "geo.gpp.cmp_id"),
        ("[geo.gpp]\ncovered = true\n", "geo.gpp.covered"),
    ],
)
def test_bad_gpp_settings_are_a_config_error_naming_the_key(toml_path: Path, gpp: str, says: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(says)):
        us_config(toml_path, gpp)
