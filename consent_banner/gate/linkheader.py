"""A page's `Link` response header: each link-value whose target is a host the consent state denies is
dropped, so that `Link: <https://fonts.gstatic.com>; rel=preconnect` (or dns-prefetch, preload,
modulepreload, prefetch), sent by the app, a framework or a plugin, cannot make the browser reach a
vendor before consent. A preconnect or dns-prefetch is no fetch: no Content-Security-Policy directive
covers it (the markup's `<link>` is neutralised by the rewriter, `neutralise.py`); only leaving it out
does. Browsers act on the Link header of documents, so only pages the gate handles are filtered.

RFC 8288: ``Link: <uri-reference>; param=value; param="quoted, value", <...>; ...``. A value is split
on the commas outside ``<>`` and quoted strings (one linear pass); an entry without a readable
``<target>`` that may still name a denied host (`HostRules.suspect`) is dropped too: fail closed.
"""

from __future__ import annotations

import re

from .hosts import HostRules

# One link-value: targets, quoted strings and other text up to a comma outside both (possessive: linear).
_ENTRY = re.compile(rb'(?:<[^>]*+>?|"(?:[^"\\]++|\\.)*+"?|[^,<"]++)++', re.S)
_TARGET = re.compile(rb"[ \t]*+<([^>]*+)>")


def filter_link(value: bytes, hosts: HostRules) -> bytes | None:
    """`value` without the link-values that point at a denied host; None when none is left."""
    if not hosts or hosts.suspect.search(value.lower()) is None:
        return value  # names no denied host in any spelling
    entries = _ENTRY.findall(value)
    kept = [entry for entry in entries if not _denied(entry, hosts)]
    if len(kept) == len(entries):
        return value
    kept = [stripped for entry in kept if (stripped := entry.strip(b" \t"))]
    return b", ".join(kept) if kept else None


def _denied(entry: bytes, hosts: HostRules) -> bool:
    target = _TARGET.match(entry)
    if target is None:
        return hosts.suspect.search(entry.lower()) is not None
    return hosts.url(target.group(1).decode("latin-1").strip()) is not None
