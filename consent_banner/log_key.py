"""`{prefix}/log-key`: the public keys the consent log is signed with, for anyone to verify it.

PEM by default, as `text/plain` (a browser shows it, curl prints it, and `--public-key` takes the
saved file as it is; there is no registered media type for a PEM public key); a JWK Set
(`application/jwk-set+json`, RFC 7517) when the request accepts `application/jwk+json` or
`application/jwk-set+json`. Both list the key that signs now first and then the retired ones
(CONSENT_LOG_PUBLIC_KEYS), each with its id, so a log that was rotated still verifies.

The answer is the same for every visitor and changes only when the operator changes a key: it
is cacheable by anyone (`public`, an hour), and readable from any origin (no credentials, nothing
secret), so an auditor's own tools can fetch it.
"""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .consent import Consent
from .log.keys import ENV_LOG_SIGNING_KEY, LogKeys

JWK_TYPES = ("application/jwk+json", "application/jwk-set+json")
CACHE = "public, max-age=3600"


class LogKeyEndpoint:
    """The endpoint, its two bodies made once (the keys come from the environment at start)."""

    def __init__(self, keys: LogKeys) -> None:
        self.keys = keys
        self._pem = keys.pem().encode("ascii")
        self._jwks = json.dumps(keys.jwks(), separators=(",", ":")).encode("ascii")

    async def endpoint(self, request: Request, consent: Consent) -> Response:
        if not self.keys.public:
            return JSONResponse(
                {
                    "error": "this site's consent log is signed with the server's HMAC only: there is no "
                    f"public key ({ENV_LOG_SIGNING_KEY} is not set)"
                },
                status_code=404,
                headers={"cache-control": "no-store"},
            )
        accept = request.headers.get("accept", "").lower()
        jwk = any(t in accept for t in JWK_TYPES)
        headers = {
            "cache-control": CACHE,
            "vary": "Accept",
            "access-control-allow-origin": "*",
            "x-content-type-options": "nosniff",
        }
        if jwk:
            return Response(self._jwks, media_type="application/jwk-set+json", headers=headers)
        return Response(self._pem, media_type="text/plain; charset=utf-8", headers=headers)
