"""Issue 12 item 7, cookie tossing: which consent and form-token cookies count, under which names.

Over https, where the config allows it, the cookies are `__Host-consent` / `__Host-consent_csrf`,
which no sibling subdomain can plant; the previous release's `consent` is still read while no
`__Host-` cookie is present, re-issued under the new name and expired. Where the prefix is
impossible, two consent cookies in one request decide nothing and are expired where reachable.
"""

from __future__ import annotations

import re
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from consent_banner import ConsentConfig
from consent_banner.consent import Consent
from consent_banner.visitor import VISITS_BYTES

from .conftest import MODEL_TOML, make_app

HTTPS = "https://www.example.com"
HTTP = "http://www.example.com"

# Made by the previous release (git 28d2195, cookie name `consent`) for tests/conftest.py's KEY and
# MODEL_TOML, granting analytics, signed at PREVIOUS_SIGNED_AT (2026-12-01T00:00:00Z).
PREVIOUS_RELEASE_COOKIE = (
    "eyJpIjoiQVpyWDNWMkFBQUFQcmV2aW91c1JlbGVhc2UwMDAxIiwiYyI6WyJhbmFseXRpY3MiXSwiciI6IjIwMjYtMTEtMDEiLCJv"
    "IjoiYmFubmVyIn0.aw4OAA.7reI-1Mx6ca3mgnM0P8LujMYUvIrmx_YfYBQFsy9_H8"
)
PREVIOUS_SIGNED_AT = 1796083200
PREVIOUS_ID = "AZrX3V2AAAAPreviousRelease0001"


def make_config(tmp_path: Path, cookie: str = "secure = true") -> ConsentConfig:
    text = textwrap.dedent(MODEL_TOML.format(db=tmp_path / "log.db")).replace("secure = false", cookie)
    path = tmp_path / "consent.toml"
    path.write_text(text)
    return ConsentConfig.from_toml(path)


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The model site, secure cookies, reached over https."""
    app = make_app(make_config(tmp_path))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=HTTPS) as c:
        yield c
    await app.close()


async def signed(client: httpx.AsyncClient, action: str) -> str:
    """A genuine cookie value for `action`, as a sibling subdomain could get one for itself."""
    r = await client.post("/_consent", json={"action": action}, headers={"origin": str(client.base_url)})
    assert r.status_code == 200, r.text
    [value] = [v for v in r.headers.get_list("set-cookie") if "consent=" in v.split(";")[0]]
    return value.split(";")[0].split("=", 1)[1]


def set_cookies(r: httpx.Response) -> list[str]:
    return r.headers.get_list("set-cookie")


async def whoami(client: httpx.AsyncClient, cookie: str) -> tuple[dict, httpx.Response]:
    client.cookies.clear()
    r = await client.get("/whoami", headers={"cookie": cookie})
    return r.json(), r


async def test_https_cookies_carry_the_host_prefix(site: httpx.AsyncClient) -> None:
    page = await site.get("/")
    [csrf] = set_cookies(page)
    assert csrf.startswith("__Host-consent_csrf=") and "; Path=/;" in csrf and "Secure" in csrf
    assert "Domain" not in csrf
    r = await site.post("/_consent", json={"action": "reject_all"}, headers={"origin": HTTPS})
    [cookie] = set_cookies(r)
    assert cookie.startswith("__Host-consent=") and "; Path=/;" in cookie and "Secure" in cookie
    assert "Domain" not in cookie
    assert (await site.get("/whoami")).json()["decided"] is True  # the client sends it back


async def test_a_tossed_plain_cookie_cannot_override_the_host_cookie(site: httpx.AsyncClient) -> None:
    """The attack: the visitor rejected; a sibling plants `consent=<its own accept_all>; Domain=parent`."""
    rejected, accepted = await signed(site, "reject_all"), await signed(site, "accept_all")
    for cookie in (
        f"__Host-consent={rejected}; consent={accepted}",
        f"consent={accepted}; __Host-consent={rejected}",
    ):
        state, r = await whoami(site, cookie)
        assert state["decided"] and not state["analytics"] and not state["marketing"]
        # the planted one is expired (host-only: this host cannot name the sibling's parent domain)
        assert [v.split(";")[0] for v in set_cookies(r)] == ["consent="]


async def test_previous_release_cookie_still_decides_and_moves_to_the_new_name(
    site: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = PREVIOUS_SIGNED_AT + 86400
    monkeypatch.setattr(time, "time", lambda: now)
    state, r = await whoami(site, f"consent={PREVIOUS_RELEASE_COOKIE}; sessionid=1")
    assert state["decided"] and state["id"] == PREVIOUS_ID and state["analytics"] and not state["marketing"]
    expired, reissued = set_cookies(r)
    assert expired.startswith("consent=; Max-Age=0;") and "Domain" not in expired
    left = 182 * 86400 - 86400
    assert reissued.startswith(f"__Host-consent={PREVIOUS_RELEASE_COOKIE}; Path=/; Max-Age={left}; Secure")
    assert "cookie" in r.headers["vary"].lower()
    # Once moved, the new name decides and nothing more is sent.
    state, r = await whoami(site, f"__Host-consent={PREVIOUS_RELEASE_COOKIE}; sessionid=1")
    assert state["decided"] and state["id"] == PREVIOUS_ID and set_cookies(r) == []
    # A leftover old cookie beside the new one no longer counts and is expired again.
    state, r = await whoami(site, f"__Host-consent={PREVIOUS_RELEASE_COOKIE}; consent=junk")
    assert state["analytics"] and [v.split(";")[0] for v in set_cookies(r)] == ["consent="]


async def test_previous_release_cookie_still_decides_over_http(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(time, "time", lambda: PREVIOUS_SIGNED_AT + 60)
    app = make_app(make_config(tmp_path))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=HTTP) as c:
        state, r = await whoami(c, f"consent={PREVIOUS_RELEASE_COOKIE}")
    await app.close()
    assert state["decided"] and state["id"] == PREVIOUS_ID and set_cookies(r) == []


async def test_a_decision_after_the_upgrade_replaces_the_old_cookie(
    site: httpx.AsyncClient, monkeypatch
) -> None:
    """The decision's own cookie comes after the upkeep, so the browser keeps the new decision."""
    monkeypatch.setattr(time, "time", lambda: PREVIOUS_SIGNED_AT + 60)
    site.cookies.clear()
    r = await site.post(
        "/_consent",
        json={"action": "reject_all"},
        headers={"origin": HTTPS, "cookie": f"consent={PREVIOUS_RELEASE_COOKIE}"},
    )
    assert r.status_code == 200 and r.json()["consent_id"] == PREVIOUS_ID
    names = [v.split("=", 1)[0] for v in set_cookies(r)]
    assert names == ["consent", "__Host-consent", "__Host-consent"]  # expiry, upkeep, the decision: last wins
    assert PREVIOUS_RELEASE_COOKIE not in set_cookies(r)[-1]


async def test_old_form_token_cookie_is_replaced_and_the_form_still_works(
    site: httpx.AsyncClient,
) -> None:
    """The old name's form token is expired, never adopted (a sibling could plant it: see
    tests/reliability/test_redteam.py); the page brings a new one and its form works."""
    page = await site.get("/", headers={"cookie": "consent_csrf=old-token-value"})
    token = re.search(r'name="csrf" value="([^"]*)"', page.text).group(1)
    names = [v.split(";")[0] for v in set_cookies(page)]
    assert names[0] == "consent_csrf=" and names[1].startswith("__Host-consent_csrf=")
    new = names[1].split("=", 1)[1]
    assert new and new != "old-token-value"
    r = await site.post(
        "/_consent",
        data={"action": "reject_all", "csrf": token},
        headers={"origin": HTTPS, "cookie": "__Host-consent_csrf=" + new},
    )
    assert r.status_code == 303


async def test_twin_consent_cookies_decide_nothing_where_the_prefix_is_impossible(tmp_path: Path) -> None:
    """A configured domain (or plain http): the names stay plain, and two consent cookies in one request
    are undecided; the response expires both variants this host can reach."""
    app = make_app(make_config(tmp_path, 'secure = true\ndomain = ".example.com"'))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=HTTPS) as c:
        rejected, accepted = await signed(c, "reject_all"), await signed(c, "accept_all")
        state, r = await whoami(c, f"consent={rejected}; consent={accepted}")
        assert not state["decided"] and not state["analytics"]
        assert sorted(v.split("; Expires")[0] + (" D" if "Domain" in v else "") for v in set_cookies(r)) == [
            "consent=; Max-Age=0",
            "consent=; Max-Age=0 D",
        ]
        single, r = await whoami(c, f"consent={rejected}")
        assert single["decided"] and set_cookies(r) == []
    await app.close()


async def test_twin_consent_cookies_decide_nothing_on_plain_http(tmp_path: Path) -> None:
    app = make_app(make_config(tmp_path))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=HTTP) as c:
        rejected, accepted = await signed(c, "reject_all"), await signed(c, "accept_all")
        assert rejected and accepted
        state, r = await whoami(c, f"consent={rejected}; consent={accepted}")
    await app.close()
    assert not state["decided"] and not state["analytics"]
    assert [v.split(";")[0] for v in set_cookies(r)] == ["consent="]


@pytest.mark.parametrize("name", ["__Host-consent", "__secure-x"])
def test_a_configured_name_cannot_carry_a_prefix(tmp_path: Path, name: str) -> None:
    from consent_banner.errors import ConfigError

    with pytest.raises(ConfigError, match="cookie.name"):
        make_config(tmp_path, f'secure = true\nname = "{name}"')


def test_the_scanner_counts_the_host_prefixed_cookies_as_the_managers_own(tmp_path: Path) -> None:
    from consent_banner.scan.classify import Classifier

    classifier = Classifier(make_config(tmp_path), HTTPS)
    for name in ("__Host-consent", "__Host-consent_csrf", "consent", "consent_csrf"):
        assert classifier.cookie(name).category == "necessary", name


async def test_every_cookie_field_counts_for_the_page_and_the_form(tmp_path: Path) -> None:
    """One rule for a Cookie header sent in several fields (HTTP/2 crumbs passed on unjoined): all of
    them count, joined, for the page and the decision endpoints as for the middleware. A form token in
    the second field is the visitor's; a twin planted in another field makes the form's token count
    for nothing."""
    app = make_app(make_config(tmp_path, "secure = false"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=HTTP) as c:
        first = await c.get("/")
        value = c.cookies["consent_csrf"]
        token = re.search(r'name="csrf" value="([^"]*)"', first.text).group(1)
        c.cookies.clear()
        split = [("cookie", "sessionid=1"), ("cookie", f"consent_csrf={value}")]
        page = await c.get("/", headers=split)
        assert set_cookies(page) == [] and f'value="{token}"' in page.text  # the page read the second field
        form = {"action": "reject_all", "csrf": token}
        posted = await c.post("/_consent", data=form, headers=[*split, ("origin", HTTP)])
        assert posted.status_code == 303
        planted = [("cookie", f"consent_csrf={value}"), ("cookie", "consent_csrf=planted")]
        refused = await c.post("/_consent", data=form, headers=[*planted, ("origin", HTTP)])
        assert refused.status_code == 403
    await app.close()


def test_a_verified_cookie_is_remembered_with_its_header(tmp_path: Path, monkeypatch) -> None:
    """The one cache: a header whose consent verified is read and verified once; one that did not
    verify is verified again on every request (never remembered as verified)."""
    app = make_app(make_config(tmp_path, "secure = false"))
    good = app.codec.encode(Consent(id="c" * 22, granted=frozenset({"analytics"}), revision="2026-11-01"))
    calls: list[str] = []
    verify = app.codec._verify
    monkeypatch.setattr(app.codec, "_verify", lambda v: calls.append(v) or verify(v))
    header = f"sessionid=1; consent={good}".encode()
    first = app.visitors.visit(header, secure=False)
    assert first.consent.allows("analytics") and app.visitors.visit(header, secure=False) is first
    assert calls == [good]
    bad = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    for _ in range(2):
        assert not app.visitors.visit(f"consent={bad}".encode(), secure=False).consent.decided
    assert calls == [good, bad, bad]


def test_the_cache_of_cookie_headers_is_bounded_by_bytes(tmp_path: Path) -> None:
    """Distinct headers, each with a verified consent: the cache empties itself at its budget and
    every header still decides."""
    app = make_app(make_config(tmp_path, "secure = false"))
    value = app.codec.encode(Consent(id="c" * 22, granted=frozenset({"analytics"}), revision="2026-11-01"))
    memo = app.visitors._memo_http
    peak = 0
    for n in range(3000):
        header = f"pad={'x' * 600}{n}; consent={value}".encode()
        assert app.visitors.visit(header, secure=False).consent.decided
        peak = max(peak, memo.weight)
    assert 0 < peak <= VISITS_BYTES and len(memo) < 3000
