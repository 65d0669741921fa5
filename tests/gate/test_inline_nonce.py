"""`inline_scripts = "nonce"` (issue 15): the site's own inline scripts get the response's nonce as
they stream by; what a service's signature marks is held instead; the app's own script-src stands.

Through the gate as the middleware calls it, one response at a time (each with its own nonce).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import Route

from consent_banner import ConfigError
from consent_banner.consent import UNDECIDED, Consent
from consent_banner.gate import ResponseGate
from consent_banner.gate.csp import parse_policies
from consent_banner.gate.inline import MAX_INLINE
from consent_banner.gate.pages import PAGES, SEEN

from .conftest import CONFIG, OWN, client, consent, gated, make_config

GA = {"name": "ga", "preset": "google-analytics", "category": "analytics"}
SERVICES = [*CONFIG["services"], GA]
OWN_SCRIPT = '<script>document.documentElement.dataset.mode = localStorage.getItem("mode") || "";</script>'
GA_CONFIG = (
    "<script>window.dataLayer=window.dataLayer||[];gtag('js',new Date());gtag('config','G-1');</script>"
)


def gate_for(inline_scripts: str = "nonce", **overrides: Any) -> ResponseGate:
    config = make_config(services=SERVICES, inline_scripts=inline_scripts, **overrides)
    return ResponseGate(config, own_cookie_names=OWN)


def page(body: str) -> str:
    return f"<!doctype html><html><head><title>t</title></head><body>{body}</body></html>"


async def serve(
    gate: ResponseGate,
    body: str,
    the_consent: Consent = UNDECIDED,
    *,
    nonce: str = "Nonce0123456789",
    headers: dict[str, str] | None = None,
    chunk: int | None = None,
) -> tuple[str, dict[str, list[str]]]:
    """The page as the browser gets it, and the policy it gets (empty when none); `chunk`: streamed
    in messages of that many characters (else one message)."""

    async def app_page(request: Request) -> Response:
        html = page(body)
        if chunk is None:
            return HTMLResponse(html, headers=headers)
        parts = [html[i : i + chunk] for i in range(0, len(html), chunk)]
        return StreamingResponse(iter(parts), media_type="text/html", headers=headers)

    app = Starlette(routes=[Route("/", app_page)])
    async with client(gated(app, gate, the_consent, inject=None, nonce=nonce)) as c:
        r = await c.get("/")
    value = r.headers.get("content-security-policy")
    return r.text, (parse_policies(value)[0] if value else {})


def scripts(html: str) -> list[str]:
    """Every <script> start tag of a page, in order (runs of blanks as one: a nonce taken out leaves
    its blank)."""
    return [re.sub(r"\s+", " ", tag) for tag in re.findall(r"<script\b[^>]*>", html, re.I)]


@pytest.fixture(autouse=True)
def _forget_pages() -> None:
    PAGES.clear()
    SEEN.clear()


async def test_the_sites_own_inline_scripts_get_the_responses_nonce() -> None:
    """Classic and module scripts, any JavaScript type, one that came with a stale nonce (replaced,
    never kept beside ours): each carries this response's nonce, which the policy names."""
    body = (
        OWN_SCRIPT
        + '<script type="module">import("./app.js")</script>'
        + '<script type="text/javascript" nonce="stale-from-a-cache">var a = 1;</script>'
        + "<SCRIPT LANGUAGE=javascript>var b = 2;</SCRIPT>"
    )
    for the_consent in (UNDECIDED, consent(), consent("analytics", "marketing", "media")):
        html, policy = await serve(gate_for(), body, the_consent, nonce="Resp0123456789")
        assert scripts(html) == [
            '<script nonce="Resp0123456789">',
            '<script type="module" nonce="Resp0123456789">',
            '<script type="text/javascript" nonce="Resp0123456789">',
            '<SCRIPT LANGUAGE=javascript nonce="Resp0123456789">',
        ]
        assert "'nonce-Resp0123456789'" in policy["script-src"]
        assert "'unsafe-inline'" not in policy["script-src"]


async def test_block_leaves_the_sites_inline_scripts_without_a_nonce() -> None:
    """The default: a <script> the page carries (a reflected one too) stays as written, refused."""
    body = OWN_SCRIPT + "<script>alert(document.cookie)</script>"
    html, policy = await serve(gate_for("block"), body)
    assert scripts(html) == ["<script>", "<script>"]
    assert policy["script-src"] == ["'self'", "'nonce-Nonce0123456789'", "https://cdn.example.com"]


async def test_a_services_inline_snippet_is_held_until_granted_never_nonced_before() -> None:
    """GA's configuration snippet matches the preset's signature: before a decision and after a
    refusal it is neutralised (inert, labelled, for the browser script to run after consent); once
    analytics is granted it runs with the nonce. The site's own script beside it runs in every state."""
    for the_consent in (UNDECIDED, consent("marketing")):
        html, _ = await serve(gate_for(), OWN_SCRIPT + GA_CONFIG, the_consent)
        own, ga = scripts(html)
        assert own == '<script nonce="Nonce0123456789">'
        assert 'type="text/plain"' in ga and 'data-consent-service="ga"' in ga
    html, _ = await serve(gate_for(), OWN_SCRIPT + GA_CONFIG, consent("analytics"))
    assert scripts(html) == ['<script nonce="Nonce0123456789">'] * 2


@pytest.mark.parametrize(
    "kind", ["application/json", "application/ld+json", "text/plain", "text/x-template", "text/html"]
)
async def test_data_blocks_are_left_as_they_are(kind: str) -> None:
    """A data block is never run, so CSP does not apply to it: it needs no nonce and gets none
    (and a data block holding a service's signature is not a snippet: left alone too)."""
    body = OWN_SCRIPT + f'<script type="{kind}" id="cfg">{{"a": 1, "g": "gtag(\'config\'"}}</script>'
    html, _ = await serve(gate_for(), body)
    assert scripts(html) == ['<script nonce="Nonce0123456789">', f'<script type="{kind}" id="cfg">']


@pytest.mark.parametrize("kind", ["importmap", "speculationrules"])
async def test_import_maps_and_speculation_rules_get_the_nonce_unless_a_denied_service_is_named(
    kind: str,
) -> None:
    """The browser checks both against script-src: the site's own get the nonce. One naming a
    denied service's origin stays without it (refused: a speculation rule would otherwise prefetch
    from the vendor before consent); granted, it gets the nonce."""
    own = (
        f'<script type="{kind}">{{"imports": {{"a": "/a.js"}}, "prefetch": [{{"urls": ["/next"]}}]}}</script>'
    )
    html, _ = await serve(gate_for(), own)
    assert scripts(html) == [f'<script type="{kind}" nonce="Nonce0123456789">']
    vendor = f'<script type="{kind}">{{"prefetch": [{{"urls": ["https://ads.example.org/p"]}}]}}</script>'
    html, _ = await serve(gate_for(), vendor)
    assert scripts(html) == [f'<script type="{kind}">']
    html, _ = await serve(gate_for(), vendor, consent("marketing"))
    assert scripts(html) == [f'<script type="{kind}" nonce="Nonce0123456789">']


@pytest.mark.parametrize(
    "app_policy",
    [
        "script-src 'self' 'nonce-AppNonce123'",
        "default-src 'self'",
        "script-src-elem 'self'",
        "img-src *, script-src 'self'",  # two policies in one header: the second has its own rules
    ],
)
async def test_where_the_app_sends_its_own_script_src_its_rules_stand(app_policy: str) -> None:
    """An app policy (in the response's own Content-Security-Policy header) that governs script
    elements decides which inline scripts run: the gate adds no nonce to a script matching no
    service. A service's snippet is still held before consent."""
    html, _ = await serve(gate_for(), OWN_SCRIPT)
    assert scripts(html) == ['<script nonce="Nonce0123456789">']  # without the app's policy
    html, policy = await serve(
        gate_for(), OWN_SCRIPT + GA_CONFIG, headers={"content-security-policy": app_policy}
    )
    own, ga = scripts(html)
    assert own == "<script>"
    assert 'type="text/plain"' in ga
    assert policy  # merged into one header


async def test_an_app_policy_without_script_rules_does_not_stop_the_nonce() -> None:
    html, _ = await serve(gate_for(), OWN_SCRIPT, headers={"content-security-policy": "img-src 'self'"})
    assert scripts(html) == ['<script nonce="Nonce0123456789">']


async def test_what_cannot_be_read_whole_or_is_svg_gets_no_nonce() -> None:
    """An inline script longer than the hold (MAX_INLINE) while the page streams is vouched for by
    nobody: a denied service's signature could come after what was read. An SVG `<script>` is SVG
    content, not raw text, and is not held. Both stay as written (refused); the README says to move
    them into a file."""
    long = "<script>var big = '" + "x" * 2 * MAX_INLINE + "';</script>"
    svg = "<svg><script>drawChart()</script></svg>"
    html, _ = await serve(gate_for(), OWN_SCRIPT + long + svg + OWN_SCRIPT, chunk=16 * 1024)
    assert scripts(html) == ['<script nonce="Nonce0123456789">', "<script>", "<script>"] + [
        '<script nonce="Nonce0123456789">'
    ]


async def test_event_handlers_stay_refused() -> None:
    """A nonce admits elements only: onclick= and javascript: URLs stay refused (no 'unsafe-inline',
    no 'unsafe-hashes'), and the gate does not touch them."""
    body = '<button onclick="go()">Go</button><a href="javascript:go()">go</a>'
    html, policy = await serve(gate_for(), OWN_SCRIPT + body)
    assert body in html and scripts(html) == ['<script nonce="Nonce0123456789">']
    assert not {"'unsafe-inline'", "'unsafe-hashes'"} & set(policy["script-src"])


async def test_without_a_policy_nothing_is_nonced() -> None:
    """csp = "off": no policy refuses anything, so the gate vouches for nothing (the snippet of a
    service not granted is still held)."""
    html, policy = await serve(gate_for(csp="off"), OWN_SCRIPT + GA_CONFIG)
    own, ga = scripts(html)
    assert policy == {} and own == "<script>" and 'type="text/plain"' in ga


async def test_a_page_replayed_carries_each_responses_own_nonce() -> None:
    """pages.py records a body seen twice with holes and replays it: the nonce given to the site's
    own scripts is a hole too, filled per response, exactly as a fresh rewrite."""
    gate = gate_for()
    body = OWN_SCRIPT + GA_CONFIG + "<script>var c = 3;</script>"
    for n in range(5):
        nonce = f"Replay{n:04d}xyzw"
        html, policy = await serve(gate, body, nonce=nonce)
        assert scripts(html)[0] == f'<script nonce="{nonce}">'
        assert scripts(html)[2] == f'<script nonce="{nonce}">'
        assert f"'nonce-{nonce}'" in policy["script-src"]
        assert html.count("Replay") == 3  # two own scripts and the held snippet, no other response's
    assert PAGES  # recorded, then replayed


def test_nonce_needs_the_rewriter() -> None:
    """The nonce is given as the page is rewritten: with rewrite_html = false it could not be."""
    with pytest.raises(ConfigError) as e:
        make_config(inline_scripts="nonce", rewrite_html=False)
    assert "inline_scripts: 'nonce' gives scripts the nonce as the gate rewrites the page" in str(e.value)


def test_a_bad_value_names_the_key() -> None:
    with pytest.raises(ConfigError) as e:
        make_config(inline_scripts="hash")
    assert "inline_scripts: Input should be 'block' or 'nonce'" in str(e.value)
