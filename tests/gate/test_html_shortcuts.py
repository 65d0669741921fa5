"""The rewriter's shortcuts (bench/bench_gate.py measures what they save) read markup as its full
tokenizer does: tags in the usual form skipped in one step, plain SVG/MathML tags followed by name,
tags rewritten once and remembered (per page, and per consent state without the page's mark).
Each case is markup where a shortcut that read it wrongly would let a denied fetch through or
change the page; html5lib parses input and output."""

from __future__ import annotations

import pytest

from consent_banner.gate import ResponseGate
from consent_banner.gate.html import MAX_DEPTH, HtmlRewriter

from .conftest import NONCE, OWN, client, consent, gated, make_config
from .test_html_differential import check, denied_urls, parse

PX = "https://px.adnet.example/p"
TRACKER = f'<img src="{PX}">'


@pytest.mark.parametrize(
    "tag",
    [
        # where the tag ends decides whether the <style> in it opens a style sheet
        '<div =">" <style>">',  # `=` starts a name: the quote is part of it, the first `>` ends the tag
        '<div a=b=">" <style>">',  # an unquoted value holding `="`
        '<div a="b"=">" <style>">',  # `=` right after a value starts a name
        '<div a/=">" <style>">',  # `/` then `=`: a name
        '<x"y=">" <style>">',  # quotes and `=` in a tag name
        '<div a ="<style>">',  # blanks around `=`: still a value
        '<div a= "<style>">',
        "<div title='<style>' class=\"c>d\">",
        '<p\ntitle="<style>"\tclass="y">',
    ],
)
@pytest.mark.parametrize("scripting", [True, False])
def test_tags_in_unusual_forms_end_where_the_tokenizer_ends_them(tag: str, scripting: bool) -> None:
    css = f'\n@import "{PX}";\n*{{background:url({PX})}}'  # a quote before it ends at the newline
    check(f"<!doctype html><body>{tag}{css}</style>{TRACKER}<p>{TRACKER}</p>", scripting)


@pytest.mark.parametrize("scripting", [True, False])
def test_svg_nested_past_the_followed_depth_then_html_fetches_nothing_denied(scripting: bool) -> None:
    markup = (
        "<!doctype html><body>"
        + "<svg>" * 10
        + '<g class="a"><path d="M0 0"/>' * (MAX_DEPTH + 50)
        + f'<image href="{PX}"/><p>{TRACKER}</p>'
    )
    check(markup, scripting)


@pytest.mark.parametrize("scripting", [True, False])
def test_plain_svg_tags_under_integration_points_and_style(scripting: bool) -> None:
    for markup in (
        f'<svg><g><foreignObject><g class="x"><img src="{PX}"></g></foreignObject></g></svg>',
        f'<svg><desc><g class="x">{TRACKER}</g></desc></svg>',
        f'<svg><g class="x"><style>@import "{PX}";</style></g></svg>',
        f'<svg><g class="x"><style><g class="y"/>@import "{PX}";</style></g></svg>',
        f'<math><mi><g class="x">{TRACKER}</g></mi></math>',
        f'<math><annotation-xml encoding="text/html"><svg class="x"><g>{TRACKER}</g></svg>'
        "</annotation-xml></math>",
        f'<svg><g class="x"><font color="red">{TRACKER}</font></g></svg>',
    ):
        check("<!doctype html><body>" + markup, scripting)


def rewrite(hosts: object, page: str, nonce: str, chunk: int) -> str:
    rw = HtmlRewriter(hosts, None, mark=lambda: nonce)  # type: ignore[arg-type]
    data = page.encode()
    out = [rw.feed(data[i : i + chunk]) for i in range(0, len(data), chunk)]
    return (b"".join(out) + rw.finish()).decode()


@pytest.mark.parametrize("chunk", [7, 4096, 1 << 20])
def test_a_tracker_repeated_down_a_page_is_neutralised_every_time(chunk: int) -> None:
    hosts = ResponseGate(make_config(), own_cookie_names=OWN).plan(consent()).hosts
    out = rewrite(hosts, "<!doctype html><body>" + f"{TRACKER}\n<p>x</p>" * 300, "N0nce0001", chunk)
    images = [e for e in parse(out, True) if e.tag.endswith("}img")]
    assert len(images) == 300
    assert all(e.attrib.get("nonce") == "N0nce0001" and not denied_urls(e) for e in images)


async def test_the_same_tracker_in_two_responses_carries_each_responses_nonce() -> None:
    """Rewritten tags are remembered per consent state: the mark is still each page's own."""
    gate = ResponseGate(make_config(), own_cookie_names=OWN)

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        headers = [(b"content-type", b"text/html")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": f"<p>{TRACKER}</p>".encode()})

    bodies = []
    for nonce in (NONCE, "OtherNonce98765432"):
        async with client(gated(app, gate, consent(), inject=None, nonce=nonce)) as c:
            bodies.append((await c.get("/")).text)
    assert f'nonce="{NONCE}"' in bodies[0] and "OtherNonce" not in bodies[0]
    assert 'nonce="OtherNonce98765432"' in bodies[1] and NONCE not in bodies[1]
    assert bodies[0].replace(NONCE, "OtherNonce98765432") == bodies[1]


def test_plain_svg_tags_are_followed_so_a_comment_in_svg_style_stays_a_comment() -> None:
    """Inside SVG a <style> holds markup and `<!--` starts a comment, as long as the rewriter knows
    which SVG elements are open (an end tag it cannot match makes it unsure, and then it rewrites
    comment text too)."""
    hosts = ResponseGate(make_config(), own_cookie_names=OWN).plan(consent()).hosts
    page = f'<!doctype html><body><svg><g class="x"><g></g></g><style><!--</style>{TRACKER}--></style></svg>'
    assert not any(e.tag.endswith("}img") for e in parse(page, True))  # the <img> is comment text
    assert rewrite(hosts, page, "N0nce0001", 1 << 20) == page


@pytest.mark.parametrize(
    "svg",
    [
        '<svg class="i" viewBox="0 0 2 2"><path d="M0 0"></path><circle r="1"/><text>a &amp; b</text></svg>',
        '<svg><style>@import "https://px.adnet\\2e example/p";</style></svg>',  # CSS, not text
        "<svg><style>*{background:url(https://ads.example&#46;org/a)}</style></svg>",
        '<svg><title><img src="https://px.adnet.example/t"></title></svg>',  # an integration point
        '<svg><desc><img src="https://px.adnet.example/d"></desc></svg>',
        '<svg><path d="M0 0"/ ><img src="https://px.adnet.example/s"></svg>',  # `/ >` does not close
        '<svg><image href="https://px.adnet&#46;example/i"></image></svg>',
        '<svg><g><path d="M0 0"></path></g></svg>',
    ],
)
@pytest.mark.parametrize("scripting", [True, False])
def test_inline_svg_icons_are_read_as_svg(svg: str, scripting: bool) -> None:
    check(f"<!doctype html><body><p>{svg}{TRACKER}</p>{svg}", scripting)
