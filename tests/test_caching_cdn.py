"""A shared cache in front: nginx's proxy_cache, keyed on the URL alone (as a CDN that ignores Vary
keys it), between two visitors and the app (issue 14, item 2: "a CDN can serve one visitor's page
to another"). The app says `Cache-Control: public, max-age=600` everywhere; what depends on the
consent is never stored, what does not is (X-Cache tells which).

`NGINX` names the binary (default: Debian's /usr/sbin/nginx); without it the test is skipped.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from consent_banner import ConsentConfig
from consent_banner.consent import Consent, new_consent_id

from .support.servers import NGINX, Nginx, free_port, wait_for_port
from .test_caching import TRACKED, build
from .test_caching import static as static  # noqa: F401  (the fixture)

HTTP = """\
    access_log off;
    proxy_cache_path {tmp}/cache keys_zone=shared:1m;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{app_port};
            proxy_cache shared;
            proxy_cache_key $uri$is_args$args;
            proxy_ignore_headers Vary;
            add_header X-Cache $upstream_cache_status always;
        }}
    }}
"""


@pytest.fixture
def cdn(config: ConsentConfig, static: Path, tmp_path: Path) -> Iterator[tuple[str, ConsentConfig, object]]:
    if not Path(NGINX).is_file():
        pytest.skip(f"{NGINX} is missing")
    app = build(config, static)
    app_port, port = free_port(), free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=app_port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    proxy = Nginx(tmp_path, "127.0.0.1", port)
    try:
        wait_for_port("127.0.0.1", app_port, server=thread)
        proxy.start(HTTP.format(tmp=tmp_path, port=port, app_port=app_port))
        yield f"http://127.0.0.1:{port}", config, app
    finally:
        proxy.stop()
        server.should_exit = True
        thread.join(10)


def test_a_cdn_in_front_never_hands_one_visitors_response_to_another(cdn) -> None:
    """R35: behind a URL-keyed shared cache, a visitor who granted analytics and one who rejected it
    each get their own page and their own JSON built from get_consent, in either order and again;
    a response that reads no consent is stored once and served to both from the cache."""
    url, _, app = cdn

    def cookie(*granted: str) -> str:
        value = app.codec.encode(  # type: ignore[attr-defined]
            Consent(id=new_consent_id(), granted=frozenset(granted), revision=app.codec.revision)  # type: ignore[attr-defined]
        )
        return f"consent={value}; consent_csrf=held"  # a returning visitor: no Set-Cookie on the page

    granted, rejected = cookie("analytics"), cookie()
    with httpx.Client(base_url=url) as c:
        for _ in range(2):
            for who, analytics in ((granted, True), (rejected, False)):
                r = c.get("/whoami", headers={"cookie": who})
                assert r.json() == {"analytics": analytics}, r.headers.get("x-cache")
                r = c.get("/shareable", headers={"cookie": who})
                assert (TRACKED in r.text) is analytics, r.headers.get("x-cache")
                assert r.headers["x-cache"] != "HIT"
        # What depends on nobody's consent is still stored once and served to everyone.
        assert [
            c.get("/public", headers={"cookie": who}).headers["x-cache"] for who in (granted, rejected)
        ] == [
            "MISS",
            "HIT",
        ]
