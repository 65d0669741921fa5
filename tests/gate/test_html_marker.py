"""The marker attribute `data-consent-banner` (a page that already carries our snippet gets no second
one) counts only where an HTML5 parser makes it an attribute of an HTML element: as the name of an
attribute of a start tag read in HTML content. Text that spells it (a search term reflected into a
page, however well the site escapes it), an attribute value, a comment, raw text or SVG/MathML
content no longer takes the banner and its script out of the page (issue 12, red team)."""

from __future__ import annotations

import html
from typing import Any

import html5lib
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from consent_banner.gate import ResponseGate
from consent_banner.gate.html import HtmlRewriter

from .conftest import MARKER_BODY, MARKER_HEAD, NONCE, OWN, client, consent, gated, make_config

HTML = "{http://www.w3.org/1999/xhtml}"
HEAD = MARKER_HEAD.format(nonce=NONCE)
BODY = MARKER_BODY.format(lang="en")
PX = "https://px.adnet.example/p"  # denied when nothing is granted
SHELL = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Search</title>{head}</head>'
    "<body><main><h1>Search</h1>{reflected}</main></body></html>"
)
OURS = f'<script src="/_consent/consent.js" defer nonce="{NONCE}" data-consent-banner></script>'
SIZES = [None, 1, 3, 7, 64]


def rewrite(page: str, size: int | None = None, *, hosts: bool = False) -> str:
    plan = ResponseGate(make_config(), own_cookie_names=OWN).plan(consent()) if hosts else None
    rw = HtmlRewriter(plan.hosts if plan else None, lambda lang: (HEAD, MARKER_BODY.format(lang=lang)))
    data = page.encode()
    step = size or len(data)
    out = [rw.feed(data[i : i + step]) for i in range(0, len(data), step)]
    return (b"".join(out) + rw.finish()).decode()


TEXT = [
    "data-consent-banner",  # a search term, plain
    html.escape('<script data-consent-banner src="/x.js">'),  # the same, escaped as a site should
    "&lt;div data-consent-banner&gt;",
    '<input name="q" value="data-consent-banner">',  # in an attribute value
    "<a href=/s?q=data-consent-banner title='x data-consent-banner'>again</a>",
    '<p class="r" data-q="<b data-consent-banner>">x</p>',
    '<p title=" data-consent-banner ">x</p><b> data-consent-banner </b>',  # where a name could stand
    "<p x\"data-consent-banner>x</p>",  # part of a longer name
    "<!-- data-consent-banner -->",  # in a comment
    "<!-- <div data-consent-banner> -->",
    "<textarea><div data-consent-banner></div></textarea>",  # raw text (RCDATA, RAWTEXT, script)
    "<title><div data-consent-banner></title>",
    "<style>/* <div data-consent-banner> */</style>",
    "<xmp><b data-consent-banner></xmp>",
    '<script>var q = "<div data-consent-banner>";</script>',
    "<noscript><div data-consent-banner></div></noscript>",  # raw text with JavaScript on
    "<svg><g data-consent-banner></g></svg>",  # foreign content
    '<svg class="icon"><path d="M0 0" data-consent-banner/></svg>',
    "<math><mi><mglyph data-consent-banner/></mi></math>",
    "</p data-consent-banner>",  # an end tag has no attributes
    "<data-consent-banner>x</data-consent-banner>",  # a tag name
    "<div data-consent-banner-x>x</div>",  # another attribute name
    "<div data-consent-banner",  # a tag the input ends in: the browser drops it
]


@pytest.mark.parametrize("reflected", TEXT)
@pytest.mark.parametrize("size", SIZES)
def test_the_marker_spelled_anywhere_but_an_attribute_name_leaves_the_banner_in(
    reflected: str, size: int | None
) -> None:
    page = SHELL.format(head="", reflected=reflected)
    out = rewrite(page, size)
    assert out.count(HEAD) == 1 and out.count(BODY) == 1
    tree = html5lib.parse(out, treebuilder="etree", scripting=True)
    [div] = [e for e in tree.iter() if e.attrib.get("data-consent-banner") == "body"]
    assert div.tag == HTML + "div"


@pytest.mark.parametrize(
    "head",
    [
        "<title>data-consent-banner</title>",
        '<meta name="q" content="data-consent-banner">',
        "<!-- data-consent-banner -->",
        '<script>var q = "<b data-consent-banner>";</script>',
    ],
)
def test_the_marker_spelled_in_the_head_leaves_the_head_snippet_in(head: str) -> None:
    page = SHELL.format(head=head, reflected="x")
    out = rewrite(page)
    assert out.count(HEAD) == 1 and out.count(BODY) == 1


REAL = [
    OURS,  # our own script tag, as the gate injects it
    '<div data-consent-banner="body">banner</div>',
    "<div DATA-Consent-Banner>x</div>",  # attribute names are case-insensitive
    "<div data-consent-banner=body>x</div>",
    "<div/data-consent-banner>x</div>",
    '<div class="a"\ndata-consent-banner\tid="b">x</div>',
    '<span class="card" data-id="1" data-consent-banner="">x</span>',  # a tag the fast path skips
    '<img src="/logo.png" alt="logo" data-consent-banner>',  # a fetching tag with plain values
    '<p title="data-consent-banner" data-consent-banner>x</p>',  # the value first, then the name
    '<p title=" data-consent-banner " data-consent-banner>x</p>',
    '<p title="a"data-consent-banner>x</p>',  # right after a quoted value: a new attribute
    "<svg><foreignObject><div data-consent-banner></div></foreignObject></svg>",  # HTML in SVG
    "<svg><p data-consent-banner>x</p>",  # a <p> leaves SVG
    "<math><mi><b data-consent-banner>x</b></mi></math>",
    "<template><div data-consent-banner></div></template>",
]


@pytest.mark.parametrize("reflected", REAL)
@pytest.mark.parametrize("size", SIZES)
def test_the_marker_as_an_attribute_of_an_html_element_still_keeps_the_body_snippet_out(
    reflected: str, size: int | None
) -> None:
    page = SHELL.format(head="", reflected=reflected)
    out = rewrite(page, size)
    assert out.count(BODY) == 0 and out.count(HEAD) == 1  # the marker is in the body: after the head
    assert out == rewrite(page, size, hosts=True)  # nothing here to neutralise: the same with hosts


@pytest.mark.parametrize("cut", range(1, len(OURS)))
def test_the_marker_attribute_cut_by_a_chunk_boundary_anywhere_still_counts(cut: int) -> None:
    page = SHELL.format(head="", reflected=OURS)
    data = page.encode()
    at = data.index(OURS.encode()) + cut
    rw = HtmlRewriter(None, lambda lang: (HEAD, BODY))
    out = (rw.feed(data[:at]) + rw.feed(data[at:]) + rw.finish()).decode()
    assert out == page.replace("<head>", "<head>" + HEAD)


def test_the_marker_after_denied_trackers_and_repeated_tags_still_counts() -> None:
    """Past the fast path's other stops: a denied host as written (where only inert tags are
    skipped) and tags rewritten before (replayed from the page's memo)."""
    tracker = f'<img src="{PX}"><div class="x">{PX}</div>'
    page = SHELL.format(head="", reflected=tracker * 3 + '<div class="y" data-consent-banner>x</div>')
    out = rewrite(page, hosts=True)
    assert BODY not in out and out.count("data-consent-src") == 3


def test_the_marker_in_the_head_keeps_both_snippets_out() -> None:
    page = SHELL.format(head=HEAD, reflected="x")
    assert rewrite(page) == page
    for tag in ("<html data-consent-banner>", "<html><head data-consent-banner>"):
        page = f"<!doctype html>{tag}<title>t</title></head><body>x</body></html>"
        assert rewrite(page) == page


def test_a_tag_ended_only_by_the_snippets_closer_does_not_count() -> None:
    """The input ends inside a tag that holds the marker: the browser drops that tag, so the snippet
    goes at the end, after what ends the tag (which then holds the marker, in our output only)."""
    page = "<body><p>x</p><div data-consent-banner"
    assert rewrite(page) == HEAD + page + ">" + MARKER_BODY.format(lang=None)


# --- against a full HTML5 parser ---------------------------------------------------------------------
# No "</p>" or "</br>": html5lib 1.1 predates the rule that they leave SVG/MathML content (see
# test_html_differential.py). No table parts: the tree builder drops a <tr> outside a table, where
# the marker is read as the tokenizer reads it (reflected markup can carry a real one anyway).

_piece = st.sampled_from(
    [
        "<div", "<p", "<b", "<svg", "<g", "<desc", "<math", "<mi", " data-consent-banner",
        "data-consent-banner",
        " class=", "=", '"', "'", ">", "/", " ", "x", "&lt;", "<!--", "-->", "<textarea>", "</textarea>",
        "<script>", "</script>", "<style>", "</style>", "<title>", "</title>", "<noscript>", "</noscript>",
        "</svg>", "</desc>", "</math>", "</mi>", "<foreignObject>", "</foreignObject>", "</b>",
        "<html", "<head", "<body", "</body>", "<!", "</", "<?",
    ]
)


def _parser_sees_the_marker(page: str) -> bool:
    tree = html5lib.parse(page, treebuilder="etree", scripting=True)
    elements = (e for e in tree.iter() if isinstance(e.tag, str) and e.tag.startswith(HTML))
    return any("data-consent-banner" in e.attrib for e in elements)


@settings(max_examples=400, deadline=None)
@given(st.lists(_piece, max_size=30), st.integers(1, 16))
def test_the_marker_counts_exactly_where_html5lib_makes_it_an_attribute(pieces: list[str], size: int) -> None:
    page = "<body>x" + "".join(pieces)  # a document: a fragment gets no snippet wherever the marker is
    body = '<b id="cb">'  # a marker of its own would read as the page's in the parse of the output
    rw = HtmlRewriter(None, lambda lang: ("", body))
    data = page.encode()
    out = b"".join(rw.feed(data[i : i + size]) for i in range(0, len(data), size)) + rw.finish()
    assert (body.encode() not in out) == _parser_sees_the_marker(page)


# --- through the gate, over HTTP ---------------------------------------------------------------------


def _search_app(gate: ResponseGate, reflected: str) -> Any:
    async def search(request: Request) -> HTMLResponse:
        return HTMLResponse(SHELL.format(head="", reflected=reflected))

    return gated(Starlette(routes=[Route("/search", search)]), gate, consent())


@pytest.mark.parametrize("term", ["data-consent-banner", '<script data-consent-banner src="/x.js">'])
async def test_a_searched_marker_reflected_as_escaped_text_leaves_the_banner_live(
    gate: ResponseGate, term: str
) -> None:
    app = _search_app(gate, f"<p>Results for: {html.escape(term)}</p>")
    async with client(app) as c:
        r = await c.get("/search", params={"q": term})
    assert r.status_code == 200 and r.text.count(BODY) == 1 and r.text.count(HEAD) == 1
    tree = html5lib.parse(r.text, treebuilder="etree", scripting=True)
    [div] = [e for e in tree.iter() if e.attrib.get("data-consent-banner") == "body"]
    assert div.tag == HTML + "div"


async def test_a_page_that_carries_our_snippet_gets_no_second_one_over_http(gate: ResponseGate) -> None:
    app = _search_app(gate, '<div class="results">none</div>' + OURS)
    async with client(app) as c:
        r = await c.get("/search")
    assert r.status_code == 200 and BODY not in r.text and r.text.count("data-consent-banner") == 2
