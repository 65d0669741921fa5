"""Content-Security-Policy per consent state, merged with the app's own; CSP violation reports."""

from __future__ import annotations

import json

import pytest
from starlette.applications import Starlette
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from consent_banner.gate import ResponseGate
from consent_banner.gate.csp import MAX_REPORT_BYTES, intersect, merge, parse_policies, parse_reports

from .conftest import NONCE, OWN, client, consent, gated, make_config

PAGE = "<!doctype html><html><head><title>t</title></head><body><p>hi</p></body></html>"


def html_app(
    headers: dict[str, str] | None = None, raw: list[tuple[bytes, bytes]] | None = None
) -> Starlette:
    async def page(request):  # type: ignore[no-untyped-def]
        r = HTMLResponse(PAGE, headers=headers)
        if raw:
            r.raw_headers.extend(raw)
        return r

    async def data(request):  # type: ignore[no-untyped-def]
        return JSONResponse({"a": 1})

    return Starlette(routes=[Route("/", page), Route("/api", data)])


def directives(value: str) -> dict[str, list[str]]:
    [policy] = parse_policies(value)
    return policy


async def get(gate: ResponseGate, the_consent, path: str = "/", **app_kw):  # type: ignore[no-untyped-def]
    async with client(gated(html_app(**app_kw), gate, the_consent)) as c:
        return await c.get(path)


async def test_rejected_policy_names_only_self_nonce_and_necessary_origins(gate: ResponseGate) -> None:
    """R2, R16, R32: after a refusal no tracker origin is allowed anywhere; our snippet has the nonce."""
    r = await get(gate, consent())
    policy = directives(r.headers["content-security-policy"])
    assert policy["script-src"] == ["'self'", f"'nonce-{NONCE}'", "https://cdn.example.com"]
    for name in ("connect-src", "frame-src"):
        assert policy[name] == ["'self'", "https://cdn.example.com"]
    assert policy["img-src"] == ["'self'", "data:", "https://cdn.example.com"]
    assert policy["default-src"] == ["'self'", "https://cdn.example.com"]
    assert policy["style-src"] == ["'self'", "'unsafe-inline'", "https://cdn.example.com"]
    assert policy["font-src"] == ["'self'", "data:", "https://cdn.example.com"]
    assert policy["object-src"] == ["'none'"] and policy["base-uri"] == ["'self'"]
    header = r.headers["content-security-policy"]
    assert "stats.example.net" not in header and "adnet" not in header and "video.example.tv" not in header


async def test_undecided_policy_admits_what_this_page_may_still_grant(gate: ResponseGate) -> None:
    """R2: before a decision the markup is neutralised (and cookies dropped), while the policy admits the
    declared services so that a decision on this page activates them without a reload; undeclared origins
    stay out, and what GPC denies never enters."""
    from consent_banner.consent import UNDECIDED

    policy = directives((await get(gate, UNDECIDED)).headers["content-security-policy"])
    for origin in ("https://stats.example.net", "https://ads.example.org", "https://video.example.tv"):
        for name in ("connect-src", "img-src", "frame-src"):
            assert origin in policy[name]
        assert origin not in policy["script-src"]  # an injected tracker script never runs before consent
    gpc = (await get(gate, UNDECIDED.with_gpc(frozenset({"marketing"})))).headers["content-security-policy"]
    assert "stats.example.net" in gpc and "ads.example.org" not in gpc and "adnet.example" not in gpc


async def test_granted_services_origins_enter_the_four_directives(gate: ResponseGate) -> None:
    """R2: granted services' origins go into script-src, connect-src, img-src, frame-src; denied nowhere."""
    r = await get(gate, consent("analytics", "media"))
    policy = directives(r.headers["content-security-policy"])
    for name in ("script-src", "connect-src", "img-src", "frame-src"):
        assert "https://stats.example.net" in policy[name]
        assert "https://video.example.tv" in policy[name]
    assert "ads.example.org" not in r.headers["content-security-policy"]


async def test_gpc_removes_marketing_origins_after_an_opt_in(gate: ResponseGate) -> None:
    """R26, R27: with GPC, an earlier marketing opt-in no longer opens the marketing origins."""
    opted_in = consent("marketing")
    assert "https://ads.example.org" in (await get(gate, opted_in)).headers["content-security-policy"]
    r = await get(gate, opted_in.with_gpc(frozenset({"marketing"})))
    assert "ads.example.org" not in r.headers["content-security-policy"]
    assert "adnet.example" not in r.headers["content-security-policy"]


async def test_reporting_endpoints_and_report_uri(gate: ResponseGate) -> None:
    """Violations are reported to {prefix}/csp-report, legacy report-uri and Reporting API."""
    r = await get(gate, consent())
    policy = directives(r.headers["content-security-policy"])
    assert policy["report-uri"] == ["/_consent/csp-report"]
    assert policy["report-to"] == ["consent-banner"]
    assert r.headers["reporting-endpoints"] == 'consent-banner="/_consent/csp-report"'


async def test_nonce_is_per_response(gate: ResponseGate) -> None:
    """R36: each response carries the nonce it was given, never a cached one."""
    app = html_app()
    seen = set()
    for nonce in ("FirstNonce123", "SecondNonce456"):
        async with client(gated(app, gate, consent(), nonce=nonce)) as c:
            seen.add(directives((await c.get("/")).headers["content-security-policy"])["script-src"][1])
    assert seen == {"'nonce-FirstNonce123'", "'nonce-SecondNonce456'"}


async def test_a_nonce_that_could_inject_header_text_is_refused(gate: ResponseGate) -> None:
    """R36: the nonce goes into a header; anything but base64 characters is refused."""
    with pytest.raises(ValueError, match="nonce"):
        async with client(gated(html_app(), gate, consent(), nonce="a'; script-src *")) as c:
            await c.get("/")


async def test_json_responses_get_no_policy(gate: ResponseGate) -> None:
    """R35: a JSON response without cookies does not depend on consent: no CSP, no Vary."""
    r = await get(gate, consent(), "/api")
    assert "content-security-policy" not in r.headers and "vary" not in r.headers


async def test_html_responses_vary_on_cookie_and_gpc(gate: ResponseGate) -> None:
    """R35: the HTML's policy and body depend on consent: Vary: Cookie, Sec-GPC."""
    r = await get(gate, consent())
    assert r.headers["vary"] == "Cookie, Sec-GPC"


async def test_app_policy_is_merged_into_one_stricter_header(gate: ResponseGate) -> None:
    """R2: an app CSP is merged, not replaced: one header, per directive the stricter of both."""
    app_csp = (
        "default-src 'self'; script-src 'self' https://stats.example.net https://cdn.example.com "
        "'unsafe-inline' 'nonce-AppNonce'; img-src *; object-src 'none'; frame-ancestors 'none'"
    )
    r = await get(gate, consent("analytics"), headers={"content-security-policy": app_csp})
    assert len(r.headers.get_list("content-security-policy")) == 1
    policy = directives(r.headers["content-security-policy"])
    # both sides' inline grants survive, 'unsafe-inline' only the app had does not
    assert set(policy["script-src"]) == {
        "'self'",
        "https://stats.example.net",
        "https://cdn.example.com",
        "'nonce-AppNonce'",
        f"'nonce-{NONCE}'",
    }
    # img-src *: ours is stricter, except that * does not allow data:; connect-src: the app's
    # default-src 'self' is stricter than ours
    assert policy["img-src"] == ["'self'", "https://cdn.example.com", "https://stats.example.net"]
    assert policy["connect-src"] == ["'self'"]
    assert policy["frame-src"] == ["'self'"]
    # directives only one side has are kept
    assert policy["object-src"] == ["'none'"] and policy["frame-ancestors"] == ["'none'"]
    assert policy["default-src"] == ["'self'"]
    assert policy["report-uri"] == ["/_consent/csp-report"]


async def test_app_policy_allowing_a_denied_tracker_does_not_let_it_through(gate: ResponseGate) -> None:
    """R2: an app that allows a tracker origin cannot widen our policy while the visitor refuses."""
    app_csp = "script-src 'self' https://ads.example.org https:; connect-src *"
    r = await get(gate, consent(), headers={"content-security-policy": app_csp})
    header = r.headers["content-security-policy"]
    assert "ads.example.org" not in header
    assert directives(header)["connect-src"] == ["'self'", "https://cdn.example.com"]


async def test_several_app_policies_fold_into_one_header(gate: ResponseGate) -> None:
    """R2: two CSP headers from the app (two policies) end as one header as strict as both."""
    raw = [
        (b"content-security-policy", b"img-src 'self' https://cdn.example.com"),
        (b"content-security-policy", b"img-src https://cdn.example.com; report-uri /app-report"),
    ]
    r = await get(gate, consent(), raw=raw)
    [header] = r.headers.get_list("content-security-policy")
    policy = directives(header)
    assert policy["img-src"] == ["https://cdn.example.com"]
    assert policy["report-uri"] == ["/app-report", "/_consent/csp-report"]


async def test_report_only_mode_sends_report_only_header_and_leaves_enforced_app_policy() -> None:
    """Csp = "report-only" sends the Report-Only header; the app's enforced policy stays as it is."""
    gate = ResponseGate(make_config(csp="report-only"), own_cookie_names=OWN)
    r = await get(gate, consent(), headers={"content-security-policy": "frame-ancestors 'none'"})
    assert r.headers["content-security-policy"] == "frame-ancestors 'none'"
    ro = directives(r.headers["content-security-policy-report-only"])
    assert ro["script-src"][:2] == ["'self'", f"'nonce-{NONCE}'"]


async def test_csp_off_sends_no_policy() -> None:
    """Csp = "off" leaves the policy to the app."""
    gate = ResponseGate(make_config(csp="off"), own_cookie_names=OWN)
    r = await get(gate, consent(), headers={"content-security-policy": "img-src 'self'"})
    assert r.headers.get_list("content-security-policy") == ["img-src 'self'"]
    assert "reporting-endpoints" not in r.headers


async def test_existing_reporting_endpoints_are_kept(gate: ResponseGate) -> None:
    """The app's Reporting-Endpoints stay; ours is added to the same header."""
    r = await get(
        gate,
        consent(),
        headers={"reporting-endpoints": 'app="/r"', "content-security-policy": "report-to app"},
    )
    assert r.headers["reporting-endpoints"] == 'app="/r", consent-banner="/_consent/csp-report"'
    assert directives(r.headers["content-security-policy"])["report-to"] == ["app"]


async def test_root_path_prefixes_the_report_endpoint(gate: ResponseGate) -> None:
    """Behind a root_path the endpoint is where the browser can reach it."""
    app = gated(html_app(), gate, consent())

    async def rooted(scope, receive, send):  # type: ignore[no-untyped-def]
        await app({**scope, "root_path": "/site"}, receive, send)

    async with client(rooted) as c:
        r = await c.get("/")
    assert "report-uri /site/_consent/csp-report" in r.headers["content-security-policy"]


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (["https:"], ["https://x.example"], ["https://x.example"]),
        (["*.example.com"], ["https://a.example.com", "https://example.com"], ["https://a.example.com"]),
        (
            ["https://x.example/js/"],
            ["https://x.example/js/a.js", "https://x.example/b.js"],
            ["https://x.example/js/a.js"],
        ),
        (["'none'"], ["'self'", "'nonce-x'"], ["'none'"]),
        (["'self'", "'unsafe-eval'"], ["'self'"], ["'self'"]),
        (
            ["'self'", "'strict-dynamic'", "'nonce-a'"],
            ["'self'", "'nonce-b'"],
            ["'self'", "'nonce-a'", "'nonce-b'"],
        ),
        (["https://x.example:8443"], ["https://x.example"], ["'none'"]),
        (["*"], ["data:", "https://a.example"], ["https://a.example"]),
        (["'self'"], ["https://www.example.com"], ["'self'", "https://www.example.com"]),
    ],
)
def test_intersection_of_source_lists(a: list[str], b: list[str], expected: list[str]) -> None:
    """R2: the merged list never allows what either side refuses."""
    assert intersect(a, b, self_origin="https://www.example.com") == expected


def test_fallback_chain_applies_the_app_default_to_our_directives() -> None:
    """R2: an app's script-src-elem (more specific than our script-src) is narrowed by ours too."""
    app = {"script-src-elem": ["https:"], "default-src": ["'self'", "https:"]}
    ours = {"script-src": ["'self'", "'nonce-n'", "https://stats.example.net"]}
    merged = merge(app, ours, self_origin="https://www.example.com")
    assert set(merged["script-src-elem"]) == {"https://stats.example.net", "'self'", "'nonce-n'"}
    assert merged["script-src"] == ["'self'", "'nonce-n'", "https://stats.example.net"]


# --- reports -----------------------------------------------------------------------------------------


def test_parse_legacy_report() -> None:
    """The legacy application/csp-report body gives page path, blocked origin, directive."""
    body = json.dumps(
        {
            "csp-report": {
                "document-uri": "https://www.example.com/shop?q=secret#x",
                "blocked-uri": "https://stats.example.net/collect?id=1",
                "violated-directive": "script-src-elem",
                "effective-directive": "script-src-elem",
                "original-policy": "...",
            }
        }
    ).encode()
    assert parse_reports(body, "application/csp-report") == [
        ("/shop", "https://stats.example.net", "script-src-elem")
    ]


def test_parse_reporting_api_batch() -> None:
    """The Reporting API's application/reports+json list; other report types are skipped."""
    body = json.dumps(
        [
            {
                "type": "csp-violation",
                "url": "https://www.example.com/a",
                "body": {
                    "documentURL": "https://www.example.com/a?x=1",
                    "blockedURL": "inline",
                    "effectiveDirective": "script-src-elem",
                    "disposition": "enforce",
                },
            },
            {"type": "deprecation", "body": {"id": "x"}},
            {
                "type": "csp-violation",
                "body": {
                    "documentURL": "https://www.example.com/b",
                    "blockedURL": "https://px.adnet.example:8443/p.gif",
                    "effectiveDirective": "img-src",
                },
            },
        ]
    ).encode()
    assert parse_reports(body, "application/reports+json; charset=utf-8") == [
        ("/a", "inline", "script-src-elem"),
        ("/b", "https://px.adnet.example:8443", "img-src"),
    ]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"not json", "application/csp-report"),
        (
            b'{"csp-report": {"document-uri": "https://x/", "blocked-uri": "javascript:x", '
            b'"violated-directive": "script-src"}}',
            "application/csp-report",
        ),
        (
            b'{"csp-report": {"document-uri": "https://x/", "blocked-uri": "https://t.example", '
            b'"violated-directive": "script-src; DROP"}}',
            "application/csp-report",
        ),
        (b'{"csp-report": {}}', "text/plain"),
        (b"[" + b'{"type": "csp-violation", "body": {}},' * 10 + b"{}]", "application/reports+json"),
        (b'"a string"', "application/json"),
    ],
)
def test_malformed_reports_are_skipped(body: bytes, content_type: str) -> None:
    """Malformed, hostile or foreign bodies yield nothing and never raise."""
    assert parse_reports(body, content_type) == []


def test_oversized_report_bodies_and_batches_are_bounded() -> None:
    """Report bodies over the size bound are ignored; a batch is read up to a bounded count."""
    one = {
        "type": "csp-violation",
        "body": {
            "documentURL": "https://w.example/",
            "blockedURL": "eval",
            "effectiveDirective": "script-src",
        },
    }
    assert len(parse_reports(json.dumps([one] * 100).encode(), "application/reports+json")) == 20
    big = json.dumps(
        {
            "csp-report": {
                "document-uri": "https://w/",
                "blocked-uri": "eval",
                "violated-directive": "script-src",
                "pad": "x" * MAX_REPORT_BYTES,
            }
        }
    )
    assert parse_reports(big.encode(), "application/csp-report") == []


async def test_plain_http_reports_with_report_uri_only(gate: ResponseGate) -> None:
    """Chromium ignores report-uri when report-to is present, and the Reporting API needs a secure
    origin: on http the policy names report-uri alone, so violation reports reach us."""
    async with client(gated(html_app(), gate, consent()), base_url="http://site.example") as c:
        r = await c.get("/")
    policy = directives(r.headers["content-security-policy"])
    assert "report-uri" in policy and "report-to" not in policy and "reporting-endpoints" not in r.headers


# --- issue 12: the policy for hostile input -------------------------------------------------------

MAY_GRANT = ("https://stats.example.net", "https://ads.example.org", "https://video.example.tv")
TRACKER_PAGE = b'<html><head></head><body><img src="https://stats.example.net/p.gif"></body></html>'


def raw_app(body: bytes | list[bytes], headers: list[tuple[bytes, bytes]]):  # type: ignore[no-untyped-def]
    """An ASGI app sending `body` (a list: one message per part) with exactly `headers`."""
    parts = body if isinstance(body, list) else [body]

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for i, part in enumerate(parts):
            await send({"type": "http.response.body", "body": part, "more_body": i < len(parts) - 1})

    return app


async def raw_get(gate: ResponseGate, the_consent, body, headers):  # type: ignore[no-untyped-def]
    async with client(gated(raw_app(body, headers), gate, the_consent)) as c:
        return await c.get("/")


def admits_may_grant(r) -> bool:  # type: ignore[no-untyped-def]
    header = r.headers["content-security-policy"]
    return any(origin in header for origin in MAY_GRANT)


async def test_policy_confines_every_fetch_to_self_and_grants(gate: ResponseGate) -> None:
    """Issue 12 items 1, 2: default-src, style-src (with 'unsafe-inline', never a nonce), font-src and
    media-src of a decided visitor carry what is granted; object-src 'none' and base-uri 'self' always.
    Before a decision default-src still carries only what is granted (the may-grant origins of the other
    directives: `test_undecided_styles_fonts_and_media_admit_what_may_be_granted`)."""
    from consent_banner.consent import UNDECIDED

    for the_consent, granted in ((consent("analytics"), ["https://stats.example.net"]), (UNDECIDED, [])):
        policy = directives((await get(gate, the_consent)).headers["content-security-policy"])
        cdn = ["https://cdn.example.com", *granted]
        assert policy["default-src"] == ["'self'", *cdn]
        if the_consent.decided:
            assert policy["style-src"] == ["'self'", "'unsafe-inline'", *cdn]
            assert policy["font-src"] == ["'self'", "data:", *cdn]
            assert policy["media-src"] == ["'self'", "blob:", *cdn]
        assert policy["object-src"] == ["'none'"] and policy["base-uri"] == ["'self'"]


async def test_undecided_styles_fonts_and_media_admit_what_may_be_granted(gate: ResponseGate) -> None:
    """R2 (issue 15, fonts and media): before a decision style-src, font-src and an explicit media-src
    admit the services the visitor may still grant on this page, like connect/img/frame-src, so that a
    theme's Google Fonts link or a video activated by Accept loads without a reload; script-src and
    default-src keep only what is granted. What GPC denies appears in no directive; once decided, or
    under csp_undecided = "strict", only what is granted."""
    from consent_banner.consent import UNDECIDED

    policy = directives((await get(gate, UNDECIDED)).headers["content-security-policy"])
    for origin in MAY_GRANT:
        for name in ("style-src", "font-src", "media-src"):
            assert origin in policy[name], (name, origin)
        for name in ("script-src", "default-src"):
            assert origin not in policy[name], (name, origin)
    assert policy["style-src"][:2] == ["'self'", "'unsafe-inline'"]  # never a nonce beside it
    assert not any(s.startswith("'nonce-") for s in policy["style-src"])

    gpc = directives(
        (await get(gate, UNDECIDED.with_gpc(frozenset({"marketing"})))).headers["content-security-policy"]
    )
    for name, sources in gpc.items():
        assert not any("ads.example.org" in s or "adnet.example" in s for s in sources), name
    assert "https://stats.example.net" in gpc["font-src"]

    rejected = (await get(gate, consent())).headers["content-security-policy"]
    strict = ResponseGate(make_config(csp_undecided="strict"), own_cookie_names=OWN)
    undecided_strict = (await get(strict, UNDECIDED)).headers["content-security-policy"]
    for header in (rejected, undecided_strict):
        assert not any(origin in header for origin in MAY_GRANT)
        assert directives(header)["media-src"] == ["'self'", "blob:", "https://cdn.example.com"]


async def test_merging_keeps_the_stricter_style_and_base_rules(gate: ResponseGate) -> None:
    """Issue 12 item 2: merged with the app's policy, per directive the stricter wins: an app that
    allows inline styles only by nonce keeps it so; the app's base-uri 'none' and object-src stay."""
    app_csp = "style-src 'self' 'nonce-AppNonce'; base-uri 'none'; object-src 'self'; font-src *"
    r = await get(gate, consent(), headers={"content-security-policy": app_csp})
    policy = directives(r.headers["content-security-policy"])
    assert set(policy["style-src"]) == {"'self'", "'nonce-AppNonce'"}  # no 'unsafe-inline'
    assert policy["base-uri"] == ["'none'"] and policy["object-src"] == ["'none'"]
    assert policy["font-src"] == ["'self'", "https://cdn.example.com"]  # * allows no data:
    assert policy["default-src"] == ["'self'", "https://cdn.example.com"]


async def test_strict_undecided_policy_admits_only_what_is_granted() -> None:
    """Issue 12 item 3: csp_undecided = "strict": before a decision no may-grant origin appears."""
    from consent_banner.consent import UNDECIDED

    gate = ResponseGate(make_config(csp_undecided="strict"), own_cookie_names=OWN)
    r = await get(gate, UNDECIDED)
    assert not admits_may_grant(r)
    assert "https://cdn.example.com" in directives(r.headers["content-security-policy"])["img-src"]
    assert admits_may_grant(await get(ResponseGate(make_config(), own_cookie_names=OWN), UNDECIDED))


def test_csp_undecided_is_validated_by_name() -> None:
    """Issue 12 item 3: a bad csp_undecided is a config error naming the key."""
    from consent_banner import ConfigError

    with pytest.raises(ConfigError, match="csp_undecided"):
        make_config(csp_undecided="lenient")


async def test_xhtml_is_rewritten_under_a_granted_only_policy(gate: ResponseGate) -> None:
    """Issue 12 item 4: application/xhtml+xml is gated: trackers neutralised, the policy admits only
    what is granted (the XML parse finds elements HTML's does not), and no HTML banner is injected."""
    from consent_banner.consent import UNDECIDED

    r = await raw_get(gate, UNDECIDED, TRACKER_PAGE, [(b"content-type", b"application/xhtml+xml")])
    assert 'data-consent-src="https://stats.example.net/p.gif"' in r.text
    assert "data-consent-banner" not in r.text
    assert not admits_may_grant(r) and r.headers["vary"] == "Cookie, Sec-GPC"


async def test_a_body_without_content_type_gets_nosniff_and_the_policy(gate: ResponseGate) -> None:
    """Issue 12 item 4: a body with no Content-Type cannot be sniffed into an ungated page."""
    from consent_banner.consent import UNDECIDED

    r = await raw_get(gate, UNDECIDED, TRACKER_PAGE, [])
    assert r.headers["x-content-type-options"] == "nosniff"
    assert not admits_may_grant(r) and r.headers["vary"] == "Cookie, Sec-GPC"
    assert r.content == TRACKER_PAGE


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (b"text/html; charset=iso-2022-jp", TRACKER_PAGE),
        (b"text/html; charset=UTF-7", TRACKER_PAGE),
        (b"text/html; charset=hz-gb-2312", TRACKER_PAGE),
        (b"text/html; charset=utf-16le", TRACKER_PAGE.decode().encode("utf-16le")),
        (b"text/html; charset=utf-8", b"\xff\xfe" + TRACKER_PAGE.decode().encode("utf-16le")),  # BOM wins
        (b"text/html", b'<meta charset="ISO-2022-JP">' + TRACKER_PAGE),
        (
            b"text/html",
            [
                b"<!doctype html><me",
                b'ta http-equiv="content-type" content="text/html; ',
                b"charset=csiso2022jp",
                b'">',
                TRACKER_PAGE,
            ],
        ),
        (
            b"text/html",
            b'<!doctype html><p>\x1b$B$3\x1b(B</p><img src="https://st\x1b(Bats.example.net/p.gif">',
        ),
        # Chromium reads <meta> charsets on through <head>, past the first 1024 bytes
        (
            b"text/html",
            [b"<head><title>" + b"x" * 3000 + b"</title>", b'<meta charset="ISO-2022-JP">', TRACKER_PAGE],
        ),
        # a <head> longer than the gate holds: a <meta> charset may still follow
        (b"text/html", [b"<head><title>t</title><!--" + b"x" * 70000 + b"-->", TRACKER_PAGE]),
    ],
)
async def test_html_the_gate_cannot_read_passes_under_a_granted_only_policy(
    gate: ResponseGate, content_type: bytes, body: bytes | list[bytes]
) -> None:
    """Issue 12 item 5: a charset that is not ASCII-compatible (header, BOM, or a <meta> in the first
    1024 bytes when the header names none, also split over chunks): passed on unrewritten, with only
    granted origins in the policy, also undecided."""
    from consent_banner.consent import UNDECIDED

    r = await raw_get(gate, UNDECIDED, body, [(b"content-type", content_type)])
    assert r.content == (b"".join(body) if isinstance(body, list) else body)
    assert not admits_may_grant(r)


async def test_compressed_html_passes_under_a_granted_only_policy(gate: ResponseGate) -> None:
    """Issue 12 item 5: HTML the app compressed is not rewritten, so nothing ungranted is admitted."""
    import gzip

    from consent_banner.consent import UNDECIDED

    body = gzip.compress(TRACKER_PAGE)
    headers = [(b"content-type", b"text/html"), (b"content-encoding", b"gzip")]
    async with client(gated(raw_app(body, headers), gate, UNDECIDED)) as c:
        r = await c.get("/", headers={"accept-encoding": "gzip"})
    assert r.content == TRACKER_PAGE and not admits_may_grant(r)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (b"text/html", TRACKER_PAGE),
        (b"text/html; charset=utf-8", b'<meta charset="iso-2022-jp">' + TRACKER_PAGE),  # the header wins
        (b"text/html", b'<meta charset="windows-1252">' + TRACKER_PAGE),
        (b"text/html", b"\xef\xbb\xbf" + TRACKER_PAGE),
        (b"text/html; charset=bogus-label", TRACKER_PAGE),  # ignored by browsers: the body decides
        # labels Python knows but no browser decodes with: ignored, never used to encode the injection
        (b"text/html", b'<meta charset="base64"><meta charset="rot13">' + TRACKER_PAGE),
        (b"text/html; charset=undefined", b'<meta charset="cp037">' + TRACKER_PAGE),
    ],
)
async def test_readable_html_is_rewritten_and_may_grant(
    gate: ResponseGate, content_type: bytes, body: bytes
) -> None:
    """Issue 12 item 5: what the gate reads is rewritten, and undecided keeps the may-grant policy."""
    from consent_banner.consent import UNDECIDED

    r = await raw_get(gate, UNDECIDED, body, [(b"content-type", content_type)])
    assert b'data-consent-src="https://stats.example.net/p.gif"' in r.content
    assert admits_may_grant(r)
