"""The catalog of services (presets): consent_banner/data/services.toml, read once.

`[[services]] name = "ga", preset = "google-analytics", category = "statistics"` in consent.toml
takes the preset's provider, purpose, privacy_url, category, origins, cookies, inline signatures and
whether it is a loader, each replaced by the service's own key where it gives one (`resolve`, called
by config.Service's validator, so the config, its hash and the banner versions hold the resolved
values). What a service cannot say in consent.toml (its Consent Mode signals, its Open Cookie
Database platforms) stays here, on `Preset`, for whoever needs it. This module knows nothing of
config.py (no cycle).
"""

from __future__ import annotations

import difflib
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from .display import escape_controls

DATA = "services.toml"
# The keys a preset gives a `[[services]]` entry, in the order `toml_block` prints them.
SERVICE_KEYS = ("category", "provider", "purpose", "privacy_url", "origins", "cookies", "inline", "loader")
_OWN_KEYS = {"docs", "consent_mode", "ocd", "ocd_differs"}


class UnknownPreset(ValueError):
    """A preset name the catalog does not have; the message names the closest ones."""

    def __init__(self, name: str) -> None:
        near = closest(name)
        hint = f": did you mean {', '.join(repr(n) for n in near)}?" if near else ""
        super().__init__(
            f"unknown preset {name!r}{hint} (`consent-banner presets` lists the {len(catalog())} presets)"
        )
        self.name = name
        self.closest = near


@dataclass(frozen=True)
class Preset:
    """One catalog entry."""

    name: str
    docs: str  # the vendor's documentation the entry was written from
    service: Mapping[str, Any]  # the SERVICE_KEYS values, as consent.toml would write them
    consent_mode: tuple[str, ...]  # Consent Mode signals the service needs granted
    ocd: tuple[str, ...]  # Open Cookie Database platforms describing its cookies
    ocd_differs: str | None  # why its category is laxer than the database's, where it is

    @property
    def category(self) -> str:
        return str(self.service["category"])

    @property
    def provider(self) -> str:
        return str(self.service.get("provider", ""))

    @property
    def origins(self) -> tuple[str, ...]:
        return tuple(self.service.get("origins", ()))

    @property
    def cookies(self) -> tuple[Mapping[str, Any], ...]:
        return tuple(self.service.get("cookies", ()))

    @property
    def inline(self) -> tuple[str, ...]:
        """Substrings of the official inline snippet."""
        return tuple(self.service.get("inline", ()))

    @property
    def loader(self) -> bool:
        """Whether the snippet builds further <script src> elements at run time."""
        return bool(self.service.get("loader", False))


@cache
def catalog() -> dict[str, Preset]:
    """Every preset by name, in the data file's order."""
    text = resources.files("consent_banner").joinpath("data", DATA).read_text(encoding="utf-8")
    presets: dict[str, Preset] = {}
    for name, entry in tomllib.loads(text).items():
        unknown = set(entry) - set(SERVICE_KEYS) - _OWN_KEYS
        if unknown or "category" not in entry or "docs" not in entry:
            # The file ships with the package: a mistake in it is ours, found by the tests.
            raise RuntimeError(f"{DATA}: [{name}] has unknown keys {sorted(unknown)} or lacks category/docs")
        presets[name] = Preset(
            name=name,
            docs=entry["docs"],
            service={k: entry[k] for k in SERVICE_KEYS if k in entry},
            consent_mode=tuple(entry.get("consent_mode", ())),
            ocd=tuple(entry.get("ocd", ())),
            ocd_differs=entry.get("ocd_differs"),
        )
    return presets


def closest(name: str, n: int = 3) -> list[str]:
    """The preset names nearest to a misspelt one (difflib), best first."""
    return difflib.get_close_matches(name.lower(), list(catalog()), n=n, cutoff=0.5)


def preset(name: str) -> Preset:
    """The preset called `name`; UnknownPreset naming the closest ones otherwise."""
    found = catalog().get(name)
    if found is None:
        raise UnknownPreset(name)
    return found


def resolve(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A `[[services]]` entry with `preset = NAME` filled in from the catalog: every key the entry
    gives wins, whole (a `cookies` list replaces the preset's list, it is not merged into it);
    `name` defaults to the preset's name. Entries without a preset come back unchanged."""
    name = entry.get("preset")
    if not isinstance(name, str):
        return dict(entry)  # absent, or not a string: the model's own validation says so
    found = preset(name.strip())
    resolved: dict[str, Any] = {"name": found.name, **found.service}
    resolved.update(entry)
    return resolved


def toml_value(value: Any) -> str:
    """A TOML value for what the catalog holds (strings, booleans, lists, tables of those)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        # JSON's escapes are TOML's; TOML also wants DEL and the other controls escaped.
        return escape_controls(json.dumps(value, ensure_ascii=False))
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {type(value).__name__}")


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() and key.isascii() else toml_value(key)


def toml_block(name: str) -> str:
    """The `[[services]]` block a preset stands for, every value written out, ready to paste into
    consent.toml and edit; the catalog's own facts follow as comments."""
    p = preset(name)
    lines = [
        f"# preset {p.name}: the same as "
        f"`[[services]] name = {toml_value(p.name)}, preset = {toml_value(p.name)}`",
        f"# from {escape_controls(p.docs)}",
        "[[services]]",
        f"name = {toml_value(p.name)}",
    ]
    for key in SERVICE_KEYS:
        if key not in p.service:
            continue
        value = p.service[key]
        if key == "cookies" and value:
            lines.append("cookies = [")
            lines += [f"    {toml_value(c)}," for c in value]
            lines.append("]")
        else:
            lines.append(f"{key} = {toml_value(value)}")
    if p.consent_mode:
        lines.append(f"# consent mode: {', '.join(p.consent_mode)}")
    return "\n".join(lines) + "\n"
