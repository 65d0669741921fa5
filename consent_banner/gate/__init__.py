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
"""

from __future__ import annotations

import codecs
import functools
import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

from ..config import ConsentConfig
from ..consent import Consent
from .cookies import CookieRules
from .csp import NONCE_PLACEHOLDER, REPORT_GROUP, build_policy, merge, parse_policies, serialize
from .html import Blocked, HostRules, HtmlRewriter, Inject, url_host
from .placeholder import Placeholders

__all__ = ["ResponseGate"]

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]
Scope = MutableMapping[str, Any]

logger = logging.getLogger("consent_banner.gate")

VARY_TOKENS = (b"Cookie", b"Sec-GPC")
_VARY = b", ".join(VARY_TOKENS)
_NONCE_PLACEHOLDER = NONCE_PLACEHOLDER.encode()
_NONCE = re.compile(r"[A-Za-z0-9+/_-]{8,128}={0,2}")
_NO_BODY = frozenset({204, 205, 206, 304})
_MAX_CACHED = 1024  # consent-state plans and merged policies kept (distinct states are few)
_CHUNK = 64 * 1024  # bytes read at a time from a file sent with http.response.pathsend


class _Plan:
    """What one consent state allows: services, hosts to neutralise, CSP origins."""

    __slots__ = ("allowed", "hosts", "script_origins", "origins")

    def __init__(
        self,
        allowed: frozenset[str],
        hosts: HostRules,
        script_origins: tuple[str, ...],
        origins: tuple[str, ...],
    ) -> None:
        self.script_origins = script_origins  # only what is granted: scripts are activated with the nonce
        self.allowed = allowed
        self.hosts = hosts
        self.origins = origins


class ResponseGate:
    """Enforces consent on responses; one per application, `wrap_send` per request."""

    def __init__(self, config: ConsentConfig, *, own_cookie_names: frozenset[str]) -> None:
        self.config = config
        self._cookies = CookieRules(config, own_cookie_names)
        self._csp_header = {
            "enforce": b"content-security-policy",
            "report-only": b"content-security-policy-report-only",
        }.get(config.csp)
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
        self._acts_on_html = self._csp_header is not None or config.rewrite_html
        self._strict_undecided = config.csp_undecided == "strict"
        self._plans: dict[object, _Plan] = {}
        self._plan_of: dict[int, tuple[Consent, _Plan]] = {}
        self._by_allowed: dict[tuple[frozenset[str], frozenset[str]], _Plan] = {}
        self._policies: dict[tuple[object, ...], bytes] = {}
        self._endpoints: dict[str, bytes] = {}
        self._placeholders = Placeholders(config)
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

        `page` is called once, for an HTML response only, and supplies the CSP nonce, the snippets
        to inject and extra headers: nothing of it is built for a response that is not HTML.
        """
        return _GatedSend(self, send, scope, self.plan(consent), request_cookies, page)

    # --- per consent state, cached ---

    def plan(self, consent: Consent) -> _Plan:
        # A returning visitor's Consent is the same object on every request (the middleware caches
        # it per Cookie header): remember its plan by identity. The entry holds the object, so its
        # id cannot be reused while the entry lives.
        seen = self._plan_of.get(id(consent))
        if seen is not None and seen[0] is consent:
            return seen[1]
        plan = self._plan_for_state(consent)
        if len(self._plan_of) >= _MAX_CACHED:
            self._plan_of.clear()
        self._plan_of[id(consent)] = (consent, plan)
        return plan

    def denied_in_request(self, request_cookies: dict[str, str], plan: _Plan) -> list[tuple[str, Any]]:
        """The request's declared cookies of services the plan does not allow (the middleware hands
        only the few it found denied, so this is not worth remembering)."""
        return self._cookies.denied_in_request(request_cookies, plan.allowed)

    def _plan_for_state(self, consent: Consent) -> _Plan:
        services = consent.services
        key = (
            consent.decided,
            consent.granted,
            consent.gpc_denied if consent.gpc else None,
            frozenset(services.items()) if services else None,
        )
        plan = self._plans.get(key)
        if plan is None:
            allowed = frozenset(
                s.name for s in self.config.services if consent.allows_service(s.name, s.category)
            )
            # Before a decision, connect-src, img-src and frame-src admit every declared service the
            # visitor may still grant on this page (the neutralised markup and the cookie filter keep
            # them out until then), so that a decision activates them without a reload; script-src
            # never does (activated scripts carry the nonce), so no injected tracker script runs.
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
            if len(self._plans) >= _MAX_CACHED:
                self._plans.clear()
            self._plans[key] = plan
        return plan

    def _build_plan(self, allowed: frozenset[str], in_policy: frozenset[str]) -> _Plan:
        def first_denied(table: dict[str, list[str]]) -> dict[str, Blocked]:
            out = {}
            for host, names in table.items():
                denied = next((n for n in names if n not in allowed), None)
                if denied is not None:
                    out[host] = self._blocked[denied]
            return out

        scripts = tuple(o for s in self.config.services if s.name in allowed for o in s.origins)
        origins = tuple(o for s in self.config.services if s.name in in_policy for o in s.origins)
        plan = _Plan(
            allowed, HostRules(first_denied(self._exact), first_denied(self._wild)), scripts, origins
        )
        if len(self._by_allowed) >= _MAX_CACHED:
            self._by_allowed.clear()
            self._plans.clear()
        self._by_allowed[(allowed, in_policy)] = plan
        return plan

    def csp(
        self,
        plan: _Plan,
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
            value = serialize(ours).encode("latin-1")
            if len(self._policies) >= _MAX_CACHED:
                self._policies.clear()
            self._policies[key] = value
        return value.replace(_NONCE_PLACEHOLDER, b"'nonce-" + nonce.encode() + b"'")

    def reporting_endpoints(self, root_path: str, app_values: list[bytes]) -> bytes:
        """The Reporting-Endpoints header: the app's endpoints, and ours for the report-to group."""
        ours = self._endpoints.get(root_path)
        if ours is None:
            ours = f'{REPORT_GROUP}="{root_path}{self._report_path}"'.encode("latin-1")
            if len(self._endpoints) < _MAX_CACHED:
                self._endpoints[root_path] = ours
        if not app_values:
            return ours
        mine = REPORT_GROUP.encode() + b"="
        return b", ".join((*(v for v in app_values if mine not in v), ours))

    def placeholder(self, blocked: Blocked, html_lang: str | None) -> str:
        return self._placeholders.html(blocked, self._language(html_lang))

    def _language(self, html_lang: str | None) -> str:
        languages = self.config.languages
        if html_lang:
            for candidate in (html_lang, html_lang.split("-")[0].lower()):
                if candidate in languages:
                    return candidate
        return self.config.default_language

    def warn_encoded(self) -> None:
        if not self._warned_encoding:
            self._warned_encoding = True
            logger.warning(
                "a compressed text/html response was passed through without rewriting its trackers: "
                "put the compression middleware outside ConsentMiddleware"
            )


class PageHooks(Protocol):
    """What an HTML response needs from the middleware (see `ResponseGate.wrap_send`'s `page`)."""

    inject: Inject | None

    def nonce(self) -> str: ...

    def html_headers(self) -> list[tuple[bytes, bytes]]: ...


class _GatedSend:
    """The wrapped `send` of one request."""

    __slots__ = (
        "_gate",
        "_send",
        "_scope",
        "_plan",
        "_cookies",
        "_nonce",
        "_inject",
        "_html_headers",
        "_page",
        "_rewriter",
        "_held",
        "_peek",
        "_header",
        "_searched",
        "_rewrite",
        "_deferred",
        "_xhtml",
    )
    # Set in `_start` only for a page held until its first bytes are read (not on the hot path):
    _peek: bytes  # the body's first bytes, until they decide how the page is decoded
    _header: str | None  # the codec the Content-Type names
    _searched: int  # bytes of _peek already searched for the end of <head>
    _deferred: tuple[list[bytes], list[bytes]] | None  # the app's CSP and Reporting-Endpoints
    _xhtml: bool
    _rewrite: bool  # whether a readable body is to be rewritten

    def __init__(
        self,
        gate: ResponseGate,
        send: Send,
        scope: Scope,
        plan: _Plan,
        request_cookies: dict[str, str],
        page: Callable[[Scope], PageHooks],
    ) -> None:
        self._gate = gate
        self._send = send
        self._scope = scope
        self._plan = plan
        self._cookies = request_cookies
        self._page = page
        self._nonce: Callable[[], str] | None = None  # these three from `page`, for HTML only
        self._inject: Inject | None = None
        self._html_headers: Callable[[], list[tuple[bytes, bytes]]] | None = None
        self._rewriter: HtmlRewriter | None = None
        self._held: Message | None = None  # the start message, until the body's first bytes are read

    async def __call__(self, message: Message) -> None:
        # Kept flat on purpose: this runs for every message of every response.
        if self._rewriter is None and self._held is None:
            if message["type"] == "http.response.start" and not self._start(message):
                return  # held until the body's first bytes tell how the browser will read it
            await self._send(message)
            return
        kind = message["type"]
        if kind == "http.response.body":
            await self._body(message.get("body", b""), message.get("more_body", False))
        elif kind == "http.response.pathsend":
            await self._pathsend(message["path"])
        else:
            await self._send(message)

    def _start(self, message: Message) -> bool:
        """Apply the cookie, CSP and Vary rules to the start message; False when it is held back."""
        gate, plan = self._gate, self._plan
        headers = message.get("headers") or ()
        content_type = encoding = None
        set_cookies: list[bytes] = []
        for k, v in headers:
            lk = k.lower()
            if lk == b"set-cookie":
                set_cookies.append(v)
            elif lk == b"content-type":
                content_type = v
            elif lk == b"content-encoding":
                encoding = v
        denied = gate.denied_in_request(self._cookies, plan) if self._cookies else ()
        status = message.get("status", 200)
        xhtml = unlabelled = False
        if content_type is not None:
            low = content_type[:21].lower()
            is_html = low[:9] == b"text/html" or (xhtml := low == b"application/xhtml+xml")
            is_html = is_html and (gate._acts_on_html or gate.config.inject)
        else:
            # The browser would sniff a body without a type, maybe into an ungated HTML page.
            is_html = False
            unlabelled = gate._csp_header is not None and _has_body(status, message, headers)
        if is_html:
            hooks = self._page(self._scope)
            self._nonce, self._html_headers = hooks.nonce, hooks.html_headers
            # The banner is HTML, not XML: an XHTML page is rewritten and gated, but gets no banner.
            self._inject = None if xhtml else hooks.inject
        elif unlabelled:
            self._nonce = self._page(self._scope).nonce
        if not set_cookies and not denied and not is_html and not unlabelled:
            return True  # nothing depends on consent: untouched, still cacheable

        kept, dropped = gate._cookies.filter(set_cookies, plan.allowed) if set_cookies else ([], False)
        expiries: list[bytes] = []
        if denied:
            host, secure = self._host(), self._scope.get("scheme") in ("https", "wss")
            for name, decl in denied:
                expiries.extend(gate._cookies.expire(name, decl, host=host, secure=secure))
        vary = dropped or bool(expiries) or is_html or unlabelled
        gated = (is_html or unlabelled) and gate._csp_header is not None

        app_csp: list[bytes] = []
        endpoints: list[bytes] = []
        varies: list[bytes] = []
        rest: list[tuple[bytes, bytes]] = []
        for k, v in headers:
            lk = k.lower()
            if lk == b"set-cookie":
                continue
            if gated and lk == gate._csp_header:
                app_csp.append(v)
            elif gated and lk == b"reporting-endpoints":
                endpoints.append(v)
            elif vary and lk == b"vary":
                varies.append(v)
            else:
                rest.append((k, v))
        rest.extend((b"set-cookie", v) for v in kept)
        rest.extend((b"set-cookie", v) for v in expiries)
        if is_html and self._html_headers is not None:
            rest.extend(self._html_headers())
        if unlabelled:
            rest.append((b"x-content-type-options", b"nosniff"))
        if vary:
            rest.append((b"vary", _merge_vary(varies) if varies else _VARY))
        message["headers"] = rest

        body = is_html and self._scope.get("method") != "HEAD" and _has_body(status, message, ())
        encoded = encoding is not None and encoding.strip().lower() not in (b"", b"identity")
        readable = is_html and not encoded
        if is_html and not readable:
            gate.warn_encoded()
        self._rewrite = readable and self._wants_rewrite()
        if readable and body and (gated or self._rewrite):
            # How the browser decodes the page (a BOM, a <meta charset>) is known from the body's
            # first bytes: both the policy and the rewrite wait for them.
            self._header = _header_codec(content_type or b"")
            self._xhtml = xhtml
            self._peek, self._searched = b"", 0
            self._held = message
            self._deferred = (app_csp, endpoints) if gated else None
            return False
        if gated:
            # What the gate does not rewrite (XHTML, compressed, no Content-Type) gets only what is granted.
            granted_only = xhtml or unlabelled or not readable
            if is_html and not granted_only and not body:
                granted_only = _header_codec(content_type or b"") is None
            self._policy_headers(message, app_csp, endpoints, granted_only=granted_only)
        return True

    def _wants_rewrite(self) -> bool:
        gate = self._gate
        return bool(
            (gate.config.rewrite_html and self._plan.hosts) or self._inject is not None
        )

    def _policy_headers(
        self,
        message: Message,
        app_csp: list[bytes],
        endpoints: list[bytes],
        *,
        granted_only: bool,
    ) -> None:
        """Adds the policy (and Reporting-Endpoints) to the start message."""
        gate = self._gate
        assert gate._csp_header is not None and self._nonce is not None
        root = self._scope.get("root_path", "")
        # Chromium ignores report-uri once report-to is given, and the Reporting API delivers only
        # to secure origins: on plain http report-uri alone, so that reports arrive at all.
        secure = self._scope.get("scheme") == "https"
        policy = gate.csp(
            self._plan,
            app_csp,
            root_path=root,
            self_origin=self._origin() if app_csp else None,
            nonce=self._nonce(),
            secure=secure,
            granted_only=granted_only,
        )
        headers = message["headers"]
        headers.append((gate._csp_header, policy))
        if secure or endpoints:
            headers.append((b"reporting-endpoints", gate.reporting_endpoints(root, endpoints)))

    def _release(self, head: bytes, complete: bool) -> Message:
        """Decides, from the body's first bytes, how the held page is read, and completes its headers."""
        gate, held = self._gate, self._held
        assert held is not None
        self._held = None
        codec = _codec(self._header, head, complete=complete)
        deferred, self._deferred = self._deferred, None
        if deferred is not None:
            # A page the gate cannot read passes unrewritten: only what is granted may load. XHTML
            # is rewritten as HTML, but the XML parser makes elements where HTML has text
            # (an <img> inside <style>): only what is granted may load there either.
            self._policy_headers(held, *deferred, granted_only=codec is None or self._xhtml)
        if codec is not None and self._rewrite:
            self._rewriter = HtmlRewriter(
                self._plan.hosts if gate.config.rewrite_html else None,
                self._inject,
                charset=codec,
                placeholder=self._placeholder,
                mark=self._nonce,
            )
            headers = held["headers"]
            headers[:] = [(k, v) for k, v in headers if k.lower() != b"content-length"]
        return held

    def _placeholder(self, blocked: Blocked, html_lang: str | None) -> str:
        # The placeholder carries the nonce too: the script honours only the gate's "Allow" buttons.
        assert self._nonce is not None
        html = self._gate.placeholder(blocked, html_lang)
        return html.replace("<div ", f'<div nonce="{self._nonce()}" ', 1)

    async def _body(self, chunk: bytes, more: bool) -> None:
        if self._held is not None:
            whole = not more and not self._peek  # the whole body in one message: its length is known
            self._peek += chunk
            if more and not _enough(self._header, self._peek, self._searched):
                self._searched = len(self._peek)
                return
            chunk, self._peek = self._peek, b""
            held = self._release(chunk, complete=not more or len(chunk) < MAX_HEAD)
            if self._rewriter is None:
                await self._send(held)
                await self._send({"type": "http.response.body", "body": chunk, "more_body": more})
                return
            data = self._rewriter.feed(chunk)
            if not more:
                data += self._rewriter.finish()
            if whole:
                held["headers"].append((b"content-length", str(len(data)).encode()))
            await self._send(held)
            if data or not more:
                await self._send({"type": "http.response.body", "body": data, "more_body": more})
            return
        if self._rewriter is None:
            await self._send({"type": "http.response.body", "body": chunk, "more_body": more})
            return
        data = self._rewriter.feed(chunk)
        if not more:
            data += self._rewriter.finish()
        if data or not more:
            await self._send({"type": "http.response.body", "body": data, "more_body": more})

    async def _pathsend(self, path: str) -> None:
        # A file response (e.g. FileResponse of an .html page): read it ourselves to rewrite it.
        import anyio

        async with await anyio.open_file(path, "rb") as f:
            chunk = await f.read(_CHUNK)
            while True:
                following = await f.read(_CHUNK) if chunk else b""
                await self._body(chunk, bool(following))
                if not following:
                    return
                chunk = following

    def _host(self) -> str | None:
        for k, v in self._scope.get("headers", ()):
            if k == b"host":
                return v.decode("latin-1")
        return None

    def _origin(self) -> str | None:
        host = self._host()
        return f"{self._scope.get('scheme', 'http')}://{host}".lower() if host else None


def _has_body(status: int, message: Message, headers: Any) -> bool:
    """Whether a browser could render this response's body (not HEAD, 1xx, 204, 304, a redirect)."""
    if status < 200 or status in _NO_BODY:
        return False
    if 300 <= status < 400 and any(k.lower() == b"location" for k, _ in headers):
        return False
    return True


# --- how the browser decodes a page ------------------------------------------------------------------

PEEK = 1024  # body bytes browsers prescan for a <meta> charset
MAX_HEAD = 64 * 1024  # body bytes held, at most, while a page whose header names no charset is in <head>
# WHATWG labels of encodings that are not ASCII supersets (UTF-16, ISO-2022-JP, the "replacement"
# encoding for ISO-2022-KR/CN and HZ) that Python does not know by these names; UTF-7 and UTF-32 are
# no browser's, but a browser that ignores the label still may guess them.
_UNREADABLE_LABELS = frozenset(
    {"unicode", "unicodefeff", "unicodefffe", "csunicode", "iso-10646-ucs-2", "ucs-2", "replacement",
     "hz-gb-2312", "csiso2022kr", "csiso2022jp", "iso-2022-cn", "iso-2022-cn-ext"}
)
_UNREADABLE_CODECS = ("utf-16", "utf-32", "utf-7", "iso2022", "hz")
# Python codecs of the ASCII-compatible encodings browsers know. Any other codec Python finds for a
# label (EBCDIC, rot13, base64, "undefined"...) names nothing a browser decodes with: the label is
# ignored, as browsers ignore it, and never used to encode what the gate injects.
_BROWSER_CODECS = (
    "utf-8", "ascii", "iso8859", "cp125", "cp866", "cp874", "koi8", "mac-roman", "tis-620",
    "gbk", "gb2312", "gb18030", "big5", "euc_", "shift_jis", "cp932", "cp936", "cp949", "cp950",
)
# Every charset named in the held bytes (a <meta charset>, an http-equiv content, anywhere): one
# naming an unreadable encoding makes the page unreadable, whichever meta the browser picks.
_CHARSET_IN_BODY = re.compile(
    rb"charset[\t\n\f\r ]*=[\t\n\f\r ]*[\"']?[\t\n\f\r ]*([^\t\n\f\r \"';>/]+)", re.I
)
# Chromium keeps reading <meta> charsets past the first PEEK bytes while it is still in <head>.
_HEAD_END = re.compile(rb"<body|</head", re.I)
_UNKNOWN = ""


def _label_codec(label: str) -> str | None:
    """The Python codec for a charset label: None when not ASCII-compatible, "" when unknown."""
    label = label.strip().lower()
    if label in _UNREADABLE_LABELS:
        return None
    try:
        name = codecs.lookup(label).name
    except LookupError:
        return _UNKNOWN
    if name.startswith(_UNREADABLE_CODECS):
        return None
    return name if name.startswith(_BROWSER_CODECS) and name != "utf-8-sig" else _UNKNOWN


@functools.lru_cache(maxsize=64)  # an app sends few distinct types; the lookup costs a page 4 us
def _header_codec(content_type: bytes) -> str | None:
    """The codec the Content-Type's charset names (see `_label_codec`); "" when it names none the
    browser knows, so that the body decides."""
    low = content_type.lower()
    i = low.find(b"charset=")
    if i < 0:
        return _UNKNOWN
    return _label_codec(low[i + 8 :].split(b";", 1)[0].strip(b" \t\"'").decode("latin-1"))


def _enough(header: str | None, held: bytes, searched: int) -> bool:
    """Whether the held body start decides how the browser decodes the page (`searched`: bytes
    already searched for the end of <head>)."""
    if header != _UNKNOWN:
        return len(held) >= 3  # only a byte order mark overrides the header
    if len(held) < PEEK:
        return False
    return len(held) >= MAX_HEAD or _HEAD_END.search(held, max(0, searched - 6)) is not None


def _codec(header: str | None, head: bytes | None, *, complete: bool = True) -> str | None:
    """The codec the browser decodes a page with when it is an ASCII superset the gate can read,
    else None. `header` is `_header_codec`'s, `head` the held body start (None: no body),
    `complete` whether it reaches past <head> or the end. The order is the browser's: a byte order
    mark, then the header's charset, then a <meta> charset in the head."""
    if head:
        if head[:3] == b"\xef\xbb\xbf":
            return "utf-8"
        if head[:2] in (b"\xfe\xff", b"\xff\xfe"):
            return None
    if header != _UNKNOWN:
        return header
    if not head:
        return "utf-8"
    found = [_label_codec(m.decode("latin-1")) for m in _CHARSET_IN_BODY.findall(head)]
    if None in found:
        return None
    declared = next((c for c in found if c), None)
    if declared is None and (b"\x1b" in head or not complete):
        # undeclared, with escape sequences (a browser may detect ISO-2022-JP), or a <head> longer
        # than MAX_HEAD, where a <meta> charset may still follow
        return None
    return declared or "utf-8"


def _merge_vary(values: list[bytes]) -> bytes:
    tokens = [t.strip() for v in values for t in v.split(b",") if t.strip()]
    if b"*" in tokens:
        return b"*"
    present = {t.lower() for t in tokens}
    tokens.extend(t for t in VARY_TOKENS if t.lower() not in present)
    return b", ".join(tokens)
