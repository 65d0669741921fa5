"""Whole pages replayed (`HtmlRewriter.rewrite`, pages.py): a body rewritten before in the same consent
state comes out exactly as a fresh rewrite with this response's nonce, snippets and placeholders."""

from __future__ import annotations

import pytest

from consent_banner.gate import ResponseGate
from consent_banner.gate.hosts import Blocked
from consent_banner.gate.html import HtmlRewriter
from consent_banner.gate.pages import NOT_REPLAYED, PAGES, SEEN

from .conftest import OWN, consent, make_config

GATE = ResponseGate(make_config(), own_cookie_names=OWN)
PAGES_TO_REPLAY = [
    '<!doctype html><html lang="sv"><head><script src="https://stats.example.net/a.js"></script>'
    '</head><body><img src="https://px.adnet.example/p"><iframe src="https://video.example.tv/e/1">'
    "</iframe><p>text</p></body></html>",
    "<p>no head, no body <img src=https://px.adnet.example/x></p>",
    '<html><head><title>t</title></head><body><noscript><img src="https://px.adnet.example/n">'
    '<iframe src="https://video.example.tv/e/2"></iframe></noscript></body></html>',
    '<body><div data-consent-banner="x"></div><img src="https://px.adnet.example/x"></body>',
    "<body><svg><image href=https://px.adnet.example/s /></svg><template><p>open",
    '<body><textarea><img src="https://px.adnet.example/t"></textarea><p title="unclosed',
    "<body><script>if (a<b) {}</script><p style=\"background:url(https://px.adnet.example/c)\">x</p>",
    "<body><plaintext><img src=https://px.adnet.example/x>",
]


@pytest.fixture(autouse=True)
def _forget_pages() -> None:
    PAGES.clear()
    SEEN.clear()


def rewriter(n: int, *granted: str, lang_seen: list[str | None] | None = None) -> HtmlRewriter:
    """A rewriter as the middleware makes one for response `n`: its own nonce, snippets, placeholders."""

    def inject(lang: str | None) -> tuple[str, str]:
        if lang_seen is not None:
            lang_seen.append(lang)
        return f'<script nonce="n{n}" data-consent-banner="head"></script>', f"<div>banner {n} {lang}</div>"

    def placeholder(blocked: Blocked, lang: str | None) -> str:
        return f'<div class="consent-placeholder">{blocked.service} {lang} "{n}" &amp; é</div>'

    return HtmlRewriter(
        GATE.plan(consent(*granted)).hosts, inject, placeholder=placeholder, mark=lambda: f"nonce&{n}"
    )


def fresh(n: int, data: bytes) -> bytes:
    rw = rewriter(n)
    return rw.feed(data) + rw.finish()


@pytest.mark.parametrize("page", PAGES_TO_REPLAY)
def test_a_page_replayed_is_what_a_fresh_rewrite_gives(page: str) -> None:
    data = page.encode()
    for n in range(4):  # the first is seen, the second recorded, the others replayed
        assert rewriter(n).rewrite(data) == fresh(n, data)
        assert len(PAGES) == (n > 0) and NOT_REPLAYED not in PAGES.values()


def test_a_page_is_replayed_per_consent_state() -> None:
    data = PAGES_TO_REPLAY[0].encode()
    pixel = b'<img src="https://px.adnet.example/p">'
    for n in range(3):
        assert pixel not in rewriter(n).rewrite(data)
        assert pixel in rewriter(n, "marketing").rewrite(data)
    assert len(PAGES) == 2


def test_the_snippets_are_asked_for_in_the_pages_language_each_time() -> None:
    seen: list[str | None] = []
    for n in range(3):
        rewriter(n, lang_seen=seen).rewrite(PAGES_TO_REPLAY[0].encode())
    assert seen == ["sv", "sv", "sv"] and PAGES


def test_a_page_with_srcdoc_is_rewritten_afresh_each_time() -> None:
    # The nested document's output is escaped into the attribute: a hole there would be filled raw.
    data = b'<body><iframe srcdoc="<img src=https://px.adnet.example/x>"></iframe></body>'
    for n in range(3):
        assert rewriter(n).rewrite(data) == fresh(n, data)
    assert list(PAGES.values()) == [NOT_REPLAYED]


def test_a_page_seen_once_is_not_recorded() -> None:
    data = PAGES_TO_REPLAY[0].encode()
    rewriter(0).rewrite(data)
    assert not PAGES and len(SEEN) == 1


def test_a_rewriter_fed_before_is_not_replayed() -> None:
    rw = rewriter(0)
    assert rw.feed(b"<script>").endswith(b"<script>")
    out = rw.rewrite(b"<img src=https://px.adnet.example/x></script>")
    assert out.startswith(b"<img src=https://px.adnet.example/x></script>")  # script text, as it is
    assert not PAGES
