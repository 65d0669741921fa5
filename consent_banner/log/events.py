"""What a consent-log record is, its canonical encoding, and the hash chain over it.

A record is one visitor decision (or one event of the log itself, such as a purge) as it was
made durable. Its hash covers a canonical encoding of exactly the values stored in its columns
and the previous record's hash:

    hash = SHA-256( "consent-banner/1" 0x00 prev_hash 0x00 canonical(columns) )

where canonical() is the compact, ASCII-only JSON array of the column values in a fixed order.
Hashing the stored text (not a re-serialisation of parsed values) means the verifier needs no
parser of its own and any change to a stored byte is seen. The sequence number is *not* hashed:
order is carried by the chain links, so verify can tell a reordering from an edit.

Pure functions only: no I/O, no HTTP.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii
from typing import Any, NamedTuple

GENESIS = "0" * 64  # prev_hash of the first record ever written
HASH_PREFIX = b"consent-banner/1\x00"

ACTIONS = ("accept_all", "reject_all", "custom", "withdraw", "gpc", "renew")
SOURCES = ("banner", "dialog", "form", "settings", "api", "gpc")
# Records the log writes about itself. They are in the chain, but are not visitor decisions.
SYSTEM_ACTIONS = ("purge",)
SYSTEM_CONSENT_ID = ""  # a visitor's consent id is never empty, so this one can never be a visitor's

# The column order of the canonical encoding, and of every raw row the backends hand around.
COLUMNS = (
    "at",
    "consent_id",
    "action",
    "granted",
    "denied",
    "services",
    "revision",
    "language",
    "source",
    "version_id",
    "ip",
    "browser",
    "detail",
)
ROW_COLUMNS = ("seq", *COLUMNS, "prev_hash", "hash")

_AT_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # fixed width, so text order is time order


def format_at(at: datetime) -> str:
    """The stored form of a record time: UTC, microseconds, fixed width."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).strftime(_AT_FORMAT)


def parse_at(text: str) -> datetime:
    # fromisoformat reads "...Z" since 3.11 and is far faster than strptime.
    t = datetime.fromisoformat(text)
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def now_at() -> str:
    return format_at(datetime.now(UTC))


# --- privacy-minimal context ---------------------------------------------------------------


def truncate_ip(ip: str | None) -> str | None:
    """The network part of an address: IPv4 to /24 ("203.0.113.0"), IPv6 to /48. R21.

    IPv4-mapped IPv6 addresses are treated as IPv4. Anything that is not an address gives None,
    so a malformed X-Forwarded-For never lands in the log.
    """
    if not ip or not isinstance(ip, str) or len(ip) > 64:
        return None
    text = ip.strip()
    if text.startswith("[") and "]" in text:  # "[2001:db8::1]:443"
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "203.0.113.7:51234"
        text = text.split(":", 1)[0]
    text = text.split("%", 1)[0]  # zone id, "fe80::1%eth0"
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    prefix = 24 if addr.version == 4 else 48
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False).network_address)


# Order matters: Edge and Opera say "Chrome" too, Chrome says "Safari" too.
_BROWSERS = (
    ("Edge", re.compile(r"\b(?:Edg|Edge|EdgA|EdgiOS)/")),
    ("Other", re.compile(r"\b(?:OPR|Opera|SamsungBrowser|YaBrowser|UCBrowser)/|bot\b|crawl|spider", re.I)),
    ("Firefox", re.compile(r"\b(?:Firefox|FxiOS)/")),
    ("Chrome", re.compile(r"\b(?:Chrome|CriOS|Chromium)/")),
    ("Safari", re.compile(r"\bVersion/[\d.]+.*\bSafari/|\bAppleWebKit/.*\bMobile/")),
)


def browser_family(user_agent: str | None) -> str | None:
    """ "Chrome", "Firefox", "Safari", "Edge" or "Other": never the full user agent. R21."""
    if not user_agent or not user_agent.strip():
        return None
    ua = user_agent[:512]
    for family, pattern in _BROWSERS:
        if pattern.search(ua):
            return family
    return "Other"


# --- what goes in ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """One visitor decision, as the decision endpoints hand it to the log."""

    consent_id: str
    action: str  # accept_all | reject_all | custom | withdraw | gpc | renew
    granted: tuple[str, ...]  # categories granted, "necessary" included
    denied: tuple[str, ...]
    services: dict[str, bool]
    revision: str
    language: str
    source: str  # banner | dialog | form | settings | api | gpc
    ip: str | None  # already truncated by truncate_ip()
    browser: str | None  # browser family from browser_family()
    version: dict[str, Any] | None  # banner version payload, stored once under its content hash


@dataclass(frozen=True)
class BlockedAttempt:
    """A CSP violation report, privacy-minimal: path only, the blocked origin, the directive."""

    page: str  # path only, no query
    origin: str  # blocked origin (scheme://host[:port]) or "inline"/"eval"
    directive: str
    consent_id: str | None
    at: datetime | None = None  # set by the log when None

    def sanitized(self) -> BlockedAttempt:
        """Cut to what the log keeps: no query or fragment, bounded lengths."""
        page = (self.page or "/").split("?", 1)[0].split("#", 1)[0][:512] or "/"
        origin = (self.origin or "")[:256]
        directive = (self.directive or "")[:64]
        cid = self.consent_id[:64] if self.consent_id else None
        return BlockedAttempt(page, origin, directive, cid, self.at)


class InvalidDecision(ValueError):
    """A Decision that cannot be logged (unknown action or source, malformed field)."""


_CATEGORY_TEXT: dict[Any, str] = {}  # the few distinct category tuples a site sees, encoded once


def _categories_text(cats: Iterable[str]) -> str:
    key = cats if isinstance(cats, tuple) else None
    if key is not None:
        hit = _CATEGORY_TEXT.get(key)
        if hit is not None:
            return hit
    unique = set(cats)
    for c in unique:
        if not isinstance(c, str) or not c or "," in c:
            raise InvalidDecision(f"category {c!r} cannot be logged")
    # "necessary" first, the rest sorted: one spelling for one set.
    ordered = sorted(unique - {"necessary"})
    if "necessary" in unique:
        ordered.insert(0, "necessary")
    text = ",".join(ordered)
    if key is not None:
        if len(_CATEGORY_TEXT) > 4096:
            _CATEGORY_TEXT.clear()
        _CATEGORY_TEXT[key] = text
    return text


# One encoder instance: json.dumps() with options builds a new encoder on every call.
_sorted_dumps = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode


_SERVICES: dict[tuple[Any, ...], tuple[dict[str, bool], str]] = {}


def _services(services: Mapping[str, Any] | None) -> tuple[dict[str, bool], str]:
    """(normalised map, canonical JSON) of per-service choices; the few distinct maps are cached."""
    if not services:
        return {}, "{}"
    key = tuple(services.items())
    try:
        hit = _SERVICES.get(key)
    except TypeError:  # an unhashable value: normalise without caching
        norm = {str(k): bool(v) for k, v in services.items()}
        return norm, _sorted_dumps(norm)
    if hit is None:
        norm = {str(k): bool(v) for k, v in services.items()}
        if len(_SERVICES) > 4096:
            _SERVICES.clear()
        hit = _SERVICES[key] = (norm, _sorted_dumps(norm))
    return hit


def services_text(services: Mapping[str, bool]) -> str:
    if not services:
        return "{}"
    return _sorted_dumps({str(k): bool(v) for k, v in services.items()})


def version_id_for(payload: Mapping[str, Any]) -> tuple[str, str]:
    """(content hash, canonical JSON) of a banner version payload. R20."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest(), text


class Prepared(NamedTuple):
    """A decision turned into its column values (all but `at`, which is set at commit).

    A NamedTuple rather than a frozen dataclass: one is built per decision on the hot path.
    """

    consent_id: str
    action: str
    granted: str
    denied: str
    services: str
    revision: str
    language: str
    source: str
    version_id: str | None
    ip: str | None
    browser: str | None
    detail: str | None = None
    services_map: Mapping[str, bool] | None = None  # the parsed form of `services`, not stored
    # canonical(columns(at)) without its leading '["<at>",': the part of the hashed encoding that does
    # not depend on the commit, built once per decision outside the writer's critical path.
    tail: str = ""

    def record(self, seq: int, at: datetime, prev_hash: str, hash_: str) -> LoggedRecord:
        """The LoggedRecord this becomes once written (without re-parsing its own columns)."""
        # LoggedRecord is a frozen dataclass; its generated __init__ sets each of 16 fields through
        # object.__setattr__, four times slower than filling __dict__ once. One is built per decision.
        r = object.__new__(LoggedRecord)
        r.__dict__.update(
            seq=seq,
            at=at,
            consent_id=self.consent_id,
            action=self.action,
            granted=_split(self.granted),
            denied=_split(self.denied),
            services=dict(self.services_map) if self.services_map is not None else json.loads(self.services),
            revision=self.revision,
            language=self.language,
            source=self.source,
            version_id=self.version_id,
            ip=self.ip,
            browser=self.browser,
            prev_hash=prev_hash,
            hash=hash_,
            detail=json.loads(self.detail) if self.detail else None,
        )
        return r

    def columns(self, at: str) -> tuple[Any, ...]:
        return (
            at,
            self.consent_id,
            self.action,
            self.granted,
            self.denied,
            self.services,
            self.revision,
            self.language,
            self.source,
            self.version_id,
            self.ip,
            self.browser,
            self.detail,
        )


_ACTION_SET = frozenset(ACTIONS)
_SOURCE_SET = frozenset(SOURCES)


def prepare(d: Decision, version_id: str | None) -> Prepared:
    """Validate a Decision and compute its stored column values. Called once per decision."""
    cid, action, source = d.consent_id, d.action, d.source
    if action not in _ACTION_SET:
        raise InvalidDecision(f"action {action!r} is not one of {', '.join(ACTIONS)}")
    if source not in _SOURCE_SET:
        raise InvalidDecision(f"source {source!r} is not one of {', '.join(SOURCES)}")
    if type(cid) is not str or not 0 < len(cid) <= 64:
        raise InvalidDecision("consent_id must be a non-empty string of at most 64 characters")
    services, services_json = _services(d.services)
    revision, language, ip, browser = d.revision, d.language, d.ip, d.browser
    values = (
        cid,
        action,
        _categories_text(d.granted),
        _categories_text(d.denied),
        services_json,
        revision[:64] if type(revision) is str else str(revision)[:64],
        language[:35] if type(language) is str else str(language)[:35],
        source,
        version_id,
        ip[:64] if ip else None,
        browser[:32] if browser else None,
        None,
    )
    # Positional: a NamedTuple built by keyword costs twice as much.
    return Prepared(*values, services, _tail(values))


def prepare_system(action: str, detail: Mapping[str, Any], revision: str = "") -> Prepared:
    """A record the log writes about itself (a purge)."""
    if action not in SYSTEM_ACTIONS:
        raise InvalidDecision(f"{action!r} is not a log event")
    values = (
        SYSTEM_CONSENT_ID,
        action,
        "",
        "",
        "{}",
        revision,
        "",
        "api",
        None,
        None,
        None,
        json.dumps(dict(detail), sort_keys=True, separators=(",", ":")),
    )
    return Prepared(*values, None, _tail(values))


# --- the chain ------------------------------------------------------------------------------

_dumps = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode


def canonical(columns: tuple[Any, ...] | list[Any]) -> bytes:
    """The canonical encoding of a record's stored values (in COLUMNS order)."""
    return _dumps(columns).encode("ascii")  # a tuple encodes as the same JSON array


def _encode(value: str | None) -> str:
    """One stored value as canonical() spells it (every stored value is text or NULL)."""
    return "null" if value is None else encode_basestring_ascii(value)


_MIDDLES: dict[tuple[Any, ...], str] = {}


def _tail(values: Sequence[str | None]) -> str:
    """canonical() of the columns after `at`, without the opening: ',"<consent id>",...]'.

    The same bytes json.JSONEncoder(ensure_ascii=True, separators=(",", ":")) writes for text
    and None (it uses this very function for strings), without building an encoder per call.
    The columns from action to version id take few distinct values on a site: encoded once.
    """
    middle_values = tuple(values[1:9])  # hashable, whatever sequence `values` is
    middle = _MIDDLES.get(middle_values)
    if middle is None:
        if len(_MIDDLES) > 4096:
            _MIDDLES.clear()
        middle = _MIDDLES[middle_values] = ",".join([_encode(v) for v in middle_values])
    cid, ip, browser, detail = values[0], values[9], values[10], values[11]
    return f",{_encode(cid)},{middle},{_encode(ip)},{_encode(browser)},{_encode(detail)}]"


def link_rows(
    prepared: Sequence[Prepared], at: str, seq0: int, prev_hash: str
) -> tuple[list[tuple[Any, ...]], str]:
    """The raw rows (ROW_COLUMNS order) of `prepared` appended after record `seq0` whose hash is
    `prev_hash`, all at time `at`; and the new head hash.

    Same hashes as chain() over the columns, from each decision's tail built in prepare().
    """
    head = ("[" + _encode(at)).encode("ascii")
    prefix = HASH_PREFIX
    sha256 = hashlib.sha256
    rows: list[tuple[Any, ...]] = []
    prev = prev_hash
    seq = seq0
    for p in prepared:
        seq += 1
        tail = p.tail or _tail(p[:12])  # a Prepared made by hand has none
        h = sha256(prefix + prev.encode("ascii") + b"\x00" + head + tail.encode("ascii")).hexdigest()
        rows.append((seq, at, *p[:12], prev, h))
        prev = h
    return rows, prev


def record_hash(prev_hash: str, columns: tuple[Any, ...] | list[Any]) -> str:
    prev = prev_hash if isinstance(prev_hash, str) else str(prev_hash)
    return hashlib.sha256(
        HASH_PREFIX + prev.encode("utf-8", "backslashreplace") + b"\x00" + canonical(columns)
    ).hexdigest()


def chain(prev_hash: str, rows: Iterable[tuple[Any, ...]]) -> tuple[list[tuple[str, str]], str]:
    """Link column tuples after `prev_hash`: [(prev_hash, hash), ...] and the new head hash."""
    links = []
    sha256 = hashlib.sha256
    prev = prev_hash
    for cols in rows:
        h = sha256(HASH_PREFIX + prev.encode("ascii") + b"\x00" + _dumps(cols).encode("ascii")).hexdigest()
        links.append((prev, h))
        prev = h
    return links, prev


# --- signatures (head, checkpoints) -----------------------------------------------------------

CHECKPOINT_KEY_INFO = b"consent-banner.log.checkpoint.v1"


def derive_hmac_key(secret_key: str | bytes) -> bytes:
    """The log's HMAC key from a server signing key (CONSENT_SECRET_KEYS, newest last).

    A derived key, not the cookie key itself, so a log signature can never be replayed as a
    cookie signature or the other way round.
    """
    raw = secret_key.encode() if isinstance(secret_key, str) else secret_key
    return hmac.new(raw, CHECKPOINT_KEY_INFO, hashlib.sha256).digest()


def key_id(key: bytes) -> str:
    """A short public name of an HMAC key, so verify can say which key signed."""
    return hashlib.sha256(b"consent-banner.key-id\x00" + key).hexdigest()[:16]


def checkpoint_mac(
    key: bytes,
    log_id: str,
    seq: int,
    head_hash: str,
    at: str,
    reason: str,
    n: int | None = None,
    prev: str | None = None,
) -> str:
    """A checkpoint's signature. It covers the reason: only a *purge* checkpoint may stand in for
    deleted records, so an ordinary periodic one must not be relabelled into one. From schema 2 on
    (`prev` given) it also covers its place `n` and the chain of the checkpoints before it, so that
    none of them can be deleted unseen; without `prev` it is the previous release's signature."""
    return sign(key, f"checkpoint/{reason}", log_id, seq, head_hash, at, n=n, prev=prev)


def checkpoint_link(tip: str, mac: str) -> str:
    """The checkpoint chain after one more checkpoint: what the head and the next checkpoint sign."""
    return hashlib.sha256(f"consent-banner/checkpoints\x00{tip}\x00{mac}".encode()).hexdigest()


def head_mac(key: bytes, log_id: str, seq: int, head_hash: str, at: str, checkpoints: str | None) -> str:
    """The head's signature: from schema 2 on it covers the checkpoint chain's tip too (None: the
    previous release's head, which did not)."""
    return sign(key, "head", log_id, seq, head_hash, at, prev=checkpoints)


def sign(
    key: bytes,
    kind: str,
    log_id: str,
    seq: int,
    head_hash: str,
    at: str,
    *,
    n: int | None = None,
    prev: str | None = None,
) -> str:
    if prev is None:  # the previous release's message, kept so its signatures still verify
        msg = f"consent-banner/1|{kind}|{log_id}|{seq}|{head_hash}|{at}"
    else:
        msg = f"consent-banner/2|{kind}|{log_id}|{seq}|{head_hash}|{at}|{n if n is not None else ''}|{prev}"
    return hmac.new(key, msg.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement "after `seq` records, the head hash was `hash`" (R22).

    `seq` is also the count of records ever appended up to it (sequence numbers start at 1 and
    have no gaps). Checkpoints form a chain of their own: the `n`-th signs `prev`, the chain of the
    n-1 before it (checkpoint_link), and the head signs the chain's tip, so deleting any one of
    them is seen. Checkpoints of the previous release have `prev` None (their `n` was given at the
    upgrade). Export these and keep them elsewhere: a log rewritten from scratch, or rolled back
    to an older copy, cannot reproduce a pinned checkpoint.
    """

    log_id: str
    seq: int
    hash: str
    at: str
    reason: str  # periodic | purge | manual
    key_id: str
    mac: str
    n: int | None = None
    prev: str | None = None

    @property
    def count(self) -> int:
        return self.seq

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "log_id": self.log_id,
            "seq": self.seq,
            "count": self.seq,
            "hash": self.hash,
            "at": self.at,
            "reason": self.reason,
            "key_id": self.key_id,
            "mac": self.mac,
        }
        if self.n is not None:
            data["n"] = self.n
        if self.prev is not None:
            data["prev"] = self.prev
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Checkpoint:
        n, prev = data.get("n"), data.get("prev")
        return cls(
            log_id=str(data["log_id"]),
            seq=int(data["seq"]),
            hash=str(data["hash"]),
            at=str(data["at"]),
            reason=str(data.get("reason", "")),
            key_id=str(data.get("key_id", "")),
            mac=str(data["mac"]),
            n=int(n) if n is not None else None,
            prev=str(prev) if prev is not None else None,
        )

    def valid(self, keys: Mapping[str, bytes]) -> bool | None:
        """True/False when one of `keys` (by key id) made it; None when no known key did."""
        key = keys.get(self.key_id)
        if key is None:
            return None
        expected = checkpoint_mac(
            key, self.log_id, self.seq, self.hash, self.at, self.reason, self.n, self.prev
        )
        return hmac.compare_digest(expected, self.mac)


# --- what comes out -------------------------------------------------------------------------


_SPLIT: dict[str, tuple[str, ...]] = {}


def _split(text: str | None) -> tuple[str, ...]:
    if not text:
        return ()
    hit = _SPLIT.get(text)
    if hit is None:
        if len(_SPLIT) > 4096:
            _SPLIT.clear()
        hit = _SPLIT[text] = tuple(text.split(","))
    return hit


@dataclass(frozen=True)
class LoggedRecord:
    """A record as stored: the decision, its server time and sequence number, its chain links."""

    seq: int
    at: datetime
    consent_id: str
    action: str
    granted: tuple[str, ...]
    denied: tuple[str, ...]
    services: dict[str, bool]
    revision: str
    language: str
    source: str
    version_id: str | None
    ip: str | None
    browser: str | None
    prev_hash: str
    hash: str
    detail: dict[str, Any] | None = field(default=None)

    @property
    def is_decision(self) -> bool:
        return self.action not in SYSTEM_ACTIONS

    @classmethod
    def from_row(cls, row: tuple[Any, ...] | list[Any], at: datetime | None = None) -> LoggedRecord:
        """From a raw row in ROW_COLUMNS order (`at`: its time, already parsed)."""
        (
            seq,
            at_text,
            cid,
            action,
            granted,
            denied,
            services,
            revision,
            language,
            source,
            version_id,
            ip,
            browser,
            detail,
            prev_hash,
            h,
        ) = row
        at_dt = at
        return cls(
            seq=int(seq),
            at=at_dt if at_dt is not None else parse_at(at_text),
            consent_id=cid,
            action=action,
            granted=_split(granted),
            denied=_split(denied),
            services=json.loads(services) if services else {},
            revision=revision,
            language=language,
            source=source,
            version_id=version_id,
            ip=ip,
            browser=browser,
            prev_hash=prev_hash,
            hash=h,
            detail=json.loads(detail) if detail else None,
        )

    def columns(self) -> tuple[Any, ...]:
        """The stored column values (COLUMNS order) this record hashes."""
        return (
            format_at(self.at),
            self.consent_id,
            self.action,
            ",".join(self.granted),
            ",".join(self.denied),
            services_text(self.services),
            self.revision,
            self.language,
            self.source,
            self.version_id,
            self.ip,
            self.browser,
            json.dumps(self.detail, sort_keys=True, separators=(",", ":"))
            if self.detail is not None
            else None,
        )

    def row(self) -> tuple[Any, ...]:
        """The raw row (ROW_COLUMNS order), as the verifier takes it."""
        return (self.seq, *self.columns(), self.prev_hash, self.hash)

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": format_at(self.at),
            "consent_id": self.consent_id,
            "action": self.action,
            "granted": list(self.granted),
            "denied": list(self.denied),
            "services": dict(self.services),
            "revision": self.revision,
            "language": self.language,
            "source": self.source,
            "version_id": self.version_id,
            "ip": self.ip,
            "browser": self.browser,
            "detail": self.detail,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LoggedRecord:
        return cls(
            seq=int(data["seq"]),
            at=parse_at(data["at"]),
            consent_id=data["consent_id"],
            action=data["action"],
            granted=tuple(data["granted"]),
            denied=tuple(data["denied"]),
            services={k: bool(v) for k, v in data["services"].items()},
            revision=data["revision"],
            language=data["language"],
            source=data["source"],
            version_id=data.get("version_id"),
            ip=data.get("ip"),
            browser=data.get("browser"),
            prev_hash=data["prev_hash"],
            hash=data["hash"],
            detail=data.get("detail"),
        )
