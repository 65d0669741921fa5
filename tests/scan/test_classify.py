"""The scanner's judgement (consent_banner/scan/classify.py): observations in, findings out."""

from __future__ import annotations

import pytest

from consent_banner.config import ConsentConfig
from consent_banner.scan.classify import Classifier, duration, findings_for, lifetime_exceeds, origin_matches
from consent_banner.scan.model import Finding

from .conftest import SITE, cookie, host, page


def kinds(findings: list[Finding]) -> set[tuple[str, str, str, str | None, str]]:
    return {(f.kind, f.severity, f.requirement, f.page, f.subject) for f in findings}


def without_stale(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.kind != "stale-declaration"]


def test_clean_site_has_no_findings_but_its_unused_services(config: ConsentConfig) -> None:
    """R1, R2, R16: necessary cookies and the site's own and necessary hosts before a decision,
    the same after Reject all, declared trackers after Accept all: nothing to report."""
    pages = [
        page(
            "/",
            before={
                "cookies": [cookie("consent_csrf", http_only=True)],
                "hosts": [host(SITE), host("https://cdn.example.org")],
            },
            reject={
                "cookies": [cookie("consent", lifetime=100 * 86400), cookie("booking_session")],
                "hosts": [host(SITE, after=3)],
            },
            accept={
                "cookies": [
                    cookie("_st_id.1", lifetime=13 * 30 * 86400),
                    cookie("_ads", lifetime=89 * 86400),
                ],
                "hosts": [
                    host("https://stats.example.net", after=2),
                    host("https://eu.ads.example.com", after=1),
                ],
            },
        )
    ]
    assert findings_for(config, SITE, pages) == []


def test_optional_cookie_host_and_key_before_a_decision_are_errors(config: ConsentConfig) -> None:
    """R1, R2: an analytics cookie, a marketing host and an analytics storage key before any
    decision are each an error on the page they were seen on."""
    pages = [
        page("/"),
        page(
            "/shop",
            before={
                "cookies": [cookie("_st_ses", lifetime=1700)],
                "hosts": [host("https://eu.ads.example.com")],
                "storage": ["_st_id.local"],
            },
        ),
    ]
    found = without_stale(findings_for(config, SITE, pages))
    assert kinds(found) == {
        ("cookie-before-decision", "error", "R1", "/shop", "_st_ses (shop.example.com)"),
        ("host-before-decision", "error", "R2", "/shop", "https://eu.ads.example.com"),
        ("storage-before-decision", "error", "R1", "/shop", "localStorage._st_id.local"),
    }
    message = next(f for f in found if f.kind == "cookie-before-decision")
    assert "analytics cookie _st_ses (service stats)" in message.message
    assert "set by a script (no Set-Cookie header stored it)" in message.evidence[0]


def test_after_reject_survivors_and_newcomers_are_errors_with_their_story(config: ConsentConfig) -> None:
    """R16: a marketing cookie that was there before Reject all and is still there, an analytics
    cookie that appears after it, a host contacted once it is recorded; requests before the
    decision in the reject context are not counted twice."""
    pages = [
        page(
            "/",
            reject={
                "cookies": [
                    cookie(
                        "_ads",
                        lifetime=80 * 86400,
                        before=True,
                        path="/deals",
                        expiry_missed="GET https://shop.example.com/deals (Path=/)",
                    ),
                    cookie("_st_ses", lifetime=1000, set_by="GET https://shop.example.com/"),
                ],
                "hosts": [
                    host("https://stats.example.net", before=2, after=1),
                    host("https://x.ads.example.com", before=1),
                ],
            },
        )
    ]
    found = without_stale(findings_for(config, SITE, pages))
    assert kinds(found) == {
        ("cookie-after-reject", "error", "R16", "/", "_ads (shop.example.com)"),
        ("cookie-after-reject", "error", "R16", "/", "_st_ses (shop.example.com)"),
        ("host-after-reject", "error", "R16", "/", "https://stats.example.net"),
    }
    by_subject = {f.subject: f for f in found}
    survivor = by_subject["_ads (shop.example.com)"]
    assert "survives Reject all" in survivor.message
    assert "was there before the decision" in survivor.evidence[0]
    assert (
        "the expiry sent by GET https://shop.example.com/deals (Path=/) did not reach it"
        in survivor.evidence[0]
    )
    newcomer = by_subject["_st_ses (shop.example.com)"]
    assert "appears after Reject all" in newcomer.message
    assert "set by GET https://shop.example.com/" in newcomer.evidence[0]
    assert "https://stats.example.net/after" in by_subject["https://stats.example.net"].evidence[0]


def test_undeclared_cookie_is_one_error_per_page_listing_each_state(config: ConsentConfig) -> None:
    """R5: an undeclared HttpOnly cookie seen in all three states is one error (not also a
    before-decision or after-reject one), its evidence names each state and the response that set it."""
    sticky = cookie("lb_sticky", http_only=True, set_by="GET https://shop.example.com/")
    pages = [
        page("/", before={"cookies": [sticky]}, reject={"cookies": [sticky]}, accept={"cookies": [sticky]})
    ]
    [finding] = without_stale(findings_for(config, SITE, pages))
    assert (finding.kind, finding.severity, finding.requirement) == ("undeclared-cookie", "error", "R5")
    assert "lb_sticky (HttpOnly) is not declared" in finding.message
    assert [e.split(":")[0] for e in finding.evidence] == [
        "before any decision",
        "after Reject all",
        "after Accept all",
    ]
    assert all("HttpOnly" in e and "set by GET https://shop.example.com/" in e for e in finding.evidence)


def test_undeclared_host_is_a_warning_and_undeclared_storage_an_error(config: ConsentConfig) -> None:
    """R5: an origin no service lists is a warning (it may be a CDN that stores nothing); a
    storage key no pattern matches is an error, like a cookie."""
    pages = [page("/", before={"hosts": [host("https://fonts.example.io")], "storage": ["ab_test"]})]
    assert kinds(without_stale(findings_for(config, SITE, pages))) == {
        ("undeclared-host", "warning", "R5", "/", "https://fonts.example.io"),
        ("undeclared-storage", "error", "R5", "/", "localStorage.ab_test"),
    }


@pytest.mark.parametrize(
    ("name", "lifetime", "exceeds"),
    [
        ("_st_ses", 1800, False),  # exactly as declared (30 minutes)
        ("_st_ses", 1800 + 60, False),  # within the slack for clocks and rounding
        ("_st_ses", 3600, True),
        ("_st_id.1", 13 * 31 * 86400, False),  # "13 months" read at its longest
        ("_st_id.1", 2 * 365 * 86400, True),
        ("booking_session", None, False),  # a session cookie, declared "session"
        ("booking_session", 365 * 86400, True),  # persistent, declared "session"
    ],
)
def test_lifetime_longer_than_declared_is_an_error(
    config: ConsentConfig, name: str, lifetime: float | None, exceeds: bool
) -> None:
    """R5: a cookie living longer than its declaration says (a "session" cookie that persists) is
    an error naming both lifetimes; what is declared, or a minute more, passes."""
    pages = [page("/", accept={"cookies": [cookie(name, lifetime=lifetime)]})]
    found = [f for f in findings_for(config, SITE, pages) if f.kind == "lifetime-exceeded"]
    assert bool(found) is exceeds
    if found:
        assert found[0].severity == "error" and found[0].requirement == "R5"
        assert f"longer than the {config.service_for_cookie(name)[1].lifetime!r} declared" in found[0].message  # type: ignore[index]


def test_declared_services_never_seen_are_stale_warnings(config: ConsentConfig) -> None:
    """R5: a service whose cookies and origins appear nowhere is a site-wide warning; one with
    nothing to observe (video) cannot be judged and is not reported; a host counts as a sighting."""
    pages = [page("/", accept={"hosts": [host("https://stats.example.net")]})]
    stale = {f.subject: f for f in findings_for(config, SITE, pages) if f.kind == "stale-declaration"}
    assert set(stale) == {"booking", "pixel", "cdn"}
    assert all(f.severity == "warning" and f.page is None for f in stale.values())
    assert "declares _ads, https://*.ads.example.com" in stale["pixel"].evidence[0]


def test_a_decision_that_could_not_be_recorded_is_an_error(config: ConsentConfig) -> None:
    """R7: when Reject all cannot be recorded, what follows it was not checked: an error."""
    p = page("/")
    p.states[
        "reject"
    ].decision_error = "no banner button; POST /_consent {action: reject_all} answered HTTP 403"
    [finding] = without_stale(findings_for(config, SITE, [p]))
    assert (finding.kind, finding.severity, finding.requirement, finding.subject) == (
        "decision-failed",
        "error",
        "R7",
        "Reject all",
    )
    assert "HTTP 403" in finding.evidence[0]


def test_own_cookies_are_necessary_even_when_undeclared(config: ConsentConfig) -> None:
    """R1: the consent cookie and its _csrf twin are the consent manager's own: necessary."""
    c = Classifier(config, SITE)
    assert c.cookie("consent").category == "necessary"
    assert c.cookie("consent_csrf").category == "necessary"
    assert c.cookie("consent_other").category is None
    assert c.cookie("_st_id.42").service == "stats"
    assert c.host(SITE).category == "necessary"


@pytest.mark.parametrize(
    ("declared", "observed", "match"),
    [
        ("https://stats.example.net", "https://stats.example.net", True),
        ("http://stats.example.net", "https://stats.example.net", True),  # upgrade, as in CSP
        ("https://stats.example.net", "http://stats.example.net", False),
        ("https://stats.example.net", "https://stats.example.net:8443", False),
        ("http://127.0.0.2:5000", "http://127.0.0.2:5000", True),
        ("http://127.0.0.2:5000", "http://127.0.0.2:5001", False),
        ("https://*.ads.example.com", "https://eu.ads.example.com", True),
        ("https://*.ads.example.com", "https://a.b.ads.example.com", True),
        ("https://*.ads.example.com", "https://ads.example.com", False),
        ("https://*.ads.example.com", "https://evilads.example.com", False),
    ],
)
def test_origin_matching_follows_csp_source_rules(declared: str, observed: str, match: bool) -> None:
    """R2, R5: a request belongs to a service when its origin falls under a declared one."""
    assert origin_matches(declared, observed) is match


def test_lifetimes_read_as_people_say_them() -> None:
    assert [duration(x) for x in (None, 30, 1800, 13 * 3600, 400 * 86400)] == [
        "session",
        "30 s",
        "30 min",
        "13 h",
        "400 days",
    ]
    assert lifetime_exceeds(None, None) is False
    assert lifetime_exceeds(120, None) is True
