"""The visitor's receipt: `GET {prefix}/receipt`, the records of the caller's own consent id (R24).

The consent id comes from the caller's verified cookie only, so nobody can ask for someone else's
history; as HTML in the visitor's language, or as JSON.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from ..consent import Consent
from ..errors import LogError
from ..language import Languages
from ..log import ConsentLog, LoggedRecord
from ..paths import public_path
from ..texts import Texts, shipped_languages
from .pages import env, plain_error, security_headers

if TYPE_CHECKING:
    from ..banner import Banner

logger = logging.getLogger("consent_banner.audit")

# Without a banner (a receipt served apart from the middleware): the shipped languages and texts.
_SHIPPED_LANGUAGES = Languages(shipped_languages())
_SHIPPED_TEXTS = Texts()


def _wants_json(request: Request) -> bool:
    if request.query_params.get("format") == "json":
        return True
    accept = request.headers.get("accept", "")
    types = [part.split(";")[0].strip().lower() for part in accept.split(",")]
    return "application/json" in types and (
        "text/html" not in types or types.index("application/json") < types.index("text/html")
    )


async def receipt(
    request: Request, consent: Consent, log: ConsentLog, banner: Banner | None = None
) -> Response:
    """`GET {prefix}/receipt`: the caller's own records, from their verified consent cookie (R24).

    No valid cookie, no records: the consent id comes only from the signed cookie, never from
    the request, so nobody can ask for someone else's history. In the language and with the texts
    of `banner` (the page's banner: `?lang=`, then Accept-Language), or the shipped ones without it.
    """
    records: list[LoggedRecord] = []
    if consent.decided and consent.id:
        try:
            records = [r for r in await log.records_for(consent.id) if r.is_decision]
        except LogError as e:
            logger.error("receipt: the consent log failed: %s", e)
            return plain_error("The consent log cannot be read right now.", 503)
    headers = {"cache-control": "no-store", "vary": "Cookie"}
    if _wants_json(request):
        return JSONResponse(
            {
                "consent_id": consent.id if consent.decided else None,
                "records": [r.to_json() for r in records],
            },
            headers=headers,
        )
    languages, texts = (banner.languages, banner.catalog) if banner else (_SHIPPED_LANGUAGES, _SHIPPED_TEXTS)
    lang = languages.pick(request.query_params.get("lang"), request.headers.get("accept-language"))
    nonce = secrets.token_urlsafe(16)
    html = env.get_template("receipt.html").render(
        t=texts.of(lang),
        lang=lang,
        records=records,
        consent_id=consent.id if consent.decided else None,
        nonce=nonce,
        json_url=f"{public_path(request.scope)}?format=json",  # under the root path, whoever set it
    )
    return HTMLResponse(html, headers={**security_headers(nonce), **headers})
