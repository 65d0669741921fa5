"""The privacy-minimal context a record keeps about a visitor: a network, a browser family. R21.

Never the full address or the full user agent: these helpers are what the decision endpoints
pass through before anything reaches the log.
"""

from __future__ import annotations

import ipaddress
import re


def truncate_ip(ip: str | None) -> str | None:
    """The network part of an address: IPv4 to /24 ("203.0.113.0"), IPv6 to /48. R21.

    IPv4-mapped and 6to4 IPv6 addresses are treated as the IPv4 address they carry. Anything that is
    not an address gives None, so a malformed X-Forwarded-For never lands in the log.
    """
    if not ip or not isinstance(ip, str) or len(ip) > 64:
        return None
    text = ip.strip()
    if text.startswith("[") and "]" in text:  # "[2001:db8::1]:443"
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "203.0.113.7:51234"
        text = text.split(":", 1)[0]
    text = text.split("%", 1)[0]  # zone id, "fe80::1%eth0"
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address):
        # A 6to4 address holds a whole IPv4 address in its /48: kept as that IPv4 network, else the
        # log would keep the address, and one IPv4 /24 would be 256 networks to `log blocked`.
        addr = addr.ipv4_mapped or addr.sixtofour or addr
    prefix = 24 if addr.version == 4 else 48
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False).network_address)


# Order matters: Edge and Opera say "Chrome" too, Chrome says "Safari" too.
_BROWSERS = (
    ("Edge", re.compile(r"\b(?:Edg|Edge|EdgA|EdgiOS)/")),
    ("Other", re.compile(r"\b(?:OPR|Opera|SamsungBrowser|YaBrowser|UCBrowser)/|bot\b|crawl|spider", re.I)),
    ("Firefox", re.compile(r"\b(?:Firefox|FxiOS)/")),
    ("Chrome", re.compile(r"\b(?:Chrome|CriOS|Chromium)/")),
    ("Safari", re.compile(r"\bVersion/[\d.]+.*\bSafari/|\bAppleWebKit/.*\bMobile/")),
)


def browser_family(user_agent: str | None) -> str | None:
    """ "Chrome", "Firefox", "Safari", "Edge" or "Other": never the full user agent. R21."""
    if not user_agent or not user_agent.strip():
        return None
    ua = user_agent[:512]
    for family, pattern in _BROWSERS:
        if pattern.search(ua):
            return family
    return "Other"
