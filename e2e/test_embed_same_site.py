"""The embedded script with its consent server on the site's own origin: a server-set cookie (issue 16).

Safari caps a cookie written by `document.cookie` at 7 days, and (since 16.4) a cookie set over HTTP
by a server whose IP address differs from the site's. Embedded on another origin, the script must
write the consent token itself; routed through the site's own front server (`location /_consent/`
to `consent-banner serve`), the decision is same-origin, so the consent server sets the cookie with
Set-Cookie, from the site's own address, for its whole lifetime, and the script writes nothing.
Debian's nginx serves a static page and routes the prefix to `consent-banner serve` in its own process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.support.servers import NGINX, Nginx, free_port, stop, wait_for_port

KEY = "e2e-same-site-key-0123456789-0123456789-ab"
LIFETIME_DAYS = 182

CONSENT_TOML = """\
policy_revision = "2026-12-01"
controller = "Example Shop Ltd"
privacy_policy_url = "/privacy"
log = "sqlite:///{log}"
site_origins = ["{origin}"]

[cookie]
secure = false
lifetime_days = {days}

[categories.necessary]
label = "Necessary"
description = "Needed for the shop to work."
[categories.marketing]
label = "Marketing"
description = "Offers."

[[services]]
name = "ads"
category = "marketing"
provider = "Ads Inc"
purpose = "Measures campaigns"
origins = ["https://ads.example.com"]
"""

# `location /_consent`, no trailing slash: with one, nginx answers POST /_consent (the decision) with a
# redirect to /_consent/ instead of passing it on.
NGINX_HTTP = """\
    access_log {access_log};
    server {{
        listen 127.0.0.1:{port};
        location /_consent {{
            proxy_pass http://127.0.0.1:{consent_port};
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
        location / {{
            root {root};
        }}
    }}
"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Same-site embed</title></head>
<body><h1>A site served by nginx</h1>
<script src="/_consent/consent.js" data-consent-server="{origin}" defer></script>
</body></html>
"""


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not Path(NGINX).is_file():
        pytest.fail(f"{NGINX} is missing: ./run test installs Debian's nginx")
    tmp = tmp_path_factory.mktemp("same-site")
    port, consent_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    (tmp / "www").mkdir()
    (tmp / "www" / "index.html").write_text(PAGE.format(origin=url))
    config = tmp / "consent.toml"
    config.write_text(CONSENT_TOML.format(log=tmp / "log.db", origin=url, days=LIFETIME_DAYS))
    env = {**os.environ, "CONSENT_SECRET_KEYS": KEY}
    command = str(Path(sys.executable).parent / "consent-banner")
    with ExitStack() as stack:
        out = stack.enter_context((tmp / "serve.log").open("wb"))
        serve = subprocess.Popen(
            [command, "serve", "--port", str(consent_port), "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        stack.callback(stop, serve)
        wait_for_port("127.0.0.1", consent_port, server=serve, log=tmp / "serve.log")
        nginx = Nginx(tmp, "127.0.0.1", port)
        stack.callback(nginx.stop)
        nginx.start(
            NGINX_HTTP.format(
                access_log=nginx.access_log, port=port, consent_port=consent_port, root=tmp / "www"
            )
        )
        yield url


def test_a_consent_server_on_the_sites_own_origin_sets_the_cookie_for_its_whole_lifetime(
    origin: str, context: BrowserContext, page: Page
) -> None:
    """R17 in Safari too: the decision is same-origin, answered with Set-Cookie for the configured
    lifetime (182 days, beyond Safari's 7-day cap on script-written cookies), without a token for
    the script to write; the next page finds the visitor decided."""
    page.goto(origin + "/")
    expect(page.locator("#cb-banner")).to_be_visible()
    with page.expect_response(lambda r: r.url == f"{origin}/_consent" and r.request.method == "POST") as info:
        page.locator("#cb").get_by_role("button", name="Accept all", exact=True).click()
    decision = info.value
    assert decision.ok, (decision.status, decision.text())
    assert "token" not in decision.json()  # nothing for the script to write with document.cookie
    set_cookie = [h["value"] for h in decision.headers_array() if h["name"].lower() == "set-cookie"]
    assert any(v.startswith("consent=") and f"Max-Age={LIFETIME_DAYS * 86400}" in v for v in set_cookie), (
        set_cookie
    )
    expect(page.locator("#cb-banner")).to_have_count(0)
    cookie = next(c for c in context.cookies(origin) if c["name"] == "consent")
    assert cookie["expires"] > time.time() + (LIFETIME_DAYS - 1) * 86400
    page.reload()
    page.wait_for_timeout(300)
    expect(page.locator("#cb-banner")).to_have_count(0)
    assert page.evaluate("consentBanner.get().decided") is True
