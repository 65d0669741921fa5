"""Jurisdictions (issue 17, geo.py): the consent model by the region the site's edge names.

Config validation (each mistake named by its key), the strict reading of the region headers (what a
hostile visitor sends falls back to `default`, never a 500), the most specific place winning, and
through HTTP: the state, `get_consent(request).allows()`, the gate (trackers and cookies of an
undecided opt-out visitor pass, a cached plan never crosses models), GPC under opt-out logged once as
`opt_out`/gpc, "Do Not Sell or Share", the notice and its dismissal, Consent Mode, Vary, the receipt.
"""

from __future__ import annotations

import re
import textwrap
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from consent_banner import ConsentConfig, ConsentMiddleware, get_consent
from consent_banner.errors import ConfigError
from consent_banner.geo import Geo, GeoSettings, country, regions, subdivision

from .conftest import MODEL_TOML, ORIGIN, rows

GEO = """
[geo]
country_header = "CF-IPCountry"
subdivision_header = "CF-Region-Code"
default = "opt-in"

[[geo.rules]]
where = ["US-CA", "US-CO", "US-CT", "US-VA"]
model = "opt-out"
"""
CA = {"cf-ipcountry": "US", "cf-region-code": "CA"}
SE = {"cf-ipcountry": "SE"}
HTML = {"accept": "text/html", "sec-fetch-dest": "document"}
SAME = {"origin": ORIGIN}
PAGE = (
    "<!doctype html><html lang='en'><head><title>t</title>"
    '<script src="https://ads.example.com/px.js"></script>'
    '<script src="https://stats.example.net/s.js"></script>'
    "</head><body><p>hi</p></body></html>"
)


def geo_config(tmp_path: Path, geo: str = GEO, **extra: Any) -> ConsentConfig:
    data = tomllib.loads(textwrap.dedent(MODEL_TOML.format(db=tmp_path / "log.db")) + geo)
    data.update(extra)
    return ConsentConfig.from_dict(data)


def settings(**geo: Any) -> GeoSettings:
    return GeoSettings.model_validate(geo)


def problems(tmp_path: Path, geo: str) -> str:
    with pytest.raises(ConfigError) as e:
        geo_config(tmp_path, geo)
    return str(e.value)


# --- configuration -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("geo", "expected"),
    [
        (
            '[geo]\ncountry_header = "CF-IPCountry"\n[[geo.rules]]\nwhere = ["EFTA"]\nmodel = "opt-out"',
            r"geo\.rules\[0\]\.where: 'EFTA' is not a place.*groups? \(EEA, EU\)",
        ),
        (
            '[geo]\ncountry_header = "CF-IPCountry"\n[[geo.rules]]\nwhere = ["XX"]\nmodel = "opt-out"',
            r"geo\.rules\[0\]\.where: 'XX' is not a place",
        ),
        (
            '[geo]\ncountry_header = "CF-IPCountry"\n[[geo.rules]]\nwhere = ["USA"]\nmodel = "opt-out"',
            r"geo\.rules\[0\]\.where: 'USA' is not a place",
        ),
        (
            '[geo]\ncountry_header = "C"\nsubdivision_header = "R"\n[[geo.rules]]\nwhere = ["US-"]\n'
            'model = "opt-out"',
            r"geo\.rules\[0\]\.where: 'US-': '' is not an ISO 3166-2 subdivision code of US",
        ),
        (
            '[geo]\ncountry_header = "C"\nsubdivision_header = "R"\n[[geo.rules]]\nwhere = ["US-ZZ"]\n'
            'model = "opt-out"',
            r"'US-ZZ': 'ZZ' is not an ISO 3166-2 subdivision code of US",
        ),
        (
            '[geo]\ncountry_header = "C"\nsubdivision_header = "R"\n[[geo.rules]]\nwhere = ["DE-BY"]\n'
            'model = "opt-in"',
            r"'DE-BY': rules by subdivision are known for CA, US only",
        ),
        (
            '[geo]\ncountry_header = "CF-IPCountry"\n[[geo.rules]]\nwhere = ["US"]\nmodel = "opt-maybe"',
            r"geo\.rules\[0\]\.model: Input should be 'opt-in' or 'opt-out'",
        ),
        ('[geo]\ndefault = "optout"', r"geo\.default: Input should be 'opt-in' or 'opt-out'"),
        (
            '[geo]\n[[geo.rules]]\nwhere = ["US"]\nmodel = "opt-out"',
            r"geo\.country_header: required key is missing: rules need the header",
        ),
        (
            '[geo]\ncountry_header = "CF-IPCountry"\n[[geo.rules]]\nwhere = ["US-CA"]\nmodel = "opt-out"',
            r"geo\.rules\[0\]\.where: 'US-CA' needs geo\.subdivision_header",
        ),
        (
            '[geo]\ncountry_header = "CF IPCountry"',
            r"geo\.country_header: 'CF IPCountry' is not an HTTP header",
        ),
        ('[geo]\ncountry_header = "Cookie"', r"geo\.country_header: 'Cookie' carries something else"),
        (
            '[geo]\nsubdivision_header = "CF-Region-Code"',
            r"geo\.country_header: required with geo\.subdivision",
        ),
        (
            '[geo]\ncountry_header = "C"\n[[geo.rules]]\nwhere = []\nmodel = "opt-out"',
            r"geo\.rules\[0\]\.where: Tuple should have at least 1 item",
        ),
        (
            '[geo]\ncountry_header = "C"\n[[geo.rules]]\nwhere = ["US", "us"]\nmodel = "opt-out"',
            r"'us' is listed twice",
        ),
        (
            '[geo]\ncountry_header = "C"\n[[geo.rules]]\nwhere = ["US"]\nmodel = "opt-out"\n'
            '[[geo.rules]]\nwhere = ["US"]\nmodel = "opt-in"',
            r"geo\.rules\[1\]\.where: 'US' is in geo\.rules\[0\] too",
        ),
        (
            '[geo]\ncountry_header = "C"\n[[geo.rules]]\nwhere = ["EU"]\nmodel = "opt-in"\n'
            '[[geo.rules]]\nwhere = ["EEA"]\nmodel = "opt-out"',
            r"geo\.rules\[1\]\.where: 'EEA' overlaps 'EU'",
        ),
        ('[geo]\ncountry_header = "C"\nregion = "x"', r"geo\.region: unknown key"),
    ],
)
def test_a_bad_geo_table_is_named_by_its_key(tmp_path: Path, geo: str, expected: str) -> None:
    assert re.search(expected, problems(tmp_path, geo)), problems(tmp_path, geo)


def test_without_geo_the_config_hash_is_unchanged(tmp_path: Path) -> None:
    """Upgrades lose nothing: a configuration without [geo] keeps its hash (its banner versions)."""
    plain = geo_config(tmp_path, "")
    assert "geo" not in plain.model_dump(mode="json") and plain.geo is None
    assert geo_config(tmp_path).config_hash != plain.config_hash


def test_lower_case_places_are_read_and_groups_are_the_shipped_lists() -> None:
    s = settings(
        country_header="C", subdivision_header="R", rules=[{"where": ["us-ca", " eea "], "model": "opt-out"}]
    )
    assert s.rules[0].where == ("US-CA", "EEA")
    known = regions()
    assert len(known.countries) == 249 and len(known.groups["EU"]) == 27
    assert set(known.groups["EEA"]) == set(known.groups["EU"]) | {"IS", "LI", "NO"}
    assert "GB" not in known.groups["EEA"] and "CH" not in known.groups["EEA"] and "GR" in known.groups["EU"]


def test_the_most_specific_place_wins_whatever_the_order() -> None:
    """R37: A subdivision over its country, a country over a group; the rules' order never matters."""
    rules = [
        {"where": ["EEA", "US"], "model": "opt-out"},
        {"where": ["SE", "US-CA"], "model": "opt-in"},
    ]
    for order in (rules, rules[::-1]):
        s = settings(country_header="C", subdivision_header="R", default="opt-in", rules=order)
        assert s.model_for("US-CA") == "opt-in"
        assert s.model_for("US-NY") == "opt-out" and s.model_for("US") == "opt-out"
        assert (
            s.model_for("SE") == "opt-in"
            and s.model_for("DE") == "opt-out"
            and s.model_for("NO") == "opt-out"
        )
        assert s.model_for("GB") == "opt-in" and s.model_for(None) == "opt-in"
    everywhere = settings(default="opt-out")
    assert everywhere.model_for(None) == "opt-out" and Geo(everywhere).locate([]) == (None, "opt-out")


# --- reading the headers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"US", "US"),
        (b"us", "US"),
        (b" se ", "SE"),
        (b"XX", None),
        (b"T1", None),
        (b"ZZ", None),
        (b"", None),
        (b"U", None),
        (b"USA", None),
        (b"U\xc3\xa9", None),
        (b"US\x00", None),
        (b"US,SE", None),
        (b"<script>", None),
        (b"U" * 1024, None),
        (b"1Z", None),
    ],
)
def test_a_country_value_is_read_strictly(value: bytes, expected: str | None) -> None:
    assert country(value) == expected


@pytest.mark.parametrize(
    ("value", "code", "expected"),
    [
        (b"CA", "US", "US-CA"),
        (b"ca", "US", "US-CA"),
        (b"ZZ", "US", None),
        (b"US-CA", "US", None),
        (b"", "US", None),
        (b"QC", "CA", "CA-QC"),
        (b"BY", "DE", "DE-BY"),
        (b"C" * 1024, "US", None),
        (b"C;A", "US", None),
        (b"CA\r\n", "US", "US-CA"),
    ],
)
def test_a_subdivision_value_is_read_strictly(value: bytes, code: str, expected: str | None) -> None:
    assert subdivision(value, code) == expected


def test_locate_falls_back_to_default_for_anything_malformed_or_twice_sent() -> None:
    """R37: a missing, malformed or twice-sent header is no region: the default model."""
    geo = Geo(
        settings(
            country_header="CF-IPCountry",
            subdivision_header="CF-Region-Code",
            rules=[{"where": ["US-CA"], "model": "opt-out"}],
        )
    )
    assert geo.locate([(b"cf-ipcountry", b"US"), (b"cf-region-code", b"CA")]) == ("US-CA", "opt-out")
    assert geo.locate([(b"cf-ipcountry", b"US")]) == ("US", "opt-in")
    assert geo.locate([(b"cf-region-code", b"CA")]) == (None, "opt-in")  # a subdivision of no country
    assert geo.locate([(b"cf-ipcountry", b"US"), (b"cf-region-code", b"C" * 1024)]) == ("US", "opt-in")
    assert geo.locate([(b"cf-ipcountry", b"US"), (b"cf-ipcountry", b"US"), (b"cf-region-code", b"CA")]) == (
        None,
        "opt-in",
    )
    assert geo.locate([(b"cf-ipcountry", b"US"), (b"cf-region-code", b"CA"), (b"cf-region-code", b"CA")]) == (
        "US",
        "opt-in",
    )
    assert geo.locate([]) == (None, "opt-in")


# --- through HTTP ------------------------------------------------------------------------------------


async def page(request: Request) -> HTMLResponse:
    return HTMLResponse(PAGE)


async def set_cookies(request: Request) -> Response:
    response = HTMLResponse(PAGE)
    response.set_cookie("_st_ses", "1")
    response.set_cookie("_ads", "1")
    return response


async def whoami(request: Request) -> JSONResponse:
    c = get_consent(request)
    return JSONResponse(
        {"decided": c.decided, "analytics": c.allows("analytics"), "marketing": c.allows("marketing")}
    )


def build(config: ConsentConfig) -> ConsentMiddleware:
    inner = Starlette(routes=[Route("/", page), Route("/set", set_cookies), Route("/whoami", whoami)])
    return ConsentMiddleware(inner, config=config)


@pytest.fixture
def config(tmp_path: Path) -> ConsentConfig:
    return geo_config(tmp_path)


@pytest.fixture
async def client(config: ConsentConfig) -> AsyncIterator[httpx.AsyncClient]:
    app = build(config)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN) as c:
        yield c
    await app.close()


async def test_state_says_region_and_model(client: httpx.AsyncClient) -> None:
    """R37: /_consent/state adds region and model; an opt-out visitor's categories are all allowed."""
    state = (await client.get("/_consent/state", headers=CA)).json()
    assert state["region"] == "US-CA" and state["model"] == "opt-out" and not state["decided"]
    assert state["categories"] == ["necessary", "analytics", "marketing"]
    sweden = (await client.get("/_consent/state", headers=SE)).json()
    assert sweden["region"] == "SE" and sweden["model"] == "opt-in" and sweden["categories"] == ["necessary"]
    nowhere = (await client.get("/_consent/state")).json()
    assert nowhere["region"] is None and nowhere["model"] == "opt-in"
    gpc = (await client.get("/_consent/state", headers={**CA, "sec-gpc": "1"})).json()
    assert gpc["categories"] == ["necessary", "analytics"] and gpc["gpc"]


async def test_get_consent_allows_under_the_visitors_model(client: httpx.AsyncClient) -> None:
    """R37: the app's get_consent(request).allows() answers under the visitor's model."""
    assert (await client.get("/whoami", headers=CA)).json() == {
        "decided": False,
        "analytics": True,
        "marketing": True,
    }
    assert (await client.get("/whoami", headers=SE)).json() == {
        "decided": False,
        "analytics": False,
        "marketing": False,
    }
    assert (await client.get("/whoami", headers={**CA, "sec-gpc": "1"})).json() == {
        "decided": False,
        "analytics": True,
        "marketing": False,
    }


async def test_an_undecided_opt_out_visitors_trackers_and_cookies_pass(client: httpx.AsyncClient) -> None:
    """R37: Under opt-out, before any decision, the tags run unrewritten and the app's cookies stick; the
    same request from Sweden has them neutralised and dropped."""
    ca = await client.get("/set", headers={**CA, **HTML})
    assert {c.split("=")[0] for c in ca.headers.get_list("set-cookie")} >= {"_st_ses", "_ads"}
    assert '<script src="https://ads.example.com/px.js"></script>' in ca.text
    assert "https://ads.example.com" in ca.headers["content-security-policy"]
    client.cookies.clear()
    se = await client.get("/set", headers={**SE, **HTML})
    assert not {c.split("=")[0] for c in se.headers.get_list("set-cookie")} & {"_st_ses", "_ads"}
    assert '<script src="https://ads.example.com/px.js"></script>' not in se.text
    assert 'data-consent-service="pixel"' in se.text


async def test_one_cookie_header_two_regions_two_plans(config: ConsentConfig) -> None:
    """R35: the gate's plan and the visit's cache key on the model: a visitor's cached state never
    leaks to another with the same Cookie header from another region, in either order."""
    for first, second in ((CA, SE), (SE, CA)):
        app = build(config)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN) as c:
            jar = {"cookie": "theme=dark"}
            a = await c.get("/", headers={**first, **HTML, **jar})
            b = await c.get("/", headers={**second, **HTML, **jar})
            by = {id(first): a, id(second): b}
            assert '<script src="https://ads.example.com/px.js"></script>' in by[id(CA)].text
            assert '<script src="https://ads.example.com/px.js"></script>' not in by[id(SE)].text
            assert (await c.get("/whoami", headers={**SE, **jar})).json()["analytics"] is False
            assert (await c.get("/whoami", headers={**CA, **jar})).json()["analytics"] is True
        await app.close()


async def test_gpc_under_opt_out_is_logged_once_as_opt_out(
    client: httpx.AsyncClient, config: ConsentConfig
) -> None:
    """R26, R19: GPC before any decision under opt-out: one `opt_out` record (source gpc) with the
    navigation, none for subresources, none again once the cookie remembers it; marketing stays
    denied after."""
    await client.get("/whoami", headers={**CA, "sec-gpc": "1"})  # a subresource: not logged
    assert rows(config) == []
    first = await client.get("/", headers={**CA, **HTML, "sec-gpc": "1"})
    assert any(h.startswith("consent=") for h in first.headers.get_list("set-cookie"))
    for _ in range(3):
        await client.get("/", headers={**CA, **HTML, "sec-gpc": "1"})
    [row] = rows(config)
    assert (row["action"], row["source"]) == ("opt_out", "gpc")
    assert row["granted"] == "necessary,analytics" and row["denied"] == "marketing"
    assert row["detail"] == '{"model":"opt-out","region":"US-CA"}'
    later = (await client.get("/whoami", headers=CA)).json()  # no signal now: the opt-out stands
    assert later == {"decided": True, "analytics": True, "marketing": False}


async def test_do_not_sell_is_one_click_and_logged_with_its_own_version(
    client: httpx.AsyncClient, config: ConsentConfig
) -> None:
    """R29, R20: "Do Not Sell or Share" is one `opt_out` record, with the notice's own banner version."""
    r = await client.post("/_consent", json={"action": "opt_out"}, headers={**SAME, **CA})
    assert r.status_code == 200, r.text
    assert r.json()["categories"] == ["necessary", "analytics"] and r.json()["model"] == "opt-out"
    [row] = rows(config)
    assert row["action"] == "opt_out" and row["denied"] == "marketing"
    # After the opt-out the ad tag is neutralised, its cookie dropped and the one it holds expired.
    p = await client.get(
        "/set", headers={**CA, **HTML, "cookie": f"consent={client.cookies['consent']}; _ads=1"}
    )
    assert '<script src="https://ads.example.com/px.js"></script>' not in p.text
    assert not any(h.startswith("_ads=1") for h in p.headers.get_list("set-cookie"))
    assert any(h.startswith("_ads=") and "Max-Age=0" in h for h in p.headers.get_list("set-cookie"))
    # The notice's version differs from the banner's: what the visitor was shown is on record.
    accepted = await client.post("/_consent", json={"action": "accept_all"}, headers={**SAME, **SE})
    assert accepted.status_code == 200
    versions = {r["action"]: r["version_id"] for r in rows(config)}
    assert versions["opt_out"] != versions["accept_all"]
    bad = await client.post(
        "/_consent", json={"action": "opt_out", "categories": ["analytics"]}, headers={**SAME, **CA}
    )
    assert bad.status_code == 400 and "opt_out takes no categories" in bad.text


async def test_an_opt_out_is_no_consent_where_the_model_is_opt_in(client: httpx.AsyncClient) -> None:
    """R37: A Californian who opted out and then visits from Sweden is asked for consent there: an
    opt-out never passes for an opt-in."""
    await client.post("/_consent", json={"action": "opt_out"}, headers={**SAME, **CA})
    assert (await client.get("/whoami", headers=CA)).json()["decided"] is True
    assert (await client.get("/whoami", headers=SE)).json() == {
        "decided": False,
        "analytics": False,
        "marketing": False,
    }


async def test_the_notice_is_non_blocking_and_its_dismissal_is_no_decision(
    client: httpx.AsyncClient, config: ConsentConfig
) -> None:
    """R37: The opt-out notice has the one-click form and the settings; dismissing it (a form post, no
    JavaScript) hides it by its own cookie, records nothing and leaves the visitor undecided."""
    first = await client.get("/", headers={**CA, **HTML})
    assert "data-cb-notice" in first.text and 'value="opt_out"' in first.text
    assert "Do Not Sell or Share My Personal Information" in first.text
    assert "Accept all" not in first.text.split("<dialog")[0]  # the notice is no consent banner
    token = re.search(r'name="csrf" value="([^"]+)"', first.text)
    assert token
    dismissed = await client.post(
        "/_consent/dismiss",
        data={"csrf": token.group(1), "language": "en", "return_to": "/"},
        headers={**SAME, **CA},
    )
    assert dismissed.status_code == 303 and dismissed.headers["location"] == "/"
    assert any(h.startswith("consent_notice=1") for h in dismissed.headers.get_list("set-cookie"))
    again = await client.get("/", headers={**CA, **HTML})
    assert "data-cb-notice" not in again.text
    settings_button = re.search(r"<button[^>]*data-cb-settings[^>]*>", again.text)
    assert settings_button and "hidden" not in settings_button.group(0)
    assert rows(config) == []
    assert (await client.get("/whoami", headers=CA)).json()["decided"] is False
    # Swedish text, and no notice for opt-in visitors
    client.cookies.clear()
    sv = await client.get("/_consent/banner?lang=sv", headers=CA)
    assert "data-cb-notice" in sv.text and "Sälj eller dela inte mina personuppgifter" in sv.text
    assert "data-cb-notice" not in (await client.get("/", headers={**SE, **HTML})).text


async def test_consent_mode_default_follows_the_model(client: httpx.AsyncClient) -> None:
    """R30: the default is per visitor: granted where opt-out allows, denied where opt-in is
    undecided, the ad signals denied under GPC."""

    def default(text: str) -> str:
        found = re.search(r"gtag\('consent','default',(\{[^}]*\})\)", text)
        assert found
        return found.group(1)

    ca = default((await client.get("/", headers={**CA, **HTML})).text)
    assert '"analytics_storage":"granted"' in ca and '"ad_storage":"granted"' in ca
    gpc = default((await client.get("/", headers={**CA, **HTML, "sec-gpc": "1"})).text)
    assert '"analytics_storage":"granted"' in gpc and '"ad_storage":"denied"' in gpc
    client.cookies.clear()
    se = default((await client.get("/", headers={**SE, **HTML})).text)
    assert '"analytics_storage":"denied"' in se and '"ad_storage":"denied"' in se


async def test_responses_that_depend_on_the_region_vary_on_its_headers(client: httpx.AsyncClient) -> None:
    """R35: every response made for a consent state varies on the region headers too."""
    for path in ("/", "/_consent/state", "/whoami"):
        vary = (await client.get(path, headers={**CA, **HTML})).headers["vary"]
        assert "CF-IPCountry" in vary and "CF-Region-Code" in vary and "Cookie" in vary, (path, vary)
    script = await client.get(f"/_consent/consent.js?v={build.__name__}")
    assert "CF-IPCountry" not in script.headers.get("vary", "")  # the same for everyone


async def test_hostile_region_headers_never_make_a_500(client: httpx.AsyncClient) -> None:
    for value in (b"U" * 1024, "us\u00e9".encode(), b"US, CA", b"", b"<b>", b"\t", b"\xff\xfe"):
        for path in ("/", "/_consent/state", "/whoami"):
            r = await client.get(path, headers={**HTML, "cf-ipcountry": value, "cf-region-code": value})  # type: ignore[dict-item]
            assert r.status_code == 200, (value, path)
        state = (await client.get("/_consent/state", headers={"cf-ipcountry": value})).json()
        assert state["region"] is None and state["model"] == "opt-in"


async def test_the_receipt_shows_region_and_model(client: httpx.AsyncClient) -> None:
    """R24: the receipt says where each decision was made (region and model)."""
    await client.post("/_consent", json={"action": "opt_out"}, headers={**SAME, **CA})
    page_ = await client.get("/_consent/receipt", headers=CA)
    assert page_.status_code == 200
    assert "US-CA (opt-out)" in page_.text and "Opted out of sale and sharing" in page_.text
    data = (
        await client.get("/_consent/receipt?format=json", headers={"accept": "application/json", **CA})
    ).json()
    records = data["records"] if isinstance(data, dict) else data
    assert records[0]["detail"] == {"model": "opt-out", "region": "US-CA"}


async def test_every_record_says_its_jurisdiction_also_without_geo(tmp_path: Path) -> None:
    """R37: every record of this release says its model and region, [geo] or not."""
    config = geo_config(tmp_path, "")
    app = build(config)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN) as c:
        r = await c.post("/_consent", json={"action": "accept_all"}, headers={**SAME, **CA})
        assert r.json()["model"] == "opt-in" and r.json()["region"] is None
        assert "CF-IPCountry" not in r.headers.get("vary", "")
    await app.close()
    assert rows(config)[0]["detail"] == '{"model":"opt-in","region":null}'


async def test_gpc_opt_outs_without_a_cookie_are_bounded_by_the_decision_budget(tmp_path: Path) -> None:
    """A client that never keeps the cookie and sends GPC on every navigation cannot write a record
    per request: the opt-outs count against decision_rate_limit; over it the signal still applies."""
    config = geo_config(tmp_path, decision_rate_limit="3/minute")
    app = build(config)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN) as c:
        for _ in range(10):
            c.cookies.clear()
            r = await c.get("/whoami", headers={**CA, **HTML, "sec-gpc": "1"})
            assert r.json()["marketing"] is False
    await app.close()
    assert [r["action"] for r in rows(config)] == ["opt_out"] * 3


async def test_one_cookie_from_many_regions_keeps_a_few_states(config: ConsentConfig) -> None:
    """What a visit remembers per region is bounded: a cookie replayed with every region header is
    worked out anew past a few, never kept without bound."""
    from consent_banner.visitor import MAX_APPLIED

    app = build(config)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN) as c:
        for code in sorted(regions().countries)[:40]:
            r = await c.get("/whoami", headers={"cf-ipcountry": code, "cookie": "theme=dark"})
            assert r.status_code == 200
        visit = app.visitors.visit(b"theme=dark", False)
        assert 0 < len(visit.applied) <= MAX_APPLIED
        assert (await c.get("/whoami", headers={**CA, "cookie": "theme=dark"})).json()["marketing"] is True
    await app.close()


async def test_dismissing_needs_this_sites_form_token(client: httpx.AsyncClient) -> None:
    """The dismissal is a form post like a decision's: another site cannot make the notice go away."""
    no_token = await client.post("/_consent/dismiss", data={"return_to": "/"}, headers={**SAME, **CA})
    assert no_token.status_code == 403 and "consent_notice" not in no_token.headers.get("set-cookie", "")
    other = await client.post("/_consent/dismiss", json={}, headers={"origin": "https://evil.example", **CA})
    assert other.status_code == 403
    ok = await client.post("/_consent/dismiss", json={}, headers={**SAME, **CA})
    assert ok.status_code == 204 and ok.headers["set-cookie"].startswith("consent_notice=1")


async def test_an_embedded_sites_token_is_read_under_the_visitors_model(client: httpx.AsyncClient) -> None:
    """Embedded mode: the token the partner site keeps is a decision like the cookie, and its opt-out
    counts as none for a visitor under opt-in there too."""
    partner = {"origin": "http://partner.example"}
    r = await client.post("/_consent", json={"action": "opt_out"}, headers={**partner, **CA})
    token = r.json()["token"]
    client.cookies.clear()
    ca = (await client.get("/_consent/state", headers={**partner, **CA, "x-consent-token": token})).json()
    assert ca["decided"] and ca["model"] == "opt-out" and ca["region"] == "US-CA"
    se = (await client.get("/_consent/state", headers={**partner, **SE, "x-consent-token": token})).json()
    assert not se["decided"] and se["model"] == "opt-in" and se["categories"] == ["necessary"]
