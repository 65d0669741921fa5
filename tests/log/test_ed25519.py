"""Ed25519 signatures of the log (CONSENT_LOG_SIGNING_KEY): the keys, the head and checkpoints
signed, key rotation with a checkpoint both keys sign, what a writer refuses, `{prefix}/log-key`,
and the commands. R22."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from consent_banner.cli import cli
from consent_banner.errors import LogKeyError, LogUnavailable
from consent_banner.log import Decision, open_log
from consent_banner.log.keys import LogKeys, PublicKey, SigningKey, parse_public_keys, thumbprint
from consent_banner.log.schema import SCHEMA_VERSION

from .conftest import KEY
from .rawdb import RawDB
from .test_offline_verify import export_to

MakeDecision = Callable[..., Decision]
A = SigningKey(bytes(range(32)))
B = SigningKey(bytes(range(2, 34)))
C = SigningKey(bytes(range(5, 37)))


def public(*keys: SigningKey) -> dict[str, PublicKey]:
    return {k.kid: k.public for k in keys}


async def append(lg: Any, decision: MakeDecision, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        await lg.append(decision(consent_id=f"visitor-{i:014d}"))


async def opened(log_url: str, keys: LogKeys, **options: Any) -> Any:
    return await open_log(log_url, hmac_key=KEY, log_keys=keys, checkpoint_every=5, **options)


async def verified(log_url: str, *keys: SigningKey) -> Any:
    """`log verify` over the database, with these public keys and no secret."""
    lg = await open_log(
        log_url, hmac_key=None, create=False, log_keys=LogKeys(retired=tuple(k.public for k in keys))
    )
    try:
        return await lg.verify()
    finally:
        await lg.close()


# --- the keys ----------------------------------------------------------------------------------------


def test_key_id_is_the_rfc_7638_thumbprint() -> None:
    """RFC 8037 A.3: the thumbprint of RFC 8032's first test key (its seed 9d61b19d...)."""
    key = SigningKey(bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"))
    assert key.public.jwk()["x"] == "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
    assert key.kid == thumbprint(key.public.raw) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def test_a_key_line_round_trips_and_its_pem_is_the_same_key() -> None:
    keys = LogKeys.from_env({"CONSENT_LOG_SIGNING_KEY": A.line(), "CONSENT_LOG_PUBLIC_KEYS": B.public.line()})
    assert keys.signer == A and [k.kid for k in keys.retired] == [B.kid]
    assert [k.kid for k in parse_public_keys(keys.pem(), "log-key")] == [A.kid, B.kid]
    assert LogKeys.from_env({}).signer is None and LogKeys.from_env({}).public == {}


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"CONSENT_LOG_SIGNING_KEY": "s" * 40}, "CONSENT_LOG_SIGNING_KEY #1: a log signing key starts with"),
        ({"CONSENT_LOG_SIGNING_KEY": B.public.line()}, "CONSENT_LOG_SIGNING_KEY #1: this is a public key"),
        (
            {"CONSENT_LOG_SIGNING_KEY": "ed25519:AAAA"},
            "CONSENT_LOG_SIGNING_KEY #1: not ed25519:<base64url of 32",
        ),
        ({"CONSENT_LOG_PUBLIC_KEYS": A.line()}, "CONSENT_LOG_PUBLIC_KEYS #1: this is a private signing key"),
        ({"CONSENT_LOG_PUBLIC_KEYS": "nope"}, "CONSENT_LOG_PUBLIC_KEYS #1: not a public key"),
    ],
)
def test_a_malformed_key_is_named_by_its_variable_never_shown(env: dict[str, str], expected: str) -> None:
    with pytest.raises(LogKeyError) as e:
        LogKeys.from_env(env)
    assert str(e.value).startswith(expected)
    assert A.line()[8:] not in str(e.value)  # a private key pasted in the wrong place is not echoed


# --- signing -----------------------------------------------------------------------------------------


async def test_head_and_checkpoints_are_signed_and_verify_with_the_public_key_alone(
    log_url: str, decision: MakeDecision
) -> None:
    """R22: with CONSENT_LOG_SIGNING_KEY every checkpoint and the head carry an Ed25519 signature
    that the public key checks, with no server secret."""
    lg = await opened(log_url, LogKeys((A,)))
    try:
        await append(lg, decision, 12)
        cps = await lg.checkpoints()
    finally:
        await lg.close()
    assert cps and all(cp.sig_key_id == A.kid and A.public.verify(cp.sig, cp.ed25519_message()) for cp in cps)
    result = await verified(log_url, A)
    assert result.ok, result.message
    assert result.signatures == f"signatures: Ed25519, log key {A.kid} (checked with the public key alone)"
    wrong = await verified(log_url, B)
    assert not wrong.ok and A.kid in wrong.message and "not listed" in wrong.message


async def test_without_a_log_key_the_log_keeps_the_hmac_alone(log_url: str, decision: MakeDecision) -> None:
    """No CONSENT_LOG_SIGNING_KEY: today's behaviour, and `log verify` says how to get more."""
    lg = await open_log(log_url, hmac_key=KEY)
    try:
        await append(lg, decision, 3)
        result = await lg.verify()
    finally:
        await lg.close()
    assert result.ok
    assert result.signatures == (
        "signatures: HMAC (server secret) — set CONSENT_LOG_SIGNING_KEY for public verification"
    )


async def test_an_hmac_only_log_is_signed_from_the_next_start_and_verifies_offline(
    log_url: str, decision: MakeDecision, tmp_path: Path
) -> None:
    """Upgrades lose nothing: a log written without the key (its checkpoints HMAC only) is signed
    from the first start with the key on; its export verifies with the public key, the HMAC-only
    checkpoints noted, and with the secret too."""
    lg = await open_log(log_url, hmac_key=KEY, checkpoint_every=5)
    await append(lg, decision, 7)
    await lg.close()
    lg = await opened(log_url, LogKeys((A,)))
    try:
        await append(lg, decision, 6, start=7)
        lines = await export_to(lg, tmp_path / "x.ndjson")
    finally:
        await lg.close()
    from consent_banner.log.offline import verify_export

    offline = verify_export(tmp_path / "x.ndjson", public_keys=public(A))
    assert offline.ok, offline.message
    assert any("carries only an HMAC" in note for note in offline.notes)
    with_both = verify_export(
        tmp_path / "x.ndjson", public_keys=public(A), keys={k: v for k, v in [(_kid(), KEY)]}
    )
    assert with_both.ok, with_both.message
    assert '"type":"head"' in "".join(lines)


def _kid() -> str:
    from consent_banner.log.signing import key_id

    return key_id(KEY)


# --- rotation ------------------------------------------------------------------------------------------


async def rotated(log_url: str, decision: MakeDecision) -> None:
    """Records under A; a start with A,B (the rotation); records under B with A retired."""
    lg = await opened(log_url, LogKeys((A,)))
    await append(lg, decision, 7)
    await lg.close()
    lg = await opened(log_url, LogKeys((A, B)))
    await append(lg, decision, 3, start=7)
    await lg.close()
    lg = await opened(log_url, LogKeys((B,), retired=(A.public,)))
    await append(lg, decision, 6, start=10)
    await lg.close()


async def test_rotation_is_a_checkpoint_both_keys_sign_and_the_log_verifies_across_it(
    log_url: str, decision: MakeDecision, tmp_path: Path
) -> None:
    """R22: the rotation checkpoint names the old key and carries both signatures; the log verifies
    across it with both public keys, from the database and from an export."""
    await rotated(log_url, decision)
    lg = await open_log(log_url, hmac_key=None, create=False)
    try:
        cps = await lg.checkpoints()
    finally:
        await lg.close()
    (rotation,) = [cp for cp in cps if cp.prior_key_id is not None]
    assert (rotation.prior_key_id, rotation.sig_key_id) == (A.kid, B.kid)
    assert rotation.reason == f"rotation/{rotation.n}"  # unique per record: test_rotation_twice.py
    message = rotation.ed25519_message()
    assert A.public.verify(rotation.prior_sig, message) and B.public.verify(rotation.sig, message)
    assert [cp.sig_key_id for cp in cps if cp.n is not None and cp.n < rotation.n] == [A.kid] * (
        rotation.n - 1
    )
    assert all(cp.sig_key_id == B.kid for cp in cps if cp.n is not None and cp.n > rotation.n)
    result = await verified(log_url, A, B)
    assert result.ok, result.message
    rotated_from = f"log key {B.kid}, rotated from key {A.kid}"
    assert result.signatures == f"signatures: Ed25519, {rotated_from} (checked with the public key alone)"
    lg = await open_log(log_url, hmac_key=None, create=False)
    try:
        await export_to(lg, tmp_path / "x.ndjson")
    finally:
        await lg.close()
    from consent_banner.log.offline import verify_export

    assert verify_export(tmp_path / "x.ndjson", public_keys=public(A, B)).ok


async def test_newer_checkpoints_by_an_unlisted_key_fail_naming_it(
    log_url: str, decision: MakeDecision
) -> None:
    """R22: an auditor who listed only the old key is told the newer checkpoints' key id; one who
    listed only the new key, the old one's."""
    await rotated(log_url, decision)
    only_old = await verified(log_url, A)
    assert not only_old.ok and only_old.problem == "signature"
    assert B.kid in only_old.message and "not listed" in only_old.message
    only_new = await verified(log_url, B)
    assert not only_new.ok and A.kid in only_new.message and "not listed" in only_new.message


async def test_a_key_change_without_a_rotation_checkpoint_is_named(
    log_url: str, decision: MakeDecision
) -> None:
    """Someone holding the database and a second key (say, a retired one they kept) signs a
    checkpoint with it: listed or not, the key changed with no checkpoint both keys signed."""
    lg = await opened(log_url, LogKeys((A,)))
    try:
        await append(lg, decision, 12)
        cps = await lg.checkpoints()
    finally:
        await lg.close()
    last = cps[-1]
    from dataclasses import replace

    forged = replace(last, sig_key_id=C.kid)
    forged = replace(forged, sig=C.sign(forged.ed25519_message()))
    async with RawDB(log_url) as raw:
        await raw.allow_tampering()
        await raw.execute(
            f"UPDATE checkpoints SET sig_key_id = '{C.kid}', sig = '{forged.sig}' WHERE n = {last.n}"
        )
    result = await verified(log_url, A, C)
    assert not result.ok and result.problem == "signature"
    assert f"signed by log key {C.kid}" in result.message and "no rotation checkpoint" in result.message


# --- what a writer refuses -------------------------------------------------------------------------


async def test_a_writer_holding_only_the_public_half_of_the_heads_key_does_not_write(
    log_url: str, decision: MakeDecision
) -> None:
    """Rotating needs both private keys once (CONSENT_LOG_SIGNING_KEY=<old>,<new>): a server given
    the new key with the old one only retired would change the key with no link; it fails closed."""
    lg = await opened(log_url, LogKeys((A,)))
    await append(lg, decision, 2)
    await lg.close()
    lg = await opened(log_url, LogKeys((B,), retired=(A.public,)))
    try:
        with pytest.raises(LogUnavailable, match="holds only as a public key"):
            await append(lg, decision, 1, start=2)
    finally:
        await lg.close()


async def test_a_server_without_the_log_key_stops_after_a_signed_head(
    log_url: str, decision: MakeDecision
) -> None:
    """A server started without CONSENT_LOG_SIGNING_KEY (or an old one still holding only the
    retired key) would sign what follows with the HMAC alone or an old key: it does not write."""
    await rotated(log_url, decision)
    for keys, why in ((LogKeys(), "set CONSENT_LOG_SIGNING_KEY"), (LogKeys((A,)), "not listed")):
        lg = await opened(log_url, keys)
        try:
            with pytest.raises(LogUnavailable, match=why):
                await append(lg, decision, 1, start=50)
        finally:
            await lg.close()
    assert (await verified(log_url, A, B)).ok


async def test_no_write_after_a_head_whose_ed25519_signature_was_changed(
    log_url: str, decision: MakeDecision
) -> None:
    """Someone with the HMAC secret but not the log key forges a head: its HMAC passes, its
    Ed25519 signature does not, and re-signing it would launder the forgery: no write."""
    lg = await opened(log_url, LogKeys((A,)))
    await append(lg, decision, 2)
    await lg.close()
    async with RawDB(log_url) as raw:
        await raw.allow_tampering()
        await raw.execute(f"UPDATE head SET sig = '{A.sign(b'something else')}' WHERE id = 1")
    lg = await opened(log_url, LogKeys((A,)))
    try:
        with pytest.raises(LogUnavailable, match="Ed25519 signature .* does not match"):
            await append(lg, decision, 1, start=2)
    finally:
        await lg.close()


# --- {prefix}/log-key and the commands ------------------------------------------------------------------


def _app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **env: str) -> Any:
    from starlette.responses import PlainTextResponse

    from consent_banner import ConsentMiddleware

    monkeypatch.setenv("CONSENT_SECRET_KEYS", "k" * 40)
    for name in ("CONSENT_LOG_SIGNING_KEY", "CONSENT_LOG_PUBLIC_KEYS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    toml = tmp_path / "consent.toml"
    toml.write_text(
        f'policy_revision = "1"\ncontroller = "x"\nprivacy_policy_url = "/p"\nlog = "sqlite:///{tmp_path}/l.db"\n'
        '[categories.necessary]\nlabel = "N"\n'
    )
    return ConsentMiddleware(PlainTextResponse("app"), toml)


async def test_log_key_serves_pem_and_a_jwk_set_with_the_retired_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _app(
        tmp_path, monkeypatch, CONSENT_LOG_SIGNING_KEY=B.line(), CONSENT_LOG_PUBLIC_KEYS=A.public.line()
    )
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            pem = await c.get("/_consent/log-key")
            jwks = await c.get("/_consent/log-key", headers={"accept": "application/jwk+json"})
            head = await c.head("/_consent/log-key")
    finally:
        await app.close()
    assert pem.status_code == 200 and pem.headers["content-type"] == "text/plain; charset=utf-8"
    assert [k.kid for k in parse_public_keys(pem.text, "log-key")] == [B.kid, A.kid]
    assert pem.headers["cache-control"] == "public, max-age=3600" and pem.headers["vary"] == "Accept"
    assert "set-cookie" not in pem.headers and head.status_code == 200
    assert jwks.headers["content-type"] == "application/jwk-set+json"
    keys = jwks.json()["keys"]
    assert [(k["kty"], k["crv"], k["kid"], k["status"]) for k in keys] == [
        ("OKP", "Ed25519", B.kid, "current"),
        ("OKP", "Ed25519", A.kid, "retired"),
    ]
    assert keys[0]["x"] == B.public.jwk()["x"] and "d" not in keys[0]


async def test_log_key_is_404_for_an_hmac_only_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = _app(tmp_path, monkeypatch)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            r = await c.get("/_consent/log-key")
    finally:
        await app.close()
    assert r.status_code == 404 and "CONSENT_LOG_SIGNING_KEY is not set" in r.json()["error"]


def test_keygen_log_and_pubkey_and_verify_export_from_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, decision: MakeDecision
) -> None:
    """R22: keygen --log -> CONSENT_LOG_SIGNING_KEY; the server signs; `log pubkey` -> key.pem; an
    auditor with the export and key.pem alone (no secret, no database) verifies it."""
    import asyncio

    line = CliRunner().invoke(cli, ["keygen", "--log"]).output.strip()
    key = SigningKey(
        __import__("consent_banner.log.keys", fromlist=["x"]).from_b64url(line[len("ed25519:") :])
    )
    monkeypatch.setenv("CONSENT_LOG_SIGNING_KEY", line)
    monkeypatch.setenv("CONSENT_SECRET_KEYS", "s" * 40)
    pem = CliRunner().invoke(cli, ["log", "pubkey"]).output
    (tmp_path / "key.pem").write_text(pem)
    assert pem.startswith("-----BEGIN PUBLIC KEY-----") and parse_public_keys(pem, "x")[0].kid == key.kid
    db = tmp_path / "log.db"
    toml = tmp_path / "consent.toml"
    toml.write_text(
        f'policy_revision = "1"\ncontroller = "x"\nprivacy_policy_url = "/p"\nlog = "sqlite:///{db}"\n'
        '[categories.necessary]\nlabel = "N"\n'
    )

    async def fill() -> None:
        lg = await opened(f"sqlite:///{db}", LogKeys.from_env())
        await append(lg, decision, 4)
        await lg.close()

    asyncio.run(fill())
    out = tmp_path / "log.ndjson"
    assert (
        CliRunner()
        .invoke(cli, ["log", "export", "--config", str(toml), "--format", "ndjson", "-o", str(out)])
        .exit_code
        == 0
    )
    for name in ("CONSENT_LOG_SIGNING_KEY", "CONSENT_SECRET_KEYS"):
        monkeypatch.delenv(name)
    args = ["log", "verify", "--export", str(out), "--public-key", str(tmp_path / "key.pem")]
    ok = CliRunner().invoke(cli, args)
    assert ok.exit_code == 0, ok.output
    assert (
        ok.output.splitlines()[1]
        == f"signatures: Ed25519, log key {key.kid} (checked with the public key alone)"
    )
    lines = out.read_text().splitlines(keepends=True)
    i = next(i for i, x in enumerate(lines) if x.startswith('{"seq":3,'))
    data = json.loads(lines[i])
    data["ip"] = "198.51.100.0"
    lines[i] = json.dumps(data, separators=(",", ":")) + "\n"
    out.write_text("".join(lines))
    bad = CliRunner().invoke(cli, args)
    assert bad.exit_code == 1 and bad.output.startswith("record 3: changed")
    (tmp_path / "bad.pem").write_text("-----BEGIN PRIVATE KEY-----\nxx\n-----END PRIVATE KEY-----\n")
    refused = CliRunner().invoke(
        cli, ["log", "verify", "--export", str(out), "--public-key", str(tmp_path / "bad.pem")]
    )
    assert refused.exit_code == 1 and "this is a private key" in refused.output


# --- the previous releases' logs -----------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["legacy-log-v1.db", "schema2-log.db"])
async def test_a_previous_release_log_migrates_signs_on_and_verifies_offline(
    fixture: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, decision: MakeDecision
) -> None:
    """R22, upgrades lose nothing: a log of a previous release (its HMACs under the old and new server
    keys) migrated to schema 4 still verifies with the secrets; with a log signing key from then on,
    its whole export verifies with the public key alone, the older checkpoints noted as HMAC only."""
    import asyncio
    import shutil

    from consent_banner.log import derive_hmac_key
    from consent_banner.log.commands import log as log_group
    from consent_banner.log.offline import verify_export

    old, new = "o" * 40, "s" * 40
    db = tmp_path / "old.db"
    shutil.copy(Path(__file__).parent.parent / "fixtures" / fixture, db)
    toml = tmp_path / "consent.toml"
    toml.write_text(
        f'policy_revision = "1"\ncontroller = "x"\nprivacy_policy_url = "/p"\nlog = "sqlite:///{db}"\n'
        '[categories.necessary]\nlabel = "N"\n'
    )
    monkeypatch.setenv("CONSENT_SECRET_KEYS", f"{old},{new}")
    migrated = await asyncio.to_thread(CliRunner().invoke, log_group, ["migrate", "--config", str(toml)])
    assert migrated.exit_code == 0 and f"schema version {SCHEMA_VERSION}" in migrated.output, migrated.output
    url = f"sqlite:///{db}"
    lg = await open_log(
        url, hmac_key=derive_hmac_key(new), previous_hmac_keys=[derive_hmac_key(old)], log_keys=LogKeys((A,))
    )
    try:
        await append(lg, decision, 2, start=900)
        in_db = await lg.verify()
        await export_to(lg, tmp_path / "x.ndjson")
    finally:
        await lg.close()
    assert in_db.ok, in_db.message
    offline = verify_export(tmp_path / "x.ndjson", public_keys=public(A))
    assert offline.ok and offline.message == in_db.message, offline.message
    assert any("carries only an HMAC" in note for note in offline.notes)


async def test_an_auditor_with_the_public_key_is_not_satisfied_by_an_hmac_only_log(
    log_url: str, decision: MakeDecision
) -> None:
    """`log verify --public-key` over a database whose head carries no Ed25519 signature fails:
    the auditor asked for a check only the public key makes, and nothing made it."""
    lg = await open_log(log_url, hmac_key=KEY)
    await append(lg, decision, 2)
    await lg.close()
    lg = await open_log(log_url, hmac_key=None, create=False, log_keys=LogKeys(retired=(A.public,)))
    try:
        lenient, strict = await lg.verify(), await lg.verify(require_public=True)
    finally:
        await lg.close()
    assert (
        lenient.ok
        and lenient.signatures
        == "signatures: not checked (no key: CONSENT_SECRET_KEYS, --key or --public-key)"
    )
    assert not strict.ok and strict.problem == "signature" and "no Ed25519 signature" in strict.message
