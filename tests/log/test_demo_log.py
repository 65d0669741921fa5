"""`consent-banner demo` without CONSENT_SECRET_KEYS makes a key up per run, so it keeps its consent log
in memory: the log refuses to write after a head signed by a key it does not list, and a file left by
an earlier run was signed by that run's key. Two runs in one directory both record decisions."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

VENV_BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def decide_on_a_demo_run(workdir: Path) -> int:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")}
    proc = subprocess.Popen(
        [str(VENV_BIN / "consent-banner"), "demo", "--port", str(port)],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base}/_consent/state", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError("the demo did not start") from None
                time.sleep(0.2)
        answer = httpx.post(
            f"{base}/_consent", json={"action": "accept_all"}, headers={"origin": base}, timeout=10
        )
        return answer.status_code
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_two_demo_runs_with_made_up_keys_both_record(tmp_path: Path) -> None:
    assert decide_on_a_demo_run(tmp_path) == 200
    assert decide_on_a_demo_run(tmp_path) == 200
    assert not (tmp_path / "consent-demo.db").exists()
