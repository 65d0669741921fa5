"""Rotating the log's Ed25519 key again before any decision was written (issue 18 follow-up). R22.

The documented rotation is a start with CONSENT_LOG_SIGNING_KEY=<old>,<new>. An operator who does it
twice with no decision between (`<k1>,<k2>` then `<k2>,<k3>`; or back and forth) puts two rotation
checkpoints on one record. Checkpoints are keyed by (seq, reason): with the bare reason `rotation`
the second collided, the log could not open, and every decision answered 503 for good (the record
that would have separated them could never be written). Each start here goes through the
middleware, as a server would, and the log must stay writable and verify online and offline.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from consent_banner.cli import cli
from consent_banner.config import ConsentConfig
from consent_banner.log import open_log
from consent_banner.log.keys import LogKeys, SigningKey

from ..conftest import ORIGIN, make_app
from .conftest import SECRET
from .test_read_only import config_text

K1 = SigningKey(bytes(range(10, 42)))
K2 = SigningKey(bytes(range(20, 52)))
K3 = SigningKey(bytes(range(30, 62)))

# (signing keys of each start, whether a decision is made in it); the last start holds the newest
# key alone with the others listed as retired (the documented end of a rotation).
TWICE = [((K1,), True), ((K1, K2), False), ((K2, K3), False)]
AT_ONCE = [((K1,), True), ((K1, K2, K3), False)]
BACK_AND_FORTH = [((K1,), True), ((K1, K2), False), ((K2, K1), False), ((K1, K2), False)]
EMPTY_LOG = [((K1,), False), ((K1, K2), False), ((K2, K3), False)]


async def start(
    config: Path, signers: tuple[SigningKey, ...], retired: tuple[SigningKey, ...], decide: bool
) -> int | None:
    """One start of the server with these keys in its environment: the status of a decision (None:
    none made), then a clean stop."""
    env = {
        "CONSENT_SECRET_KEYS": SECRET,
        "CONSENT_LOG_SIGNING_KEY": ",".join(k.line() for k in signers),
        "CONSENT_LOG_PUBLIC_KEYS": ",".join(k.public.line() for k in retired),
    }
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        app = make_app(ConsentConfig.from_toml(config))
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN) as c:
                await app.log()  # the start: the log opens (and rotates) as a first request would
                if not decide:
                    return None
                r = await c.post("/_consent", json={"action": "accept_all"}, headers={"origin": ORIGIN})
                return r.status_code
        finally:
            await app.close()


def cli_log(*args: str) -> Result:
    return CliRunner().invoke(
        cli, ["log", *args], env={"CONSENT_SECRET_KEYS": "", "CONSENT_LOG_SIGNING_KEY": ""}
    )


@pytest.mark.parametrize(
    "starts",
    [TWICE, AT_ONCE, BACK_AND_FORTH, EMPTY_LOG],
    ids=["twice", "at-once", "back-and-forth", "empty-log"],
)
async def test_rotating_again_before_a_decision_keeps_the_log_writable_and_verifiable(
    starts: list[tuple[tuple[SigningKey, ...], bool]], log_url: str, tmp_path: Path
) -> None:
    """R22: every documented rotation, however many before the next decision, leaves a log that takes
    decisions (never a 503) and verifies with the public keys alone, from the database and from its
    export; each rotation checkpoint names the key before it and both keys signed it."""
    config = tmp_path / "consent.toml"
    config.write_text(config_text(log_url, decision_rate_limit="off"))
    used: list[SigningKey] = []
    for signers, decide in starts:
        used += [k for k in signers if k not in used]
        status = await start(config, signers, (), decide)
        assert status in (None, 200), status
    newest = starts[-1][0][-1]
    retired = tuple(k for k in used if k != newest)
    assert await start(config, (newest,), retired, True) == 200  # the rotation finished: newest alone
    assert await start(config, (newest,), retired, True) == 200

    lg = await open_log(log_url, hmac_key=None, create=False)
    try:
        cps = await lg.checkpoints()
    finally:
        await lg.close()
    rotations = [cp for cp in cps if cp.prior_key_id is not None]
    expected = sum(1 for (s, _), (t, _) in zip(starts, starts[1:], strict=False) if s[-1] != t[-1])
    assert len(rotations) == expected and len({(cp.seq, cp.reason) for cp in cps}) == len(cps)
    for cp in rotations:
        assert cp.reason == f"rotation/{cp.n}"
        message = cp.ed25519_message()
        keys = {k.kid: k.public for k in used}
        assert keys[cp.prior_key_id].verify(cp.prior_sig, message)
        assert cp.sig_key_id is not None and keys[cp.sig_key_id].verify(cp.sig, message)

    pem = tmp_path / "keys.pem"
    pem.write_text(LogKeys(retired=tuple(k.public for k in used)).pem())
    online = await asyncio.to_thread(cli_log, "verify", "--config", str(config), "--public-key", str(pem))
    assert online.exit_code == 0, online.output
    assert online.output.startswith("3 records, chain intact" if starts[0][1] else "2 records, chain intact")
    out = tmp_path / "log.ndjson"
    exported = await asyncio.to_thread(
        cli_log, "export", "--config", str(config), "--format", "ndjson", "-o", str(out)
    )
    assert exported.exit_code == 0, exported.output
    offline = await asyncio.to_thread(cli_log, "verify", "--export", str(out), "--public-key", str(pem))
    assert offline.exit_code == 0, offline.output
    assert offline.output.splitlines()[0] == online.output.splitlines()[0]
    assert f"log key {newest.kid}, rotated from key {K1.kid}" in offline.output


async def test_a_rotation_checkpoint_of_before_keeps_verifying_and_a_new_one_joins_it(
    log_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """R22: upgrades lose nothing: the writer of before named a rotation checkpoint plain `rotation`; such
    a row keeps its meaning and verifies, and a second rotation on the same record, which collided
    with it before, is now a checkpoint of its own."""
    from consent_banner.log import core

    config = tmp_path / "consent.toml"
    config.write_text(config_text(log_url, decision_rate_limit="off"))
    assert await start(config, (K1,), (), True) == 200
    with monkeypatch.context() as before:
        before.setattr(core, "rotation_reason", lambda n: "rotation")  # as the previous writer did
        await start(config, (K1, K2), (), False)
    await start(config, (K2, K3), (), False)
    assert await start(config, (K3,), (K1, K2), True) == 200
    lg = await open_log(log_url, hmac_key=None, create=False)
    try:
        reasons = [(cp.seq, cp.reason) for cp in await lg.checkpoints() if cp.prior_key_id]
    finally:
        await lg.close()
    assert reasons == [(1, "rotation"), (1, "rotation/3")]
    pem = tmp_path / "keys.pem"
    pem.write_text(LogKeys(retired=(K1.public, K2.public, K3.public)).pem())
    out = tmp_path / "log.ndjson"
    exported = await asyncio.to_thread(
        cli_log, "export", "--config", str(config), "--format", "ndjson", "-o", str(out)
    )
    assert exported.exit_code == 0, exported.output
    offline = await asyncio.to_thread(cli_log, "verify", "--export", str(out), "--public-key", str(pem))
    assert offline.exit_code == 0 and offline.output.startswith("2 records, chain intact"), offline.output
