"""The signed receipt (R24, issue 18): `{prefix}/receipt?format=jws` and `consent-banner receipt verify`.

A real decision through the middleware, the JWS checked by two implementations that are not ours
(RFC 7515 by hand with `cryptography`, and joserfc), then every way to forge one refused by name.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from joserfc import jws as joserfc_jws
from joserfc.errors import SecurityWarning
from joserfc.jwk import OKPKey
from starlette.applications import Starlette
from starlette.routing import Mount

from consent_banner import ConsentConfig, ConsentMiddleware
from consent_banner.audit.signed_receipt import TYP, sign_receipt
from consent_banner.cli import cli
from consent_banner.log.keys import SigningKey, b64url, from_b64url
from tests.support.servers import free_port

from ..conftest import ORIGIN, make_app, rows

SITE_KEY = SigningKey.generate()  # the site's log signing key
OTHER_LOG = SigningKey.generate()  # another site's log key
ATTACKER = SigningKey.generate()


def b64json(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def parts(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    h, p, s = token.split(".")
    return json.loads(from_b64url(h)), json.loads(from_b64url(p)), from_b64url(s)


def signed_with(key: SigningKey, header: dict[str, Any], payload: dict[str, Any]) -> str:
    """A compact JWS made by hand (RFC 7515 §5.1), whatever its header says."""
    signing_input = f"{b64json(header)}.{b64json(payload)}"
    return f"{signing_input}.{key.sign(signing_input.encode('ascii'))}"


async def decide(client: httpx.AsyncClient, action: str = "accept_all") -> str:
    """A decision as the banner's script posts it; the visitor's consent id."""
    r = await client.post("/_consent", json={"action": action}, headers={"origin": ORIGIN})
    assert r.status_code == 200, r.text
    who = (await client.get("/whoami")).json()
    assert who["decided"]
    return str(who["id"])


@pytest.fixture
def signing(monkeypatch: pytest.MonkeyPatch) -> SigningKey:
    monkeypatch.setenv("CONSENT_LOG_SIGNING_KEY", SITE_KEY.line())
    return SITE_KEY


@pytest.fixture
async def site(config: ConsentConfig, signing: SigningKey) -> AsyncIterator[ConsentMiddleware]:
    app = make_app(config)
    yield app
    await app.close()


def visitor(app: ConsentMiddleware) -> httpx.AsyncClient:
    """One browser: its own cookie jar."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN)


@pytest.fixture
async def token(site: ConsentMiddleware) -> str:
    """A real receipt: a decision, then a change of mind, downloaded signed."""
    async with visitor(site) as c:
        await decide(c, "accept_all")
        await decide(c, "reject_all")
        r = await c.get("/_consent/receipt", params={"format": "jws"})
        assert r.status_code == 200
        return r.text


@pytest.fixture
def pem(tmp_path: Path) -> Path:
    path = tmp_path / "site.pem"
    path.write_text(SITE_KEY.public.pem())
    return path


def verify(path: Path | str, *keys: Path) -> Any:
    args = ["receipt", "verify", str(path)]
    for k in keys:
        args += ["--public-key", str(k)]
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def written(tmp_path: Path, token: str, name: str = "receipt.jws") -> Path:
    path = tmp_path / name
    path.write_text(token)
    return path


# --- the download ----------------------------------------------------------------------------------


async def test_a_decision_downloads_a_receipt_that_independent_jws_implementations_verify(
    site: ConsentMiddleware, config: ConsentConfig
) -> None:
    """R24: the signed receipt holds the caller's records, checked per RFC 7515 by hand and by joserfc."""
    async with visitor(site) as c:
        consent_id = await decide(c, "accept_all")
        await decide(c, "reject_all")
        r = await c.get("/_consent/receipt", params={"format": "jws"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/jose"
    assert "no-store" in r.headers["cache-control"] and "private" in r.headers["cache-control"]
    assert "Cookie" in r.headers["vary"]
    assert r.headers["content-disposition"] == 'attachment; filename="consent-receipt.jws"'

    header, payload, signature = parts(r.text)
    assert header == {"alg": "EdDSA", "kid": SITE_KEY.kid, "typ": TYP}
    # RFC 7515 §5.2 by hand: the signature is over ASCII(header "." payload), with the published key
    # (its x from the JWK Set the site serves, not from anything in the token).
    async with visitor(site) as c:
        jwks = (await c.get("/_consent/log-key", headers={"accept": "application/jwk-set+json"})).json()
    (jwk,) = [k for k in jwks["keys"] if k["kid"] == header["kid"]]
    public = Ed25519PublicKey.from_public_bytes(from_b64url(jwk["x"]))
    public.verify(signature, r.text.rsplit(".", 1)[0].encode("ascii"))  # raises if it does not verify
    with warnings.catch_warnings():  # joserfc warns that RFC 9864 renamed EdDSA: the token is as issued
        warnings.simplefilter("ignore", SecurityWarning)
        checked = joserfc_jws.deserialize_compact(r.text, OKPKey.import_key(jwk), algorithms=["EdDSA"])
    assert json.loads(checked.payload) == payload

    stored = rows(config)
    assert payload["iss"] == ORIGIN and payload["sub"] == consent_id
    assert payload["log_key"] == f"{ORIGIN}/_consent/log-key"
    assert abs(payload["iat"] - time.time()) < 60
    assert [(x["seq"], x["action"], x["hash"]) for x in payload["records"]] == [
        (s["seq"], s["action"], s["hash"]) for s in stored if s["consent_id"] == consent_id
    ]
    first, second = payload["records"]
    assert first["granted"] == ["necessary", "analytics", "marketing"] and first["denied"] == []
    assert second["denied"] == ["analytics", "marketing"] and second["version_id"]


async def test_the_receipt_is_only_the_callers_own(site: ConsentMiddleware) -> None:
    """R24: the consent id comes from the verified cookie; no parameter reaches another visitor's."""
    async with visitor(site) as alice, visitor(site) as bob:
        alice_id = await decide(alice, "accept_all")
        bob_id = await decide(bob, "reject_all")
        r = await bob.get(
            "/_consent/receipt", params={"format": "jws", "consent_id": alice_id, "sub": alice_id}
        )
        _, payload, _ = parts(r.text)
        assert payload["sub"] == bob_id and [x["action"] for x in payload["records"]] == ["reject_all"]
        forged = alice.cookies["consent"][:-4] + "AAAA"  # Alice's cookie with its signature broken
    async with visitor(site) as mallory:
        mallory.cookies.set("consent", forged)
        refused = await mallory.get("/_consent/receipt", params={"format": "jws"})
        assert refused.status_code == 404
        assert "no consent decision" in refused.json()["error"] and alice_id not in refused.text


async def test_an_undecided_browser_gets_a_reason_not_a_signature(site: ConsentMiddleware) -> None:
    async with visitor(site) as c:
        r = await c.get("/_consent/receipt", headers={"accept": "application/jose"})
        assert r.status_code == 404 and r.headers["content-type"] == "application/json"
        assert r.json() == {"error": "this browser carries no consent decision: there is nothing to sign"}
        assert "format=jws" not in (await c.get("/_consent/receipt")).text


async def test_without_a_log_signing_key_the_download_is_refused_and_never_offered(
    config: ConsentConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONSENT_LOG_SIGNING_KEY", raising=False)
    app = make_app(config)
    try:
        async with visitor(app) as c:
            await decide(c)
            r = await c.get("/_consent/receipt", params={"format": "jws"})
            assert r.status_code == 404 and "no-store" in r.headers["cache-control"]
            assert "CONSENT_LOG_SIGNING_KEY is not set" in r.json()["error"]
            assert "format=jws" not in (await c.get("/_consent/receipt")).text
            assert "format=jws" not in (await c.get("/")).text  # the settings dialog has no link
    finally:
        await app.close()


async def test_the_receipt_page_and_the_settings_dialog_link_the_signed_download(
    site: ConsentMiddleware,
) -> None:
    async with visitor(site) as c:
        assert "format=jws" not in (await c.get("/")).text  # nothing to sign before a decision
        await decide(c)
        page = (await c.get("/_consent/receipt")).text
        assert 'href="/_consent/receipt?format=jws" download' in page
        dialog = (await c.get("/plain", headers={"accept-language": "sv"})).text  # in the visitor's language
        assert '<a href="/_consent/receipt?format=jws" download>Ladda ner ett signerat kvitto' in dialog


# --- the command -----------------------------------------------------------------------------------


def test_the_command_verifies_and_prints_the_records(token: str, pem: Path, tmp_path: Path) -> None:
    result = verify(written(tmp_path, token), pem)
    assert result.exit_code == 0, result.output
    _, payload, _ = parts(token)
    assert f"receipt valid: signed by key {SITE_KEY.kid} (given with --public-key)" in result.stdout
    assert f"consent id  {payload['sub']}" in result.stdout
    assert "reject_all  allowed: necessary  refused: analytics, marketing" in result.stdout
    assert payload["records"][1]["hash"] in result.stdout


def forgeries(token: str) -> dict[str, tuple[str, str]]:
    """Each forgery of a real receipt, and the reason `receipt verify` must give for it."""
    header, payload, _ = parts(token)
    h, p, s = token.split(".")
    richer = {**payload, "records": payload["records"][:1]}  # keep only the accept_all
    attacker_jwk = {k: v for k, v in ATTACKER.public.jwk().items() if k != "kid"}
    hmac_key = SITE_KEY.public.pem().encode()
    hs_input = f"{b64json({'alg': 'HS256', 'typ': TYP, 'kid': SITE_KEY.kid})}.{p}"
    hs_sig = b64url(hmac.new(hmac_key, hs_input.encode(), hashlib.sha256).digest())
    edited = {**payload["records"][0], "granted": ["necessary"], "denied": ["analytics", "marketing"]}
    one_byte = bytearray(from_b64url(p))
    one_byte[one_byte.index(b"reject_all")] = ord("R")
    return {
        "a payload byte changed": (f"{h}.{b64url(bytes(one_byte))}.{s}", "bad signature"),
        "records dropped": (f"{h}.{b64json(richer)}.{s}", "bad signature"),
        "alg none": (f"{b64json({**header, 'alg': 'none'})}.{b64json(richer)}.", "an unsigned token"),
        "alg HS256 keyed with the public key": (f"{hs_input}.{hs_sig}", "alg 'HS256' is not EdDSA"),
        "the attacker's key in a jwk header": (
            signed_with(ATTACKER, {**header, "kid": ATTACKER.kid, "jwk": attacker_jwk}, richer),
            "the header carries a key (jwk)",
        ),
        "a jku header": (signed_with(ATTACKER, {**header, "jku": "https://evil.example/k"}, richer), "(jku)"),
        "another log's key": (
            signed_with(OTHER_LOG, {**header, "kid": OTHER_LOG.kid}, richer),
            "unknown kid",
        ),
        "another key under the site's kid": (signed_with(OTHER_LOG, header, richer), "bad signature"),
        "another kind of token": (signed_with(SITE_KEY, {**header, "typ": "JWT"}, payload), "typ 'JWT'"),
        "a record whose fields were edited under its hash": (
            signed_with(SITE_KEY, header, {**payload, "records": [edited]}),
            "record 1 (#1): its hash does not match its fields",
        ),
        "two parts": (f"{h}.{p}", "malformed token: a compact JWS has 3 parts"),
        "a header that is not JSON": (f"{b64url(b'nope')}.{p}.{s}", "its header is not base64url of JSON"),
        "no kid": (signed_with(SITE_KEY, {"alg": "EdDSA", "typ": TYP}, payload), "names no key (kid)"),
        "a critical extension": (
            signed_with(SITE_KEY, {**header, "crit": ["b64"], "b64": False}, payload),
            "crit",
        ),
    }


FORGERIES = [
    "a payload byte changed",
    "records dropped",
    "alg none",
    "alg HS256 keyed with the public key",
    "the attacker's key in a jwk header",
    "a jku header",
    "another log's key",
    "another key under the site's kid",
    "another kind of token",
    "a record whose fields were edited under its hash",
    "two parts",
    "a header that is not JSON",
    "no kid",
    "a critical extension",
]


@pytest.mark.parametrize("forgery", FORGERIES)
def test_each_forgery_is_refused_by_name(token: str, pem: Path, tmp_path: Path, forgery: str) -> None:
    """R24: a receipt is believed only as the site's key signed it; each forgery is refused by name."""
    forged, reason = forgeries(token)[forgery]
    result = verify(written(tmp_path, forged), pem)
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert result.stderr.startswith("receipt INVALID: ") and reason in result.stderr, result.stderr


def test_the_genuine_receipt_passes_the_same_checks(token: str, pem: Path, tmp_path: Path) -> None:
    """The forgeries' guard: the token they start from verifies (so each refusal is the forgery's)."""
    assert set(forgeries(token)) == set(FORGERIES)
    assert verify(written(tmp_path, token), pem).exit_code == 0


def test_a_receipt_signed_by_a_retired_key_verifies_with_that_key_listed(
    token: str, pem: Path, tmp_path: Path
) -> None:
    newer = tmp_path / "new.pem"
    newer.write_text(SigningKey.generate().public.pem())
    path = written(tmp_path, token)
    assert verify(path, newer).exit_code == 1
    assert "unknown kid" in verify(path, newer).stderr
    both = verify(path, newer, pem)
    assert both.exit_code == 0 and f"signed by key {SITE_KEY.kid}" in both.stdout
    # the site's own `{prefix}/log-key` file after the rotation (every key, PEM blocks) serves as well
    rotated = tmp_path / "log-key.pem"
    rotated.write_text(f"# key id new\n{newer.read_text()}# key id old\n{SITE_KEY.public.pem()}")
    assert verify(path, rotated).exit_code == 0


def test_usage_errors_exit_2(token: str, tmp_path: Path) -> None:
    assert verify(tmp_path / "missing.jws").exit_code == 2
    private = tmp_path / "private.pem"
    private.write_text(SITE_KEY.line())
    result = verify(written(tmp_path, token), private)
    assert result.exit_code == 2 and "private signing key" in result.stderr


def test_what_a_receipt_says_reaches_the_terminal_escaped(pem: Path, tmp_path: Path, token: str) -> None:
    """A site (or whoever wrote its database) cannot drive the verifier's terminal."""
    header, payload, _ = parts(token)
    hostile = signed_with(SITE_KEY, header, {**payload, "iss": "https://x.example\x1b]0;owned\x07\x1b[8m"})
    result = verify(written(tmp_path, hostile), pem)
    assert result.exit_code == 0
    assert "\x1b" not in result.output and "\\u001b]0;owned\\u0007\\u001b[8m" in result.stdout


# --- the published key, fetched over loopback ------------------------------------------------------


class Served:
    """The site under uvicorn in a thread, on a loopback port of its own."""

    def __init__(self, app: ConsentMiddleware) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, port=self.port, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the site did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)


@pytest.fixture
def served(config: ConsentConfig, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    """A site that signs with a new key and still lists the receipts' key as retired (a rotation)."""
    monkeypatch.setenv("CONSENT_LOG_SIGNING_KEY", SigningKey.generate().line())
    monkeypatch.setenv("CONSENT_LOG_PUBLIC_KEYS", SITE_KEY.public.line())
    app = make_app(config)
    with Served(app) as s:
        yield s


def issued_by(url: str, token: str, **changes: Any) -> str:
    header, payload, _ = parts(token)
    return signed_with(
        SITE_KEY, header, {**payload, "iss": url, "log_key": f"{url}/_consent/log-key", **changes}
    )


def test_over_http_a_decision_downloads_a_receipt_the_command_verifies_with_the_fetched_key(
    served: Served, tmp_path: Path
) -> None:
    """R24: over a real socket, and verified with nothing but what the site publishes."""
    with httpx.Client(base_url=served.url) as c:
        decided = c.post("/_consent", json={"action": "accept_all"}, headers={"origin": served.url})
        assert decided.status_code == 200
        r = c.get("/_consent/receipt?format=jws")
    assert r.status_code == 200 and parts(r.text)[1]["iss"] == served.url
    result = verify(written(tmp_path, r.text))
    assert result.exit_code == 0, result.output
    assert (
        f"key fetched from {served.url}/_consent/log-key: trust it only if that is the site's"
        in result.stderr
    )
    assert "plain HTTP" in result.stderr


def test_a_receipt_of_a_retired_key_verifies_with_the_key_the_site_still_lists(
    served: Served, token: str, tmp_path: Path
) -> None:
    result = verify(written(tmp_path, issued_by(served.url, token)))
    assert result.exit_code == 0, result.output
    assert f"signed by key {SITE_KEY.kid} (fetched from {served.url}/_consent/log-key)" in result.stdout


def test_a_forged_receipt_is_refused_with_the_fetched_key_too(
    served: Served, token: str, tmp_path: Path
) -> None:
    header, payload, _ = parts(issued_by(served.url, token))
    forged = signed_with(ATTACKER, header, payload)
    result = verify(written(tmp_path, forged))
    assert result.exit_code == 1 and "bad signature" in result.stderr


def test_an_unreachable_key_is_said_and_nothing_is_verified(token: str, tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    result = verify(written(tmp_path, issued_by(closed, token)))
    assert result.exit_code == 3
    assert f"cannot fetch the site's key from {closed}/_consent/log-key" in result.stderr
    assert "nothing was verified" in result.stderr and "receipt valid" not in result.output


def test_a_key_address_off_the_issuers_origin_is_never_fetched(token: str, tmp_path: Path) -> None:
    header, payload, _ = parts(token)
    elsewhere = {**payload, "log_key": "https://evil.example/_consent/log-key"}
    result = verify(written(tmp_path, signed_with(SITE_KEY, header, elsewhere)))
    assert result.exit_code == 1 and "is not on the issuer's origin" in result.stderr
    assert "key fetched" not in result.stderr


def test_an_unsigned_token_sends_no_request(token: str, tmp_path: Path) -> None:
    header, payload, _ = parts(token)
    unsigned = f"{b64json({**header, 'alg': 'none'})}.{b64json(payload)}."
    result = verify(written(tmp_path, unsigned))
    assert result.exit_code == 1 and "an unsigned token is never accepted" in result.stderr
    assert "key fetched" not in result.stderr


def test_sign_receipt_names_its_key_and_type() -> None:
    """The header a verifier keys on, from a claims set of no records (a decided visitor whose records
    were purged is told so, signed)."""
    key = Ed25519PrivateKey.generate()
    signer = SigningKey(key.private_bytes_raw())
    token = sign_receipt({"iss": ORIGIN, "sub": "x", "iat": 1, "log_id": "l", "records": []}, signer)
    assert parts(token)[0] == {"alg": "EdDSA", "kid": signer.kid, "typ": "consent-receipt+jwt"}


# --- the demo ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "says"), [("/privacy", "download it signed"), ("/sv/privacy", "ladda ner det signerat")]
)
async def test_the_demos_privacy_page_links_the_signed_receipt(
    tmp_path: Path, signing: SigningKey, path: str, says: str
) -> None:
    from server.app import build

    app, info = build(workdir=tmp_path)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN) as c:
            page = (await c.get(path)).text
        assert f'<a href="/_consent/receipt?format=jws" download>{says}' in page
        assert '<a href="/_consent/log-key">' in page
    finally:
        await info["middleware"].close()


async def test_the_demos_privacy_page_offers_no_signed_receipt_without_a_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from server.app import build

    monkeypatch.delenv("CONSENT_LOG_SIGNING_KEY", raising=False)
    app, info = build(workdir=tmp_path)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN) as c:
            page = (await c.get("/privacy")).text
        assert "format=jws" not in page and "/_consent/receipt" in page
    finally:
        await info["middleware"].close()


def test_consent_banner_demo_signs_with_a_log_key_it_keeps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`consent-banner demo` without CONSENT_LOG_SIGNING_KEY makes one up once and keeps it (owner
    only) beside its log, which would refuse a second run under another key."""
    import consent_banner.cli as cli_module

    started: list[str | None] = []

    class FakeSite:
        @staticmethod
        def run(host: str, port: int, config_path: Path | None, show_audit_password: bool = False) -> None:
            started.append(os.environ.get("CONSENT_LOG_SIGNING_KEY"))

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli_module, "_demo_module", lambda: FakeSite)
    for _ in range(2):
        monkeypatch.delenv("CONSENT_LOG_SIGNING_KEY", raising=False)
        result = CliRunner().invoke(cli, ["demo", "--port", "8123"])
        assert result.exit_code == 0, result.output
        assert "CONSENT_LOG_SIGNING_KEY is not set" in result.stderr
    key_file = tmp_path / ".consent-demo-log-key"
    assert started[0] and started[0].startswith("ed25519:") and started[0] == started[1]
    assert key_file.read_text().strip() == started[0] and key_file.stat().st_mode & 0o777 == 0o600
    monkeypatch.setenv("CONSENT_LOG_SIGNING_KEY", SITE_KEY.line())  # the operator's own key wins
    assert CliRunner().invoke(cli, ["demo", "--port", "8123"]).exit_code == 0
    assert started[2] == SITE_KEY.line()


async def test_under_a_root_path_the_links_and_the_key_address_keep_it(
    config: ConsentConfig, signing: SigningKey
) -> None:
    """A site mounted at /shop: the signed download, and the key address inside it, are under /shop."""
    mw = make_app(config)
    shop = Starlette(routes=[Mount("/shop", app=mw)])
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=shop), base_url=ORIGIN) as c:
            r = await c.post("/shop/_consent", json={"action": "accept_all"}, headers={"origin": ORIGIN})
            assert r.status_code == 200
            assert 'href="/shop/_consent/receipt?format=jws" download' in (await c.get("/shop/")).text
            assert 'href="/shop/_consent/receipt?format=jws"' in (await c.get("/shop/_consent/receipt")).text
            token = (await c.get("/shop/_consent/receipt?format=jws")).text
            assert parts(token)[1]["log_key"] == f"{ORIGIN}/shop/_consent/log-key"
            assert (await c.get("/shop/_consent/log-key")).status_code == 200
    finally:
        await mw.close()
