"""The demo's "third parties": stats, ads, maps, chat and a Google tag stand-in.

Each is a small Starlette app the demo command serves on its own loopback address (127.0.0.2,
127.0.0.3, ...), so for the browser it is a real cross-site host: its cookies are third-party
cookies, its scripts need a place in the site's Content-Security-Policy, and every request it gets
is a request the visitor's browser really made. Each app sets its own cookie on its responses and
remembers every request (`GET /__requests` returns them as JSON, for the browser tests).

None of them contacts anything outside this machine: the Google tag stand-in only reads
`window.dataLayer`, sets a first-party `_ga_demo` cookie and sends a beacon to its own host.
"""

from __future__ import annotations

import html
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# name -> (loopback address, cookie it sets on its own host). Different IPs in 127/8 are
# different sites for Chromium's cookie jar; different ports on one IP would share cookies.
THIRD_PARTIES: dict[str, tuple[str, str]] = {
    "stats": ("127.0.0.2", "_st_id.1"),
    "ads": ("127.0.0.3", "_ads"),
    "maps": ("127.0.0.4", "_maps_pref"),
    "chat": ("127.0.0.5", "_chat_sid"),
    "gtag": ("127.0.0.6", "_ga_demo"),
}
# How long each host keeps its cookie (seconds; None: a session cookie), within what consent.toml
# declares for it: the demo keeps its own declaration, so `consent-banner scan` finds it clean.
COOKIE_MAX_AGE: dict[str, int | None] = {
    "stats": 365 * 86400,
    "ads": 90 * 86400,
    "maps": 365 * 86400,
    "chat": None,
    "gtag": 730 * 86400,
}
GTAG_ID = "G-DEMO000000"
MAX_RECORDED = 5000  # requests kept per host; the oldest go first
# The smallest transparent GIF: the body of a tracking pixel.
PIXEL_GIF = bytes.fromhex(
    "47494638396101000100800000000000ffffff21f90401000000002c000000000100010000020144003b"
)


@dataclass
class RequestLog:
    """Every request a third-party host received, oldest first (thread-safe: tests read it)."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, scope: Scope) -> None:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        entry = {
            "at": time.time(),
            "method": scope["method"],
            "path": scope["path"],
            "query": scope.get("query_string", b"").decode("latin-1"),
            "referer": headers.get("referer"),
            "cookie": headers.get("cookie"),
            "sec_fetch_dest": headers.get("sec-fetch-dest"),
        }
        with self._lock:
            self.entries.append(entry)
            del self.entries[:-MAX_RECORDED]

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.entries)


class _Recording:
    """Records every request except the tests' own `/__requests`, then hands it on."""

    def __init__(self, app: ASGIApp, log: RequestLog) -> None:
        self.app = app
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] != "/__requests":
            self.log.add(scope)
        await self.app(scope, receive, send)


class _SettingCookie:
    """Adds the host's own cookie to every response, as ad-tech and widget hosts do."""

    def __init__(self, app: ASGIApp, cookie: str, max_age: int | None) -> None:
        self.app = app
        self.cookie = cookie
        self.lifetime = f"; Max-Age={max_age}" if max_age else ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/__requests":
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                value = secrets.token_hex(8)
                # SameSite=None is what a cross-site tracker needs to be stored from a subresource;
                # Chromium accepts Secure on loopback http, which it treats as a secure context. A
                # browser that blocks third-party cookies (incognito, Playwright's contexts) keeps
                # it only when the host is visited directly.
                header = f"{self.cookie}={value}; Path=/{self.lifetime}; SameSite=None; Secure"
                message = {**message, "headers": [*message["headers"], (b"set-cookie", header.encode())]}
            await send(message)

        await self.app(scope, receive, sending)


def _app(name: str, routes: list[Route], log: RequestLog) -> ASGIApp:
    async def requests(request: Request) -> JSONResponse:
        return JSONResponse(log.snapshot(), headers={"access-control-allow-origin": "*"})

    async def index(request: Request) -> HTMLResponse:
        return HTMLResponse(f"<!doctype html><title>{name}</title><p>Demo third party: {name}</p>")

    app = Starlette(routes=[Route("/__requests", requests), Route("/", index), *routes])
    return _Recording(_SettingCookie(app, THIRD_PARTIES[name][1], COOKIE_MAX_AGE[name]), log)


def _js(body: str) -> Response:
    return Response(body, media_type="text/javascript", headers={"cache-control": "no-store"})


# --- stats (analytics) ------------------------------------------------------------------------------

STATS_JS = """\
/* Countwell Analytics (demo): a visit counter. Runs in the site's page once statistics are allowed. */
(function () {
  var origin = %(origin)s;
  function cookie(name) {
    var m = document.cookie.match(new RegExp("(?:^|; )" + name.replace(".", "\\\\.") + "=([^;]*)"));
    return m ? m[1] : null;
  }
  var id = cookie("_st_id.1") || Math.random().toString(36).slice(2, 12);
  document.cookie = "_st_id.1=" + id + "; path=/; max-age=" + 13 * 31 * 86400 + "; SameSite=Lax";
  document.cookie = "_st_ses=1; path=/; max-age=1800; SameSite=Lax";
  var hit = JSON.stringify({ path: location.pathname, referrer: document.referrer ? "yes" : "no" });
  // First-party collection endpoint on the site (gated on the server with requires_consent).
  fetch("/collect", { method: "POST", body: hit, headers: { "content-type": "application/json" },
                      credentials: "same-origin", keepalive: true });
  // And the vendor's own beacon, carrying its third-party cookie.
  var img = new Image(1, 1);
  img.src = origin + "/hit?p=" + encodeURIComponent(location.pathname);
  window.countwell = { id: id };
})();
"""


def stats_app(origin: str, log: RequestLog) -> ASGIApp:
    async def script(request: Request) -> Response:
        return _js(STATS_JS % {"origin": json.dumps(origin)})

    async def hit(request: Request) -> Response:
        return Response(PIXEL_GIF, media_type="image/gif", headers={"cache-control": "no-store"})

    return _app("stats", [Route("/stats.js", script), Route("/hit", hit, methods=["GET", "POST"])], log)


# --- ads (marketing) --------------------------------------------------------------------------------


def ads_app(origin: str, log: RequestLog) -> ASGIApp:
    async def pixel(request: Request) -> Response:
        return Response(PIXEL_GIF, media_type="image/gif", headers={"cache-control": "no-store"})

    async def script(request: Request) -> Response:
        # A tag the tests inject to prove the browser's CSP refuses it without marketing consent.
        pixel_url = json.dumps(origin + "/px.gif?e=js")
        return _js(f"window.brightpostLoaded = true; new Image(1, 1).src = {pixel_url};")

    return _app("ads", [Route("/px.gif", pixel), Route("/ads.js", script)], log)


# --- maps (embedded content) ------------------------------------------------------------------------

MAP_PAGE = """<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8"><title>Atlasly Maps: {city}</title>
<style>
body {{ margin: 0; font: 14px system-ui, sans-serif; background: #e8efe6; color: #1d2b1f; }}
svg {{ display: block; width: 100%; height: 100vh; }}
.label {{ position: absolute; left: 8px; bottom: 8px; background: #fff; padding: 2px 6px; }}
</style></head>
<body>
<svg viewBox="0 0 400 240" role="img" aria-label="{city}">
<rect width="400" height="240" fill="#e8efe6"/>
<path d="M0 170 C 90 150, 160 210, 400 160 L 400 240 L 0 240 Z" fill="#a9c8e8"/>
<path d="M40 0 L 120 240 M 0 90 L 400 60 M 260 0 L 300 240" stroke="#fff" stroke-width="9"/>
{pins}
</svg>
<p class="label">Atlasly Maps &middot; {city}</p>
</body></html>
"""


def maps_app(origin: str, log: RequestLog) -> ASGIApp:
    async def embed(request: Request) -> HTMLResponse:
        city = request.query_params.get("city", "Sverige")[:40]
        lang = "sv" if request.query_params.get("lang") == "sv" else "en"
        count = max(1, min(int(request.query_params.get("pins", "1") or 1), 6))
        pins = "".join(
            f'<circle cx="{90 + 55 * i}" cy="{95 + (i % 2) * 30}" r="9" fill="#c0392b" stroke="#fff"/>'
            for i in range(count)
        )
        return HTMLResponse(MAP_PAGE.format(lang=lang, city=html.escape(city), pins=pins))

    return _app("maps", [Route("/embed", embed)], log)


# --- chat (embedded content) ------------------------------------------------------------------------

CHAT_PAGE = """<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8"><title>Parley Chat</title>
<style>
body {{ margin: 0; font: 14px system-ui, sans-serif; background: #fff; color: #222; }}
header {{ background: #23415e; color: #fff; padding: 8px 12px; font-weight: 600; }}
main {{ padding: 8px 12px; }}
.msg {{ background: #eef2f6; padding: 6px 8px; border-radius: 6px; margin: 6px 0; }}
form {{ display: flex; gap: 6px; padding: 0 12px; }}
input {{ flex: 1; padding: 6px; }} button {{ padding: 6px 10px; }}
</style></head>
<body>
<header>{title}</header>
<main>{messages}</main>
<form method="post" action="/message"><input name="text" aria-label="{label}" maxlength="200" required>
<input type="hidden" name="lang" value="{lang}"><button>{send}</button></form>
</body></html>
"""
CHAT_TEXTS = {
    "en": {
        "title": "Chat with our booking team",
        "hello": "Hi! Questions about a room or a desk? Ask away.",
        "label": "Your message",
        "send": "Send",
        "reply": "Thanks! Someone from the team will answer shortly.",
    },
    "sv": {
        "title": "Chatta med vårt bokningsteam",
        "hello": "Hej! Frågor om ett rum eller en plats? Fråga på.",
        "label": "Ditt meddelande",
        "send": "Skicka",
        "reply": "Tack! Någon i teamet svarar snart.",
    },
}


def chat_app(origin: str, log: RequestLog) -> ASGIApp:
    def page(lang: str, extra: list[str]) -> HTMLResponse:
        t = CHAT_TEXTS[lang]
        messages = "".join(f'<p class="msg">{html.escape(m)}</p>' for m in [t["hello"], *extra])
        return HTMLResponse(
            CHAT_PAGE.format(lang=lang, title=t["title"], messages=messages, label=t["label"], send=t["send"])
        )

    async def widget(request: Request) -> HTMLResponse:
        return page("sv" if request.query_params.get("lang") == "sv" else "en", [])

    async def message(request: Request) -> HTMLResponse:
        form = await request.form(max_files=0, max_fields=4)
        lang = "sv" if form.get("lang") == "sv" else "en"
        text = str(form.get("text", ""))[:200]
        return page(lang, [text, CHAT_TEXTS[lang]["reply"]])

    return _app("chat", [Route("/widget", widget), Route("/message", message, methods=["POST"])], log)


# --- Google tag stand-in (analytics, Consent Mode v2) -------------------------------------------------

GTAG_JS = """\
/* A local stand-in for the Google tag (gtag.js): it talks to no Google host. Like the real tag it
   reads the Consent Mode state from window.dataLayer ('consent' 'default', then 'update') and only
   stores a cookie and sends a measurement beacon while analytics_storage is granted. */
(function () {
  var origin = %(origin)s, id = %(id)s;
  var dl = (window.dataLayer = window.dataLayer || []);
  var state = {}, sent = false, seen = 0;
  function read() {
    for (; seen < dl.length; seen++) {
      var a = dl[seen];
      if (a && a[0] === "consent" && (a[1] === "default" || a[1] === "update") && a[2]) {
        for (var k in a[2]) state[k] = a[2][k];
      }
    }
  }
  function measure() {
    read();
    if (sent || state.analytics_storage !== "granted") return;
    sent = true;
    var cid = Math.floor(Math.random() * 1e9) + "." + Math.floor(Date.now() / 1000);
    document.cookie = "_ga_demo=GA1.1." + cid + "; path=/; max-age=" + 2 * 366 * 86400 + "; SameSite=Lax";
    var url = origin + "/g/collect?v=2&tid=" + encodeURIComponent(id) + "&cid=" + cid +
              "&dl=" + encodeURIComponent(location.pathname);
    if (!(navigator.sendBeacon && navigator.sendBeacon(url))) { new Image(1, 1).src = url; }
  }
  var push = dl.push;
  dl.push = function () { var r = push.apply(dl, arguments); measure(); return r; };
  window.gtagDemo = { state: state, id: id };
  measure();
})();
"""


def gtag_app(origin: str, log: RequestLog) -> ASGIApp:
    async def script(request: Request) -> Response:
        tag_id = request.query_params.get("id", GTAG_ID)[:32]
        return _js(GTAG_JS % {"origin": json.dumps(origin), "id": json.dumps(tag_id)})

    async def collect(request: Request) -> Response:
        return Response(status_code=204)

    routes = [Route("/gtag/js", script), Route("/g/collect", collect, methods=["GET", "POST"])]
    return _app("gtag", routes, log)


FACTORIES: dict[str, Callable[[str, RequestLog], ASGIApp]] = {
    "stats": stats_app,
    "ads": ads_app,
    "maps": maps_app,
    "chat": chat_app,
    "gtag": gtag_app,
}


def build_third_party(name: str, origin: str) -> tuple[ASGIApp, RequestLog]:
    """The app of one third party served at `origin`, and the log of the requests it gets."""
    log = RequestLog()
    return FACTORIES[name](origin, log), log
