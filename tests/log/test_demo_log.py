"""`consent-banner demo` without CONSENT_SECRET_KEYS makes a key up once and keeps it beside its SQLite
log: the log refuses to write after a head signed by a key it does not list, so a key made up per run
would strand the log at the second run. Two runs in one directory both record into the same log."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

from ..support.servers import free_port

VENV_BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin"


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")}


def decide_on_a_demo_run(workdir: Path) -> int:
    port = free_port()
    env = clean_env()
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


def config_for(workdir: Path) -> Path:
    """A consent.toml that names the demo's log file (the demo's own config, with its log path)."""
    from server.app import DEFAULT_CONFIG  # noqa: PLC0415

    path = workdir / "verify.toml"
    text = DEFAULT_CONFIG.read_text(encoding="utf-8")
    log = f'log = "sqlite:///{workdir / "consent-demo.db"}"\n'
    path.write_text(log + _without_log(text), encoding="utf-8")
    return path


def _without_log(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith("log ="))


def test_two_demo_runs_with_made_up_keys_both_record(tmp_path: Path) -> None:
    assert decide_on_a_demo_run(tmp_path) == 200
    assert decide_on_a_demo_run(tmp_path) == 200
    assert (tmp_path / "consent-demo.db").is_file() and (tmp_path / ".consent-demo-key").is_file()
    key = (tmp_path / ".consent-demo-key").read_text().strip()
    verify = subprocess.run(
        [str(VENV_BIN / "consent-banner"), "log", "verify", "--config", str(config_for(tmp_path))],
        env={**clean_env(), "CONSENT_SECRET_KEYS": key},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert verify.stdout.startswith("2 records")
