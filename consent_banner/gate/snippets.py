"""Which inline scripts naming a service the gate vouches for: the vendor's snippet, not markup
reflected into a page that happens to name it.

Under the enforced policy with `inline_scripts = "block"` (the default) a `<script>` reflected into a
page (XSS) stays refused: only the app's nonced scripts run. A signature (inline.py) is a substring,
so `<script>gtag('config','G-1');fetch('/steal?'+document.cookie)</script>` holds one: vouched for
on the signature alone it got the nonce for a visitor who granted analytics, and was activated after
consent for one who had not decided. So a script holding a service's signature is vouched for (nonced,
or neutralised with the page's mark so that consent activates it) only when its whole text is:

- one of the official snippets in SHAPES (Google tag / GA4 and Ads, Tag Manager, Meta Pixel,
  Matomo), compared token by token: whitespace between tokens is ignored (`normalised`), and only the
  slots a site fills in (a measurement or container id, a pixel id, a locale, the data layer's name,
  Matomo's URL and site id) may differ, each to a bounded run of id characters. Nothing can be added
  before, after or between; or
- a script whose normalised text's SHA-256 the site listed in a service's `inline_sha256` (a
  customised snippet; the gate prints the value on the refused script as ``data-consent-pin``).

Anything else naming a service is not the vendor's word: a granted service's is left as it came (the
policy refuses it), a denied or undecided one's is neutralised without the mark (inert, never
activated). What an attacker who can reflect a script still gets: an official snippet with ids of
their choosing (their own GTM container or GA property), which is no more than a reflected
`<script src="https://www.googletagmanager.com/gtm.js?id=...">` gets wherever that origin is granted:
a granted origin in `script-src` serves whatever code it hosts.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

# Whitespace between two identifier characters is one space (`new Date`), anywhere else nothing:
# two texts the same but for whitespace between tokens are the same snippet.
_SPACE = re.compile(rb"(?<=[A-Za-z0-9_$])(\s+)(?=[A-Za-z0-9_$])|\s+")

# The slots of a shape, each a bounded run of the characters such a value is written with.
_SLOTS = {
    b"{ID}": rb"[A-Za-z0-9_-]{1,64}",
    b"{NUM}": rb"[0-9]{1,32}",
    b"{LOCALE}": rb"[A-Za-z]{2,3}_[A-Za-z]{2}",
    b"{NAME}": rb"[A-Za-z_$][A-Za-z0-9_$]{0,63}",
    b"{URL}": rb"[A-Za-z0-9.:_/-]{1,200}",
}

# The official snippets, as their vendors document them (tests/fixtures/snippets keeps the pasted
# copies), with their slots. {CONFIG+} is one or more `gtag('config', ID)` lines (a GA4 property and
# an Ads account share one tag).
SHAPES: dict[str, str] = {
    # https://developers.google.com/tag-platform/gtagjs/install
    "google-tag": """
        window.dataLayer = window.dataLayer || [];
        function gtag(){dataLayer.push(arguments);}
        gtag('js', new Date());
        {CONFIG+}
    """,
    # https://developers.google.com/tag-platform/tag-manager/web
    "google-tag-manager": """
        (function(w,d,s,l,i){w[l]=w[l]||[];w[l].push({'gtm.start':
        new Date().getTime(),event:'gtm.js'});var f=d.getElementsByTagName(s)[0],
        j=d.createElement(s),dl=l!='dataLayer'?'&l='+l:'';j.async=true;j.src=
        'https://www.googletagmanager.com/gtm.js?id='+i+dl;f.parentNode.insertBefore(j,f);
        })(window,document,'script','{NAME}','{ID}');
    """,
    # https://developers.facebook.com/docs/meta-pixel/get-started
    "meta-pixel": """
        !function(f,b,e,v,n,t,s)
        {if(f.fbq)return;n=f.fbq=function(){n.callMethod?
        n.callMethod.apply(n,arguments):n.queue.push(arguments)};
        if(!f._fbq)f._fbq=n;n.push=n;n.loaded=!0;n.version='2.0';
        n.queue=[];t=b.createElement(e);t.async=!0;
        t.src=v;s=b.getElementsByTagName(e)[0];
        s.parentNode.insertBefore(t,s)}(window, document,'script',
        'https://connect.facebook.net/{LOCALE}/fbevents.js');
        fbq('init', '{NUM}');
        fbq('track', 'PageView');
    """,
    # https://developer.matomo.org/guides/tracking-javascript-guide
    "matomo": """
        var _paq = window._paq = window._paq || [];
        /* tracker methods like "setCustomDimension" should be called before "trackPageView" */
        _paq.push(['trackPageView']);
        _paq.push(['enableLinkTracking']);
        (function() {
          var u="//{URL}/";
          _paq.push(['setTrackerUrl', u+'matomo.php']);
          _paq.push(['setSiteId', {SITE}]);
          var d=document, g=d.createElement('script'), s=d.getElementsByTagName('script')[0];
          g.async=true; g.src=u+'matomo.js'; s.parentNode.insertBefore(g,s);
        })();
    """,
}
_CONFIG = rb"(?:gtag\('config','" + _SLOTS[b"{ID}"] + rb"'\);)+"
_SITE = rb"(?:[0-9]{1,10}|'[0-9]{1,10}')"


def normalised(text: bytes) -> bytes:
    """A script's text with whitespace between tokens dropped (one space between two words)."""
    return _SPACE.sub(lambda m: b" " if m.group(1) else b"", text.strip())


def pin(text: bytes) -> str:
    """The `inline_sha256` value of a script's text: SHA-256 of its normalised text, in hex."""
    return hashlib.sha256(normalised(text)).hexdigest()


def _shape(source: str) -> bytes:
    out = re.escape(normalised(source.encode("ascii")))
    out = out.replace(re.escape(b"{CONFIG+}"), _CONFIG).replace(re.escape(b"{SITE}"), _SITE)
    for slot, pattern in _SLOTS.items():
        out = out.replace(re.escape(slot), pattern)
    return out


_SHAPES = re.compile(b"|".join(b"(?:" + _shape(s) + b")" for s in SHAPES.values()))
_LONGEST = 4 * max(len(s) for s in SHAPES.values())  # a shape's slots are bounded: longer is none


class Vouch:
    """Whether a script's text is a vendor's snippet (SHAPES) or one the site pinned."""

    __slots__ = ("_pins",)

    def __init__(self, pins: Iterable[str] = ()) -> None:
        self._pins = frozenset(p.lower() for p in pins)

    def __call__(self, text: bytes) -> bool:
        if self._pins and pin(text) in self._pins:
            return True
        return len(text) <= _LONGEST and _SHAPES.fullmatch(normalised(text)) is not None
