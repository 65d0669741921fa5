"""Issue 15: the consent cookie always fits, and a service declared after a decision waits for a new one.

Through HTTP: a page that loads each service's script and sets each service's cookie, behind the
middleware; a "restart" is a new app built from the changed configuration, with the same keys.
"""

from __future__ import annotations

import json
import sqlite3
import textwrap
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from consent_banner import ConsentConfig, ConsentMiddleware
from consent_banner.consent import MAX_COOKIE_BYTES
from consent_banner.errors import ConfigError
from tests.conftest import KEY, MODEL_TOML, ORIGIN

SAME = {"origin": ORIGIN}
FIXTURE = Path(__file__).parent / "fixtures" / "cookie-v1.json"


def base(tmp_path: Path) -> dict[str, Any]:
    return tomllib.loads(textwrap.dedent(MODEL_TOML).format(db=tmp_path / "log.db"))


def service(name: str, category: str = "analytics", switch: bool = True) -> dict[str, Any]:
    return {
        "name": name,
        "category": category,
        "provider": f"{name.title()} Ltd",
        "origins": [f"https://{name}.example.org"],
        "cookies": [{"name": f"_{name}", "lifetime": "30 days"}],
        "switch": switch,
    }


def make(data: dict[str, Any]) -> ConsentMiddleware:
    config = ConsentConfig.from_dict(data, source="test")

    async def page(request: Request) -> HTMLResponse:
        tags = "".join(f'<script src="https://{s.name}.example.org/t.js"></script>' for s in config.services)
        response = HTMLResponse(
            f"<!doctype html><html><head><title>t</title></head><body>{tags}</body></html>"
        )
        for s in config.services:
            for declared in s.cookies:
                response.set_cookie(declared.name.replace("*", "x"), "1")
        return response

    return ConsentMiddleware(Starlette(routes=[Route("/", page)]), config=config, secret_keys=[KEY])


def client(app: ConsentMiddleware, cookie: str | None = None) -> httpx.AsyncClient:
    cookies = {"consent": cookie} if cookie else None
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN, cookies=cookies)


def actions(data: dict[str, Any]) -> list[str]:
    db = sqlite3.connect(data["log"].removeprefix("sqlite:///"))
    try:
        return [row[0] for row in db.execute("SELECT action FROM records ORDER BY seq")]
    finally:
        db.close()


async def decide_switches(c: httpx.AsyncClient, switches: dict[str, bool]) -> str:
    """A custom decision granting both optional categories with these switches; the cookie it sets,
    checked to be no longer than what the server itself accepts."""
    r = await c.post(
        "/_consent",
        json={"action": "custom", "categories": ["analytics", "marketing"], "services": switches},
        headers=SAME,
    )
    assert r.status_code == 200, r.text
    cookie: str = c.cookies["consent"]
    assert len(cookie) <= 2 * MAX_COOKIE_BYTES
    return cookie


async def decided_state(app: ConsentMiddleware, cookie: str) -> dict[str, Any]:
    async with client(app, cookie) as c:
        state: dict[str, Any] = (await c.get("/_consent/state")).json()
    return state


def set_cookie_names(response: httpx.Response) -> set[str]:
    return {h.split("=", 1)[0] for h in response.headers.get_list("set-cookie") if "Max-Age=0" not in h}


# --- the cookie always fits --------------------------------------------------------------------------


async def test_sixty_switchable_services_decide_and_stay_decided(tmp_path) -> None:
    """R17: sixty switchable services, every switch set: the cookie fits what the server accepts, so the
    visitor stays decided (before, the server read its own cookie as undecided: a consent loop)."""
    data = base(tmp_path)
    data["policy_revision"] = "2026-11-01-with-a-revision-name-of-some-length"
    data["services"] = [service(f"vendor-{i:02d}", "analytics" if i % 2 else "marketing") for i in range(60)]
    app = make(data)
    switches = {f"vendor-{i:02d}": i % 3 != 0 for i in range(60)}
    async with client(app) as c:
        await decide_switches(c, switches)
        page = await c.get("/")
        assert 'id="cb-banner"' not in page.text  # decided: no banner, no consent loop
        state = (await c.get("/_consent/state")).json()
        assert state["decided"] and state["services"] == switches
        # what was switched off stays off on the page: its cookie dropped, what was on kept
        kept = set_cookie_names(page)
        assert "_vendor-01" in kept and "_vendor-03" not in kept
    await app.close()
    assert actions(data) == ["custom"]


async def test_a_configuration_whose_cookie_cannot_fit_is_refused_at_start(tmp_path) -> None:
    data = base(tmp_path)
    data["services"] = [service(f"vendor-{i:03d}") for i in range(200)]
    with pytest.raises(ConfigError, match="consent cookie would not fit.*200 services"):
        make(data)
    data = base(tmp_path)
    for i in range(40):
        data["categories"][f"a-long-category-name-number-{i}"] = {"label": f"C{i}"}
    with pytest.raises(ConfigError, match="consent cookie would not fit.*42 optional categories"):
        make(data)


async def test_removing_a_service_keeps_every_other_choice_and_never_asks_again(tmp_path) -> None:
    """R18: removing (or reordering) services never shifts a choice onto another vendor, and never
    asks again."""
    data = base(tmp_path)
    data["services"] = [service("alpha"), service("beta"), service("gamma"), service("delta")]
    app = make(data)
    async with client(app) as c:
        switches = {"alpha": True, "beta": False, "gamma": True, "delta": False}
        r = await c.post(
            "/_consent",
            json={"action": "custom", "categories": ["analytics"], "services": switches},
            headers=SAME,
        )
        cookie = c.cookies["consent"]
    await app.close()
    data["services"] = [service("gamma"), service("beta"), service("delta")]  # alpha gone, order changed
    app = make(data)
    async with client(app, cookie) as c:
        state = (await c.get("/_consent/state")).json()
        assert state["services"] == {"beta": False, "gamma": True, "delta": False}
        page = await c.get("/")
        assert 'id="cb-banner"' not in page.text
        assert set_cookie_names(page) >= {"_gamma"} and not set_cookie_names(page) & {"_beta", "_delta"}
    await app.close()
    assert r.status_code == 200 and actions(data) == ["custom"]


async def test_a_cookie_of_the_previous_release_still_decides(tmp_path) -> None:
    """R17: a cookie issued by the release before issue 15 (no service tags) still decides, with its
    switches, after the upgrade."""
    fixture = json.loads(FIXTURE.read_text())
    data = tomllib.loads(fixture["config_toml"].format(db=tmp_path / "log.db"))
    app = make(data)
    state = await decided_state(app, fixture["cookie"])
    # What the state said then, it says the same now (keys added since, such as region and model, aside).
    assert {k: state[k] for k in fixture["state"]} == fixture["state"]
    async with client(app, fixture["cookie"]) as c:
        page = await c.get("/")
    assert 'id="cb-banner"' not in page.text
    assert "_ads" in set_cookie_names(page) and "_st_ses" not in set_cookie_names(page)
    await app.close()


# --- per-vendor re-consent ----------------------------------------------------------------------------


async def test_a_service_added_after_the_decision_waits_for_a_new_one(tmp_path) -> None:
    """R18: a service declared after the decision is not allowed by it: held back, the banner names it,
    and the next decision allows it and is logged as renew."""
    data = base(tmp_path)
    app = make(data)
    async with client(app) as c:
        await c.post("/_consent", json={"action": "accept_all"}, headers=SAME)
        cookie = c.cookies["consent"]
    await app.close()

    data["services"] = [
        *data["services"],
        service("chatbox", switch=False),
        service("necessary-cdn", "necessary"),
    ]
    app = make(data)  # a restart with one more vendor in a category the visitor granted
    async with client(app, cookie) as c:
        state = (await c.get("/_consent/state")).json()
        assert state["decided"] and state["services"] == {"chatbox": False}
        page = await c.get("/")
        assert "_chatbox" not in set_cookie_names(page) and "_ads" in set_cookie_names(page)
        assert '<script src="https://chatbox.example.org/t.js">' not in page.text  # inert
        assert "https://chatbox.example.org" not in page.headers["content-security-policy"]
        assert 'id="cb-banner"' in page.text and "chatbox (Chatbox Ltd)" in page.text
        assert (
            "these services were added" in page.text
            and "necessary-cdn" not in page.text.split("cb-renew")[1][:300]
        )
        sv = await c.get("/", headers={"accept-language": "sv"})
        assert "Sedan ditt senaste val har dessa tjänster lagts till" in sv.text

        r = await c.post("/_consent", json={"action": "accept_all"}, headers=SAME)
        assert r.status_code == 200 and r.json()["services"] == {}
    async with client(app, r.cookies["consent"]) as c:
        page = await c.get("/")
        assert 'id="cb-banner"' not in page.text and "_chatbox" in set_cookie_names(page)
        assert "https://chatbox.example.org" in page.headers["content-security-policy"]
    await app.close()
    assert actions(data) == ["accept_all", "renew"]


async def test_a_new_service_in_a_refused_category_does_not_ask_again(tmp_path) -> None:
    """R18: a new service in a category the visitor refused changes nothing for them: no banner."""
    data = base(tmp_path)
    app = make(data)
    async with client(app) as c:
        await c.post("/_consent", json={"action": "custom", "categories": ["analytics"]}, headers=SAME)
        cookie = c.cookies["consent"]
    await app.close()
    data["services"] = [*data["services"], service("retarget", "marketing")]
    app = make(data)
    async with client(app, cookie) as c:
        page = await c.get("/")
        assert 'id="cb-banner"' not in page.text and "_retarget" not in set_cookie_names(page)
        assert "_st_ses" in set_cookie_names(page)
    await app.close()
