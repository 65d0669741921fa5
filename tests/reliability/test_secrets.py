"""Signing keys: rotation keeps consent, removal ends it, and no key means no start (R33)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from consent_banner import ConsentConfig, ConsentMiddleware
from consent_banner.errors import MissingSecretKey

from ..conftest import OLD_KEY, make_app
from .asgi_driver import call
from .conftest import VENV_BIN, free_port, write_config

HOST = b"testserver"
NEW_KEY = "new-key-0123456789-0123456789-0123456789"


async def decide(app: Any) -> str:
    answer = await call(
        app,
        "POST",
        "/_consent",
        host=HOST,
        body=b'{"action":"accept_all"}',
        headers=[(b"origin", b"http://testserver"), (b"content-type", b"application/json")],
    )
    assert answer.status == 200
    value = answer.set_cookie("consent")
    assert value
    return value


async def who(app: Any, cookie: str) -> dict[str, Any]:
    answer = await call(app, "GET", "/whoami", host=HOST, headers=[(b"cookie", f"consent={cookie}".encode())])
    return json.loads(answer.body)


async def test_rotation_keeps_consent_until_the_key_is_removed(tmp_path: Path) -> None:
    """R33: with [old, new] a cookie signed by the old key still counts and new cookies are signed
    with the new key; once the old key is removed its cookies are undecided, never granted."""
    config = ConsentConfig.from_toml(write_config(tmp_path))
    apps = [make_app(config, secret_keys=keys) for keys in ([OLD_KEY], [OLD_KEY, NEW_KEY], [NEW_KEY])]
    before, rotating, after = apps
    try:
        old_cookie = await decide(before)
        assert (await who(rotating, old_cookie))["analytics"] is True
        new_cookie = await decide(rotating)
        assert (await who(after, new_cookie))["analytics"] is True  # signed with the newest key
        gone = await who(after, old_cookie)
        assert gone["decided"] is False and not gone["analytics"] and not gone["marketing"]
        assert (await who(before, new_cookie))["decided"] is False  # a key it never had
    finally:
        for app in apps:
            await app.close()


def test_no_key_no_middleware(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """R33: without CONSENT_SECRET_KEYS (or with a short key) the middleware refuses to start."""
    config = ConsentConfig.from_toml(write_config(tmp_path))
    monkeypatch.delenv("CONSENT_SECRET_KEYS")
    with pytest.raises(MissingSecretKey, match="CONSENT_SECRET_KEYS"):
        ConsentMiddleware(lambda *a: None, config=config)  # type: ignore[arg-type]
    monkeypatch.setenv("CONSENT_SECRET_KEYS", "short")
    with pytest.raises(MissingSecretKey, match="shorter than 32"):
        ConsentMiddleware(lambda *a: None, config=config)  # type: ignore[arg-type]


def _env_without_key() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "CONSENT_SECRET_KEYS"}


def test_serve_does_not_start_without_a_key(tmp_path: Path) -> None:
    """R33: `consent-banner serve` without a key exits with an error naming CONSENT_SECRET_KEYS,
    and never listens."""
    port = free_port()
    proc = subprocess.run(
        [
            str(VENV_BIN / "consent-banner"),
            "serve",
            "--port",
            str(port),
            "--config",
            str(write_config(tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env_without_key(),
    )
    assert proc.returncode != 0
    assert "CONSENT_SECRET_KEYS" in proc.stderr


def test_demo_starts_without_a_key_and_says_so(tmp_path: Path) -> None:
    """The demo is the one exception: it makes a key for the run, and warns in red."""
    port = free_port()
    proc = subprocess.Popen(
        [str(VENV_BIN / "consent-banner"), "demo", "--port", str(port)],
        cwd=tmp_path,
        env=_env_without_key(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/_consent/state", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise AssertionError(f"the demo did not start: {proc.returncode}")
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert b"CONSENT_SECRET_KEYS is not set" in err
