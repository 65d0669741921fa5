"""The signed receipt in Chromium (R24, issue 18): after a decision, the settings dialog links the
signed download; the browser saves the JWS, and `consent-banner receipt verify` accepts the file
with the site's published key.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import ServerThread, _free_socket, build_site_app, site_config
from playwright.sync_api import BrowserContext, expect

from consent_banner.cli import cli
from consent_banner.log.keys import SigningKey, from_b64url

KEY = SigningKey.generate()


@pytest.fixture
def signing_site(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The e2e site with a log signing key, on a port of its own."""
    monkeypatch.setenv("CONSENT_LOG_SIGNING_KEY", KEY.line())
    with tempfile.TemporaryDirectory(prefix="signed-receipt-") as tmp:
        sock = _free_socket()
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = site_config(f"sqlite:///{Path(tmp) / 'log.db'}", "http://localhost:9")
        with ServerThread(build_site_app(config), sock):
            yield url


def test_the_settings_dialog_downloads_a_receipt_that_verifies(
    signing_site: str, context: BrowserContext, tmp_path: Path
) -> None:
    """R24: the visitor gets their own records, signed, from the settings dialog."""
    page = context.new_page()
    page.goto(signing_site + "/")
    expect(page.locator("#cb-dialog a[href$='format=jws']")).to_have_count(0)  # nothing to sign yet
    page.get_by_role("button", name="Accept all").first.click()
    expect(page.locator("[data-cb-settings]")).to_be_visible()

    page.goto(signing_site + "/other")  # the dialog of a page rendered after the decision
    page.locator("[data-cb-settings]").click()
    link = page.locator("#cb-dialog").get_by_role("link", name="Download a signed receipt of your choices")
    expect(link).to_be_visible()
    with page.expect_download() as download_info:
        link.click()
    download = download_info.value
    assert download.suggested_filename == "consent-receipt.jws"
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)

    token = saved.read_text()
    payload = json.loads(from_b64url(token.split(".")[1]))
    own = page.request.get(signing_site + "/_consent/receipt?format=json").json()  # the same cookie
    assert payload["iss"] == signing_site and payload["sub"] == own["consent_id"]
    assert [r["hash"] for r in payload["records"]] == [r["hash"] for r in own["records"]]
    assert payload["records"][0]["action"] == "accept_all"
    result = CliRunner().invoke(cli, ["receipt", "verify", str(saved)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"key fetched from {signing_site}/_consent/log-key" in result.stderr
    assert f"signed by key {KEY.kid}" in result.stdout
