"""Who may read the log: auditors with credentials (R25), visitors their own receipt only (R24)."""

from __future__ import annotations

import ast
import base64
import hmac
import inspect
import json
import secrets
from pathlib import Path
from typing import Any

import pytest

import consent_banner.audit as audit
from consent_banner import ConsentConfig
from consent_banner.consent import Consent, ConsentCodec

from ..conftest import make_app
from .asgi_driver import Answer, call
from .conftest import write_config

HOST = b"testserver"
USER, PASSWORD, TOKEN = "auditor", "correct horse battery staple", "t0ken-" + "x" * 40
AUDIT_ROUTES = [
    "/_consent/audit",
    "/_consent/audit/",
    "/_consent/audit/records",
    "/_consent/audit/export.csv",
    "/_consent/audit/chain",
]


def basic(user: str, password: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


@pytest.fixture
async def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    for name, value in (
        ("CONSENT_AUDIT_USER", USER),
        ("CONSENT_AUDIT_PASSWORD", PASSWORD),
        ("CONSENT_AUDIT_TOKEN", TOKEN),
    ):
        monkeypatch.setenv(name, value)
    application = make_app(ConsentConfig.from_toml(write_config(tmp_path)))
    yield application
    await application.close()


async def get(app: Any, path: str, headers: list[tuple[bytes, bytes]] | None = None) -> Answer:
    path, _, query = path.partition("?")
    return await call(app, "GET", path, headers=headers or [], host=HOST, query=query.encode())


async def decide(app: Any, cookie: str | None = None) -> tuple[str, str]:
    headers = [(b"origin", b"http://testserver"), (b"content-type", b"application/json")]
    if cookie:
        headers.append((b"cookie", f"consent={cookie}".encode()))
    answer = await call(app, "POST", "/_consent", headers=headers, body=b'{"action":"accept_all"}', host=HOST)
    assert answer.status == 200
    value = answer.set_cookie("consent")
    assert value
    return json.loads(answer.body)["consent_id"], value


@pytest.mark.parametrize("path", AUDIT_ROUTES)
@pytest.mark.parametrize(
    "authorization",
    [
        None,
        b"",
        basic(USER, "wrong"),
        basic("someone", PASSWORD),
        basic(USER, PASSWORD[:-1]),
        basic(USER, PASSWORD + "x"),
        b"Bearer wrong",
        b"Bearer " + TOKEN[:-1].encode(),
        b"Basic !!notbase64",
        b"Bearer",
        b"Digest " + TOKEN.encode(),
        basic(USER, ""),
        basic("", PASSWORD),
    ],
    ids=lambda v: "none" if v is None else v.decode()[:20],
)
async def test_audit_routes_refuse_missing_and_wrong_credentials(
    app: Any, path: str, authorization: bytes | None
) -> None:
    """R25: no or wrong credentials: 401 with a challenge, and nothing of the log in the body."""
    await decide(app)
    headers = [] if authorization is None else [(b"authorization", authorization)]
    answer = await get(app, path, headers)
    assert answer.status == 401, (answer.status, answer.body[:200])
    assert answer.header_values(b"www-authenticate")
    assert b"accept_all" not in answer.body


@pytest.mark.parametrize("path", AUDIT_ROUTES)
@pytest.mark.parametrize(
    "authorization", [basic(USER, PASSWORD), b"Bearer " + TOKEN.encode()], ids=["basic", "bearer"]
)
async def test_audit_routes_open_with_the_right_credentials(
    app: Any, path: str, authorization: bytes
) -> None:
    """R25: the configured Basic pair or bearer token opens every audit route."""
    await decide(app)
    answer = await get(app, path, [(b"authorization", authorization)])
    assert answer.status == 200, (answer.status, answer.body[:200])


async def test_audit_view_does_not_exist_without_configured_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """R25: no credentials configured, no audit view (404), whatever the request carries."""
    for name in ("CONSENT_AUDIT_USER", "CONSENT_AUDIT_PASSWORD", "CONSENT_AUDIT_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    application = make_app(ConsentConfig.from_toml(write_config(tmp_path)))
    try:
        for authorization in (None, basic("", ""), b"Bearer "):
            headers = [] if authorization is None else [(b"authorization", authorization)]
            answer = await get(application, "/_consent/audit/records", headers)
            assert answer.status == 404
    finally:
        await application.close()


async def test_credential_check_uses_constant_time_compare(app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """R25: every credential comparison goes through hmac.compare_digest (spied on), for the secret
    that is right and for one that differs in its first or its last character: how far a guess
    matches never changes which comparison runs. No timing is measured."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        as_bytes = (x.encode() if isinstance(x, str) else bytes(x) for x in (a, b))
        calls.append((next(as_bytes), next(as_bytes)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    guesses = {
        "right": b"Bearer " + TOKEN.encode(),
        "first char wrong": b"Bearer X" + TOKEN[1:].encode(),
        "last char wrong": b"Bearer " + TOKEN[:-1].encode() + b"X",
        "basic right": basic(USER, PASSWORD),
        "basic first wrong": basic(USER, "X" + PASSWORD[1:]),
        "basic last wrong": basic(USER, PASSWORD[:-1] + "X"),
    }
    seen: dict[str, list[tuple[bytes, bytes]]] = {}
    secrets_ = {TOKEN.encode(), PASSWORD.encode(), USER.encode()}
    for name, authorization in guesses.items():
        calls.clear()
        await get(app, "/_consent/audit", [(b"authorization", authorization)])
        # the credential checks only: a page behind them compares the log head's MAC the same way
        seen[name] = [(a, b) for a, b in calls if a in secrets_ or b in secrets_]
    for name, made in seen.items():
        assert made, f"{name}: the credentials were not compared with hmac.compare_digest"
        assert any(b in secrets_ or a in secrets_ for a, b in made), (
            f"{name}: the secret was compared elsewhere"
        )
    # The same comparisons, in number, whether the guess is right, or wrong early or late.
    assert len(seen["right"]) == len(seen["first char wrong"]) == len(seen["last char wrong"])
    assert len(seen["basic right"]) == len(seen["basic first wrong"]) == len(seen["basic last wrong"])


def test_no_secret_is_compared_with_equality_operators() -> None:
    """R25 (structural): in audit.py's credential code, no `==`, `!=`, `in` or `startswith` touches
    the configured user, password or token; only hmac/secrets.compare_digest does."""
    tree = ast.parse(inspect.getsource(audit.Credentials))
    secret_names = {"user", "password", "token"}

    def mentions_secret(node: ast.AST) -> bool:
        return any(
            isinstance(n, ast.Attribute)
            and n.attr in secret_names
            and isinstance(n.value, ast.Name)
            and n.value.id == "self"
            for n in ast.walk(node)
        )

    offenders = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(
            isinstance(op, ast.Eq | ast.NotEq | ast.In | ast.NotIn | ast.Lt | ast.Gt) for op in node.ops
        ):
            if mentions_secret(node):
                offenders.append(ast.unparse(node))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in ("startswith", "endswith", "find", "index") and mentions_secret(node):
                offenders.append(ast.unparse(node))
    assert not offenders, f"secret compared in variable time: {offenders}"


# --- receipts (R24) -----------------------------------------------------------------------------------


async def receipt(app: Any, cookie: str | None, query: str = "format=json") -> dict[str, Any]:
    headers = [(b"cookie", f"consent={cookie}".encode())] if cookie else []
    answer = await get(app, f"/_consent/receipt?{query}", headers)
    assert answer.status == 200, answer.body[:200]
    return json.loads(answer.body)


async def test_receipt_shows_only_the_callers_own_records(app: Any) -> None:
    """R24: a visitor's receipt lists their records; asking with someone else's consent id (in the
    query, in a forged or re-signed cookie, or with no cookie) returns nothing of theirs."""
    alice_id, alice_cookie = await decide(app)
    await decide(app, alice_cookie)
    bob_id, bob_cookie = await decide(app)

    mine = await receipt(app, alice_cookie)
    assert mine["consent_id"] == alice_id and len(mine["records"]) == 2
    assert {r["consent_id"] for r in mine["records"]} == {alice_id}

    assert (await receipt(app, None, f"format=json&consent_id={alice_id}"))["records"] == []
    bobs = await receipt(app, bob_cookie, f"format=json&consent_id={alice_id}&id={alice_id}")
    assert {r["consent_id"] for r in bobs["records"]} == {bob_id}

    config = app.config
    forged_codec = ConsentCodec(
        ["an-attackers-key-0123456789-0123456789"],
        revision=config.policy_revision,
        lifetime=86400,
        categories=config.categories,
    )
    forged = forged_codec.encode(Consent(id=alice_id, granted=frozenset(), revision=config.policy_revision))
    payload, _, sig = alice_cookie.rpartition(".")
    tampered = f"{payload}.{('A' if sig[0] != 'A' else 'B')}{sig[1:]}"
    bob_payload = bob_cookie.split(".")[0]
    spliced = ".".join(
        [alice_cookie.split(".")[0], *bob_cookie.split(".")[1:]]
    )  # Alice's id, Bob's signature
    for cookie in (forged, tampered, spliced, bob_payload, secrets.token_urlsafe(40)):
        got = await receipt(app, cookie)
        assert got["records"] == [] and got["consent_id"] is None, cookie
    html = await get(app, "/_consent/receipt", [(b"cookie", f"consent={forged}".encode())])
    assert alice_id.encode() not in html.body
