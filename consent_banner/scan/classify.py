"""Check what the browser saw against what consent.toml declares: the scanner's judgement.

Pure functions of a `ConsentConfig` and the observed `PageResult`s; no browser, no I/O.

Each cookie (and storage key) is matched by name with `config.category_for_cookie`; the consent
manager's own cookies (`[cookie].name` and its `_csrf` twin, `__Host-` ones too) are necessary
even when undeclared.
Each request origin is the site's own (first party, necessary), one of a service's `origins`, or
undeclared. The findings, and why each has its severity:

- R1, error: a declared non-necessary cookie or storage key exists before any decision
  (cookie-before-decision, storage-before-decision).
- R2, error: a declared non-necessary origin is contacted before any decision (host-before-decision).
- R16, error: a non-necessary cookie or key survives Reject all or appears after it, or a
  non-necessary origin is contacted once Reject all is recorded (cookie-, storage-, host-after-reject).
- R5, error: a cookie or storage key no pattern in consent.toml matches (undeclared-cookie,
  undeclared-storage): nobody was told about it and its category is unknown, so it may be anything.
- R5, warning: an origin no service lists (undeclared-host). Often a CDN or font host that stores
  nothing; whatever it stores is judged on its own, and the gate's CSP keeps undeclared origins out
  of scripts, frames and images, so a request that still happens is worth a look, not a failed build.
- R5, error: a cookie lives longer than its declaration tells the visitor, or a "session" one
  persists (lifetime-exceeded): the declaration visitors consent to is then false (TF 26-30).
- R5, warning: a service with cookies or origins is never seen on any crawled page in any state
  (stale-declaration): perhaps gone, perhaps only on pages a crawl does not reach (a form's result,
  a campaign link).
- R7, error: Reject all or Accept all could not be recorded on a page (decision-failed).

Where the site gives the scanner the opt-out model (its `{prefix}/state` says `"model": "opt-out"`
for the region the --header values name), the states are before any decision, with Global Privacy
Control, and after "Do Not Sell or Share"; a category is *denied* there when GPC denies it
(`gpc_denies`, `config.gpc_denied`):

- before any decision, optional cookies, keys and hosts are allowed: no R1/R2 finding.
- R26, error: a denied cookie or key exists, or a denied origin is contacted, with GPC on
  (cookie-, storage-, host-despite-gpc).
- R29, error: after "Do Not Sell or Share" a denied cookie or key appears, a denied cookie of the
  site's own host survives (the gate expires those), or a denied origin is contacted
  (cookie-, storage-, host-after-opt-out); warning: a denied cookie of another host, or a key,
  written before the choice is still there (the site cannot reach it; nothing is sent to it now).
- R7, error: "Do Not Sell or Share" could not be recorded (decision-failed).

A finding names the page once per subject: a cookie seen in several states is one finding whose
evidence lists each state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

from ..config import NECESSARY, ConsentConfig, CookieDeclaration
from ..schemes import DEFAULT_PORTS
from ..visitor import own_cookie_names
from .model import (
    STATE_LABELS,
    CookieSeen,
    Finding,
    HostSeen,
    PageResult,
    State,
    StateResult,
    StorageSeen,
)

K = TypeVar("K")
V = TypeVar("V")

FIRST_PARTY = "(this site)"
# A real lifetime may exceed the declared one by this much before it counts: the clock moves
# between the Set-Cookie and the scanner reading the jar, and Expires dates are rounded to seconds.
LIFETIME_SLACK_SECONDS = 60
LIFETIME_SLACK_RATIO = 0.01


@dataclass(frozen=True)
class Classification:
    """Where the declaration puts a cookie, key or origin; category None means undeclared."""

    category: str | None
    service: str | None = None
    declaration: CookieDeclaration | None = None

    @property
    def declared(self) -> bool:
        return self.category is not None

    @property
    def optional(self) -> bool:
        """Declared in a category other than necessary (needs consent)."""
        return self.category is not None and self.category != NECESSARY

    def describe(self) -> str:
        if self.category is None:
            return "undeclared"
        return f"{self.category}, service {self.service}" if self.service else self.category


class Classifier:
    """Matches cookie names and origins against one configuration (patterns prepared once)."""

    def __init__(self, config: ConsentConfig, site_origin: str) -> None:
        self.config = config
        self.site_origin = site_origin
        self.own_cookies = own_cookie_names(config.cookie)  # the __Host- names on https too
        self._origins = [(s.name, s.category, o) for s in config.services for o in s.origins]

    def cookie(self, name: str) -> Classification:
        found = self.config.service_for_cookie(name)
        if found is not None:
            service, decl = found
            return Classification(service.category, service.name, decl)
        if name in self.own_cookies:
            return Classification(NECESSARY, "consent-banner")
        return Classification(None)

    def host(self, origin: str) -> Classification:
        if origin == self.site_origin:
            return Classification(NECESSARY, FIRST_PARTY)
        for service, category, declared in self._origins:
            if origin_matches(declared, origin):
                return Classification(category, service)
        return Classification(None)


def origin_matches(declared: str, observed: str) -> bool:
    """Does an observed origin fall under a declared one? As in a CSP source: `http://` also
    allows `https://` (and ws/wss), a missing port is the scheme's default, `*.example.com` is
    any subdomain of example.com but not example.com itself."""
    d, o = urlsplit(declared), urlsplit(observed)
    secure = {"http": "https", "ws": "wss"}
    if o.scheme != d.scheme and secure.get(d.scheme) != o.scheme:
        return False
    d_host, o_host = (d.hostname or "").lower(), (o.hostname or "").lower()
    if d_host.startswith("*."):
        if not o_host.endswith(d_host[1:]):
            return False
    elif d_host != o_host:
        return False
    d_port = d.port or DEFAULT_PORTS.get(d.scheme)
    o_port = o.port or DEFAULT_PORTS.get(o.scheme)
    # an upgraded scheme on its default port matches a declaration on the other default port
    return d_port == o_port or (d.port is None and o.port is None)


def duration(seconds: float | None) -> str:
    """A lifetime a person can read: "session", "30 min", "13 h", "396 days"."""
    if seconds is None:
        return "session"
    s = max(0, round(seconds))
    if s < 120:
        return f"{s} s"
    if s < 2 * 3600:
        return f"{round(s / 60)} min"
    if s < 2 * 86400:
        return f"{round(s / 3600)} h"
    return f"{round(s / 86400)} days"


def lifetime_exceeds(real: float | None, declared: int | None) -> bool:
    """Does a cookie with `real` seconds left (None: session) outlive a declaration of `declared`
    seconds (None: "session")? A persistent cookie declared as a session cookie does."""
    if real is None:
        return False
    if declared is None:
        return real > LIFETIME_SLACK_SECONDS
    return real > declared + LIFETIME_SLACK_SECONDS + declared * LIFETIME_SLACK_RATIO


# --- findings -------------------------------------------------------------------------------------


def findings_for(
    config: ConsentConfig, site_origin: str, pages: Sequence[PageResult], model: str = "opt-in"
) -> list[Finding]:
    """Every finding for the crawled pages, page by page in crawl order, then site-wide ones; under
    the opt-out `model` its rules replace the opt-in ones (see the module docstring)."""
    classifier = Classifier(config, site_origin)
    findings: list[Finding] = []
    seen_services: set[str] = set()
    for page in pages:
        # Under opt-out, optional trackers before a decision are the model, not a broken promise.
        opt_in = model != "opt-out"
        findings += _cookie_findings(classifier, page, seen_services, opt_in)
        findings += _storage_findings(classifier, page, seen_services, opt_in)
        findings += _host_findings(classifier, page, seen_services, opt_in)
        if model == "opt-out":
            findings += _opt_out_findings(classifier, page)
        for state in page.states.values():
            if state.decision_error:
                action = {"reject": "Reject all", "opt_out": "Do Not Sell or Share"}.get(
                    state.state, "Accept all"
                )
                findings.append(
                    Finding(
                        "decision-failed",
                        "error",
                        "R7",
                        page.path,
                        action,
                        f"{action} could not be recorded on this page, so what follows it was not checked",
                        (state.decision_error,),
                    )
                )
    findings += _stale_findings(config, seen_services)
    return findings


def _by_subject(
    page: PageResult, seen: Callable[[StateResult], Iterable[tuple[K, V]]]
) -> dict[K, dict[State, V]]:
    """Each subject of the page (a cookie's name and domain, a storage key, an origin), with what
    was seen of it at the end of each state it appeared in, in state order."""
    grouped: dict[K, dict[State, V]] = {}
    for name, state in page.states.items():
        for subject, item in seen(state):
            grouped.setdefault(subject, {})[name] = item
    return grouped


def _cookies_by_subject(page: PageResult) -> dict[tuple[str, str], dict[State, CookieSeen]]:
    return _by_subject(page, lambda state: (((c.name, c.domain), c) for c in state.cookies))


def _storage_by_subject(page: PageResult) -> dict[tuple[str, str], dict[State, StorageSeen]]:
    return _by_subject(page, lambda state: (((i.area, i.key), i) for i in state.storage))


def _cookie_evidence(state: State, c: CookieSeen) -> str:
    where = "HttpOnly" if c.http_only else "readable by scripts"
    by = f"set by {c.set_by}" if c.set_by else "set by a script (no Set-Cookie header stored it)"
    kept = ""
    if state != "before":
        kept = "; was there before the decision" if c.existed_before_decision else "; new after the decision"
    if c.expiry_missed:
        kept += f"; the expiry sent by {c.expiry_missed} did not reach it"
    return (
        f"{STATE_LABELS[state]}: domain {c.domain}, path {c.path}, {where}, "
        f"lifetime left {duration(c.lifetime)}; {by}{kept}"
    )


def _cookie_findings(
    classifier: Classifier, page: PageResult, seen_services: set[str], opt_in: bool = True
) -> Iterable[Finding]:
    for (name, domain), cookies in _cookies_by_subject(page).items():
        cls = classifier.cookie(name)
        subject = f"{name} ({domain})"
        evidence = tuple(_cookie_evidence(s, c) for s, c in cookies.items())
        if cls.service:
            seen_services.add(cls.service)
        if not cls.declared:
            http_only = any(c.http_only for c in cookies.values())
            yield Finding(
                "undeclared-cookie",
                "error",
                "R5",
                page.path,
                subject,
                f"cookie {name}{' (HttpOnly)' if http_only else ''} is not declared in consent.toml: "
                "declare it under the service that sets it, with its category and lifetime",
                evidence,
            )
            continue
        if opt_in and cls.optional and "before" in cookies:
            yield Finding(
                "cookie-before-decision",
                "error",
                "R1",
                page.path,
                subject,
                f"{cls.category} cookie {name} (service {cls.service}) is stored before any decision",
                (_cookie_evidence("before", cookies["before"]),),
            )
        if cls.optional and "reject" in cookies:
            c = cookies["reject"]
            how = "survives" if c.existed_before_decision else "appears after"
            yield Finding(
                "cookie-after-reject",
                "error",
                "R16",
                page.path,
                subject,
                f"{cls.category} cookie {name} (service {cls.service}) {how} Reject all",
                (_cookie_evidence("reject", c),),
            )
        decl = cls.declaration
        if decl is not None:
            too_long = [
                (s, c) for s, c in cookies.items() if lifetime_exceeds(c.lifetime, decl.lifetime_seconds)
            ]
            if too_long:
                longest = too_long[0]  # the first state it was seen in, in crawl order
                yield Finding(
                    "lifetime-exceeded",
                    "error",
                    "R5",
                    page.path,
                    subject,
                    f"cookie {name} lives {duration(longest[1].lifetime)}, longer than the "
                    f"{decl.lifetime!r} declared for {decl.name!r} (service {cls.service})",
                    (_cookie_evidence(*longest),),
                )


def _storage_findings(
    classifier: Classifier, page: PageResult, seen_services: set[str], opt_in: bool = True
) -> Iterable[Finding]:
    for (area, key), items in _storage_by_subject(page).items():
        cls = classifier.cookie(key)
        subject = f"{area}.{key}"
        evidence = tuple(
            f"{STATE_LABELS[s]}: {area} key {key}"
            + (
                ""
                if s == "before"
                else "; was there before the decision"
                if i.existed_before_decision
                else "; new after the decision"
            )
            for s, i in items.items()
        )
        if cls.service:
            seen_services.add(cls.service)
        if not cls.declared:
            yield Finding(
                "undeclared-storage",
                "error",
                "R5",
                page.path,
                subject,
                f"{area} key {key} is not declared in consent.toml: declare it like a cookie, "
                "under the service that writes it",
                evidence,
            )
            continue
        if opt_in and cls.optional and "before" in items:
            yield Finding(
                "storage-before-decision",
                "error",
                "R1",
                page.path,
                subject,
                f"{cls.category} {area} key {key} (service {cls.service}) is written before any decision",
                evidence[:1],
            )
        if cls.optional and "reject" in items:
            how = "survives" if items["reject"].existed_before_decision else "appears after"
            yield Finding(
                "storage-after-reject",
                "error",
                "R16",
                page.path,
                subject,
                f"{cls.category} {area} key {key} (service {cls.service}) {how} Reject all",
                tuple(e for e in evidence if e.startswith(STATE_LABELS["reject"])),
            )


def _host_evidence(state: State, h: HostSeen, *, after: bool = False) -> str:
    if after:
        return (
            f"{STATE_LABELS[state]}: {h.after_decision} request(s) once the decision was recorded, "
            f"first {h.first_url_after_decision}"
        )
    count = h.before_decision + h.after_decision
    kinds = ", ".join(sorted(set(h.resource_types)))
    return f"{STATE_LABELS[state]}: {count} request(s) ({kinds}), first {h.first_url}"


def _host_findings(
    classifier: Classifier, page: PageResult, seen_services: set[str], opt_in: bool = True
) -> Iterable[Finding]:
    for origin, hosts in _by_subject(page, lambda state: state.hosts.items()).items():
        cls = classifier.host(origin)
        if cls.service and cls.service != FIRST_PARTY:
            seen_services.add(cls.service)
        if not cls.declared:
            yield Finding(
                "undeclared-host",
                "warning",
                "R5",
                page.path,
                origin,
                f"{origin} is contacted but no service lists it in its origins: declare the service "
                "(the gate's CSP keeps undeclared hosts out of scripts, frames and images)",
                tuple(_host_evidence(s, h) for s, h in hosts.items()),
            )
            continue
        if opt_in and cls.optional and "before" in hosts:
            yield Finding(
                "host-before-decision",
                "error",
                "R2",
                page.path,
                origin,
                f"{cls.category} host {origin} (service {cls.service}) is contacted before any decision",
                (_host_evidence("before", hosts["before"]),),
            )
        rejected = hosts.get("reject")
        if cls.optional and rejected is not None and rejected.after_decision:
            yield Finding(
                "host-after-reject",
                "error",
                "R16",
                page.path,
                origin,
                f"{cls.category} host {origin} (service {cls.service}) is contacted after Reject all",
                (_host_evidence("reject", rejected, after=True),),
            )


def _stale_findings(config: ConsentConfig, seen_services: set[str]) -> Iterable[Finding]:
    for service in config.services:
        if service.name in seen_services or not (service.cookies or service.origins):
            continue
        declared = [c.name for c in service.cookies] + list(service.origins)
        yield Finding(
            "stale-declaration",
            "warning",
            "R5",
            None,
            service.name,
            f"service {service.name} ({service.category}) was never seen: none of its cookies or "
            "origins appeared on any crawled page in any state; remove it if it is gone",
            (f"declares {', '.join(declared)}",),
        )


# --- the opt-out model ----------------------------------------------------------------------------


def _opt_out_findings(classifier: Classifier, page: PageResult) -> Iterable[Finding]:
    """GPC and "Do Not Sell or Share" honoured: nothing of a denied category with the signal, nor
    set or fetched after the choice (the before state's optional trackers are allowed)."""
    denied = classifier.config.gpc_denied
    site_host = (urlsplit(classifier.site_origin).hostname or "").lower()
    for (name, domain), cookies in _cookies_by_subject(page).items():
        cls = classifier.cookie(name)
        if cls.category not in denied:
            continue
        subject = f"{name} ({domain})"
        if "gpc" in cookies:
            yield Finding(
                "cookie-despite-gpc",
                "error",
                "R26",
                page.path,
                subject,
                f"{cls.category} cookie {name} (service {cls.service}) is stored although the visitor "
                "sends Global Privacy Control",
                (_cookie_evidence("gpc", cookies["gpc"]),),
            )
        c = cookies.get("opt_out")
        if c is not None:
            own = domain.lstrip(".").lower() == site_host
            survives = c.existed_before_decision
            yield Finding(
                "cookie-after-opt-out",
                "error" if own or not survives else "warning",
                "R29",
                page.path,
                subject,
                f"{cls.category} cookie {name} (service {cls.service}) "
                + ("survives" if survives else "appears after")
                + ' "Do Not Sell or Share"'
                + ("" if own or not survives else ": another host's cookie the site cannot expire"),
                (_cookie_evidence("opt_out", c),),
            )
    for (area, key), items in _storage_by_subject(page).items():
        cls = classifier.cookie(key)
        if cls.category not in denied:
            continue
        subject = f"{area}.{key}"
        if "gpc" in items:
            yield Finding(
                "storage-despite-gpc",
                "error",
                "R26",
                page.path,
                subject,
                f"{cls.category} {area} key {key} (service {cls.service}) is written although the visitor "
                "sends Global Privacy Control",
                (f"{STATE_LABELS['gpc']}: {area} key {key}",),
            )
        item = items.get("opt_out")
        if item is not None:
            survives = item.existed_before_decision
            yield Finding(
                "storage-after-opt-out",
                "warning" if survives else "error",
                "R29",
                page.path,
                subject,
                f"{cls.category} {area} key {key} (service {cls.service}) "
                + ("written before" if survives else "appears after")
                + ' "Do Not Sell or Share"'
                + (" is still there" if survives else ""),
                (f"{STATE_LABELS['opt_out']}: {area} key {key}",),
            )
    for origin, hosts in _by_subject(page, lambda state: state.hosts.items()).items():
        cls = classifier.host(origin)
        if cls.category not in denied:
            continue
        if "gpc" in hosts:
            yield Finding(
                "host-despite-gpc",
                "error",
                "R26",
                page.path,
                origin,
                f"{cls.category} host {origin} (service {cls.service}) is contacted although the visitor "
                "sends Global Privacy Control",
                (_host_evidence("gpc", hosts["gpc"]),),
            )
        after = hosts.get("opt_out")
        if after is not None and after.after_decision:
            yield Finding(
                "host-after-opt-out",
                "error",
                "R29",
                page.path,
                origin,
                f"{cls.category} host {origin} (service {cls.service}) is contacted after "
                '"Do Not Sell or Share"',
                (_host_evidence("opt_out", after, after=True),),
            )
