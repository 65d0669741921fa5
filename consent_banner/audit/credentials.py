"""Who may open the audit view: credentials from the environment, and wrong ones slowed down (R25).

    CONSENT_AUDIT_USER + CONSENT_AUDIT_PASSWORD   HTTP Basic
    CONSENT_AUDIT_TOKEN                           Authorization: Bearer <token>

Wrong or missing credentials get 401; comparisons are constant-time.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ..ratelimit import Client, ClientBudget, Key, Rate, client_key

logger = logging.getLogger("consent_banner.audit")

ENV_USER = "CONSENT_AUDIT_USER"
ENV_PASSWORD = "CONSENT_AUDIT_PASSWORD"
ENV_TOKEN = "CONSENT_AUDIT_TOKEN"
REALM = "consent-banner audit"


@dataclass(frozen=True)
class Credentials:
    user: bytes | None
    password: bytes | None
    token: bytes | None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Credentials | None:
        user, password = environ.get(ENV_USER, ""), environ.get(ENV_PASSWORD, "")
        token = environ.get(ENV_TOKEN, "").strip()
        if bool(user) != bool(password):
            logger.warning(
                "audit view: set both %s and %s for HTTP Basic; ignoring the one that is set",
                ENV_USER,
                ENV_PASSWORD,
            )
            user = password = ""
        if ":" in user:
            logger.warning("audit view: %s cannot contain ':'; Basic credentials ignored", ENV_USER)
            user = password = ""
        if not (user or token):
            return None
        for name, value in ((ENV_PASSWORD, password), (ENV_TOKEN, token)):
            if value and len(value) < 12:
                logger.warning("audit view: %s is shorter than 12 characters", name)
        return cls(
            user.encode() if user else None,
            password.encode() if password else None,
            token.encode() if token else None,
        )

    def check(self, authorization: str | None) -> bool:
        if not authorization:
            return False
        scheme, _, value = authorization.strip().partition(" ")
        scheme = scheme.lower()
        value = value.strip()
        if scheme == "bearer" and self.token is not None:
            return hmac.compare_digest(value.encode(), self.token)
        if scheme == "basic" and self.user is not None and self.password is not None:
            try:
                raw = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                return False
            user, sep, password = raw.partition(b":")
            # Both compared every time, so the timing does not tell which one was wrong.
            ok_user = hmac.compare_digest(user, self.user)
            ok_password = hmac.compare_digest(password, self.password)
            return bool(sep) and ok_user & ok_password
        return False

    @property
    def challenge(self) -> str:
        parts = []
        if self.user is not None:
            parts.append(f'Basic realm="{REALM}", charset="UTF-8"')
        if self.token is not None:
            parts.append(f'Bearer realm="{REALM}"')
        return ", ".join(parts)


class FailedLogins:
    """Wrong credentials per client, to slow down guessing (per process, in memory).

    A client (an IPv4 address, an IPv6 /64: `ratelimit.client_key`) may send FREE_FAILURES wrong
    credentials; each further one makes it wait twice as long as the last, from 1 second up to
    MAX_WAIT. While it waits, its requests get 429 with Retry-After and their credentials are not
    even checked, so a wait cannot be used to learn a guess was right. Right credentials forget
    the client's failures; so does an hour without one. At most `max_clients` are remembered, the
    least recently failing forgotten first, so memory stays bounded whatever the number of addresses.

    Whoever holds more addresses than that (one IPv6 /48 is 65,536 /64s) is forgotten before any of
    them waits, so all failures together also have a budget, GLOBAL_FAILURES: past it every
    client waits, the auditor too. An attacker can thus keep the audit view answering 429 (the
    `consent-banner log` commands still work) but cannot guess faster than that budget.
    """

    FREE_FAILURES = 10
    MAX_WAIT = 15 * 60  # seconds
    FORGET_AFTER = 3600  # seconds after a client's last failure
    # Wrong credentials from everyone together: 120 a minute, after a first 200 (far more than
    # a few mistyping auditors make, so one client's own budget runs out long before this one).
    GLOBAL_FAILURES = Rate(120, 60, at_once=200)

    def __init__(self, *, max_clients: int = 10_000) -> None:
        self._max_clients = max_clients
        # client -> (failures, time of the last one, waiting until); times from time.monotonic().
        # Not a Memo: emptying it when full would lift every guesser's wait at once; the least
        # recently failing client is forgotten first instead.
        self._clients: OrderedDict[Key, tuple[int, float, float]] = OrderedDict()
        self._all = ClientBudget(self.GLOBAL_FAILURES, max_clients=1)
        self._all_wait_until = 0.0

    def __len__(self) -> int:
        return len(self._clients)

    def wait(self, client: Client, now: float) -> float:
        """Seconds the client must still wait before its credentials are checked again (0: none)."""
        entry = self._clients.get(client_key(client))
        own = entry[2] - now if entry else 0.0
        return max(0.0, own, self._all_wait_until - now)

    def failed(self, client: Client, now: float) -> None:
        over = self._all.take(None, now=now)  # one key for everyone
        if over > 0:
            self._all_wait_until = now + over
        key = client_key(client)
        failures, last, _ = self._clients.pop(key, (0, now, now))
        failures = 1 if now - last > self.FORGET_AFTER else failures + 1
        extra = failures - self.FREE_FAILURES
        until = now + min(2.0 ** (extra - 1), self.MAX_WAIT) if extra > 0 else now
        self._clients[key] = (failures, now, until)
        while len(self._clients) > self._max_clients:
            self._clients.popitem(last=False)

    def succeeded(self, client: Client) -> None:
        self._clients.pop(client_key(client), None)


class RequireCredentials:
    """Pure ASGI: every request must carry the configured credentials, or gets 401 (429 while
    the client waits after too many wrong ones)."""

    def __init__(
        self, app: ASGIApp, credentials: Credentials, failed_logins: FailedLogins | None = None
    ) -> None:
        self.app = app
        self.credentials = credentials
        # `is None`, not `or`: an empty FailedLogins is falsy (it has a length).
        self.failed_logins = FailedLogins() if failed_logins is None else failed_logins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":  # the audit view has none: refuse without looking further
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        auth = None
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                auth = value.decode("latin-1")
                break
        client, now = scope.get("client"), time.monotonic()
        wait = self.failed_logins.wait(client, now)
        if wait > 0:
            seconds = math.ceil(wait)
            response: Response = JSONResponse(
                {"error": f"too many wrong credentials from this address: try again in {seconds} s"},
                status_code=429,
                headers={"retry-after": str(seconds), "cache-control": "no-store"},
            )
            await response(scope, receive, send)
            return
        if not self.credentials.check(auth):
            if auth:  # a request without credentials is a browser asking for them, not a guess
                self.failed_logins.failed(client, now)
            response = Response(
                "Credentials required for the consent log audit view.\n",
                status_code=401,
                media_type="text/plain",
                headers={"www-authenticate": self.credentials.challenge, "cache-control": "no-store"},
            )
            await response(scope, receive, send)
            return
        self.failed_logins.succeeded(client)
        await self.app(scope, receive, send)
