"""The consent-banner command: keygen, serve, demo start-up rules, config errors naming the key."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from consent_banner.cli import cli

from .conftest import KEY


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_keygen_prints_a_usable_key() -> None:
    result = CliRunner().invoke(cli, ["keygen"])
    key = result.output.strip()
    assert result.exit_code == 0 and len(key) >= 40
    from consent_banner.consent import secret_keys_from_env

    assert secret_keys_from_env({"CONSENT_SECRET_KEYS": key}) == [key]


def test_serve_without_key_refuses_with_a_clear_message(toml_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("CONSENT_SECRET_KEYS")
    result = CliRunner().invoke(cli, ["serve", "--config", str(toml_path)])
    assert result.exit_code != 0 and "CONSENT_SECRET_KEYS is not set" in result.output


def test_bad_config_is_named_with_its_key(tmp_path: Path) -> None:
    bad = tmp_path / "consent.toml"
    bad.write_text(
        'policy_revision = "r"\ncontroller = "C"\nprivacy_policy_url = "/p"\n'
        '[categories.necessary]\nlabel = "N"\n[[services]]\nname = "x"\ncategory = "ads"\n'
    )
    result = CliRunner().invoke(cli, ["serve", "--config", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}: services[0].category: 'ads' is not a category" in result.output


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["serve", "--config", str(tmp_path / "none.toml")])
    assert result.exit_code == 1 and "none.toml: cannot read the config file" in result.output


def test_serve_runs_a_consent_server(toml_path: Path, tmp_path: Path) -> None:
    """`consent-banner serve` answers the consent endpoints for embedding sites."""
    port = free_port()
    env = {**os.environ, "CONSENT_SECRET_KEYS": KEY}
    exe = Path(sys.executable).with_name("consent-banner")
    proc = subprocess.Popen(
        [str(exe), "serve", "--port", str(port), "--config", str(toml_path)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                r = httpx.get(f"{base}/_consent/state", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail(proc.stdout.read().decode() if proc.stdout else "server did not start")
        assert r.json()["decided"] is False
        js = httpx.get(f"{base}/_consent/consent.js")
        assert js.status_code == 200 and "javascript" in js.headers["content-type"]
        partner = httpx.post(
            f"{base}/_consent", json={"action": "reject_all"}, headers={"origin": "http://partner.example"}
        )
        assert partner.status_code == 200 and partner.json()["token"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_demo_without_key_warns_loudly(monkeypatch) -> None:
    """Only the demo starts without CONSENT_SECRET_KEYS, and it says so."""
    import consent_banner.cli as cli_module

    started = {}

    class FakeSite:
        @staticmethod
        def run(host, port, config_path):
            started.update(host=host, port=port, key=os.environ.get("CONSENT_SECRET_KEYS"))

    monkeypatch.delenv("CONSENT_SECRET_KEYS")
    monkeypatch.setattr(cli_module, "_demo_module", lambda: FakeSite)
    result = CliRunner().invoke(cli, ["demo", "--port", "8123"])
    assert result.exit_code == 0, result.output
    assert "WARNING: CONSENT_SECRET_KEYS is not set" in result.output
    assert started["port"] == 8123 and len(started["key"]) >= 32
