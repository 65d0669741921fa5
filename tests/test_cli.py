"""The consent-banner command: keygen, serve, demo start-up rules, config errors naming the key."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from consent_banner.cli import cli

from .conftest import KEY
from .support.servers import free_port


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
        proc.communicate(timeout=10)  # waits, and closes the output pipe (wait() left it to the GC)


def test_demo_without_key_warns_loudly_and_keeps_its_key_beside_its_log(monkeypatch, tmp_path) -> None:
    """Only the demo starts without CONSENT_SECRET_KEYS, and it says so. Its key is made up once and
    kept owner-only in the working directory, so the next run can go on writing the same log."""
    import consent_banner.cli as cli_module

    started: list[str | None] = []

    class FakeSite:
        @staticmethod
        def run(host, port, config_path, show_audit_password=False):
            started.append(os.environ.get("CONSENT_SECRET_KEYS"))

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli_module, "_demo_module", lambda: FakeSite)
    for _ in range(2):
        monkeypatch.delenv("CONSENT_SECRET_KEYS", raising=False)
        result = CliRunner().invoke(cli, ["demo", "--port", "8123"])
        assert result.exit_code == 0, result.output
        assert "WARNING: CONSENT_SECRET_KEYS is not set" in result.output
    key_file = tmp_path / ".consent-demo-key"
    assert started[0] and len(started[0]) >= 32 and started[0] == started[1]
    assert key_file.read_text().strip() == started[0]
    assert key_file.stat().st_mode & 0o777 == 0o600


# --- secrets and hostile input (issue 12, item 11) --------------------------------------------------


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("mysql://bob:hunter2-secret@db.example/x", "'mysql://bob:***@db.example/x': use sqlite:///"),
        (
            "postgresql://bob:hunter2-secret@[::1/consent",
            "'postgresql://bob:***@[::1/consent': Invalid IPv6 URL",
        ),
        (
            "postgresql://bob:hunter2-secret@127.0.0.1:99999/x",
            "'postgresql://bob:***@127.0.0.1:99999/x': Port",
        ),
    ],
)
@pytest.mark.parametrize("command", [["serve"], ["log", "verify"], ["log", "export"]])
def test_a_log_url_that_fails_validation_is_named_without_its_password(
    toml_path: Path, url: str, says: str, command: list[str]
) -> None:
    """A bad `log` URL is named with its key and the problem, its password masked: never echoed."""
    toml_path.write_text(
        toml_path.read_text().replace(f'log = "sqlite:///{toml_path.parent / "log.db"}"', f'log = "{url}"')
    )
    result = CliRunner().invoke(cli, [*command, "--config", str(toml_path)])
    assert result.exit_code == 1, result.output
    assert f"{toml_path}: log: {says}" in result.output
    assert "hunter2" not in result.output
    assert "Traceback" not in result.output


def test_port_out_of_range_is_named(toml_path: Path) -> None:
    result = CliRunner().invoke(cli, ["serve", "--port", "99999", "--config", str(toml_path)])
    assert result.exit_code == 2 and "Invalid value for '--port': 99999 is not in the range" in result.output


def test_the_demo_prints_a_password_it_generated_once_and_never_one_the_operator_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The demo tells a password it made up (nobody could know it otherwise), but only says that
    one the operator set is set: it lands in terminal scrollback and CI logs."""
    import consent_banner.cli as cli_module

    calls: list[dict[str, object]] = []

    class FakeSite:
        @staticmethod
        def run(host, port, config_path, show_audit_password=False):
            calls.append({"show": show_audit_password, "password": os.environ.get("CONSENT_AUDIT_PASSWORD")})

    monkeypatch.setattr(cli_module, "_demo_module", lambda: FakeSite)
    monkeypatch.delenv("CONSENT_AUDIT_TOKEN", raising=False)
    # The demo sets the user in os.environ (setdefault): undone after the test, or it leaks into the
    # next test of this worker and turns the audit view on there.
    monkeypatch.delenv("CONSENT_AUDIT_USER", raising=False)
    monkeypatch.setenv("CONSENT_AUDIT_PASSWORD", "operator-chosen-secret")
    assert CliRunner().invoke(cli, ["demo"]).exit_code == 0
    monkeypatch.delenv("CONSENT_AUDIT_PASSWORD")
    assert CliRunner().invoke(cli, ["demo"]).exit_code == 0
    assert calls[0] == {"show": False, "password": "operator-chosen-secret"}
    assert calls[1]["show"] is True and len(str(calls[1]["password"])) >= 16


def run_demo_until_ready(tmp_path: Path, env: dict[str, str], *args: str) -> str:
    """`consent-banner demo` in a subprocess: what it printed by the time it is ready; then Ctrl-C."""
    import signal

    port = free_port()
    out = tmp_path / "demo-output.txt"
    exe = Path(sys.executable).with_name("consent-banner")
    with out.open("w") as sink:
        proc = subprocess.Popen(
            [str(exe), "demo", "--port", str(port), *args],
            cwd=tmp_path,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while "Press Ctrl-C" not in (text := out.read_text()):
            assert proc.poll() is None and time.monotonic() < deadline, f"the demo did not start:\n{text}"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=15)
        return out.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_demo_never_echoes_secrets_the_operator_set(tmp_path: Path) -> None:
    """Issue 12 item 11: the demo printed the operator's CONSENT_AUDIT_PASSWORD, and would print a
    PostgreSQL log URL with its password: both are now only said to be set, or masked."""
    demo_toml = Path(__file__).resolve().parent.parent / "server" / "consent.toml"
    config = tmp_path / "consent.toml"
    text = demo_toml.read_text()
    assert "\nlog = " in text
    config.write_text(
        "\n".join(
            'log = "postgresql://postgres:pg-secret-5678@127.0.0.1:1/x"'
            if line.startswith("log = ")
            else line
            for line in text.splitlines()
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")}
    env.update(
        CONSENT_AUDIT_USER="auditor", CONSENT_AUDIT_PASSWORD="operator-secret-1234", CONSENT_SECRET_KEYS=KEY
    )
    printed = run_demo_until_ready(tmp_path, env, "--config", str(config))
    assert "operator-secret-1234" not in printed and "pg-secret-5678" not in printed, printed
    assert "user auditor, password as set in CONSENT_AUDIT_PASSWORD" in printed
    assert "consent log     postgresql://postgres:***@127.0.0.1:1/x" in printed
