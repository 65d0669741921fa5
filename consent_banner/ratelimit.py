"""Per-client request budgets: decisions and CSP reports, keyed by the client's address.

The address is the one the ASGI server reports (`scope["client"]`): an IPv4 address counts alone,
an IPv6 address by its /64 (one subscriber usually holds a whole /64). Behind a proxy that is the
proxy's address unless the server is told to trust the proxy's headers; `ProxyHint` says so once.

A budget is a generic cell rate algorithm (GCRA): per client one number, the time at which its
bucket would be full again. State lives in this process's memory, so with N worker processes a
client gets N budgets; a shared limit belongs in the proxy. This module knows nothing of HTTP.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import re
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("consent_banner")

OFF = "off"
MAX_CLIENTS = 65_536  # clients remembered per budget: about 13 MB when full
DEFAULT_BURST = 10  # requests a client may send at once (or one second's worth, if more)
PROXY_HINT_AFTER = 20  # decisions from one private address before the proxy warning

_RATE = re.compile(r"\s*(\d{1,9})\s*/\s*(second|minute|hour|day)s?\s*")
_PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}

Client = Sequence[Any] | None  # scope["client"]: (host, port), or None (a Unix socket)
Key = int | str


@dataclass(frozen=True)
class Rate:
    """`count` requests per `period` seconds, of which up to `burst` at once."""

    count: int
    period: int  # seconds
    at_once: int = 0  # the burst, when the default rule below does not fit

    @property
    def burst(self) -> int:
        return self.at_once or max(min(self.count, DEFAULT_BURST), math.ceil(self.count / self.period))

    def __str__(self) -> str:
        unit = {v: k for k, v in _PERIODS.items()}[self.period]
        return f"{self.count}/{unit}"


def parse_rate(text: str) -> Rate | None:
    """Rate(120, 60) for "120/minute", None for "off". Raises ValueError naming what is accepted."""
    if text.strip().lower() == OFF:
        return None
    m = _RATE.fullmatch(text.lower())
    if not m or int(m.group(1)) < 1:
        raise ValueError(
            f"{text!r} is not a rate: write a number of requests per second, minute, hour or day, "
            'e.g. "120/minute", or "off"'
        )
    return Rate(int(m.group(1)), _PERIODS[m.group(2)])


def client_key(client: Client) -> Key:
    """What a client is counted by: an IPv4 address, an IPv6 /64, else the reported host as given."""
    host = _host(client)
    if host is None:
        return ""
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return host[:64]
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is None:
            return (int(addr) >> 64) | (1 << 64)  # the /64, apart from every IPv4 key
        addr = addr.ipv4_mapped
    return int(addr)


def _host(client: Client) -> str | None:
    if not client:
        return None
    host = client[0]
    return host if isinstance(host, str) else None


class ClientBudget:
    """At most `rate` requests per client; `take(client)` answers 0 or the seconds to wait.

    Memory is bounded by `max_clients`: the least recently seen client is forgotten first. A
    client idle for `burst` intervals has a full bucket, the same as being unknown, so forgetting
    it loses nothing; forgetting an active one needs `max_clients` other clients in that time, and
    whoever commands that many addresses has that many budgets anyway.
    """

    def __init__(self, rate: Rate, *, max_clients: int = MAX_CLIENTS) -> None:
        self.rate = rate
        self._interval = rate.period / rate.count  # seconds one request uses up
        self._tolerance = (rate.burst - 1) * self._interval
        self._full_at: OrderedDict[Key, float] = OrderedDict()
        self._max_clients = max_clients

    def __len__(self) -> int:
        return len(self._full_at)

    def take(self, client: Client, *, now: float | None = None) -> float:
        """Use one request of the client's budget: 0.0, or the seconds until one is left."""
        now = time.monotonic() if now is None else now
        key = client_key(client)
        full_at = max(self._full_at.get(key, now), now)
        if full_at - now > self._tolerance:
            self._full_at.move_to_end(key)  # refused, but seen: the last to be forgotten
            return full_at - now - self._tolerance
        self._full_at[key] = full_at + self._interval
        self._full_at.move_to_end(key)
        if len(self._full_at) > self._max_clients:
            self._full_at.popitem(last=False)
        return 0.0


class ProxyHint:
    """Warns once, on the `consent_banner` logger, when every decision comes from one private address.

    That is what a reverse proxy looks like to an ASGI server that does not trust its headers: the
    rate limit then counts every visitor as one client, and the log keeps the proxy's address.
    """

    def __init__(self, after: int = PROXY_HINT_AFTER) -> None:
        self._after = after
        self._only: str | None = None
        self._seen = 0
        self._done = False

    def seen(self, client: Client, *, refused: bool = False) -> None:
        if self._done:
            return
        host = _host(client) or "(no address)"
        if self._seen and host != self._only:
            self._done = True  # several addresses: the server sees real clients
            return
        self._only, self._seen = host, self._seen + 1
        if (self._seen >= self._after or refused) and _private(host):
            self._done = True
            logger.warning(
                "every decision so far came from %s, a private address: if a proxy forwards the "
                "requests, tell the ASGI server to trust its headers (uvicorn --proxy-headers "
                "--forwarded-allow-ips=<proxy>), else the decision rate limit counts all visitors as "
                "one client and the log keeps the proxy's address",
                host,
            )


def _private(host: str) -> bool:
    if host == "(no address)":
        return True  # a Unix socket: only a local proxy can be in front of it
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    return addr.is_private or addr.is_loopback
