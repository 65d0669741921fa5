"""The visitor's receipt: `GET {prefix}/receipt`, the records of the caller's own consent id (R24).

The consent id comes from the caller's verified cookie only, so nobody can ask for someone else's
history; as HTML in the visitor's language, as JSON, or signed as a compact JWS (`?format=jws`,
`signed_receipt.py`) when the log has an Ed25519 signing key.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from ..consent import Consent
from ..errors import LogError
from ..language import Languages
from ..log import ConsentLog, LoggedRecord
from ..log.keys import ENV_LOG_SIGNING_KEY, LogKeys
from ..paths import public_path
from ..request_checks import SiteOrigins
from ..texts import Texts, shipped_languages
from .pages import env, plain_error, security_headers
from .signed_receipt import FILENAME, MEDIA_TYPE, receipt_claims, sign_receipt

if TYPE_CHECKING:
    from ..banner import Banner

logger = logging.getLogger("consent_banner.audit")

# Without a banner (a receipt served apart from the middleware): the shipped languages and texts.
_SHIPPED_LANGUAGES = Languages(shipped_languages())
_SHIPPED_TEXTS = Texts()


def _wants_jws(request: Request) -> bool:
    if request.query_params.get("format") == "jws":
        return True
    accept = request.headers.get("accept", "")
    return MEDIA_TYPE in (part.split(";")[0].strip().lower() for part in accept.split(","))


def _wants_json(request: Request) -> bool:
    if request.query_params.get("format") == "json":
        return True
    accept = request.headers.get("accept", "")
    types = [part.split(";")[0].strip().lower() for part in accept.split(",")]
    return "application/json" in types and (
        "text/html" not in types or types.index("application/json") < types.index("text/html")
    )


async def receipt(
    request: Request,
    consent: Consent,
    log: ConsentLog,
    banner: Banner | None = None,
    *,
    log_keys: LogKeys | None = None,
    site: SiteOrigins | None = None,
) -> Response:
    """`GET {prefix}/receipt`: the caller's own records, from their verified consent cookie (R24).

    No valid cookie, no records: the consent id comes only from the signed cookie, never from
    the request, so nobody can ask for someone else's history. In the language and with the texts
    of `banner` (the page's banner: `?lang=`, then Accept-Language), or the shipped ones without it.
    Signed with the newest key of `log_keys` when asked for `?format=jws` (or `application/jose`),
    issued by the origin `site` says the browser is on.
    """
    signer = log_keys.signer if log_keys else None
    jws = _wants_jws(request)
    if jws and signer is None:
        return _jws_refused(
            f"this site's consent log has no public-key signing key ({ENV_LOG_SIGNING_KEY} is not set): "
            "there is no signed receipt, only the page and its JSON",
            404,
        )
    if jws and not consent.decided:
        return _jws_refused("this browser carries no consent decision: there is nothing to sign", 404)
    records: list[LoggedRecord] = []
    if consent.decided and consent.id:
        try:
            records = [r for r in await log.records_for(consent.id) if r.is_decision]
        except LogError as e:
            logger.error("receipt: the consent log failed: %s", e)
            return plain_error("The consent log cannot be read right now.", 503)
    headers = {"cache-control": "no-store", "vary": "Cookie"}
    base = public_path(request.scope).rstrip("/").removesuffix("/receipt")  # {root path}{prefix}
    if jws and signer is not None and consent.id:
        # The issuer is the origin the browser is on (the configured site origins: a forged Host
        # cannot name another), and its key is published under the same prefix.
        origin = (site or SiteOrigins()).origin(request.scope) or ""
        claims = receipt_claims(
            issuer=origin,
            consent_id=consent.id,
            log_id=log.log_id,
            log_key_url=f"{origin}{base}/log-key",
            records=records,
            issued_at=int(time.time()),
        )
        return Response(
            sign_receipt(claims, signer),
            media_type=MEDIA_TYPE,
            headers={
                **headers,
                "vary": "Cookie, Accept",
                "content-disposition": f'attachment; filename="{FILENAME}"',
                "x-content-type-options": "nosniff",
            },
        )
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
        # offered only when there is something to sign and a key to sign it with
        jws_url=f"{base}/receipt?format=jws" if records and signer is not None else None,
    )
    return HTMLResponse(html, headers={**security_headers(nonce), **headers})


def _jws_refused(reason: str, status: int) -> Response:
    """A signed receipt refused: the reason as JSON (the download asked for a file, not a page)."""
    return JSONResponse({"error": reason}, status_code=status, headers={"cache-control": "no-store"})
