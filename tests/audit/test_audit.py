"""The audit view (R25) and the visitor's receipt (R24), mounted in a tiny Starlette app."""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from consent_banner.audit import build_audit_app, daily_chart, receipt
from consent_banner.config import ConsentConfig
from consent_banner.consent import ConsentCodec
from consent_banner.log import BlockedAttempt, Decision
from consent_banner.log.export import read_rows

from ..log.conftest import SECRET, VERSION_EN
from ..log.rawdb import RawDB

MakeDecision = Callable[..., Decision]
USER, PASSWORD, TOKEN = "auditor", "correct horse battery staple", "t" * 40
BASIC = {"authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}
BEARER = {"authorization": f"Bearer {TOKEN}"}
AUDIT = "/_consent/audit"

CONFIG = ConsentConfig.from_dict(
    {
        "policy_revision": "2026-01",
        "controller": "Example <AB>",
        "privacy_policy_url": "/privacy",
        "languages": ["en", "sv"],
        "categories": {
            "necessary": {"label": "Necessary"},
            "analytics": {"label": "Statistics"},
            "marketing": {"label": "Marketing"},
        },
    }
)
ENV = {"CONSENT_AUDIT_USER": USER, "CONSENT_AUDIT_PASSWORD": PASSWORD, "CONSENT_AUDIT_TOKEN": TOKEN}


def site(log: Any, environ: dict[str, str]) -> Starlette:
    """A site mounting the audit view and the receipt where the middleware puts them."""
    codec = ConsentCodec([SECRET], revision="2026-01", lifetime=3600, categories=["analytics", "marketing"])

    async def receipt_route(request: Request) -> Response:
        return await receipt(request, codec.decode(request.cookies.get("consent")), log)

    routes: list[Any] = [Route("/_consent/receipt", receipt_route)]
    audit = build_audit_app(CONFIG, log, environ)
    if audit is not None:
        routes.append(Mount(AUDIT, app=audit))
    app = Starlette(routes=routes)
    app.state.codec = codec
    return app


@pytest.fixture
async def client(log: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = site(log, ENV)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        c.codec = app.state.codec  # type: ignore[attr-defined]
        yield c


async def fill(log: Any, decision: MakeDecision, n: int) -> list[Any]:
    out = []
    for i in range(n):
        action = ("accept_all", "reject_all", "custom", "withdraw")[i % 4]
        granted = ("necessary", "analytics") if action in ("accept_all", "custom") else ("necessary",)
        denied = tuple(c for c in ("analytics", "marketing") if c not in granted)
        out.append(
            await log.append(
                decision(consent_id=f"aud-{i:018d}", action=action, granted=granted, denied=denied)
            )
        )
    return out


# --- access ----------------------------------------------------------------------------------------


def test_no_credentials_no_audit_routes(log: Any) -> None:
    """R25: without configured credentials the audit app does not exist (the middleware answers 404)."""
    assert build_audit_app(CONFIG, log, {}) is None
    assert build_audit_app(CONFIG, log, {"CONSENT_AUDIT_USER": USER}) is None  # half a pair is nothing
    assert build_audit_app(CONFIG, log, {"CONSENT_AUDIT_TOKEN": TOKEN}) is not None


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Basic " + base64.b64encode(f"{USER}:wrong".encode()).decode()},
        {"authorization": "Basic " + base64.b64encode(f"someone:{PASSWORD}".encode()).decode()},
        {"authorization": "Basic " + base64.b64encode(USER.encode()).decode()},
        {"authorization": "Basic !!not-base64!!"},
        {"authorization": "Bearer " + "x" * 40},
        {"authorization": "Bearer"},
        {"authorization": f"Token {TOKEN}"},
    ],
)
async def test_wrong_credentials_get_401(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    """R25: missing or wrong credentials get 401 with a challenge, on every audit route."""
    for path in ("/", "/records", "/chain", "/export.csv", "/records/1"):
        r = await client.get(AUDIT + path, headers=headers)
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"].startswith('Basic realm="consent-banner audit"')
        assert "Bearer" in r.headers["www-authenticate"]
        assert r.headers["cache-control"] == "no-store"


async def test_basic_and_bearer_both_work(client: httpx.AsyncClient) -> None:
    """R25: HTTP Basic or a bearer token, each from the environment."""
    assert (await client.get(AUDIT + "/", headers=BASIC)).status_code == 200
    assert (await client.get(AUDIT + "/", headers=BEARER)).status_code == 200


async def test_token_only_refuses_basic(log: Any) -> None:
    """R25: a scheme that is not configured is refused."""
    app = site(log, {"CONSENT_AUDIT_TOKEN": TOKEN})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        r = await c.get(AUDIT + "/", headers=BASIC)
        assert r.status_code == 401 and r.headers["www-authenticate"] == 'Bearer realm="consent-banner audit"'
        assert (await c.get(AUDIT + "/", headers=BEARER)).status_code == 200


# --- pages -----------------------------------------------------------------------------------------


async def test_dashboard_totals_and_inline_charts(
    client: httpx.AsyncClient, log: Any, decision: MakeDecision
) -> None:
    """Dashboard: totals, an inline SVG chart per day by action, acceptance per category; nothing external."""
    await fill(log, decision, 8)
    r = await client.get(AUDIT + "/", headers=BASIC)
    assert r.status_code == 200
    html = r.text
    assert re.search(r"<b>8</b>\s*decisions", html)
    assert html.count("<svg") >= 2
    assert 'fill="#1b7f3b"><title>' in html and ": 2 accept_all</title>" in html
    assert "Statistics: 50.0% of 8" in html  # label from the config, 4 of 8 granted analytics
    assert "Marketing: 0.0% of 8" in html
    # Nothing fetched from elsewhere: no script, no external src/href, a strict CSP with a nonce.
    assert "<script" not in html
    assert not re.search(r'(src|href)="https?://', html)
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    nonce = re.search(r"'nonce-([^']+)'", csp).group(1)  # type: ignore[union-attr]
    assert f'<style nonce="{nonce}">' in html
    assert "style=" not in html  # inline style attributes would be blocked by that CSP
    # Links are under the mount point.
    assert f'href="{AUDIT}/records"' in html and f'href="{AUDIT}/export.csv"' in html
    assert "Example &lt;AB&gt;" in html  # config text escaped (R36)


async def test_records_list_filters_and_pages(
    client: httpx.AsyncClient, log: Any, decision: MakeDecision
) -> None:
    """Records: filtered, newest first, 50 a page, with a link to the older ones."""
    await fill(log, decision, 120)
    first = await client.get(AUDIT + "/records", headers=BASIC)
    seqs = [int(s) for s in re.findall(r'/records/(\d+)">', first.text)]
    assert seqs == list(range(120, 70, -1))
    assert "120 records match" in first.text
    nxt = re.search(r'href="([^"]+)" rel="next"', first.text).group(1)  # type: ignore[union-attr]
    second = await client.get(nxt.replace("&amp;", "&"), headers=BASIC)
    assert [int(s) for s in re.findall(r'/records/(\d+)">', second.text)] == list(range(70, 20, -1))
    only = await client.get(AUDIT + "/records", params={"action": "withdraw"}, headers=BASIC)
    assert "30 records match" in only.text
    assert set(re.findall(r"<td>(accept_all|reject_all|custom|withdraw)</td>", only.text)) == {"withdraw"}
    one = await client.get(AUDIT + "/records", params={"consent_id": "aud-000000000000000007"}, headers=BASIC)
    assert [int(s) for s in re.findall(r'/records/(\d+)">', one.text)] == [8]
    bad = await client.get(AUDIT + "/records", params={"since": "yesterday"}, headers=BASIC)
    assert bad.status_code == 400 and "since: &#39;yesterday&#39; is not a date" in bad.text


async def test_record_and_its_banner_version(
    client: httpx.AsyncClient, log: Any, decision: MakeDecision
) -> None:
    """R20: from a record the auditor opens the exact banner version the visitor saw; texts are escaped."""
    version = {**VERSION_EN, "texts": {"title": "We use <script>alert(1)</script> cookies"}}
    rec = await log.append(decision(version=version))
    page = await client.get(f"{AUDIT}/records/{rec.seq}", headers=BASIC)
    assert page.status_code == 200
    assert rec.hash in page.text and rec.consent_id in page.text
    link = f"{AUDIT}/versions/{rec.version_id}"
    assert f'href="{link}"' in page.text
    v = await client.get(link, headers=BASIC)
    assert v.status_code == 200
    assert "We use &lt;script&gt;alert(1)&lt;/script&gt; cookies" in v.text
    assert "<script>" not in v.text
    assert (await client.get(f"{AUDIT}/records/999", headers=BASIC)).status_code == 404
    assert (await client.get(f"{AUDIT}/versions/{'0' * 64}", headers=BASIC)).status_code == 404


async def test_chain_status(
    client: httpx.AsyncClient, log: Any, log_url: str, decision: MakeDecision
) -> None:
    """R22: the audit view shows the chain status, and the first bad record after tampering."""
    recs = await fill(log, decision, 6)
    ok = await client.get(AUDIT + "/chain", headers=BASIC)
    assert f"6 records, chain intact, head {recs[-1].hash}" in ok.text
    async with RawDB(log_url) as raw:
        await raw.allow_tampering()
        await raw.execute("UPDATE records SET revision = 'older' WHERE seq = 4")
    bad = await client.get(AUDIT + "/chain", headers=BASIC)
    assert "record 4: changed" in bad.text and f'href="{AUDIT}/records/4"' in bad.text


async def test_blocked_attempts_page(client: httpx.AsyncClient, log: Any) -> None:
    """The blocked-attempts list from CSP reports."""
    await log.add_blocked(BlockedAttempt("/pricing", "https://ads.example.com", "img-src", None))
    await log.flush()  # CSP reports are written by the writer when it is idle
    r = await client.get(AUDIT + "/blocked", headers=BASIC)
    assert "https://ads.example.com" in r.text and "/pricing" in r.text


@pytest.mark.parametrize("fmt", ["csv", "ndjson"])
async def test_downloads_round_trip(
    client: httpx.AsyncClient, log: Any, decision: MakeDecision, fmt: str
) -> None:
    """CSV and NDJSON downloads carry exactly the stored records, filter included."""
    recs = await fill(log, decision, 9)
    r = await client.get(f"{AUDIT}/export.{fmt}", params={"action": "reject_all"}, headers=BASIC)
    assert r.status_code == 200
    assert r.headers["content-disposition"].startswith("attachment;")
    assert list(read_rows(io.StringIO(r.text))) == [x.row() for x in recs if x.action == "reject_all"]
    assert (await client.get(f"{AUDIT}/export.xml", headers=BASIC)).status_code == 404
    cps = await client.get(f"{AUDIT}/checkpoints.ndjson", headers=BASIC)
    assert [json.loads(line)["log_id"] for line in cps.text.splitlines()] == [log.log_id]


def test_daily_chart_fills_missing_days() -> None:
    """The chart has a slot for every day in the period, even days without decisions."""
    chart = daily_chart({"2026-01-01": {"accept_all": 2}, "2026-01-03": {"reject_all": 1, "accept_all": 1}})
    assert chart["first"] == "2026-01-01" and chart["last"] == "2026-01-03" and chart["top"] == 2
    xs = sorted({b.x for b in chart["bars"]})
    assert len(xs) == 2 and xs[1] - xs[0] > 1.5 * (chart["width"] - 52) / 3


# --- receipt ---------------------------------------------------------------------------------------


async def test_receipt_shows_only_the_callers_records(
    client: httpx.AsyncClient, log: Any, decision: MakeDecision
) -> None:
    """R24: the holder of a valid consent cookie sees their own records, HTML and JSON, nobody else's."""
    from consent_banner.consent import Consent

    mine = [
        await log.append(decision(consent_id="mine-00000000000000001", action=a))
        for a in ("accept_all", "withdraw")
    ]
    await log.append(decision(consent_id="theirs-000000000000001"))
    cookie = client.codec.encode(
        Consent(
            id="mine-00000000000000001",
            granted=frozenset(),  # type: ignore[attr-defined]
            revision="2026-01",
            source="settings",
        )
    )
    client.cookies.set("consent", cookie)
    j = await client.get(
        "/_consent/receipt",
        headers={"accept": "application/json"},
        params={"consent_id": "theirs-000000000000001"},
    )  # a parameter cannot widen it
    assert j.status_code == 200 and j.headers["cache-control"] == "no-store"
    body = j.json()
    assert body["consent_id"] == "mine-00000000000000001"
    assert [r["hash"] for r in body["records"]] == [r.hash for r in mine]
    html = await client.get("/_consent/receipt")
    assert html.headers["content-type"].startswith("text/html")
    assert "Accepted all" in html.text and "Withdrew consent" in html.text and mine[1].hash in html.text
    assert "theirs" not in html.text
    sv = await client.get("/_consent/receipt", headers={"accept-language": "sv-SE,sv;q=0.9"})
    assert "Ditt samtyckeskvitto" in sv.text and 'lang="sv"' in sv.text
    assert (await client.get("/_consent/receipt", params={"format": "json"})).json()["records"][0][
        "action"
    ] == "accept_all"


@pytest.mark.parametrize("cookie", [None, "forged.value.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"])
async def test_receipt_without_a_valid_cookie_shows_nothing(
    client: httpx.AsyncClient, log: Any, decision: MakeDecision, cookie: str | None
) -> None:
    """R24: no (valid) cookie, no records."""
    await log.append(decision())
    if cookie:
        client.cookies.set("consent", cookie)
    j = await client.get("/_consent/receipt?format=json")
    assert j.json() == {"consent_id": None, "records": []}
    html = await client.get("/_consent/receipt")
    assert "No consent decision is recorded for this browser." in html.text


async def test_unreadable_log_answers_503(client: httpx.AsyncClient, log: Any, log_url: str) -> None:
    """Fail closed: when the log cannot be read, the audit view and the receipt say so (503)."""
    from consent_banner.consent import Consent

    async with RawDB(log_url) as raw:
        await raw.execute("ALTER TABLE records RENAME TO records_gone")
    assert (await client.get(AUDIT + "/records", headers=BASIC)).status_code == 503
    cookie = client.codec.encode(Consent(id="c" * 22, revision="2026-01"))  # type: ignore[attr-defined]
    client.cookies.set("consent", cookie)
    assert (await client.get("/_consent/receipt")).status_code == 503
