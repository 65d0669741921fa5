"""The placeholder shown where a tracker's embed was blocked: its text, in the page's language.

Owns the placeholder texts and their markup; the gate asks `Placeholders.html` for one per blocked
service and language, and remembers nothing itself.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

from ..memo import Memo
from .html import Blocked

if TYPE_CHECKING:
    from ..config import ConsentConfig

# Placeholder texts shipped for the two shipped languages; config `texts.<lang>` may override
# "placeholder" and "placeholder_allow" ({service} and {category} are filled in).
PLACEHOLDER_TEXTS = {
    "en": ("Content from {service} will load once you allow {category}.", "Allow {category}"),
    "sv": ("Innehåll från {service} laddas när du tillåter {category}.", "Tillåt {category}"),
}


def placeholder_html(blocked: Blocked, language: str, texts: tuple[str, str]) -> str:
    from ..config import localized

    label = localized(blocked.category_labels, language, language) or blocked.category
    text, allow = (t.format(service=blocked.name, category=label) for t in texts)
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
        self._built: Memo[tuple[str, str], str] = Memo(1024)

    def html(self, blocked: Blocked, language: str) -> str:
        key = (blocked.service, language)
        found = self._built.get(key)
        if found is None:
            shipped = PLACEHOLDER_TEXTS.get(language, PLACEHOLDER_TEXTS["en"])
            overrides = self.config.texts.get(language, {})
            texts = (overrides.get("placeholder", shipped[0]), overrides.get("placeholder_allow", shipped[1]))
            found = self._built.put(key, placeholder_html(blocked, language, texts))
        return found
