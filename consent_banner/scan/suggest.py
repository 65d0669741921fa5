"""`--suggest`: TOML `[[services]]` blocks for what a scan found undeclared, for review.

Proposals come from the Open Cookie Database (consent_banner/data/open-cookie-database.csv,
Apache-2.0, read lazily with the csv module the first time a suggestion is asked for): for a cookie
its platform (the service), data controller (provider), description (purpose), retention and
category; for a host, the platform whose cookies live on that domain. The database's categories are
mapped onto the categories the site's config defines, by name or English label. What the database
does not know is proposed in the site's strictest optional category with a comment saying so, never
as necessary: a guess must not open a gate.

Before the database, the catalog of services (catalog.py): what matches a preset's cookies or
origins is proposed as `preset = NAME`, which declares the rest of that vendor's cookies and hosts too.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

from .. import catalog
from ..catalog import toml_value as _q  # the one TOML value writer
from ..config import NECESSARY, ConsentConfig
from ..display import escape_controls
from ..durations import parse_lifetime
from .classify import Classifier, origin_matches
from .model import CookieSeen, PageResult

DATABASE = "open-cookie-database.csv"
# Our category names a database category may go by, most likely first.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "necessary": ("necessary", "essential", "required", "strictly necessary"),
    "security": ("security", "necessary", "essential"),
    "functional": ("functional", "functionality", "preferences", "preference", "necessary"),
    "analytics": ("analytics", "statistics", "stats", "statistical", "performance", "measurement"),
    "marketing": ("marketing", "advertising", "ads", "targeting", "advertisement"),
    "personalization": ("personalization", "personalisation", "preferences", "preference", "functional"),
}
# When nothing is known, the category a proposal falls back to: the first of these the config has.
STRICTEST = ("marketing", "advertising", "thirdparty", "analytics", "statistics")


@dataclass(frozen=True)
class KnownCookie:
    """One row of the Open Cookie Database."""

    platform: str
    category: str
    name: str
    domain: str
    description: str
    retention: str
    controller: str
    privacy_url: str
    wildcard: bool  # `name` is a prefix


@dataclass(frozen=True)
class CookieDatabase:
    exact: dict[str, KnownCookie]
    prefixes: tuple[KnownCookie, ...]  # wildcard rows, longest prefix first

    def lookup(self, name: str) -> KnownCookie | None:
        """The row for a cookie or storage key name: exact first, then the longest wildcard prefix."""
        if name in self.exact:
            return self.exact[name]
        return next((k for k in self.prefixes if name.startswith(k.name)), None)

    def for_host(self, host: str) -> KnownCookie | None:
        """A row whose domain is this host or a parent of it ("doubleclick.net (3rd party)")."""
        host = host.lower()
        for row in (*self.exact.values(), *self.prefixes):
            d = row.domain.split(" ")[0].lower().lstrip(".")
            if d and "." in d and (host == d or host.endswith("." + d)):
                return row
        return None


@cache
def database() -> CookieDatabase:
    """The shipped Open Cookie Database, read once."""
    exact: dict[str, KnownCookie] = {}
    prefixes: list[KnownCookie] = []
    # newline="" as the csv module asks (a quoted field may hold a line break); Traversable.open
    # takes no newline argument, so the text layer is put on the bytes here.
    with io.TextIOWrapper(
        resources.files("consent_banner").joinpath("data", DATABASE).open("rb"), encoding="utf-8", newline=""
    ) as f:
        for row in csv.DictReader(f):
            known = KnownCookie(
                platform=row["Platform"].strip(),
                category=row["Category"].strip(),
                name=row["Cookie / Data Key name"].strip(),
                domain=row["Domain"].strip(),
                description=row["Description"].strip(),
                retention=row["Retention period"].strip(),
                controller=row["Data Controller"].strip(),
                privacy_url=row["User Privacy & GDPR Rights Portals"].strip(),
                wildcard=row["Wildcard match"].strip() == "1",
            )
            if not known.name:
                continue
            if known.wildcard:
                prefixes.append(known)
            else:
                exact.setdefault(known.name, known)
    prefixes.sort(key=lambda k: len(k.name), reverse=True)
    return CookieDatabase(exact, tuple(prefixes))


def map_category(config: ConsentConfig, database_category: str) -> str | None:
    """The config's category for a database category ("Analytics" -> "analytics" or "statistics"),
    matched against category names and English labels; None when the config has no such category."""
    wanted = SYNONYMS.get(database_category.strip().lower(), (database_category.strip().lower(),))
    for candidate in wanted:
        for name, category in config.categories.items():
            labels = {name.lower(), *(v.lower() for k, v in category.label.items() if k in ("en", "*"))}
            if candidate in labels:
                return name
    return None


def fallback_category(config: ConsentConfig) -> str:
    for name in STRICTEST:
        if name in config.categories:
            return name
    optional = config.optional_categories
    return optional[0] if optional else NECESSARY


def lifetime_text(retention: str, observed: float | None) -> tuple[str, str | None]:
    """A lifetime consent.toml accepts: the database's retention when it is understood and not
    shorter than what the browser showed, else the observed lifetime (rounded up); and a note."""
    text = retention.strip().lower()
    text = {"end of session (browser)": "session", "persistent": ""}.get(text, text)
    try:
        declared = parse_lifetime(text) if text else -1
    except ValueError:
        declared = -1
    if declared != -1 and (observed is None or (declared is not None and declared >= observed)):
        return text, None
    if observed is None:
        return "session", None
    days = max(1, math.ceil(observed / 86400))
    note = f"observed lifetime; the database says {retention!r}" if retention else "observed lifetime"
    return f"{days} days", note


def slug(text: str) -> str:
    """A service name consent.toml accepts, made from a platform or host name."""
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if not s or not s[0].isalpha():
        s = "svc-" + s
    return s[:40].rstrip("-")


@dataclass
class _Proposal:
    name: str
    category: str
    provider: str
    purpose: str
    privacy_url: str
    origins: list[str] = field(default_factory=list)
    # cookie pattern -> (lifetime, purpose, a note for the reviewer or None)
    cookies: dict[str, tuple[str, str, str | None]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def toml(self) -> str:
        lines = [f"# {escape_controls(n)}" for n in self.notes]  # a key's line feed must not end the comment
        lines += [
            "[[services]]",
            f"name = {_q(self.name)}",
            f"category = {_q(self.category)}",
            f"provider = {_q(self.provider)}",
            f"purpose = {_q(self.purpose)}",
        ]
        if self.privacy_url:
            lines.append(f"privacy_url = {_q(self.privacy_url)}")
        if self.origins:
            lines.append("origins = [" + ", ".join(_q(o) for o in self.origins) + "]")
        if self.cookies:
            lines.append("cookies = [")
            for pattern, (lifetime, purpose, note) in self.cookies.items():
                entry = f"    {{ name = {_q(pattern)}, lifetime = {_q(lifetime)}"
                entry += f", purpose = {_q(purpose)} }}," if purpose else " },"
                lines.append(entry + (f"  # {note}" if note else ""))
            lines.append("]")
        return "\n".join(lines)


def preset_matches(cookies: Iterable[str], origins: Iterable[str]) -> dict[str, str]:
    """The preset each cookie name or origin seen belongs to, where one does. An origin several
    presets list (www.google.com: Ads, Maps, reCAPTCHA) counts only for a preset that something else
    seen points to; an item several presets claim goes to the one matching most of what was seen."""
    presets = list(catalog.catalog().values())
    claims: dict[str, list[str]] = {}
    anchored: set[str] = set()
    for name in cookies:
        claims[name] = [
            p.name for p in presets if any(fnmatch.fnmatchcase(name, c["name"]) for c in p.cookies)
        ]
        anchored.update(claims[name])
    for origin in origins:
        claims[origin] = [p.name for p in presets if any(origin_matches(o, origin) for o in p.origins)]
        if len(claims[origin]) == 1:
            anchored.update(claims[origin])
    score = Counter(p for names in claims.values() for p in names)
    chosen = {}
    for item, names in claims.items():
        names = [n for n in names if n in anchored]
        if names:
            chosen[item] = max(names, key=lambda n: score[n])  # ties: the catalog's order
    return chosen


def _preset_block(config: ConsentConfig, name: str, preset: str, seen: list[str]) -> str:
    category = catalog.preset(preset).category
    mapped = map_category(config, category)
    if mapped == NECESSARY and category != NECESSARY:
        mapped = None  # "functional" may go by "necessary" in SYNONYMS: a guess must not open a gate
    lines = [
        f"# seen: {escape_controls(', '.join(seen))}: the preset {preset} "
        f"(`consent-banner presets {preset}` shows all it declares)"
    ]
    if mapped is None:
        mapped = fallback_category(config)
        lines.append(
            f"# the preset says {category!r}, which is not a category of this config: check {mapped!r}"
        )
    lines += [
        "[[services]]",
        f"name = {_q(name)}",
        f"preset = {_q(preset)}",
        f"category = {_q(mapped)}",
    ]
    return "\n".join(lines)


def suggest(config: ConsentConfig, site_origin: str, pages: Sequence[PageResult]) -> str:
    """TOML `[[services]]` blocks for every undeclared cookie, storage key and host the pages show;
    an empty string when everything is declared."""
    classifier = Classifier(config, site_origin)
    db = database()
    proposals: dict[str, _Proposal] = {}
    taken = set(config.services_by_name)

    def proposal_for(known: KnownCookie | None, fallback_name: str) -> _Proposal:
        key = known.platform if known else fallback_name
        if key in proposals:
            return proposals[key]
        name = base = slug(key)
        n = 2
        while name in taken:
            name = f"{base}-{n}"
            n += 1
        taken.add(name)
        notes: list[str] = []
        category = map_category(config, known.category) if known else None
        if known is None:
            notes.append(f"{fallback_name}: not in the Open Cookie Database; write its provider and purpose")
        elif category is None:
            notes.append(f"the database says {known.category!r}, which is not a category of this config")
        if category is None:
            category = fallback_category(config)
            notes.append(f"category {category!r} proposed as the strictest choice: check it")
        proposals[key] = _Proposal(
            name=name,
            category=category,
            provider=known.controller if known else "",
            purpose=known.description if known else "",
            privacy_url=known.privacy_url if known else "",
            notes=notes,
        )
        return proposals[key]

    cookies: dict[str, CookieSeen | None] = {}
    hosts: list[str] = []
    for page in pages:
        for state in page.states.values():
            for c in state.cookies:
                if not classifier.cookie(c.name).declared:
                    previous = cookies.get(c.name)
                    if previous is None or (c.lifetime or 0) > (previous.lifetime or 0):
                        cookies[c.name] = c
            for s in state.storage:
                if not classifier.cookie(s.key).declared:
                    cookies.setdefault(s.key, None)
            for origin in state.hosts:
                if not classifier.host(origin).declared and origin not in hosts:
                    hosts.append(origin)
    by_preset: dict[str, list[str]] = {}
    for item, matched in preset_matches(cookies, hosts).items():
        by_preset.setdefault(matched, []).append(item)
    blocks = []
    for matched, items in by_preset.items():
        name, n = matched, 2
        while name in taken:
            name = f"{matched}-{n}"
            n += 1
        taken.add(name)
        blocks.append(_preset_block(config, name, matched, items))
        for item in items:
            cookies.pop(item, None)
        hosts = [h for h in hosts if h not in items]
    for name, seen in cookies.items():
        known = db.lookup(name)
        p = proposal_for(known, name)
        pattern = known.name + "*" if known and known.wildcard else name
        lifetime, note = lifetime_text(known.retention if known else "", seen.lifetime if seen else None)
        p.cookies.setdefault(pattern, (lifetime, known.description if known else "", note))
    for origin in hosts:
        host = origin.split("://", 1)[1].rsplit(":", 1)[0].strip("[]")
        known = db.for_host(host)
        p = proposal_for(known, host)
        p.origins.append(origin)
    blocks += [p.toml() for p in proposals.values()]
    return "\n\n".join(blocks) + ("\n" if blocks else "")
