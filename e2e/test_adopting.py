"""The README's "Adopting an existing site", step by step, in Chromium (issue 14, item 6).

An existing page loads a script from its own CDN (another origin, 127.0.0.9) and has an inline
script and an inline click handler. Under `csp = "report-only"` it keeps working while the browser
reports what an enforced policy would block; `consent-banner scan` and a visitor browsing produce
reports; `consent-banner log blocked --suggest` prints the service to paste; once the CDN is declared
necessary and the inline code carries the nonce (the handler moved into a script), `csp = "enforce"`
blocks nothing on the page. Every command runs as the README writes it, as a subprocess.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

from conftest import ServerThread
from playwright.sync_api import BrowserContext, Page
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from consent_banner import ConsentConfig, ConsentMiddleware, csp_nonce
from tests.support.browser import wait_until  # a gated page's CSP refuses wait_for_function's eval

CLI = str(Path(sys.executable).with_name("consent-banner"))
BROWSER = "/usr/bin/chromium"
CDN_HOST = "127.0.0.9"
CONSENT_TOML = """
policy_revision = "2026-11-01"
controller = "Example Shop AB"
privacy_policy_url = "/privacy"
log = "sqlite:///{log}"
csp = "report-only"

[cookie]
secure = false

[categories.necessary]
label = "Necessary"
[categories.analytics]
label = "Analytics"
"""
LEGACY = """<!doctype html><html lang="en"><head><title>Shop</title>
<script src="{cdn}/shop.js"></script>
</head><body><h1>Shop</h1>
<button id="buy" onclick="buy()">Buy</button>
<script>window.inlineRan = true;</script>
</body></html>"""
HEAD = """<!doctype html><html lang="en"><head><title>Shop</title>
<script src="{cdn}/shop.js"></script>
</head><body><h1>Shop</h1>
"""
WATCH = (
    "window.violations = [];"
    "document.addEventListener('securitypolicyviolation', e => "
    "window.violations.push(e.effectiveDirective + ' ' + e.blockedURI));"
)


def _bind(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    return sock


def _cdn() -> Starlette:
    async def lib(request: Request) -> Response:
        return Response(
            'window.cdnLoaded = true; window.buy = () => { document.title = "bought"; };',
            media_type="text/javascript",
        )

    return Starlette(routes=[Route("/shop.js", lib)])


def _shop(toml: Path, cdn: str, fixed: bool) -> ConsentMiddleware:
    async def home(request: Request) -> HTMLResponse:
        if not fixed:
            return HTMLResponse(LEGACY.format(cdn=cdn))
        # The README's "Adopting an existing site", step 5, word for word after the page's head.
        n = csp_nonce(request)
        return HTMLResponse(
            HEAD.format(cdn=cdn)
            + f"""<button id="buy">Buy</button>
<script nonce="{n}">
  document.getElementById("buy").addEventListener("click", buy);
</script>"""
        )

    return ConsentMiddleware(Starlette(routes=[Route("/", home)]), config=ConsentConfig.from_toml(toml))


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=180, env=dict(os.environ))


def visit(context: BrowserContext, url: str) -> Page:
    """A visitor who looks at the page and clicks Buy (the click runs the handler, wherever it is)."""
    page = context.new_page()
    page.add_init_script(WATCH)
    page.goto(url)
    wait_until(page, "window.cdnLoaded === true || document.readyState === 'complete'")
    page.eval_on_selector("#buy", "b => b.click()")  # the banner may cover it; a click is a click
    return page


def test_adopting_an_existing_site_from_report_only_to_enforce(
    tmp_path: Path, new_context: Callable[..., BrowserContext]
) -> None:
    """R5: report-only, browse and scan, `log blocked`, paste `--suggest` (TODO decided), the nonce on
    inline code, then enforce: the page works and the browser reports no violation."""
    toml = tmp_path / "consent.toml"
    toml.write_text(textwrap.dedent(CONSENT_TOML.format(log=tmp_path / "consent-log.db")))
    cdn_sock = _bind(CDN_HOST)
    cdn = f"http://{CDN_HOST}:{cdn_sock.getsockname()[1]}"
    with ServerThread(_cdn(), cdn_sock):
        # 1. Report-only: nothing breaks, the browser reports what enforcing would block.
        shop_sock = _bind("127.0.0.1")
        url = f"http://127.0.0.1:{shop_sock.getsockname()[1]}/"
        with ServerThread(_shop(toml, cdn, fixed=False), shop_sock):
            page = visit(new_context(), url)
            assert page.evaluate("[window.cdnLoaded, window.inlineRan, document.title]") == [
                True,
                True,
                "bought",
            ]
            assert page.evaluate("window.violations.length") >= 3  # the CDN, the script, the handler
            scanned = cli("scan", url, "--config", str(toml), "--pages", "1", "--browser-path", BROWSER)
            assert scanned.returncode in (0, 1), scanned.stdout + scanned.stderr
            # 2. What was reported (reports arrive on their own time).
            deadline = time.monotonic() + 20
            while True:
                listed = cli("log", "blocked", "--config", str(toml))
                assert listed.returncode == 0, listed.stderr
                if all(s in listed.stdout for s in (cdn, "script-src-attr", "inline")):
                    break
                assert time.monotonic() < deadline, listed.stdout
                time.sleep(0.3)
        # 3. The suggestion: one client network here (the loopback), so --min-clients 1.
        default = cli("log", "blocked", "--suggest", "--config", str(toml))
        assert default.returncode == 0 and "[[services]]" not in default.stdout, default.stdout
        suggested = cli("log", "blocked", "--suggest", "--min-clients", "1", "--config", str(toml))
        assert suggested.returncode == 0, suggested.stderr
        (service,) = tomllib.loads(suggested.stdout)["services"]
        assert service["category"] == "TODO" and service["origins"] == [cdn]
        said = " ".join(line[2:] for line in suggested.stdout.splitlines() if line.startswith("# "))
        assert "csp_nonce(request)" in said
        # 4. Pasted as it is, the config refuses to load until the category is decided.
        toml.write_text(toml.read_text() + "\n" + suggested.stdout)
        refused = cli("log", "blocked", "--config", str(toml))
        assert refused.returncode == 1 and "still says 'TODO'" in refused.stderr, refused.stderr
        toml.write_text(
            toml.read_text()
            .replace('category = "TODO"', 'category = "necessary"')
            .replace('csp = "report-only"', 'csp = "enforce"')
        )
        # 5. Enforced before the inline code is fixed: the CDN loads, the inline code does not run.
        shop_sock = _bind("127.0.0.1")
        url = f"http://127.0.0.1:{shop_sock.getsockname()[1]}/"
        with ServerThread(_shop(toml, cdn, fixed=False), shop_sock):
            page = visit(new_context(), url)
            assert page.evaluate("[window.cdnLoaded, window.inlineRan ?? false, document.title]") == [
                True,
                False,
                "Shop",
            ]
        # 6. The nonce on the script, the handler moved into it: enforced, nothing is blocked.
        shop_sock = _bind("127.0.0.1")
        url = f"http://127.0.0.1:{shop_sock.getsockname()[1]}/"
        with ServerThread(_shop(toml, cdn, fixed=True), shop_sock):
            page = visit(new_context(), url)
            wait_until(page, "document.title === 'bought'")
            assert page.evaluate("[window.cdnLoaded, window.violations]") == [True, []]
            header = page.context.request.get(url).headers["content-security-policy"]
            assert re.search(rf"script-src [^;]*{re.escape(cdn)}", header), header
