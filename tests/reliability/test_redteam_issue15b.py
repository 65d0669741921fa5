"""Red team R4, issue 15: inline snippets, vouching, nonces, hostile scripts.

The known weakness first: under the default `inline_scripts = "block"` a `<script>` reflected into a
page (XSS) that names a service's signature was vouched for by the gate (nonced for a visitor who
granted the service, activated after consent for one who had not decided). Now only the vendor's
official snippet, or one the site pinned (`inline_sha256`), is (gate/snippets.py).
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from consent_banner.consent import UNDECIDED, Consent
from consent_banner.errors import ConfigError
from consent_banner.gate import ResponseGate
from consent_banner.gate.snippets import Vouch, normalised, pin
from tests.gate.conftest import NONCE, OWN, client, gated
from tests.gate.test_inline import GA4, GTM, MARK, META, SERVICES, app, config, decided, rewrite, script_tags

XSS = "<script>gtag('config','G-1');fetch('/steal?'+document.cookie)</script>"
GA = {"name": "ga", "preset": "google-analytics", "category": "analytics"}
STATES = [UNDECIDED, decided(), decided("analytics"), decided("analytics", "marketing")]


def cfg(**overrides: Any) -> Any:
    return config([*SERVICES, GA], **overrides)


def inert(tag: str) -> bool:
    """Neither nonced by the gate nor activatable: the browser script activates only tags with the
    page's nonce, and the policy refuses an inline script without it."""
    return MARK not in tag and "nonce" not in tag


@pytest.mark.parametrize("state", STATES)
def test_a_reflected_script_naming_a_service_stays_refused_under_block(state: Consent) -> None:
    """The attack: in every consent state the reflected script gets no nonce and no mark."""
    out = rewrite(f"<p>results for {XSS}</p>", state, cfg())
    [tag] = script_tags(out)
    assert inert(tag), tag
    assert "fetch('/steal?'+document.cookie)" in out  # kept, not run: the page reads as it came


@pytest.mark.parametrize(
    "payload",
    [
        "fbq('init', '1');fetch('/x')",
        "(function(w,d,s,l,i){})(window,document,'script','dataLayer','GTM-1');steal()",
        # the official shape with something appended, prepended or between
        "steal();" + GA4.split("<script>\n")[1].split("</script>")[0],
        GA4.split("<script>\n")[1].split("</script>")[0] + "steal()",
        GTM.split("<script>")[1].split("</script>")[0].replace("j.async=true;", "j.async=true;steal();"),
        # an id slot filled with code
        GTM.split("<script>")[1].split("</script>")[0].replace("GTM-TEST123", "'+steal()+'"),
        # a comment where whitespace was
        META.split("<script>")[1].split("</script>")[0].replace("\n", "/**/", 1),
    ],
)
def test_look_alikes_of_official_snippets_are_not_vouched_for(payload: str) -> None:
    for state in (UNDECIDED, decided("analytics", "marketing")):
        [tag, *_] = script_tags(rewrite(f"<script>{payload}</script>", state, cfg()))
        assert inert(tag), (payload, tag)


@pytest.mark.parametrize("snippet", [GTM, GA4, META], ids=["gtm", "ga4", "meta"])
def test_the_official_snippets_are_still_vouched_for(snippet: str) -> None:
    """Pasted verbatim, reindented, or on one line: nonced when granted, marked (activated on
    consent) before."""
    for text in (snippet, snippet.replace("\n", "\n    "), re.sub(r"\n\s*", "\n", snippet)):
        granted = script_tags(rewrite(text, decided("analytics", "marketing"), cfg()))
        inline = [t for t in granted if "src=" not in t]
        assert inline and all(MARK in t for t in inline), granted
        before = [t for t in script_tags(rewrite(text, UNDECIDED, cfg())) if "data-consent-src" not in t]
        assert before and all(MARK in t and 'type="text/plain"' in t for t in before), before


def test_a_customised_snippet_is_vouched_for_once_pinned_with_the_value_the_page_shows() -> None:
    """A site that changed its snippet reads the pin off the refused script and adds it to the
    service: from then on that exact text (whitespace aside) is vouched for, nothing else."""
    custom = "<script>gtag('config', 'G-1', {anonymize_ip: true})</script>"
    [tag] = script_tags(rewrite(custom, decided("analytics"), cfg()))
    value = re.search(r'data-consent-pin="([0-9a-f]{64})"', tag)
    assert value and inert(tag)
    pinned = config([*SERVICES, {**GA, "inline_sha256": [value[1]]}])
    assert script_tags(rewrite(custom, decided("analytics"), pinned)) == [f"<script {MARK}>"]
    spaced = custom.replace(", ", ",\n   ")
    assert script_tags(rewrite(spaced, decided("analytics"), pinned)) == [f"<script {MARK}>"]
    [other] = script_tags(rewrite(custom.replace("true", "steal()"), decided("analytics"), pinned))
    assert inert(other)


@pytest.mark.parametrize("bad", ["abc", "A" * 64, "g" * 64, "0" * 63, "<x>" * 30])
def test_a_bad_pin_is_a_config_error_naming_the_key(bad: str) -> None:
    with pytest.raises(ConfigError, match="inline_sha256"):
        config([*SERVICES, {**GA, "inline_sha256": [bad]}])


@pytest.mark.parametrize("mode", ["report-only", "off"])
def test_where_a_reflected_script_runs_anyway_the_signature_alone_still_decides(mode: str) -> None:
    """Vouching guards the enforced policy only: under report-only or off a reflected script runs
    whatever the gate does, and a customised snippet keeps being activated on consent."""
    out = rewrite("<script>gtag('config', 'G-1', {a: 1})</script>", UNDECIDED, cfg(csp=mode))
    assert MARK in script_tags(out)[0] and "data-consent-pin" not in out


def test_under_inline_scripts_nonce_every_script_is_vouched_for_anyway() -> None:
    """The site chose to nonce its inline scripts: a service's customised one is nonced too."""
    page = "<script>gtag('config', 'G-1', {a: 1})</script>"
    out = rewrite(page, decided("analytics"), cfg(inline_scripts="nonce"))
    assert script_tags(out) == [f"<script {MARK}>"]


async def test_through_the_gate_the_reflected_script_gets_no_nonce_in_any_state() -> None:
    gate = ResponseGate(cfg(), own_cookie_names=OWN)
    page = f"<!doctype html><html><head>{GA4}</head><body>{XSS}</body></html>"
    for state in STATES:
        async with client(gated(app(page), gate, state, inject=None)) as c:
            body = (await c.get("/")).text
        [*_, tag] = script_tags(body)
        assert NONCE not in tag and "nonce" not in tag, (state, tag)
        if state.granted >= {"analytics"}:  # the site's own snippet still runs
            assert f'<script nonce="{NONCE}">\n  window.dataLayer' in body


def test_vouching_costs_linear_time_on_hostile_text() -> None:
    """The shape is a fullmatch of one compiled pattern on bounded text; a pin hashes once."""
    vouch = Vouch()
    for text in (b"gtag('config','" + b"G" * 200_000 + b"');", b" \n" * 200_000, b"(" * 200_000):
        started = time.process_time()
        assert not vouch(text)
        pin(text)
        assert time.process_time() - started < 0.5
    assert normalised(b"new  Date ( )\n;") == b"new Date();"
