"""`consent-banner scan` in Chromium against the demo, and against a variant with planted faults.

Each site runs here on free loopback ports in a background thread: the demo (server/) with its five
third parties on 127.0.0.2-6, built with `server.app.build`; the faulty variant is that same demo
wrapped in a small "front" app, as a site's own routes and its load balancer would be, with one
test-only page per fault:

- /fault/: a first-party script adds the ads pixel at runtime. The HTML rewrite sees only a
  same-origin script, and the CSP's img-src allows the declared ads host.
- /fault/js-cookie: a script writes the analytics cookie _st_ses before any decision;
  document.cookie never crosses the server.
- /fault/sticky: the load balancer adds an undeclared HttpOnly cookie, outside the middleware.
- /fault/survivor: a script writes the marketing cookie _ads on the page's own path, where the
  server's expiry on Reject all (Path=/) cannot reach it.
- /fault/long-lived: the app sets booking_session (necessary, declared "session") for a year;
  necessary cookies pass the gate whatever their lifetime.
- /fault/legacy: a page served outside the middleware loads an image from an undeclared CDN; it
  has no banner, so the scanner posts the decision itself.

The variant's config also declares a "heatmap" service the site never uses (a stale declaration).
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from click.testing import CliRunner
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from consent_banner import ConsentMiddleware
from consent_banner.scan import scan

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `server` is the repository's demo package, not an installed one
    sys.path.insert(0, str(ROOT))

from server.app import build  # noqa: E402
from server.thirdparty import PIXEL_GIF, THIRD_PARTIES, build_third_party  # noqa: E402

KEY = "scan-test-key-0123456789-0123456789-abcdef"
CDN_ADDRESS = "127.0.0.7"  # the legacy page's image host: declared by no service
BROWSER = "/usr/bin/chromium"


# --- serving --------------------------------------------------------------------------------------


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
def _serving(apps: list[tuple[ASGIApp, socket.socket, bool]]) -> Iterator[None]:
    """Serves each (app, socket, lifespan) in one background thread until the block ends."""
    servers = [
        uvicorn.Server(
            uvicorn.Config(
                app, log_level="warning", lifespan="on" if lifespan else "off", timeout_keep_alive=1
            )
        )
        for app, _, lifespan in apps
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
        yield
    finally:
        for s in servers:
            s.should_exit = True
        thread.join(10)
        for _, sock, _ in apps:
            sock.close()


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"


def dump_toml(data: dict[str, Any]) -> str:
    """Enough TOML for a consent.toml: every key on one line, tables inline."""
    return "".join(f"{json.dumps(k)} = {_toml_value(v)}\n" for k, v in data.items())


@dataclass
class Site:
    url: str
    config_path: Path
    third_parties: dict[str, str]
    cdn: str


# --- the faulty variant ---------------------------------------------------------------------------

FAULT_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>{head}</head>
<body><main><h1>{title}</h1>{body}</main></body></html>
"""
FAULT_LINKS = [
    "/fault/js-cookie",
    "/fault/sticky",
    "/fault/survivor",
    "/fault/long-lived",
    "/fault/legacy",
    "/",
]
NOT_DECIDED = "!/(^|; )consent=/.test(document.cookie)"
SCRIPTS = {
    # runs on every load, whatever the consent: the pixel is created after the HTML left the server
    "runtime-pixel": "new Image(1, 1).src = {ads} + '/px.gif?e=runtime';",
    "js-cookie": f"if ({NOT_DECIDED}) document.cookie = '_st_ses=1; path=/; max-age=1800; SameSite=Lax';",
    "survivor": (
        f"if ({NOT_DECIDED}) document.cookie = '_ads=x; path=/fault/survivor; max-age=7776000; SameSite=Lax';"
    ),
}


def _fault_page(title: str, script: str | None = None, body: str = "") -> HTMLResponse:
    head = f'<script src="/fault/static/{script}.js"></script>' if script else ""
    return HTMLResponse(FAULT_PAGE.format(title=title, head=head, body=body))


def fault_app(ads_origin: str) -> Starlette:
    """The site's own test-only pages (they run behind ConsentMiddleware like the rest)."""

    async def index(request: Request) -> Response:
        links = "".join(f'<p><a href="{href}">{href}</a></p>' for href in FAULT_LINKS)
        return _fault_page("Faults", "runtime-pixel", links)

    async def js_cookie(request: Request) -> Response:
        return _fault_page("JS cookie", "js-cookie")

    async def sticky(request: Request) -> Response:
        return _fault_page("Sticky session")

    async def survivor(request: Request) -> Response:
        return _fault_page("Survivor", "survivor")

    async def long_lived(request: Request) -> Response:
        response = _fault_page("Long-lived booking")
        response.set_cookie("booking_session", "b1", max_age=365 * 86400, httponly=True, samesite="lax")
        return response

    async def script(request: Request) -> Response:
        body = SCRIPTS[request.path_params["name"]].replace("{ads}", json.dumps(ads_origin))
        return Response(body, media_type="text/javascript")

    return Starlette(
        routes=[
            Route("/fault/", index),
            Route("/fault/js-cookie", js_cookie),
            Route("/fault/sticky", sticky),
            Route("/fault/survivor", survivor),
            Route("/fault/long-lived", long_lived),
            Route("/fault/static/{name}.js", script),
        ]
    )


class Front:
    """What sits in front of the demo on the faulty site: its load balancer, which adds a sticky
    session cookie, a legacy page mounted outside the middleware, and the /fault/ pages."""

    def __init__(self, demo: ASGIApp, faults: ASGIApp, cdn: str) -> None:
        self.demo, self.faults, self.cdn = demo, faults, cdn

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith("/fault/"):
            await self.demo(scope, receive, send)
        elif path == "/fault/legacy":
            page = _fault_page("Legacy", body=f'<img src="{self.cdn}/pixel.gif" width="1" height="1" alt="">')
            await page(scope, receive, send)
        elif path == "/fault/sticky":
            await self.faults(scope, receive, self._sticky(send))
        else:
            await self.faults(scope, receive, send)

    @staticmethod
    def _sticky(send: Send) -> Send:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                cookie = b"lb_sticky=node-3; Path=/; HttpOnly; SameSite=Lax"
                message = {**message, "headers": [*message["headers"], (b"set-cookie", cookie)]}
            await send(message)

        return sending


def _cdn_app() -> Starlette:
    async def pixel(request: Request) -> Response:
        return Response(PIXEL_GIF, media_type="image/gif")

    return Starlette(routes=[Route("/pixel.gif", pixel)])


@contextmanager
def demo_site(tmp: Path, *, faulty: bool) -> Iterator[Site]:
    """The demo (with the planted faults when `faulty`) on free ports, and its consent.toml."""
    tp_sockets = {name: _bind(address) for name, (address, _) in THIRD_PARTIES.items()}
    cdn_socket = _bind(CDN_ADDRESS)
    site_socket = _bind("127.0.0.1")
    origins = {name: _origin(s) for name, s in tp_sockets.items()}
    with (ROOT / "server" / "consent.toml").open("rb") as f:
        data = tomllib.load(f)
    for service in data["services"]:
        if service["name"] in origins:
            service["origins"] = [origins[service["name"]]]
    if faulty:
        data["services"].append(
            {
                "name": "heatmap",
                "category": "analytics",
                "provider": "Heatwave Ltd",
                "purpose": "Records clicks (declared, never used)",
                "origins": ["https://heat.example.net"],
                "cookies": [{"name": "_hw_*", "lifetime": "1 year"}],
            }
        )
    data["log"] = f"sqlite:///{tmp / 'consent-log.db'}"
    config_path = tmp / "consent.toml"
    config_path.write_text(dump_toml(data), encoding="utf-8")

    app, info = build(third_parties=origins, secret_keys=[KEY], overrides=data)
    if faulty:
        faults = ConsentMiddleware(
            fault_app(origins["ads"]),
            config=info["config"].model_copy(update={"log": "memory://"}),
            secret_keys=[KEY],
        )
        app = Front(app, faults, _origin(cdn_socket))
    apps: list[tuple[ASGIApp, socket.socket, bool]] = [
        (app, site_socket, True),
        (_cdn_app(), cdn_socket, False),
    ]
    apps += [(build_third_party(name, origins[name])[0], sock, False) for name, sock in tp_sockets.items()]
    with _serving(apps):
        yield Site(_origin(site_socket), config_path, origins, _origin(cdn_socket))


def run_cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(scan, [*args, "--browser-path", BROWSER], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


# --- tests ----------------------------------------------------------------------------------------


def test_scan_of_the_demo_is_clean(tmp_path: Path) -> None:
    """R1, R2, R16, R5: the demo keeps its declaration: no error in any state on the crawled pages,
    exit status 0. The only warnings are the two services a crawl cannot reach (booking_session
    comes from the booking form's POST, _mkt_src from a campaign link); --exclude keeps matching
    links out of the crawl; the JSON report holds every page's three states."""
    with demo_site(tmp_path, faulty=False) as site:
        out = tmp_path / "report.json"
        code, stdout, _ = run_cli(
            site.url + "/",
            "--config",
            str(site.config_path),
            "--pages",
            "3",
            "--exclude",
            "^/(book|privacy)",
            "--format",
            "json",
            "--output",
            str(out),
        )
        assert stdout == ""
        report = json.loads(out.read_text())
        assert code == 0, report["findings"]
        assert [p["path"] for p in report["pages"]] == ["/", "/sv/", "/offices/stockholm"]
        assert [f for f in report["findings"] if f["severity"] == "error"] == []
        assert {(f["kind"], f["subject"]) for f in report["findings"]} == {
            ("stale-declaration", "booking"),
            ("stale-declaration", "campaigns"),
        }
        home = report["pages"][0]["states"]
        assert {c["name"] for c in home["before"]["cookies"]} == {"consent_csrf"}
        assert set(h["origin"] for h in home["before"]["hosts"]) == {site.url}
        assert {c["name"] for c in home["reject"]["cookies"]} == {"consent", "consent_csrf"}
        accepted = {h["origin"] for h in home["accept"]["hosts"]}
        assert set(site.third_parties.values()) <= accepted  # the scanner did see the trackers run
        assert {"_st_id.1", "_ga_demo"} <= {c["name"] for c in home["accept"]["cookies"]}
        assert home["reject"]["decision_via"] == home["accept"]["decision_via"] == "banner"


def test_scan_of_a_site_with_planted_faults_finds_each_one(tmp_path: Path) -> None:
    """R1, R2, R5, R16: each planted fault is its own finding on its own page with the right
    severity and the evidence of what happened (see the module docstring); --suggest proposes TOML
    for the undeclared cookie and host, never as necessary; the exit status is 1."""
    with demo_site(tmp_path, faulty=True) as site:
        code, table, _ = run_cli(
            site.url + "/fault/",
            "--config",
            str(site.config_path),
            "--pages",
            "7",
            "--suggest",
        )
        assert code == 1, table
    ads, cdn = site.third_parties["ads"], site.cdn
    expected = {
        ("ERROR", "R2", "/fault/", ads),
        ("ERROR", "R16", "/fault/", ads),
        ("ERROR", "R1", "/fault/js-cookie", "_st_ses (127.0.0.1)"),
        ("ERROR", "R5", "/fault/sticky", "lb_sticky (127.0.0.1)"),
        ("ERROR", "R1", "/fault/survivor", "_ads (127.0.0.1)"),
        ("ERROR", "R16", "/fault/survivor", "_ads (127.0.0.1)"),
        ("ERROR", "R5", "/fault/long-lived", "booking_session (127.0.0.1)"),
        ("WARNING", "R5", "/fault/legacy", cdn),
        ("WARNING", "R5", "(site)", "heatmap"),
        ("WARNING", "R5", "(site)", "campaigns"),
    }
    rows = {tuple(line.split(None, 3)) for line in table.splitlines() if re.match(r"(ERROR|WARNING) ", line)}
    assert rows == expected, table
    # the evidence says what happened, where
    text = " ".join(table.split())
    assert re.search(
        r"_ads \(service ads\) survives Reject all - after Reject all: domain 127.0.0.1, "
        r"path /fault/survivor, [^;]*; set by a script \(no Set-Cookie header stored it\); was there "
        r"before the decision; the expiry sent by GET \S+/fault/survivor \(Path=/\) did not reach it",
        text,
    )
    assert "lb_sticky (HttpOnly) is not declared in consent.toml" in text
    assert f"HttpOnly, lifetime left session; set by GET {site.url}/fault/sticky" in text
    assert "_st_ses (service stats) is stored before any decision" in text
    assert re.search(r"booking_session lives 36[45] days, longer than the 'session' declared", text)
    assert f"first {ads}/px.gif?e=runtime" in text
    for path in ("/fault/", *FAULT_LINKS):
        assert re.search(rf"^{re.escape(path)}\s+200\s", table, re.M), path
    assert "7 errors, 3 warnings" in table

    suggested = table.split("# Proposed for consent.toml", 1)[1]
    blocks = tomllib.loads(suggested.split("\n", 1)[1])["services"]
    assert {c["name"] for b in blocks for c in b.get("cookies", [])} == {"lb_sticky"}
    assert [o for b in blocks for o in b.get("origins", [])] == [cdn]
    assert all(b["category"] != "necessary" for b in blocks)
