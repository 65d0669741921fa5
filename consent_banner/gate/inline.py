"""Inline scripts of services: a vendor's pasted snippet held back like its `<script src>`.

Site owners paste snippets, not `<script src>` tags: GTM's, GA4's and Meta's are inline scripts that
build the real `<script src>` at run time. An inline JavaScript `<script>` (no `src`; a type the
browser runs, `markup.JS_TYPES`) is matched against the services of the consent state
(`InlineRules`, one per plan):

- its text holds an `inline` signature of a service that is not allowed (denied, or undecided), or
  the host of one of the denied hosts' origins (`www.googletagmanager.com` in
  `"https://www.googletagmanager.com/gtm.js?id="+i`): it is neutralised as an external one is (the
  markup contract in `neutralise.py`): kept in place, ``type="text/plain"``, its type kept as
  ``data-consent-type``, labelled with the service (the first such service in the text), marked with
  the page's nonce, any nonce or ``data-consent-*`` it came with dropped. The browser script runs it
  after consent, with the nonce, in document order, without a reload;
- else it holds an `inline` signature of an allowed service, and a policy is sent: it gets the
  page's nonce (replacing any it had), so that the snippet of a granted service runs where it stands
  under the enforced policy (no hash can be listed: the header leaves before the body). Its origins'
  hosts alone vouch for no script (a reflected script naming a necessary CDN would run for everyone);
  the signatures are the operator's word that such a script is the vendor's snippet;
- else it is left as it is (`InlineRules.unmatched` says what a script matching no service gets).

Under the enforced policy with `inline_scripts = "block"` a signature alone vouches for nothing
(`snippets.py`): a script naming a service is nonced, or neutralised with the mark that lets consent
activate it, only when its whole text is the vendor's official snippet or one the site pinned
(`inline_sha256`). Else a granted service's is left as it came (refused by the policy) and a denied
one's is neutralised without the mark (inert for ever); both carry ``data-consent-pin`` with the
value that would pin them, so a site with a customised snippet can read it off the page.

Signatures are code and match case-sensitively (`fbq(` is not `FBQ(`: JavaScript tells them
apart, and matching more would hold the site's own scripts); hosts match case-insensitively, as a
browser reads a URL's host, and only as a whole host name (no letter, digit or `-` right before an
exact host or right after any host: `myads.com` is not `ads.com`). All of a state's signatures and
hosts are one compiled pattern, a trie (one branch per byte, as `markup._trie` builds), searched
once over a script's text: each byte of the script starts at most one walk down the trie, no longer
than the longest signature (`config.MAX_SIGNATURE`): linear time on any script, a script with no
signature costs one search. Matching reads the page's bytes: signatures are printable ASCII, which
every charset the rewriter reads (ASCII-compatible ones) writes the same way.

Streaming: the start tag cannot leave before the script's text is known, so the rewriter holds the
whole element (start tag and text) until its `</script` (`InlineScripts`), at most MAX_INLINE bytes
of text. Past that it decides on what it holds: a denied service's signature there neutralises the
script; otherwise it streams on as written, with no nonce, whatever comes later (a script too long
to read is vouched for by nobody: under the enforced policy it is refused, under `csp = "off"` it
runs). Scripts the browser does not run are not held: those with `src` (their text is never run), a
data block (`application/json`, `text/plain`...; CSP does not apply to one), an SVG `<script>`
(SVG content, which is not raw text), and any `<script>` inside `<noscript>` when the nested
rewriter reads it as markup (scripting off: nothing in it runs). `importmap` and
`speculationrules` are held only under `inline_scripts = "nonce"` (RULE_TYPES).

The reload rule: a neutralised script (inline or external) of a `loader = true` service whose
origins are not all in this page's enforced `script-src` (`'self'` by `site_origins`, and the
origins of what is granted) carries ``data-consent-reload=""``: the scripts it builds would be
refused by this page's policy, so the browser script reloads the page once after the decision
that grants it instead of activating it. Not under `csp = "report-only"` or `"off"`: nothing
refuses the children there. The policy never carries 'strict-dynamic' (a granted loader could then
load any vendor, and any nonced script anything).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Final, Literal

from .hosts import Blocked, HostRules
from .markup import DOUBLE, ESCAPED, JS_TYPES, SCRIPT, edit_tag, parse_attrs
from .rawtext import RawText
from .snippets import pin
from .urls import attr_text

if TYPE_CHECKING:
    from collections.abc import Callable

# Bytes of an inline script's text held until its </script>: the official snippets are under 2 KB
# and the largest inline tag managers' configurations some tens of KB; a page's own inline bundle
# may be larger, and everything after its start tag waits while it is held.
MAX_INLINE = 256 * 1024

NONCE: Final = "nonce"  # the verdict: give the script the page's nonce
# Inline scripts that are no JavaScript yet are checked against script-src: an import map and
# speculation rules. Held only where a script matching no service gets the nonce
# (`inline_scripts = "nonce"`): the site's own then get it too; one naming a denied service
# (speculation rules would prefetch from the vendor) is left without it, refused, and not
# neutralised: an import map added after the first module import is an error, so there is nothing
# to activate after consent.
RULE_TYPES = frozenset({"importmap", "speculationrules"})
Verdict = Blocked | Literal["nonce"] | None

_HOST_CHAR = rb"[A-Za-z0-9-]"
_NOT_BEFORE = rb"(?<!" + _HOST_CHAR + rb"(?s:.))"  # after a host's first byte: none before it
_NOT_AFTER = rb"(?!" + _HOST_CHAR + rb")"
_END, _BEFORE = -1, -2  # trie keys: a needle ends here (with its assertion); a host's lookbehind
_SCRIPT_STATES = frozenset({SCRIPT, ESCAPED, DOUBLE})


def _atom(key: tuple[int, int]) -> bytes:
    kind, byte = key
    if kind == _BEFORE:
        return _NOT_BEFORE
    if kind == _END:
        return _NOT_AFTER if byte else b""
    char = bytes([byte])
    if kind and char.isalpha():  # a host byte: either case
        return b"[" + char.lower() + char.upper() + b"]"
    return re.escape(char)


def _keys(needle: bytes, host: bool, exact: bool) -> list[tuple[int, int]]:
    """A needle as trie keys: (1, byte) for a host byte (any case), (0, byte) for a code byte or a
    host's first byte (the caller adds its other case), then where it ends; an exact host's
    lookbehind follows its first byte."""
    keys = [(int(host and i > 0), b) for i, b in enumerate(needle)]
    if host and exact:
        keys.insert(1, (_BEFORE, 0))
    keys.append((_END, int(host)))
    return keys


def _trie(paths: Sequence[list[tuple[int, int]]], depth: int = 0) -> bytes:
    groups: dict[tuple[int, int], list[list[tuple[int, int]]]] = {}
    for p in paths:
        groups.setdefault(p[depth], []).append(p)
    parts = []
    for key, rest in groups.items():
        parts.append(_atom(key) + (b"" if key[0] == _END else _trie(rest, depth + 1)))
    return parts[0] if len(parts) == 1 else b"(?:" + b"|".join(parts) + b")"


def _pattern(signatures: Iterable[str], hosts: Iterable[str]) -> re.Pattern[bytes] | None:
    """One pattern for code signatures (as written) and hosts (any case; `.example.net` for the
    subdomains of a wildcard). Every branch starts with a plain byte (a host's first letter in both
    cases): `re` then skips, in C, every byte that starts no needle, instead of trying the pattern
    there (five times faster on a script with no signature)."""
    paths = {tuple(_keys(s.encode("ascii"), False, False)) for s in signatures}
    for h in hosts:
        low = h.lower().encode("ascii")
        for first in {low[:1], low[:1].upper()}:
            paths.add(tuple(_keys(first + low[1:], True, not h.startswith("."))))
    if not paths:
        return None
    return re.compile(_trie(sorted(map(list, paths))))


def host_needles(hosts: HostRules) -> list[str]:
    """The hosts of a consent state's denied origins as they are searched for in script text; not
    one an allowed service claims too (hosts.py): a script naming it is decided by signatures."""
    return [*(h for h in hosts.exact if h not in hosts.paths), *("." + h for h in hosts.wildcard)]


class InlineRules:
    """Which inline scripts are a denied service's, a granted one's, or nobody's, in one consent
    state (see the module docstring); built with the plan."""

    __slots__ = ("_any", "_denied", "_signatures", "_hosts", "unmatched", "vouch")

    def __init__(
        self,
        hosts: HostRules,
        denied: Sequence[tuple[str, Blocked]],
        granted: Iterable[str] = (),
        *,
        unmatched: Verdict = None,
        vouch: Callable[[bytes], bool] | None = None,
    ) -> None:
        """`hosts`: the state's denied hosts (and its labels); `denied`: (signature, service) of the
        services not allowed, in config order; `granted`: the signatures of the allowed services
        whose scripts get the nonce (none when no policy is sent: nothing then needs it); `vouch`:
        whether a script naming a service is its snippet (snippets.Vouch; None: every such script)."""
        self._hosts = hosts
        self._signatures: dict[bytes, Blocked] = {}
        for signature, blocked in denied:
            self._signatures.setdefault(signature.encode("ascii"), blocked)  # the first in config order
        signatures = [s for s, _ in denied]
        needles = host_needles(hosts)
        self._denied = _pattern(signatures, needles)
        self._any = _pattern([*signatures, *granted], needles)
        self.unmatched = unmatched  # what a script matching no service gets (None: left as it is)
        self.vouch = vouch

    def __bool__(self) -> bool:
        return self._any is not None or self.unmatched is not None

    def with_unmatched(self, unmatched: Verdict) -> InlineRules:
        """The same rules, giving `unmatched` to a script that matches no service."""
        twin = copy.copy(self)
        twin.unmatched = unmatched
        if unmatched == NONCE:  # every inline script is vouched for: so is a service's, of any shape
            twin.vouch = None
        return twin

    def verdict(self, text: bytes) -> Verdict:
        """Blocked (neutralise it for that service), NONCE (give it the page's nonce), or None."""
        if self._any is None:
            return self.unmatched
        m = self._any.search(text)
        if m is None:
            return self.unmatched
        blocked = self._which(m.group())
        if blocked is not None:
            return blocked
        # an allowed service's script, unless a denied service's needle comes later (or here)
        if self._denied is not None:
            m = self._denied.search(text, m.start())
            if m is not None:
                return self._which(m.group())
        return NONCE

    def denied(self, text: bytes) -> Blocked | None:
        """The denied service `text` names (for a script decided on a part of its text)."""
        m = self._denied.search(text) if self._denied is not None else None
        return self._which(m.group()) if m is not None else None

    def _which(self, found: bytes) -> Blocked | None:
        """The denied service a matched needle belongs to, None for an allowed one's."""
        blocked = self._signatures.get(found)
        if blocked is not None:
            return blocked
        host = found.lower().decode("ascii")
        if host.startswith("."):
            return self._hosts.wildcard.get(host[1:])
        return self._hosts.exact.get(host)

    def labels(self, blocked: Blocked) -> bytes:
        return self._hosts.script_labels(blocked)


def neutralised(tag: bytes, labels: bytes, mark: bytes) -> bytes:
    """An inline `<script ...>` start tag made inert (the contract in `neutralise.py`): its type
    kept as data-consent-type, `type="text/plain"`, the labels and the mark added, any nonce or
    data-consent-* it came with dropped."""
    attrs = parse_attrs(tag, len(b"<script"))
    edits = []
    for a in attrs:
        if a[0] == b"type":
            edits.append((a[1], a[2], b"data-consent-type"))
        elif a[0] == b"nonce" or a[0].startswith(b"data-consent-"):
            edits.append((a[1], a[4], b""))
    return edit_tag(tag, attrs, edits, b' type="text/plain"' + labels + mark)


def nonced(tag: bytes, mark: bytes) -> bytes:
    """An inline `<script ...>` start tag with the page's nonce (`mark`) instead of any it had."""
    attrs = parse_attrs(tag, len(b"<script"))
    edits = [(a[1], a[4], b"") for a in attrs if a[0] == b"nonce"]
    return edit_tag(tag, attrs, edits, mark)


def inline_type(tag: bytes, charset: str) -> str | None:
    """The type of an HTML `<script ...>` start tag without `src`, as the browser compares it
    (trimmed, lower case; "" when it has none: the first `type` counts, as in `neutralise.py`);
    None for a script with `src`."""
    low = tag.lower()
    if b"src" not in low and b"type" not in low:
        return ""  # the common <script> and <script async id=...>: nothing to parse
    attrs = parse_attrs(tag, len(b"<script"))
    if any(a[0] == b"src" for a in attrs):
        return None
    kind = next((a[5] for a in attrs if a[0] == b"type"), None)
    return "" if kind is None else attr_text(kind, charset).strip(" \t\n\f\r").lower()


def runs_inline(tag: bytes, charset: str) -> bool:
    """Whether an HTML `<script ...>` start tag is an inline script the browser runs: no `src`,
    and a JavaScript type."""
    return inline_type(tag, charset) in JS_TYPES


class InlineScripts(RawText):
    """The hold of an inline script, for HtmlRewriter (a base of it): its start tag and text kept
    out of the output until the text is known (`_script` ends it), then decided (`_release_script`)."""

    _inline_rules: InlineRules | None  # None: inline scripts stream as they are
    _held_script: list[bytes] | None  # the start tag, then the text read so far
    _held_size: int  # bytes of text held
    _charset: str
    _scripting: bool
    _mark: Callable[[], str] | None

    def _hold_script(self, tag: bytes) -> bool:
        """At an HTML `<script>` start tag (already rewritten): whether it is held here."""
        rules = self._inline_rules
        if rules is None or not self._scripting:
            return False
        kind = inline_type(tag, self._charset)
        if kind not in JS_TYPES and (kind not in RULE_TYPES or rules.unmatched != NONCE):
            return False
        self._held_script, self._held_size = [tag], 0
        return True

    def _script(self, buf: bytes, low: bytes, pos: int, final: bool) -> int:
        held = self._held_script
        if held is None:
            return super()._script(buf, low, pos, final)
        # RawText._script writes what it reads to self._out: to the hold, while it is held
        out, self._out, before = self._out, held, len(held)  # type: ignore[assignment]
        try:
            end = super()._script(buf, low, pos, final)
        finally:
            self._out = out
        self._held_size += sum(len(p) for p in held[before:])
        if self._state not in _SCRIPT_STATES or final:  # the text is complete
            self._release_script(complete=True)
        elif self._held_size > MAX_INLINE:
            self._release_script(complete=False)
        return end

    def _release_script(self, *, complete: bool) -> None:
        """Decide the held script on its text (all of it, or as much as MAX_INLINE held) and send it
        on: neutralised, nonced, or as it came."""
        held = self._held_script
        if held is None:
            return
        self._held_script = None
        rules = self._inline_rules
        assert rules is not None
        tag, text = held[0], b"".join(held[1:])
        verdict = rules.verdict(text) if complete else rules.denied(text)
        # snippets.py: naming a service, only the vendor's snippet (or a pinned one) is vouched for;
        # past the hold nothing is (no snippet is that long)
        unvouched = (
            verdict is not None and verdict != rules.unmatched and rules.vouch is not None
            and not (complete and rules.vouch(text))
        )
        pinned = b' data-consent-pin="' + pin(text).encode() + b'"' if unvouched else b""
        if isinstance(verdict, Blocked):
            # An import map or speculation rules naming a denied service stay without the nonce
            # (refused), not neutralised: nothing could activate them later (RULE_TYPES).
            if inline_type(tag, self._charset) not in RULE_TYPES:
                mark = pinned if unvouched else self._marked()  # unvouched: inert for ever
                tag = neutralised(tag, rules.labels(verdict), mark)
        elif unvouched:  # a granted service's name in a script that is not its snippet: as it came
            attrs = parse_attrs(tag, len(b"<script"))
            stale = [(a[1], a[4], b"") for a in attrs if a[0] == b"data-consent-pin"]
            tag = edit_tag(tag, attrs, stale, pinned)
        elif verdict == NONCE and self._mark is not None:
            tag = nonced(tag, self._marked())
        self._out.append(tag)
        if text:
            self._out.append(text)
