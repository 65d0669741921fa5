"""The banner, the preferences dialog, the settings button and the cookie declaration.

Rendered on the server from `templates/banner/` (Jinja2, autoescaped) so the banner is in the
first HTML response: no flash, no layout shift, and it works with JavaScript off (R13). The
language is negotiated by `language.Languages`, the texts come from `texts.Texts` (`i18n/*.toml`
and the config's overrides); adding a language is adding one file there and naming it in
`config.languages`.

Every HTML response carries the banner, so it is not rendered per response: Jinja2 renders it once
per (language, consent state), with markers where the per-response values go (the form token, the
forms' ids, the page to return to, the visitor's state; `splice.py`), and each response joins its
own values, escaped as the template would have, with those parts: the same bytes, for a few joins.

The browser script (`static/js/consent.js`) reads everything it needs from `data-` attributes
on the root element, so no inline JSON and no inline handlers are needed (strict CSP).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup, escape

from .catalog import catalog
from .config import NECESSARY, ConsentConfig, CookieDeclaration, Service
from .consent import Consent, consent_json
from .gpp import state_for as gpp_state
from .language import Languages
from .memo import Memo
from .splice import Markers, Spliced
from .texts import Texts
from .visitor import cookie_names

logger = logging.getLogger("consent_banner")

TEMPLATES_DIR = Path(__file__).parent / "templates" / "banner"

# Google Consent Mode v2 signals and the category each one follows when no category says
# `consent_mode` and no preset decides (R30, R31): the names the banner has always used.
CONSENT_MODE: dict[str, str] = {
    "ad_storage": "marketing",
    "ad_user_data": "marketing",
    "ad_personalization": "marketing",
    "analytics_storage": "analytics",
}
# The preset whose service gets Microsoft UET's consent call; its catalog signal (ad_storage) is
# UET's own, so it does not map Google's.
UET_PRESET = "microsoft-uet"
OWN_SERVICE = "consent-banner"  # the declaration's entry for the middleware's own two cookies
WAIT_FOR_UPDATE = 500  # milliseconds Google tags wait for the update of an undecided visitor

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


def static_dir() -> Path:
    """Where the shipped (built) consent.js and consent.css live: inside the wheel, or the repository's
    static/js, built from the readable sources in static/src by `./run build`."""
    packaged = Path(__file__).parent / "static" / "js"
    if (packaged / "consent.js").is_file():
        return packaged
    return Path(__file__).resolve().parent.parent / "static" / "js"


def safe_url(url: str | None) -> str:
    """A URL from the config, or "#" when its scheme could run code (javascript:, data:, ...)."""
    if not url:
        return "#"
    # Browsers ignore tabs, newlines and leading controls in a scheme: so does this check.
    m = _SCHEME.match(re.sub(r"[\x00-\x20]", "", url))
    if m and m.group(1).lower() not in ("http", "https", "mailto"):
        return "#"
    return url.strip()


def consent_mode_map(config: ConsentConfig) -> dict[str, str]:
    """Each Consent Mode signal and the category it follows (R30, R31). A category's own
    `consent_mode` first; then, for a category without one, its services' presets (a site's
    `statistics` holding google-analytics gets analytics_storage); then the name default
    (`analytics`, `marketing`). An unmapped signal stays denied: said once, at start, unless a
    category says `consent_mode` (the owner has decided)."""
    mapped: dict[str, str] = {}
    explicit = False
    for name, cat in config.categories.items():
        if cat.consent_mode is not None:
            explicit = True
            mapped.update(dict.fromkeys(cat.consent_mode, name))
    derived: dict[str, list[str]] = {}
    presets = catalog()
    for name, cat in config.categories.items():
        # `necessary` is granted before any decision and under GPC: it gets only what it says itself
        # (config.py allows it functionality_storage and security_storage), never a preset's signals.
        if cat.consent_mode is not None or name == NECESSARY:
            continue
        signals = [
            signal
            for s in config.services_in(name)
            if s.preset in presets and s.preset != UET_PRESET
            for signal in presets[s.preset].consent_mode
        ]
        if not signals:
            signals = [signal for signal, default in CONSENT_MODE.items() if default == name]
        for signal in dict.fromkeys(signals):
            derived.setdefault(signal, []).append(name)
    for signal, names in derived.items():
        if signal in mapped:
            continue  # a category's own key wins over presets and names
        mapped[signal] = names[0]
        if len(names) > 1:
            logger.warning(
                "Consent Mode: %s follows category %r (its presets or name also point to %s); say "
                "consent_mode = [...] in the category it belongs to",
                signal,
                names[0],
                ", ".join(repr(n) for n in names[1:]),
            )
    missing = [signal for signal in CONSENT_MODE if signal not in mapped]
    if missing and not explicit:
        logger.warning(
            "Consent Mode: %s follow no category and stay denied for every visitor: add "
            'consent_mode = ["analytics_storage"] (or the ad_* signals) to the category that covers '
            "them, declare the Google services with their preset, or say consent_mode = [] where none apply",
            ", ".join(missing),
        )
    # The order of CONSENT_MODE first, so the default reads as it always did.
    known = [s for s in CONSENT_MODE if s in mapped] + [s for s in mapped if s not in CONSENT_MODE]
    return {signal: mapped[signal] for signal in known}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


# The per-response values of the banner root, in the order `Banner._fragment` passes them. The root
# path (where the app is mounted: every URL of ours starts with it) is not one of them: it is the
# server's or the router's, one per mount, so the markup is remembered per root path, and a page
# pays no splice for it (a slot for it cost each response a tenth more).
_CSRF, _RETURN_TO, _FORM_ID, _STATE = range(4)


class Banner:
    """Renders the consent UI for one configuration; every method is cheap after __init__."""

    def __init__(self, config: ConsentConfig, *, prefix: str, signed_receipts: bool = False) -> None:
        self.config = config
        self.prefix = prefix
        self.signed_receipts = signed_receipts  # the log signs receipts: the dialog links the signed one
        directory = static_dir()
        self.script_path = directory / "consent.js"
        self.css_path = directory / "consent.css"
        self.script_hash = _digest(self.script_path)
        self.css_hash = _digest(self.css_path)
        self.script_url = f"{prefix}/consent.js?v={self.script_hash}"
        self.css_url = f"{prefix}/consent.css?v={self.css_hash}"
        # window.__gpp (gpp.js), at the top of <head> for visitors under the opt-out model only.
        self.gpp_path = directory / "gpp.js"
        self.gpp_hash = _digest(self.gpp_path)
        self.gpp_url = f"{prefix}/gpp.js?v={self.gpp_hash}"
        self.languages = Languages(config.languages)
        self.catalog = Texts(config.texts, config.controller)
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
        self.consent_mode_map = consent_mode_map(config)
        self._mode_attr = " ".join(f"{signal}:{cat}" for signal, cat in self.consent_mode_map.items())
        # Microsoft UET's consent mode follows the category of the service declared with its preset.
        self._uet = next(((s.name, s.category) for s in config.services if s.preset == UET_PRESET), None)
        self._script_src = f'{escape(self.script_url)}" defer nonce="'  # after the root path
        self._script_open = f'<script src="{self._script_src}'
        self._script_close = '" data-consent-banner></script>'
        self._markers = Markers(4)  # where the per-response values go: _CSRF, _RETURN_TO, ...
        # Keyed by language, the consent state the markup shows and the root path: at most a few per
        # language and mount on a healthy site (each distinct set of switches is one), bounded
        # whatever visitors send (the root path is the server's or the router's, not theirs).
        self._roots: Memo[Hashable, Spliced] = Memo(512)
        self._heads: Memo[Hashable, tuple[str, ...]] = Memo(256)
        self._declarations: Memo[str, str] = Memo(64)
        # A decided visitor's state carries their consent id: one entry per visitor seen lately.
        self._states: Memo[Hashable, str] = Memo(4096)

    # --- language and texts ----------------------------------------------------------------------

    def pick_language(self, html_lang: str | None, accept_language: str | None) -> str:
        """The configured language for a page's `lang` attribute, else Accept-Language (R14)."""
        return self.languages.pick(html_lang, accept_language)

    def texts(self, language: str) -> dict[str, str]:
        """Every visible text in `language`, the config's overrides applied."""
        return dict(self.catalog.of(language))

    def version(self, language: str, model: str = "opt-in") -> dict[str, Any]:
        """What the visitor read, for the log's banner versions table (R20): under the opt-out model
        the notice at collection, a version of its own (`"notice": "opt-out"`)."""
        cfg = self.config
        notice = {"notice": "opt-out"} if model == "opt-out" else {}
        return {
            **notice,
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
        """Consent Mode signals for a consent state: the four of v2 always (unmapped: denied), and
        any other a category claims. Undecided: denied, but for a signal `necessary` claims."""
        mapping = self.consent_mode_map
        signals = [*CONSENT_MODE, *(s for s in mapping if s not in CONSENT_MODE)]
        return {signal: self._granted(consent, mapping.get(signal)) for signal in signals}

    @staticmethod
    def _granted(consent: Consent, category: str | None) -> str:
        # Under opt-out an undecided visitor's optional categories are allowed (GPC aside): granted.
        before = consent.decided or consent.model == "opt-out" or category == NECESSARY
        if category is not None and before and consent.allows(category):
            return "granted"
        return "denied"

    def head_html(self, consent: Consent, *, nonce: str, root_path: str = "") -> str:
        """Consent Mode default before any Google tag (R30), and the banner stylesheet (its URL under
        `root_path`, where the app is mounted); first, for a visitor under the opt-out model,
        window.__gpp (gpp.js) with its answer."""
        # Consent Mode follows the categories granted, under the GPC signal: remembered by those.
        key = (
            consent.decided,
            consent.model,
            consent.granted,
            consent.gpc,
            consent.gpc_denied if consent.gpc else None,
            self._uet is not None and consent.services.get(self._uet[0], True),  # its own switch
            root_path,
            consent.opted_out,  # these two: the GPP answer of an opt-out visitor (gpp.js)
            consent.dismissed,
        )
        parts = self._heads.get(key)
        if parts is None:
            state: dict[str, object] = dict(self.consent_mode(consent))
            if not consent.decided:
                state["wait_for_update"] = WAIT_FOR_UPDATE
            # The JSON holds only validated signal names and "granted"/"denied": nothing to escape.
            uet = ""
            if self._uet is not None:
                # UET's consent mode (ad_storage only), in the same nonce'd script; the browser script
                # sends the update after a decision (data-uet on the banner root).
                name, category = self._uet
                on = self._granted(consent, category) if consent.services.get(name, True) else "denied"
                ad = json.dumps({"ad_storage": on}, separators=(",", ":"))
                uet = f"window.uetq=window.uetq||[];uetq.push('consent','default',{ad});"
            gpp = gpp_state(consent, self.config)
            # window.__gpp first, so it answers any tag below; its answer in its own element (escaped).
            gpp_script = (
                (
                    f'<script src="{escape(root_path + self.gpp_url)}" nonce="',
                    f'" data-gpp="{escape(json.dumps(gpp, separators=(",", ":")))}"></script>',
                )
                if gpp is not None
                else ("",)
            )
            parts = self._heads.put(
                key,
                (
                    *gpp_script[:-1],
                    gpp_script[-1] + '<script nonce="',
                    '">window.dataLayer=window.dataLayer||[];function gtag(){dataLayer.push(arguments)}'
                    f"gtag('consent','default',{json.dumps(state, separators=(',', ':'))});{uet}</script>"
                    f'<link rel="stylesheet" href="{escape(root_path + self.css_url)}" nonce="',
                    '">',
                ),
            )
        return str(escape(nonce)).join(parts)  # str: Markup.join would escape the parts

    def body_html(
        self,
        consent: Consent,
        *,
        language: str,
        nonce: str,
        csrf_token: str,
        return_to: str,
        root_path: str = "",
    ) -> str:
        """Banner (when undecided), dialog, settings button and the deferred script; every URL of ours
        under `root_path` (where the app is mounted); `return_to` is the page as the browser has it."""
        root = self.fragment(
            consent, language=language, csrf_token=csrf_token, return_to=return_to, root_path=root_path
        )
        opening = f'<script src="{escape(root_path)}{self._script_src}' if root_path else self._script_open
        return f"{root}{opening}{escape(nonce)}{self._script_close}"

    def fragment(
        self, consent: Consent, *, language: str, csrf_token: str, return_to: str, root_path: str = ""
    ) -> str:
        """The banner root element alone: for `GET {prefix}/banner` and embedded sites."""
        # The forms' ids differ per page: markup reflected into the page could otherwise name
        # them (`<button form=...>`, `<input form=...>`, or a form of the same id placed first)
        # and submit the banner's form, with the visitor's token, carrying its own fields.
        form_id = secrets.token_urlsafe(9)
        return self._fragment(consent, language, csrf_token, return_to, form_id, root_path=root_path)

    def declaration(self, language: str) -> str:
        """The cookie declaration table (R5): every declared cookie with its service and purpose."""
        found = self._declarations.get(language)
        if found is None:
            found = self._declarations.put(
                language,
                self._declaration.render(
                    t=self.catalog.of(language),
                    language=language,
                    categories=self._categories(language, None),
                ),
            )
        return found

    def _fragment(
        self,
        consent: Consent,
        language: str,
        csrf_token: str,
        return_to: str,
        form_id: str,
        *,
        root_path: str = "",
    ) -> str:
        """The root as remembered for its language and state, this response's values spliced in."""
        choices = _choices(consent)
        key = (language, choices, root_path)
        spliced = self._roots.get(key)
        if spliced is None:
            m = self._markers.markers
            rendered = self._render(
                consent, language, m[_CSRF], m[_RETURN_TO], m[_FORM_ID], m[_STATE], root_path=root_path
            )
            spliced = self._roots.put(key, self._markers.cut(rendered))
        values = [""] * 4
        values[_CSRF] = escape(csrf_token)
        values[_RETURN_TO] = escape(return_to)
        values[_FORM_ID] = escape(form_id)
        state_key = (consent.id, choices)
        state = self._states.get(state_key)
        if state is None:
            state = self._states.put(state_key, escape(self._state(consent)))
        values[_STATE] = state
        return spliced.fill(values)

    def _render(
        self,
        consent: Consent,
        language: str,
        csrf_token: str,
        return_to: str,
        form_id: str,
        state: str,
        *,
        root_path: str = "",
    ) -> str:
        """The root rendered by Jinja2 from these values: what `_fragment` must equal, byte for byte."""
        context = self._context(consent, language, csrf_token, return_to, form_id, state, root_path)
        return self._root.render(context)

    def _state(self, consent: Consent) -> str:
        # the same shape as GET {prefix}/state, so the script has one state format
        state = consent_json(consent, self.config.policy_revision, gpp_state(consent, self.config))
        return json.dumps(state, separators=(",", ":"))

    def _context(
        self,
        consent: Consent,
        language: str,
        csrf_token: str,
        return_to: str,
        form_id: str,
        state: str,
        root_path: str,
    ) -> dict[str, Any]:
        cfg = self.config
        prefix = root_path + self.prefix  # the URL the forms post to and the script fetches from
        return {
            "t": self.catalog.of(language),
            "language": language,
            "prefix": prefix,
            "consent": consent,
            "renew": _renew(cfg, consent),
            "csrf_token": csrf_token,
            "return_to": return_to,
            "form_id": form_id,
            "categories": self._categories(language, consent),
            "purposes": [
                cfg.localize(cat.label, language) for name, cat in cfg.categories.items() if name != NECESSARY
            ],
            "privacy_policy_url": cfg.privacy_policy_url,
            "recipients_url": self.recipients_url,
            "do_not_sell": cfg.do_not_sell_link,
            "notice": consent.model == "opt-out" and not consent.decided,
            "signed_receipt": self.signed_receipts,
            "data": {
                "prefix": prefix,
                "lang": language,
                "state": state,
                "gpc-denied": " ".join(sorted(cfg.gpc_denied)),
                "consent-mode": self._mode_attr,
                "css": root_path + self.css_url,
                # csp_undecided = "strict": the undecided page's enforced policy admits only what is
                # granted, so the script reloads the page after a decision that grants more
                "strict": "1" if cfg.csp_undecided == "strict" and cfg.csp == "enforce" else "",
                # Microsoft UET declared: its ad_storage follows its category and switch (as in the
                # head script), sent by the script after each decision; absent otherwise (no uetq)
                **({"uet": f"ad_storage:{self._uet[1]}:{self._uet[0]}"} if self._uet is not None else {}),
            },
        }

    def _categories(self, language: str, consent: Consent | None) -> list[dict[str, Any]]:
        cfg = self.config
        out = []
        for name, cat in cfg.categories.items():
            necessary = name == NECESSARY
            out.append(
                {
                    "name": name,
                    "label": cfg.localize(cat.label, language),
                    "description": cfg.localize(cat.description, language) if cat.description else "",
                    "necessary": necessary,
                    "checked": necessary or _category_on(name, consent),
                    # GPC denies these whatever is ticked (R26): say so rather than pretend.
                    "locked_by_gpc": _locked_by_gpc(name, consent, cfg.gpc_denied),
                    "services": [self._service(s, consent, language) for s in cfg.services_in(name)]
                    + (self._own_service(language) if necessary else []),
                }
            )
        return out

    def _own_service(self, language: str) -> list[dict[str, Any]]:
        """The cookies the middleware itself sets, unless the config already declares them (R5)."""
        t = self.catalog.of(language)
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
        t = self.catalog.of(language)
        purpose = self.config.localize(s.purpose, language)
        return {
            "name": s.name,
            "provider": s.provider,
            "purpose": purpose,
            "privacy_url": s.privacy_url,
            "switch": s.switch,
            "checked": _service_on(s, consent),
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


def _choices(consent: Consent) -> Hashable:
    """All of a consent the banner's markup and state show, but its id: what they are remembered by."""
    services = frozenset(consent.services.items()) if consent.services else None
    return (
        consent.decided,
        consent.model,
        consent.region,  # in the state the script reads
        consent.dismissed,
        consent.granted,
        consent.gpc,
        consent.gpc_denied if consent.gpc else None,
        services,
        consent.new_services,
    )


def _renew(config: ConsentConfig, consent: Consent) -> list[str]:
    """The services declared since a decision that would now run on it, named: the banner asks again.
    A new service of a category the visitor refused changes nothing for them, so it does not ask."""
    if not consent.new_services:
        return []
    return [
        f"{s.name} ({s.provider})" if s.provider else s.name
        for s in config.services
        if s.name in consent.new_services and consent.allows(s.category)
    ]


def _category_on(name: str, consent: Consent | None) -> bool:
    # Under opt-out an undecided visitor's categories are on until they opt out (geo.py).
    return consent is not None and (consent.decided or consent.model == "opt-out") and consent.allows(name)


def _locked_by_gpc(name: str, consent: Consent | None, gpc_denied: frozenset[str]) -> bool:
    return consent is not None and consent.gpc and name in gpc_denied


def _service_on(s: Service, consent: Consent | None) -> bool:
    before = consent is not None and (consent.decided or consent.model == "opt-out")
    return before and consent is not None and consent.allows_service(s.name, s.category)


def _count(text: str, n: int) -> str:
    """A text of the form "{n} day|{n} days" (one|many) for n; a text without "|" serves both."""
    one, _, many = text.partition("|")
    return (one if n == 1 or not many else many).replace("{n}", str(n))


def _lifetime(texts: Mapping[str, str], cookie: CookieDeclaration) -> str:
    """A cookie's declared lifetime ("13 months", "1 y", "session") in the visitor's language."""
    parts = cookie.lifetime_parts
    if parts is None:
        return texts["session"]
    n, unit, _ = parts
    return _count(texts[unit], n)


def data_attrs(data: dict[str, str]) -> Markup:
    """`data-` attributes of the root element, escaped."""
    return Markup(" ").join(Markup('data-{}="{}"').format(k, v) for k, v in data.items())
