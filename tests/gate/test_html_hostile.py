"""The rewriter on hostile input (issue 12, items 4 and 9): nested documents, over-long tags, inputs
built to make a scanner rescan, and the tags and attributes it must know."""

from __future__ import annotations

import re

import html5lib
import pytest

from consent_banner.gate import ResponseGate
from consent_banner.gate.html import MAX_TAG, HtmlRewriter

from .conftest import OWN, consent, make_config
from .test_html_differential import denied_urls, parse

HOSTS = ResponseGate(make_config(), own_cookie_names=OWN).plan(consent("necessary")).hosts
PX = "https://px.adnet.example/p"


def rewrite(markup: str | bytes, chunk: int | None = None, charset: str = "utf-8") -> bytes:
    rw = HtmlRewriter(HOSTS, None, charset=charset, mark=lambda: "N0")
    data = markup.encode(charset) if isinstance(markup, str) else markup
    size = chunk or len(data) or 1
    out = [rw.feed(data[i : i + size]) for i in range(0, len(data), size)]
    return b"".join(out) + rw.finish()


def fetches_denied(markup: str) -> bool:
    return any(denied_urls(e) for scripting in (True, False) for e in parse(markup, scripting))


def test_srcdoc_documents_are_rewritten_as_documents() -> None:
    """An iframe's srcdoc is HTML of its own: its trackers are neutralised inside the attribute."""
    page = f'<iframe srcdoc="<p>hi</p><img src=&quot;{PX}&quot;>"></iframe>'
    out = rewrite(page).decode()
    [frame] = [e for e in parse(out, True) if e.tag.endswith("iframe")]
    inner = frame.attrib["srcdoc"]
    assert fetches_denied(inner.replace("data-consent-src", "src"))  # what was there
    assert not fetches_denied(inner) and "<p>hi</p>" in inner


@pytest.mark.parametrize(
    "page",
    [
        f'<svg><script href="{PX}"></script></svg>',
        f'<svg><feImage xlink:href="{PX}"/></svg>',
        f'<a href="/" ping="/count {PX}">x</a>',
        f'<base href="{PX}/">',
        f'<link rel=preload as=image imagesrcset="{PX} 2x">',
        f'<frame src="{PX}">',
        f'<track src="{PX}">',
        f'<body background="{PX}">',
    ],
)
def test_less_common_fetching_attributes_are_neutralised(page: str) -> None:
    out = rewrite(page).decode()
    live = re.findall(r'\s([-\w:]+)="[^"]*px\.adnet', out)  # attributes naming the tracker
    assert live and all(name.startswith("data-consent-") for name in live), out


def test_an_over_long_tag_streams_and_fetches_nothing_denied() -> None:
    """A tag longer than MAX_TAG is not held whole: it goes out in pieces, a fetching attribute in
    it renamed whatever its value (data: URLs excepted), the same for every chunking."""
    pad = "x" * (MAX_TAG + 10)
    page = f'<img alt="{pad}" src="{PX}"><img src="data:image/png;base64,{pad}"><p>after</p>'
    outs = {rewrite(page, chunk) for chunk in (None, 4096, 1000, MAX_TAG + 3)}
    assert len(outs) == 1
    out = outs.pop().decode()
    assert not fetches_denied(out) and f'<img src="data:image/png;base64,{pad}">' in out
    assert out.endswith("<p>after</p>")


def test_an_over_long_script_tag_still_opens_script_data() -> None:
    pad = "x" * (MAX_TAG + 10)
    page = f'<script data-x="{pad}">var s = "<img src={PX}>";</script><img src="{PX}">'
    out = rewrite(page, 4096).decode()
    assert f'var s = "<img src={PX}>";</script>' in out  # script text untouched
    assert not fetches_denied(out)


@pytest.mark.parametrize(
    ("page", "chunk"),
    [
        (b"<script " * 32_000, 4096),  # 250 KB of an unfinished tag (19.5 s before)
        (b"px.adnet.example is here " * 160_000, 65536),  # a denied host in text every 25 bytes, 4 MB
        (b"<" * 300_000, 4096),
        (b'<a title="' + b"<img src=x>" * 30_000, 4096),  # an unfinished quoted value
        (b"<!--" + b"<script>" * 30_000, 512),
        (b"<style>" + b"url(" * 60_000, 4096),
    ],
)
def test_adversarial_inputs_pass_through_unchanged(page: bytes, chunk: int) -> None:
    """Inputs built to make a scanner rescan what it holds: nothing in them fetches, so the output is
    the input, byte for byte, however it is chunked (their speed is measured in bench/bench_gate.py)."""
    assert rewrite(page, chunk) == page


def test_many_denied_tags_are_all_neutralised() -> None:
    page = f'<img src="{PX}">' * 20_000
    out = rewrite(page, 4096).decode()
    assert out.count("data-consent-src") == 20_000 and not fetches_denied(out[:100_000])


def test_a_page_in_a_legacy_charset_is_read_in_it() -> None:
    """Non-ASCII bytes of an attribute are read in the page's charset: a full-width dot in Shift_JIS."""
    page = '<img src="https://px.adnet\uff0eexample/p"><p>\u65e5\u672c</p>'
    out = rewrite(page, charset="shift_jis")
    assert b"data-consent-src" in out and out.decode("shift_jis").endswith("<p>\u65e5\u672c</p>")


def test_style_attribute_with_references_and_css_escapes() -> None:
    page = '<p style="background:u&#114;l(&quot;//px.adnet\\2e example/p&quot;)">x</p>'
    out = rewrite(page).decode()
    tree = html5lib.parse(out, treebuilder="etree")
    [p] = [e for e in tree.iter() if e.tag.endswith("}p")]
    assert "about:invalid" in p.attrib["style"] and "adnet" not in p.attrib["style"]


@pytest.mark.parametrize(
    ("page", "kept"),
    [
        (f'<script data-consent-src="https://evil.example/x.js" src="{PX}.js"></script>', f"{PX}.js"),
        (f'<script src="https://evil.example/x.js" src="{PX}.js"></script>', f"{PX}.js"),
        (f'<img data-consent-category="necessary" data-consent-onerror="x()" src="{PX}">', PX),
    ],
)
def test_a_neutralised_tag_keeps_only_the_activation_attributes_the_gate_wrote(page: str, kept: str) -> None:
    """Issue 12, item 1: activation restores `data-consent-*` attributes and gives a script the page's
    nonce, so markup that brings its own (or a second `src` beside the tracker's) would choose what
    runs: the gate drops them, and the one URL it keeps is the tracker's."""
    out = rewrite(page).decode()
    [el] = [e for e in parse(out, True) if e.tag.endswith(("script", "img"))]
    consent_attrs = {k: v for k, v in el.attrib.items() if k.startswith("data-consent-")}
    assert consent_attrs["data-consent-src"] == kept
    assert set(consent_attrs) <= {"data-consent-src", "data-consent-type", "data-consent-category",
                                  "data-consent-service"}
    assert consent_attrs["data-consent-category"] != "necessary"
    assert out.count("data-consent-src") == 1 and "evil.example" not in out


def test_css_in_a_cdata_section_of_svg_style_is_rewritten_whole_whatever_the_chunks() -> None:
    """A CDATA section in an SVG <style> is CSS: held until it ends (up to MAX_TAG), not rewritten
    piece by piece, where an @import cut in two was left as it was or mangled."""
    page = b'<svg><style><![CDATA[@import "https://ads.example.org/a.css";]]></style></svg>'
    whole = rewrite(page)
    assert whole == page.replace(b"https://ads.example.org/a.css", b"about:invalid")
    assert all(rewrite(page, chunk) == whole for chunk in range(1, len(page)))
