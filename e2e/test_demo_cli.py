"""`consent-banner demo` as a newcomer runs it: starts, prints where everything is, stops on Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.servers import free_port

CLI = Path(sys.executable).with_name("consent-banner")
ROOT = Path(__file__).resolve().parent.parent


def test_demo_command_serves_the_site_and_its_third_parties_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    """R25 and the demo's wiring: `consent-banner demo --port P` prints the site, the audit
    credentials it generated and five third-party hosts on their own loopback addresses; the site
    answers with the banner, a decision is written to the SQLite log in the working directory,
    the audit view wants the printed credentials, and Ctrl-C stops every server cleanly."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")}
    log = tmp_path / "demo-output.txt"
    with log.open("w") as sink:  # a file, not a pipe: a silent hang cannot block the test
        proc = subprocess.Popen(
            [str(CLI), "demo", "--port", str(port)],
            cwd=tmp_path, env=env, stdout=sink, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 20
        while "Press Ctrl-C" not in (out := log.read_text()):
            assert proc.poll() is None and time.monotonic() < deadline, f"the demo did not start:\n{out}"
            time.sleep(0.05)
        site = f"http://127.0.0.1:{port}"
        assert f"{site}/" in out
        password = re.search(r"user auditor, password (\S+)", out)
        assert password, out
        hosts = dict(re.findall(r"^\s+(stats|ads|maps|chat|gtag)\s+(http://\S+)/$", out, re.M))
        assert sorted(hosts) == ["ads", "chat", "gtag", "maps", "stats"], out
        assert len({h.split(":")[1] for h in hosts.values()} | {"//127.0.0.1"}) == 6, hosts

        with httpx.Client(base_url=site, timeout=5) as client:
            page = client.get("/")
            assert page.status_code == 200 and 'id="cb-banner"' in page.text
            assert client.get("/sv/").text.count('lang="sv"') >= 1
            decided = client.post("/_consent", json={"action": "reject_all"}, headers={"origin": site})
            assert decided.status_code == 200, decided.text
            assert client.get("/_consent/audit/").status_code == 401
            audit = client.get("/_consent/audit/", auth=("auditor", password.group(1)))
            assert audit.status_code == 200
        for origin in hosts.values():
            assert httpx.get(origin + "/__requests", timeout=5).status_code == 200
        assert (tmp_path / "consent-demo.db").is_file()

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0, log.read_text()
        final = log.read_text()
        assert "demo stopped" in final
        # six servers, one process: its lifecycle is told once
        assert final.count("Started server process") == 1, final
        assert final.count("Finished server process") == 1, final
        with socket.socket() as s:  # the port is free again
            s.bind(("127.0.0.1", port))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
