"""`ConsentConfig`: categories, services, cookie declarations, texts and settings.

Loaded from a hand-written `consent.toml` (`ConsentConfig.from_toml(path)`) or built in Python
(`ConsentConfig(policy_revision=..., categories={...}, services=[...])`). Validation is pydantic's,
with unknown keys forbidden (`[texts.<lang>]` included: its keys are those of i18n/en.toml); every
problem is reported as ``key.path: what is wrong``. This module knows nothing of HTTP.

One module on purpose, at about 400 lines: it is the schema of consent.toml, a model per table in
the order the README lists them, and reads as the reference of what the file may say. What the
values mean lives elsewhere (`durations.py`, `texts.py`, `ratelimit.py`).
"""

from __future__ import annotations

import fnmatch
import hashlib
import ipaddress
import json
import logging
import re
import tomllib
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import idna
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .catalog import catalog
from .catalog import resolve as resolve_preset
from .display import mask_passwords
from .durations import lifetime_parts, parse_duration, parse_lifetime
from .errors import ConfigError
from .geo import GeoSettings
from .ratelimit import Rate, parse_rate
from .schemes import DEFAULT_PORTS
from .texts import RETIRED_KEYS, text_keys

logger = logging.getLogger("consent_banner")

NECESSARY = "necessary"
DEFAULT_PREFIX = "/_consent"
DEFAULT_LOG = "sqlite:///consent-log.db"

_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
# A service's `inline` signatures: how many, how short and how long (see Service._inline).
MAX_SIGNATURES = 32
MIN_SIGNATURE = 3
MAX_SIGNATURE = 200
# The category a suggestion leaves when it cannot know (`log blocked --suggest`): refused until edited.
TODO = "TODO"
_LANG = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$")
# RFC 6265 cookie-name token characters, plus the glob wildcards * ? [ ] !
_COOKIE_GLOB = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z?\[\]]+$")


def _text_map(value: Any) -> Any:
    """A label may be a plain string (every language) or a table {en = ..., sv = ...}."""
    if isinstance(value, str):
        return {"*": value}
    return value


Text = Annotated[dict[str, str], BeforeValidator(_text_map)]
OptionalText = Annotated[dict[str, str] | None, BeforeValidator(_text_map)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class CookieSettings(_Model):
    """`[cookie]`: where and how long the signed consent cookie lives."""

    name: str = "consent"
    lifetime_days: int = Field(default=182, ge=1, le=790)  # 182 days: about six months (CNIL)
    domain: str = ""  # empty: host-only
    path: str = "/"
    secure: bool = True
    same_site: Literal["lax", "strict", "none"] = "lax"

    @field_validator("name")
    @classmethod
    def _cookie_name(cls, v: str) -> str:
        if not v or not re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", v):
            raise ValueError(f"{v!r} is not a valid cookie name")
        if v.lower().startswith(("__host-", "__secure-")):
            raise ValueError(f"{v!r}: leave out the prefix (__Host- is added over https where it can be)")
        return v

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError("must start with '/'")
        return v


class CookieDeclaration(_Model):
    """One cookie (or a glob of cookies) a service sets."""

    name: str
    lifetime: str = "session"
    domain: str | None = None  # the parent domain it may live on, e.g. ".example.com"
    purpose: OptionalText = None  # default: the service's purpose

    @field_validator("name")
    @classmethod
    def _glob(cls, v: str) -> str:
        if not v:
            raise ValueError("a cookie name pattern cannot be empty")
        if not _COOKIE_GLOB.match(v):
            raise ValueError(
                f"{v!r} cannot match a cookie name: use the cookie's name, with * or ? as wildcards"
            )
        if not re.sub(r"[*?\[\]!]", "", v):
            raise ValueError(f"{v!r} would match every cookie: name at least one literal character")
        try:
            re.compile(fnmatch.translate(v))
        except re.error as e:
            raise ValueError(f"{v!r} is not a valid glob ({e})") from None
        return v

    @field_validator("lifetime")
    @classmethod
    def _lifetime(cls, v: str) -> str:
        parse_lifetime(v)
        return v

    @field_validator("domain")
    @classmethod
    def _domain(cls, v: str | None) -> str | None:
        if v is None:
            return v
        d = v.lower()
        if not re.fullmatch(r"\.?([a-z0-9-]+\.)*[a-z0-9-]+", d):
            raise ValueError(f"{v!r} is not a domain name")
        return d if d.startswith(".") else "." + d

    @cached_property
    def pattern(self) -> re.Pattern[str]:
        return re.compile(fnmatch.translate(self.name))

    @cached_property
    def lifetime_parts(self) -> tuple[int, str, int] | None:
        """(number, unit name, seconds per unit); None for a session cookie."""
        return lifetime_parts(self.lifetime)

    @cached_property
    def lifetime_seconds(self) -> int | None:
        parts = self.lifetime_parts
        return None if parts is None else parts[0] * parts[2]


# The Google Consent Mode signals a category may claim (`consent_mode = [...]`): the four of v2 and
# the three others gtag.js knows. The browser script sends whichever the root element lists.
CONSENT_MODE_SIGNALS = (
    "ad_storage",
    "ad_user_data",
    "ad_personalization",
    "analytics_storage",
    "functionality_storage",
    "personalization_storage",
    "security_storage",
)
# The signals of advertising (GPC denies the categories that carry them: `advertising_categories`).
AD_SIGNALS = ("ad_storage", "ad_user_data", "ad_personalization")
# What `necessary` (granted before any decision) may claim: storage a site needs to work at all.
NECESSARY_CONSENT_MODE = ("functionality_storage", "security_storage")


class Category(_Model):
    """`[categories.NAME]`."""

    label: Text
    description: Text = Field(default_factory=dict)
    # The Consent Mode signals granted with this category; None: its services' presets, then the
    # name (banner.consent_mode_map). Left out of the hash when absent: configs without it keep theirs.
    consent_mode: tuple[str, ...] | None = Field(default=None, exclude_if=lambda v: v is None)

    @field_validator("consent_mode")
    @classmethod
    def _consent_mode(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for signal in v or ():
            if signal not in CONSENT_MODE_SIGNALS:
                raise ValueError(
                    f"{signal!r} is not a Consent Mode signal (known: {', '.join(CONSENT_MODE_SIGNALS)})"
                )
            if v is not None and v.count(signal) > 1:
                raise ValueError(f"{signal!r} is listed twice")
        return v


def _origin(value: str) -> str:
    parts = urlsplit(value.strip())
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host or parts.path not in ("", "/") or parts.query:
        raise ValueError(
            f"{value!r} is not an origin: write scheme://host[:port], e.g. https://stats.example.net"
        )
    if not re.fullmatch(r"(\*\.)?[a-z0-9.-]+|\[[0-9a-f:]+\]", host) and not re.fullmatch(r"[0-9a-f:]+", host):
        raise ValueError(f"{value!r} has an invalid host")
    port = f":{parts.port}" if parts.port else ""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}"


Origin = Annotated[str, BeforeValidator(lambda v: _origin(v) if isinstance(v, str) else v)]


_HOST_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")


def _site_origin(value: str) -> str:
    """A `site_origins` entry as the browser writes it in ``Origin``: scheme://host[:port], lower
    case, IDNA-mapped, the scheme's default port left out. Compared as a string with the header, so
    anything else (a path, a user name, a wildcard) would never match: it is refused, not ignored."""
    text = value.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as e:
        raise ValueError(f"{value!r} is not an origin ({e})") from None
    scheme = parts.scheme.lower()
    host = None
    if scheme not in ("http", "https") or not text[len(scheme) :].startswith("://"):
        why = "write scheme://host[:port] with http or https, e.g. https://www.example.com"
    elif "@" in parts.netloc:
        why = "an origin has no user name or password"
    elif parts.path not in ("", "/") or "?" in text or "#" in text:
        why = "an origin has no path, query or fragment: write only scheme://host[:port]"
    elif port == 0:
        why = "port 0 is not a port the site can be served at"
    else:
        host = _origin_host(parts.netloc)
        why = "its host is not a host name or an IP address (one host, no wildcard)"
    if host is None:
        raise ValueError(f"{value!r}: {why}")
    shown = f":{port}" if port is not None and port != DEFAULT_PORTS[scheme] else ""
    return f"{scheme}://{host}{shown}"


def _origin_host(netloc: str) -> str | None:
    """The host of an origin's `host[:port]` as the browser serialises it, None when it is not one."""
    if netloc.startswith("["):
        try:
            return f"[{ipaddress.IPv6Address(netloc[1 : netloc.index(']')]).compressed}]"
        except ValueError:
            return None
    host = netloc.rpartition(":")[0] if ":" in netloc else netloc
    if not host.isascii():
        try:
            host = idna.encode(host, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError):
            return None
    host = host.lower()
    if re.fullmatch(r"[0-9.]+", host):
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            return None
    labels = host.split(".")
    if len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        return None
    return host


SiteOrigin = Annotated[str, BeforeValidator(lambda v: _site_origin(v) if isinstance(v, str) else v)]


class Service(_Model):
    """`[[services]]`: a provider's scripts, hosts and cookies, in one category."""

    name: str
    category: str
    provider: str = ""
    purpose: Text = Field(default_factory=dict)
    privacy_url: str | None = None
    origins: tuple[Origin, ...] = ()
    cookies: tuple[CookieDeclaration, ...] = ()
    switch: bool = False  # offer a per-service switch in the preferences dialog
    # Substrings of the service's official inline snippet (`fbq(`, `googletagmanager.com/gtm.js`):
    # an inline <script> holding one, or one of the origins' hosts, is neutralised while the service
    # is not allowed (gate/inline.py). `loader`: the snippet builds <script src> elements at run
    # time, so where their origins are not in the page's script-src the page reloads once after the
    # decision that grants it. Both left out of the hash when unset: configs without them keep theirs.
    inline: tuple[str, ...] = Field(default=(), exclude_if=lambda v: not v)
    loader: bool = Field(default=False, exclude_if=lambda v: not v)
    # SHA-256 (hex) of inline snippets of this service the gate vouches for beyond the official ones
    # (gate/snippets.py: a customised snippet; the refused script shows its value as data-consent-pin).
    inline_sha256: tuple[str, ...] = Field(default=(), exclude_if=lambda v: not v)
    # A catalog entry (catalog.py) filling the keys left out; resolved before validation, so the
    # values (and the hash) are the resolved ones. Left out of dumps: a config without presets
    # keeps its hash, and the resolved values are what the hash must cover.
    preset: str | None = Field(default=None, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        return resolve_preset(data) if isinstance(data, dict) and "preset" in data else data

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"{v!r}: service names are lower-case letters, digits, '-' and '_'")
        return v

    @field_validator("inline_sha256")
    @classmethod
    def _inline_sha256(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(v) > MAX_SIGNATURES:
            raise ValueError(f"at most {MAX_SIGNATURES} pinned snippets per service (got {len(v)})")
        for h in v:
            if not re.fullmatch(r"[0-9a-f]{64}", h):
                raise ValueError(
                    f"{h[:80]!r}: a SHA-256 in hex (64 characters 0-9a-f), as data-consent-pin has it"
                )
        return v

    @field_validator("inline")
    @classmethod
    def _inline(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        # Every signature is searched for in every inline script of every page (one pattern, each
        # byte of a script tried against it): bounded, so that a long list cannot slow pages down,
        # and at least MIN_SIGNATURE characters, or nearly every script would match.
        if len(v) > MAX_SIGNATURES:
            raise ValueError(f"at most {MAX_SIGNATURES} signatures per service (got {len(v)})")
        for s in v:
            if not MIN_SIGNATURE <= len(s) <= MAX_SIGNATURE:
                raise ValueError(f"{s!r}: a signature is {MIN_SIGNATURE} to {MAX_SIGNATURE} characters long")
            if not s.isascii() or not s.isprintable():
                # matched on the page's bytes, in whatever ASCII-compatible charset it is in
                raise ValueError(f"{s!r}: a signature is printable ASCII (code and URLs in a snippet are)")
        return v


WebhookEvent = Literal["decision", "withdraw", "purge"]  # what a webhook may ask for (events/payload.py)
WEBHOOK_EVENTS: tuple[WebhookEvent, ...] = ("decision", "withdraw", "purge")
DEFAULT_WEBHOOK_SECRET_ENV = "CONSENT_WEBHOOK_SECRET"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


class Webhook(_Model):
    """`[[webhooks]]`: where consent events are POSTed, signed per the Standard Webhooks specification.

    The secret is never in the file: `secret_env` names the environment variable that holds it, in the
    specification's `whsec_<base64>` form (read at start, by events/signature.py)."""

    url: str
    events: tuple[WebhookEvent, ...] = WEBHOOK_EVENTS
    secret_env: str = DEFAULT_WEBHOOK_SECRET_ENV
    # The key of its delivery cursor in the log (default: the URL): name it to move the URL and keep
    # the cursor, or to point two webhooks at one URL.
    name: str | None = Field(default=None, min_length=1, max_length=200)
    # Where a new webhook's cursor starts: "now" (the log's head when it first runs) or "beginning".
    start: Literal["now", "beginning"] = "now"

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        try:
            parts = urlsplit(v)
            _ = parts.port
        except ValueError as e:
            raise ValueError(f"{mask_passwords(v)!r}: {e}") from None
        host = (parts.hostname or "").lower()
        if parts.scheme not in ("https", "http") or not host:
            raise ValueError(f"{mask_passwords(v)!r}: a webhook URL is https://host/path")
        if parts.scheme == "http" and not _loopback(host):
            # Events carry consent ids and choices: over plain http anyone on the path reads them.
            raise ValueError(
                f"{mask_passwords(v)!r}: use https (plain http is accepted only for a loopback receiver, "
                "127.0.0.1, ::1 or localhost)"
            )
        if parts.fragment:
            raise ValueError(f"{mask_passwords(v)!r}: a webhook URL has no #fragment")
        return v

    @field_validator("events")
    @classmethod
    def _events(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError(f"name at least one event ({', '.join(WEBHOOK_EVENTS)})")
        twice = sorted({e for e in v if v.count(e) > 1})
        if twice:
            raise ValueError(f"{twice[0]!r} is listed twice")
        return v

    @field_validator("secret_env")
    @classmethod
    def _secret_env(cls, v: str) -> str:
        if v.lower().startswith("whsec_"):  # the secret itself, pasted: never echoed into a message
            raise ValueError(
                "this is a secret, not the name of the environment variable holding it: put it in one "
                f"(e.g. {DEFAULT_WEBHOOK_SECRET_ENV}) and name that here"
            )
        if not _ENV_NAME.match(v):
            raise ValueError(
                f"{v[:80]!r} is not an environment variable name (the secret itself never goes in the "
                f"file: name the variable that holds it, e.g. {DEFAULT_WEBHOOK_SECRET_ENV!r})"
            )
        return v

    @property
    def key(self) -> str:
        """Its delivery cursor's key in the log."""
        return self.name or self.url


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ConsentConfig(_Model):
    """The whole consent configuration. See the README for every key."""

    policy_revision: str = Field(min_length=1, max_length=64)
    controller: str = Field(min_length=1)
    privacy_policy_url: str = Field(min_length=1)
    languages: tuple[str, ...] = ("en",)
    prefix: str = DEFAULT_PREFIX
    log: str = DEFAULT_LOG
    # The log as the audit view reads it, opened read-only (e.g. as a PostgreSQL role that may only
    # SELECT); None: `log`, read-only all the same. Not in the hash: no banner depends on it.
    audit_log: str | None = Field(default=None, exclude=True)
    allowed_origins: tuple[Origin, ...] = ()
    # Where the site is served, as the browser sees it (behind a proxy the request's scheme and Host
    # may be the proxy's); None: the request's own scheme and Host (see request_checks.SiteOrigins).
    site_origins: tuple[SiteOrigin, ...] | None = None
    gpc_denies: tuple[str, ...] | None = None  # None: ["marketing"] when defined
    # GPC also denies every category carrying Google Consent Mode's ad_* signals or an advertising
    # preset (`advertising_categories`), whatever it is called: GPC is an opt-out of sale and sharing
    # for targeted advertising (CCPA/CPRA). false: only `gpc_denies` (warned about at start). Left out
    # of the hash when true: configs without it keep theirs.
    gpc_denies_advertising: bool = Field(default=True, exclude_if=lambda v: v)
    cookie: CookieSettings = Field(default_factory=CookieSettings)
    categories: dict[str, Category]
    services: tuple[Service, ...] = ()
    # Names of services removed from `services`: a service added later may not share a removed one's
    # tag in the consent cookie, or cookies given before the removal would pass on its switch (checked
    # by consent.ConsentCodec at start). Left out of the hash when empty: configs without it keep theirs.
    retired_services: tuple[str, ...] = Field(default=(), exclude_if=lambda v: not v)
    # the gate (response-side enforcement)
    undeclared_cookies: Literal["block", "allow"] = "block"
    csp: Literal["enforce", "report-only", "off"] = "enforce"
    csp_undecided: Literal["may-grant", "strict"] = "may-grant"  # see the README, "What the gate does"
    # The page's own inline scripts: "block" (a <script> without the nonce is refused, so a reflected
    # one is too); "nonce": each inline script matching no service gets the response's nonce as it
    # streams, for sites that cannot add csp_nonce() to their templates. Left out of the hash when
    # "block": configs without it keep theirs.
    inline_scripts: Literal["block", "nonce"] = Field(default="block", exclude_if=lambda v: v == "block")
    rewrite_html: bool = True
    inject: bool = True
    # the banner
    recipients_url: str | None = None  # default: the privacy policy's #recipients
    do_not_sell_link: bool = False  # California: show "Do Not Sell or Share My Personal Information"
    texts: dict[str, dict[str, str]] = Field(default_factory=dict)  # per language, overrides shipped texts
    # the log
    retention: str | None = None  # e.g. "3y": `log purge` without --older-than uses it
    # request limits (per process)
    decision_rate_limit: str = "120/minute"  # decisions per client address, or "off"
    # jurisdictions (geo.py): the consent model by the visitor's region; None: opt-in everywhere. Left
    # out of the hash when absent: configs without it keep theirs.
    geo: GeoSettings | None = Field(default=None, exclude_if=lambda v: v is None)
    # consent events out (events/): not in the hash, no banner depends on them
    webhooks: tuple[Webhook, ...] = Field(default=(), exclude=True)

    @field_validator("policy_revision", mode="before")
    @classmethod
    def _revision(cls, v: Any) -> Any:
        # TOML readers turn an unquoted 2026-11-01 into a date; the revision is its text.
        return v.isoformat() if hasattr(v, "isoformat") else v

    @field_validator("languages")
    @classmethod
    def _languages(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("name at least one language")
        for lang in v:
            if not _LANG.match(lang):
                raise ValueError(f"{lang!r} is not a language tag such as 'en' or 'sv'")
        return v

    @field_validator("site_origins")
    @classmethod
    def _site_origins(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is not None:
            if not v:
                raise ValueError("name at least one origin (https://www.example.com), or leave the key out")
            twice = sorted({o for o in v if v.count(o) > 1})
            if twice:
                raise ValueError(f"{twice[0]!r} is listed twice")
        return v

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not re.fullmatch(r"(/[A-Za-z0-9_.-]+)+", v):
            raise ValueError(f"{v!r}: the prefix is a path such as '/_consent', without a trailing '/'")
        return v

    @field_validator("log", "audit_log")
    @classmethod
    def _log(cls, v: str | None) -> str | None:
        if v is None:
            return v
        shown = repr(mask_passwords(v))  # the URL may carry the database password: never echo it
        if not v.startswith(("sqlite:///", "postgresql://", "postgres://", "memory://")):
            raise ValueError(f"{shown}: use sqlite:///path/to/file.db or postgresql://user@host/db")
        try:
            _ = urlsplit(v).port  # an unclosed [ or a port out of range: say so now, not when the log opens
        except ValueError as e:
            raise ValueError(f"{shown}: {e}") from None
        return v

    @field_validator("categories")
    @classmethod
    def _categories(cls, v: dict[str, Category]) -> dict[str, Category]:
        if NECESSARY not in v:
            raise ValueError("a [categories.necessary] table is required (necessary cookies are declared)")
        for name in v:
            if not _NAME.match(name):
                raise ValueError(f"{name!r}: category names are lower-case letters, digits, '-' and '_'")
        return v

    @field_validator("retention")
    @classmethod
    def _retention(cls, v: str | None) -> str | None:
        if v is not None:
            parse_duration(v)
        return v

    @field_validator("decision_rate_limit")
    @classmethod
    def _decision_rate_limit(cls, v: str) -> str:
        parse_rate(v)
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> ConsentConfig:
        problems: list[str] = []
        names: set[str] = set()
        for i, s in enumerate(self.services):
            if s.category == TODO:
                problems.append(
                    f"services[{i}].category: service {s.name!r} still says {TODO!r}, left for a person "
                    f"to decide (by `log blocked --suggest`): choose one of {', '.join(self.categories)}"
                )
            elif s.category not in self.categories:
                problems.append(
                    f"services[{i}].category: {s.category!r} is not a category "
                    f"(defined: {', '.join(self.categories)})"
                )
            if s.name in names:
                problems.append(f"services[{i}].name: {s.name!r} is declared twice")
            names.add(s.name)
        keys: set[str] = set()
        for i, w in enumerate(self.webhooks):
            if w.key in keys:
                field = "name" if w.name else "url"
                problems.append(
                    f"webhooks[{i}].{field}: {mask_passwords(w.key)!r} is another webhook's too: each needs "
                    "a cursor of its own (give one a `name`)"
                )
            keys.add(w.key)
        claimed: dict[str, str] = {}
        for name, cat in self.categories.items():
            for signal in cat.consent_mode or ():
                if signal in claimed:
                    problems.append(
                        f"categories.{name}.consent_mode: {signal!r} is already claimed by category "
                        f"{claimed[signal]!r}: a signal follows one category"
                    )
                claimed.setdefault(signal, name)
                if name == NECESSARY and signal not in NECESSARY_CONSENT_MODE:
                    # necessary is granted before any decision and under GPC
                    problems.append(
                        f"categories.{name}.consent_mode: {signal!r} would be granted before consent: "
                        f"necessary may claim only {', '.join(NECESSARY_CONSENT_MODE)}"
                    )
        for name in self.retired_services:
            if not _NAME.match(name):
                problems.append(f"retired_services: {name!r} is not a service name")
            elif name in self.services_by_name:
                problems.append(f"retired_services: {name!r} is still a service: retire it once removed")
        for c in self.gpc_denies or ():
            if c not in self.categories:
                problems.append(f"gpc_denies: {c!r} is not a category")
            elif c == NECESSARY:
                problems.append("gpc_denies: 'necessary' cannot be denied")
        kept = sorted(self.advertising_categories - self.gpc_denied)
        if kept and not problems:
            logger.warning(
                "gpc_denies_advertising = false: under Global Privacy Control %s stay%s granted, with "
                "Google Consent Mode's ad_* signals: GPC is an opt-out of sale and sharing (CCPA/CPRA)",
                ", ".join(repr(c) for c in kept),
                "s" if len(kept) == 1 else "",
            )
        if not problems:
            self._warn_marketing_under_gpc()
        if self.inline_scripts == "nonce" and not self.rewrite_html:
            problems.append(
                "inline_scripts: 'nonce' gives scripts the nonce as the gate rewrites the page: "
                "it needs rewrite_html = true"
            )
        if self.cookie.same_site == "none" and not self.cookie.secure:
            problems.append("cookie.same_site: 'none' needs cookie.secure = true")
        problems += self._texts_problems()
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _texts_problems(self) -> list[str]:
        # A table applies to a configured language and to every configured language of its primary
        # subtag ([texts.sv] to sv-FI too); any other would never be shown, and neither would a key
        # the shipped English file does not have: both are mistakes to name, not to ignore.
        known = set(self.languages) | {lang.split("-")[0] for lang in self.languages}
        keys = text_keys()
        problems = []
        for lang, table in self.texts.items():
            if lang not in known:
                problems.append(
                    f"texts.{lang}: {lang!r} is not a configured language "
                    f"(languages: {', '.join(self.languages)}): add it there or remove the table"
                )
            for key in table:
                if key in RETIRED_KEYS:
                    logger.warning("texts.%s.%s is no longer used (%s)", lang, key, RETIRED_KEYS[key])
                elif key not in keys:
                    problems.append(
                        f"texts.{lang}.{key}: unknown key (the keys are those of consent_banner/i18n/en.toml)"
                    )
        return problems

    # --- loading ---------------------------------------------------------------------------

    @classmethod
    def from_toml(cls, path: str | Path) -> ConsentConfig:
        """Load and validate a consent.toml; raises ConfigError naming each bad key."""
        p = Path(path)
        try:
            raw = p.read_bytes()
        except OSError as e:
            raise ConfigError([f"cannot read the config file: {e.strerror}"], str(p)) from None
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError([f"not valid TOML: {e}"], str(p)) from None
        return cls.from_dict(data, source=str(p))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | None = None) -> ConsentConfig:
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise ConfigError(_describe(e), source) from None

    # --- derived, computed once ------------------------------------------------------------

    @cached_property
    def optional_categories(self) -> tuple[str, ...]:
        return tuple(c for c in self.categories if c != NECESSARY)

    @cached_property
    def gpc_denied(self) -> frozenset[str]:
        """What Global Privacy Control denies: `gpc_denies` (else `marketing`), and every advertising
        category unless `gpc_denies_advertising = false`."""
        named = frozenset(self.gpc_denies) if self.gpc_denies is not None else frozenset({"marketing"})
        if self.gpc_denies_advertising:
            named |= self.advertising_categories
        return named & frozenset(self.optional_categories)

    def _warn_marketing_under_gpc(self) -> None:
        # A preset the catalog files under marketing (Meta Pixel, LinkedIn, TikTok...) carries no
        # Consent Mode signal, so `advertising_categories` cannot tell: said at start instead.
        presets = catalog()
        for name in self.optional_categories:
            if name in self.gpc_denied:
                continue
            marketing = [
                s.name
                for s in self.services_in(name)
                if s.preset in presets and presets[s.preset].category == "marketing"
            ]
            if marketing:
                logger.warning(
                    "Global Privacy Control leaves category %r granted, though it holds %s, filed under "
                    "marketing in the catalog: add %r to gpc_denies if it shares data for advertising",
                    name,
                    ", ".join(repr(n) for n in marketing),
                    name,
                )

    @cached_property
    def advertising_categories(self) -> frozenset[str]:
        """The optional categories that carry advertising: whose `consent_mode` lists an ad_* signal;
        without that key, that hold a service whose preset needs one (Google Ads, Meta... and
        Microsoft UET, whose ad_storage is its own), or that are called `marketing` (the signals'
        default). Wider than the Consent Mode map (banner.consent_mode_map), never narrower: under
        GPC denying too much is the safe side."""
        presets = catalog()
        found = set()
        for name, cat in self.categories.items():
            if name == NECESSARY:
                continue
            if cat.consent_mode is not None:
                if any(signal in AD_SIGNALS for signal in cat.consent_mode):
                    found.add(name)
                continue
            if name == "marketing" or any(
                signal in AD_SIGNALS
                for s in self.services_in(name)
                if s.preset in presets
                for signal in presets[s.preset].consent_mode
            ):
                found.add(name)
        return frozenset(found)

    @cached_property
    def services_by_name(self) -> dict[str, Service]:
        return {s.name: s for s in self.services}

    def services_in(self, category: str) -> tuple[Service, ...]:
        return tuple(s for s in self.services if s.category == category)

    @cached_property
    def decision_rate(self) -> Rate | None:
        """`decision_rate_limit` parsed; None when "off"."""
        return parse_rate(self.decision_rate_limit)

    @cached_property
    def default_language(self) -> str:
        return self.languages[0]

    def localize(self, text: Mapping[str, str], language: str) -> str:
        """A configured text (a label, a description, a purpose) in `language`, else in the default
        language, else any: `config.localize(service.purpose, "sv")`."""
        for key in (language, language.split("-")[0], "*", self.default_language):
            if key in text:
                return text[key]
        return next(iter(text.values()), "")

    @cached_property
    def config_hash(self) -> str:
        """SHA-256 of the canonical JSON of the whole configuration (what the log's banner versions cite)."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def service_for_cookie(self, name: str) -> tuple[Service, CookieDeclaration] | None:
        """The service and declaration of the first declared pattern matching a cookie name."""
        for service in self.services:
            for decl in service.cookies:
                if decl.pattern.match(name):
                    return service, decl
        return None

    def category_for_cookie(self, name: str) -> tuple[str, CookieDeclaration] | None:
        """The category and declaration of the first declared pattern matching a cookie name."""
        found = self.service_for_cookie(name)
        return (found[0].category, found[1]) if found else None


def _describe(error: ValidationError) -> list[str]:
    problems = []
    for e in error.errors():
        loc = ".".join(str(p) for p in e["loc"] if p not in ("function-before[_text_map(), dict[str,str]]",))
        loc = re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", loc)
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling against the README's schema)"
        elif e["type"] == "missing":
            msg = "required key is missing"
        problems.append(f"{loc}: {msg}" if loc else msg)
    return problems
