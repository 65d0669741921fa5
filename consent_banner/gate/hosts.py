"""Which hosts are denied in one consent state, and what the rewriter remembers per state.

A URL belongs to a service when its host is one of the service's origins' hosts (scheme and port
are ignored: a tracker reached over http or another port is still the tracker); `*.example.com`
matches every subdomain. A tag is neutralised when any service claiming its host is denied, and
is labelled with the first such service in config order.

A host several services claim, some allowed and some denied in this state (the catalog's Google
services share www.googletagmanager.com and www.google.com: GA4 and Ads load gtag.js from the
first, reCAPTCHA, Maps and Ads use the second), is decided by the URL's path where a claimer's
`inline` signature names one (`google.com/recaptcha/api.js`, `googletagmanager.com/gtag/js?id=AW-`):
the longest such path the URL starts with decides; a URL no signature names, or one spelled with
`%`, a backslash or a dot segment (the browser would read another path), is the first denied's.
Without this, refusing marketing held the necessary reCAPTCHA and the granted GA4 as Ads'.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

from ..memo import Memo
from .urls import url_host, url_path

MAX_MEMO = 32 * 1024  # bytes of rewritten tags remembered per consent state (then all forgotten)


@dataclass(frozen=True, slots=True)
class Blocked:
    """The denied service a URL belongs to, and the placeholder text for it (iframes)."""

    service: str
    category: str
    name: str  # shown in the placeholder: the provider, else the service name
    category_labels: dict[str, str]  # language -> label ("*": any)


# A URL attribute whose raw bytes hold none of these (nor a needle) cannot name any host in a
# spelling other than its own: no reference, escape, percent-encoding, stripped or non-ASCII byte.
_SUSPECT = rb"[&%\\\t\n\r\f\x00-\x08\x0b\x0e-\x1f\x80-\xff]"


class HostRules:
    """Which hosts are denied in one consent state."""

    __slots__ = (
        "exact", "wildcard", "reload", "paths", "needles", "suspect", "memo", "_labels", "_script_labels"
    )

    def __init__(
        self,
        exact: dict[str, Blocked],
        wildcard: dict[str, Blocked],
        reload: frozenset[str] = frozenset(),
        paths: dict[str, tuple[tuple[str, Blocked | None], ...]] | None = None,
    ) -> None:
        self.exact = exact  # "stats.example.net" -> Blocked
        # A denied host an allowed service claims too: its claimers' paths, longest first, each with
        # its service's verdict (None: allowed); see the module docstring.
        self.paths = paths or {}
        self.wildcard = wildcard  # "example.net" (from *.example.net) -> Blocked
        # The denied loaders whose scripts, activated here, would build scripts this page's
        # policy refuses: their neutralised scripts ask for a reload (inline.py, the reload rule).
        self.reload = reload
        # What a tag naming one of these hosts must contain (lower case): a cheap first test.
        self.needles = (*(h.encode() for h in exact), *(b"." + h.encode() for h in wildcard))
        # What makes a tag worth decoding: a needle as written, or a byte that may spell one otherwise.
        self.suspect = re.compile(b"|".join([_SUSPECT, *map(re.escape, self.needles)]))
        # The tags HtmlRewriter rewrote under these rules (see HtmlRewriter._rewrite), unmarked.
        self.memo: Memo[tuple[bytes, bytes, bool, str], tuple[bytes, bool]] = Memo(MAX_MEMO, _memo_weight)
        self._labels: dict[str, bytes] = {}  # per denied service: its data-consent-* labels (few)
        self._script_labels: dict[str, bytes] = {}  # the same for a script: with the reload rule

    def __bool__(self) -> bool:
        return bool(self.exact or self.wildcard)

    def denied(self, host: str) -> Blocked | None:
        found = self.exact.get(host)
        if found is not None or not self.wildcard:
            return found
        i = host.find(".")
        while i >= 0:
            found = self.wildcard.get(host[i + 1 :])
            if found is not None:
                return found
            i = host.find(".", i + 1)
        return None

    def url(self, value: str) -> Blocked | None:
        host = url_host(value)
        if not host:
            return None
        found = self.denied(host)
        if found is not None and host in self.paths:
            return self._by_path(self.paths[host], url_path(value), found)
        return found

    @staticmethod
    def _by_path(paths: tuple[tuple[str, Blocked | None], ...], path: str, found: Blocked) -> Blocked | None:
        if "%" in path or "\\" in path or "/." in path:
            return found  # spelled so that the browser may read another path: the first denied's
        for prefix, verdict in paths:
            rest = path[len(prefix) :]
            if path.startswith(prefix) and (not rest or not prefix[-1].isalnum() or rest[0] in "/?#&"):
                return verdict
        return found

    def labels(self, blocked: Blocked) -> bytes:
        """The data-consent-* labels of a tag neutralised for `blocked`."""
        found = self._labels.get(blocked.service)
        if found is None:
            cat = html.escape(blocked.category).encode()
            svc = html.escape(blocked.service).encode()
            found = self._labels[blocked.service] = (
                b' data-consent-category="' + cat + b'" data-consent-service="' + svc + b'"'
            )
        return found


    def script_labels(self, blocked: Blocked) -> bytes:
        """The labels of a script neutralised for `blocked`: with ``data-consent-reload=""`` when it
        is a loader this page's script-src would not let build its scripts."""
        found = self._script_labels.get(blocked.service)
        if found is None:
            found = self.labels(blocked)
            if blocked.service in self.reload:
                found += b' data-consent-reload=""'
            self._script_labels[blocked.service] = found
        return found


def _memo_weight(key: tuple[bytes, bytes, bool, str], found: tuple[bytes, bool]) -> int:
    return len(key[0]) + len(found[0])
