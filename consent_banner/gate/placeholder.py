"""The placeholder shown where a tracker's embed was blocked: its text, in the page's language.

Owns the placeholder markup; its texts ("placeholder", "placeholder_allow", with {service} and
{category} filled in) are in `i18n/*.toml` with the others, overridable per language from the config.
The gate asks `Placeholders.html` for one per blocked service and language, and remembers nothing itself.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..memo import Memo
from ..texts import Texts
from .html import Blocked

if TYPE_CHECKING:
    from ..config import ConsentConfig


def placeholder_html(blocked: Blocked, label: str, texts: Mapping[str, str]) -> str:
    """The placeholder of a blocked embed, `label` naming its category in the page's language."""
    text, allow = (
        texts[key].format(service=blocked.name, category=label)
        for key in ("placeholder", "placeholder_allow")
    )
    cat = html.escape(blocked.category)
    return (
        f'<div class="consent-placeholder" data-consent-placeholder="{html.escape(blocked.service)}" '
        f'data-consent-category="{cat}"><p>{html.escape(text)}</p>'
        f'<button type="button" data-consent-allow="{cat}">{html.escape(allow)}</button></div>'
    )


class Placeholders:
    """The placeholder markup per (service, language), built once."""

    def __init__(self, config: ConsentConfig) -> None:
        self.config = config
        self.texts = Texts(config.texts, config.controller)
        self._built: Memo[tuple[str, str], str] = Memo(1024)

    def html(self, blocked: Blocked, language: str) -> str:
        key = (blocked.service, language)
        found = self._built.get(key)
        if found is None:
            label = self.config.localize(blocked.category_labels, language) or blocked.category
            found = self._built.put(key, placeholder_html(blocked, label, self.texts.of(language)))
        return found
