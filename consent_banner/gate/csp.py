"""Content-Security-Policy per consent state, merged with the app's own, and violation reports.

Our policy for an HTML response names only what the visitor allows (G: origins of granted
services; M: those plus, before a decision under `csp_undecided = "may-grant"`, the origins the
visitor may still grant on this page, see `ResponseGate`; decided, or "strict", M is G)::

    default-src 'self' G
    script-src 'self' 'nonce-N' G
    style-src 'self' 'unsafe-inline' M
    font-src 'self' data: M
    media-src 'self' blob: M
    connect-src 'self' M
    img-src 'self' data: M
    frame-src 'self' M
    object-src 'none'; base-uri 'self'
    report-uri {root_path}{prefix}/csp-report; report-to consent-banner

Necessary services are always granted, so a site lists its CDNs as origins of a necessary service.
Origins of denied services (rejected, or denied by GPC) appear nowhere: the browser itself refuses a
tracker the markup rewrite missed, stylesheets, `@import` and `@font-face` included. Only script
execution is kept to G before a decision (script-src, and default-src behind it): an activated
script carries the nonce, so no injected tracker script runs. Stylesheets, fonts and media of a
service the visitor may still grant are admitted so that Accept loads them on this page: the
rewriter holds their tags until then (`neutralise.py`), as it does images and frames. media-src is
explicit (it would fall back to default-src, G, and a video activated after Accept would stay
refused until a reload); blob: there fetches nothing (a media player's MediaSource object).
style-src keeps 'unsafe-inline' (inline styles are everywhere, and their `url()` fetches are held by
img-src and font-src) and so must never carry a nonce or hash, which would make browsers ignore
'unsafe-inline'. base-uri 'self' (not
'none', which breaks `<base href="/">`) makes the browser ignore an injected `<base>` that would
load our root-relative consent.js, nonce and all, from another host.

When the app sends its own policy of the same disposition, the two become one header whose every
directive is at least as strict as both (`merge`): for a directive either side names, the result
allows what both sides' effective lists allow (each side's list found through the CSP fallback
chain, e.g. script-src-elem -> script-src -> default-src). Nonces and hashes are the exception: each
side vouches for its own inline scripts, so they are kept from both, unless one side allows nothing
('none'). 'unsafe-*' keywords and 'strict-dynamic' survive only when both sides have them. Several
app policies (several headers, or one comma-separated value) are folded into one the same way.
report-uri lists both sides' endpoints; report-to keeps the app's group when it has one (a policy
can name only one group), so Chromium then reports to the app and other browsers to both.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from ..schemes import DEFAULT_PORTS

REPORT_GROUP = "consent-banner"
NONCE_PLACEHOLDER = "'nonce-__consent_banner_nonce__'"
MAX_REPORT_BYTES = 64 * 1024  # a violation report body larger than this is ignored
MAX_REPORTS = 20  # reports read from one body (the Reporting API batches them)

Policy = dict[str, list[str]]

_FALLBACK: dict[str, tuple[str, ...]] = {
    "script-src-elem": ("script-src-elem", "script-src", "default-src"),
    "script-src-attr": ("script-src-attr", "script-src", "default-src"),
    "style-src-elem": ("style-src-elem", "style-src", "default-src"),
    "style-src-attr": ("style-src-attr", "style-src", "default-src"),
    "worker-src": ("worker-src", "child-src", "script-src", "default-src"),
    "frame-src": ("frame-src", "child-src", "default-src"),
}
_FETCH = frozenset(
    {
        "default-src",
        "script-src",
        "style-src",
        "img-src",
        "connect-src",
        "font-src",
        "media-src",
        "object-src",
        "manifest-src",
        "child-src",
        "prefetch-src",
        "fenced-frame-src",
        *_FALLBACK,
    }
)
_NOT_SOURCE_LISTS = frozenset(
    {
        "report-uri",
        "report-to",
        "sandbox",
        "upgrade-insecure-requests",
        "block-all-mixed-content",
        "require-trusted-types-for",
        "trusted-types",
        "plugin-types",
        "require-sri-for",
        "referrer",
    }
)
# Keywords that widen what a list allows: kept only when both sides have them.
_WIDENING = frozenset(
    {
        "'unsafe-inline'",
        "'unsafe-eval'",
        "'wasm-unsafe-eval'",
        "'unsafe-hashes'",
        "'strict-dynamic'",
        "'unsafe-allow-redirects'",
        "'inline-speculation-rules'",
    }
)
_INLINE_GRANT = re.compile(r"^'(nonce-|sha256-|sha384-|sha512-)", re.I)
_HOST_SOURCE = re.compile(
    r"^(?:(?P<scheme>[a-z][a-z0-9+.-]*)://)?(?P<host>\*|(?:\*\.)?[a-z0-9.-]+|\[[0-9a-f:.]+\])"
    r"(?::(?P<port>\d+|\*))?(?P<path>/[^?#]*)?$",
    re.I,
)
_DEFAULT_PORT = {scheme: str(port) for scheme, port in DEFAULT_PORTS.items()}  # as the sources write them
_NETWORK_SCHEMES = frozenset({"http", "https", "ws", "wss"})


# --- building ------------------------------------------------------------------------------------


def build_policy(
    script_origins: Iterable[str], origins: Iterable[str], report_uri: str, *, report_to: bool = True
) -> Policy:
    """Our policy for one consent state, with NONCE_PLACEHOLDER where the per-response nonce goes.

    `script_origins` (what is granted) enter default-src and script-src, `origins` (what is
    granted, and before a decision what may still be granted on this page) every other fetch
    directive; `report_to` adds the Reporting-API group besides report-uri.
    """
    granted = list(dict.fromkeys(script_origins))
    others = list(dict.fromkeys(origins))
    policy: Policy = {
        "default-src": ["'self'", *granted],
        "script-src": ["'self'", NONCE_PLACEHOLDER, *granted],
        "style-src": ["'self'", "'unsafe-inline'", *others],
        "font-src": ["'self'", "data:", *others],
        "media-src": ["'self'", "blob:", *others],
        "connect-src": ["'self'", *others],
        "img-src": ["'self'", "data:", *others],
        "frame-src": ["'self'", *others],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "report-uri": [report_uri],
    }
    if report_to:
        policy["report-to"] = [REPORT_GROUP]
    return policy


def parse_policies(value: str) -> list[Policy]:
    """One or more policies from a header value (policies are separated by commas)."""
    policies = []
    for text in value.split(","):
        policy: Policy = {}
        for directive in text.split(";"):
            tokens = directive.split()
            if tokens:
                # The first occurrence of a directive counts; browsers ignore repeats.
                policy.setdefault(tokens[0].lower(), tokens[1:])
        if policy:
            policies.append(policy)
    return policies


# The directives that decide whether a <script> element runs (script-src-elem's fallback chain).
_SCRIPT_ELEMENT = _FALLBACK["script-src-elem"]


def governs_scripts(values: list[bytes]) -> bool:
    """Whether the app's own policy header values decide which script elements run: one of its
    policies has script-src-elem, script-src or default-src. Then the gate gives no nonce to the
    page's inline scripts under `inline_scripts = "nonce"`: the merged policy keeps both sides'
    nonces, so ours would admit scripts the app's rules refuse."""
    return any(
        name in policy
        for v in values
        for policy in parse_policies(v.decode("latin-1"))
        for name in _SCRIPT_ELEMENT
    )


def serialize(policy: Policy) -> str:
    return "; ".join(" ".join((name, *values)) if values else name for name, values in policy.items())


def merge(a: Policy, b: Policy, *, self_origin: str | None) -> Policy:
    """One policy at least as strict as both `a` (the app's) and `b` (ours); see the module docstring."""
    out: Policy = {}
    for name in dict.fromkeys((*a, *b)):
        if name in _NOT_SOURCE_LISTS:
            out[name] = _merge_other(name, a.get(name), b.get(name))
            continue
        ea, eb = _effective(a, name), _effective(b, name)
        if ea is None or eb is None:
            out[name] = list(ea if eb is None else eb)  # type: ignore[arg-type]
        else:
            out[name] = intersect(ea, eb, self_origin=self_origin)
    return out


def _effective(policy: Policy, name: str) -> list[str] | None:
    chain = _FALLBACK.get(name) or ((name, "default-src") if name in _FETCH else (name,))
    for n in chain:
        if n in policy:
            return policy[n]
    return None


def _merge_other(name: str, a: list[str] | None, b: list[str] | None) -> list[str]:
    if a is None or b is None:
        return list(a if b is None else b)  # type: ignore[arg-type]
    if name == "report-uri":
        return list(dict.fromkeys((*a, *b)))
    if name == "sandbox":  # fewer allow-* flags is stricter
        return [t for t in a if t in b]
    return list(a)  # report-to (one group only) and the rest: the app's


def intersect(a: list[str], b: list[str], *, self_origin: str | None) -> list[str]:
    """A source list allowing only what both `a` and `b` allow (approximated from below: never looser)."""
    sa, sb = _sources(a), _sources(b)
    if not sa or not sb:
        return ["'none'"]
    out: list[str] = []
    for s in sa:
        if _INLINE_GRANT.match(s) or s.lower() == "'report-sample'" or _covered(s, sb, self_origin):
            out.append(s)
    for s in sb:
        if _INLINE_GRANT.match(s) or s.lower() == "'report-sample'" or _covered(s, sa, self_origin):
            out.append(s)
    out = list(dict.fromkeys(out))
    return out or ["'none'"]


def _sources(tokens: list[str]) -> list[str]:
    # 'none' means something only alone; with other sources browsers ignore it.
    return [t for t in tokens if t.lower() != "'none'"]


def _covered(s: str, sources: list[str], self_origin: str | None) -> bool:
    """Does some source in `sources` allow everything `s` allows?"""
    low = s.lower()
    if low in _WIDENING:
        return any(t.lower() == low for t in sources)
    if _INLINE_GRANT.match(s) or (low.startswith("'") and low != "'self'"):
        return any(t.lower() == low for t in sources)
    page_scheme = self_origin.split(":", 1)[0] if self_origin else None
    target = _parse_source(low, self_origin)
    if target is None:
        return any(t.lower() == low for t in sources)
    return any(_covers(_parse_source(t.lower(), self_origin), target, page_scheme) for t in sources)


# A parsed source: ("*",) | ("scheme", s) | ("host", scheme|None, host, port|None, path|None)
_Src = tuple[str, ...] | tuple[str, str | None, str, str | None, str | None]


def _parse_source(t: str, self_origin: str | None) -> _Src | None:
    if t == "*":
        return ("*",)
    if t == "'self'":
        return _parse_source(self_origin, None) if self_origin else ("self",)
    if re.fullmatch(r"[a-z][a-z0-9+.-]*:", t):
        return ("scheme", t[:-1])
    m = _HOST_SOURCE.match(t)
    if not m:
        return None
    return ("host", m["scheme"], m["host"], m["port"], m["path"])


def _covers(outer: _Src | None, inner: _Src, page_scheme: str | None) -> bool:
    if outer is None:
        return False
    if outer == inner:
        return True
    kind = outer[0]
    if inner[0] == "self":  # the page's origin is unknown: only 'self' and '*' cover it
        return kind in ("self", "*")
    if kind == "*":
        if inner[0] == "scheme":
            return inner[1] in _NETWORK_SCHEMES
        if inner[0] == "host":
            return (inner[1] or page_scheme or "https") in _NETWORK_SCHEMES
        return False
    if kind == "scheme":
        if inner[0] == "scheme":
            return _scheme_covers(outer[1], inner[1])
        if inner[0] == "host":
            return _scheme_covers(outer[1], inner[1] or page_scheme)
        return False
    if kind == "host" and inner[0] == "host":
        _, o_scheme, o_host, o_port, o_path = outer
        _, i_scheme, i_host, i_port, i_path = inner
        i_scheme_eff = i_scheme or page_scheme
        if not _scheme_covers(o_scheme or page_scheme, i_scheme_eff):
            return False
        if o_host.startswith("*."):
            if not (i_host.endswith(o_host[1:]) and (i_host.startswith("*.") or i_host != o_host[2:])):
                return False
        elif o_host != i_host:
            return False
        if o_port != "*":
            default = _DEFAULT_PORT.get(i_scheme_eff or "", None)
            o = o_port or _DEFAULT_PORT.get((o_scheme or page_scheme) or "", None)
            i = i_port or default
            if i_port == "*" or o != i:
                return False
        if o_path and o_path != "/":
            if not i_path:
                return False
            return i_path == o_path or (o_path.endswith("/") and i_path.startswith(o_path))
        return True
    return False


def _scheme_covers(outer: str | None, inner: str | None) -> bool:
    if outer is None or inner is None:
        return outer == inner
    # CSP3: http: also matches https:, ws: matches wss: (the secure upgrade of the same scheme).
    return inner == outer or (outer, inner) in (("http", "https"), ("ws", "wss"))


# --- violation reports -----------------------------------------------------------------------------


def parse_reports(body: bytes, content_type: str) -> list[tuple[str, str, str]]:
    """(page path, blocked origin, directive) of each CSP violation in a report body.

    Reads the legacy ``application/csp-report`` shape ({"csp-report": {...}}) and the Reporting
    API's ``application/reports+json`` (a list of {"type": "csp-violation", "body": {...}}); a plain
    ``application/json`` body may be either. Bodies over MAX_REPORT_BYTES, malformed JSON and
    entries without a usable page, origin or directive are skipped, never an error: the endpoint is
    public and the result is best effort. The page is a path without query; the origin is
    ``scheme://host[:port]`` or one of "inline", "eval", "wasm-eval", "data", "blob".
    """
    mime = content_type.split(";", 1)[0].strip().lower()
    if len(body) > MAX_REPORT_BYTES or mime not in (
        "application/csp-report",
        "application/reports+json",
        "application/json",
    ):
        return []
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return []
    entries: list[tuple[object, object, object]] = []
    if isinstance(data, dict) and isinstance(data.get("csp-report"), dict):
        r = data["csp-report"]
        entries.append(
            (
                r.get("document-uri"),
                r.get("blocked-uri"),
                r.get("effective-directive") or r.get("violated-directive"),
            )
        )
    elif isinstance(data, list):
        for item in data[:MAX_REPORTS]:
            if not isinstance(item, dict) or item.get("type") != "csp-violation":
                continue
            r = item.get("body")
            if isinstance(r, dict):
                entries.append(
                    (
                        r.get("documentURL") or item.get("url"),
                        r.get("blockedURL"),
                        r.get("effectiveDirective") or r.get("violatedDirective"),
                    )
                )
    out: list[tuple[str, str, str]] = []
    for page, blocked, directive in entries:
        path, origin, name = _page(page), _blocked_origin(blocked), _directive(directive)
        if path and origin and name:
            out.append((path, origin, name))
    return out


def _page(value: object) -> str | None:
    if not isinstance(value, str) or len(value) > 4096:
        return None
    try:
        path = urlsplit(value).path or "/"
    except ValueError:
        return None
    return path[:512]


_KEYWORD_ORIGINS = frozenset({"inline", "eval", "wasm-eval", "data", "blob"})


def _blocked_origin(value: object) -> str | None:
    if not isinstance(value, str) or len(value) > 4096:
        return None
    v = value.strip()
    if v.lower() in _KEYWORD_ORIGINS:
        return v.lower()
    try:
        parts = urlsplit(v)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme in ("data", "blob"):
        return scheme
    if scheme not in _NETWORK_SCHEMES or not parts.hostname:
        return None
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}" + (f":{port}" if port and str(port) != _DEFAULT_PORT[scheme] else "")


def _directive(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    first = value.split(" ", 1)[0].strip().lower()
    return first if re.fullmatch(r"[a-z][a-z-]{0,39}", first) else None
