"""The consent cookie's 18-bit service tags: a service added after a decision never passes for one
removed since, whose tag it shares (issue 15, threat model "tag collisions with removed services").

Through HTTP, with the renewal tests' pages: a "restart" is a new app from the changed configuration,
same keys. `vendor-244` and `vendor-527` share a tag (asserted below). cookie-v2.json was made by
tests/fixtures/make_cookie_v1.py run at commit 934ae4e: the compact cookie (tags, bitmaps) before it
carried the digest of the names, which must keep deciding.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

from consent_banner import ConsentConfig
from consent_banner.consent import service_tag
from consent_banner.errors import ConfigError
from tests.test_consent_renew import (
    base,
    client,
    decide_switches,
    decided_state,
    make,
    service,
    set_cookie_names,
)

REMOVED, ADDED = "vendor-244", "vendor-527"  # one tag, two vendors
FIXTURES = Path(__file__).parent / "fixtures"


def test_the_two_vendors_share_a_tag() -> None:
    assert service_tag(REMOVED) == service_tag(ADDED)


async def _decide(data: dict[str, Any], switches: dict[str, bool]) -> str:
    app = make(data)
    async with client(app) as c:
        cookie = await decide_switches(c, switches)
    await app.close()
    return cookie


async def test_a_new_service_with_a_removed_ones_tag_does_not_inherit_its_switch(tmp_path: Path) -> None:
    """R18: a vendor switched on, then replaced by another whose tag is the same: the newcomer is held
    back (its cookie dropped), the banner names it, instead of running on the old vendor's switch
    (before: the old cookie's tag passed the switch on)."""
    data = base(tmp_path)
    data["services"] = [service(REMOVED), service("beta")]
    cookie = await _decide(data, {REMOVED: True, "beta": True})

    data["services"] = [service(ADDED), service("beta")]
    app = make(data)
    state = await decided_state(app, cookie)
    assert state["decided"] and state["services"][ADDED] is False
    async with client(app, cookie) as c:
        page = await c.get("/")
    assert f"_{ADDED}" not in set_cookie_names(page)
    assert 'id="cb-banner"' in page.text and "Vendor-527 Ltd" in page.text  # asked, naming it
    await app.close()


async def test_an_unchanged_service_set_keeps_its_switches(tmp_path: Path) -> None:
    """R18: the digest changes nothing while the services are the ones decided on (reordered)."""
    data = base(tmp_path)
    data["services"] = [service(REMOVED), service("beta", "marketing")]
    cookie = await _decide(data, {REMOVED: True, "beta": False})
    data["services"] = list(reversed(data["services"]))
    app = make(data)
    state = await decided_state(app, cookie)
    assert state["services"] == {REMOVED: True, "beta": False}
    await app.close()


async def test_retired_services_refuse_a_newcomer_sharing_a_removed_ones_tag(tmp_path: Path) -> None:
    """R18: where more services were removed than came (a tag of the old cookie no one claims), the
    names cannot be checked from the cookie: `retired_services` makes the start refuse the newcomer,
    naming both."""
    data = base(tmp_path)
    data["services"] = [service("beta")]
    data["retired_services"] = [REMOVED, "gamma"]
    app = make(data)  # retired names that collide with nothing current are fine
    await app.close()
    data["services"] = [service(ADDED), service("beta")]
    with pytest.raises(ConfigError) as e:
        make(data)
    assert f"{ADDED!r} shares its tag" in str(e.value) and f"retired service {REMOVED!r}" in str(e.value)


def test_retired_services_are_names_no_longer_declared(tmp_path: Path) -> None:
    data = base(tmp_path)
    data["retired_services"] = ["stats", "Not A Name"]
    with pytest.raises(ConfigError) as e:
        ConsentConfig.from_dict(data)
    assert "retired_services: 'stats' is still a service: retire it once removed" in str(e.value)
    assert "retired_services: 'Not A Name' is not a service name" in str(e.value)
    del data["retired_services"]
    plain = ConsentConfig.from_dict(data).config_hash
    assert ConsentConfig.from_dict({**data, "retired_services": []}).config_hash == plain  # hash kept
    assert ConsentConfig.from_dict({**data, "retired_services": ["gone"]}).config_hash != plain


async def test_a_compact_cookie_without_the_digest_still_decides(tmp_path: Path) -> None:
    """R17: the compact cookie issued before the digest (cookie-v2.json) keeps its switches."""
    fixture = json.loads((FIXTURES / "cookie-v2.json").read_text())
    data = tomllib.loads(fixture["config_toml"].format(db=tmp_path / "log.db"))
    app = make(data)
    state = await decided_state(app, fixture["cookie"])
    # What the state said then, it says the same now (keys added since, such as region and model, aside).
    assert {k: state[k] for k in fixture["state"]} == fixture["state"]
    await app.close()
