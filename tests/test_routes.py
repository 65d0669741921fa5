"""The decision endpoints through HTTP: decide, state, withdraw, and every refusal (R19, R33, R34)."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import httpx
import pytest

from consent_banner import ConsentConfig
from consent_banner.consent import ConsentCodec

from .conftest import KEY, ORIGIN, make_app, rows

SAME = {"origin": ORIGIN}


async def decide(client: httpx.AsyncClient, body: dict, headers: dict | None = None) -> httpx.Response:
    return await client.post("/_consent", json=body, headers=headers if headers is not None else SAME)


def cookie_value(response: httpx.Response, name: str = "consent") -> str | None:
    for header in response.headers.get_list("set-cookie"):
        if header.startswith(f"{name}="):
            return header.split(";")[0].split("=", 1)[1]
    return None


# --- decisions ---------------------------------------------------------------------------------------


async def test_accept_all_records_once_and_sets_signed_cookie(client, config) -> None:
    """R19: one decision, one record; the answer comes with the signed cookie."""
    r = await decide(client, {"action": "accept_all", "language": "sv"})
    assert r.status_code == 200, r.text
    state = r.json()
    assert state == {
        "decided": True,
        "consent_id": state["consent_id"],
        "categories": ["necessary", "analytics", "marketing"],
        "services": {},
        "revision": "2026-11-01",
        "gpc": False,
        "region": None,
        "model": "opt-in",
        "gpp": None,  # window.__gpp's answer: opt-out visitors only (gpp.py)
    }
    header = next(h for h in r.headers.get_list("set-cookie") if h.startswith("consent="))
    assert "Max-Age=15724800" in header and "SameSite=Lax" in header and "Path=/" in header
    [row] = rows(config)
    assert row["consent_id"] == state["consent_id"] and row["action"] == "accept_all"
    assert row["language"] == "sv"
    who = (await client.get("/whoami")).json()
    assert who["decided"] and who["analytics"] and who["marketing"] and who["id"] == state["consent_id"]


async def test_reject_all_grants_only_necessary(client, config) -> None:
    r = await decide(client, {"action": "reject_all"})
    assert r.json()["categories"] == ["necessary"] and r.json()["decided"]
    assert rows(config)[0]["action"] == "reject_all"
    assert (await client.get("/whoami")).json()["analytics"] is False


async def test_custom_with_services(client, config) -> None:
    r = await decide(client, {"action": "custom", "categories": ["analytics"], "services": {"stats": True}})
    assert r.status_code == 200, r.text
    assert r.json()["categories"] == ["necessary", "analytics"] and r.json()["services"] == {"stats": True}


@pytest.mark.parametrize("switch", [True, False])
async def test_a_necessary_service_is_recorded_on_whatever_its_switch_says(client, config, switch) -> None:
    """A necessary service cannot be refused: the answer and the log record it as on (it was
    recorded off, as if its category had been refused, because necessary is never in the body)."""
    body = {"action": "custom", "categories": ["analytics"], "services": {"booking": switch, "stats": True}}
    r = await decide(client, body)
    assert r.status_code == 200, r.text
    assert r.json()["services"] == {"booking": True, "stats": True}
    [record] = rows(config)
    assert json.loads(record["services"]) == {"booking": True, "stats": True}


async def test_consent_id_is_kept_across_decisions(client, config) -> None:
    first = (await decide(client, {"action": "accept_all"})).json()["consent_id"]
    second = (await decide(client, {"action": "reject_all"})).json()["consent_id"]
    assert first == second
    assert [r["action"] for r in rows(config)] == ["accept_all", "reject_all"]


async def test_new_visitor_gets_new_id(config) -> None:
    app = make_app(config)
    ids = set()
    for _ in range(3):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN) as c:
            ids.add((await decide(c, {"action": "accept_all"})).json()["consent_id"])
    await app.close()
    assert len(ids) == 3


async def test_state_shape(client) -> None:
    r = await client.get("/_consent/state")
    assert r.json() == {
        "decided": False,
        "consent_id": None,
        "categories": ["necessary"],
        "services": {},
        "revision": "2026-11-01",
        "gpc": False,
        "region": None,
        "model": "opt-in",
        "gpp": None,  # window.__gpp's answer: opt-out visitors only (gpp.py)
    }
    assert "no-store" in r.headers["cache-control"]


async def test_withdraw_grants_only_necessary_and_is_recorded(client, config) -> None:
    """R16/R19: a withdrawal grants only necessary from then on, and is a record of its own."""
    cid = (await decide(client, {"action": "accept_all"})).json()["consent_id"]
    r = await client.post("/_consent/withdraw", json={}, headers=SAME)
    assert r.status_code == 200
    assert r.json()["decided"] and r.json()["categories"] == ["necessary"] and r.json()["consent_id"] == cid
    assert [r["action"] for r in rows(config)] == ["accept_all", "withdraw"]
    r = await client.post("/_consent/withdraw", headers={**SAME, "content-type": "application/json"})
    assert r.status_code == 200  # an empty body is fine too


async def test_ip_is_truncated(config) -> None:
    """R21: never the full address."""
    app = make_app(config)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.77", 5000))
    async with httpx.AsyncClient(transport=transport, base_url=ORIGIN) as c:
        await decide(c, {"action": "accept_all"})
    await app.close()
    [row] = rows(config)
    assert row["ip"] == "203.0.113.0"
    assert "203.0.113.77" not in Path(config.log.removeprefix("sqlite:///")).read_bytes().decode("latin-1")


async def test_concurrent_decisions_are_all_logged(config) -> None:
    """Group commit: every acknowledged decision is in the log (200 from one address: no rate limit)."""
    config = ConsentConfig.from_dict({**config.model_dump(), "decision_rate_limit": "off"})
    app = make_app(config)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN) as c:
        results = await asyncio.gather(
            *(c.post("/_consent", json={"action": "reject_all"}, headers=SAME) for _ in range(200))
        )
    await app.close()
    assert {r.status_code for r in results} == {200}
    assert len(rows(config)) == 200


# --- GPC -----------------------------------------------------------------------------------------------


async def test_gpc_state_without_decision(client) -> None:
    """R26: marketing denied from the very first response."""
    r = await client.get("/_consent/state", headers={"sec-gpc": "1"})
    assert r.json()["gpc"] is True and r.json()["categories"] == ["necessary"]


async def test_gpc_overrides_an_opt_in_and_is_logged_once(client, config) -> None:
    """R26/R27: an earlier marketing opt-in is overridden; a gpc record is written the first time;
    a later visit without the signal is not an opt-in."""
    await decide(client, {"action": "accept_all"})
    who = (await client.get("/whoami", headers={"sec-gpc": "1"})).json()
    assert who["analytics"] and not who["marketing"]
    await client.get("/whoami", headers={"sec-gpc": "1"})
    assert [r["action"] for r in rows(config)] == ["accept_all", "gpc"]
    later = (await client.get("/whoami")).json()
    assert later["analytics"] and not later["marketing"]


async def test_decision_under_gpc_never_grants_marketing(client, config) -> None:
    """R26"""
    r = await decide(client, {"action": "accept_all"}, {**SAME, "sec-gpc": "1"})
    assert r.json()["categories"] == ["necessary", "analytics"] and r.json()["gpc"]
    assert [r["action"] for r in rows(config)] == ["accept_all", "gpc"]
    assert not (await client.get("/whoami")).json()["marketing"]


# --- the bad cookie (R33) --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind", ["forged", "tampered", "truncated", "padded", "expired", "old-key", "old-revision"]
)
async def test_bad_cookie_is_undecided(config, kind, monkeypatch) -> None:
    """R33: each kind of bad cookie counts as undecided, never as granted."""
    good = ConsentCodec([KEY], revision=config.policy_revision, lifetime=3600, categories=config.categories)
    from consent_banner.consent import Consent

    consent = Consent(
        id="a" * 22, granted=frozenset({"analytics", "marketing"}), revision=config.policy_revision
    )
    value = good.encode(consent)
    if kind == "forged":
        value = ConsentCodec(
            ["f" * 40], revision=config.policy_revision, lifetime=3600, categories=config.categories
        ).encode(consent)
    elif kind == "tampered":
        value = value[:5] + ("A" if value[5] != "A" else "B") + value[6:]
    elif kind == "truncated":
        value = value[:-3]
    elif kind == "padded":
        value = value + "=="
    elif kind == "expired":
        value = ConsentCodec(
            [KEY], revision=config.policy_revision, lifetime=3600, categories=config.categories
        )._serializer.dumps({"i": "a" * 22, "c": ["analytics"], "r": config.policy_revision, "o": "banner"})
        import time as _t

        real = _t.time
        monkeypatch.setattr(_t, "time", lambda: real() + 183 * 86400)
    elif kind == "old-key":
        monkeypatch.setenv("CONSENT_SECRET_KEYS", "n" * 40)
    elif kind == "old-revision":
        value = ConsentCodec(
            [KEY], revision="2020-01-01", lifetime=3600, categories=config.categories
        ).encode(Consent(id="a" * 22, granted=frozenset({"analytics"}), revision="2020-01-01"))
    app = make_app(config)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=ORIGIN, cookies={"consent": value}
    ) as c:
        who = (await c.get("/whoami")).json()
        state = (await c.get("/_consent/state")).json()
        gated = await c.post("/collect")
    assert who == {
        "decided": False,
        "id": None,
        "analytics": False,
        "marketing": False,
        "categories": ["necessary"],
    }
    assert state["decided"] is False and state["categories"] == ["necessary"]
    assert gated.status_code == 204


async def test_requires_consent_gates_server_side_tracking(client) -> None:
    assert (await client.post("/collect")).status_code == 204
    await decide(client, {"action": "custom", "categories": ["analytics"]})
    r = await client.post("/collect")
    assert r.status_code == 200 and r.text == "counted"


# --- refused requests (R34 and bad input) --------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status", "reason"),
    [
        ({"origin": "http://evil.example"}, 403, "origin 'http://evil.example' is not allowed"),
        ({"origin": "null"}, 403, "origin 'null'"),
        ({}, 403, "neither Origin nor Sec-Fetch-Site"),
        ({"sec-fetch-site": "cross-site"}, 403, "Sec-Fetch-Site is 'cross-site'"),
        ({"sec-fetch-site": "same-site"}, 403, "Sec-Fetch-Site is 'same-site'"),
        ({"origin": "https://testserver"}, 403, "not allowed"),  # other scheme
    ],
)
async def test_cross_site_decisions_are_refused(client, config, headers, status, reason) -> None:
    """R34"""
    r = await decide(client, {"action": "accept_all"}, headers)
    assert r.status_code == status and reason in r.json()["error"]
    assert "set-cookie" not in r.headers and rows(config) == []


async def test_sec_fetch_site_same_origin_without_origin_is_accepted(client) -> None:
    r = await decide(client, {"action": "reject_all"}, {"sec-fetch-site": "same-origin"})
    assert r.status_code == 200


@pytest.mark.parametrize(
    ("content", "ctype", "status", "reason"),
    [
        (b'{"action": "accept_all"', "application/json", 400, "not valid JSON"),
        (b'["accept_all"]', "application/json", 400, "JSON object"),
        (b'{"action": "sell_all"}', "application/json", 400, "action"),
        (b'{"action": "custom", "categories": ["ads"]}', "application/json", 400, "unknown category 'ads'"),
        (b'{"action": "custom", "categories": "analytics"}', "application/json", 400, "categories"),
        (
            b'{"action": "custom", "services": {"nope": true}}',
            "application/json",
            400,
            "unknown service 'nope'",
        ),
        (b'{"action": "custom", "services": {"stats": "yes"}}', "application/json", 400, "services.stats"),
        (b'{"action": "accept_all", "extra": 1}', "application/json", 400, "extra: unknown field"),
        (b'{"action": "accept_all", "language": "de"}', "application/json", 400, "'de' is not configured"),
        (
            b'{"action": "accept_all", "categories": ["analytics"]}',
            "application/json",
            400,
            "takes no categories",
        ),
        (b'{"action": 1}', "application/json", 400, "action"),
        (b'{"action": "accept_all"}', "text/plain", 415, "application/json"),
        (b'{"action": "accept_all"}', "", 415, "application/json"),
        (b"action=accept_all", "application/x-www-form-urlencoded", 403, "token"),
        (b'{"action": "accept_all", "x": "' + b"a" * 9000 + b'"}', "application/json", 413, "8192 bytes"),
        (b"\xff\xfe\x00", "application/json", 400, "not valid JSON"),
    ],
)
async def test_bad_bodies_get_a_4xx_with_a_reason_and_record_nothing(
    client, config, content, ctype, status, reason
) -> None:
    headers = {**SAME, "content-type": ctype, "accept": "application/json"}  # a form's browser: failure.py
    r = await client.post("/_consent", content=content, headers=headers)
    assert r.status_code == status, r.text
    assert reason in r.json()["error"], r.json()
    assert "set-cookie" not in r.headers and rows(config) == []


async def test_unknown_endpoint_and_wrong_method(client) -> None:
    r = await client.get("/_consent/nope")
    assert r.status_code == 404 and "error" in r.json()
    r = await client.get("/_consent")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    r = await client.delete("/_consent/state")
    assert r.status_code == 405


# --- the form path (JavaScript off, R13) -----------------------------------------------------------


async def form_token(client: httpx.AsyncClient) -> str:
    page = await client.get("/")
    m = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert m, "the page carries the banner form with its token"
    return m.group(1)


async def test_form_post_records_and_redirects_back(client, config) -> None:
    """R13/R34: the form carries a token bound to the visitor."""
    token = await form_token(client)
    r = await client.post(
        "/_consent",
        data={
            "action": "custom",
            "categories": ["analytics"],
            "csrf": token,
            "return_to": "/whoami",
            "language": "en",
        },
        headers=SAME,
    )
    assert r.status_code == 303 and r.headers["location"] == "/whoami"
    assert cookie_value(r)
    assert rows(config)[0]["source"] == "form"
    assert (await client.get("/whoami")).json()["analytics"]


async def test_form_redirect_stays_on_this_site(client) -> None:
    token = await form_token(client)
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil.example"):
        r = await client.post(
            "/_consent", data={"action": "reject_all", "csrf": token, "return_to": target}, headers=SAME
        )
        assert r.status_code == 303 and r.headers["location"] == "/"


async def test_form_token_of_another_visitor_is_refused(client, config) -> None:
    """R34"""
    token = await form_token(client)
    app = make_app(config)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN) as other:
        await other.get("/")  # has a csrf cookie of its own
        r = await other.post("/_consent", data={"action": "accept_all", "csrf": token}, headers=SAME)
    await app.close()
    assert r.status_code == 403 and rows(config) == []


async def test_form_unknown_field_is_named(client, config) -> None:
    token = await form_token(client)
    r = await client.post(
        "/_consent",
        data={"action": "accept_all", "csrf": token, "evil": "1"},
        headers={**SAME, "accept": "application/json"},
    )
    assert r.status_code == 400 and "evil" in r.json()["error"]


# --- embedded sites (allowed origins) --------------------------------------------------------------


async def test_allowed_origin_gets_token_and_cors_not_cookie(client, config) -> None:
    partner = {"origin": "http://partner.example"}
    pre = await client.options("/_consent", headers={**partner, "access-control-request-method": "POST"})
    assert pre.status_code == 204 and pre.headers["access-control-allow-origin"] == "http://partner.example"
    r = await decide(client, {"action": "accept_all"}, partner)
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "http://partner.example"
    body = r.json()
    assert body["token"] and body["max_age"] == 182 * 86400 and "set-cookie" not in r.headers
    state = await client.get("/_consent/state", headers={**partner, "x-consent-token": body["token"]})
    assert state.json()["decided"] and state.json()["consent_id"] == body["consent_id"]


# --- fail closed ---------------------------------------------------------------------------------------


async def test_unwritable_log_answers_503_and_grants_nothing(tmp_path, toml_path) -> None:
    """The log cannot be written: no cookie, the visitor stays undecided."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    text = toml_path.read_text().replace(f"sqlite:///{tmp_path / 'log.db'}", f"sqlite:///{blocker}/log.db")
    toml_path.write_text(text)
    app = make_app(ConsentConfig.from_toml(toml_path))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN) as c:
        r = await decide(c, {"action": "accept_all"})
        assert r.status_code == 503 and "unavailable" in r.json()["error"]
        assert "set-cookie" not in r.headers
        assert (await c.get("/whoami")).json()["decided"] is False
    await app.close()


async def test_decision_after_revision_change_is_a_renewal_under_the_same_id(config, toml_path) -> None:
    """R18/R19: the banner returns for a new revision; the new decision renews the same consent id."""
    app = make_app(config)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN) as c:
        cid = (await decide(c, {"action": "accept_all"})).json()["consent_id"]
        await app.close()
        newer = ConsentConfig.from_toml(toml_path).model_copy(update={"policy_revision": "2027-01-01"})
        c._transport = httpx.ASGITransport(app=(app2 := make_app(newer)))
        assert (await c.get("/_consent/state")).json()["decided"] is False
        r = await decide(c, {"action": "reject_all"})
        assert r.json()["consent_id"] == cid and r.json()["revision"] == "2027-01-01"
    await app2.close()
    assert [(r["action"], r["revision"]) for r in rows(config)] == [
        ("accept_all", "2026-11-01"),
        ("renew", "2027-01-01"),
    ]


async def test_first_page_form_works_for_a_brand_new_visitor(client, config) -> None:
    """R13/R34: the very first page already carries a token matching the cookie it sets."""
    page = await client.get("/")
    token = re.search(r'name="csrf" value="([^"]*)"', page.text).group(1)
    assert token and client.cookies.get("consent_csrf")
    r = await client.post("/_consent", data={"action": "reject_all", "csrf": token}, headers=SAME)
    assert r.status_code == 303


async def test_banner_and_declaration_fragments_follow_the_language(client) -> None:
    """R5/R14: the fragment and the declaration table for pages that place them."""
    sv = await client.get("/_consent/banner?lang=sv")
    assert sv.status_code == 200 and "Nödvändiga" in sv.text and 'value="accept_all"' in sv.text
    other = await client.get("/_consent/banner?lang=de", headers={"accept-language": "sv"})
    assert other.status_code == 200 and "Nödvändiga" in other.text  # nearest language we have
    table = await client.get("/_consent/declaration?lang=en")
    assert "_st_id.*" in table.text and "13 months" in table.text and "Example Stats Ltd" in table.text
    assert "Counts visits" in table.text
    # Purposes configured per language, and lifetimes, in the visitor's language.
    sv_table = await client.get("/_consent/declaration?lang=sv")
    assert "Räknar besök" in sv_table.text and "13 månader" in sv_table.text and "30 minuter" in sv_table.text
    assert "Counts visits" not in sv_table.text and "13 months" not in sv_table.text


async def test_fragments_chosen_by_accept_language_vary_on_it(client) -> None:
    """R14: the declaration is publicly cacheable and both fragments follow Accept-Language when ?lang=
    names no language we have: without `Vary: Accept-Language` a shared cache hands one visitor's
    language to the next."""
    for path in ("/_consent/banner", "/_consent/declaration"):
        en = await client.get(path, headers={"accept-language": "en"})
        sv = await client.get(path, headers={"accept-language": "sv"})
        assert en.text != sv.text
        for r in (en, sv):
            vary = {v.strip().lower() for v in r.headers.get("vary", "").split(",")}
            assert "accept-language" in vary, (path, r.headers.get("vary"))


async def test_script_is_served_with_its_content_hash_for_caching(client) -> None:
    page = (await client.get("/")).text
    src = re.search(r'src="(/_consent/consent\.js\?v=[0-9a-f]+)"', page).group(1)
    r = await client.get(src)
    assert r.status_code == 200 and "immutable" in r.headers["cache-control"]
    assert "immutable" not in (await client.get("/_consent/consent.js")).headers["cache-control"]
