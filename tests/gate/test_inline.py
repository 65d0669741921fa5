"""Inline vendor snippets (gate/inline.py): held until `</script>`, neutralised for a service not
allowed, nonced for an allowed one's signature, left alone otherwise; the reload rule for loaders;
the `inline` and `loader` service keys."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

from consent_banner.config import ConsentConfig
from consent_banner.consent import UNDECIDED, Consent
from consent_banner.errors import ConfigError
from consent_banner.gate import ResponseGate
from consent_banner.gate.csp import merge, parse_policies, serialize
from consent_banner.gate.html import HtmlRewriter
from consent_banner.gate.inline import MAX_INLINE
from consent_banner.gate.pages import PAGES, SEEN
from consent_banner.gate.snippets import pin

from .conftest import NONCE, OWN, client, gated

SNIPPETS = Path(__file__).parent.parent / "fixtures" / "snippets"
GTM, GA4, META = ((SNIPPETS / f"{n}.html").read_text() for n in ("gtm", "ga4", "meta-pixel"))
MARK = 'nonce="MARK"'

BASE: dict[str, Any] = {
    "policy_revision": "1",
    "controller": "Example AB",
    "privacy_policy_url": "/privacy",
    "categories": {
        "necessary": {"label": "Necessary"},
        "analytics": {"label": "Analytics"},
        "marketing": {"label": "Marketing"},
    },
}
SERVICES = [
    {"name": "site", "category": "necessary", "origins": ["https://cdn.example.com"]},
    {"name": "gtm", "preset": "google-tag-manager", "category": "analytics"},
    {"name": "meta", "preset": "meta-pixel", "category": "marketing"},
    {"name": "chat", "category": "marketing", "origins": ["https://*.chat.example"],
     "inline": ["Chat.boot("]},
]


def config(services: list[dict[str, Any]] = SERVICES, **overrides: Any) -> ConsentConfig:
    return ConsentConfig.from_dict({**BASE, "services": services, **overrides})


def decided(*granted: str) -> Consent:
    return Consent(id="c", granted=frozenset({"necessary", *granted}), revision="1", decided_at=1)


def rewrite(
    html: str | bytes,
    the_consent: Consent = UNDECIDED,
    cfg: ConsentConfig | None = None,
    *,
    chunk: int = 0,
    charset: str = "utf-8",
) -> str:
    """`html` through a rewriter as the gate makes one for `the_consent` (mark: nonce="MARK")."""
    gate = ResponseGate(cfg or config(), own_cookie_names=OWN)
    plan = gate.plan(the_consent)
    data = html.encode(charset) if isinstance(html, str) else html
    rw = HtmlRewriter(plan.hosts, None, charset=charset, mark=lambda: "MARK", inline=plan.inline)
    if chunk:
        out = b"".join(rw.feed(data[i : i + chunk]) for i in range(0, len(data), chunk)) + rw.finish()
    else:
        out = rw.feed(data) + rw.finish()
    return out.decode(charset)


def script_tags(html: str) -> list[str]:
    return re.findall(r"<script\b[^>]*>", html)


# --- the service keys ----------------------------------------------------------------------------------


def test_presets_fill_inline_and_loader_and_a_key_given_replaces_them() -> None:
    cfg = config(
        [
            {"name": "gtm", "preset": "google-tag-manager", "category": "analytics"},
            {"name": "meta", "preset": "meta-pixel", "category": "marketing",
             "inline": ["fbq("], "loader": False},
            {"name": "own", "category": "analytics"},
        ]
    )
    gtm, meta, own = cfg.services
    assert "googletagmanager.com/gtm.js" in gtm.inline and gtm.loader is True
    assert meta.inline == ("fbq(",) and meta.loader is False
    assert own.inline == () and own.loader is False


def test_a_config_without_inline_or_loader_keeps_its_hash() -> None:
    """Upgrades lose nothing: the banner version of a config that uses neither key is the one the
    previous release computed (pinned), and giving the defaults explicitly changes nothing."""
    services = [{"name": "stats", "category": "analytics", "origins": ["https://stats.example.net"]}]
    before = "e039334ea4e25a8f91034d47dbabfa40333ee42d4247bbd3707c67c76c1d9abf"
    assert config(services).config_hash == before
    explicit = [{**services[0], "inline": [], "loader": False}]
    assert config(explicit).config_hash == before
    assert config([{**services[0], "inline": ["stats.js"]}]).config_hash != before


@pytest.mark.parametrize(
    ("inline", "says"),
    [
        (["ab"], "3 to 200 characters"),
        (["   "], "3 to 200 characters"),
        (["x" * 201], "3 to 200 characters"),
        ([f"sig{i}" for i in range(33)], "at most 32 signatures"),
        (["fbq(\u00e9"], "printable ASCII"),
        (["fbq(\ninit"], "printable ASCII"),
        ([5], "string"),
        ("fbq(", "tuple"),
    ],
)
def test_bad_signatures_are_config_errors_naming_the_key(inline: Any, says: str) -> None:
    with pytest.raises(ConfigError) as e:
        config([{"name": "ads", "category": "marketing", "inline": inline}])
    assert "services[0].inline" in str(e.value) and says in str(e.value)


def test_loader_must_be_a_boolean() -> None:
    with pytest.raises(ConfigError, match=r"services\[0\]\.loader"):
        config([{"name": "ads", "category": "marketing", "loader": "sometimes"}])


# --- neutralised, nonced, left alone -------------------------------------------------------------------


def test_the_official_gtm_snippet_is_neutralised_before_consent() -> None:
    """R2: before a decision the GTM loader is kept in place, inert, labelled and marked; its text
    is unchanged, so that the browser script runs exactly the vendor's code after consent."""
    out = rewrite(GTM)
    [tag] = [t for t in script_tags(out)]
    assert tag == (
        '<script type="text/plain" data-consent-category="analytics" data-consent-service="gtm"'
        f' data-consent-reload="" {MARK}>'
    )
    assert GTM[GTM.index("(function(w,d") : GTM.index("</script>")] in out


def test_meta_and_ga4_are_neutralised_and_labelled_with_their_service() -> None:
    cfg = config([*SERVICES, {"name": "ga", "preset": "google-analytics", "category": "analytics"}])
    out = rewrite(META + GA4, cfg=cfg)
    tags = script_tags(out)
    assert 'data-consent-service="meta"' in tags[0]
    # gtag.js: an external script of www.googletagmanager.com (claimed first by gtm, in config order)
    assert "data-consent-src=" in tags[1] and 'data-consent-service="gtm"' in tags[1]
    assert 'data-consent-service="ga"' in tags[2] and tags[2].startswith('<script type="text/plain"')
    assert all(MARK in t for t in tags)


def test_a_granted_services_snippet_gets_the_nonce_and_a_denied_ones_stays_inert() -> None:
    """After consent, on the next page: the granted service's snippet runs where it stands (the
    nonce: under the enforced policy nothing else would let it); the one still denied does not."""
    out = rewrite(GTM + META, decided("analytics"))
    gtm, meta = script_tags(out)
    assert gtm == f"<script {MARK}>"
    assert 'type="text/plain"' in meta and 'data-consent-service="meta"' in meta


def test_a_granted_snippet_with_its_own_nonce_gets_the_pages() -> None:
    out = rewrite(META.replace("<script>", "<script nonce=old>"), decided("marketing"))
    assert script_tags(out)[0] == f"<script  {MARK}>"


def test_an_allowed_services_host_alone_vouches_for_no_script() -> None:
    """A necessary service is allowed for everyone: a script naming its CDN (a reflected one, say)
    must not get the nonce for that; only a signature, the operator's word, does."""
    page = '<script>load("https://cdn.example.com/x.js")</script>'
    assert rewrite(page) == page
    assert rewrite(page, decided("analytics", "marketing")) == page


def test_scripts_of_no_service_are_left_as_they_came() -> None:
    page = "<script>document.documentElement.className = 'js'</script><script nonce=app>let a = 1</script>"
    assert rewrite(page) == page
    assert rewrite(page, decided("analytics")) == page


def test_without_a_policy_nothing_is_nonced_and_denied_snippets_stay_inert() -> None:
    """csp = "off": the neutralisation does not depend on the policy (the snippet must not run
    before consent), and no nonce is needed for what is granted."""
    off = config(csp="off")
    assert 'type="text/plain"' in rewrite(GTM, cfg=off)
    assert script_tags(rewrite(GTM, decided("analytics"), cfg=off)) == ["<script>"]


@pytest.mark.parametrize(
    "kind",
    ["application/json", "application/ld+json", "text/plain", "importmap", "speculationrules", "text/x-tmpl"],
)
def test_scripts_the_browser_does_not_run_are_left_alone(kind: str) -> None:
    page = f'<script type="{kind}">{{"u": "https://connect.facebook.net/x", "f": "fbq(\'init\'"}}</script>'
    assert rewrite(page) == page


@pytest.mark.parametrize("kind", ["module", "text/javascript", " Application/JavaScript ", "text/ecmascript"])
def test_every_javascript_type_is_held_and_kept_for_activation(kind: str) -> None:
    out = rewrite(f'<script type="{kind}">fbq(\'init\', "1")</script>')
    [tag] = script_tags(out)
    assert f'data-consent-type="{kind}"' in tag and ' type="text/plain"' in tag


def test_a_script_with_src_is_decided_by_its_src_not_its_text() -> None:
    page = "<script src=/own.js>fbq('init', '1')</script>"
    assert rewrite(page) == page  # the browser never runs the text of a script with src


def test_hosts_match_in_any_case_and_only_as_whole_host_names() -> None:
    assert 'type="text/plain"' in rewrite("<script>u='//CONNECT.Facebook.NET/x.js'</script>")
    assert 'data-consent-service="chat"' in rewrite("<script>u='https://eu.widget.chat.example/a'</script>")
    for text in (
        "u='//myconnect.facebook.net/'",  # another host
        "u='//connect.facebook.network/'",
        "u='//chat.example/'",  # *.chat.example: the subdomains only, as for URLs
    ):
        page = f"<script>{text}</script>"
        assert rewrite(page) == page, text


def test_signatures_match_case_sensitively_as_code_does() -> None:
    page = "<script>FBQ('INIT', 1); myChat.Boot()</script>"
    assert rewrite(page) == page
    assert 'data-consent-service="chat"' in rewrite("<script>window.Chat.boot({id: 1})</script>")


def test_the_first_denied_service_in_the_text_labels_the_script() -> None:
    out = rewrite("<script>Chat.boot(); fbq('init', 1)</script>")
    assert 'data-consent-service="chat"' in out
    # the allowed one's signature first, a denied one's after it: still the denied one's
    out = rewrite("<script>fbq('init', 1); Chat.boot()</script>", decided("analytics"))
    assert 'data-consent-service="chat"' not in out and 'data-consent-service="meta"' in out
    page = "<script>gtm.start; Chat.boot()</script>"
    out = rewrite(page, decided("analytics"), config(inline_scripts="nonce"))
    assert 'data-consent-service="chat"' in out and "nonce=\"MARK\">" in out


# --- hostile markup ------------------------------------------------------------------------------------


def test_a_reflected_snippet_loses_its_own_nonce_and_labels() -> None:
    """Markup reflected into the page that carries a signature is neutralised like the site's own,
    and whatever it brought to pass for the gate's (a nonce, data-consent-* labels, a reload, a
    src to restore) is dropped: its labels are the gate's. It is not the vendor's snippet, so it
    gets no mark either (gate/snippets.py): consent never activates it."""
    page = (
        '<script nonce="guess" data-consent-category="necessary" data-consent-service="site" '
        'data-consent-src="https://evil.example/x.js" data-consent-reload data-consent-type=module>'
        "fbq('init', 1); steal()</script>"
    )
    [tag] = script_tags(rewrite(page))
    names = ["type", "data-consent-category", "data-consent-service", "data-consent-reload"]
    names.append("data-consent-pin")
    assert re.findall(r"[\w-]+(?==)", tag) == names
    assert 'data-consent-service="meta"' in tag and "nonce" not in tag and "evil" not in tag


def test_markup_forged_as_already_neutralised_is_left_unmarked() -> None:
    """A reflected `type="text/plain"` script with labels runs nothing and gets no mark: the browser
    script activates only what carries the page's nonce."""
    page = (
        '<script type="text/plain" data-consent-category="marketing" data-consent-service="meta">'
        "fbq('init', 1)</script>"
    )
    assert rewrite(page) == page


def test_an_svg_script_and_one_in_noscript_markup_are_not_held() -> None:
    svg = "<svg><script>fbq('init', 1)</script></svg>"
    assert rewrite(svg) == svg  # SVG content: not raw text (not a snippet form; see inline.py)


# --- streaming -----------------------------------------------------------------------------------------

STREAM_PAGES = [
    GTM,
    META,
    "<p>a</p><script>var x = 1;\r\nfbq('init',\r\n 1)</script><p>b</p>",
    "<script><!-- fbq('init', 1) <script> </script> still the same script --></script><p>after</p>",
    "<script><!-- a <script>x</script> b --> </script><script>Chat.boot()</script>",
    "<script>if (a < b && c) { u = 'connect.facebook.net' }</scr" + "ipt><p>x",
    "<script>let s = '</scrip' + 't>'; fbq('init')</script >",
    "<script>fbq('init', 1)",  # the input ends in the script
    "<p>end<script>",
]


@pytest.mark.parametrize("page", STREAM_PAGES)
@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64])
def test_any_chunking_gives_the_same_output(page: str, chunk: int) -> None:
    """A signature split across chunks (one byte per chunk), `</script` split, the escaped and
    double-escaped script data states: the same output as the whole body at once."""
    assert rewrite(page, chunk=chunk) == rewrite(page)


def test_the_script_data_states_decide_where_the_script_ends() -> None:
    """`<!--<script>` makes `</script>` inside it part of the text: the signature after it is in
    the same script, which is neutralised whole."""
    out = rewrite("<script><!--<script></script> fbq('init', 1) --></script><p>after</p>")
    assert out.count("<script") == 2 and 'type="text/plain"' in out and out.endswith("</script><p>after</p>")


def test_a_page_in_a_legacy_charset_is_matched_on_its_bytes() -> None:
    latin = "<p>Caf\u00e9</p><script>var s = '\u00e5\u00e4\u00f6'; fbq('init', 1)</script>"
    japanese = "<p>\u65e5\u672c</p><script>var s = '\u8868\u30bd'; fbq('init', 1)</script>"
    for page, charset in ((latin, "windows-1252"), (latin, "iso-8859-15"), (japanese, "shift_jis")):
        out = rewrite(page, charset=charset, chunk=5)
        assert 'data-consent-service="meta"' in out and out.endswith(page[page.index("var s") :]), charset


def test_a_script_is_sent_as_soon_as_its_end_is_read() -> None:
    gate = ResponseGate(config(), own_cookie_names=OWN)
    plan = gate.plan(UNDECIDED)
    rw = HtmlRewriter(plan.hosts, None, mark=lambda: "MARK", inline=plan.inline)
    assert rw.feed(b"<p>before</p><script>var a = 1;") == b"<p>before</p>"  # the script: held
    assert rw.feed(b" fbq('init')") == b""
    out = rw.feed(b"</script><p>after</p>")
    assert out.startswith(b'<script type="text/plain"') and b"<p>after</p>" in out


def test_past_the_hold_a_script_is_decided_on_what_was_held_and_streams() -> None:
    """MAX_INLINE bytes of text at most are held: a denied signature in them neutralises the
    script; without one it streams as written and gets no nonce, even with an allowed service's
    signature in it (a script too long to read is vouched for by nobody)."""
    filler = "/*" + "x" * 2 * MAX_INLINE + "*/"
    gate = ResponseGate(config(), own_cookie_names=OWN)
    plan = gate.plan(decided("marketing"))
    rw = HtmlRewriter(plan.hosts, None, mark=lambda: "MARK", inline=plan.inline)
    head = b"<script>fbq('init');" + filler.encode()
    sent = rw.feed(head)
    assert sent.startswith(b"<script>") and len(sent) > MAX_INLINE  # no nonce, and not held to the end
    rest = rw.feed(b"Chat.boot()</script>") + rw.finish()  # too late to decide
    assert sent + rest == head + b"Chat.boot()</script>"
    long = "<script>Chat.boot();" + filler + "</script>"
    assert rewrite(long, decided("marketing"), chunk=64 * 1024) == long
    assert 'data-consent-service="chat"' in rewrite(long, chunk=64 * 1024)
    # a whole body is read whole: the script ends in it, and is decided on all of its text (a
    # pinned one: a signature alone vouches for no script, gate/snippets.py)
    chat = {**SERVICES[3], "inline_sha256": [pin(long[8:-9].encode())]}
    pinned = config([*SERVICES[:3], chat])
    assert rewrite(long, decided("marketing"), pinned).startswith(f"<script {MARK}>")


def test_matching_is_linear_in_the_scripts_length() -> None:
    """A script of a megabyte without a signature is one search; hostile text made of near misses
    of every signature and host costs no more per byte than a larger plain one."""
    near = "googletagmanager.co fbq 'gtm.j connect.facebook.ne Chat.boo www.googletagmanager.com".replace(
        "www.googletagmanager.com", "xwww.googletagmanager.comx"
    )

    def cost(text: str) -> float:
        page = f"<script>{text}</script>"
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            out = rewrite(page)
            best = min(best, time.perf_counter() - t)
        assert out == page
        return best

    small, large = cost(near * 1000), cost(near * 8000)
    assert large < 8 * small * 3, (small, large)  # linear, with room for a noisy machine
    assert cost("a = b + c;\n" * 100_000) < 2.0  # a megabyte


# --- whole pages, nested documents ---------------------------------------------------------------------


def test_a_page_recorded_with_holes_replays_each_responses_nonce() -> None:
    """pages.py: the third response of the same body is filled in, not rewritten; it is what a fresh
    rewrite with that response's nonce gives, for neutralised and nonced snippets alike."""
    PAGES.clear()
    SEEN.clear()
    gate = ResponseGate(config(), own_cookie_names=OWN)
    body = f"<!doctype html><html><head>{GTM}{META}</head><body><p>x</p></body></html>".encode()
    for state in (UNDECIDED, decided("analytics")):
        plan = gate.plan(state)
        outs = []
        for n in range(4):
            rw = HtmlRewriter(plan.hosts, None, mark=lambda n=n: f"n{n}", inline=plan.inline)  # type: ignore[misc]
            outs.append(rw.rewrite(body))
            fresh = HtmlRewriter(plan.hosts, None, mark=lambda n=n: f"n{n}", inline=plan.inline)  # type: ignore[misc]
            assert outs[-1] == fresh.feed(body) + fresh.finish()
        assert b'nonce="n3"' in outs[3] and b'nonce="n2"' not in outs[3]
    assert len(PAGES) == 2


def test_snippets_in_an_iframe_srcdoc_are_neutralised_too() -> None:
    page = "<iframe srcdoc=\"<script>fbq('init', 1)</script>\"></iframe>"
    out = rewrite(page)
    assert "type=&quot;text/plain&quot;" in out and "data-consent-service=&quot;meta&quot;" in out


def test_scripts_in_noscript_read_with_scripting_off_are_left_alone() -> None:
    page = "<noscript><script>fbq('init', 1)</script></noscript>"
    gate = ResponseGate(config(), own_cookie_names=OWN)
    plan = gate.plan(UNDECIDED)
    rw = HtmlRewriter(plan.hosts, None, mark=lambda: "MARK", inline=plan.inline, scripting=False)
    assert (rw.feed(page.encode()) + rw.finish()).decode() == page


# --- the reload rule -----------------------------------------------------------------------------------


def test_a_loader_whose_origins_this_page_refuses_asks_for_a_reload() -> None:
    """Inline and external alike; a service that is no loader never asks."""
    cfg = config([*SERVICES, {"name": "px", "category": "marketing", "origins": ["https://px.example"]}])
    out = rewrite(GTM + '<script src="https://connect.facebook.net/en_US/fbevents.js"></script>'
                  '<script src="https://px.example/p.js"></script><script>Chat.boot()</script>', cfg=cfg)
    gtm, meta, px, chat = script_tags(out)
    assert 'data-consent-reload=""' in gtm and 'data-consent-reload=""' in meta
    assert "reload" not in px and "reload" not in chat


def test_a_loader_whose_origins_are_all_in_script_src_needs_no_reload() -> None:
    """Self-hosted Matomo on a necessary origin, or on the site's own (`site_origins`), or under a
    granted wildcard: its children load on this page."""
    matomo = {"name": "matomo", "preset": "matomo", "category": "analytics"}
    snippet = "<script>_paq.push(['trackPageView'])</script>"
    necessary = {"name": "site", "category": "necessary", "origins": ["https://stats.example.com"]}
    on_necessary = config([necessary, {**matomo, "origins": ["https://stats.example.com"]}])
    on_self = config([{**matomo, "origins": ["https://www.example.com"]}], site_origins=["https://www.example.com"])
    wildcard = {"name": "cdn", "category": "necessary", "origins": ["https://*.example.com"]}
    under_wildcard = config([wildcard, {**matomo, "origins": ["https://stats.example.com"]}])
    no_origins = config([{**matomo, "origins": []}])
    elsewhere = config([{**matomo, "origins": ["https://stats.example.com"]}])
    for cfg in (on_necessary, on_self, under_wildcard, no_origins):
        [tag] = script_tags(rewrite(snippet, cfg=cfg))
        assert 'data-consent-service="matomo"' in tag and "reload" not in tag
    [tag] = script_tags(rewrite(snippet, cfg=elsewhere))
    assert 'data-consent-reload=""' in tag
    # another port is another origin
    other_port = config([wildcard, {**matomo, "origins": ["https://stats.example.com:8443"]}])
    assert 'data-consent-reload=""' in rewrite(snippet, cfg=other_port)


@pytest.mark.parametrize("csp", ["report-only", "off"])
def test_no_reload_where_nothing_refuses_the_children(csp: str) -> None:
    out = rewrite(GTM + META, cfg=config(csp=csp))
    assert out.count('type="text/plain"') == 2 and "reload" not in out


# --- through the gate ----------------------------------------------------------------------------------


def app(html: str) -> Starlette:
    async def page(request):  # type: ignore[no-untyped-def]
        return HTMLResponse(html)

    return Starlette(routes=[Route("/", page)])


PAGE = f"<!doctype html><html><head>{GTM}</head><body><p>hi</p><script>let own = 1</script></body></html>"


@pytest.mark.parametrize("csp", ["enforce", "report-only", "off"])
async def test_through_the_gate_in_every_csp_mode(csp: str) -> None:
    gate = ResponseGate(config(csp=csp), own_cookie_names=OWN)
    async with client(gated(app(PAGE), gate, UNDECIDED, inject=None)) as c:
        before = (await c.get("/")).text
    async with client(gated(app(PAGE), gate, decided("analytics"), inject=None)) as c:
        after = (await c.get("/")).text
    assert 'type="text/plain" data-consent-category="analytics" data-consent-service="gtm"' in before
    assert ('data-consent-reload=""' in before) == (csp == "enforce")
    assert (f'<script nonce="{NONCE}">(function(w,d' in after) == (csp != "off")
    assert "<script>let own = 1</script>" in before and "<script>let own = 1</script>" in after


async def test_with_rewrite_html_off_snippets_pass_as_written() -> None:
    """rewrite_html = false: the app writes the neutralised markup itself (with csp_nonce); the
    gate neither holds nor nonces a script."""
    gate = ResponseGate(config(rewrite_html=False), own_cookie_names=OWN)
    for state in (UNDECIDED, decided("analytics")):
        async with client(gated(app(PAGE), gate, state, inject=None)) as c:
            assert (await c.get("/")).text == PAGE


def test_a_state_with_nothing_to_hold_or_nonce_reads_no_script() -> None:
    """The fast path: without a policy, in a state where nothing is denied, no inline rules at all
    (the rewriter then treats scripts as before)."""
    gate = ResponseGate(config(csp="off"), own_cookie_names=OWN)
    assert gate.plan(decided("analytics", "marketing")).inline is None
    assert gate.plan(UNDECIDED).inline is not None


# --- the policy ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("state", [UNDECIDED, decided(), decided("analytics", "marketing")])
def test_no_policy_ever_carries_strict_dynamic(state: Consent) -> None:
    """'strict-dynamic' would make browsers ignore the host lists: a granted loader could load any
    vendor, a nonced script anything. Ours never has it, nor does ours merged with an app's that does."""
    gate = ResponseGate(config(), own_cookie_names=OWN)
    plan = gate.plan(state)
    ours = gate.csp(plan, [], root_path="", self_origin=None, secure=True, nonce=NONCE)
    app_policy = b"script-src 'strict-dynamic' 'nonce-AppNonce' https: 'unsafe-inline'; default-src *"
    merged = gate.csp(plan, [app_policy], root_path="", self_origin=None, secure=True, nonce=NONCE)
    for value in (ours, merged):
        assert b"strict-dynamic" not in value
    [policy] = parse_policies(merged.decode())
    assert "'strict-dynamic'" not in serialize(merge(policy, policy, self_origin=None))
