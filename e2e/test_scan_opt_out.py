"""`consent-banner scan --header ...` in Chromium against the demo as a US controller (issue 17).

With Cloudflare's region headers naming California, the site gives the scanner the opt-out model, so
it checks the opt-out rules: trackers before a decision are allowed, Global Privacy Control and
"Do Not Sell or Share" must turn off marketing. Naming Sweden, the same site is scanned by the
opt-in rules. A planted fault: what sits in front of the site (a load balancer, a CDN rule) sets the
marketing cookie `_mkt_src` on every response, outside the middleware, so it is there with GPC and comes
back after "Do Not Sell or Share" however often the gate expires it.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from consent_banner import ConsentConfig
from consent_banner.scan import run_scan

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `server` is the repository's demo package, not an installed one
    sys.path.insert(0, str(ROOT))

from server.app import US_CONFIG, build  # noqa: E402
from server.thirdparty import THIRD_PARTIES, build_third_party  # noqa: E402

KEY = "scan-opt-out-key-0123456789-0123456789-abcdef"
BROWSER = "/usr/bin/chromium"
CALIFORNIA = {"CF-IPCountry": "US", "CF-Region-Code": "CA"}
PLANTED = b"_mkt_src=edge; Path=/; Max-Age=86400; HttpOnly; SameSite=Lax"


class PlantedCookie:
    """In front of the demo, outside its middleware (a load balancer, a CDN rule): every response
    also sets the marketing cookie _mkt_src, HttpOnly, so no script can remove it either."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                # After the gate's own headers: its expiry of the denied cookie comes first, and loses.
                message = {**message, "headers": [*message["headers"], (b"set-cookie", PLANTED)]}
            await send(message)

        await self.app(scope, receive, sending if scope["type"] == "http" else send)


def _bind(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(64)
    return sock


def _origin(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{host}:{port}"


@contextmanager
def us_site(tmp: Path, *, faulty: bool) -> Iterator[tuple[str, ConsentConfig]]:
    """The US demo (with the planted cookie when `faulty`) on free ports; (its URL, the config it
    runs with: the US file with the third parties' origins)."""
    sockets = {name: _bind(address) for name, (address, _) in THIRD_PARTIES.items()}
    site = _bind("127.0.0.1")
    origins = {name: _origin(s) for name, s in sockets.items()}
    app, info = build(US_CONFIG, third_parties=origins, workdir=tmp, secret_keys=[KEY])
    apps: list[tuple[ASGIApp, socket.socket, bool]] = [(PlantedCookie(app) if faulty else app, site, True)]
    apps += [(build_third_party(name, origins[name])[0], sock, False) for name, sock in sockets.items()]
    servers = [
        uvicorn.Server(
            uvicorn.Config(a, log_level="warning", lifespan="on" if ls else "off", timeout_keep_alive=1)
        )
        for a, _, ls in apps
    ]

    async def serve_all() -> None:
        await asyncio.gather(
            *(s.serve(sockets=[sock]) for s, (_, sock, _) in zip(servers, apps, strict=True))
        )

    thread = threading.Thread(target=lambda: asyncio.run(serve_all()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not all(s.started for s in servers):
        assert thread.is_alive() and time.monotonic() < deadline, "the test site did not start"
        time.sleep(0.02)
    try:
        yield _origin(site), info["config"]
    finally:
        for s in servers:
            s.should_exit = True
        thread.join(10)
        for _, sock, _ in apps:
            sock.close()


def scan_json(url: str, config: ConsentConfig, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    report = run_scan(config, url + "/", pages=1, browser_path=BROWSER, headers=headers)
    return report.exit_code, report.to_json()


def test_as_california_the_demo_keeps_the_opt_out_rules(tmp_path: Path) -> None:
    """R26, R29: scanned as California the model is opt-out; the trackers that run before a decision
    are no finding, GPC and Do Not Sell or Share keep the ads host and marketing cookies away: no error.
    As Sweden the same site is scanned by the opt-in rules (before, Reject all, Accept all)."""
    with us_site(tmp_path, faulty=False) as (url, config):
        code, report = scan_json(url, config, CALIFORNIA)
        errors = [f for f in report["findings"] if f["severity"] == "error"]
        assert code == 0 and errors == [], errors
        assert (report["model"], report["region"]) == ("opt-out", "US-CA")
        assert report["headers"] == ["CF-IPCountry", "CF-Region-Code"]
        [home] = report["pages"]
        states = home["states"]
        assert set(states) == {"before", "gpc", "opt_out"}
        [ads] = config.services_by_name["ads"].origins
        assert ads in {h["origin"] for h in states["before"]["hosts"]}  # ran before a decision: allowed
        assert ads not in {h["origin"] for h in states["gpc"]["hosts"]}
        after = {h["origin"]: h["after_decision"] for h in states["opt_out"]["hosts"]}
        assert after.get(ads, 0) == 0
        assert states["opt_out"]["decision_via"] == "banner" and states["opt_out"]["decision_error"] is None

        code, report = scan_json(url, config, {"CF-IPCountry": "SE"})
        assert (report["model"], report["region"]) == ("opt-in", "SE")
        assert set(report["pages"][0]["states"]) == {"before", "reject", "accept"}
        assert code == 0, report["findings"]


def test_a_marketing_cookie_despite_gpc_and_after_do_not_sell_is_found(tmp_path: Path) -> None:
    """R26, R29: the planted _mkt_src is an error with GPC and after Do Not Sell or Share
    (it comes back on the site's own host, which the gate expires), never before a decision."""
    with us_site(tmp_path, faulty=True) as (url, config):
        code, report = scan_json(url, config, CALIFORNIA)
    found = {
        (f["kind"], f["severity"], f["requirement"]) for f in report["findings"] if "_mkt_src" in f["subject"]
    }
    assert found == {("cookie-despite-gpc", "error", "R26"), ("cookie-after-opt-out", "error", "R29")}, found
    assert code == 1
