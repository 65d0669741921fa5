"""The banner's form post (JavaScript off) when the choice is not saved: a page, not JSON (issue 14).

Every failure of the form path answers an HTML page in the visitor's language, with the status kept,
what happened and what to do, and a link back to the page; API clients asking JSON keep the JSON.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from consent_banner import ConsentConfig
from consent_banner.failure import prefers_json
from consent_banner.texts import shipped_texts

from .conftest import ORIGIN, make_app
from .test_banner import El, dom
from .test_routes import SAME, rows

EN, SV = shipped_texts("en"), shipped_texts("sv")
HOSTILE = '"><script>alert(1)</script>'


async def form_token(client: httpx.AsyncClient, path: str = "/") -> str:
    page = await client.get(path)
    return re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


def read_page(response: httpx.Response) -> El:
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "no-store"
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp  # nothing runs, nothing else loads
    soup = dom(response.text)
    assert not soup.all("script") and not [e for e in soup.all() if "style" in e.attrs]
    return soup


def back_link(soup: El) -> tuple[str | None, str]:
    [link] = soup.all("a")
    return link.attrs["href"], link.all_text


def said(soup: El) -> str:
    return " ".join(soup.one("main").all_text.split())


def lang(soup: El) -> str | None:
    return soup.one("html").attrs["lang"]


def title(soup: El) -> str:
    return soup.one("title").all_text


async def test_an_expired_form_token_gets_a_page_in_the_forms_language(client, config) -> None:
    """R13: 403, the session cookie behind the token is gone (the browser restarted, the tab restored)."""
    token = await form_token(client)
    client.cookies.clear()
    form = {"action": "accept_all", "csrf": token, "return_to": "/whoami?x=1", "language": "sv"}
    r = await client.post("/_consent", data=form, headers=SAME)
    assert r.status_code == 403 and "set-cookie" not in r.headers
    soup = read_page(r)
    assert lang(soup) == "sv"
    assert title(soup) == SV["failure_title"]
    assert SV["failure_refused"] in said(soup)
    assert back_link(soup) == ("/whoami?x=1", SV["failure_back"])
    assert rows(config) == []


async def test_a_withdrawal_form_with_a_bad_token_gets_the_page_too(client) -> None:
    await form_token(client)
    r = await client.post(
        "/_consent/withdraw",
        data={"action": "reject_all", "csrf": "forged", "return_to": "/plain"},
        headers={**SAME, "accept-language": "sv-SE,sv;q=0.9"},
    )
    assert r.status_code == 403
    soup = read_page(r)
    assert lang(soup) == "sv" and back_link(soup) == ("/plain", SV["failure_back"])


async def test_a_refused_origin_links_back_to_the_referring_page_of_this_site(client) -> None:
    """403 before the body is read: no return_to to go by; the Referer, when it is this very site."""
    token = await form_token(client)
    form = {"action": "accept_all", "csrf": token, "return_to": "/whoami"}
    foreign = {"origin": "https://evil.example", "accept-language": "en"}
    r = await client.post("/_consent", data=form, headers={**foreign, "referer": ORIGIN + "/plain?a=1"})
    assert r.status_code == 403
    assert back_link(read_page(r)) == ("/plain?a=1", EN["failure_back"])
    for referer in ("https://evil.example/x", "http://[::1/", "http://testserver.evil.example/", ""):
        r = await client.post("/_consent", data=form, headers={**foreign, "referer": referer})
        assert r.status_code == 403 and back_link(read_page(r))[0] == "/"


async def test_a_body_too_large_gets_the_page(client) -> None:
    token = await form_token(client)
    form = {"action": "accept_all", "csrf": token, "language": "en", "return_to": "/" + "a" * 9000}
    r = await client.post("/_consent", data=form, headers=SAME)
    assert r.status_code == 413
    assert EN["failure_too_large"] in said(read_page(r))


async def test_an_invalid_choice_gets_the_page(client) -> None:
    token = await form_token(client)
    for form in (
        {"action": "maybe", "csrf": token, "return_to": "/plain"},
        {"action": "custom", "categories": "nope", "csrf": token, "return_to": "/plain"},
        {"action": "accept_all", "csrf": token, "evil": "1", "return_to": "/plain"},
        {"action": "accept_all", "csrf": token, "language": "xx", "return_to": "/plain"},
    ):
        r = await client.post("/_consent", data=form, headers=SAME)
        assert r.status_code == 400, form
        soup = read_page(r)
        assert EN["failure_invalid"] in said(soup) and back_link(soup)[0] == "/plain"


async def test_hostile_return_to_and_language_are_neither_followed_nor_reflected(client) -> None:
    token = await form_token(client)
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)"):
        r = await client.post(
            "/_consent", data={"action": "nope", "csrf": token, "return_to": target}, headers=SAME
        )
        assert back_link(read_page(r))[0] == "/"
    r = await client.post(
        "/_consent",
        data={"action": "nope", "csrf": token, "return_to": "/" + HOSTILE, "language": HOSTILE},
        headers=SAME,
    )
    soup = read_page(r)
    assert back_link(soup)[0] == "/" + HOSTILE  # a path of this site, escaped in the attribute
    assert "<script>" not in r.text and lang(soup) == "en"


async def test_a_log_that_cannot_write_gets_the_page_with_retry_after(
    tmp_path: Path, toml_path: Path
) -> None:
    """R13: 503, nothing recorded, no cookie; JSON still for the script."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    text = toml_path.read_text().replace(f"sqlite:///{tmp_path / 'log.db'}", f"sqlite:///{blocker}/log.db")
    toml_path.write_text(text)
    app = make_app(ConsentConfig.from_toml(toml_path))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN) as c:
        token = await form_token(c)
        form = {"action": "reject_all", "csrf": token, "return_to": "/plain", "language": "sv"}
        r = await c.post("/_consent", data=form, headers=SAME)
        assert r.status_code == 503 and r.headers["retry-after"] == "5" and "set-cookie" not in r.headers
        soup = read_page(r)
        assert SV["failure_unavailable"] in said(soup) and back_link(soup)[0] == "/plain"
        as_json = await c.post("/_consent", json={"action": "reject_all"}, headers=SAME)
        assert as_json.status_code == 503 and "unavailable" in as_json.json()["error"]
        assert (await c.get("/whoami")).json()["decided"] is False
    await app.close()


@pytest.fixture
async def limited(toml_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    toml_path.write_text('decision_rate_limit = "1/minute"\n' + toml_path.read_text())
    app = make_app(ConsentConfig.from_toml(toml_path))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN) as c:
        yield c
    await app.close()


async def test_too_many_choices_keep_retry_after_on_the_page(limited: httpx.AsyncClient) -> None:
    token = await form_token(limited)
    form = {"action": "reject_all", "csrf": token, "return_to": "/plain"}
    assert (await limited.post("/_consent", data=form, headers=SAME)).status_code == 303
    r = await limited.post("/_consent", data=form, headers=SAME)
    assert r.status_code == 429
    seconds = r.headers["retry-after"]
    soup = read_page(r)
    assert title(soup) == EN["too_many_title"]
    assert EN["too_many_text"].replace("{seconds}", seconds) in said(soup)
    assert back_link(soup) == ("/plain", EN["too_many_back"])


async def test_api_clients_asking_json_keep_the_json_errors(client) -> None:
    token = await form_token(client)
    client.cookies.clear()
    form = {"action": "accept_all", "csrf": token}
    for accept in (
        "application/json",
        "text/html;q=0.5, application/json",
        "application/json, text/html;q=0.9",
    ):
        r = await client.post("/_consent", data=form, headers={**SAME, "accept": accept})
        assert r.status_code == 403 and "token" in r.json()["error"], accept
    r = await client.post("/_consent", json={"action": "maybe"}, headers=SAME)  # the script's JSON body
    assert r.status_code == 400 and "action" in r.json()["error"]
    # other endpoints and methods are not the banner's form: their errors stay JSON
    assert (await client.post("/_consent/state", data=form, headers=SAME)).json()["error"]
    assert (await client.get("/_consent", headers={"accept": "text/html"})).json()["error"]


@pytest.mark.parametrize(
    ("accept", "json"),
    [
        (None, False),
        ("", False),
        ("*/*", False),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", False),
        ("application/json", True),
        ("application/json;q=0.5, text/html;q=0.4", True),
        ("text/html, application/json", False),  # equal: the browser's page
        ("application/json;q=bogus", False),
        ("APPLICATION/JSON", True),
        ("text/html;q=0, application/json;q=0.1", True),
        ("a/b," * 5000 + "application/json", False),  # read within its bound: never past it
    ],
)
def test_prefers_json(accept: str | None, json: bool) -> None:
    assert prefers_json(accept) is json


async def test_under_a_root_path_the_page_links_and_styles_from_there(config) -> None:
    """An app mounted at /shop: the stylesheet and the fallback link back stay under /shop."""
    app = make_app(config)
    transport = httpx.ASGITransport(app=app, root_path="/shop")
    async with httpx.AsyncClient(transport=transport, base_url=ORIGIN) as c:
        token = await form_token(c, "/shop/")
        form = {"action": "nope", "csrf": token, "return_to": "//evil.example/"}
        r = await c.post("/shop/_consent", data=form, headers=SAME)
    await app.close()
    assert r.status_code == 400
    soup = read_page(r)
    assert back_link(soup)[0] == "/shop/"
    [stylesheet] = soup.all("link")
    assert (stylesheet.attrs["href"] or "").startswith("/shop/_consent/consent.css?v=")
