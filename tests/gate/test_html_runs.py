"""Runs of markup remembered by content (`_known_runs`): a page served again is rewritten exactly as
the first time, and nothing remembered in one consent state or page lets a tag pass in another."""

from __future__ import annotations

import pytest

from consent_banner.gate import ResponseGate
from consent_banner.gate.html import HtmlRewriter
from consent_banner.gate.runs import RUN, RUNS

from .conftest import OWN, consent, inject_fn, make_config

FILLER = "".join(
    f'<div class="card" data-id="{i}"><a href="/p/{i}"><img src="/img/{i}.webp" alt="P {i}"></a>'
    f"<p>Product {i}</p></div>\n"
    for i in range(200)
)  # many runs' worth of plain markup, cut after each line
assert len(FILLER) > 4 * RUN


@pytest.fixture(autouse=True)
def _forget_runs() -> None:
    RUNS.clear()


def rewrite(page: str, *granted: str, nonce: str = "n0nce") -> str:
    gate = ResponseGate(make_config(), own_cookie_names=OWN)
    hosts = gate.plan(consent(*granted)).hosts
    rw = HtmlRewriter(hosts, inject_fn, placeholder=gate.placeholder, mark=lambda: nonce)
    data = page.encode()
    return (rw.feed(data) + rw.finish()).decode()


def doc(body: str) -> str:
    return f'<!doctype html><html lang="en"><head><title>t</title></head><body>{body}</body></html>'


def test_a_page_served_again_is_rewritten_as_the_first_time() -> None:
    script = '<script src="https://ads.example.org/a.js"></script>'
    page = doc(FILLER + '<img src="https://px.adnet.example/t">' + FILLER + script + FILLER)
    first = rewrite(page)
    assert len(RUNS) > 3
    again = rewrite(page, nonce="other")
    assert again == first.replace('nonce="n0nce"', 'nonce="other"')
    assert again.count('nonce="other"') == 2 and 'data-consent-src="https://px.adnet.example/t"' in again
    RUNS.clear()
    assert rewrite(page) == first


def test_a_run_passed_in_one_state_still_stops_at_a_host_denied_in_another() -> None:
    page = doc(FILLER + '<img src="https://px.adnet.example/t">' + FILLER)
    granted = rewrite(page, "marketing")  # adnet allowed: every run passed whole and remembered
    assert 'src="https://px.adnet.example/t"' in granted
    denied = rewrite(page)
    assert 'data-consent-src="https://px.adnet.example/t"' in denied
    assert ' src="https://px.adnet' not in denied


def test_a_run_cut_inside_a_tag_does_not_hide_the_tag() -> None:
    # A run ends at a "\n<" inside the quoted value (longer than a run): the tag is read whole, both times.
    tag = '<img title="' + "a\n<b" * RUN + '" src="https://px.adnet.example/t">'
    head = FILLER[: FILLER.index("\n", RUN) + 1]  # whole lines, past where a run may end
    page = doc(head + tag + FILLER)
    for _ in range(2):
        out = rewrite(page)
        assert 'data-consent-src="https://px.adnet.example/t"' in out


def test_a_remembered_run_holding_the_marker_still_leaves_the_banner_out() -> None:
    page = doc(FILLER + '<div data-consent-banner="x"></div>' + FILLER)
    for _ in range(2):
        assert rewrite(page).count("data-consent-banner") == 2  # the page's and the head snippet's


def test_the_same_runs_after_a_part_that_differs_are_remembered() -> None:
    rewrite(doc("<p>token 1</p>" + FILLER))
    known = len(RUNS)
    rewrite(doc("<p>token 22222</p>" + FILLER))
    assert len(RUNS) == known + 1  # the first run differs; the next ones start at the same lines
