"""The demo site: Tallgrove Workspaces, offices and meeting rooms by the day.

A plain Starlette app that uses consent-banner the way any site would: `ConsentMiddleware` in
front, `get_consent(request)` where a page depends on the visitor's choice, and
`@requires_consent("analytics")` on the first-party collection endpoint. The pages include every
kind of tracker as a careless site would (a vendor's analytics script, a Google tag, an ad pixel,
a map and a chat iframe, a campaign cookie set by our own server): keeping them out until the
visitor says yes is the middleware's job, not the templates'.

English pages live at `/...`, Swedish ones at `/sv/...` with `<html lang="sv">`, so the banner
follows the page's language (R14). There is no inline script anywhere: the Content-Security-Policy
the middleware sends allows only its own nonce-carrying snippet inline.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from consent_banner import ConsentConfig, ConsentMiddleware, get_consent, requires_consent

from .content import OFFICES, OFFICES_BY_SLUG, ROOMS, TEXTS
from .thirdparty import GTAG_ID

HERE = Path(__file__).parent
BOOKING_COOKIE = "booking_session"
CAMPAIGN_COOKIE = "_mkt_src"
MAX_BOOKINGS = 10_000  # open checkouts kept in memory; the oldest are forgotten first
MAX_HITS = 10_000  # analytics hits kept in memory


class Hits:
    """What `/collect` counted: the server-side half of the analytics (thread-safe for tests)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hits: list[dict[str, Any]] = []

    def add(self, hit: dict[str, Any]) -> None:
        with self._lock:
            self._hits.append(hit)
            del self._hits[:-MAX_HITS]

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._hits)


class Bookings:
    """Open checkouts by session id, and confirmed bookings by reference."""

    def __init__(self) -> None:
        self.open: OrderedDict[str, dict[str, str]] = OrderedDict()
        self.confirmed: dict[str, dict[str, str]] = {}

    def start(self, booking: dict[str, str]) -> str:
        session = secrets.token_urlsafe(18)
        self.open[session] = booking
        while len(self.open) > MAX_BOOKINGS:
            self.open.popitem(last=False)
        return session

    def confirm(self, session: str) -> str | None:
        booking = self.open.pop(session, None)
        if booking is None:
            return None
        ref = "TG-" + secrets.token_hex(3).upper()
        self.confirmed[ref] = booking
        return ref


def build_site(
    config: ConsentConfig,
    third_parties: Mapping[str, str],
    *,
    secret_keys: Sequence[str] | None = None,
) -> tuple[ConsentMiddleware, Hits]:
    """The site behind ConsentMiddleware, and its analytics hits.

    `third_parties` maps each third party (stats, ads, maps, chat, gtag) to the origin it is
    served at; the pages load their scripts, pixels and iframes from there.
    """
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    hits = Hits()
    bookings = Bookings()
    newsletter: list[str] = []  # addresses, in memory only (this is a demo), the latest MAX_HITS
    holder: dict[str, ConsentMiddleware] = {}

    def lang_of(request: Request) -> str:
        return "sv" if request.url.path == "/sv" or request.url.path.startswith("/sv/") else "en"

    def url_for_lang(lang: str, path: str) -> str:
        return ("/sv" + path) if lang == "sv" else path

    def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        lang = lang_of(request)
        consent = get_consent(request)
        path = request.url.path
        if lang == "sv":
            other = path.removeprefix("/sv") or "/"
        else:
            other = "/sv" + path if path != "/" else "/sv/"
        body = env.get_template(template).render(
            lang=lang,
            t=TEXTS[lang],
            tp=third_parties,
            gtag_id=GTAG_ID,
            path=path,
            quoted_path=quote(path, safe=""),
            other_language_url=other,
            url=lambda p: url_for_lang(lang, p),
            consent=consent,
            offices=OFFICES,
            controller=config.controller,
            **context,
        )
        response = HTMLResponse(body, status_code=status_code)
        source = request.query_params.get("utm_source")
        if source:
            # Our own server remembers the campaign like any marketing tool would, HttpOnly. The
            # middleware drops this Set-Cookie unless the visitor allowed marketing (R3).
            response.set_cookie(
                CAMPAIGN_COOKIE, source[:40], max_age=30 * 86400, httponly=True, samesite="lax"
            )
        return response

    async def home(request: Request) -> Response:
        if request.url.path == "/sv":
            return RedirectResponse("/sv/", status_code=308)
        return render(request, "home.html", title=TEXTS[lang_of(request)]["our_offices"],
                      show_newsletter=get_consent(request).allows("marketing"),
                      subscribed=request.query_params.get("subscribed") == "1")

    async def office(request: Request) -> Response:
        found = OFFICES_BY_SLUG.get(request.path_params["slug"])
        if found is None:
            return render(request, "notfound.html", status_code=404, title="404")
        return render(request, "office.html", title=found.city[lang_of(request)], office=found)

    async def book(request: Request) -> Response:
        lang = lang_of(request)
        error = False
        values = {
            "office": request.query_params.get("office", OFFICES[0].slug),
            "room": request.query_params.get("room", "meeting"),
            "date": (date.today() + timedelta(days=1)).isoformat(),
            "name": "",
            "company": "",
        }
        if request.method == "POST":
            form = await request.form(max_files=0, max_fields=10)
            values = {k: str(form.get(k, "")).strip()[:80] for k in values}
            found = OFFICES_BY_SLUG.get(values["office"])
            if found and values["room"] in {r.slug for r in found.rooms} and values["name"] and _is_date(
                values["date"]
            ):
                session = bookings.start({**values, "lang": lang})
                response = RedirectResponse(url_for_lang(lang, "/book/checkout"), status_code=303)
                # Necessary: without it there is no checkout. Declared as such in consent.toml (R6).
                response.set_cookie(BOOKING_COOKIE, session, httponly=True, samesite="lax", path="/")
                return response
            error = True
        return render(request, "book.html", title=TEXTS[lang]["book_title"], values=values, error=error,
                      rooms=ROOMS, status_code=400 if error else 200)

    async def checkout(request: Request) -> Response:
        lang = lang_of(request)
        session = request.cookies.get(BOOKING_COOKIE, "")
        booking = bookings.open.get(session)
        if request.method == "POST" and booking is not None:
            ref = bookings.confirm(session)
            return RedirectResponse(url_for_lang(lang, f"/book/done?ref={ref}"), status_code=303)
        found = OFFICES_BY_SLUG.get(booking["office"]) if booking else None
        return render(request, "checkout.html", title=TEXTS[lang]["checkout_title"], booking=booking,
                      office=found, room=ROOMS.get(booking["room"]) if booking else None)

    async def done(request: Request) -> Response:
        lang = lang_of(request)
        ref = request.query_params.get("ref", "")
        booking = bookings.confirmed.get(ref)
        if booking is None:
            return RedirectResponse(url_for_lang(lang, "/book"), status_code=303)
        return render(request, "done.html", title=TEXTS[lang]["done_title"], ref=ref,
                      office=OFFICES_BY_SLUG[booking["office"]])

    async def privacy(request: Request) -> Response:
        lang = lang_of(request)
        # The generated cookie declaration (R5), rendered by the middleware's own banner so the
        # table always matches consent.toml: the same HTML as GET {prefix}/declaration?lang=...
        declaration = Markup(holder["middleware"].banner.declaration(lang))
        recipients = [
            {
                "provider": s.provider,
                "category": config.localize(config.categories[s.category].label, lang),
                "purpose": config.localize(s.purpose, lang),
                "origins": s.origins,
            }
            for s in config.services
            if s.provider and s.provider != config.controller
        ]
        return render(request, f"privacy_{lang}.html", title=TEXTS[lang]["privacy_title"],
                      declaration=declaration, recipients=recipients, config=config,
                      signed_receipts=holder["middleware"].banner.signed_receipts)

    @requires_consent("marketing")
    async def subscribe(request: Request) -> Response:
        lang = lang_of(request)
        form = await request.form(max_files=0, max_fields=4)
        email = str(form.get("email", "")).strip()[:120]
        if "@" in email:
            newsletter.append(email)
            del newsletter[:-MAX_HITS]
        return RedirectResponse(url_for_lang(lang, "/?subscribed=1"), status_code=303)

    @requires_consent("analytics")
    async def collect(request: Request) -> Response:
        # Runs only with statistics allowed: without consent the decorator answers 204 and
        # nothing is counted, whatever a script sends (server-side tracking is gated too).
        try:
            data = await request.json()
        except ValueError:
            data = {}
        path = data.get("path") if isinstance(data, dict) else None
        hits.add({
            "at": time.time(),
            "path": path if isinstance(path, str) else None,
            "consent_id": get_consent(request).id,
        })
        return Response(status_code=204)

    async def collect_count(request: Request) -> JSONResponse:
        snapshot = hits.snapshot()
        consent_id = request.query_params.get("consent_id")
        if consent_id:
            snapshot = [h for h in snapshot if h["consent_id"] == consent_id]
        return JSONResponse({"count": len(snapshot), "hits": snapshot}, headers={"cache-control": "no-store"})

    def both(path: str, endpoint: Any, methods: list[str] | None = None) -> list[BaseRoute]:
        return [Route(path, endpoint, methods=methods), Route("/sv" + path, endpoint, methods=methods)]

    routes: list[BaseRoute] = [
        *both("/", home),
        Route("/sv", home),
        *both("/offices/{slug}", office),
        *both("/book", book, ["GET", "POST"]),
        *both("/book/checkout", checkout, ["GET", "POST"]),
        *both("/book/done", done),
        *both("/privacy", privacy),
        *both("/newsletter", subscribe, ["POST"]),
        Route("/collect", collect, methods=["POST"]),
        Route("/collect/count", collect_count),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes)
    middleware = ConsentMiddleware(app, config=config, secret_keys=secret_keys)
    holder["middleware"] = middleware
    return middleware, hits


def _is_date(value: str) -> bool:
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True
