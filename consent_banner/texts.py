"""Every text a visitor reads, per language: the one place the banner, the placeholders and the receipt ask.

The texts ship in `i18n/<language>.toml`, one flat table per language holding every visible text: the
banner, the preferences dialog, the cookie declaration, the placeholder of a blocked embed
(`placeholder*`), the visitor's receipt (`receipt_*`) and the script's messages. English is the
fallback, key by key, so a language is one more file, and a file that lacks a key still shows
something. A consent.toml overrides any of them per language (`[texts.sv] accept_all = "..."`); its
keys are checked against English's when the config loads (`ConsentConfig`), so a misspelt key is an
error, not an override that silently never shows. "{controller}" in any text is the config's
controller.

For language `sv-FI` the layers are, each over the last: en.toml, sv.toml, sv-FI.toml, `[texts.sv]`,
`[texts.sv-FI]`.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path

from .memo import Memo

I18N_DIR = Path(__file__).parent / "i18n"
FALLBACK_LANGUAGE = "en"  # the shipped file every other language falls back to, key by key

_files: Memo[Path, Mapping[str, str]] = Memo(64)  # a file's texts, read once


def shipped_texts(language: str) -> dict[str, str]:
    """The texts of `i18n/<language>.toml` ({} when the language ships no file)."""
    path = I18N_DIR / f"{language}.toml"
    found = _files.get(path)
    if found is None:
        data: dict[str, object] = {}
        if path.is_file():
            with path.open("rb") as f:
                data = tomllib.load(f)
        found = _files.put(path, {str(k): str(v) for k, v in data.items()})
    return dict(found)


def shipped_languages() -> tuple[str, ...]:
    """The languages with a file in `i18n/`, the fallback first."""
    others = sorted(p.stem for p in I18N_DIR.glob("*.toml") if p.stem != FALLBACK_LANGUAGE)
    return (FALLBACK_LANGUAGE, *others)


# Keys an earlier release shipped: a consent.toml that still overrides one keeps loading (an upgrade
# must not stop a site), with a warning saying why the text is no longer shown.
RETIRED_KEYS: dict[str, str] = {
    "withdraw_button": "there is no withdraw button any more: Reject all in the reopened choices withdraws",
}


def text_keys() -> frozenset[str]:
    """The keys a `[texts.<lang>]` table may set: those of the fallback file."""
    return frozenset(shipped_texts(FALLBACK_LANGUAGE))


class Texts:
    """The texts of one configuration (its overrides and controller) per language, built once each.

    `texts.of("sv")` is a shared mapping: read it, do not change it.
    """

    __slots__ = ("overrides", "controller", "_built")

    def __init__(
        self, overrides: Mapping[str, Mapping[str, str]] | None = None, controller: str = ""
    ) -> None:
        self.overrides = overrides or {}
        self.controller = controller
        # Keyed by the language asked for: configured ones, or whatever a caller passes (bounded).
        self._built: Memo[str, Mapping[str, str]] = Memo(64)

    def of(self, language: str) -> Mapping[str, str]:
        found = self._built.get(language)
        if found is None:
            found = self._built.put(language, self._build(language))
        return found

    def _build(self, language: str) -> dict[str, str]:
        layers = [FALLBACK_LANGUAGE, language.split("-")[0], language]
        texts: dict[str, str] = {}
        for lang in dict.fromkeys(layers):  # each once, in order
            texts.update(shipped_texts(lang))
        for lang in dict.fromkeys(layers[1:]):
            texts.update(self.overrides.get(lang, {}))
        return {k: v.replace("{controller}", self.controller) for k, v in texts.items()}
