"""The `Consent` value and the signed cookie that carries it.

The cookie is signed, not encrypted: the browser script may read the payload, only the server's
signature makes it count. Anything that does not verify exactly (forged, tampered, truncated,
padded, expired, signed with a key no longer listed, made for another policy revision) decodes
as *undecided*. This module knows nothing of HTTP.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from itsdangerous import BadData, Serializer, URLSafeTimedSerializer
from itsdangerous.encoding import base64_encode

from .config import NECESSARY
from .errors import ConfigError, MissingSecretKey

ENV_SECRET_KEYS = "CONSENT_SECRET_KEYS"
SALT = "consent-banner.cookie.v1"
SOURCES = ("banner", "dialog", "form", "settings", "api", "gpc")
MAX_COOKIE_BYTES = 300
_EMPTY: Mapping[str, bool] = MappingProxyType({})
# payload . timestamp . signature, each unpadded URL-safe base64; SHA-256 signature is 43 chars.
_CANONICAL = re.compile(r"^[A-Za-z0-9_-]{2,1024}\.[A-Za-z0-9_-]{2,12}\.[A-Za-z0-9_-]{43}$")


@dataclass(frozen=True, slots=True)
class Consent:
    """A visitor's consent as the server trusts it.

    `granted` holds the optional categories the visitor's signed decision grants; `categories`
    and `allows()` give what is effectively allowed, with the Global Privacy Control signal applied.
    """

    id: str | None = None
    granted: frozenset[str] = frozenset()
    services: Mapping[str, bool] = field(default_factory=lambda: _EMPTY)
    revision: str | None = None
    decided_at: int | None = None  # unix seconds
    source: str | None = None
    gpc_recorded: bool = False  # the log already holds this visitor's GPC opt-out
    gpc: bool = False  # the request carries Sec-GPC: 1
    gpc_denied: frozenset[str] = frozenset()
    # Services declared since the decision (necessary ones aside): `services` holds them as False,
    # so they stay held back (and every cache keyed on `services` follows) until the next decision.
    new_services: frozenset[str] = frozenset()
    # The request's jurisdiction (geo.py), never in the cookie: set per request by the middleware from
    # the region its edge names. An undecided visitor under "opt-out" is granted every optional
    # category (`under_opt_out`); a decided one's own choice counts under either model.
    model: str = "opt-in"
    region: str | None = None
    # The decision was an opt-out (action `opt_out`: "Do Not Sell or Share", or GPC under opt-out),
    # never an affirmative consent: in the cookie ("x"), and read as undecided where the model is
    # opt-in, so a visitor who travels to the EEA is asked for consent there.
    opted_out: bool = False
    # The decision was made under the opt-out model and grants an optional category: switches that
    # were on before the visitor touched them, under a notice at collection, are no opt-in consent
    # (pre-ticked boxes: CJEU C-673/17 Planet49), so where the model is opt-in it is read as
    # undecided and the visitor is asked there. In the cookie ("u"); a refusal is one everywhere.
    granted_under_opt_out: bool = False
    dismissed: bool = False  # the opt-out notice was dismissed (its own cookie: no consent, not logged)

    @property
    def decided(self) -> bool:
        return self.decided_at is not None

    def allows(self, category: str) -> bool:
        if category == NECESSARY:
            return True
        if self.gpc and category in self.gpc_denied:
            return False
        return category in self.granted

    def allows_service(self, name: str, category: str) -> bool:
        return self.allows(category) and self.services.get(name, True)

    @property
    def categories(self) -> tuple[str, ...]:
        """Effectively allowed categories, `necessary` first."""
        return (NECESSARY, *sorted(c for c in self.granted if self.allows(c)))

    def with_gpc(self, denied: frozenset[str]) -> Consent:
        return replace(self, gpc=True, gpc_denied=denied)

    def under(
        self, region: str | None, model: str, optional: Iterable[str], *, dismissed: bool = False
    ) -> Consent:
        """This consent in a jurisdiction: an undecided visitor under "opt-out" is allowed every
        optional category (GPC still denies its categories through `allows`); under "opt-in" an
        opt-out, or a grant made under "opt-out", is no decision; anyone else keeps what they decided,
        and only carries the region and model."""
        if model == "opt-out" and not self.decided:
            return replace(self, granted=frozenset(optional), model=model, region=region, dismissed=dismissed)
        if model != "opt-out" and (self.opted_out or self.granted_under_opt_out):
            return Consent(model=model, region=region)
        return replace(self, model=model, region=region)


UNDECIDED = Consent()


def new_consent_id() -> str:
    """128 random bits behind the creation time in milliseconds (48 bits): URL-safe base64, 30 characters.

    The random bits make the id unguessable. The time prefix keeps ids made close together close
    in the consent log's index: fully random ids scatter the inserts of every commit across the
    whole index, and each page they touch is written to the WAL again (bench/bench_log.py shows
    both). UUIDv7 does the same, but gives up random bits for it; this id keeps all 128. The time
    is no secret: the log records it, and the cookie's signature carries its own timestamp.
    """
    raw = (time.time_ns() // 1_000_000).to_bytes(6, "big") + secrets.token_bytes(16)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def secret_keys_from_env(environ: Mapping[str, str] | None = None) -> list[str]:
    """The signing keys from CONSENT_SECRET_KEYS (comma-separated, newest last)."""
    raw = (os.environ if environ is None else environ).get(ENV_SECRET_KEYS, "")
    keys = [k.strip() for k in raw.split(",") if k.strip()]
    if not keys:
        raise MissingSecretKey(
            f"{ENV_SECRET_KEYS} is not set: generate a key with `consent-banner keygen` and export "
            f"{ENV_SECRET_KEYS}=<key> (comma-separated, newest last, to rotate keys)"
        )
    short = [i for i, k in enumerate(keys) if len(k) < 32]
    if short:
        raise MissingSecretKey(f"{ENV_SECRET_KEYS}: key #{short[0] + 1} is shorter than 32 characters")
    from .log.keys import PUBLIC_PREFIX, SIGNING_PREFIX  # here: the log package imports this module

    for i, k in enumerate(keys, 1):
        # A log key pasted here (both variables are comma-separated lists of keys) would sign every
        # cookie and log HMAC: the public one is published at {prefix}/log-key, so anyone could forge.
        if k.startswith(PUBLIC_PREFIX):
            raise MissingSecretKey(
                f"{ENV_SECRET_KEYS}: key #{i} is the log's public key ({PUBLIC_PREFIX}...), which "
                "{prefix}/log-key publishes; retired log keys go in CONSENT_LOG_PUBLIC_KEYS, and "
                f"{ENV_SECRET_KEYS} takes secrets from `consent-banner keygen`"
            )
        if k.startswith(SIGNING_PREFIX):
            raise MissingSecretKey(
                f"{ENV_SECRET_KEYS}: key #{i} is a log signing key ({SIGNING_PREFIX}...): it belongs "
                f"in CONSENT_LOG_SIGNING_KEY; {ENV_SECRET_KEYS} takes its own secrets from "
                "`consent-banner keygen`"
            )
    return keys


def service_tag(name: str) -> str:
    """A service's 18-bit tag in the cookie: 3 URL-safe base64 characters of SHA-256(name).

    The cookie names the services that existed at the decision by these tags, not by position in
    a list, so a service removed or reordered later never shifts a choice onto another vendor,
    and the server needs no history of old configurations to read an old cookie.
    """
    return base64.urlsafe_b64encode(hashlib.sha256(name.encode()).digest()[:3]).decode()[:3]


def services_digest(names: Iterable[str]) -> str:
    """4 URL-safe base64 characters (24 bits) of SHA-256 over a set of service names, sorted.

    A compact cookie carries the digest of the services that existed at the decision beside their
    tags: a tag can be shared by a service removed since and one added since (18 bits), the digest
    over the names tells them apart wherever every tag of the cookie is still claimed.
    """
    blob = "\n".join(sorted(names)).encode()
    return base64.urlsafe_b64encode(hashlib.sha256(blob).digest()[:3]).decode()


def _bits(positions: Iterable[int]) -> str:
    n = sum(1 << p for p in positions)
    return base64.urlsafe_b64encode(n.to_bytes((n.bit_length() + 7) // 8, "little")).rstrip(b"=").decode()


def _positions(text: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), "little")


class _PlainSerializer(URLSafeTimedSerializer):
    """Never zlib-compressed: the payload stays readable by the script, and one form only."""

    def dump_payload(self, obj: object) -> bytes:
        return base64_encode(Serializer.dump_payload(self, obj))


def _b64_canonical(part: str) -> bool:
    padded = part + "=" * (-len(part) % 4)
    try:
        raw = base64.urlsafe_b64decode(padded)
    except ValueError:
        return False
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode() == part


class ConsentCodec:
    """Encodes and verifies consent cookies for one configuration and key list.

    It remembers nothing: what a request's Cookie header proves is remembered in one place,
    `visitor.Visitors`, so that a returning visitor's cookie is checked once per process.
    """

    def __init__(
        self,
        secret_keys: Sequence[str],
        *,
        revision: str,
        lifetime: int,  # seconds
        categories: Iterable[str],
        services: Iterable[str] | None = None,
        necessary_services: Iterable[str] = (),
        retired_services: Iterable[str] = (),
    ) -> None:
        """`services`: the configuration's service names. Given (the middleware always gives them),
        cookies name the services that exist at the decision, and a service that did not is held
        back until the visitor decides again; None (tools and tests): cookies of the earlier form.
        `retired_services`: names of services removed from the configuration, whose tags a current
        service may not share (an old cookie's choice for one would pass to the other)."""
        if not secret_keys:
            raise MissingSecretKey("at least one signing key is required")
        # itsdangerous signs with the last key and verifies with any of them.
        self._serializer = _PlainSerializer(
            list(secret_keys), salt=SALT, signer_kwargs={"digest_method": hashlib.sha256}
        )
        self.revision = revision
        self.lifetime = lifetime
        self._categories = frozenset(categories) - {NECESSARY}
        names = tuple(services) if services is not None else None
        self._services = frozenset(names or ())
        self._necessary = frozenset(necessary_services)
        self._tags: dict[str, str] | None = None
        if names is not None:
            self._tags = {n: service_tag(n) for n in names}
            by_tag: dict[str, str] = {}
            for n, tag in self._tags.items():
                if tag in by_tag:
                    raise ConfigError(
                        [
                            f"services: {by_tag[tag]!r} and {n!r} share a tag in the consent cookie "
                            "(a one-in-262144 chance): rename one of them"
                        ]
                    )
                by_tag[tag] = n
            for retired in retired_services:
                current = by_tag.get(service_tag(retired))
                if current is not None and current != retired:
                    raise ConfigError(
                        [
                            f"services: {current!r} shares its tag in the consent cookie with the retired "
                            f"service {retired!r} (a one-in-262144 chance): cookies given while {retired!r} "
                            f"existed would pass its switch to {current!r}: rename {current!r}"
                        ]
                    )
            self._check_worst_case()

    def _check_worst_case(self) -> None:
        # The longest cookie this configuration can issue: every category granted, every service
        # switched, the longest source, GPC recorded. Longer than decode accepts, every visitor's
        # decision would read as undecided: a banner that never goes away, a log that grows.
        # A bitmap is as long as its highest position: switches alternating on and off make both
        # reach the last services (all off alone makes one, and let 73 services start that then
        # failed), and all off covers a single service.
        order = list(self._tags or ())
        layouts = [{n: False for n in order}] + [
            {n: i % 2 == parity for i, n in enumerate(order)} for parity in (0, 1)
        ]
        size = max(
            len(
                self.encode(
                    Consent(
                        id=new_consent_id(),
                        granted=self._categories,
                        services=switches,
                        revision=self.revision,
                        source=max(SOURCES, key=len),
                        gpc_recorded=True,
                        opted_out=True,
                        granted_under_opt_out=True,
                    )
                )
            )
            for switches in layouts
        )
        if size > 2 * MAX_COOKIE_BYTES:
            raise ConfigError(
                [
                    "services: the consent cookie would not fit: with "
                    f"{len(self._categories)} optional categories "
                    f"({sum(len(c) for c in self._categories)} characters of names), {len(self._services)} "
                    f"services and a policy_revision of {len(self.revision)} characters it can reach "
                    f"{size} bytes, over the {2 * MAX_COOKIE_BYTES} the server accepts: use fewer or shorter "
                    "category names, a shorter policy_revision, or fewer services"
                ]
            )

    def encode(self, consent: Consent) -> str:
        payload: dict[str, object] = {
            "i": consent.id,
            "c": sorted(consent.granted),
            "r": consent.revision,
            "o": consent.source,
        }
        if consent.gpc_recorded:
            payload["g"] = 1
        if consent.opted_out:
            payload["x"] = 1
        if consent.granted_under_opt_out:
            payload["u"] = 1
        if self._tags is None:
            if consent.services:
                payload["s"] = {k: int(v) for k, v in sorted(consent.services.items())}
        else:
            # What existed at the decision (what is still new stays new), and the switches as two
            # bitmaps over those positions: on, off (a service without a switch is in neither).
            known = [n for n in self._tags if n not in consent.new_services]
            payload["k"] = "".join(self._tags[n] for n in known)
            payload["h"] = services_digest(known)
            chosen = consent.services
            on = _bits(i for i, n in enumerate(known) if chosen.get(n) is True)
            off = _bits(i for i, n in enumerate(known) if chosen.get(n) is False)
            if on:
                payload["y"] = on
            if off:
                payload["n"] = off
        # decided-at is itsdangerous's signed timestamp, set now.
        return self._serializer.dumps(payload)

    def decode(self, value: str | None) -> Consent:
        """The consent a cookie value proves, or UNDECIDED."""
        if not value:
            return UNDECIDED
        return self._verify(value)

    def _verify(self, value: str) -> Consent:
        if len(value) > 2 * MAX_COOKIE_BYTES or not _CANONICAL.match(value):
            return UNDECIDED
        if not all(_b64_canonical(p) for p in value.split(".")):
            return UNDECIDED
        try:
            payload, signed_at = self._serializer.loads(value, max_age=self.lifetime, return_timestamp=True)
        except (BadData, ValueError, TypeError):
            return UNDECIDED
        return self._from_payload(payload, int(signed_at.timestamp()))

    def stale_id(self, value: str | None) -> str | None:
        """The consent id of an authentic cookie that no longer counts (expired or made for an older
        policy revision): a decision made now renews that visitor's consent under the same id."""
        if not value or not _CANONICAL.match(value) or not all(_b64_canonical(p) for p in value.split(".")):
            return None
        try:
            payload = self._serializer.loads(value)
        except (BadData, ValueError, TypeError):
            return None
        if not isinstance(payload, dict) or not isinstance(payload.get("i"), str):
            return None
        return payload["i"] if not self.decode(value).decided else None

    def _from_payload(self, payload: object, decided_at: int) -> Consent:
        if not isinstance(payload, dict) or payload.get("r") != self.revision:
            return UNDECIDED
        cid, granted, source = payload.get("i"), payload.get("c"), payload.get("o")
        services = payload.get("s", {})
        if not isinstance(cid, str) or not isinstance(granted, list) or not isinstance(services, dict):
            return UNDECIDED
        choices = {k: bool(v) for k, v in services.items() if k in self._services and v in (0, 1)}
        new: frozenset[str] = frozenset()
        if "k" in payload:
            read = self._known(payload)
            if read is None:
                return UNDECIDED
            choices, new = read
        # Without "k" (a cookie of the release before), every service counts as known.
        return Consent(
            id=cid,
            # A category dropped from the config since the decision grants nothing.
            granted=frozenset(c for c in granted if c in self._categories),
            services=MappingProxyType(choices),
            new_services=new,
            revision=self.revision,
            decided_at=decided_at,
            source=source if source in SOURCES else None,
            gpc_recorded=payload.get("g") == 1,
            opted_out=payload.get("x") == 1,
            granted_under_opt_out=payload.get("u") == 1,
        )

    def _known(self, payload: dict[str, object]) -> tuple[dict[str, bool], frozenset[str]] | None:
        """The switches a compact cookie holds for today's services, and which of them are new."""
        k, on_text, off_text = payload.get("k"), payload.get("y", ""), payload.get("n", "")
        if not (isinstance(k, str) and isinstance(on_text, str) and isinstance(off_text, str)):
            return None
        try:
            on, off = _positions(on_text), _positions(off_text)
        except ValueError:
            return None
        at = {k[i : i + 3]: i // 3 for i in range(0, len(k), 3)}
        tag_of = {n: service_tag(n) if self._tags is None else self._tags[n] for n in self._services}
        claimed = [n for n in self._services if tag_of[n] in at]
        # A service added since the decision may share its tag with one removed since (18 bits): it
        # would pass for the removed one and take its switch. Where every tag of the cookie is still
        # claimed, the digest of the names says whether they are the ones the visitor saw; if not,
        # every claimed service counts as new (asked again), since the tags cannot say which one it
        # is. Where a tag is unclaimed (a removal), `retired_services` keeps the names apart at start.
        digest = payload.get("h")
        if digest is not None and not isinstance(digest, str):
            return None
        mixed = digest is not None and len(claimed) == len(at) and services_digest(claimed) != digest
        choices: dict[str, bool] = {}
        new = []
        for name in self._services:
            pos = at.get(tag_of[name])
            if pos is None or mixed:
                if name not in self._necessary:
                    new.append(name)
                    choices[name] = False
            elif on >> pos & 1:
                choices[name] = True
            elif off >> pos & 1:
                choices[name] = False
        return dict(sorted(choices.items())), frozenset(new)


def consent_json(
    consent: Consent, revision: str, gpp: Mapping[str, object] | None = None
) -> dict[str, object]:
    """The public state shape of `GET /_consent/state` and the decision endpoints; `gpp` is what
    `window.__gpp` answers an opt-out visitor (gpp.py), None for everyone else."""
    return {
        "decided": consent.decided,
        "consent_id": consent.id,
        "categories": list(consent.categories),
        "services": dict(consent.services),
        "revision": revision,
        "gpc": consent.gpc,
        "region": consent.region,
        "model": consent.model,
        "gpp": gpp,
    }
