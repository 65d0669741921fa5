"""A shared cache in front: nginx's proxy_cache, keyed on the URL alone (as a CDN that ignores Vary
keys it), between two visitors and the app (issue 14, item 2: "a CDN can serve one visitor's page
to another"). The app says `Cache-Control: public, max-age=600` everywhere; what depends on the
consent is never stored, what does not is (X-Cache tells which).

`NGINX` names the binary (default: Debian's /usr/sbin/nginx); without it the test is skipped.
"""

from __future__ import annotations

import grp
import os
import pwd
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from consent_banner import ConsentConfig
from consent_banner.consent import Consent, new_consent_id

from .test_caching import TRACKED, build
from .test_caching import static as static  # noqa: F401  (the fixture)

NGINX = os.environ.get("NGINX", "/usr/sbin/nginx")

CONF = """\
{user}daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 64; }}
http {{
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
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
}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(port: int, alive: object) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline or not alive:
                raise RuntimeError(f"nothing listens on {port}") from None
            time.sleep(0.05)


@pytest.fixture
def cdn(config: ConsentConfig, static: Path, tmp_path: Path) -> Iterator[tuple[str, ConsentConfig, object]]:
    if not Path(NGINX).is_file():
        pytest.skip(f"{NGINX} is missing")
    app = build(config, static)
    app_port, port = _free_port(), _free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=app_port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    _wait_for(app_port, thread.is_alive())
    user = ""
    if os.geteuid() == 0:  # the workers would become `nobody`, who cannot read tmp_path
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};\n"
    (tmp_path / "nginx.conf").write_text(CONF.format(user=user, tmp=tmp_path, port=port, app_port=app_port))
    args = [NGINX, "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(tmp_path / "nginx.conf")]
    proxy = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        _wait_for(port, proxy.poll() is None)
        yield f"http://127.0.0.1:{port}", config, app
    finally:
        proxy.send_signal(signal.SIGTERM)
        try:
            proxy.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proxy.pid, signal.SIGKILL)
            proxy.wait(5)
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
