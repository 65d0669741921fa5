"""Issue 14, item 4: partial HTML gets no banner.

A response swapped into a page that is already loaded (htmx's `HX-Request`, a Turbo frame, an
`X-Requested-With: XMLHttpRequest` call), or any `text/html` body that does not start as a document
(no doctype, `<html>`, `<head>` or `<body>` before its first content), is still gated (tracker tags
neutralised, Set-Cookie filtered, the policy) but gets nothing injected: no banner, dialog, script,
stylesheet or Consent Mode default. `<li>row 3</li>` came back as 6.4 KB; it must come back as it was.
Since the answer to the same URL now differs by those request headers, HTML we touch varies on them.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import Route

from consent_banner import ConsentConfig, ConsentMiddleware

ORIGIN = "http://testserver"
TRACKER = '<script src="https://stats.example.net/t.js"></script>'
ROWS = {
    "li": b"<li>row 3</li>",
    "tr": b"<tr><td>3</td><td>Desk by the window</td></tr>\n",
    "text first": b"Saved. <a href='/rooms'>Back</a>",
    "comment first": b"<!-- row --><li>row 3</li>",
    "blank first": b"\n  \t<div class=row>3</div>\n",
    "reflected doctype later": b"<p>you searched for</p><!doctype html><html><head></head><body>x</body>",
    "comment only": b"<!-- nothing to show -->",
}
DOCUMENTS = {
    "doctype": b"<!doctype html><title>t</title><p>hi",
    "DOCTYPE after a comment": b"<!-- generated --><!DOCTYPE html><p>hi</p>",
    "html": b"<html lang='en'><p>hi</p></html>",
    "head": b"<head><title>t</title></head><p>hi</p>",
    "body": b"<body><p>hi</p></body>",
    "BOM and blanks": b"\xef\xbb\xbf\n  <!doctype html><p>hi</p>",
}
INJECTED = ("data-consent-banner", "cb-dialog", "consent.js", "consent.css", "gtag('consent'")
FRAGMENT_HEADERS = {
    "htmx": {"hx-request": "true"},
    "turbo frame": {"turbo-frame": "rooms"},
    "xhr": {"x-requested-with": "XMLHttpRequest"},
}


def body_app() -> Starlette:
    """Serves the body it is asked for (?row= or ?doc= names it), in one message or byte by byte."""

    def pick(request: Request) -> bytes:
        q = request.query_params
        return ROWS[q["row"]] if "row" in q else DOCUMENTS[q["doc"]] if "doc" in q else q["raw"].encode()

    async def whole(request: Request) -> Response:
        response = HTMLResponse(pick(request))
        if "cookie" in request.query_params:
            response.set_cookie("_ads", "1")  # marketing: not granted
            response.set_cookie("booking_session", "s")  # necessary
        return response

    async def streamed(request: Request) -> Response:
        body = pick(request)

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(len(body)):
                yield body[i : i + 1]

        return StreamingResponse(chunks(), media_type="text/html")

    return Starlette(routes=[Route("/whole", whole), Route("/streamed", streamed)])


@pytest.fixture
async def client(config: ConsentConfig) -> AsyncIterator[httpx.AsyncClient]:
    app = ConsentMiddleware(body_app(), config=config)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN) as c:
        yield c
    await app.close()


def nonce_of(response: httpx.Response) -> str:
    m = re.search(r"'nonce-([^']+)'", response.headers["content-security-policy"])
    assert m
    return m.group(1)


@pytest.fixture(params=["whole", "streamed"])
def route(request: pytest.FixtureRequest) -> Iterator[str]:
    yield f"/{request.param}"


async def test_fragments_come_back_byte_identical_and_documents_keep_their_banner(client, route) -> None:
    for name, body in ROWS.items():
        r = await client.get(route, params={"row": name})
        assert r.status_code == 200 and r.content == body, name
    for name in DOCUMENTS:
        r = await client.get(route, params={"doc": name})
        assert all(s in r.text for s in INJECTED) and r.text.count("consent.js?v=") == 1, name


async def test_a_fragment_is_still_gated(client, route) -> None:
    """R2: a fragment's tracker tags are neutralised (with the fragment response's own nonce), the rest
    untouched."""
    row = f"<tr><td>3</td><td>{TRACKER}</td></tr>"
    r = await client.get(route, params={"raw": row})
    nonce = nonce_of(r)
    assert not re.search(r'\ssrc="https://stats', r.text)
    assert 'data-consent-src="https://stats.example.net/t.js"' in r.text
    assert f'nonce="{nonce}"' in r.text
    assert r.text.startswith("<tr><td>3</td><td><script ") and r.text.endswith("</script></td></tr>")
    assert not any(s in r.text for s in INJECTED)


@pytest.mark.parametrize("kind", FRAGMENT_HEADERS)
async def test_a_page_asked_for_as_a_fragment_gets_nothing_injected(client, kind) -> None:
    """htmx, Turbo frames and XHR swap the answer into a page that has its banner already."""
    doc = "<!doctype html><html><head><title>t</title></head><body>" + TRACKER + "<p>hi</p></body></html>"
    r = await client.get("/whole", params={"raw": doc, "cookie": "1"}, headers=FRAGMENT_HEADERS[kind])
    assert not any(s in r.text for s in INJECTED)
    assert 'data-consent-src="https://stats.example.net/t.js"' in r.text
    assert f'nonce="{nonce_of(r)}"' in r.text
    neutralised = re.search(r"<script[^>]*></script>", r.text)
    assert neutralised and r.text == doc.replace(TRACKER, neutralised.group(0))
    cookies = r.headers.get_list("set-cookie")
    assert any(c.startswith("booking_session=") for c in cookies)
    assert not any(c.startswith("_ads=") for c in cookies) and not any("csrf" in c for c in cookies)
    # the same page asked for plainly gets its banner, as it does with other values of those headers
    for plain in ({}, {"hx-request": "false"}, {"x-requested-with": "fetch"}):
        r = await client.get("/whole", params={"raw": doc}, headers=plain)
        assert all(s in r.text for s in INJECTED), plain


@pytest.mark.parametrize("params", [{"doc": "doctype"}, {"row": "li"}])
async def test_html_we_touch_varies_on_the_fragment_headers(client, params) -> None:
    """R35: a shared cache must not hand a page's fragment answer to a page load, nor the reverse."""
    for headers in ({}, FRAGMENT_HEADERS["htmx"]):
        r = await client.get("/whole", params=params, headers=headers)
        vary = {t.strip().lower() for t in r.headers["vary"].split(",")}
        assert {"cookie", "sec-gpc", "hx-request", "turbo-frame", "x-requested-with"} <= vary


async def test_a_page_with_the_banner_varies_on_accept_language(client) -> None:
    """R14, R35: a page without a `lang` gets its banner in the visitor's Accept-Language, so a cache
    (the browser's own included) must not hand the Swedish banner to an English visitor."""
    page = "<!doctype html><html><head><title>t</title></head><body><p>x</p></body></html>"
    en = await client.get("/whole", params={"raw": page}, headers={"accept-language": "en"})
    sv = await client.get("/whole", params={"raw": page}, headers={"accept-language": "sv"})
    assert 'lang="en"' in en.text and 'lang="sv"' in sv.text
    vary = {t.strip().lower() for t in sv.headers["vary"].split(",")}
    assert "accept-language" in vary
