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


# --- the catalog: hosts several presets claim ----------------------------------------------------------

GOOGLE = [
    {"name": "ga", "preset": "google-analytics", "category": "analytics"},
    {"name": "ads", "preset": "google-ads", "category": "marketing"},
    {"name": "captcha", "preset": "recaptcha", "category": "necessary"},
]
GA_SRC = '<script async src="https://www.googletagmanager.com/gtag/js?id=G-1"></script>'
ADS_SRC = '<script async src="https://www.googletagmanager.com/gtag/js?id=AW-1"></script>'
CAPTCHA = '<script src="https://www.google.com/recaptcha/api.js"></script>'


def held(out: str) -> bool:
    return "data-consent-src" in out


def test_a_hosts_shared_by_presets_of_different_categories_are_decided_by_the_urls_path() -> None:
    """GA4 and Ads both load gtag.js from www.googletagmanager.com; reCAPTCHA, Maps and Ads share
    www.google.com. A host was denied when any claimer was: refusing marketing held the granted GA4
    and the necessary reCAPTCHA as Ads'. Now a claimer's URL signature decides on that host."""
    c = config(GOOGLE)
    analytics = decided("analytics")
    assert not held(rewrite(GA_SRC, analytics, c)), "GA4 granted runs when Ads is refused"
    assert held(rewrite(ADS_SRC, analytics, c)), "Ads' own gtag.js stays held"
    for state in (UNDECIDED, decided(), analytics):
        assert not held(rewrite(CAPTCHA, state, c)), "the necessary reCAPTCHA is never Ads'"
        pixel = '<img src="https://www.google.com/pagead/1p">'
        assert 'data-consent-service="ads"' in rewrite(pixel, state, c)
    assert held(rewrite(GA_SRC, UNDECIDED, c)) and held(rewrite(ADS_SRC, decided(), c))


@pytest.mark.parametrize(
    "url",
    [
        "https://www.google.com/recaptcha/api.js/../../pagead/1p",
        "https://www.google.com/recaptcha/api.js/%2e%2e/pagead/1p",
        "https://www.google.com/recaptcha%2Fapi.js",
        "https://www.google.com\\recaptcha/api.js/..\\pagead",
        "https://www.google.com/recaptchas/api.js",
        "https://www.google.com/pagead/1p?u=/recaptcha/api.js",
        "https://www.google.com/pagead/1p#/recaptcha/api.js",
    ],
)
def test_a_shared_hosts_path_cannot_be_spelled_into_the_allowed_claimers(url: str) -> None:
    out = rewrite(f'<img src="{url}">', decided(), config(GOOGLE))
    assert 'data-consent-service="ads"' in out, out


def test_a_granted_gtm_snippet_is_not_held_for_the_ads_that_share_its_host() -> None:
    """The GTM snippet names www.googletagmanager.com, which Ads claims too: with GTM granted and Ads
    refused, its signatures decide (GTM's), not the shared host."""
    c = config([{"name": "gtm", "preset": "google-tag-manager", "category": "analytics"}, *GOOGLE[1:]])
    assert script_tags(rewrite(GTM, decided("analytics"), c))[0] == f"<script {MARK}>"
    assert 'data-consent-service="gtm"' in rewrite(GTM, decided(), c)
    out = rewrite("<script>gtag('config', 'AW-1')</script>", decided("analytics"), c)
    assert 'data-consent-service="ads"' in out


def test_no_preset_claims_a_whole_domain_that_hosts_anyones_content() -> None:
    """Over-breadth: google-maps claimed `https://*.googleapis.com`, so granting maps put
    storage.googleapis.com (anyone's uploaded files) into script-src: a reflected
    `<script src=https://storage.googleapis.com/x/evil.js>` then ran. No preset claims such a
    wildcard, nor a whole google.com."""
    from consent_banner.catalog import catalog

    broad = {
        "*.google.com", "google.com", "*.googleapis.com", "*.googleusercontent.com", "*.appspot.com",
        "*.facebook.com", "*.microsoft.com", "*.amazonaws.com", "*.cloudfront.net", "*.github.io",
    }
    for name, preset in catalog().items():
        for origin in preset.service.get("origins", ()):
            assert origin.split("://", 1)[1] not in broad, (name, origin)
    maps = config([{"name": "maps", "preset": "google-maps", "category": "marketing"}])
    gate = ResponseGate(maps, own_cookie_names=OWN)
    plan = gate.plan(decided("marketing"))
    policy = gate.csp(plan, [], root_path="", self_origin=None, secure=True, nonce=NONCE)
    assert b"storage.googleapis.com" not in policy and b"*.googleapis.com" not in policy


def test_a_maps_embed_on_the_host_ads_shares_follows_maps() -> None:
    c = config([{"name": "maps", "preset": "google-maps", "category": "analytics"}, *GOOGLE[1:]])
    frame = '<iframe src="https://www.google.com/maps/embed?pb=1"></iframe>'
    assert "data-consent-src" not in rewrite(frame, decided("analytics"), c)
    assert 'data-consent-service="maps"' in rewrite(frame, decided(), c)


# --- hostile inline scripts ----------------------------------------------------------------------------

FONTS = {"name": "fonts", "preset": "google-fonts", "category": "analytics"}
VIDEO = {"name": "video", "category": "marketing", "origins": ["https://media.example"]}


def test_a_signature_split_by_concatenation_is_no_service_and_stays_refused() -> None:
    """`'https://www.google'+'tagmanager.com/gtm.js'` names neither a signature nor a host: under
    "block" the script is left without a nonce (the policy refuses it); under "nonce" it gets one,
    but the script it builds is refused by script-src, which holds no ungranted origin (browser test
    in e2e/test_redteam_issue15.py)."""
    split = "<script>var s=document.createElement('script');s.src='https://www.google'+'tagmanager.com/gtm.js'</script>"
    assert script_tags(rewrite(split, UNDECIDED, cfg())) == ["<script>"]
    gate = ResponseGate(cfg(inline_scripts="nonce"), own_cookie_names=OWN)
    policy = gate.csp(gate.plan(UNDECIDED), [], root_path="", self_origin=None, secure=True, nonce=NONCE)
    script_src = policy.split(b"script-src", 1)[1].split(b";", 1)[0]
    assert b"googletagmanager" not in script_src and b"strict-dynamic" not in policy


@pytest.mark.parametrize(
    "page",
    [
        # the parser ends a script at the first </script, in a string or not: the rest is a new one
        "<script>var a = \"</script><script>fbq('init', '1');steal()</script>\"</script>",
        # escaped states: <!--<script> keeps the script open past an inner </script>
        "<script><!--<script>fbq('init', '1')</script>steal()--></script>",
        "<script type=module>fbq('init', '1');steal()</script>",
        "<script async defer>fbq('init', '1');steal()</script>",
        "<script nomodule>fbq('init', '1');steal()</script>",
    ],
)
@pytest.mark.parametrize("state", STATES)
def test_reflected_scripts_in_parser_corners_are_never_vouched_for(page: str, state: Consent) -> None:
    for chunk in (0, 7):
        out = rewrite(page, state, cfg(), chunk=chunk)
        assert all(inert(t) for t in script_tags(out)), out


def test_an_svg_script_naming_a_service_gets_no_nonce() -> None:
    """SVG scripts run in HTML but are not held (SVG content is not raw text): the gate gives them
    nothing, so under the enforced policy they are refused in every state, CDATA or not."""
    page = "<svg><script><![CDATA[fbq('init', '1')]]></script><script>gtag('config','G-1')</script></svg>"
    for state in STATES:
        assert "nonce" not in rewrite(page, state, cfg())


@pytest.mark.parametrize("state", [UNDECIDED, decided("analytics", "marketing")])
def test_a_signature_past_the_hold_is_not_vouched_for(state: Consent) -> None:
    page = "<script>/*" + "x" * 600 * 1024 + "*/gtag('config','G-1')</script>"
    out = rewrite(page, state, cfg(), chunk=64 * 1024)
    assert out == page  # streamed as written: no nonce, no mark


def test_hostile_and_duplicate_nonces_under_inline_scripts_nonce() -> None:
    """The page's nonce replaces every nonce the script came with, in any case and repeated: exactly
    one nonce attribute, the gate's (a browser reads the first of duplicates)."""
    c = cfg(inline_scripts="nonce")
    tags = ('<script nonce="x" nonce="y">', "<script NONCE=x Nonce='y' nonce>", '<script nonce=MARK nonce=z>')
    for tag in tags:
        [out] = script_tags(rewrite(tag + "let a = 1</script>", UNDECIDED, c))
        assert out.lower().count("nonce") == 1 and MARK in out, out
    # under "block" a script of no service is left as it came: a guessed nonce is the browser's to refuse
    [out] = script_tags(rewrite('<script nonce="guess">steal()</script>', UNDECIDED, cfg()))
    assert out == '<script nonce="guess">'


def test_ten_thousand_inline_scripts_cost_linear_time() -> None:
    def cost(n: int) -> float:
        page = "<p>x</p>".join(f"<script>var a{i} = {i}; gtag('config','G-{i}')</script>" for i in range(n))
        started = time.process_time()
        rewrite(page, decided("analytics"), cfg())
        return time.process_time() - started

    cost(100)
    small, large = cost(1000), cost(10_000)
    assert large < 20 * max(small, 0.005), (small, large)


# --- fonts, styles, media ------------------------------------------------------------------------------


def test_stylesheets_and_imports_of_a_denied_font_host_in_every_corner() -> None:
    c = config([*SERVICES, FONTS])
    pages = [
        '<noscript><link rel="stylesheet" href="https://fonts.googleapis.com/css?family=A"></noscript>',
        "<svg><style>@import url(https://fonts.googleapis.com/css?family=A);</style></svg>",
        '<p style="@import url(https://fonts.googleapis.com/css?family=A); color: red">x</p>',
        "<p style=\"background: url('https://fonts.gstatic.com/x.woff2')\">x</p>",
    ]
    for page in pages:
        out = rewrite(page, UNDECIDED, c)
        assert ' href="https://fonts' not in out and "url(https://fonts" not in out, out
        assert "url('https://fonts" not in out, out


def test_a_held_style_copy_cannot_be_closed_by_its_own_css() -> None:
    """`</style>` inside a CSS string ends the <style> for the parser (and the gate): the markup
    after it is the page's, a reflected script there gets no nonce, and the held copy holds only
    what the parser read as CSS."""
    c = config([*SERVICES, FONTS])
    page = (
        "<style>@import url(https://fonts.googleapis.com/css?family=A); "
        "a{content:\"</style><script>steal()</script>\"}</style>"
    )
    out = rewrite(page, UNDECIDED, c)
    assert out.count("<script>steal()</script>") == 1
    assert "nonce" not in out.split("<script>steal()")[1].split("</script>")[0]


def test_video_sources_of_a_denied_service_are_held_and_granted_ones_kept() -> None:
    c = config([*SERVICES, VIDEO])
    page = '<video controls poster="https://media.example/p.jpg"><source src="https://media.example/v.mp4"></video>'
    out = rewrite(page, UNDECIDED, c)
    assert ' src="https://media.example' not in out and ' poster="https://media.example' not in out
    assert 'data-consent-src="https://media.example/v.mp4"' in out
    assert rewrite(page, decided("marketing"), c) == page


def test_a_huge_link_header_is_filtered_in_linear_time() -> None:
    from consent_banner.gate.linkheader import filter_link

    c = config([*SERVICES, FONTS])
    hosts = ResponseGate(c, own_cookie_names=OWN).plan(UNDECIDED).hosts
    hosts_of = ("cdn.example.com", "fonts.gstatic.com")
    entries = [f"<https://{hosts_of[i % 2]}/{i}>; rel=preconnect" for i in range(1000)]
    started = time.process_time()
    kept = filter_link(", ".join(entries).encode(), hosts)
    assert kept is not None and b"gstatic" not in kept and kept.count(b"cdn.example.com") == 500
    big = (b"<https://cdn.example.com/" + b"a" * 65_000 + b">; rel=preload, <https://fonts.gstatic.com>")
    assert filter_link(big, hosts) == big.split(b", ")[0]
    assert filter_link(b'<https://cdn.example.com>; title="' + b"\\" * 65_000, hosts) is not None
    assert time.process_time() - started < 1


@pytest.mark.parametrize(
    ("url", "granted", "owner"),
    [
        ("https://www.google.com/recaptcha/enterprise.js", (), None),  # any reCAPTCHA path is its own
        ("https://www.google.com/recaptcha/api2/anchor?k=1", (), None),
        ("https://www.google.com/pagead/1p-conversion/1/", ("marketing",), None),  # Ads granted, Maps not
        ("https://www.google.com/maps/embed?pb=1", ("marketing",), "maps"),
    ],
)
def test_every_google_com_claimer_names_its_paths(
    url: str, granted: tuple[str, ...], owner: str | None
) -> None:
    """www.google.com is claimed by three presets: each names its paths, so granting one never holds
    another's (nor lets one pass as another's)."""
    c = config([*GOOGLE[1:], {"name": "maps", "preset": "google-maps", "category": "analytics"}])
    out = rewrite(f'<img src="{url}">', decided(*granted), c)
    assert (f'data-consent-service="{owner}"' in out) if owner else "data-consent-src" not in out, out
