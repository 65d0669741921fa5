"""The hot paths' caches attacked as the threat model's adversaries would (docs/threat-model.md):
a page replayed (gate/pages.py, gate/runs.py) must be byte for byte what a fresh rewrite gives, for
any body markup reflected into a page can make; one visitor's nonce, snippets or state never reach
another's response; and no cache grows past its bound under a flood of distinct inputs."""

from __future__ import annotations

import os
import re
import time
import tracemalloc

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consent_banner.banner import Banner
from consent_banner.consent import Consent
from consent_banner.gate import ResponseGate
from consent_banner.gate.hosts import Blocked
from consent_banner.gate.html import HtmlRewriter
from consent_banner.gate.pages import _HOLE, MAX_PAGES, PAGES, SEEN
from consent_banner.gate.runs import RUNS
from consent_banner.visitor import VISITS_BYTES

from ..conftest import make_app
from ..gate.conftest import OWN, consent, make_config
from ..test_banner import make_config as banner_config

GATE = ResponseGate(make_config(), own_cookie_names=OWN)
EXAMPLES = int(os.environ.get("REDTEAM_EXAMPLES", "300"))  # generated cases per property (more by hand)

# Pieces markup reflected into a page can bring: denied hosts (whole, or cut where a run or a chunk
# may end), the snippet's marker, what leaves the banner inert, nested documents, charsets, text that
# looks like a hole, and enough filler for the rewriter to cut runs.
PIECES = [
    '<img src="https://px.adnet.example/p">',
    "<img src=https://px.adnet",
    ".example/split>",
    '<iframe src="https://video.example.tv/e/1"></iframe>',
    '<script src="https://stats.example.net/a.js"></script>',
    '<p style="background:url(https://px.adnet.example/c)">x</p>',
    '<div data-consent-banner="x"></div>',
    "data-consent-banner",
    "<noscript><img src=https://px.adnet.example/n></noscript>",
    "<noscript>",
    "<template><img src=https://px.adnet.example/t>",
    "</template>",
    "<svg><desc><img src=https://px.adnet.example/s>",
    "<svg><image href=https://px.adnet.example/i /></svg>",
    "<math><mi>",
    "<textarea>",
    "</textarea>",
    "<!--",
    "-->",
    "<script>if (a<b) {}",
    "</script>",
    "<title>",
    '<meta charset="windows-1252">',
    '<html lang="sv">',
    "<head>",
    "</head>",
    "<body>",
    "</body>",
    '<a title="\n<img src=https://px.adnet.example/q>">',
    "cbhole",
    "cbhole0123456789abcdef0123456789abcdefm.",
    "\u00e9\u00e5",
    "&amp;",
    "<p>text</p>\n",
    "<",
    '"',
    "\n",
]
FILLER = "<p>" + "plain words " * 40 + "</p>\n"


def rewriter(n: int, *granted: str, charset: str = "utf-8") -> HtmlRewriter:
    """A rewriter as the middleware makes one for response `n`: its own nonce, snippets, placeholders."""

    def inject(lang: str | None) -> tuple[str, str]:
        head = f'<script nonce="n{n}" data-consent-banner="head"></script>'
        return head, f"<div>banner {n} {lang} \u00e9</div>"

    def placeholder(blocked: Blocked, lang: str | None) -> str:
        return f'<div nonce="n{n}">{blocked.service} {lang} \u00e9</div>'

    return HtmlRewriter(
        GATE.plan(consent(*granted)).hosts, inject, charset=charset, placeholder=placeholder,
        mark=lambda: f"nonce{n}",
    )


def fresh(n: int, data: bytes, *granted: str, charset: str = "utf-8") -> bytes:
    rw = rewriter(n, *granted, charset=charset)
    return rw.feed(data) + rw.finish()


bodies = st.lists(
    st.one_of(st.sampled_from(PIECES), st.integers(1, 12).map(lambda k: FILLER * k)), max_size=30
).map("".join)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies, st.sampled_from(["utf-8", "windows-1252"]), st.sampled_from([(), ("media",)]))
def test_a_replayed_page_is_byte_for_byte_a_fresh_rewrite(
    body: str, charset: str, granted: tuple[str, ...]
) -> None:
    """Seen, recorded, then replayed: the third response of a body is what a fresh rewrite gives it,
    with that response's own nonce, snippets and placeholders, and no hole shown."""
    PAGES.clear()
    SEEN.clear()
    data = body.encode(charset, "xmlcharrefreplace")
    for n in range(3):
        out = rewriter(n, *granted, charset=charset).rewrite(data)
        assert out == fresh(n, data, *granted, charset=charset)
        assert _HOLE.encode() not in out


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies, st.lists(st.integers(1, 9000), max_size=8))
def test_remembered_runs_and_tags_change_no_streamed_rewrite(body: str, cuts: list[int]) -> None:
    """The same body streamed in the same chunks, with the runs and tags other responses left in
    memory (runs ending at a chunk's end, a denied host cut there) and with none: the same bytes."""
    data = body.encode()
    at = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    chunks = [data[a:b] for a, b in zip(at, at[1:], strict=False)]

    def streamed() -> bytes:
        rw = rewriter(0)
        return b"".join(rw.feed(chunk) for chunk in chunks) + rw.finish()

    RUNS.clear()
    GATE.plan(consent()).hosts.memo.clear()
    cold = streamed()
    for n in range(3):
        rewriter(n).rewrite(data)
        rewriter(n).rewrite(data[: len(data) // 2])
    assert streamed() == cold


def test_a_replay_carries_only_its_own_responses_values() -> None:
    """Two visitors in one consent state, the page replayed for both: each gets its nonce alone."""
    PAGES.clear()
    SEEN.clear()
    data = ('<html lang="sv"><body>' + PIECES[0] + PIECES[3] + FILLER * 20 + "</body>").encode()
    for n in range(6):
        out = rewriter(n).rewrite(data)
        others = [m for m in range(6) if m != n]
        assert f"nonce{n}".encode() in out and f"n{n}".encode() in out
        assert not any(f"nonce{m}".encode() in out or f'"n{m}"'.encode() in out for m in others)


def test_a_flood_of_distinct_small_pages_stays_within_the_pages_budget() -> None:
    """A page that reflects a query parameter, requested twice per value with 30,000 values: the
    pages remembered hold their bodies, their rewrites and what each entry costs beside them (the
    key, the template, its parts), within MAX_PAGES, never many times that."""
    PAGES.clear()
    SEEN.clear()
    hosts = GATE.plan(consent()).hosts
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for q in range(30_000):
            data = f"<p>{q}</p>".encode()
            for _ in range(2):
                HtmlRewriter(hosts, None).rewrite(data)
        grown, kept = tracemalloc.get_traced_memory()[0] - before, len(PAGES)
    finally:
        tracemalloc.stop()
    PAGES.clear()
    SEEN.clear()
    # Before the fix an entry weighed its bytes alone (about 20 here) and cost 400: 12 MB for these
    # 30,000 pages, 75 MB once the budget of 4 MB "weight" was full.
    assert grown < MAX_PAGES + 1024 * 1024, f"{grown / 1e6:.1f} MB kept by {kept} pages"



# --- visitor.Visitors: one cache of Cookie headers --------------------------------------------------------


async def test_a_consent_cached_while_valid_stops_deciding_when_it_expires(config, monkeypatch) -> None:
    """The header was remembered with its verified consent; once the lifetime is over it decides
    nothing, with or without Sec-GPC (whose reading is remembered with it), and never again."""
    now = [1_800_000_000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    app = make_app(config)
    granted = frozenset({"analytics"})
    value = app.codec.encode(Consent(id="c" * 22, granted=granted, revision=config.policy_revision))
    header = {"cookie": f"sessionid=1; consent={value}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        for gpc in ({}, {"sec-gpc": "1"}):
            assert (await c.get("/whoami", headers={**header, **gpc})).json()["analytics"]
        now[0] += app.codec.lifetime + 1
        for _ in range(2):
            for gpc in ({}, {"sec-gpc": "1"}):
                assert not (await c.get("/whoami", headers={**header, **gpc})).json()["decided"]
    await app.close()


async def test_a_flood_of_distinct_cookie_headers_with_both_gpc_signals_stays_within_budget(config) -> None:
    """One valid consent cookie (anyone can get one) beside distinct denied tracker cookies, each
    header sent with and without Sec-GPC: what the cache holds per header (its reading, and per
    signal the consent as it applies and the cookies it denies) stays within VISITS_BYTES."""
    app = make_app(config)
    value = app.codec.encode(Consent(id="c" * 22, granted=frozenset(), revision=config.policy_revision))

    def header(n: int) -> str:
        return "; ".join([*(f"_st_id.{n}_{k}=1" for k in range(45)), f"consent={value}"])

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        for n in range(20):  # warm up: first-use allocations are not growth
            await c.get("/whoami", headers={"cookie": header(n)})
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for n in range(20, 620):
                for gpc in ({}, {"sec-gpc": "1"}):
                    assert (await c.get("/whoami", headers={"cookie": header(n), **gpc})).status_code == 200
            peak = tracemalloc.get_traced_memory()[1] - before
        finally:
            tracemalloc.stop()
    await app.close()
    # Before the fix the readings per signal were not weighed: 5.7 MB at the 4 MB budget.
    assert peak < VISITS_BYTES + 512 * 1024, f"{peak / 1e6:.1f} MB at the peak"


# --- banner.py + splice.py: rendered once per language and state, per-response values spliced in ------------


BANNER = Banner(banner_config(gpc_denies=["analytics", "marketing"]), prefix="/_consent")
FRESH = Banner(BANNER.config, prefix="/_consent")
SPLICE_MARKERS = list(BANNER._markers.markers)
# Values a visitor controls (the path returned to) or that reach the markup: quotes, markup, the
# splice markers themselves, references, a marker cut in two.
values = st.one_of(
    st.text(max_size=40),
    st.sampled_from([*SPLICE_MARKERS, SPLICE_MARKERS[0][:9], '"><b>x</b>', "&amp;", "'", "{{ t }}"]),
    st.lists(st.sampled_from([*SPLICE_MARKERS, '"', "<", "&", "x"]), max_size=6).map("".join),
)


def visitor(decided: bool, granted: set[str], services: dict[str, bool], gpc: bool, cid: str) -> Consent:
    c = Consent(id=cid, granted=frozenset(granted), services=services, revision="2026-11-01", decided_at=1)
    c = c if decided else Consent()
    return c.with_gpc(BANNER.config.gpc_denied) if gpc else c


consents = st.builds(
    visitor,
    st.booleans(),
    st.sets(st.sampled_from(["analytics", "marketing"])),
    st.dictionaries(st.just("stats"), st.booleans()),
    st.booleans(),
    st.sampled_from(["visitor-a", "visitor-b", SPLICE_MARKERS[3]]),
)


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.lists(st.tuples(consents, st.sampled_from(["en", "sv"]), values, values, values), max_size=8))
def test_a_spliced_banner_is_a_fresh_render_for_every_visitor(
    responses: list[tuple[Consent, str, str, str, str]],
) -> None:
    """Visitors in any order, sharing what is remembered: each one's banner is what Jinja2 renders
    from their own consent, token, return path and form id, whatever those hold (the markers too)."""
    for consent_, language, token, return_to, form_id in responses:
        expected = FRESH._render(consent_, language, token, return_to, form_id, FRESH._state(consent_))
        assert BANNER._fragment(consent_, language, token, return_to, form_id) == expected


async def test_visitors_served_a_replayed_page_each_get_their_own_nonce_token_and_language(config) -> None:
    """Over the middleware: a page without `lang` served again and again to a Swedish and an English
    visitor (replayed from the third response on): each response's nonce is its policy's, its form
    token its own, its banner in its visitor's language, and nothing of the other's is in it."""
    PAGES.clear()
    SEEN.clear()
    app = make_app(config)
    seen: list[tuple[str, str, str]] = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        for _ in range(4):
            for language in ("sv", "en"):
                c.cookies.clear()
                r = await c.get("/plain", headers={"accept-language": language})
                [nonce] = re.findall(r"'nonce-([^']+)'", r.headers["content-security-policy"])
                [token] = set(re.findall(r'name="csrf" value="([^"]+)"', r.text))
                assert re.search(rf'data-lang="{language}"', r.text)
                assert r.text.count(f'nonce="{nonce}"') >= 2
                assert not any(n in r.text or t in r.text for n, t, _ in seen)
                seen.append((nonce, token, language))
    await app.close()
    assert PAGES, "the page was replayed"


def test_a_stale_cookie_sent_again_and_again_does_not_empty_the_cache_for_everyone(config) -> None:
    """A header whose consent does not verify is read again (and remembered again) on every request:
    replacing its entry must not add its weight again, or one client repeating an expired cookie
    empties the cache of every other visitor every few thousand requests."""
    app = make_app(config)
    good = app.codec.encode(Consent(id="c" * 22, granted=frozenset(), revision=config.policy_revision))
    first = app.visitors.visit(f"consent={good}".encode(), secure=False)
    stale = f"sessionid=1; consent={good[:-2]}{'BB' if good.endswith('AA') else 'AA'}".encode()
    for _ in range(10_000):
        assert not app.visitors.visit(stale, secure=False).consent.decided
    assert app.visitors.visit(f"consent={good}".encode(), secure=False) is first
