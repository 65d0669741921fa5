"""The response side of enforcement: what leaves the server already obeys the visitor's choice.

`ResponseGate` is built once per application (everything costly is computed in `__init__`: host
and cookie lookups, per-consent-state plans and policies are cached), and `wrap_send` wraps the
ASGI `send` of one HTTP request. On `http.response.start` it

1. drops each ``Set-Cookie`` the visitor's consent does not allow (`cookies.py`),
2. adds expiries for the request's declared cookies of denied services (`cookies.py`),
3. for ``text/html`` and ``application/xhtml+xml``: sets the Content-Security-Policy of the
   consent state, merged with the app's own of the same disposition into one header (`csp.py`),
   once the body's first bytes tell how the browser will decode the page, and
4. for the same: streams the body through `html.HtmlRewriter` (tracker tags of denied services
   neutralised and marked with the page's nonce, `inject` snippets added, none into XHTML),
   dropping ``Content-Length`` unless the whole body came in one message, in which case it is set
   to the rewritten length,
5. adds ``Vary: Cookie, Sec-GPC`` to every response whose headers or body depend on consent (HTML
   when the gate acts on HTML at all, and any response whose cookies it changed). Other responses
   pass untouched and stay cacheable.

What the gate does not rewrite gets a policy that admits only granted origins in every directive,
also before a decision: compressed HTML (``Content-Encoding`` other than identity; a warning is
logged once: put the compression middleware outside ConsentMiddleware so that it compresses what
the gate produced), HTML in a charset that is not an ASCII superset (UTF-16/32, ISO-2022-*, UTF-7,
HZ: from a byte order mark, the header's charset, or, when the header names none, a <meta>
charset in the first PEEK bytes or on through <head>, as Chromium reads them), XHTML (its XML
parse makes elements where HTML's has text), and a body without Content-Type (also
``X-Content-Type-Options: nosniff``, so it is never sniffed into an ungated page).
HEAD requests and 1xx/204/304/206 responses are not rewritten either.

The wrapped `send` is `send.Gating.wrap`'s; how a page will be decoded is `charset.py`'s.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from ..config import ConsentConfig
from ..consent import Consent
from ..language import Languages
from ..memo import Memo
from ..request_checks import SiteOrigins
from .cookies import CookieRules
from .csp import NONCE_PLACEHOLDER, REPORT_GROUP, build_policy, merge, parse_policies, serialize
from .html import Blocked, HostRules, url_host
from .inline import NONCE, InlineRules
from .placeholder import Placeholders
from .send import VARY_TOKENS, Gating, PageHooks, Scope, Send
from .snippets import Vouch

__all__ = ["VARY_TOKENS", "PageHooks", "Plan", "ResponseGate"]

logger = logging.getLogger("consent_banner.gate")

_NONCE_PLACEHOLDER = NONCE_PLACEHOLDER.encode()
_NONCE = re.compile(r"[A-Za-z0-9+/_-]{8,128}={0,2}")
_MAX_CACHED = 1024  # consent-state plans and merged policies kept (distinct states are few)


class Plan:
    """What one consent state allows: services, hosts to neutralise, inline scripts held or
    nonced, CSP origins."""

    __slots__ = ("allowed", "hosts", "inline", "inline_app_policy", "script_origins", "origins")

    def __init__(
        self,
        allowed: frozenset[str],
        hosts: HostRules,
        script_origins: tuple[str, ...],
        origins: tuple[str, ...],
        inline: InlineRules | None = None,
        inline_app_policy: InlineRules | None = None,
    ) -> None:
        self.script_origins = script_origins  # only what is granted: scripts are activated with the nonce
        self.allowed = allowed
        self.hosts = hosts
        self.inline = inline  # None: no inline script is any service's business here
        # The same for a response whose app sends its own script-src: under inline_scripts = "nonce",
        # without the nonce for a script matching no service (the app's rules stand).
        self.inline_app_policy = inline_app_policy
        self.origins = origins


class ResponseGate:
    """Enforces consent on responses; one per application, `wrap_send` per request.

    Read by the wrapped sends and the middleware: `cookie_rules` (the Set-Cookie and request-cookie
    verdicts), `csp_header` (the policy's header name, None when no policy is sent), `handles_html`
    (whether HTML responses are acted on at all), `rewrites` (whether tracker markup is rewritten) and
    `site` (this site's origins as the browser sees them: Secure expiries, their host, 'self').
    """

    def __init__(self, config: ConsentConfig, *, own_cookie_names: frozenset[str]) -> None:
        self.config = config
        self.cookie_rules = CookieRules(config, own_cookie_names)
        self.site = SiteOrigins(config.site_origins)
        self.csp_header: bytes | None = {
            "enforce": b"content-security-policy",
            "report-only": b"content-security-policy-report-only",
        }.get(config.csp)
        self.rewrites = config.rewrite_html
        self.handles_html = self.csp_header is not None or config.rewrite_html or bool(config.inject)
        self._report_path = config.prefix + "/csp-report"
        # host -> services claiming it, in config order; "*.example.net" claims land in _wild.
        self._exact: dict[str, list[str]] = {}
        self._wild: dict[str, list[str]] = {}
        self._blocked: dict[str, Blocked] = {}
        for s in config.services:
            self._blocked[s.name] = Blocked(
                service=s.name,
                category=s.category,
                name=s.provider or s.name,
                category_labels=dict(config.categories[s.category].label),
            )
            for origin in s.origins:
                host = url_host(origin) or ""  # the config validated it: scheme://host[:port]
                table, key = (self._wild, host[2:]) if host.startswith("*.") else (self._exact, host)
                if s.name not in table.setdefault(key, []):
                    table[key].append(s.name)
        self._strict_undecided = config.csp_undecided == "strict"
        # inline_scripts = "nonce": the page's inline scripts matching no service get the nonce, where
        # a policy is sent at all (without one nothing refuses them).
        self._nonce_unmatched = config.inline_scripts == "nonce" and self.csp_header is not None
        # Under an enforced policy that refuses a reflected <script> (inline_scripts = "block"), a
        # service's signature vouches only for its official snippet or a pinned one (snippets.py);
        # elsewhere such a script would run anyway, and the signature alone decides.
        self._vouch = (
            Vouch(p for s in config.services for p in s.inline_sha256)
            if config.csp == "enforce" and config.inline_scripts == "block" else None
        )
        self._plans: Memo[object, Plan] = Memo(_MAX_CACHED)
        self._plan_of: Memo[int, tuple[Consent, Plan]] = Memo(_MAX_CACHED)
        self._by_allowed: Memo[tuple[frozenset[str], frozenset[str]], Plan] = Memo(_MAX_CACHED)
        self._policies: Memo[tuple[object, ...], bytes] = Memo(_MAX_CACHED)
        self._endpoints: Memo[str, bytes] = Memo(_MAX_CACHED)
        self._placeholders = Placeholders(config)
        self._languages = Languages(config.languages)
        self._warned_encoding = False

    def wrap_send(
        self,
        send: Send,
        scope: Scope,
        consent: Consent,
        *,
        request_cookies: dict[str, str],
        page: Callable[[Scope], PageHooks],
    ) -> Send:
        """The `send` to hand to the app for one HTTP request (see the module docstring).

        `request_cookies` are the request's cookies the gate may have to expire (the middleware hands
        only those its consent denies). `page` is called once, for an HTML response only, and supplies
        the CSP nonce, the page's language, the snippets to inject and extra headers: nothing of it is
        built for a response that is not HTML.
        """
        scope.setdefault("state", {})  # where the app marks that it read the consent (access.py)
        return Gating(self, self.plan(consent), request_cookies, page).wrap(send, scope)

    # --- per consent state, cached ---

    def plan(self, consent: Consent) -> Plan:
        # A returning visitor's Consent is the same object on every request (the middleware remembers
        # it per Cookie header): remember its plan by identity. The entry holds the object, so its
        # id cannot be reused while the entry lives.
        seen = self._plan_of.get(id(consent))
        if seen is not None and seen[0] is consent:
            return seen[1]
        plan = self._plan_for_state(consent)
        self._plan_of.put(id(consent), (consent, plan))
        return plan

    def denied_in_request(self, request_cookies: dict[str, str], plan: Plan) -> list[tuple[str, Any]]:
        """The request's declared cookies of services the plan does not allow (the middleware hands
        only the few it found denied, so this is not worth remembering)."""
        return self.cookie_rules.denied_in_request(request_cookies, plan.allowed)

    def _plan_for_state(self, consent: Consent) -> Plan:
        services = consent.services
        key = (
            consent.decided,
            consent.model,  # an undecided visitor's plan differs by model (geo.py): never shared
            consent.granted,
            consent.gpc_denied if consent.gpc else None,
            frozenset(services.items()) if services else None,
        )
        plan = self._plans.get(key)
        if plan is None:
            allowed = frozenset(
                s.name for s in self.config.services if consent.allows_service(s.name, s.category)
            )
            # Before a decision, every fetch directive but script-src and default-src (connect, img,
            # frame, style, font, media) admits every declared service the visitor may still grant on
            # this page (the neutralised markup and the cookie filter keep them out until then), so
            # that a decision activates them without a reload; script-src never does (activated
            # scripts carry the nonce), so no injected tracker script runs.
            # Once decided, only what was granted appears; what GPC denies never does. Under
            # csp_undecided = "strict" nothing ungranted appears before a decision either (the
            # script reloads the page after the first decision that grants something).
            if consent.decided or self._strict_undecided:
                in_policy = allowed
            else:
                in_policy = frozenset(
                    s.name
                    for s in self.config.services
                    if not (consent.gpc and s.category in consent.gpc_denied)
                )
            plan = self._by_allowed.get((allowed, in_policy)) or self._build_plan(allowed, in_policy)
            self._plans.put(key, plan)
        return plan

    def _build_plan(self, allowed: frozenset[str], in_policy: frozenset[str]) -> Plan:
        def first_denied(table: dict[str, list[str]]) -> dict[str, Blocked]:
            out = {}
            for host, names in table.items():
                denied = next((n for n in names if n not in allowed), None)
                if denied is not None:
                    out[host] = self._blocked[denied]
            return out

        services = self.config.services
        scripts = tuple(o for s in services if s.name in allowed for o in s.origins)
        origins = tuple(o for s in services if s.name in in_policy for o in s.origins)
        # The reload rule (inline.py): a denied loader whose origins this page's script-src lacks.
        reload: frozenset[str] = frozenset()
        if self.config.csp == "enforce":
            sources = (*scripts, *(self.config.site_origins or ()))
            reload = frozenset(
                s.name for s in services
                if s.loader and s.name not in allowed and not all(_covered(o, sources) for o in s.origins)
            )
        hosts = HostRules(first_denied(self._exact), first_denied(self._wild), reload, self._paths(allowed))
        inline = self._inline_rules(allowed, hosts)
        nonced = inline
        if self._nonce_unmatched:  # inline_scripts = "nonce": a script matching no service too
            nonced = (inline or InlineRules(hosts, ())).with_unmatched(NONCE)
        plan = Plan(allowed, hosts, scripts, origins, nonced, inline)
        if len(self._by_allowed) >= _MAX_CACHED:
            self._plans.clear()  # they hold plans about to be forgotten here
        return self._by_allowed.put((allowed, in_policy), plan)

    def _paths(self, allowed: frozenset[str]) -> dict[str, tuple[tuple[str, Blocked | None], ...]]:
        """The hosts claimed by an allowed and a denied service: their claimers' paths (hosts.py),
        from each one's URL signatures (`google.com/recaptcha/api.js`), longest first."""
        by_name = {s.name: s for s in self.config.services}
        out: dict[str, tuple[tuple[str, Blocked | None], ...]] = {}
        for host, names in self._exact.items():
            if len(names) < 2 or all(n in allowed for n in names) or not any(n in allowed for n in names):
                continue
            paths: dict[str, Blocked | None] = {}
            for name in names:
                for signature in by_name[name].inline:
                    suffix, slash, path = signature.partition("/")
                    if slash and path and (host == suffix or host.endswith("." + suffix)):
                        if paths.get("/" + path) is None:  # a path a denied claimer names too is its
                            paths["/" + path] = None if name in allowed else self._blocked[name]
            out[host] = tuple(sorted(paths.items(), key=lambda p: -len(p[0])))
        return out

    def _inline_rules(self, allowed: frozenset[str], hosts: HostRules) -> InlineRules | None:
        """The inline scripts of services in a consent state (inline.py): those of a service not
        allowed are neutralised; where a policy is sent, those holding an allowed service's
        signature get the nonce (its origins alone vouch for no script: a reflected one naming a
        necessary CDN would run for everyone)."""
        denied: list[tuple[str, Blocked]] = []
        granted: list[str] = []
        for s in self.config.services:
            if s.name not in allowed:
                denied.extend((sig, self._blocked[s.name]) for sig in s.inline)
            elif self.csp_header is not None:
                granted.extend(s.inline)
        rules = InlineRules(hosts, denied, granted, vouch=self._vouch)
        return rules if rules else None

    def csp(
        self,
        plan: Plan,
        app_values: list[bytes],
        *,
        root_path: str,
        self_origin: str | None,
        secure: bool,
        nonce: str,
        granted_only: bool = False,
    ) -> bytes:
        """The one policy header value for a response: ours, merged with the app's when it has one.

        `granted_only`: for a page the gate does not rewrite, no directive admits more than is granted.
        """
        if not _NONCE.fullmatch(nonce):  # checked here, off the path of responses without a policy
            raise ValueError("nonce must be 8-128 base64 characters (use secrets.token_urlsafe(16))")
        origins = plan.script_origins if granted_only else plan.origins
        key = (plan.script_origins, origins, root_path, secure, *app_values, self_origin)
        value = self._policies.get(key)
        if value is None:
            ours = build_policy(plan.script_origins, origins, root_path + self._report_path, report_to=secure)
            policies = [p for v in app_values for p in parse_policies(v.decode("latin-1"))]
            for app in policies:
                ours = merge(app, ours, self_origin=self_origin)
            value = self._policies.put(key, serialize(ours).encode("latin-1"))
        return value.replace(_NONCE_PLACEHOLDER, b"'nonce-" + nonce.encode() + b"'")

    def reporting_endpoints(self, root_path: str, app_values: list[bytes]) -> bytes:
        """The Reporting-Endpoints header: the app's endpoints, and ours for the report-to group."""
        ours = self._endpoints.get(root_path)
        if ours is None:
            ours = self._endpoints.put(
                root_path, f'{REPORT_GROUP}="{root_path}{self._report_path}"'.encode("latin-1")
            )
        if not app_values:
            return ours
        mine = REPORT_GROUP.encode() + b"="
        return b", ".join((*(v for v in app_values if mine not in v), ours))

    def placeholder(self, blocked: Blocked, html_lang: str | None, *, language: str | None = None) -> str:
        """The placeholder of a blocked embed in `language`: the page's, as its banner is in (the page
        hook says which). Without it, the page's `lang` alone decides (a rewriter used on its own)."""
        if language is None:
            language = self._languages.pick(html_lang, None)
        return self._placeholders.html(blocked, language)

    def warn_encoded(self) -> None:
        if not self._warned_encoding:
            self._warned_encoding = True
            logger.warning(
                "a compressed text/html response was passed through without rewriting its trackers: "
                "put the compression middleware outside ConsentMiddleware"
            )


def _covered(origin: str, sources: tuple[str, ...]) -> bool:
    """Whether a script-src listing `sources` admits scripts from `origin` (both as the config
    writes them, scheme://host[:port]): the same origin, or a `*.` source over one of its subdomains."""
    if origin in sources:
        return True
    scheme, _, rest = origin.partition("://")
    return any(
        src.startswith(scheme + "://*.") and rest.endswith(src[len(scheme) + 3 :].removeprefix("*"))
        for src in sources
    )
