"""The signed consent cookie: only the exact issued value verifies (R33)."""

from __future__ import annotations

import base64
import hashlib
import json
import time

import pytest
from itsdangerous import URLSafeTimedSerializer

from consent_banner.consent import (
    SALT,
    UNDECIDED,
    Consent,
    ConsentCodec,
    new_consent_id,
    secret_keys_from_env,
)
from consent_banner.errors import MissingSecretKey

KEY = "k" * 40
OTHER = "o" * 40
CATS = ("necessary", "analytics", "marketing")


def codec(keys=(KEY,), revision="r1", lifetime=3600) -> ConsentCodec:
    return ConsentCodec(
        list(keys), revision=revision, lifetime=lifetime, categories=CATS, services=("stats",)
    )


def granted(**kw) -> Consent:
    return Consent(
        id=new_consent_id(),
        granted=frozenset({"analytics", "marketing"}),
        revision="r1",
        source="banner",
        **kw,
    )


def test_round_trip_and_size_under_300_bytes() -> None:
    c = codec()
    value = c.encode(granted(services={"stats": True}))
    assert len(value) < 300
    back = c.decode(value)
    assert back.decided and back.allows("analytics") and back.allows("marketing")
    assert back.services == {"stats": True} and back.source == "banner"
    assert abs(back.decided_at - time.time()) < 5


def test_consent_id_has_128_random_bits_behind_its_creation_time() -> None:
    before = time.time_ns() // 1_000_000
    ids = [new_consent_id() for _ in range(1000)]
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == 1000
    raws = [base64.urlsafe_b64decode(i + "==") for i in ids]
    assert all(len(i) == 30 and len(raw) == 22 for i, raw in zip(ids, raws, strict=True))
    assert all(before <= int.from_bytes(raw[:6], "big") <= after for raw in raws)
    # The 128 bits after the time are random: no two ids made in the same millisecond share them,
    # and every bit position takes both values across a thousand ids.
    randoms = [int.from_bytes(raw[6:], "big") for raw in raws]
    assert len(set(randoms)) == 1000
    assert all(0 < sum(r >> bit & 1 for r in randoms) < 1000 for bit in range(128))


def test_payload_is_readable_but_not_trusted() -> None:
    value = codec().encode(granted())
    payload = json.loads(base64.urlsafe_b64decode(value.split(".")[0] + "=="))
    assert payload["c"] == ["analytics", "marketing"]


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda v: v + "=", id="padded"),
        pytest.param(lambda v: v + "%", id="percent"),
        pytest.param(lambda v: v[:-1], id="truncated"),
        pytest.param(lambda v: v[:-1] + ("A" if v[-1] != "A" else "B"), id="signature-flipped"),
        pytest.param(lambda v: "x" + v, id="prefixed"),
        pytest.param(lambda v: v.replace(".", "..", 1), id="double-dot"),
        pytest.param(lambda v: "", id="empty"),
        pytest.param(lambda v: "garbage", id="garbage"),
        pytest.param(lambda v: v + " ", id="trailing-space"),
        pytest.param(lambda v: v.split(".")[0], id="payload-only"),
    ],
)
def test_non_canonical_or_tampered_values_are_undecided(mangle) -> None:
    """R33"""
    c = codec()
    value = c.encode(granted())
    assert c.decode(mangle(value)) == UNDECIDED


def test_tampered_payload_is_undecided() -> None:
    """R33: granting more by editing the readable payload breaks the signature."""
    c = codec()
    value = codec().encode(Consent(id="x" * 22, granted=frozenset(), revision="r1", source="banner"))
    payload, ts, sig = value.split(".")
    forged = (
        base64.urlsafe_b64encode(
            json.dumps({"i": "x" * 22, "c": ["analytics", "marketing"], "r": "r1", "o": "banner"}).encode()
        )
        .rstrip(b"=")
        .decode()
    )
    assert c.decode(f"{forged}.{ts}.{sig}") == UNDECIDED


def test_unknown_key_is_undecided() -> None:
    """R33: forged with a key the server does not hold."""
    assert codec().decode(codec(keys=(OTHER,)).encode(granted())) == UNDECIDED


def test_key_rotation_newest_signs_any_listed_verifies() -> None:
    """R33: rotated keys keep old cookies valid until removed from the list."""
    old_value = codec(keys=(OTHER,)).encode(granted())
    rotated = codec(keys=(OTHER, KEY))
    assert rotated.decode(old_value).decided
    new_value = rotated.encode(granted())
    assert codec(keys=(KEY,)).decode(new_value).decided  # signed with the newest
    assert codec(keys=(KEY,)).decode(old_value) == UNDECIDED  # old key removed


def test_expired_cookie_is_undecided(monkeypatch: pytest.MonkeyPatch) -> None:
    """R18/R33: a cookie older than the lifetime counts as undecided, also from the cache."""
    c = codec(lifetime=100)
    value = c.encode(granted())
    assert c.decode(value).decided  # now cached
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 200)
    assert c.decode(value) == UNDECIDED
    assert codec(lifetime=100).decode(value) == UNDECIDED  # and without the cache


def test_other_revision_is_undecided() -> None:
    """R18/R33"""
    assert codec(revision="r2").decode(codec(revision="r1").encode(granted())) == UNDECIDED


def test_signed_non_object_payload_is_undecided() -> None:
    s = URLSafeTimedSerializer([KEY], salt=SALT, signer_kwargs={"digest_method": hashlib.sha256})
    for payload in (
        ["analytics"],
        "x",
        {"i": 1, "c": [], "r": "r1"},
        {"i": "a", "c": "analytics", "r": "r1"},
    ):
        assert codec().decode(s.dumps(payload)) == UNDECIDED


def test_removed_category_grants_nothing() -> None:
    c = ConsentCodec([KEY], revision="r1", lifetime=3600, categories=("necessary", "analytics"))
    assert c.decode(codec().encode(granted())).granted == frozenset({"analytics"})


def test_gpc_denies_marketing_whatever_the_cookie_says() -> None:
    """R26"""
    c = codec().decode(codec().encode(granted())).with_gpc(frozenset({"marketing"}))
    assert c.allows("analytics") and not c.allows("marketing")
    assert c.categories == ("necessary", "analytics")


def test_undecided_allows_only_necessary() -> None:
    assert UNDECIDED.allows("necessary") and not UNDECIDED.allows("analytics") and not UNDECIDED.decided
    assert UNDECIDED.categories == ("necessary",)


def test_keys_from_env() -> None:
    assert secret_keys_from_env({"CONSENT_SECRET_KEYS": f"{OTHER}, {KEY}"}) == [OTHER, KEY]
    with pytest.raises(MissingSecretKey, match="CONSENT_SECRET_KEYS is not set"):
        secret_keys_from_env({})
    with pytest.raises(MissingSecretKey, match="shorter than 32"):
        secret_keys_from_env({"CONSENT_SECRET_KEYS": "short"})
