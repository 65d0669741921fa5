"""The page a visitor without JavaScript gets when the banner's form post is refused or not recorded.

The banner's forms post to `POST {prefix}` and `{prefix}/withdraw`. A refusal there (a form token that
expired with the browser session, an origin refused, a body too large, too many decisions, a choice
that does not validate) or a log that cannot write (503) answers the visitor's browser with a short
HTML page instead of the JSON an API client reads: the status kept (Retry-After too), the visitor's
language as the banner negotiates it (the form's `language`, then Accept-Language), what happened and
what to do, and a link back to the page the form came from (its `return_to`, checked as the success
redirect checks it; when the body was never read, the Referer's path if it names this very host, or
one of `site_origins` when they are configured).
The page is static: no script, only the banner's own stylesheet, under a policy that allows nothing
else.

A request that asks JSON (a JSON body, or an Accept that prefers application/json to text/html)
keeps the JSON error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from .banner import TEMPLATES_DIR, Banner
from .decisions import FORM_SEEN, FORM_TYPES, _same_origin_path
from .paths import root_path
from .request_checks import SiteOrigins, media_type

# The failure, as the visitor is told it, by status: the key of its text in i18n/*.toml.
TEXT_BY_STATUS = {
    400: "failure_invalid",
    403: "failure_refused",
    413: "failure_too_large",
    429: "too_many_text",
    503: "failure_unavailable",
}
DECISION_PATHS = ("", "/withdraw")  # after the prefix: where the banner's forms post
MAX_ACCEPT = 1024  # characters of Accept read; a browser's is under 300
# Nothing but the banner's stylesheet (same origin): the page works, and looks like the banner, as is.
HEADERS = {
    "cache-control": "no-store",
    "content-security-policy": (
        "default-src 'none'; style-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "referrer-policy": "same-origin",
    "x-content-type-options": "nosniff",
}

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
    undefined=jinja2.StrictUndefined,
)


def prefers_json(accept: str | None) -> bool:
    """Whether an Accept header ranks application/json above text/html (absent counts as q=0)."""
    if not accept:
        return False
    q = {"application/json": 0.0, "text/html": 0.0}
    for part in accept[:MAX_ACCEPT].split(",", 32)[:32]:
        kind, *params = part.split(";")
        kind = kind.strip().lower()
        if kind not in q:
            continue
        weight = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    weight = 0.0
        q[kind] = max(q[kind], weight)
    return q["application/json"] > q["text/html"]


def is_form_post(request: Request, prefix: str) -> bool:
    """A banner form's post to a decision endpoint from a browser (not asking for JSON)."""
    # The path's end: under a root path (an app mounted at /shop) the prefix follows it.
    return (
        request.method == "POST"
        and request.scope["path"].rstrip("/").endswith(tuple(prefix + p for p in DECISION_PATHS))
        and media_type(request) in FORM_TYPES
        and not prefers_json(request.headers.get("accept"))
    )


def instead(request: Request, banner: Banner, answer: Response) -> Response:
    """The failure page in place of `answer` (a JSON error) for a banner form's post; else `answer`."""
    if answer.status_code < 400 or not is_form_post(request, banner.prefix):
        return answer
    form: Mapping[str, Any] = request.scope.get(FORM_SEEN) or {}
    language = banner.pick_language(_text(form.get("language")), request.headers.get("accept-language"))
    t = banner.catalog.of(language)
    status = answer.status_code
    retry_after = answer.headers.get("retry-after")
    text = t[TEXT_BY_STATUS.get(status, "failure_unavailable" if status >= 500 else "failure_invalid")]
    if status == 429:
        text = text.replace("{seconds}", retry_after or "60")
    html = _env.get_template("failure.html").render(
        language=language,
        title=t["too_many_title"] if status == 429 else t["failure_title"],
        text=text,
        back=_back(request, banner, form),
        back_text=t["too_many_back"] if status == 429 else t["failure_back"],
        css_url=root_path(request.scope) + banner.css_url,  # under the app's mount point, as the banner's
    )
    headers = dict(HEADERS)
    if retry_after:
        headers["retry-after"] = retry_after
    return HTMLResponse(html, status_code=status, headers=headers)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _back(request: Request, banner: Banner, form: Mapping[str, Any]) -> str:
    """Where the page came from: the form's return_to, else the Referer when it is this very site."""
    home = root_path(request.scope) + "/"  # the app's root, wherever it is mounted
    if "return_to" in form:
        return _same_origin_path(form["return_to"], home)
    try:
        parts = urlsplit(request.headers.get("referer", ""))
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return home
    if parts.scheme not in ("http", "https"):
        return home
    site = banner.config.site_origins
    if site:  # behind a proxy the Host is the proxy's: the origins the browser sees decide
        if not SiteOrigins(site).own(f"{parts.scheme}://{parts.netloc}", request.scope):
            return home
    # This very host (the scheme aside: behind a TLS proxy the request's is not the browser's).
    elif parts.netloc.lower() != request.headers.get("host", "").lower():
        return home
    return _same_origin_path(parts.path + (f"?{parts.query}" if parts.query else ""), home)
