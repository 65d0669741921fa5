"""The banner comes back when the policy revision changes or the choice expires (R17, R18, R33)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING
from unittest import mock

from itsdangerous.timed import TimestampSigner
from playwright.sync_api import expect

from consent_banner import Consent

if TYPE_CHECKING:
    from demo_support import RunningDemo, Visitor

pytest_plugins = ("demo_support",)

NEW_REVISION = "2026-12-15"


def test_a_new_policy_revision_brings_the_banner_back(
    visitor: Callable[..., Visitor], demo: RunningDemo
) -> None:
    """R18, R33: a visitor who accepted everything meets the same site restarted with a new policy
    revision (a second demo on the same host, so the browser sends the same cookie): the banner is
    back, nothing optional loads, and the old choice counts as no choice until they decide again."""
    from demo_support import running_demo

    v = visitor()
    v.goto("/")
    v.click("Accept all")
    expect(v.page.locator("#cb-banner")).to_have_count(0)
    v.goto("/offices/malmo")
    expect(v.page.locator("#cb-banner")).to_have_count(0)

    with running_demo(overrides={"policy_revision": NEW_REVISION}) as revised:
        assert revised.url.split(":")[1] == demo.url.split(":")[1]  # same host: same cookie jar
        started = time.time()
        v.page.goto(revised.url + "/offices/malmo")
        expect(v.page.locator("#cb-banner")).to_be_visible()
        state = v.context.request.get(revised.url + revised.prefix + "/state").json()
        assert state["decided"] is False and state["revision"] == NEW_REVISION, state
        v.settle(200)
        for name in revised.third_parties:
            assert revised.received(name, since=started) == [], f"{name} loaded on an outdated consent"
        assert v.page.locator("script[type='text/plain'][data-consent-category]").count() == 2

        v.click("Reject all")  # deciding again settles it on the new revision
        expect(v.page.locator("#cb-banner")).to_have_count(0)
        v.page.goto(revised.url + "/")
        expect(v.page.locator("#cb-banner")).to_have_count(0)


def signed_at(demo: RunningDemo, when: float) -> str:
    """A consent cookie for every category, signed by the demo's own key as if at `when`."""
    consent = Consent(
        id="expiry-test-" + str(int(when)),
        granted=frozenset(demo.config.optional_categories),
        revision=demo.config.policy_revision,
        source="banner",
    )
    with mock.patch.object(TimestampSigner, "get_timestamp", return_value=int(when)):
        return demo.demo.app.codec.encode(consent)  # type: ignore[attr-defined]


def test_a_choice_older_than_the_lifetime_brings_the_banner_back(
    visitor: Callable[..., Visitor], demo: RunningDemo
) -> None:
    """R17, R18, R33: a valid consent cookie decided just inside the configured lifetime is still
    honoured (no banner, trackers run), while the same cookie decided just beyond it counts as
    undecided: the banner returns and nothing optional loads, whatever the browser kept."""
    lifetime = demo.config.cookie.lifetime_days * 86400
    host = demo.url.removeprefix("http://").split(":")[0]
    far_future = time.time() + 365 * 86400  # the browser keeps both cookies: only the server judges

    def visit_with(value: str) -> Visitor:
        v = visitor()
        v.context.add_cookies([{"name": demo.config.cookie.name, "value": value, "domain": host,
                                "path": "/", "expires": far_future, "sameSite": "Lax"}])
        v.goto("/offices/uppsala")
        return v

    recent = visit_with(signed_at(demo, time.time() - lifetime + 3600))
    expect(recent.page.locator("#cb-banner")).to_have_count(0)
    assert recent.state()["decided"] is True
    recent.wait_until("window.countwell !== undefined")

    expired = visit_with(signed_at(demo, time.time() - lifetime - 3600))
    expect(expired.page.locator("#cb-banner")).to_be_visible()
    assert expired.state()["decided"] is False
    expired.settle(200)
    assert expired.third_party_requests() == []
    for name in demo.third_parties:
        assert demo.received(name, since=expired.started) == [], f"{name} loaded on an expired consent"
