"""A cross-site page cannot record a decision for the visitor, in a real browser (R34).

The site runs on http://127.0.0.1:P; an attacker's page on http://127.0.0.2:Q (another site for
the browser) tries to record "accept all" for the visitor who has the site open: with fetch (CORS
and no-cors), with a form post, and with a navigation. All fail and nothing is logged. The same
request from the site itself, and from the partner origin listed in `allowed_origins`
(http://127.0.0.3:R), is recorded: the refusals are the origin checks, not a broken endpoint.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from consent_banner import ConsentConfig
from consent_banner.scan import DEFAULT_BROWSER
from consent_banner.scan.crawl import CHROMIUM_ARGS  # the launch flags this machine needs, in one place

from ..conftest import make_app
from .conftest import free_port, sqlite_path, write_config

CHROMIUM = DEFAULT_BROWSER

ATTACKS: dict[str, str] = {
    # fetch with the JSON the script sends: needs a CORS preflight, which an unlisted origin fails.
    "fetch-cors": """
        fetch(TARGET, {method: "POST", credentials: "include", headers: {"content-type": "application/json"},
                       body: JSON.stringify({action: "accept_all"})})
          .then(r => { document.title = "status " + r.status; }, e => { document.title = "blocked"; });
    """,
    # no-cors: a "simple" request that is sent without a preflight (the answer is opaque).
    "fetch-no-cors-text": """
        fetch(TARGET, {method: "POST", mode: "no-cors", credentials: "include",
                       headers: {"content-type": "text/plain"}, body: JSON.stringify({action: "accept_all"})})
          .then(() => { document.title = "sent"; }, () => { document.title = "blocked"; });
    """,
    "fetch-no-cors-form": """
        fetch(TARGET, {method: "POST", mode: "no-cors", credentials: "include",
                       headers: {"content-type": "application/x-www-form-urlencoded"},
                       body: "action=accept_all&csrf=guess"})
          .then(() => { document.title = "sent"; }, () => { document.title = "blocked"; });
    """,
    "sendbeacon": """
        document.title = navigator.sendBeacon(TARGET, new Blob([JSON.stringify({action: "accept_all"})],
                                              {type: "text/plain"})) ? "sent" : "blocked";
    """,
    # a form post, as the banner's own no-JavaScript form does (but without the visitor's token).
    "form-post": """
        const f = document.createElement("form");
        f.method = "POST"; f.action = TARGET;
        for (const [k, v] of [["action", "accept_all"], ["csrf", "guess"], ["return_to", "/"]]) {
          const i = document.createElement("input"); i.name = k; i.value = v; f.appendChild(i);
        }
        document.body.appendChild(f); f.submit();
    """,
    # a top-level navigation (GET) to the decision endpoint, as a link or redirect would do.
    "navigation": """
        location.href = TARGET + "?action=accept_all";
    """,
    "withdraw-form": """
        const f = document.createElement("form");
        f.method = "POST"; f.action = TARGET + "/withdraw";
        document.body.appendChild(f); f.submit();
    """,
}

# As the shipped script does on an embedding site: no cookies cross-origin, the signed token comes
# back in the answer and the site keeps it as its own first-party cookie.
PARTNER_JS = """
    fetch(TARGET, {method: "POST", credentials: "omit", headers: {"content-type": "application/json"},
                   body: JSON.stringify({action: "accept_all"})})
      .then(r => r.json()).then(j => { document.title = "ok " + (j.token ? "token" : "no-token"); },
                                e => { document.title = "blocked"; });
"""


def _page_app(scripts: dict[str, str], target: str) -> ASGIApp:
    async def page(request: Request) -> HTMLResponse:
        if request.path_params["name"] not in scripts:
            return HTMLResponse("not here", status_code=404)
        js = scripts[request.path_params["name"]].replace("TARGET", json.dumps(target))
        return HTMLResponse(
            f"<!doctype html><html><head><title>loading</title></head><body>"
            f"<script>{js}</script></body></html>"
        )

    return Starlette(routes=[Route("/{name}", page)])


class Served:
    """One uvicorn server in a thread, on a given loopback address."""

    def __init__(self, app: ASGIApp, host: str, port: int) -> None:
        self.server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=host,
                port=port,
                log_level="warning",
                lifespan="on" if hasattr(app, "routes") else "off",
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)


def records(db: Path) -> int:
    """Records in the site's log (read directly: Playwright's sync API owns this thread's loop)."""
    if not db.exists():
        return 0
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT count(*) FROM records").fetchone()[0])
    except sqlite3.OperationalError:  # not created yet
        return 0
    finally:
        conn.close()


@pytest.fixture
def sites(tmp_path: Path) -> Iterator[dict[str, Any]]:
    site_port, evil_port, partner_port = (
        free_port("127.0.0.1"),
        free_port("127.0.0.2"),
        free_port("127.0.0.3"),
    )
    site, evil, partner = (
        f"http://127.0.0.1:{site_port}",
        f"http://127.0.0.2:{evil_port}",
        f"http://127.0.0.3:{partner_port}",
    )
    config = ConsentConfig.from_toml(write_config(tmp_path, allowed_origins=json.dumps([partner])))
    app = make_app(config)
    target = f"{site}/_consent"
    with (
        Served(app, "127.0.0.1", site_port),
        Served(_page_app(ATTACKS, target), "127.0.0.2", evil_port),
        Served(_page_app({"partner": PARTNER_JS}, target), "127.0.0.3", partner_port),
    ):
        yield {"site": site, "evil": evil, "partner": partner, "log": sqlite_path(config.log)}


def test_cross_site_pages_cannot_record_a_decision(sites: dict[str, Any]) -> None:
    """R34: fetch (CORS, no-cors, beacon), form posts and a navigation from another site record
    nothing and leave the visitor undecided; from the site itself and from the allowed partner
    origin the same decision is recorded."""
    from playwright.sync_api import sync_playwright

    db: Path = sites["log"]
    outcomes: dict[str, str] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()
            visitor = context.new_page()
            visitor.goto(sites["site"] + "/")  # a real visitor: the page, its banner, its form token
            assert any(c["name"] == "consent_csrf" for c in context.cookies())
            # answers of the site's consent endpoints, preflights and the failure page's stylesheet aside
            seen: list[tuple[str, int]] = []
            context.on(
                "response",
                lambda r: (
                    seen.append((r.request.method, r.status))
                    if r.url.startswith(sites["site"] + "/_consent")
                    and r.request.method != "OPTIONS"
                    and not r.url.startswith(sites["site"] + "/_consent/consent.css")
                    else None
                ),
            )
            attacker = context.new_page()
            for name in ATTACKS:
                before = len(seen)
                attacker.goto(f"{sites['evil']}/{name}")
                deadline = time.monotonic() + 10
                while len(seen) == before and time.monotonic() < deadline:
                    if name == "fetch-cors" and attacker.title() == "blocked":
                        break  # the preflight failed: the POST was never sent
                    attacker.wait_for_timeout(50)
                outcomes[name] = str(seen[-1][1]) if len(seen) > before else attacker.title()
                attacker.wait_for_timeout(100)
                state = visitor.evaluate("fetch('/_consent/state').then(r => r.json())")
                assert state["decided"] is False, f"R34: {name} recorded a decision for the visitor"
                assert records(db) == 0, f"R34: {name} wrote a record"
            assert all(s in ("403", "405", "415", "blocked") for s in outcomes.values()), outcomes

            # Positive controls: the same decision from the site itself, then from the partner.
            status = visitor.evaluate("""fetch('/_consent', {method: 'POST', headers: {'content-type':
                'application/json'}, body: JSON.stringify({action: 'accept_all'})}).then(r => r.status)""")
            assert status == 200
            assert records(db) == 1
            partner = context.new_page()
            partner.goto(f"{sites['partner']}/partner")
            partner.wait_for_function("document.title !== 'loading'", timeout=10_000)
            assert partner.title() == "ok token"
            assert records(db) == 2
        finally:
            browser.close()
    print(f"\n[forgery] cross-site attempts answered: {outcomes}")
