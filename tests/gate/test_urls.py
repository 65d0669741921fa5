"""Hosts as the browser resolves them from markup (issue 12, item 4): references, percent-encoding,
IDNA/UTS-46, stripped whitespace, backslashes; and CSS URLs."""

from __future__ import annotations

import pytest

from consent_banner.gate.css import INERT, rewrite_css
from consent_banner.gate.urls import attr_text, srcset_urls, unescape, url_host


@pytest.mark.parametrize(
    "value",
    [
        "https://tracker%2Etest/p",
        "https://tracker\uff0etest/p",  # full-width full stop
        "https://tracker\u3002test/p",  # ideographic full stop
        "https://TRACKER.TEST/p",
        "https://\uff54racker.test/p",  # full-width letter
        "https://trac\tker.te\nst/p",
        "\x01\x1f https://tracker.test/p \x00",
        "https:\\\\tracker.test\\p",
        "//tracker.test/p",
        "https:tracker.test/p",  # a special scheme needs no slashes
        "wss://user:pw@tracker.test:8443/p",
    ],
)
def test_url_host_reads_the_host_as_the_browser_does(value: str) -> None:
    assert url_host(value) == "tracker.test"


def test_attribute_references_follow_the_html5_rules() -> None:
    assert attr_text(b"tracker&#46;test") == "tracker.test"
    assert attr_text(b"tracker&#x2E;test&period;x&#46") == "tracker.test.x."
    assert unescape("a&amp=b") == "a&amp=b" and unescape("a&ampb") == "a&ampb"  # legacy, then = or letter
    assert unescape("a&amp;=b") == "a&=b" and unescape("&notit;") == "&notit;"
    assert unescape("&notit;", attribute=False) == "\xacit;"
    assert attr_text("tracker\uff0etest".encode("shift_jis"), "shift_jis") == "tracker\uff0etest"


def test_srcset_urls_split_as_html_does() -> None:
    assert srcset_urls("/a.png 1x, https://t.test/b,c.png 2x") == ["/a.png", "https://t.test/b,c.png"]
    assert srcset_urls("a,b.png 1x,c 2x (x, y), d") == ["a,b.png", "c", "d"]


def denied(url: str) -> bool:
    return url_host(url) == "tracker.test"


@pytest.mark.parametrize(
    ("css", "expected"),
    [
        ("a{background:url(https://tracker.test/x)}", f"a{{background:url({INERT})}}"),
        ('@import "//tracker\\2e test/a.css";', f'@import "{INERT}";'),
        ("@font-face{src:u\\72l( 'https://tracker.test/f' )}", f"@font-face{{src:u\\72l( '{INERT}' )}}"),
        ('a{b:image-set("//tracker.test/a" 1x)}', f'a{{b:image-set("{INERT}" 1x)}}'),
        ("/* url(//tracker.test) */ a{b:url(/ok.png)}", "/* url(//tracker.test) */ a{b:url(/ok.png)}"),
        ("a{content:'tracker.test'}", "a{content:'tracker.test'}"),  # not a URL of the host
    ],
)
def test_css_urls_of_denied_hosts_become_inert(css: str, expected: str) -> None:
    assert rewrite_css(css, denied) == (expected, len(css))


def test_css_read_in_pieces_gives_the_same_result() -> None:
    css = "/* \" */ @import url(//tracker.test/a) 'x:\\\n' u\\72l(\"//tracker.test/b\")"
    whole, _ = rewrite_css(css, denied)
    for cut in range(len(css) + 1):
        head, used = rewrite_css(css[:cut], denied, final=False)
        assert used <= cut and head + rewrite_css(css[used:], denied)[0] == whole, cut
