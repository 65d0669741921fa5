"""`consent-banner scan` in Chromium against a page that writes hostile storage keys (issue 12,
item 10): the JUnit file stays valid XML and the table cannot drive the terminal.

The site is one page under ConsentMiddleware whose own script (same origin, allowed by the policy)
writes localStorage keys holding terminal escapes (hide a line, set the window title, plant a
link), NUL (which XML 1.0 cannot hold at all), an 8-bit CSI, DEL, a line feed and a right-to-left
override, before any decision.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from click.testing import CliRunner
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from consent_banner import ConsentConfig, ConsentMiddleware
from consent_banner.scan import DEFAULT_BROWSER, scan

KEY = "k\x1b[2K\x1b]0;owned\x07\x1b]8;;https://evil.example/\x1b\\x\x9b1A\x7f\x00\nERROR fake\u202e"
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
TOML = """
policy_revision = "2026-11-01"
controller = "Example AB"
privacy_policy_url = "/privacy"
log = "memory://"
decision_rate_limit = "off"
[cookie]
secure = false
[categories.necessary]
label = "Necessary"
[categories.analytics]
label = "Analytics"
"""


async def home(request: Request) -> HTMLResponse:
    return HTMLResponse(
        "<!doctype html><html lang='en'><head><title>Shop</title><script src='/app.js'></script></head>"
        "<body><h1>Shop</h1></body></html>"
    )


async def app_js(request: Request) -> Response:
    # JSON's string escapes are JavaScript's: the key arrives in the page exactly as KEY.
    import json

    return Response(f"localStorage.setItem({json.dumps(KEY)}, '1');", media_type="text/javascript")


@contextmanager
def serving(toml: Path) -> Iterator[str]:
    config = ConsentConfig.from_toml(toml)
    app = ConsentMiddleware(
        Starlette(routes=[Route("/", home), Route("/app.js", app_js)]),
        config=config,
        secret_keys=["scan-hostile-key-0123456789-0123456789-abc"],
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    # lifespan on: its shutdown is what closes the middleware's log (off, its connection was left to the GC)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", timeout_keep_alive=1))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the test site did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def test_scan_of_a_page_with_hostile_storage_keys_writes_valid_junit_and_a_safe_table(
    tmp_path: Path,
) -> None:
    toml = tmp_path / "consent.toml"
    toml.write_text(TOML)
    junit = tmp_path / "scan.xml"
    with serving(toml) as url:
        base = ["--config", str(toml), "--pages", "1", "--browser-path", DEFAULT_BROWSER]
        as_junit = CliRunner().invoke(scan, [url, *base, "--format", "junit", "--output", str(junit)])
        as_table = CliRunner().invoke(scan, [url, *base, "--suggest"])
    assert as_junit.exit_code == 1, as_junit.output  # the undeclared key is an error finding
    root = ET.fromstring(junit.read_bytes())  # Chromium saw the key; the file still parses
    failures = "\n".join(f.text or "" for f in root.iter("failure"))
    assert "k\\u001b[2K\\u001b]0;owned\\u0007" in failures and "\\u0000\\u000aERROR fake\\u202e" in failures
    assert as_table.exit_code == 1, as_table.output
    assert not RAW_CONTROL.search(as_table.output), repr(as_table.output)
    assert "localStorage.k\\u001b[2K" in as_table.output
    assert not any(line.startswith("ERROR fake") for line in as_table.output.splitlines())
