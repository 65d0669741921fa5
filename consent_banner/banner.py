"""The banner, the preferences dialog, the settings button and the cookie declaration.

Rendered on the server from `templates/banner/` (Jinja2, autoescaped) so the banner is in the
first HTML response: no flash, no layout shift, and it works with JavaScript off (R13). The
texts come from `i18n/<language>.toml`, overridden per language by `config.texts[language]`;
adding a language is adding one file there and naming it in `config.languages`.

The browser script (`static/js/consent.js`) reads everything it needs from `data-` attributes
on the root element, so no inline JSON and no inline handlers are needed (strict CSP).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup, escape

from .config import NECESSARY, ConsentConfig, CookieDeclaration, Service
from .consent import Consent, consent_json
from .visitor import cookie_names

I18N_DIR = Path(__file__).parent / "i18n"
TEMPLATES_DIR = Path(__file__).parent / "templates" / "banner"
FALLBACK_LANGUAGE = "en"  # the shipped file every other language falls back to, key by key

# Google Consent Mode v2 signals and the category each one follows (R30, R31).
CONSENT_MODE: dict[str, str] = {
    "ad_storage": "marketing",
    "ad_user_data": "marketing",
    "ad_personalization": "marketing",
    "analytics_storage": "analytics",
}
OWN_SERVICE = "consent-banner"  # the declaration's entry for the middleware's own two cookies
WAIT_FOR_UPDATE = 500  # milliseconds Google tags wait for the update of an undecided visitor

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
# Accept-Language (RFC 9110 12.5.4): each part is matched on its own, whitespace already stripped,
# so no pattern ever sees more than one range or one weight and none can backtrack across them.
_LANGUAGE_RANGE = re.compile(r"[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*|\*")
_QVALUE = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")
MAX_ACCEPT_LANGUAGE = 1024  # characters of the header considered; real ones are under 200
MAX_LANGUAGE_RANGES = 32  # ranges considered, in the order sent


def static_dir() -> Path:
    """Where the shipped (built) consent.js and consent.css live: inside the wheel, or the repository's
    static/js, built from the readable sources in static/src by `./run build`."""
    packaged = Path(__file__).parent / "static" / "js"
    if (packaged / "consent.js").is_file():
        return packaged
    return Path(__file__).resolve().parent.parent / "static" / "js"


@cache
def shipped_texts(language: str) -> dict[str, str]:
    """The texts of `i18n/<language>.toml` ({} when the language ships no file)."""
    path = I18N_DIR / f"{language}.toml"
    if not path.is_file():
        return {}
    with path.open("rb") as f:
        data = tomllib.load(f)
    return {str(k): str(v) for k, v in data.items()}


def shipped_languages() -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in I18N_DIR.glob("*.toml")))


def safe_url(url: str | None) -> str:
    """A URL from the config, or "#" when its scheme could run code (javascript:, data:, ...)."""
    if not url:
        return "#"
    # Browsers ignore tabs, newlines and leading controls in a scheme: so does this check.
    m = _SCHEME.match(re.sub(r"[\x00-\x20]", "", url))
    if m and m.group(1).lower() not in ("http", "https", "mailto"):
        return "#"
    return url.strip()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def parse_accept_language(header: str | None) -> list[str]:
    """Language tags of an Accept-Language header, best first (q=0 and malformed ranges dropped).

    Linear in the header and bounded: only the first MAX_ACCEPT_LANGUAGE characters and the first
    MAX_LANGUAGE_RANGES ranges count, and a range cut by the first limit is dropped, never misread.
    """
    if not header:
        return []
    parts = header[:MAX_ACCEPT_LANGUAGE].split(",", MAX_LANGUAGE_RANGES)
    if len(header) > MAX_ACCEPT_LANGUAGE and len(parts) <= MAX_LANGUAGE_RANGES:
        parts.pop()  # runs past the limit: its end was not read
    items = parts[:MAX_LANGUAGE_RANGES]
    ranked: list[tuple[float, int, str]] = []
    for i, item in enumerate(items):
        tag, *params = item.split(";")
        tag = tag.strip()
        if not _LANGUAGE_RANGE.fullmatch(tag):
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() != "q" or not _QVALUE.fullmatch(value.strip()):
                break
            q = float(value)
        else:
            if q > 0:
                ranked.append((-q, i, tag))
    return [tag for _, _, tag in sorted(ranked)]


class Banner:
    """Renders the consent UI for one configuration; every method is cheap after __init__."""

    def __init__(self, config: ConsentConfig, *, prefix: str) -> None:
        self.config = config
        self.prefix = prefix
        directory = static_dir()
        self.script_path = directory / "consent.js"
        self.css_path = directory / "consent.css"
        self.script_hash = _digest(self.script_path)
        self.css_hash = _digest(self.css_path)
        self.script_url = f"{prefix}/consent.js?v={self.script_hash}"
        self.css_url = f"{prefix}/consent.css?v={self.css_hash}"
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
            autoescape=True,
            trim_blocks=True,
            lstrip_blocks=True,
            undefined=jinja2.StrictUndefined,
        )
        self._env.filters["safe_url"] = safe_url
        self._env.globals["data_attrs"] = data_attrs
        self._root = self._env.get_template("root.html")
        self._declaration = self._env.get_template("declaration.html")
        self._texts = {lang: self._build_texts(lang) for lang in config.languages}
        self._mode_attr = " ".join(
            f"{signal}:{cat}" for signal, cat in CONSENT_MODE.items() if cat in config.categories
        )

    # --- language and texts ----------------------------------------------------------------------

    def pick_language(self, html_lang: str | None, accept_language: str | None) -> str:
        """The configured language for a page's `lang` attribute, else Accept-Language (R14)."""
        configured = {lang.lower(): lang for lang in self.config.languages}
        primaries: dict[str, str] = {}
        for lang in self.config.languages:
            primaries.setdefault(lang.split("-")[0].lower(), lang)
        candidates = ([html_lang.strip()] if html_lang and html_lang.strip() else []) + parse_accept_language(
            accept_language
        )
        for tag in candidates:
            t = tag.lower()
            if t in configured:
                return configured[t]
            if t.split("-")[0] in primaries:
                return primaries[t.split("-")[0]]
        return self.config.default_language

    def texts(self, language: str) -> dict[str, str]:
        """Every string of the first layer and the dialog, the config's overrides applied."""
        if language not in self._texts:
            self._texts[language] = self._build_texts(language)
        return dict(self._texts[language])

    def _build_texts(self, language: str) -> dict[str, str]:
        primary = language.split("-")[0]
        texts = dict(shipped_texts(FALLBACK_LANGUAGE))
        texts.update(shipped_texts(primary))
        if primary != language:
            texts.update(shipped_texts(language))
        overrides = self.config.texts
        texts.update(overrides.get(primary, {}))
        if primary != language:
            texts.update(overrides.get(language, {}))
        return {k: v.replace("{controller}", self.config.controller) for k, v in texts.items()}

    def version(self, language: str) -> dict[str, Any]:
        """What the visitor read, for the log's banner versions table (R20)."""
        cfg = self.config
        return {
            "language": language,
            "revision": cfg.policy_revision,
            "config_hash": cfg.config_hash,
            "texts": self.texts(language),
            "categories": [
                {
                    "name": name,
                    "label": cfg.localize(cat.label, language),
                    "description": cfg.localize(cat.description, language) if cat.description else "",
                }
                for name, cat in cfg.categories.items()
            ],
            "services": [s.model_dump(mode="json") for s in cfg.services],
            "privacy_policy_url": cfg.privacy_policy_url,
            "recipients_url": self.recipients_url,
        }

    @property
    def recipients_url(self) -> str:
        return self.config.recipients_url or f"{self.config.privacy_policy_url.split('#')[0]}#recipients"

    # --- HTML -----------------------------------------------------------------------------------

    def consent_mode(self, consent: Consent) -> dict[str, str]:
        """Consent Mode v2 signals for a consent state (undecided: every signal denied)."""
        return {
            signal: "granted"
            if consent.decided and cat in self.config.categories and consent.allows(cat)
            else "denied"
            for signal, cat in CONSENT_MODE.items()
        }

    def head_html(self, consent: Consent, *, nonce: str) -> str:
        """Consent Mode default before any Google tag (R30), and the banner stylesheet."""
        state: dict[str, object] = dict(self.consent_mode(consent))
        if not consent.decided:
            state["wait_for_update"] = WAIT_FOR_UPDATE
        n = escape(nonce)
        # The JSON holds only fixed signal names and "granted"/"denied": nothing to escape.
        return (
            f'<script nonce="{n}">window.dataLayer=window.dataLayer||[];'
            "function gtag(){dataLayer.push(arguments)}"
            f"gtag('consent','default',{json.dumps(state, separators=(',', ':'))});</script>"
            f'<link rel="stylesheet" href="{escape(self.css_url)}" nonce="{n}">'
        )

    def body_html(
        self, consent: Consent, *, language: str, nonce: str, csrf_token: str, return_to: str
    ) -> str:
        """Banner (when undecided), dialog, settings button and the deferred script."""
        script = f'<script src="{escape(self.script_url)}" defer nonce="{escape(nonce)}" data-consent-banner>'
        return self.fragment(consent, language=language, csrf_token=csrf_token, return_to=return_to) + (
            script + "</script>"
        )

    def fragment(self, consent: Consent, *, language: str, csrf_token: str, return_to: str) -> str:
        """The banner root element alone: for `GET {prefix}/banner` and embedded sites."""
        return self._root.render(self._context(consent, language, csrf_token, return_to))

    def declaration(self, language: str) -> str:
        """The cookie declaration table (R5): every declared cookie with its service and purpose."""
        t = self.texts(language)
        return self._declaration.render(t=t, language=language, categories=self._categories(language, None))

    def _context(self, consent: Consent, language: str, csrf_token: str, return_to: str) -> dict[str, Any]:
        cfg = self.config
        return {
            "t": self.texts(language),
            "language": language,
            "prefix": self.prefix,
            "consent": consent,
            "csrf_token": csrf_token,
            "return_to": return_to,
            # The forms' ids differ per page: markup reflected into the page could otherwise name
            # them (`<button form=...>`, `<input form=...>`, or a form of the same id placed first)
            # and submit the banner's form, with the visitor's token, carrying its own fields.
            "form_id": secrets.token_urlsafe(9),
            "categories": self._categories(language, consent),
            "purposes": [
                cfg.localize(cat.label, language) for name, cat in cfg.categories.items() if name != NECESSARY
            ],
            "privacy_policy_url": cfg.privacy_policy_url,
            "recipients_url": self.recipients_url,
            "do_not_sell": cfg.do_not_sell_link,
            "data": {
                "prefix": self.prefix,
                "lang": language,
                # the same shape as GET {prefix}/state, so the script has one state format
                "state": json.dumps(consent_json(consent, cfg.policy_revision), separators=(",", ":")),
                "gpc-denied": " ".join(sorted(cfg.gpc_denied)),
                "consent-mode": self._mode_attr,
                "css": self.css_url,
                # csp_undecided = "strict": the undecided page's enforced policy admits only what is
                # granted, so the script reloads the page after a decision that grants more
                "strict": "1" if cfg.csp_undecided == "strict" and cfg.csp == "enforce" else "",
            },
        }

    def _categories(self, language: str, consent: Consent | None) -> list[dict[str, Any]]:
        cfg = self.config
        out = []
        for name, cat in cfg.categories.items():
            necessary = name == NECESSARY
            on = necessary or (consent is not None and consent.decided and consent.allows(name))
            out.append(
                {
                    "name": name,
                    "label": cfg.localize(cat.label, language),
                    "description": cfg.localize(cat.description, language) if cat.description else "",
                    "necessary": necessary,
                    "checked": on,
                    # GPC denies these whatever is ticked (R26): say so rather than pretend.
                    "locked_by_gpc": consent is not None and consent.gpc and name in cfg.gpc_denied,
                    "services": [self._service(s, consent, language) for s in cfg.services_in(name)]
                    + (self._own_service(language) if necessary else []),
                }
            )
        return out

    def _own_service(self, language: str) -> list[dict[str, Any]]:
        """The cookies the middleware itself sets, unless the config already declares them (R5)."""
        t = self.texts(language)
        c = self.config.cookie
        plain, https = cookie_names(c)  # listed as a visitor over https holds them (__Host- where possible)
        own = [
            (https.consent, plain.consent, _count(t["days"], c.lifetime_days), t["consent_cookie_purpose"]),
            (https.csrf, plain.csrf, t["session"], t["csrf_cookie_purpose"]),
        ]
        cookies = [
            {"name": name, "lifetime": lifetime, "domain": c.domain, "purpose": purpose}
            for name, configured, lifetime, purpose in own
            if self.config.category_for_cookie(configured) is None
        ]
        if not cookies:
            return []
        return [
            {
                "name": OWN_SERVICE,
                "provider": self.config.controller,
                "purpose": t["own_service_purpose"],
                "privacy_url": None,
                "switch": False,
                "checked": True,
                "cookies": cookies,
            }
        ]

    def _service(self, s: Service, consent: Consent | None, language: str) -> dict[str, Any]:
        on = consent is not None and consent.decided and consent.allows_service(s.name, s.category)
        t = self.texts(language)
        purpose = self.config.localize(s.purpose, language)
        return {
            "name": s.name,
            "provider": s.provider,
            "purpose": purpose,
            "privacy_url": s.privacy_url,
            "switch": s.switch,
            "checked": on,
            "cookies": [
                {
                    "name": c.name,
                    "lifetime": _lifetime(t, c),
                    "domain": c.domain or "",
                    "purpose": (self.config.localize(c.purpose, language) if c.purpose else "") or purpose,
                }
                for c in s.cookies
            ],
        }


def _count(text: str, n: int) -> str:
    """A text of the form "{n} day|{n} days" (one|many) for n; a text without "|" serves both."""
    one, _, many = text.partition("|")
    return (one if n == 1 or not many else many).replace("{n}", str(n))


def _lifetime(texts: dict[str, str], cookie: CookieDeclaration) -> str:
    """A cookie's declared lifetime ("13 months", "1 y", "session") in the visitor's language."""
    parts = cookie.lifetime_parts
    if parts is None:
        return texts["session"]
    n, unit, _ = parts
    return _count(texts[unit], n)


def data_attrs(data: dict[str, str]) -> Markup:
    """`data-` attributes of the root element, escaped."""
    return Markup(" ").join(Markup('data-{}="{}"').format(k, v) for k, v in data.items())
