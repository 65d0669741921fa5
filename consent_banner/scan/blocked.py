"""`log blocked --suggest`: TOML for the origins a site's CSP reports name, to paste into consent.toml.

Adopting a site under `csp = "report-only"` collects what an enforced policy would block. Each
reported origin is judged against the config (the scanner's `origin_matches`): declared by a service
already (blocked because the visitor had not granted its category: nothing to add), a host a service
declares under another scheme or port (add the origin to that service's `origins`), or unknown (a
new `[[services]]` block per host). A new block takes its category from the Open Cookie Database
(scan/suggest.py) when it knows the host, and never `necessary` from a guess: a host it does not
know, or knows only as functional or necessary, gets `category = "TODO"`, which the config refuses
until a person decides. A host of one preset of the catalog (catalog.py) is proposed as that preset,
under the same rule for its category.

Reports are unauthenticated: anyone can post one naming any origin. So an origin counts only when
at least `min_clients` distinct client networks (truncate_ip) reported it, and only an origin that
consent.toml accepts verbatim (http or https, a DNS host or an IP address, no wildcard) is ever
written, every value quoted; nothing a report carries reaches a comment unchecked. The result is
valid TOML whatever the log holds.

Reports of inline scripts refused as script elements (blocked "inline" under script-src or
script-src-elem) from at least INLINE_MIN_CLIENTS networks, whatever --min-clients says, recommend
`inline_scripts = "nonce"` (as a comment: a top-level key cannot be pasted after the tables); event
handlers (script-src-attr) never do, a nonce cannot admit them.
"""

from __future__ import annotations

import ipaddress
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

from pydantic import TypeAdapter, ValidationError

from .. import catalog
from ..catalog import toml_value as _q  # the one TOML value writer
from ..config import NECESSARY, TODO, ConsentConfig, Origin, Service
from ..log.results import BlockedOrigin
from .classify import origin_matches
from .suggest import database, map_category, preset_matches, slug

DEFAULT_MIN_CLIENTS = 3
# The fewest client networks whose reports of refused inline scripts make it recommend
# inline_scripts = "nonce", whatever --min-clients says: that setting weakens the policy for every
# visitor, and one client (or two networks of one person: home and phone) must not bring it about.
# A site whose own inline scripts are refused is reported by every visitor's browser, so three
# networks cost a genuine case nothing.
INLINE_MIN_CLIENTS = 3
_ORIGIN = TypeAdapter(Origin)
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DNS_HOST = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_DIRECTIVE = re.compile(r"[a-z][a-z-]{0,39}")  # as gate/csp.py reads one from a report
# What a report names instead of an origin (gate/csp.py), and what to do about each.
KEYWORDS = {
    "inline": "inline scripts or event handlers (onclick=...): give each inline <script> the "
    "page's nonce (csp_nonce(request)) and move handlers into a script; an enforced CSP runs no others",
    "eval": "eval(), new Function() or a string timer: the gate's CSP never allows 'unsafe-eval'; "
    "change the code that does it",
    "wasm-eval": "WebAssembly compiled from bytes: the gate's CSP does not allow 'wasm-unsafe-eval'",
    "data": "data: URLs: inline the resource differently, or serve it from the site",
    "blob": "blob: URLs (often a worker or a download): serve the script from the site",
}


def declarable(origin: str) -> str | None:
    """`origin` as consent.toml would store it, if it accepts it unchanged and it names one real host
    (no wildcard, a DNS name of valid labels or an IP address); else None."""
    if len(origin) > 300:
        return None
    try:
        value = _ORIGIN.validate_python(origin)
    except ValidationError:
        return None
    host = urlsplit(value).hostname or ""
    if value != origin or not host or len(host) > 253:
        return None
    if _DNS_HOST.fullmatch(host):
        return value
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None
    return value


def _comment(text: str) -> list[str]:
    """A comment of checked text, wrapped: the first line "# ", the rest indented."""
    return textwrap.wrap(text, 100, initial_indent="# ", subsequent_indent="#   ", break_on_hyphens=False)


def _host(origin: str) -> str:
    return (urlsplit(origin).hostname or "").lower()


def _declares_host(declared: str, host: str) -> bool:
    """Does a declared origin name this host, under any scheme or port?"""
    d = _host(declared)
    return d == host or (d.startswith("*.") and host.endswith(d[1:]))


def _seen(b: BlockedOrigin) -> str:
    """Where and how often: directives, client networks, pages; only checked text."""
    directives = ", ".join(f"{d}: {n}" for d, n in sorted(b.directives.items()) if _DIRECTIVE.fullmatch(d))
    page = quote(b.page[:80], safe="/")  # a path as a report sent it: percent-encoded, so plain ASCII
    pages = f"{b.pages} pages, e.g. {page}" if b.pages > 1 else f"page {page}"
    return f"{directives or 'no known directive'}; {b.clients} client networks, {pages}"


@dataclass
class _NewService:
    host: str
    origins: list[BlockedOrigin] = field(default_factory=list)


def suggest_blocked(
    config: ConsentConfig, reported: Sequence[BlockedOrigin], min_clients: int = DEFAULT_MIN_CLIENTS
) -> str:
    """TOML (comments and `[[services]]` blocks) for the reported origins seen from at least
    `min_clients` client networks: valid TOML, and once each "TODO" is edited, valid consent.toml."""
    kept = [b for b in reported if b.clients >= min_clients]
    few = len(reported) - len(kept)
    keywords: list[BlockedOrigin] = []
    declared: list[tuple[BlockedOrigin, Service]] = []
    widen: dict[str, tuple[Service, list[BlockedOrigin]]] = {}
    new: dict[str, _NewService] = {}
    own_origin: list[BlockedOrigin] = []
    refused = 0
    for b in kept:
        if b.origin in KEYWORDS:
            keywords.append(b)
            continue
        origin = declarable(b.origin)
        if origin is None:
            refused += 1
            continue
        if any(origin_matches(own, origin) for own in config.site_origins or ()):
            own_origin.append(b)  # 'self' in every directive the gate writes: no genuine report names it
            continue
        host = _host(origin)
        exact = next((s for s in config.services for o in s.origins if origin_matches(o, origin)), None)
        if exact is not None:
            declared.append((b, exact))
            continue
        owner = next((s for s in config.services for o in s.origins if _declares_host(o, host)), None)
        if owner is not None:
            widen.setdefault(owner.name, (owner, []))[1].append(b)
        else:
            new.setdefault(host, _NewService(host)).origins.append(b)

    out = _comment(
        "Suggested by `consent-banner log blocked --suggest` from the origins CSP reports named, each "
        f"from at least {min_clients} client networks"
        + (f" ({few} seen from fewer left out: --min-clients)." if few else ".")
        + " Anyone can send a report: check every origin before pasting, and replace each "
        f'category = "{TODO}" (consent.toml refuses it) with the category the service belongs in.'
    )
    if refused:
        out += _comment(
            f"{refused} reported origins left out: not an http(s) origin of one host that consent.toml "
            "accepts as written."
        )
    for b in keywords:
        out += ["", *_comment(f"{b.origin} ({_seen(b)}): {KEYWORDS[b.origin]}.")]
        if b.origin == "inline":
            out += _inline_scripts(config, b, min_clients)
    for b in own_origin:
        out += [
            "",
            *_comment(
                f"{b.origin} ({_seen(b)}): this site's own origin (site_origins), which every directive "
                "of the gate's policy allows as 'self': these reports are forged, or name <object>/<embed>, "
                "which the policy refuses from anywhere. Never a service."
            ),
        ]
    for b, s in declared:
        if s.category == NECESSARY:
            why = "necessary, so the gate allows it: these reports predate the declaration"
        else:
            why = f"blocked until a visitor grants {s.category}: the gate at work, nothing to add"
        out += ["", *_comment(f'{b.origin} ({_seen(b)}): declared by service "{s.name}"; {why}.')]
    for s, found in widen.values():
        origins = list(s.origins) + [b.origin for b in found if b.origin not in s.origins]
        out.append("")
        for b in found:
            out += _comment(f"{b.origin} ({_seen(b)})")
        out += _comment(
            f'Service "{s.name}" ({s.category}) declares this host: add the origin to its `origins`:'
        )
        out.append("#   origins = [" + ", ".join(_q(o) for o in origins) + "]")
    taken = set(config.services_by_name)
    presets = preset_matches((), [b.origin for svc in new.values() for b in svc.origins])
    of_preset: dict[str, list[BlockedOrigin]] = {}
    for svc in new.values():
        for b in svc.origins:
            if b.origin in presets:
                of_preset.setdefault(presets[b.origin], []).append(b)
    for host, svc in new.items():
        rest = [b for b in svc.origins if b.origin not in presets]
        if rest:
            out += ["", *_new_service(config, host, rest, taken)]
        for name in dict.fromkeys(presets[b.origin] for b in svc.origins if b.origin in presets):
            if name in of_preset:  # its first host: one block for all of the preset's hosts
                out += ["", *_preset_service(config, name, of_preset.pop(name), taken)]
    return "\n".join(out) + "\n"


def _inline_scripts(config: ConsentConfig, b: BlockedOrigin, min_clients: int) -> list[str]:
    """What to do about the site's own inline scripts refused (`inline_scripts`), after the "inline"
    line: recommend "nonce" only when enough networks saw a script element refused."""
    if config.csp == "off":
        return []
    networks = b.script_clients
    needed = max(min_clients, INLINE_MIN_CLIENTS)
    if config.inline_scripts == "nonce":
        if not networks:
            return []
        return _comment(
            f'inline_scripts is already "nonce": the {networks} networks\' refused inline scripts are '
            "ones the gate does not nonce: scripts added at run time by other scripts or browser "
            "extensions, or pages whose app sends its own script-src (its rules stand)."
        )
    if networks < needed:
        why = f"script elements refused in {networks} client networks, fewer than {needed}"
        if not networks:
            why = "none refused a script element (script-src-attr is an event handler: no nonce helps)"
        return _comment(f'No recommendation to set inline_scripts = "nonce": {why}.')
    return [
        *_comment(
            f"{networks} client networks saw inline <script> elements refused (script-src, "
            "script-src-elem). If they are the site's own (a theme, a static-site generator's "
            "search or analytics configuration) and its templates cannot carry csp_nonce(request), "
            "let the gate give them the page's nonce: every inline script that matches no service "
            "then runs, an injected one too, so the policy no longer stops injected inline scripts "
            "(README, inline_scripts). A service's inline snippet stays held until consent. Put this "
            "top-level key above the first [table] of consent.toml:"
        ),
        '#   inline_scripts = "nonce"',
    ]


def _preset_service(
    config: ConsentConfig, preset: str, found: list[BlockedOrigin], taken: set[str]
) -> list[str]:
    default = catalog.preset(preset).category
    category = map_category(config, default)
    lines = [line for b in found for line in _comment(f"{b.origin} ({_seen(b)})")]
    lines += _comment(
        f"The catalog's preset {preset} (`consent-banner presets {preset}` shows what it declares), "
        f"category {_q(default)}" + (": decide." if category in (None, NECESSARY) else ".")
    )
    name, n = preset, 2
    while name in taken:
        name = f"{preset}-{n}"
        n += 1
    taken.add(name)
    # A report never makes a service necessary, not even one its preset files so.
    category = TODO if category in (None, NECESSARY) else category
    return [
        *lines,
        "[[services]]",
        f"name = {_q(name)}",
        f"preset = {_q(preset)}",
        f"category = {_q(category)}",
    ]


def _new_service(config: ConsentConfig, host: str, found: list[BlockedOrigin], taken: set[str]) -> list[str]:
    known = database().for_host(host)
    category = map_category(config, known.category) if known else None
    lines = [line for b in found for line in _comment(f"{b.origin} ({_seen(b)})")]
    if known is None:
        lines += _comment(
            "Not in the Open Cookie Database: necessary only if the site cannot work without it."
        )
    elif category is None or category == NECESSARY:
        # A guess never opens a gate: what the database calls functional is still a third party.
        lines += _comment(
            f"The Open Cookie Database knows it as {_q(known.platform)}, "
            f"category {_q(known.category)}: decide."
        )
        category = None
    else:
        lines += _comment(
            f"The Open Cookie Database knows it as {_q(known.platform)} ({_q(known.category)})."
        )
    name = base = slug(host)[:36].rstrip("-")
    n = 2
    while name in taken:
        name = f"{base}-{n}"
        n += 1
    taken.add(name)
    lines += [
        "[[services]]",
        f"name = {_q(name)}",
        f"category = {_q(category or TODO)}",
    ]
    if known is not None:
        lines.append(f"provider = {_q(known.controller)}")
        if known.privacy_url:
            lines.append(f"privacy_url = {_q(known.privacy_url)}")
    lines.append("origins = [" + ", ".join(_q(b.origin) for b in found) + "]")
    return lines
