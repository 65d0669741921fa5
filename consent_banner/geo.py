"""Jurisdictions: which consent model applies to a visitor, from the region their site's edge names.

Two models: **opt-in** (nothing optional before a decision: the EEA, the UK, Switzerland, and the
default) and **opt-out** (US state laws: optional categories run before any decision, except what the
visitor's Global Privacy Control signal or "Do Not Sell or Share" choice turns off). The region comes
from request headers the site's CDN or proxy sets (`[geo] country_header`, `subdivision_header`); a
visitor can send any header, so they must come from the site's own edge, which overwrites them.

Matching, decided once at start into two tables: the most specific place wins whatever the rules'
order (a subdivision "US-CA" over its country "US", a country over a group "EU"/"EEA"); one place
named at one level by two rules is a configuration error, so no rule's position ever matters.

A header value is read strictly: a country is two ASCII letters naming an ISO 3166-1 country (any
case; "XX", "T1" and other user-assigned codes a CDN sends for "unknown" are none), a subdivision one
to three ASCII letters or digits without the country ("CA"). Anything else, or a value over 16 bytes,
is missing: the visitor gets `default`. This module knows nothing of HTTP beyond header bytes.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .gpp import GppSettings

Model = Literal["opt-in", "opt-out"]
OPT_IN: Model = "opt-in"
OPT_OUT: Model = "opt-out"
MODELS: tuple[Model, ...] = (OPT_IN, OPT_OUT)

REGIONS_FILE = Path(__file__).parent / "data" / "regions.toml"
_MAX_PROBLEMS = 10  # contradictions of a [geo] table named in its error; the rest are counted
_MAX_VALUE = 16  # bytes of a header value read at all: a longer one is malformed, never parsed
_COUNTRY = re.compile(rb"[A-Za-z]{2}")
_SUBDIVISION = re.compile(rb"[A-Za-z0-9]{1,3}")
# RFC 9110 field-name token; ASGI servers hand names lower-cased.
_FIELD_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")
# Headers the middleware reads for other reasons: a region header of that name would be both.
_RESERVED = frozenset({"cookie", "sec-gpc", "host", "origin", "accept-language", "user-agent"})


@dataclass(frozen=True)
class Regions:
    """The codes and groups of data/regions.toml (its header names the sources)."""

    countries: frozenset[str]
    subdivisions: dict[str, frozenset[str]]  # country -> its subdivision codes (without the country)
    groups: dict[str, tuple[str, ...]]


@cache
def regions() -> Regions:
    with REGIONS_FILE.open("rb") as f:
        data = tomllib.load(f)
    return Regions(
        countries=frozenset(data["countries"].split()),
        subdivisions={k: frozenset(v.split()) for k, v in data["subdivisions"].items()},
        groups={k: tuple(v.split()) for k, v in data["groups"].items()},
    )


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class GeoRule(_Model):
    """`[[geo.rules]]`: the places (`where`) that get `model`."""

    where: tuple[str, ...] = Field(min_length=1)
    model: Model

    @field_validator("where")
    @classmethod
    def _where(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        known = regions()
        out = []
        for entry in v:
            place = entry.strip().upper()
            country, dash, sub = place.partition("-")
            if place in known.groups:
                pass
            elif not dash and country in known.countries:
                pass
            elif dash and country in known.subdivisions and sub in known.subdivisions[country]:
                pass
            elif dash and country in known.countries:
                raise ValueError(
                    f"{entry!r}: {sub!r} is not an ISO 3166-2 subdivision code of {country}"
                    if country in known.subdivisions
                    else f"{entry!r}: rules by subdivision are known for "
                    f"{', '.join(sorted(known.subdivisions))} only: name the country {country!r}"
                )
            else:
                raise ValueError(
                    f"{entry!r} is not a place: write an ISO 3166-1 country code ('US'), a country and "
                    f"its ISO 3166-2 subdivision ('US-CA'), or a group ({', '.join(sorted(known.groups))})"
                )
            if place in out:
                raise ValueError(f"{entry!r} is listed twice")
            out.append(place)
        return tuple(out)


class GeoSettings(_Model):
    """`[geo]`: the consent model by the visitor's region (see the module docstring)."""

    country_header: str | None = None  # e.g. "CF-IPCountry": set by the site's CDN or proxy
    subdivision_header: str | None = None  # e.g. "CF-Region-Code": "CA" for California
    default: Model = OPT_IN  # no rule matches, or the header is missing or malformed
    rules: tuple[GeoRule, ...] = ()
    # `[geo.gpp]`: what the GPP string of opt-out visitors says beyond their choices (gpp.py).
    gpp: GppSettings = Field(default_factory=GppSettings)

    @field_validator("country_header", "subdivision_header")
    @classmethod
    def _header(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not _FIELD_NAME.fullmatch(v):
            raise ValueError(f"{v[:80]!r} is not an HTTP header name (such as 'CF-IPCountry')")
        if v.lower() in _RESERVED:
            raise ValueError(f"{v!r} carries something else: name the header your edge sets for the region")
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> GeoSettings:
        problems: list[str] = []
        if self.rules and self.country_header is None:
            problems.append(
                "geo.country_header: required key is missing: rules need the header your CDN or proxy "
                "sets to the visitor's country (e.g. 'CF-IPCountry')"
            )
        if self.subdivision_header is not None and self.country_header is None:
            problems.append(
                "geo.country_header: required with geo.subdivision_header (a subdivision is of a country)"
            )
        if (
            self.country_header is not None
            and self.subdivision_header is not None
            and self.country_header.lower() == self.subdivision_header.lower()
        ):
            problems.append("geo.subdivision_header: the same header as geo.country_header")
        seen: dict[str, int] = {}
        groups = regions().groups
        first_group: dict[tuple[str, Model], int] = {}
        for i, rule in enumerate(self.rules):
            for place in rule.where:
                if "-" in place and self.subdivision_header is None:
                    problems.append(
                        f"geo.rules[{i}].where: {place!r} needs geo.subdivision_header "
                        "(e.g. 'CF-Region-Code'), or the rule never matches"
                    )
                if place in seen and self.rules[seen[place]].model != rule.model:
                    problems.append(
                        f"geo.rules[{i}].where: {place!r} is in geo.rules[{seen[place]}] too, "
                        "with another model"
                    )
                seen.setdefault(place, i)
            # Each group against the first rule that named each group with each model (at most two
            # groups, two models): a table of 10,000 rules is checked in linear time, not pairwise.
            for group in (p for p in rule.where if p in groups):
                for (g, model), j in first_group.items():
                    if model != rule.model and g != group and set(groups[g]) & set(groups[group]):
                        problems.append(
                            f"geo.rules[{i}].where: {group!r} overlaps {g!r} of geo.rules[{j}], "
                            "with another model: name the countries that differ instead"
                        )
                first_group.setdefault((group, rule.model), i)
        if problems:
            # A table contradicting itself on every line is named by its first few contradictions.
            more = f"; and {len(problems) - _MAX_PROBLEMS} more" if len(problems) > _MAX_PROBLEMS else ""
            raise ValueError("; ".join(problems[:_MAX_PROBLEMS]) + more)
        return self

    @cached_property
    def tables(self) -> tuple[dict[str, Model], dict[str, Model]]:
        """(country -> model, "CC-SUB" -> model): groups expanded, a country named itself winning."""
        groups = regions().groups
        countries: dict[str, Model] = {}
        subdivisions: dict[str, Model] = {}
        for rule in self.rules:
            for place in rule.where:
                if place in groups:
                    for c in groups[place]:
                        countries.setdefault(c, rule.model)
        for rule in self.rules:
            for place in rule.where:
                if "-" in place:
                    subdivisions[place] = rule.model
                elif place not in groups:
                    countries[place] = rule.model
        return countries, subdivisions

    @property
    def uses_opt_out(self) -> bool:
        """Whether any visitor can get the opt-out model (GPP and the notice are served only then)."""
        return self.default == OPT_OUT or any(r.model == OPT_OUT for r in self.rules)

    def model_for(self, region: str | None) -> Model:
        """The model of a region as `Geo.locate` spells it ("US-CA", "SE", None)."""
        if region is None:
            return self.default
        countries, subdivisions = self.tables
        found = subdivisions.get(region) if "-" in region else None
        return found or countries.get(region.partition("-")[0], self.default)


def country(value: bytes) -> str | None:
    """A country header's value as an ISO 3166-1 code, or None (missing, malformed, not a country)."""
    if len(value) > _MAX_VALUE:
        return None
    value = value.strip()
    if not _COUNTRY.fullmatch(value):
        return None
    code = value.decode("ascii").upper()
    return code if code in regions().countries else None


def subdivision(value: bytes, country_code: str) -> str | None:
    """A subdivision header's value ("CA") as its region ("US-CA"), or None. For a country whose
    subdivisions data/regions.toml lists, only a listed one; elsewhere any well-formed code."""
    if len(value) > _MAX_VALUE:
        return None
    value = value.strip()
    if not _SUBDIVISION.fullmatch(value):
        return None
    code = value.decode("ascii").upper()
    listed = regions().subdivisions.get(country_code)
    if listed is not None and code not in listed:
        return None
    return f"{country_code}-{code}"


class Geo:
    """A configured `[geo]` at run time: `locate(headers)` gives a request's region and model."""

    __slots__ = ("settings", "_country", "_subdivision", "vary")

    def __init__(self, settings: GeoSettings) -> None:
        self.settings = settings
        self._country = settings.country_header.lower().encode() if settings.country_header else None
        self._subdivision = (
            settings.subdivision_header.lower().encode() if settings.subdivision_header else None
        )
        # The request headers a response whose consent state depends on the region varies on.
        self.vary: tuple[bytes, ...] = tuple(
            h.encode() for h in (settings.country_header, settings.subdivision_header) if h and settings.rules
        )

    def locate(self, headers: Iterable[tuple[bytes, bytes]]) -> tuple[str | None, Model]:
        """(region, model): region "US-CA", "US" or None (no header, or a malformed one: `default`).
        A header sent twice is ambiguous, so it counts as missing."""
        if self._country is None:
            return None, self.settings.default
        found_country: bytes | None = None
        found_sub: bytes | None = None
        twice = False
        for name, value in headers:
            if name == self._country:
                twice = twice or found_country is not None
                found_country = value
            elif name == self._subdivision:
                if found_sub is not None:
                    found_sub = b"\x00"  # two values: neither counts
                else:
                    found_sub = value
        code = None if twice or found_country is None else country(found_country)
        if code is None:
            return None, self.settings.default
        region = code
        if found_sub is not None:
            region = subdivision(found_sub, code) or code
        return region, self.settings.model_for(region)


def region_json(region: str | None, model: str) -> dict[str, Any]:
    """What `/_consent/state` and the log's `detail` say of the jurisdiction."""
    return {"region": region, "model": model}
