"""A page's Link response header names no host the consent state denies (issue 15, fonts and media):
`Link: <https://fonts.gstatic.com>; rel=preconnect` reaches the vendor with no fetch any policy could
refuse, and a `rel=preload` of a stylesheet or font is admitted by the undecided page's may-grant
style-src/font-src. The gate drops such link-values from HTML pages, keeps the rest as written."""

from __future__ import annotations

import time

from starlette.applications import Starlette
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from consent_banner.consent import UNDECIDED
from consent_banner.gate import ResponseGate
from consent_banner.gate.linkheader import filter_link

from .conftest import OWN, client, consent, gated, make_config

PAGE = "<!doctype html><html><head><title>t</title></head><body><p>hi</p></body></html>"
OWN_PRELOAD = b"</app.css>; rel=preload; as=style"
CDN = b"<https://cdn.example.com/f.woff2>; rel=preload; as=font; crossorigin"


def app_with(links: list[bytes]) -> Starlette:
    async def page(request):  # type: ignore[no-untyped-def]
        r = HTMLResponse(PAGE)
        r.raw_headers.extend((b"link", v) for v in links)
        return r

    async def data(request):  # type: ignore[no-untyped-def]
        r: Response = JSONResponse({"a": 1})
        r.raw_headers.extend((b"link", v) for v in links)
        return r

    return Starlette(routes=[Route("/", page), Route("/api", data)])


async def links(gate: ResponseGate, the_consent, sent: list[bytes], path: str = "/") -> list[str]:  # type: ignore[no-untyped-def]
    async with client(gated(app_with(sent), gate, the_consent)) as c:
        return (await c.get(path)).headers.get_list("link")


async def test_a_preconnect_or_preload_of_an_undecided_service_is_dropped(gate: ResponseGate) -> None:
    """R2: before a decision the ad host's preconnect, dns-prefetch and preload leave the header; the
    site's own preload and the necessary CDN's stay, as written (before: all passed)."""
    sent = [
        b"<https://ads.example.org>; rel=preconnect, " + OWN_PRELOAD,
        b"<//x.adnet.example>; rel=dns-prefetch",  # protocol-relative, a wildcard origin's subdomain
        b'<https://STATS.example.net/s.css>; rel=preload; as=style; title="a, b"',
        CDN,
    ]
    assert await links(gate, UNDECIDED, sent) == [OWN_PRELOAD.decode(), CDN.decode()]
    rejected = await links(gate, consent(), sent)
    assert rejected == [OWN_PRELOAD.decode(), CDN.decode()]


async def test_what_is_granted_keeps_its_links(gate: ResponseGate) -> None:
    sent = [b"<https://ads.example.org>; rel=preconnect, " + OWN_PRELOAD, CDN]
    assert await links(gate, consent("marketing"), sent) == [v.decode() for v in sent]


async def test_a_comma_inside_a_target_or_a_quoted_parameter_does_not_split_a_link() -> None:
    hosts = ResponseGate(make_config(), own_cookie_names=OWN).plan(UNDECIDED).hosts
    value = (
        b'</a,b.css>; rel=preload; title="see <https://ads.example.org>, later", <https://ads.example.org/x>'
    )
    assert (
        filter_link(value, hosts) == b'</a,b.css>; rel=preload; title="see <https://ads.example.org>, later"'
    )
    assert filter_link(b"<https://ads.example.org/x>; rel=preload", hosts) is None
    # no readable target, yet naming a denied host: dropped (fail closed); the rest kept
    assert filter_link(b"https://ads.example.org; rel=preconnect, " + OWN_PRELOAD, hosts) == OWN_PRELOAD


async def test_links_of_responses_that_are_not_pages_pass_untouched(gate: ResponseGate) -> None:
    sent = [b"<https://ads.example.org>; rel=preconnect"]
    assert await links(gate, UNDECIDED, sent, path="/api") == [sent[0].decode()]


def test_a_hostile_link_value_is_read_in_linear_time() -> None:
    hosts = ResponseGate(make_config(), own_cookie_names=OWN).plan(UNDECIDED).hosts
    for value in (b"<" * 200_000, b'"' + b"\\" * 200_000, b"<https://ads.example.org" + b";" * 200_000):
        start = time.perf_counter()
        filter_link(value, hosts)
        assert time.perf_counter() - start < 0.5
