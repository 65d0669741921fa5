"""The wrapped ASGI `send` of one request: where the gate touches a response (see `gate/__init__.py`).

`GatedSend` acts on ``http.response.start`` in a few named steps (read the headers, classify the
response, filter its cookies, rebuild its headers, then either add the policy now or hold the start
until the body's first bytes tell how the browser will decode the page), and streams an HTML body
through the rewriter. A response nothing depends on passes after one look at its headers; one
that depends on the consent (or whose app read it: `access.CONSENT_READ`) is kept out of shared
caches and loses the validators of the app's representation (`caching.py`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from ..access import CONSENT_READ
from ..paths import root_path
from . import caching
from .caching import VARY_TOKENS
from .charset import MAX_HEAD, body_codec, enough, header_codec
from .csp import governs_scripts
from .html import Blocked, HtmlRewriter, Inject
from .linkheader import filter_link

if TYPE_CHECKING:
    from . import Plan, ResponseGate
    from .inline import InlineRules

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]
Scope = MutableMapping[str, Any]
Headers = list[tuple[bytes, bytes]]

__all__ = ["VARY_TOKENS", "GatedSend", "Gating", "PageHooks"]

_NO_BODY = frozenset({204, 205, 206, 304})
_XHTML = b"application/xhtml+xml"
_CHUNK = 64 * 1024  # bytes read at a time from a file sent with http.response.pathsend


class PageHooks(Protocol):
    """What an HTML response needs from the middleware (see `ResponseGate.wrap_send`'s `page`)."""

    @property
    def inject(self) -> Inject | None:
        """The snippets to inject for the page's `lang`; None: nothing is injected."""
        ...

    def nonce(self) -> str: ...

    def language(self, html_lang: str | None) -> str:
        """The page's language, the one its banner is in: its placeholders are written in it."""
        ...

    def html_headers(self) -> Headers: ...


class _Kind(NamedTuple):
    """What the start message says of the response, as far as consent goes."""

    html: bool  # HTML (or XHTML) the gate acts on
    xhtml: bool
    unlabelled: bool  # a body without Content-Type, under a policy: it gets one and nosniff
    content_type: bytes | None
    encoding: bytes | None  # Content-Encoding


class Gating:
    """The gate as it applies to one visitor's responses: the plan of their consent state and the
    request's cookies it denies (the middleware remembers one per Cookie header and Sec-GPC signal,
    so a returning visitor's request builds none); `wrap` makes the `send` of one request."""

    __slots__ = ("gate", "plan", "request_cookies", "page", "html_passes")

    def __init__(
        self,
        gate: ResponseGate,
        plan: Plan,
        request_cookies: dict[str, str],
        page: Callable[[Scope], PageHooks],
    ) -> None:
        self.gate = gate
        self.plan = plan
        self.request_cookies = request_cookies  # the request's cookies the consent denies
        self.page = page
        self.html_passes = not gate.handles_html

    def wrap(self, send: Send, scope: Scope) -> Send:
        """The wrapped `send` of one request: a `GatedSend` only for a response that depends on consent.

        Most responses are typed, not HTML, and set no cookies while the request holds none the
        consent denies, and their app did not read the consent: one pass over the start message's
        headers says so, and from then on every message goes straight to `send`. Anything else (a
        cookie set or to expire, HTML, a body without Content-Type, the consent read) is handed,
        start message first, to a `GatedSend` built for it.
        """
        gating = self
        full: GatedSend | None = None
        passing = False
        # Where the middleware is mounted: a router inside the app (Starlette's Mount) rewrites
        # root_path in this very scope, but our routes and the URLs we emit are where the middleware
        # is, not where the app routed the request (`path` keeps the whole path, as the ASGI spec says).
        root = scope.get("root_path")

        # A closure, not an object, and not a coroutine function: this runs for every message of
        # every response, a function is cheaper to make and to call than an instance's __call__, and
        # handing back the awaitable of the `send` it calls spares a coroutine per message.
        def gated(message: Message) -> Awaitable[None]:
            nonlocal full, passing
            if passing:
                return send(message)
            if full is None:
                if message["type"] != "http.response.start":
                    return send(message)
                if not gating.request_cookies:
                    content_type = None
                    for k, v in message.get("headers") or ():
                        lk = k.lower()
                        if lk == b"content-type":
                            content_type = v
                        elif lk == b"set-cookie":
                            break
                    else:
                        if content_type is not None and CONSENT_READ not in scope["state"]:
                            low = content_type[:21].lower()
                            if gating.html_passes or low[:9] != b"text/html" and low != _XHTML:
                                passing = True  # nothing depends on consent: untouched, still cacheable
                                return send(message)
                g = gating
                if scope.get("root_path") != root:
                    ours = {**scope, "root_path": root}
                    full = GatedSend(g.gate, send, ours, g.plan, g.request_cookies, g.page)
                else:
                    full = GatedSend(g.gate, send, scope, g.plan, g.request_cookies, g.page)
            return full(message)

        return gated


class GatedSend:
    """The wrapped `send` of a response that may depend on consent (see `Gating.wrap`)."""

    __slots__ = (
        "_gate",
        "_send",
        "_scope",
        "_plan",
        "_cookies",
        "_page",
        "_hooks",
        "_busy",
        "_rewriter",
        "_held",
        "_peek",
        "_header",
        "_searched",
        "_rewrite",
        "_deferred",
        "_xhtml",
    )
    _hooks: PageHooks | None  # the page's nonce, language, snippets and headers; None until needed
    # Set in `_start` only for an HTML page held until its first bytes are read (not on the hot path):
    _held: Message | None  # the start message, until the body's first bytes are read
    _rewriter: HtmlRewriter | None
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
        plan: Plan,
        request_cookies: dict[str, str],
        page: Callable[[Scope], PageHooks],
    ) -> None:
        self._gate = gate
        self._send = send
        self._scope = scope
        self._plan = plan
        self._cookies = request_cookies  # the request's cookies the consent denies
        self._page = page
        self._hooks = None
        self._busy = False  # a start message held, or a body rewritten: every message goes through us

    async def __call__(self, message: Message) -> None:
        # Kept flat on purpose: this runs for every message of every response.
        if not self._busy:
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

    # --- the start message, step by step ------------------------------------------------------------

    def _start(self, message: Message) -> bool:
        """Apply the cookie, CSP and caching rules to the start message; False when it is held back."""
        headers: Headers = message.get("headers") or []
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
        kind = self._kind(content_type, encoding, message, headers)
        denied = self._gate.denied_in_request(self._cookies, self._plan) if self._cookies else ()
        read = CONSENT_READ in self._scope["state"]  # the app asked get_consent, csp_nonce...
        if not set_cookies and not denied and not kind.html and not kind.unlabelled and not read:
            return True  # nothing depends on consent: untouched, still cacheable
        if kind.html or kind.unlabelled:
            self._hooks = self._page(self._scope)
        rules = self._gate.cookie_rules
        kept, dropped = rules.filter(set_cookies, self._plan.allowed) if set_cookies else ([], False)
        expiries = self._expiries(denied) if denied else []
        # Whether the gate made the headers or the body differ from the app's: the app's validators
        # then stand for something this response is not.
        changed = dropped or bool(expiries) or kind.html or kind.unlabelled
        # A cookie kept only because the visitor allows its service depends on the consent too.
        private = changed or read or (bool(kept) and rules.consented(kept))
        gated = (kind.html or kind.unlabelled) and self._gate.csp_header is not None
        app_csp, endpoints = self._rebuild(
            message, headers, kind, kept + expiries, private=private, validators=not changed, gated=gated
        )
        return self._policy_or_hold(message, kind, app_csp, endpoints, gated=gated)

    def _kind(
        self, content_type: bytes | None, encoding: bytes | None, message: Message, headers: Headers
    ) -> _Kind:
        """What kind of response the start message announces."""
        gate = self._gate
        xhtml = unlabelled = False
        if content_type is not None:
            xhtml = content_type[:21].lower() == _XHTML
            is_html = gate.handles_html and _is_html(content_type)
        else:
            # The browser would sniff a body without a type, maybe into an ungated HTML page.
            is_html = False
            unlabelled = gate.csp_header is not None and _has_body(message.get("status", 200), headers)
        return _Kind(is_html, xhtml, unlabelled, content_type, encoding)

    def _expiries(self, denied: Iterable[tuple[str, Any]]) -> list[bytes]:
        """Set-Cookie values expiring the request's cookies the consent denies."""
        rules, site = self._gate.cookie_rules, self._gate.site
        host, secure = site.host(self._scope), site.secure(self._scope)
        return [v for name, decl in denied for v in rules.expire(name, decl, host=host, secure=secure)]

    def _rebuild(
        self,
        message: Message,
        headers: Headers,
        kind: _Kind,
        set_cookies: list[bytes],
        *,
        private: bool,
        validators: bool,
        gated: bool,
    ) -> tuple[list[bytes], list[bytes]]:
        """The start message's new headers; the app's CSP and Reporting-Endpoints, taken out to be merged.

        `private`: the response depends on the consent, and is kept out of shared caches (`caching.py`);
        `validators`: its app's ETag and Last-Modified still describe it."""
        csp_header = self._gate.csp_header
        app_csp: list[bytes] = []
        endpoints: list[bytes] = []
        rest: Headers = []
        for k, v in headers:
            lk = k.lower()
            if lk == b"set-cookie":
                continue
            if gated and lk == csp_header:
                app_csp.append(v)
            elif gated and lk == b"reporting-endpoints":
                endpoints.append(v)
            elif lk == b"link" and (kind.html or kind.unlabelled) and self._gate.rewrites:
                link = filter_link(v, self._plan.hosts)  # a preconnect to a denied host: dropped
                if link is not None:
                    rest.append((k, link))
            else:
                rest.append((k, v))
        rest.extend((b"set-cookie", v) for v in set_cookies)
        if kind.html and self._hooks is not None:
            rest.extend(self._hooks.html_headers())
        if kind.unlabelled:
            rest.append((b"x-content-type-options", b"nosniff"))
        message["headers"] = caching.private(rest, validators=validators) if private else rest
        return app_csp, endpoints

    def _policy_or_hold(
        self, message: Message, kind: _Kind, app_csp: list[bytes], endpoints: list[bytes], *, gated: bool
    ) -> bool:
        """Adds the policy now, or holds the start message until the body's first bytes tell how the
        browser decodes the page (a BOM, a <meta charset>): both the policy and the rewrite wait."""
        status = message.get("status", 200)
        body = kind.html and self._scope.get("method") != "HEAD" and _has_body(status, ())
        encoded = kind.encoding is not None and kind.encoding.strip().lower() not in (b"", b"identity")
        readable = kind.html and not encoded
        if kind.html and not readable:
            self._gate.warn_encoded()
        self._rewrite = readable and self._wants_rewrite(kind.xhtml)
        if readable and body and (gated or self._rewrite):
            self._header = header_codec(kind.content_type or b"")
            self._xhtml = kind.xhtml
            self._peek, self._searched = b"", 0
            self._held, self._rewriter, self._busy = message, None, True
            self._deferred = (app_csp, endpoints) if gated else None
            return False
        if gated:
            # What the gate does not rewrite (XHTML, compressed, no Content-Type) gets only what is granted.
            granted_only = kind.xhtml or kind.unlabelled or not readable
            if kind.html and not granted_only and not body:
                granted_only = header_codec(kind.content_type or b"") is None
            self._policy_headers(message, app_csp, endpoints, granted_only=granted_only)
        return True

    def _wants_rewrite(self, xhtml: bool) -> bool:
        # The banner is HTML, not XML: an XHTML page is rewritten and gated, but gets no banner.
        inject = self._hooks.inject if self._hooks is not None and not xhtml else None
        plan = self._plan
        return bool((self._gate.rewrites and (plan.hosts or plan.inline)) or inject is not None)

    def _policy_headers(
        self, message: Message, app_csp: list[bytes], endpoints: list[bytes], *, granted_only: bool
    ) -> None:
        """Adds the policy (and Reporting-Endpoints) to the start message."""
        gate, hooks = self._gate, self._hooks
        assert gate.csp_header is not None and hooks is not None
        root = root_path(self._scope)
        # Chromium ignores report-uri once report-to is given, and the Reporting API delivers only
        # to secure origins: on plain http report-uri alone, so that reports arrive at all.
        secure = gate.site.secure(self._scope)
        policy = gate.csp(
            self._plan,
            app_csp,
            root_path=root,
            self_origin=gate.site.origin(self._scope) if app_csp else None,
            nonce=hooks.nonce(),
            secure=secure,
            granted_only=granted_only,
        )
        headers = message["headers"]
        headers.append((gate.csp_header, policy))
        if secure or endpoints:
            headers.append((b"reporting-endpoints", gate.reporting_endpoints(root, endpoints)))

    # --- the body ----------------------------------------------------------------------------------

    def _release(self, head: bytes, complete: bool) -> Message:
        """Decides, from the body's first bytes, how the held page is read, and completes its headers."""
        held, hooks = self._held, self._hooks
        assert held is not None and hooks is not None
        self._held = None
        codec = body_codec(self._header, head, complete=complete)
        deferred, self._deferred = self._deferred, None
        if deferred is not None:
            # A page the gate cannot read passes unrewritten: only what is granted may load. XHTML
            # is rewritten as HTML, but the XML parser makes elements where HTML has text
            # (an <img> inside <style>): only what is granted may load there either.
            self._policy_headers(held, *deferred, granted_only=codec is None or self._xhtml)
        if codec is not None and self._rewrite:
            rewrites = self._gate.rewrites
            self._rewriter = HtmlRewriter(
                self._plan.hosts if rewrites else None,
                None if self._xhtml else hooks.inject,
                charset=codec,
                placeholder=self._placeholder,
                mark=hooks.nonce,
                inline=self._inline_rules(deferred) if rewrites else None,
            )
            headers = held["headers"]
            headers[:] = [(k, v) for k, v in headers if k.lower() != b"content-length"]
        self._busy = self._rewriter is not None
        return held

    def _inline_rules(self, deferred: tuple[list[bytes], list[bytes]] | None) -> InlineRules | None:
        """The plan's inline script rules; where the app's own policy (its header of the kind the gate
        sends, in `deferred`) decides which scripts run, those that nonce no unmatched script."""
        plan = self._plan
        if plan.inline is not plan.inline_app_policy and deferred and governs_scripts(deferred[0]):
            return plan.inline_app_policy
        return plan.inline

    def _placeholder(self, blocked: Blocked, html_lang: str | None) -> str:
        # In the page's language, as its banner; with the nonce: the script honours only the gate's "Allow".
        hooks = self._hooks
        assert hooks is not None
        html = self._gate.placeholder(blocked, html_lang, language=hooks.language(html_lang))
        return html.replace("<div ", f'<div nonce="{hooks.nonce()}" ', 1)

    async def _body(self, chunk: bytes, more: bool) -> None:
        if self._held is not None:
            whole = not more and not self._peek  # the whole body in one message: its length is known
            self._peek += chunk
            if more and not enough(self._header, self._peek, self._searched):
                self._searched = len(self._peek)
                return
            chunk, self._peek = self._peek, b""
            held = self._release(chunk, complete=not more or len(chunk) < MAX_HEAD)
            if self._rewriter is None:
                await self._send(held)
                await self._send({"type": "http.response.body", "body": chunk, "more_body": more})
                return
            data = self._rewriter.feed(chunk) if more else self._rewriter.rewrite(chunk)
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


def _is_html(content_type: bytes) -> bool:
    """Whether a Content-Type is HTML's or XHTML's."""
    low = content_type[:21].lower()
    return low[:9] == b"text/html" or low == _XHTML


def _has_body(status: int, headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether a browser could render this response's body (not 1xx, 204, 304, a redirect)."""
    if status < 200 or status in _NO_BODY:
        return False
    if 300 <= status < 400 and any(k.lower() == b"location" for k, _ in headers):
        return False
    return True
