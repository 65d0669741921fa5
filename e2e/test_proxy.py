"""The demo behind a real TLS-terminating reverse proxy: Debian's nginx in front of uvicorn (issue 14).

Chromium opens https://www.example.com:PORT/ (the name mapped to 127.0.2.1, where nginx listens with
a certificate made for this test by trustme); nginx terminates TLS and reaches uvicorn over plain
http from 127.0.3.1 (`proxy_bind`), so the proxy's address is not the browser's (127.0.0.1: the
kernel's source address for a connection within 127/8, which the access log confirms) even in its
/24. uvicorn runs the demo site (server/) as `uvicorn --proxy-headers --forwarded-allow-ips` would
run it in production, in its own process; nginx runs in the foreground as an unprivileged-style
process with its prefix, pid file, temp dirs and logs in the test's temporary directory. Both are
stopped by the fixture, and killed if they do not stop.

`NGINX` names the binary (default: Debian's /usr/sbin/nginx; `./run test` installs it when missing).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme
from conftest import CHROMIUM, CHROMIUM_ARGS
from playwright.sync_api import Browser, BrowserContext, Playwright, Response, expect

from tests.support.servers import Nginx, free_port, stop, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
SITE_HOST = "www.example.com"
PROXY_LISTEN = "127.0.2.1"  # where nginx listens: the browser reaches www.example.com there
PROXY_SOURCE = "127.0.3.1"  # where nginx connects to uvicorn from: the proxy's address, another /24
BROWSER_ADDRESS = "127.0.0.1"  # the kernel's source address for the browser's connection (checked)
OVERRIDES = "CONSENT_PROXY_TEST_OVERRIDES"  # the demo config's changes, for the server process

# The nginx config of the README's "Deploying" section (the paths and ports filled in here), inside
# `http {}`: Nginx adds the rest (the foreground process, the pid file, temp dirs and error log in tmp).
NGINX_HTTP = """\
    log_format proxied '$remote_addr "$request" $status xff="$proxy_add_x_forwarded_for"';
    access_log {access_log} proxied;

    upstream app {{
        server 127.0.0.1:{app_port};
    }}

    server {{
        listen {listen}:{port} ssl http2;
        server_name {site_host};
        ssl_certificate {tmp}/cert.pem;
        ssl_certificate_key {tmp}/key.pem;

        location / {{
            proxy_pass http://app;
            proxy_bind {source};
            proxy_set_header Host {upstream_host};
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}
"""


def demo_app() -> Any:
    """`uvicorn --factory test_proxy:demo_app`, in the server process: the demo site (server/) with the
    test's changes to its config (the log's path, `site_origins`, Secure cookies)."""
    from server.app import build

    app, _ = build(overrides=json.loads(os.environ[OVERRIDES]))
    return app


@dataclass
class Proxied:
    """The demo served through nginx: where the browser goes, and what the servers wrote down."""

    url: str  # https://www.example.com:PORT
    proxy: Nginx
    prefix: str = "/_consent"
    set_cookies: list[str] = field(default_factory=list)  # every Set-Cookie the browser received

    def access_log(self) -> list[str]:
        return self.proxy.access_lines()

    def record(self, response: Response) -> None:
        if response.url.startswith(self.url):
            self.set_cookies += [
                h["value"] for h in response.headers_array() if h["name"].lower() == "set-cookie"
            ]


@contextmanager
def proxied_demo(
    tmp: Path, *, site_origins: bool, proxy_headers: bool, upstream_host: str
) -> Iterator[Proxied]:
    """uvicorn running the demo, behind nginx terminating TLS for www.example.com."""
    ca = trustme.CA()
    cert = ca.issue_cert(SITE_HOST)
    cert.cert_chain_pems[0].write_to_path(str(tmp / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp / "key.pem"))
    with ExitStack() as stack:
        port = free_port(PROXY_LISTEN)
        url = f"https://{SITE_HOST}:{port}"
        overrides: dict[str, Any] = {"log": f"sqlite:///{tmp / 'consent-log.db'}", "cookie": {"secure": True}}
        if site_origins:
            overrides["site_origins"] = [url]
        env = {k: v for k, v in os.environ.items() if k != "FORWARDED_ALLOW_IPS"}  # uvicorn reads it
        env[OVERRIDES] = json.dumps(overrides)
        app_port = free_port("127.0.0.1")
        trust = ["--proxy-headers", "--forwarded-allow-ips", PROXY_SOURCE] if proxy_headers else []
        app_log = tmp / "uvicorn.log"
        out = stack.enter_context(app_log.open("wb"))
        factory = ["--factory", "test_proxy:demo_app", "--app-dir", str(ROOT / "e2e")]
        app = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", *factory, "--host", "127.0.0.1", "--port", str(app_port),
             "--log-level", "warning", *trust],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        stack.callback(stop, app)
        wait_for_port("127.0.0.1", app_port, server=app, log=app_log)

        proxy = Nginx(tmp, PROXY_LISTEN, port, error_level="info")
        http = NGINX_HTTP.format(
            access_log=proxy.access_log, tmp=tmp, app_port=app_port, listen=PROXY_LISTEN, port=port,
            site_host=SITE_HOST, source=PROXY_SOURCE, upstream_host=upstream_host,
        )  # fmt: skip
        proxy.start(http)
        stack.callback(proxy.stop)
        yield Proxied(url=url, proxy=proxy)


@pytest.fixture(scope="module")
def example_browser(playwright: Playwright) -> Iterator[Browser]:
    """Chromium resolving www.example.com to the proxy's address, as DNS would in production."""
    rules = f"--host-resolver-rules=MAP {SITE_HOST} {PROXY_LISTEN}"
    browser = playwright.chromium.launch(
        executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, rules], headless=True
    )
    yield browser
    browser.close()


@contextmanager
def visitor(browser: Browser, site: Proxied) -> Iterator[BrowserContext]:
    """A fresh browser context on the proxied site (the test's own CA is not installed: its errors
    are ignored, the page is https all the same) recording every Set-Cookie it receives."""
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 800})
    context.set_default_timeout(10000)
    context.on("response", site.record)
    try:
        yield context
    finally:
        context.close()


def receipt(context: BrowserContext, site: Proxied) -> list[dict[str, Any]]:
    """The visitor's own records, read by the browser (which alone resolves www.example.com here)."""
    page = context.new_page()
    response = page.goto(f"{site.url}{site.prefix}/receipt?format=json")
    assert response is not None and response.ok, response and response.text()[:300]
    records: list[dict[str, Any]] = response.json()["records"]
    page.close()
    return records


def own_cookies(context: BrowserContext) -> dict[str, dict[str, Any]]:
    return {c["name"]: dict(c) for c in context.cookies() if c["domain"] == SITE_HOST}


def decide(context: BrowserContext, site: Proxied, button: str) -> Response:
    """Clicks a banner button on the home page; the decision's response."""
    page = context.new_page()
    page.goto(site.url + "/")
    with page.expect_response(
        lambda r: r.url == site.url + site.prefix and r.request.method == "POST"
    ) as info:
        page.locator("#cb").get_by_role("button", name=button, exact=True).click()
    return info.value


# --- the issue, reproduced ---------------------------------------------------------------------------


def test_behind_nginx_without_site_origins_or_proxy_headers_every_decision_is_refused(
    example_browser: Browser, tmp_path: Path
) -> None:
    """Even with the Host passed on: uvicorn, not trusting the proxy, sees http, so this site's origin
    is http://www.example.com and the browser's https one is refused. Nothing recorded, no cookie."""
    with proxied_demo(tmp_path, site_origins=False, proxy_headers=False, upstream_host="$host") as site:
        with visitor(example_browser, site) as context:
            answer = decide(context, site, "Accept all")
            assert answer.status == 403, answer.text()
            assert "is not allowed" in answer.json()["error"]
            assert not {"consent", "__Host-consent"} & set(own_cookies(context))
            assert receipt(context, site) == []


def test_with_site_origins_but_an_untrusted_proxy_the_log_keeps_the_proxys_network(
    example_browser: Browser, tmp_path: Path
) -> None:
    """`site_origins` alone: decisions work through a proxy that rewrites Host (app:8000), cookies are
    Secure under __Host- names although the app sees http; but the log keeps the proxy's /24, which
    shows that nginx really reached uvicorn from 127.0.3.1: the ASGI server must trust its headers."""
    with proxied_demo(tmp_path, site_origins=True, proxy_headers=False, upstream_host="app:8000") as site:
        with visitor(example_browser, site) as context:
            assert decide(context, site, "Accept all").status == 200
            cookies = own_cookies(context)
            assert cookies["__Host-consent"]["secure"] and cookies["__Host-consent_csrf"]["secure"]
            assert [r["ip"] for r in receipt(context, site)] == ["127.0.3.0"]


# --- the tested deployment -----------------------------------------------------------------------------


@pytest.mark.parametrize("upstream_host", ["$host", "app:8000"])
def test_through_nginx_visitors_accept_reject_withdraw_and_read_their_receipt(
    example_browser: Browser, tmp_path: Path, upstream_host: str
) -> None:
    """R21: the README's deployment (and a proxy that rewrites Host): decisions, withdrawal and the
    receipt work through nginx; the log keeps the browser's network as forwarded, never the proxy's; every
    consent cookie and every expiry the server sends carries Secure."""
    with proxied_demo(tmp_path, site_origins=True, proxy_headers=True, upstream_host=upstream_host) as site:
        with visitor(example_browser, site) as context:
            # A marketing cookie from an earlier visit, HttpOnly: only the server can expire it.
            context.add_cookies(
                [{"name": "_mkt_src", "value": "planted", "url": site.url + "/", "httpOnly": True}]
            )
            assert decide(context, site, "Reject all").status == 200
            page = context.pages[0]
            page.goto(site.url + "/offices/stockholm")
            expect(page.locator("#cb-banner")).to_have_count(0)
            assert "_mkt_src" not in own_cookies(context)
            [record] = receipt(context, site)
            assert (record["action"], record["ip"]) == ("reject_all", "127.0.0.0")

        with visitor(example_browser, site) as context:
            assert decide(context, site, "Accept all").status == 200
            page = context.pages[0]
            page.goto(site.url + "/privacy")
            page.locator("[data-cb-settings]").click()
            # Once decided, the choices' "Reject all" withdraws (whatever its label says).
            with page.expect_response(lambda r: r.url == f"{site.url}{site.prefix}/withdraw") as info:
                page.locator("#cb-dialog button[value=reject_all]").click()
            assert info.value.status == 200
            records = receipt(context, site)
            assert [r["action"] for r in records] == ["accept_all", "withdraw"]
            assert {r["ip"] for r in records} == {"127.0.0.0"}
            cookies = own_cookies(context)
            assert cookies["__Host-consent"]["secure"] and cookies["__Host-consent_csrf"]["secure"]
            assert not {"consent", "consent_csrf"} & set(cookies)

    ours = [c for c in site.set_cookies if c.split("=", 1)[0] in ("__Host-consent", "__Host-consent_csrf")]
    expiries = [c for c in site.set_cookies if "Max-Age=0" in c]
    assert len(ours) >= 4 and any(c.startswith("_mkt_src=;") for c in expiries), site.set_cookies
    assert all("; Secure" in c for c in ours + expiries), site.set_cookies
    assert not [c for c in site.set_cookies if c.split("=", 1)[0] in ("consent", "consent_csrf")]
    # Every request came from the browser's address, which nginx forwarded; none from 127.0.2.1.
    lines = site.access_log()
    assert lines and all(line.startswith(f'{BROWSER_ADDRESS} "') for line in lines), lines
    assert all(f'xff="{BROWSER_ADDRESS}"' in line for line in lines), lines
