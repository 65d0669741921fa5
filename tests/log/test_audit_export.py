"""The audit view's NDJSON download verifies offline (issue 18 follow-up). R22, R25.

An auditor who downloads the whole log from `{prefix}/audit/export.ndjson` gets what
`consent-banner log export --format ndjson` writes: the typed lines (header, banner versions,
checkpoints, the signed head) before the records, so `log verify --export FILE --public-key KEY`
checks it with the key the site publishes and nothing else. A filtered download stays records only,
as the command's filtered export does.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from consent_banner.cli import cli
from consent_banner.config import ConsentConfig
from consent_banner.log.keys import SigningKey

from ..conftest import ORIGIN, make_app
from .conftest import SECRET
from .test_read_only import AUDIT_TOKEN, BEARER, config_text

LOG_KEY = SigningKey(bytes(range(40, 72)))


def cli_log(*args: str, **env: str) -> Result:
    return CliRunner().invoke(cli, ["log", *args], env={"CONSENT_LOG_SIGNING_KEY": "", **env})


async def test_the_audit_views_whole_log_download_verifies_offline_with_the_published_key(
    log_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """R22, R25: the audit view's NDJSON download of the whole log is byte for byte the command's
    export (typed lines first), and `log verify --export` passes it with the key from
    `{prefix}/log-key` alone (no secret, no database); a record changed in it is named. Filtered, it
    is the command's filtered export: records only, which the public key cannot vouch for."""
    monkeypatch.setenv("CONSENT_SECRET_KEYS", SECRET)
    monkeypatch.setenv("CONSENT_AUDIT_TOKEN", AUDIT_TOKEN)
    monkeypatch.setenv("CONSENT_LOG_SIGNING_KEY", LOG_KEY.line())
    config = tmp_path / "consent.toml"
    config.write_text(config_text(log_url, decision_rate_limit="off"))
    app = make_app(ConsentConfig.from_toml(config))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN) as c:
            for action in ("accept_all", "reject_all", "accept_all"):
                r = await c.post("/_consent", json={"action": action}, headers={"origin": ORIGIN})
                assert r.status_code == 200, r.text
            whole = await c.get("/_consent/audit/export.ndjson", headers=BEARER)
            filtered = await c.get("/_consent/audit/export.ndjson?action=reject_all", headers=BEARER)
            key = await c.get("/_consent/log-key")
    finally:
        await app.close()
    assert whole.status_code == 200 and whole.headers["content-type"] == "application/x-ndjson"
    assert whole.text.startswith('{"type":"header",') and '{"type":"head",' in whole.text
    download, pem = tmp_path / "download.ndjson", tmp_path / "log-key.pem"
    download.write_bytes(whole.content)
    pem.write_text(key.text)

    exported = tmp_path / "cli.ndjson"
    done = await asyncio.to_thread(
        cli_log, "export", "--config", str(config), "--format", "ndjson", "-o", str(exported)
    )
    assert done.exit_code == 0, done.output
    assert whole.content == exported.read_bytes()  # the same lines as the command writes

    args = ("verify", "--export", str(download), "--public-key", str(pem))
    ok = await asyncio.to_thread(cli_log, *args, CONSENT_SECRET_KEYS="")
    assert ok.exit_code == 0, ok.output
    assert ok.output.startswith("3 records, chain intact")
    assert f"signatures: Ed25519, log key {LOG_KEY.kid}" in ok.output
    download.write_bytes(whole.content.replace(b'"action":"reject_all"', b'"action":"accept_all"'))
    bad = await asyncio.to_thread(cli_log, *args, CONSENT_SECRET_KEYS="")
    assert bad.exit_code == 1 and bad.output.startswith("record 2: changed"), bad.output

    assert filtered.status_code == 200
    lines = filtered.text.splitlines()
    assert len(lines) == 1 and lines[0].startswith('{"seq":2,') and '"type"' not in filtered.text
    cli_filtered = tmp_path / "cli-filtered.ndjson"
    done = await asyncio.to_thread(
        cli_log,
        *("export", "--config", str(config), "--format", "ndjson", "--action", "reject_all"),
        *("-o", str(cli_filtered)),
    )
    assert done.exit_code == 0 and filtered.content == cli_filtered.read_bytes()
    download.write_bytes(filtered.content)
    unsigned = await asyncio.to_thread(cli_log, *args, CONSENT_SECRET_KEYS="")
    assert unsigned.exit_code == 1, unsigned.output


async def test_the_chain_page_links_the_whole_log_download_and_the_public_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """R25: the chain page says which download verifies offline and where the key is; both links
    resolve (under the audit view's root) to what they name."""
    from urllib.parse import urljoin

    monkeypatch.setenv("CONSENT_SECRET_KEYS", SECRET)
    monkeypatch.setenv("CONSENT_AUDIT_TOKEN", AUDIT_TOKEN)
    monkeypatch.setenv("CONSENT_LOG_SIGNING_KEY", LOG_KEY.line())
    config = tmp_path / "consent.toml"
    config.write_text(config_text(f"sqlite:///{tmp_path / 'l.db'}", decision_rate_limit="off"))
    app = make_app(ConsentConfig.from_toml(config))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN) as c:
            page = await c.get("/_consent/audit/chain", headers=BEARER)
            assert 'href="/_consent/audit/export.ndjson" download' in page.text
            assert 'href="/_consent/audit/../log-key"' in page.text
            key = urljoin(str(page.url), "/_consent/audit/../log-key")  # as a browser resolves it
            assert (await c.get(key)).text.startswith("# key id " + LOG_KEY.kid)
    finally:
        await app.close()
