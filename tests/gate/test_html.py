"""The streaming HTML rewrite: neutralised trackers, injection, broken markup, streaming (R2, R30, R32)."""

from __future__ import annotations

import gzip
import logging
import re
from html.parser import HTMLParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.middleware.gzip import GZipMiddleware
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from consent_banner.gate import ResponseGate
from consent_banner.gate.html import MAX_HOLD, HtmlRewriter, url_host

from .conftest import (
    MARKER_BODY,
    MARKER_HEAD,
    NONCE,
    OWN,
    client,
    consent,
    gated,
    inject_fn,
    make_config,
    page,
)

HEAD = MARKER_HEAD.format(nonce=NONCE)

TRACKED = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8">'
    '<script async src="https://stats.example.net/gtag.js?id=G-1&amp;l=x"></script>'
    "<title>Shop</title></head><body>"
    '<img src="/logo.png" alt="logo">'
    '<img height="1" width="1" src="https://px.adnet.example/tr?ev=PageView">'
    '<iframe src="https://video.example.tv/embed/1" width="560" height="315"></iframe>'
    '<link rel="preconnect" href="https://ads.example.org">'
    '<script src="https://cdn.example.com/app.js"></script>'
    '<script type="text/plain" data-consent-category="analytics">stats()</script>'
    "</body></html>"
)


def page_app(body: str | bytes = TRACKED, **kw) -> Starlette:  # type: ignore[no-untyped-def]
    async def page(request):  # type: ignore[no-untyped-def]
        return HTMLResponse(body, **kw)

    return Starlette(routes=[Route("/", page, methods=["GET", "HEAD"])])


def rewrite(page: str | bytes, the_consent=None, *, inject=inject_fn, chunks: list[int] | None = None) -> str:  # type: ignore[no-untyped-def]
    """Run the rewriter directly over `page`, fed in pieces of the given sizes."""
    gate = ResponseGate(make_config(), own_cookie_names=OWN)
    plan = gate.plan(the_consent or consent())
    data = page.encode() if isinstance(page, str) else page
    rw = HtmlRewriter(plan.hosts, inject, placeholder=gate.placeholder)
    out, pos = [], 0
    for size in chunks or [len(data)]:
        out.append(rw.feed(data[pos : pos + size]))
        pos += size
    out.append(rw.feed(data[pos:]))
    out.append(rw.finish())
    return b"".join(out).decode()


class Elements(HTMLParser):
    """Start tags as the browser's tokenizer sees them (the stdlib parser follows the same rules)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):  # type: ignore[no-untyped-def]
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):  # type: ignore[no-untyped-def]
        self.text.append(data)


def elements(html: str) -> Elements:
    p = Elements()
    p.feed(html)
    p.close()
    return p


async def test_denied_trackers_are_neutralised_and_labelled(gate: ResponseGate) -> None:
    """R2, R32: scripts, pixels, iframes and preconnects of denied services fetch nothing."""
    async with client(gated(page_app(), gate, consent())) as c:
        r = await c.get("/")
    tags = elements(r.text).tags
    fetching = [(t, a) for t, a in tags if "src" in a or "href" in a]
    assert fetching == [
        ("img", {"src": "/logo.png", "alt": "logo"}),
        ("script", {"src": "https://cdn.example.com/app.js"}),
    ]
    scripts = [a for t, a in tags if t == "script" and "data-consent-src" in a]
    assert scripts == [
        {
            "data-consent-src": "https://stats.example.net/gtag.js?id=G-1&l=x",
            "async": None,
            "type": "text/plain",
            "data-consent-category": "analytics",
            "data-consent-service": "stats",
            "nonce": NONCE,  # the page's nonce: the script activates only what carries it
        }
    ]
    [pixel] = [a for t, a in tags if t == "img" and "data-consent-src" in a]
    assert pixel["data-consent-category"] == "marketing" and pixel["data-consent-service"] == "ads"
    [link] = [a for t, a in tags if t == "link"]
    assert link["data-consent-href"] == "https://ads.example.org" and link["data-consent-service"] == "ads"


async def test_iframe_gets_placeholder_with_allow_button(gate: ResponseGate) -> None:
    """R2: an iframe of a denied service keeps its source in data-consent-src behind a placeholder."""
    async with client(gated(page_app(), gate, consent())) as c:
        r = await c.get("/")
    tags = elements(r.text).tags
    i = next(i for i, (t, _) in enumerate(tags) if t == "iframe")
    assert tags[i][1] == {
        "data-consent-src": "https://video.example.tv/embed/1",
        "width": "560",
        "height": "315",
        "hidden": "",
        "data-consent-hidden": "",
        "data-consent-category": "media",
        "data-consent-service": "video",
        "nonce": NONCE,
    }
    assert tags[i - 3 : i] == [
        (
            "div",
            {
                "nonce": NONCE,
                "class": "consent-placeholder",
                "data-consent-placeholder": "video",
                "data-consent-category": "media",
            },
        ),
        ("p", {}),
        ("button", {"type": "button", "data-consent-allow": "media"}),
    ]
    # the provider name "Video <Tube>" is escaped, not markup
    assert "Content from Video &lt;Tube&gt; will load once you allow Embedded media." in r.text
    assert "Allow Embedded media</button></div><iframe" in r.text


def test_placeholder_follows_the_page_language() -> None:
    """R14: the placeholder is written in the page's language (<html lang>)."""
    out = rewrite('<html lang="sv-SE"><body><iframe src="https://video.example.tv/x"></iframe></body></html>')
    assert "Innehåll från Video &lt;Tube&gt; laddas när du tillåter Inbäddad media." in out
    assert ">Tillåt Inbäddad media</button>" in out


def test_placeholder_texts_can_be_overridden_in_the_config() -> None:
    """R36: override texts from the config are escaped too."""
    config = make_config(texts={"en": {"placeholder": "{service} <b>blocked</b>", "placeholder_allow": "OK"}})
    gate = ResponseGate(config, own_cookie_names=OWN)
    rw = HtmlRewriter(gate.plan(consent()).hosts, None, placeholder=gate.placeholder)
    out = (rw.feed(b'<iframe src="https://video.example.tv/x"></iframe>') + rw.finish()).decode()
    assert "<p>Video &lt;Tube&gt; &lt;b&gt;blocked&lt;/b&gt;</p>" in out and ">OK</button>" in out


async def test_granted_services_tags_are_left_alone(gate: ResponseGate) -> None:
    """R2: once granted, the tracker markup is delivered as the site wrote it."""
    async with client(gated(page_app(), gate, consent("analytics", "marketing", "media"), inject=None)) as c:
        r = await c.get("/")
    assert r.text == TRACKED


def activate(attrs: dict[str, str | None]) -> dict[str, str | None]:
    """What the browser script does to a neutralised tag, per the markup contract in gate/html.py."""
    out = {k: v for k, v in attrs.items() if k not in ("data-consent-category", "data-consent-service")}
    if "data-consent-hidden" in out:
        del out["data-consent-hidden"], out["hidden"]
    if out.get("type") == "text/plain" and "data-consent-src" in out:
        del out["type"]
    moved = {
        "data-consent-src": "src",
        "data-consent-href": "href",
        "data-consent-srcset": "srcset",
        "data-consent-poster": "poster",
        "data-consent-type": "type",
    }
    return {moved.get(k, k): v for k, v in out.items()}


def test_neutralised_markup_reactivates_to_the_original() -> None:
    """R2: the browser script can restore each tag from the data-consent-* attributes alone."""
    out = rewrite(TRACKED, inject=None)
    without_placeholders = re.sub(r'<div class="consent-placeholder".*?</div>', "", out)
    restored = [
        (tag, activate(attrs) if "data-consent-service" in attrs else attrs)
        for tag, attrs in elements(without_placeholders).tags
    ]
    assert restored == elements(TRACKED).tags


def test_authored_text_plain_scripts_are_untouched() -> None:
    """R2: the site's own type="text/plain" data-consent-category scripts are left as written."""
    page = (
        '<body><script type="text/plain" data-consent-category="marketing" '
        'src="https://ads.example.org/a.js"></script><script type="application/ld+json">'
        '{"u": "https://ads.example.org"}</script></body>'
    )
    assert rewrite(page, inject=None) == page


def test_module_scripts_keep_their_type_for_activation() -> None:
    """R2: an original type (module) survives as data-consent-type."""
    out = rewrite('<script type="module" src="https://stats.example.net/m.js"></script>', inject=None)
    assert out == (
        '<script data-consent-type="module" data-consent-src="https://stats.example.net/m.js" '
        'type="text/plain" data-consent-category="analytics" data-consent-service="stats"></script>'
    )


@pytest.mark.parametrize(
    "tag",
    [
        '<SCRIPT SRC="HTTPS://STATS.EXAMPLE.NET/a.js"></SCRIPT>',
        "<script src=//stats.example.net/a.js></script>",
        "<script src='http://stats.example.net:8080/a.js'></script>",
        '<script src="https://user@stats.example.net./a.js"></script>',
        '<script src=" https://stats.example.net/a.js "></script>',
        '<script src="https:\\\\stats.example.net/a.js"></script>',
        '<script src="/local.js" src="https://stats.example.net/a.js"></script>',
        '<img srcset="/a.png 1x, https://px.adnet.example/b.png 2x">',
        '<img src="https://deep.sub.adnet.example/p.gif"/>',
        '<video poster="https://ads.example.org/p.jpg"></video>',
        '<noscript><img src="https://px.adnet.example/tr?noscript=1"></noscript>',
    ],
)
def test_tracker_url_spellings_are_recognised(tag: str) -> None:
    """R2: case, protocol-relative, other scheme or port, userinfo, trailing dot, backslashes,
    duplicate attributes, srcset, wildcard subdomains, posters and <noscript> pixels."""
    out = rewrite(tag, inject=None)
    parsed = elements(out).tags
    assert all("src" not in a and "srcset" not in a and "poster" not in a for _, a in parsed), out
    assert "data-consent-service" in out


@pytest.mark.parametrize(
    "page",
    [
        '<script src="https://stats.example.net.evil.example/a.js"></script>',
        '<script src="https://notstats.example.net/a.js"></script>',
        '<img src="https://adnet.example/p.gif">',  # *.adnet.example does not include the apex
        '<a href="https://ads.example.org/landing">ad</a>',
        "<p>visit stats.example.net or https://ads.example.org today</p>",
        '<script>var u = "<img src=\\"https://px.adnet.example/p\\">";</script>',
        '<textarea><img src="https://px.adnet.example/p"></textarea>',
        '<!-- <img src="https://px.adnet.example/p"> -->',
        '<img alt="https://px.adnet.example/p" src="/ok.png">',
    ],
)
def test_non_tracker_markup_is_not_touched(page: str) -> None:
    """R2: look-alike hosts, links, text, script strings, textarea and comments are left alone."""
    assert rewrite(page, inject=None) == page


def test_head_snippet_right_after_head_and_body_snippet_before_last_body_end() -> None:
    """R30: the Consent Mode default comes first in <head>; the banner goes before the last </body>."""
    page = (
        '<!DOCTYPE html>\n<html lang="sv"><head data-x="1">\n<script src="https://cdn.example.com/g.js">'
        '</script></head><body><script>var s = "</body>";</script><p>x</p></body>\n</html>'
    )
    out = rewrite(page)
    assert out == (
        '<!DOCTYPE html>\n<html lang="sv"><head data-x="1">'
        + HEAD
        + '\n<script src="https://cdn.example.com/g.js"></script></head><body>'
        '<script>var s = "</body>";</script><p>x</p>' + MARKER_BODY.format(lang="sv") + "</body>\n</html>"
    )


def test_several_body_end_tags_inject_before_the_last() -> None:
    """R30: stray </body> tags earlier in the page do not receive the banner."""
    out = rewrite("<head></head><body>a</body><p>late</p></body>tail")
    assert out.endswith("<p>late</p>" + MARKER_BODY.format(lang=None) + "</body>tail")
    assert out.count("data-consent-banner") == 2


@pytest.mark.parametrize(
    ("page", "expected"),
    [
        ("<!doctype html><p>Hello</p>", "<!doctype html>{head}<p>Hello</p>{body}"),
        ("  <!-- c --><html><body>x", "  <!-- c --><html>{head}<body>x{body}"),
        ("<body>Just text", "{head}<body>Just text{body}"),
        (
            "<?xml version='1.0'?><html lang=en><title>t</title>",
            "<?xml version='1.0'?><html lang=en>{head}<title>t</title>{body}",
        ),
    ],
)
def test_injection_without_head_or_body(page: str, expected: str) -> None:
    """R30: no <head>: before the first element or text; no </body>: at the end."""
    lang = "en" if "lang=en" in page else None
    assert rewrite(page) == expected.format(head=HEAD, body=MARKER_BODY.format(lang=lang))


def test_empty_body_gets_nothing() -> None:
    """An empty HTML body stays empty (nothing to inject into)."""
    assert rewrite("") == "" and rewrite("  \n") == "  \n"


def test_pages_already_carrying_our_snippet_are_not_injected_twice() -> None:
    """R30: a page rendered with our snippet (data-consent-banner) gets no second copy."""
    page = f"<html><head>{HEAD}</head><body>x{MARKER_BODY.format(lang='en')}</body></html>"
    assert rewrite(page) == page
    late = "<html><head></head><body>x<div data-consent-banner></div></body></html>"
    out = rewrite(late)
    assert out.count("data-consent-banner") == 2  # head snippet added, body not


@pytest.mark.parametrize(
    "page",
    [
        '<html><head><title>x</head><body><img src="https://px.adnet.example/a"></body>',  # unclosed title
        '<body><img alt="a > b <script" src="https://px.adnet.example/a"><p>after</p></body>',
        '<body><div title="</body>">x</div><img src="https://px.adnet.example/a"></body>',
        "<body><p>a < b and c > d</p><img src='https://px.adnet.example/a'></body>",
        "<body><!-- </body> <script> --><img src=https://px.adnet.example/a></body>",
        "<body><svg><![CDATA[ </body> <img ]]></svg><img src=https://px.adnet.example/a></body>",
        "<body><!--><img src=https://px.adnet.example/a><!---><p>x</p></body>",
        "<body><script>if (a<b) document.write('</scr' + 'ipt></body>')</script>"
        "<img src=https://px.adnet.example/a></body>",
        "<body><style>p::after{content:'</body>'}</style><img src=https://px.adnet.example/a></body>",
        '<body><img src="https://px.adnet.example/a',  # cut off mid-attribute
        "<body><script src=https://stats.example.net/a.js>",  # unclosed script at the end
        "<body><div <img src=https://px.adnet.example/a>>",
        "<!doctype html><<<>>><img/src=https://px.adnet.example/a/><</body",
        '<body><img alt="<script>" src="/a.png"><img src="https://px.adnet.example/a"></body>',
        '<body><a title="<!--">x</a><img src="https://px.adnet.example/a"></body>',
    ],
)
def test_broken_markup_never_breaks(page: str) -> None:
    """R2: broken markup: every byte not deliberately changed is kept, and chunking changes nothing."""
    whole = rewrite(page)
    assert "<div data-consent-banner" in whole
    for size in (1, 2, 3, 5, 8):
        assert rewrite(page, chunks=[size] * (len(page) // size + 1)) == whole
    # removing what we added gives back the input byte for byte
    stripped = whole.replace(HEAD, "")
    for added in (
        ' type="text/plain"',
        ' data-consent-category="marketing"',
        ' data-consent-service="ads"',
        ' data-consent-category="analytics"',
        ' data-consent-service="stats"',
    ):
        stripped = stripped.replace(added, "")
    stripped = stripped.replace("data-consent-src", "src")
    assert without_body(stripped, MARKER_BODY.format(lang=None), page) == page


def test_tracker_after_a_comment_with_script_tag_is_still_found() -> None:
    """R2: a commented-out <script> does not swallow the rest of the page as script text."""
    out = rewrite('<!-- <script> --><p>x</p><img src="https://px.adnet.example/p">', inject=None)
    assert 'data-consent-src="https://px.adnet.example/p"' in out


_piece = st.sampled_from(
    [
        "<script>",
        "</script>",
        "<img src=https://px.adnet.example/p>",
        "<!--",
        "-->",
        "</body>",
        "<body>",
        "<head>",
        "</head>",
        "<html lang=sv>",
        '"',
        "'",
        "<",
        ">",
        "=",
        " ",
        "x",
        "é",
        "<iframe src='//video.example.tv'>",
        "</iframe>",
        "<title>",
        "</title>",
        "<script src=https://stats.example.net/s.js>",
        "data-consent-banner",
        "<![CDATA[",
        "]]>",
        "<textarea>",
        "</textarea>",
        "<p>",
        "\n",
        '<a title="',
        "<img alt='",
        "<link href=//ads.example.org>",
        "</",
        "<!-",
        "-->",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_piece, max_size=40), st.lists(st.integers(1, 40), max_size=10))
def test_chunking_never_changes_the_output(pieces: list[str], cuts: list[int]) -> None:
    """R2: the output does not depend on where the response body is cut into chunks."""
    page = "".join(pieces)
    assert rewrite(page, chunks=cuts) == rewrite(page)


@settings(max_examples=300, deadline=None)
@given(st.lists(_piece, max_size=40), st.lists(st.integers(1, 40), max_size=10))
def test_injection_adds_and_loses_nothing(pieces: list[str], cuts: list[int]) -> None:
    """R30: with every service granted, the output is the input plus at most one copy of each snippet."""
    page = "".join(pieces)
    out = rewrite(page, consent("analytics", "marketing", "media"), chunks=cuts)
    bodies = [MARKER_BODY.format(lang=lang) for lang in ("sv", None)]
    assert out.count(HEAD) <= 1 and sum(out.count(b) for b in bodies) <= 1
    out = out.replace(HEAD, "", 1)
    assert without_body(without_body(out, bodies[0], page), bodies[1], page) == page


# What the rewriter writes before the body snippet to close what is open there (html.py, _closers),
# and after the tag the page ends in, when the snippet goes at the end (_tag_closer).
CLOSERS = re.compile(r"(?:[\"']?>)?(?:-->|\]\]>|>|</[^\t\n\f\r />]+>)*")
TAG_CLOSER = re.compile(r"(?:[\"']?>)?\Z")


def without_body(out: str, body: str, page: str) -> str:
    """`out` without the body snippet `body`, the closers right before it and the end of a tag the
    page ended in, which must be all that was added for `out` to come from `page`."""
    at = out.find(body)
    if at < 0:
        return out
    before, after = out[:at], out[at + len(body) :]
    for tail in {"", TAG_CLOSER.search(after).group(0)}:  # type: ignore[union-attr]
        rest = after[: len(after) - len(tail)]
        cut = len(page) - len(rest)
        if 0 <= cut <= len(before) and before[:cut] + rest == page and CLOSERS.fullmatch(before[cut:]):
            return page
    raise AssertionError(out)


def test_large_page_is_streamed_not_held() -> None:
    """Streaming: a big page comes out chunk by chunk; only a bounded tail waits for </body>."""
    gate = ResponseGate(make_config(), own_cookie_names=OWN)
    rw = HtmlRewriter(gate.plan(consent()).hosts, inject_fn, placeholder=gate.placeholder)
    row = b'<div class="r"><img src="https://px.adnet.example/p.gif"><p>row</p></div>\n'
    sent = len(rw.feed(b"<html><head><title>t</title></head><body>"))
    held_max = 0
    fed = 0
    for _ in range(2000):
        sent += len(rw.feed(row))
        fed += len(row)
        held_max = max(held_max, fed - sent)
    assert held_max < 1024  # each chunk leaves at once, bar a possibly unfinished tag
    rw.feed(b"</body>" + b"<p>after</p>" * 1000)  # a long tail after </body> is held only up to MAX_HOLD
    tail = rw.feed(b"<p>more</p>" * ((MAX_HOLD // 11) + 10))
    assert tail  # released once the bound is passed


def test_url_host() -> None:
    """R2: hosts as the URL parser resolves them; same-origin paths and other schemes have none."""
    assert url_host("https://A.Example.COM:8080/x") == "a.example.com"
    assert url_host("//cdn.example.com/x") == "cdn.example.com"
    assert url_host("/\\evil.example/x") == "evil.example"
    assert url_host("https://%73tats.example.net/") == "stats.example.net"
    assert url_host("ht\ttps://x.example/") == "x.example"
    assert url_host("/path") is None and url_host("data:image/png;base64,xx") is None
    assert url_host("javascript:alert(1)") is None and url_host("relative/path") is None
    assert url_host("https://[::1]:8000/") == "[::1]"


# --- through ResponseGate ------------------------------------------------------------------------------


async def test_content_length_is_corrected_for_a_one_message_body(gate: ResponseGate) -> None:
    """Content-Length matches the rewritten body when the app sent the body in one message."""
    async with client(gated(page_app(), gate, consent())) as c:
        r = await c.get("/")
    assert int(r.headers["content-length"]) == len(r.content) > len(TRACKED)


async def test_streamed_html_is_rewritten_chunk_by_chunk_without_content_length(gate: ResponseGate) -> None:
    """Streaming: each app chunk is forwarded as it is rewritten, without waiting for the end."""
    forwarded: list[bytes] = []
    app_sent: list[int] = []

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/html; charset=utf-8"), (b"content-length", b"999")],
            }
        )
        for part in (
            b"<html><head></head><body>",
            b'<img src="https://px.adnet.example/a">' * 50,
            b"</body>",
        ):
            app_sent.append(len(forwarded))
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    messages = []

    async def send(message):  # type: ignore[no-untyped-def]
        messages.append(message)
        if message["type"] == "http.response.body":
            forwarded.append(message["body"])

    scope = {"type": "http", "method": "GET", "headers": [], "scheme": "https"}
    await app(scope, None, gate.wrap_send(send, scope, consent(), request_cookies={}, page=page()))
    start = messages[0]
    assert start["type"] == "http.response.start"
    assert b"content-length" not in dict(start["headers"])
    assert app_sent == [0, 1, 2]  # the first two chunks were forwarded before the app sent the next
    body = b"".join(forwarded).decode()
    assert body.count("data-consent-src") == 50 and body.endswith(MARKER_BODY.format(lang=None) + "</body>")


async def test_non_html_bodies_pass_message_for_message(gate: ResponseGate) -> None:
    """Streaming: a non-HTML body is never buffered: every message is forwarded as it comes."""
    chunks = [b"a" * 10, b"b" * 10, b""]

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/octet-stream")],
            }
        )
        for i, chunk in enumerate(chunks):
            await send({"type": "http.response.body", "body": chunk, "more_body": i < len(chunks) - 1})

    messages = []

    async def send(message):  # type: ignore[no-untyped-def]
        messages.append(message)

    scope = {"type": "http", "method": "GET", "headers": [], "scheme": "https"}
    wrapped = gate.wrap_send(send, scope, consent(), request_cookies={}, page=page())
    await app(scope, None, wrapped)
    assert [m.get("body") for m in messages[1:]] == chunks


async def test_head_requests_are_not_rewritten(gate: ResponseGate) -> None:
    """HEAD: no body to rewrite; the policy is still sent."""
    async with client(gated(page_app(), gate, consent())) as c:
        r = await c.head("/")
    assert r.content == b"" and "content-security-policy" in r.headers


async def test_compressed_html_passes_with_one_warning(gate: ResponseGate, caplog) -> None:  # type: ignore[no-untyped-def]
    """Compressed HTML is not rewritten; CSP and cookies still apply; one warning tells what to do."""
    body = gzip.compress(TRACKED.encode())

    async def page(request):  # type: ignore[no-untyped-def]
        r = Response(body, media_type="text/html", headers={"content-encoding": "gzip"})
        r.set_cookie("_fbp", "1")
        return r

    app = gated(Starlette(routes=[Route("/", page)]), gate, consent())
    with caplog.at_level(logging.WARNING, logger="consent_banner.gate"):
        async with client(app) as c:
            r1 = await c.get("/")
            r2 = await c.get("/")
    assert r1.content == r2.content == TRACKED.encode()  # httpx decompresses: untouched
    assert "content-security-policy" in r1.headers and "set-cookie" not in r1.headers
    warnings = [r for r in caplog.records if "outside ConsentMiddleware" in r.getMessage()]
    assert len(warnings) == 1


async def test_gzip_middleware_outside_the_gate_compresses_the_rewritten_page(gate: ResponseGate) -> None:
    """Compression outside ConsentMiddleware: the rewritten page is what gets compressed."""
    big = TRACKED.replace("<title>Shop</title>", "<title>Shop</title>" + "<p>filler</p>" * 200)
    app = GZipMiddleware(gated(page_app(big), gate, consent()), minimum_size=100)
    async with client(app) as c:
        r = await c.get("/", headers={"accept-encoding": "gzip"})
    assert r.headers["content-encoding"] == "gzip"
    assert 'data-consent-src="https://stats.example.net' in r.text and HEAD in r.text
    assert "Cookie" in r.headers["vary"] and "Accept-Encoding" in r.headers["vary"]


async def test_latin1_page_gets_injection_in_its_charset(gate: ResponseGate) -> None:
    """Injected text is encoded in the page's charset (character references where it cannot)."""
    body = "<html><head></head><body>café</body></html>".encode("latin-1")

    def inject(lang):  # type: ignore[no-untyped-def]
        return "<i data-x>é€</i>", ""

    async def page(request):  # type: ignore[no-untyped-def]
        return Response(body, media_type="text/html; charset=iso-8859-1")

    async with client(gated(Starlette(routes=[Route("/", page)]), gate, consent(), inject=inject)) as c:
        r = await c.get("/")
    assert r.content == "<html><head><i data-x>é&#8364;</i></head><body>café</body></html>".encode("latin-1")


async def test_utf16_page_is_passed_through(gate: ResponseGate) -> None:
    """A UTF-16 body cannot be scanned as bytes: it passes untouched (CSP still applies)."""
    body = TRACKED.encode("utf-16")

    async def page(request):  # type: ignore[no-untyped-def]
        return Response(body, media_type="text/html; charset=utf-16")

    async with client(gated(Starlette(routes=[Route("/", page)]), gate, consent())) as c:
        r = await c.get("/")
    assert r.content == body and "content-security-policy" in r.headers


async def test_rewrite_off_passes_markup_but_still_injects_and_sets_policy() -> None:
    """rewrite_html = false: trackers stay in the markup (the CSP still refuses them); injection stays."""
    gate = ResponseGate(make_config(rewrite_html=False), own_cookie_names=OWN)
    async with client(gated(page_app(), gate, consent())) as c:
        r = await c.get("/")
    assert 'src="https://stats.example.net' in r.text and HEAD in r.text
    assert "stats.example.net" not in r.headers["content-security-policy"]


async def test_nothing_to_do_passes_html_bytes_untouched() -> None:
    """rewrite off, no injection: the body is forwarded as the app sent it (Content-Length kept)."""
    gate = ResponseGate(make_config(rewrite_html=False), own_cookie_names=OWN)
    async with client(gated(page_app(), gate, consent(), inject=None)) as c:
        r = await c.get("/")
    assert r.text == TRACKED and r.headers["content-length"] == str(len(TRACKED))
    assert "content-security-policy" in r.headers and r.headers["vary"] == "Cookie, Sec-GPC"


async def test_file_response_html_is_rewritten(gate: ResponseGate, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A FileResponse with an .html file is rewritten like any other HTML body."""
    from starlette.responses import FileResponse

    path = tmp_path / "page.html"
    path.write_text(TRACKED)

    async def page(request):  # type: ignore[no-untyped-def]
        return FileResponse(path)

    async with client(gated(Starlette(routes=[Route("/", page)]), gate, consent())) as c:
        r = await c.get("/")
    assert 'data-consent-src="https://stats.example.net' in r.text and HEAD in r.text
    assert int(r.headers["content-length"]) == len(r.content)


async def test_pathsend_html_is_read_and_rewritten(gate: ResponseGate, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A file sent with the http.response.pathsend extension is rewritten like any other HTML body."""
    path = tmp_path / "big.html"
    path.write_bytes(TRACKED.replace("<p>", "").encode() + b"<!-- " + b"x" * 200_000 + b" -->")

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/html"), (b"content-length", b"1")],
            }
        )
        await send({"type": "http.response.pathsend", "path": str(path)})

    messages = []

    async def send(message):  # type: ignore[no-untyped-def]
        messages.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "headers": [],
        "scheme": "https",
        "extensions": {"http.response.pathsend": {}},
    }
    await app(scope, None, gate.wrap_send(send, scope, consent(), request_cookies={}, page=page(inject=None)))
    assert b"content-length" not in dict(messages[0]["headers"])
    assert [m["type"] for m in messages[1:]] == ["http.response.body"] * (len(messages) - 1)
    assert [m["more_body"] for m in messages[1:]][-1] is False and len(messages) > 3
    body = b"".join(m["body"] for m in messages[1:])
    assert body.count(b"data-consent-src") == 3 and body.count(b"data-consent-href") == 1
    assert body.endswith(b"x" * 1000 + b" -->")


def _marked(page: str, calls: list[int]) -> str:
    gate = ResponseGate(make_config(), own_cookie_names=OWN)

    def mark() -> str:
        calls.append(1)
        return "N0nce"

    rw = HtmlRewriter(gate.plan(consent()).hosts, None, placeholder=gate.placeholder, mark=mark)
    return (rw.feed(page.encode()) + rw.finish()).decode()


def test_neutralised_tags_carry_the_page_mark_and_lose_their_own_nonce() -> None:
    """Issue 12 item 1: only what the server neutralised carries the page's nonce, so the script can
    refuse reflected look-alikes; a neutralised tag's own nonce attribute is replaced, not kept."""
    calls: list[int] = []
    out = _marked(
        '<script nonce="evil" src="https://stats.example.net/a.js"></script>'
        '<img src="https://px.adnet.example/p"><iframe src="https://video.example.tv/e"></iframe>'
        '<script type="text/plain" data-consent-category="necessary" nonce="x">run()</script>',
        calls,
    )
    tags = elements(out).tags
    marked = [t for t, a in tags if a.get("nonce") == "N0nce"]
    assert marked == ["script", "img", "iframe"]
    assert [a.get("nonce") for t, a in tags if t == "script"] == ["N0nce", "x"]
    assert 'nonce="evil"' not in out and len(calls) == 1


def test_mark_is_drawn_only_when_a_tag_is_neutralised() -> None:
    calls: list[int] = []
    out = _marked('<p>hi</p><img src="/logo.png"><script src="https://cdn.example.com/a.js"></script>', calls)
    assert calls == [] and "nonce" not in out
