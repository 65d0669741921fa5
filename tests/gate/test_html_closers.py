"""Markup reflected into a page that leaves something open where the body-end snippet goes (issue 12,
red team finding 2): the rewriter closes it first, so that the banner and the nonce-carrying script
are live HTML in the body, never text, a comment, template content or SVG/MathML."""

from __future__ import annotations

import html5lib
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from consent_banner.gate import ResponseGate
from consent_banner.gate.html import HtmlRewriter

from .conftest import MARKER_BODY, OWN, client, consent, gated, make_config

PX = "https://px.adnet.example/p"  # denied when only necessary is granted
HTML = "{http://www.w3.org/1999/xhtml}"
SHELL = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Search</title></head>'
    "<body><main><h1>Search</h1><p>Results for: {reflected}</p></main></body></html>"
)
BODY = '<div id="cb-banner">Choose</div><script src="/c.js" nonce="N" data-consent-banner></script>'
OPENERS = [
    "<template>",
    "<template><template><p>",
    "<textarea>",
    "<title>",
    "<xmp>",
    "<style>",
    "<iframe>",
    "<noembed>",
    "<noframes>",
    "<noscript>",
    "<noscript><textarea>",
    "<noscript><template><svg><desc><b>",
    "<!--",
    "<!--x--",
    "<!--x--!",
    "<!-",
    "<!doctype",
    "<?php",
    "</3",
    "<script>",
    "<script><!--",
    "<script><!--<script>",
    "<script><!--<script></script",
    "<svg>",
    "<svg><g><g>",
    "<svg><desc>",
    "<svg><title><b><i>",
    "<svg><foreignObject><div><span>",
    "<svg><![CDATA[",
    "<svg><template>",
    "<math><mi>",
    "<math><mtext><svg><desc>",
    "<math><annotation-xml encoding=text/html><p>",
    "<template><svg><desc><b>",
    "<svg><desc><template><textarea>",
    "<svg><desc><div><template><math><mi>",
    '<div title="x">a</div><template>',
    '<p title="',
    "<p title='",
    "<p title=x",
    "<p <",
    "<textarea title='",
    "<svg><desc title=x",
    "</textarea",
]


def rewrite(page: str, size: int | None = None) -> str:
    rw = HtmlRewriter(None, lambda lang: ("", BODY))
    data = page.encode()
    step = size or len(data)
    out = [rw.feed(data[i : i + step]) for i in range(0, len(data), step)]
    return (b"".join(out) + rw.finish()).decode()


def live_in_body(markup: str, scripting: bool) -> bool:
    """Whether html5lib puts the snippet's script and banner in the body as HTML elements, with only
    HTML elements other than <template> between them and the body."""
    tree = html5lib.parse(markup, treebuilder="etree", scripting=scripting)
    parents = {child: el for el in tree.iter() for child in el}
    found = [
        e for e in tree.iter()
        if e.tag == HTML + "script" and "data-consent-banner" in e.attrib or e.attrib.get("id") == "cb-banner"
    ]
    if len(found) != 2:
        return False
    for e in found:
        while e.tag != HTML + "body":
            if not e.tag.startswith(HTML) or e.tag == HTML + "template" or e not in parents:
                return False
            e = parents[e]
    return True


@pytest.mark.parametrize("opener", OPENERS)
@pytest.mark.parametrize("end", ["</body>", ""], ids=["body", "no-body"])
def test_what_is_left_open_is_closed_before_the_banner(opener: str, end: str) -> None:
    """The page's </body> is inside what the opener leaves open (then the snippet goes at the end),
    or is a real one inside a <template> or SVG/MathML: either way the script is live in the body,
    with JavaScript on and off, and the output does not depend on the chunks."""
    page = SHELL.format(reflected=opener).replace("</body>", end)
    out = rewrite(page)
    assert out.count(BODY) == 1
    assert live_in_body(out, scripting=True), out
    assert live_in_body(out, scripting=False), out
    assert all(rewrite(page, size) == out for size in (1, 2, 3, 7, 64))


@pytest.mark.parametrize(
    ("opener", "closers"),
    [
        ("<template>", "</template>"),
        ("<textarea>", "</textarea>"),
        ("<!--", "-->"),
        ("<noscript>", "</noscript>"),
        ("<noscript><xmp>", "</xmp></noscript>"),
        ("<script><!--<script>", "--></script>"),
        ("<svg><desc>", "</desc></svg>"),
        ("<svg><desc><template><math><mi>", "</template></desc></svg>"),
        ("<textarea title='", "'></textarea>"),
    ],
)
def test_the_closers_are_only_what_is_open(opener: str, closers: str) -> None:
    """Nothing but the end of what is open is added, right before the snippet."""
    page = SHELL.format(reflected=opener)
    assert closers + BODY in rewrite(page)


def test_an_ordinary_page_gets_no_closers() -> None:
    page = SHELL.format(reflected="<template><p>t</p></template><svg><desc>d</desc></svg><!-- c -->")
    assert rewrite(page) == page.replace("</body>", BODY + "</body>")


def test_plaintext_cannot_be_closed_so_the_snippet_is_left_out() -> None:
    """Nothing ends <plaintext>: the snippet would be text there (its nonce shown on the page)."""
    page = SHELL.format(reflected="<plaintext>")
    assert rewrite(page) == page


def test_a_template_that_rewriting_changed_is_still_counted_when_it_repeats() -> None:
    """A <template> tag rewritten once is not replayed from the page's memo of rewritten tags, which
    would skip counting it."""
    hosts = ResponseGate(make_config(), own_cookie_names=OWN).plan(consent("necessary")).hosts
    tag = f'<template style="background:url({PX})">'
    page = SHELL.format(reflected=tag + "</template>" + tag)
    rw = HtmlRewriter(hosts, lambda lang: ("", BODY))
    out = (rw.feed(page.encode()) + rw.finish()).decode()
    assert out.endswith("</template>" + BODY + "</body></html>") and PX not in out


@pytest.mark.parametrize("opener", ["<textarea>", "<!--", "<noscript>", "<xmp>"])
async def test_a_gated_response_closes_what_the_reflection_left_open(gate: ResponseGate, opener: str) -> None:
    """The same over HTTP, through the response gate: the banner snippet is live in the body."""
    body = SHELL.format(reflected=opener)

    async def endpoint(request: Request) -> HTMLResponse:
        return HTMLResponse(body)

    app = gated(Starlette(routes=[Route("/", endpoint)]), gate, consent())
    async with client(app) as c:
        r = await c.get("/")
    assert r.status_code == 200 and r.text.count(MARKER_BODY.format(lang="en")) == 1
    tree = html5lib.parse(r.text, treebuilder="etree", scripting=True)
    [div] = [e for e in tree.iter() if e.attrib.get("data-consent-banner") == "body"]
    assert div.tag == HTML + "div"
