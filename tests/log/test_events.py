"""The pure core of the log: privacy-minimal context, record shape, canonical form, hash chain."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consent_banner.log import Decision, InvalidDecision, LoggedRecord, browser_family, truncate_ip
from consent_banner.log.canonical import COLUMNS, canonical
from consent_banner.log.chain import GENESIS, link_rows, record_hash
from consent_banner.log.checkpoints import Checkpoint, checkpoint_mac
from consent_banner.log.records import format_at, parse_at, prepare, prepare_system
from consent_banner.log.signing import derive_hmac_key, key_id


def chain(prev: str, rows: list[tuple[str | None, ...]]) -> tuple[list[tuple[str, str]], str]:
    """The reference the writer's linking is held to: each row's record_hash() after the previous."""
    links = []
    for cols in rows:
        h = record_hash(prev, cols)
        links.append((prev, h))
        prev = h
    return links, prev


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("203.0.113.77", "203.0.113.0"),
        ("203.0.113.77:51234", "203.0.113.0"),
        ("2001:db8:abcd:1234:5678::1", "2001:db8:abcd::"),
        ("[2001:db8:abcd:1234::1]:443", "2001:db8:abcd::"),
        ("::ffff:198.51.100.9", "198.51.100.0"),
        ("fe80::1%eth0", "fe80::"),
        ("", None),
        (None, None),
        ("not an address", None),
        ("999.1.1.1", None),
        ("203.0.113.7, 10.0.0.1", None),
    ],
)
def test_truncate_ip_keeps_only_the_network(ip: str | None, expected: str | None) -> None:
    """R21: IPv4 is cut to /24, IPv6 to /48; anything else is not stored at all."""
    assert truncate_ip(ip) == expected


@pytest.mark.parametrize(
    ("ua", "family"),
    [
        (
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 "
            "Safari/537.36",
            "Chrome",
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/131.0.0.0 "
            "Safari/537.36 Edg/131.0.2903.70",
            "Edge",
        ),
        ("Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0", "Firefox"),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_7_1) AppleWebKit/605.1.15 (KHTML, like Gecko) "
            "Version/18.1 Safari/605.1.15",
            "Safari",
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
            "CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1",
            "Chrome",
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0 Safari/537.36 "
            "OPR/115.0",
            "Other",
        ),
        ("curl/8.5.0", "Other"),
        ("", None),
        (None, None),
    ],
)
def test_browser_family_never_the_full_user_agent(ua: str | None, family: str | None) -> None:
    """R21: only the browser family is kept."""
    assert browser_family(ua) == family


def _decision(**kw: object) -> Decision:
    base: dict[str, object] = dict(
        consent_id="a" * 22,
        action="custom",
        granted=("analytics", "necessary"),
        denied=("marketing",),
        services={"stats": True, "b": False},
        revision="r1",
        language="sv",
        source="dialog",
        ip="203.0.113.0",
        browser="Safari",
        version=None,
    )
    base.update(kw)
    return Decision(**base)  # type: ignore[arg-type]


def test_prepare_spells_one_set_one_way() -> None:
    """R22: the canonical form does not depend on the order the caller listed categories or services in."""
    a = prepare(_decision(granted=("analytics", "necessary"), services={"stats": True, "b": False}), None)
    b = prepare(
        _decision(granted=("necessary", "analytics", "analytics"), services={"b": False, "stats": True}), None
    )
    assert a.columns("x") == b.columns("x")
    assert a.granted == "necessary,analytics"


@pytest.mark.parametrize(
    "bad",
    [dict(action="accept_some"), dict(source="popup"), dict(consent_id=""), dict(granted=("a,b",))],
)
def test_invalid_decisions_are_refused(bad: dict[str, object]) -> None:
    """R19: only the known actions and sources are recorded."""
    with pytest.raises(InvalidDecision):
        prepare(_decision(**bad), None)


def test_chain_links_each_record_to_the_previous() -> None:
    """R22: each hash covers the record and the previous hash."""
    cols = [
        prepare(_decision(consent_id=f"{i:022d}"), None).columns(format_at(datetime.now(UTC)))
        for i in range(3)
    ]
    links, head = chain(GENESIS, cols)
    assert links[0][0] == GENESIS
    assert links[1][0] == links[0][1] and links[2][0] == links[1][1]
    assert head == links[2][1]
    assert all(record_hash(prev, c) == h for (prev, h), c in zip(links, cols, strict=True))
    # The same record after another predecessor hashes differently.
    assert record_hash("1" * 64, cols[0]) != links[0][1]


_texts = st.text(max_size=12)  # any characters: quotes, backslashes, controls, non-ASCII


@given(
    st.lists(
        st.tuples(
            _texts.filter(bool),  # consent id
            _texts,  # revision
            _texts,  # language
            st.none() | _texts,  # ip
            st.none() | _texts,  # browser
            st.dictionaries(_texts, st.booleans(), max_size=3),  # services
            st.none() | _texts,  # version id
        ),
        min_size=1,
        max_size=5,
    ),
    st.integers(min_value=0, max_value=10**9),
    st.dictionaries(_texts, _texts, max_size=2),
)
def test_the_writers_linking_hashes_exactly_the_stored_columns(
    decisions: list[tuple], seq0: int, purge_detail: dict[str, str]
) -> None:
    """R22: link_rows() (each decision's encoding built ahead, in prepare()) gives the very hashes
    the verifier recomputes from the stored columns, whatever the text in them."""
    at = format_at(datetime.now(UTC))
    prepared = [
        prepare(
            _decision(consent_id=cid, revision=rev, language=lang, ip=ip, browser=br, services=services),
            vid,
        )
        for cid, rev, lang, ip, br, services, vid in decisions
    ]
    prepared.append(prepare_system("purge", purge_detail))
    rows, head = link_rows(prepared, at, seq0, GENESIS)
    links, expected_head = chain(GENESIS, [p.columns(at) for p in prepared])
    assert head == expected_head
    assert [(r[-2], r[-1]) for r in rows] == links
    assert [r[0] for r in rows] == list(range(seq0 + 1, seq0 + len(prepared) + 1))
    assert all(r[1:-2] == p.columns(at) for r, p in zip(rows, prepared, strict=True))
    assert all(record_hash(r[-2], r[1:-2]) == r[-1] for r in rows)


@given(st.integers(min_value=0, max_value=len(COLUMNS) - 1), st.text(max_size=20))
def test_any_change_to_any_column_changes_the_hash(index: int, value: str) -> None:
    """R22: an edit of any stored field is visible in the hash."""
    cols = list(prepare(_decision(), "v" * 64).columns("2026-01-01T00:00:00.000000Z"))
    original = record_hash(GENESIS, cols)
    if cols[index] == value:
        return
    cols[index] = value
    assert record_hash(GENESIS, cols) != original


def test_canonical_encoding_is_ascii_json_of_the_columns() -> None:
    """R22: the encoding is plain enough for an auditor to recompute without our code."""
    cols = prepare(_decision(language="sv", revision="läge"), None).columns("2026-01-01T00:00:00.000000Z")
    body = canonical(cols)
    assert body.isascii()
    assert body.startswith(b'["2026-01-01T00:00:00.000000Z","aaaaaaaaaaaaaaaaaaaaaa","custom",')


def test_time_format_round_trips_and_sorts_as_text() -> None:
    """Stored times are UTC with microseconds, fixed width."""
    t = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    assert format_at(t) == "2026-01-02T03:04:05.000006Z"
    assert parse_at(format_at(t)) == t
    assert format_at(datetime(2026, 1, 2, tzinfo=UTC)) < format_at(datetime(2026, 1, 10, tzinfo=UTC))


def test_logged_record_json_round_trip() -> None:
    """The JSON form carries every field and reads back to the same record."""
    p = prepare(_decision(), "v" * 64)
    at = "2026-01-01T00:00:00.000000Z"
    (link,), _ = chain(GENESIS, [p.columns(at)])
    rec = p.record(7, parse_at(at), *link)
    again = LoggedRecord.from_json(rec.to_json())
    assert again == rec
    assert again.columns() == p.columns(at)


def test_checkpoint_signature_needs_the_key() -> None:
    """R22: a checkpoint verifies with the server key only, and names the key that made it."""
    key = derive_hmac_key("k" * 32)
    other = derive_hmac_key("o" * 32)
    at = "2026-01-01T00:00:00.000000Z"
    cp = Checkpoint(
        "log", 10, "h" * 64, at, "manual", key_id(key), checkpoint_mac(key, "log", 10, "h" * 64, at, "manual")
    )
    assert cp.valid({key_id(key): key}) is True
    assert cp.valid({key_id(other): other}) is None
    forged = Checkpoint.from_json({**cp.to_json(), "seq": 11})
    assert forged.valid({key_id(key): key}) is False
    assert derive_hmac_key("k" * 32) != ("k" * 32).encode()
