"""The browser half of the scanner: crawl same-origin pages and observe each in three states.

Needs Playwright (the `scan` extra); this module is imported only when a scan runs. Each page is
opened in three fresh browser contexts at once (no shared cookies): before any decision, after
Reject all and after Accept all. A decision is made the way a visitor makes it, by clicking our
banner's `button[name=action]`; on a page without our banner the scanner posts the decision to
`{prefix}` with fetch from inside the page, so the Origin is the site's. After a decision the page
is loaded again: what the next request brings (the server's cookie expiry, the gate's new CSP) is
what the visitor lives with.

Every request of every context carries the `--header` values (a CDN's region headers, so the site
places the scanner in a jurisdiction). Before crawling, the scanner asks the site's
`{prefix}/state` which consent model it gets; under opt-out the three states are before any
decision, with Global Privacy Control (`Sec-GPC: 1` and `navigator.globalPrivacyControl`), and
after "Do Not Sell or Share" (the banner's `opt_out` button, else the decision posted).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urldefrag, urljoin, urlsplit

from playwright.async_api import Browser, BrowserContext, Page, Request, Response, async_playwright
from playwright.async_api import Error as PlaywrightError

from ..config import ConsentConfig
from ..errors import ScanError
from .model import (
    STATES_BY_MODEL,
    CookieSeen,
    DecisionVia,
    HostSeen,
    PageResult,
    SetCookie,
    State,
    StateResult,
    StorageSeen,
    origin_of,
    parse_set_cookie,
)

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
NAVIGATION_TIMEOUT = 20_000  # ms for a page to load
IDLE_TIMEOUT = 5.0  # s to wait for the network to go quiet; a page that polls forever goes on after it
SETTLE_MS = 300  # ms without a request in flight that count as quiet (late beacons and timers go out)
DECISION_TIMEOUT = 10_000  # ms for the decision's POST to be answered
# The site's decision_rate_limit counts the scanner as one client: a refused decision (429) is
# made again after its Retry-After, for at most this long in all, in seconds.
RATE_LIMIT_PATIENCE = 120
ACTIONS: dict[State, str] = {"reject": "reject_all", "accept": "accept_all", "opt_out": "opt_out"}
# Chromium sends no GPC of its own: the header for the server, the property for the page's scripts.
GPC_HEADERS = {"Sec-GPC": "1"}
GPC_SCRIPT = (
    "Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', "
    "{get: () => true, configurable: true})"
)
STATE_TIMEOUT = 10_000  # ms for {prefix}/state to answer
_REGION = re.compile(r"[A-Z]{2}(?:-[A-Z0-9]{1,3})?")  # "US", "US-CA": a region as geo.locate names it
HTML_TYPES = ("text/html", "application/xhtml+xml")

_POST_DECISION = """async ([url, action]) => {
  const r = await fetch(url, { method: "POST", credentials: "same-origin",
    headers: { "content-type": "application/json", "accept": "application/json" },
    body: JSON.stringify({ action, source: "api" }) });
  return [r.status, r.headers.get("retry-after")];
}"""
_STORAGE = """() => {
  const keys = (s) => { try { return Object.keys(s); } catch (e) { return []; } };
  return { localStorage: keys(window.localStorage), sessionStorage: keys(window.sessionStorage) };
}"""
_LINKS = "() => Array.from(document.querySelectorAll('a[href]'), a => a.href)"


@dataclass
class CrawlOptions:
    """How far and how the crawler goes."""

    pages: int = 10  # at most this many pages are scanned
    exclude: re.Pattern[str] | None = None  # links whose path matches (re.search) are not followed
    browser_path: str = "/usr/bin/chromium"
    settle_ms: int = SETTLE_MS
    concurrency: int = 2  # pages observed at once, each in three browser contexts
    headers: Mapping[str, str] = field(default_factory=dict)  # sent on every request (--header)


@dataclass
class Crawl:
    """The crawler's result: pages observed in crawl order, and links it did not scan, with why."""

    pages: list[PageResult] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    model: str = "opt-in"  # the consent model the site gave the scanner
    region: str | None = None  # the region the site placed it in


class _Recorder:
    """Listens to one browser context: every request by origin, every response (for Set-Cookie)."""

    def __init__(self) -> None:
        self.hosts: dict[str, HostSeen] = {}
        self.responses: list[tuple[Response, bool]] = []
        self.decided = False
        self.in_flight = 0
        self.last_activity = time.monotonic()

    def on_done(self, request: Request) -> None:
        self.in_flight -= 1
        self.last_activity = time.monotonic()

    def on_request(self, request: Request) -> None:
        self.in_flight += 1
        self.last_activity = time.monotonic()
        origin = origin_of(request.url)
        if origin is None:
            return
        seen = self.hosts.get(origin)
        if seen is None:
            seen = self.hosts[origin] = HostSeen(origin, request.url)
        if request.resource_type not in seen.resource_types:
            seen.resource_types.append(request.resource_type)
        if self.decided:
            seen.after_decision += 1
            seen.first_url_after_decision = seen.first_url_after_decision or request.url
        else:
            seen.before_decision += 1

    def on_response(self, response: Response) -> None:
        self.responses.append((response, self.decided))

    async def set_cookies(self) -> list[SetCookie]:
        """Every Set-Cookie the context received, in order. Read while the context is open:
        headers_array() asks the browser for the raw headers, one per Set-Cookie line."""

        async def one(response: Response) -> list[SetCookie]:
            try:
                headers = await response.headers_array()
            except PlaywrightError:
                return []  # the frame went away (a navigation); its cookies are attributed to nobody
            parsed = (
                parse_set_cookie(h["value"], response.url, response.request.method)
                for h in headers
                if h["name"].lower() == "set-cookie"
            )
            return [p for p in parsed if p is not None]

        found = await asyncio.gather(*(one(r) for r, _ in self.responses))
        return [item for items in found for item in items]


async def _settle(recorder: _Recorder, settle_ms: int) -> None:
    """Waits until no request has been in flight for `settle_ms` (at most IDLE_TIMEOUT). Like
    Playwright's "networkidle" with a shorter quiet window, and it counts every frame and worker."""
    quiet = settle_ms / 1000
    deadline = time.monotonic() + IDLE_TIMEOUT
    while time.monotonic() < deadline:
        if recorder.in_flight <= 0 and time.monotonic() - recorder.last_activity >= quiet:
            return
        await asyncio.sleep(0.05)


async def _decide(page: Page, action: str, prefix_url: str, url: str) -> tuple[DecisionVia, str | None]:
    """Makes the decision on the page: (how, None) when recorded, (how, why) when it failed. Refused
    by the site's rate limit (429), it waits the Retry-After, loads the page again (the script may
    have fallen back to the form post and shown the refusal) and tries again, for up to
    RATE_LIMIT_PATIENCE seconds in all."""
    deadline = time.monotonic() + RATE_LIMIT_PATIENCE
    while True:
        via, error, retry_after = await _decide_once(page, action, prefix_url)
        if retry_after is None or time.monotonic() + retry_after > deadline:
            return via, error
        await asyncio.sleep(retry_after)
        try:
            await page.goto(url, wait_until="load", timeout=NAVIGATION_TIMEOUT)
        except PlaywrightError as e:
            return via, f"{error}; loading the page again to retry failed: {str(e).splitlines()[0]}"


async def _decide_once(
    page: Page, action: str, prefix_url: str
) -> tuple[DecisionVia, str | None, float | None]:
    """One attempt: (how, why it failed or None, seconds to wait before another when rate-limited)."""
    button = page.locator(f"button[name=action][value={action}]:visible").first
    prefix_path = urlsplit(prefix_url).path
    if await button.count():
        try:
            async with page.expect_response(
                lambda r: r.request.method == "POST" and urlsplit(r.url).path == prefix_path,
                timeout=DECISION_TIMEOUT,
            ) as answer:
                await button.click()
            response = await answer.value
        except PlaywrightError as e:
            return "banner", f"clicking {action} on the banner: {str(e).splitlines()[0]}", None
        status, wait = response.status, _retry_after(response.status, response.headers.get("retry-after"))
        if status >= 400:
            return "banner", f"POST {prefix_path} answered HTTP {status} to the banner's {action}", wait
        return "banner", None, None
    try:
        status, retry_after = await page.evaluate(_POST_DECISION, [prefix_url, action])
    except PlaywrightError as e:
        why = f"no banner button; POST {prefix_path} from the page failed: {str(e).splitlines()[0]}"
        return "post", why, None
    if status >= 400:
        why = f"no banner button; POST {prefix_path} {{action: {action}}} answered HTTP {status}"
        return "post", why, _retry_after(status, retry_after)
    return "post", None, None


def _retry_after(status: int, header: str | None) -> float | None:
    """Seconds a 429 asks to wait (Retry-After in seconds; 1 when absent or unreadable), else None."""
    if status != 429:
        return None
    value = (header or "").strip()
    readable = value.isascii() and value.isdigit() and len(value) < 6
    return float(min(int(value), RATE_LIMIT_PATIENCE)) if readable else 1.0


async def _observe(
    browser: Browser, url: str, state: State, prefix_url: str, options: CrawlOptions
) -> tuple[StateResult, int, str | None, list[str]]:
    """One fresh context on one page in one state: (result, HTTP status, why skipped, links)."""
    sent = dict(options.headers)
    if state == "gpc":
        sent.update(GPC_HEADERS)
    context: BrowserContext = await browser.new_context(extra_http_headers=sent)
    if state == "gpc":
        await context.add_init_script(GPC_SCRIPT)
    recorder = _Recorder()
    context.on("request", recorder.on_request)
    context.on("response", recorder.on_response)
    context.on("requestfinished", recorder.on_done)
    context.on("requestfailed", recorder.on_done)
    result = StateResult(state)
    try:
        page = await context.new_page()
        try:
            response = await page.goto(url, wait_until="load", timeout=NAVIGATION_TIMEOUT)
        except PlaywrightError as e:
            return result, 0, f"did not load: {str(e).splitlines()[0]}", []
        if response is None:
            return result, 0, "did not load", []
        content_type = (await response.header_value("content-type") or "").lower()
        if response.status >= 400:
            return result, response.status, f"HTTP {response.status}", []
        if not content_type.startswith(HTML_TYPES):
            return result, response.status, f"not a page ({content_type or 'no content type'})", []
        await _settle(recorder, options.settle_ms)
        links: list[str] = []
        before_cookies: set[tuple[str, str, str]] = set()
        before_storage: set[tuple[str, str]] = set()
        if state == "before":
            links = await page.evaluate(_LINKS)
        elif state == "gpc":
            pass  # no decision: the signal alone must turn off what it denies
        else:
            before_cookies = {(c["name"], c["domain"], c["path"]) for c in await context.cookies()}
            before_storage = {(a, k) for a, keys in (await page.evaluate(_STORAGE)).items() for k in keys}
            result.decision_via, result.decision_error = await _decide(page, ACTIONS[state], prefix_url, url)
            recorder.decided = True
            if result.decision_error is None:
                await _settle(recorder, options.settle_ms)
                # The next load: the server's expiry of denied cookies and the gate's new CSP apply.
                await page.goto(url, wait_until="load", timeout=NAVIGATION_TIMEOUT)
                await _settle(recorder, options.settle_ms)
        jar = await context.cookies()
        now = time.time()
        storage = await page.evaluate(_STORAGE)
        headers = await recorder.set_cookies()
        for c in jar:
            name, domain, path = c["name"], c["domain"], c["path"]
            setters = [h for h in headers if not h.deletes and h.may_have_set(name, domain, path)]
            # An expiry sent for this name that missed the cookie (another path or domain): R16 evidence.
            missed = [
                h for h in headers if h.deletes and h.name == name and not h.may_have_set(name, domain, path)
            ]
            expires = c.get("expires", -1)
            result.cookies.append(
                CookieSeen(
                    name=name,
                    domain=domain,
                    path=path,
                    http_only=c["httpOnly"],
                    secure=c["secure"],
                    lifetime=(expires - now) if expires and expires > 0 else None,
                    set_by=setters[-1].response if setters else None,
                    existed_before_decision=(name, domain, path) in before_cookies,
                    expiry_missed=f"{missed[-1].response} (Path={missed[-1].path})" if missed else None,
                )
            )
        for area, keys in storage.items():
            for key in keys:
                result.storage.append(StorageSeen(area, key, (area, key) in before_storage))
        result.hosts = recorder.hosts
        return result, response.status, None, links
    finally:
        await context.close()


async def _jurisdiction(browser: Browser, prefix_url: str, options: CrawlOptions) -> tuple[str | None, str]:
    """(region, model) the site gives a visitor sending the --header values, from its
    `{prefix}/state`. A site of an earlier release (no `model` there) is opt-in; so is one whose
    state cannot be read: the crawl then says what is wrong with the site itself."""
    context = await browser.new_context(extra_http_headers=dict(options.headers))
    try:
        response = await context.request.get(prefix_url + "/state", timeout=STATE_TIMEOUT)
        state = await response.json() if response.ok else None
    except (PlaywrightError, ValueError):
        state = None
    finally:
        await context.close()
    return jurisdiction_of(state)


def jurisdiction_of(state: object) -> tuple[str | None, str]:
    """(region, model) of a site's state as its `{prefix}/state` answered it. The site may be anyone's:
    a region that is no code as geo.locate spells it (markup, a megabyte) is none, never a report's."""
    if not isinstance(state, dict):
        return None, "opt-in"
    model, region = state.get("model"), state.get("region")
    if not isinstance(region, str) or not _REGION.fullmatch(region):
        region = None
    return region, (model if isinstance(model, str) and model in STATES_BY_MODEL else "opt-in")


def _page_key(url: str) -> str:
    """A URL without its fragment: /privacy and /privacy#recipients are one page."""
    return urldefrag(url)[0]


def _path_of(url: str) -> str:
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


async def crawl(
    config: ConsentConfig,
    start_url: str,
    options: CrawlOptions,
    on_page: Callable[[PageResult | None, str], None] | None = None,
) -> Crawl:
    """Crawls up to `options.pages` same-origin pages breadth-first from `start_url`.

    Links come from the rendered page before any decision. Links under the consent prefix (the
    consent manager's own pages) and links whose path matches `options.exclude` are not followed;
    the start URL is always scanned. `on_page(result, url)` is called after each URL (result None
    when it was skipped), for a progress bar.
    """
    site_origin = origin_of(start_url)
    if site_origin is None:
        raise ScanError(f"{start_url!r} is not an http(s) URL")
    prefix_url = site_origin + config.prefix
    out = Crawl()
    queue: deque[str] = deque([_page_key(start_url)])
    queued_first = queue[0]
    queued = {queued_first}
    async with async_playwright() as pw:
        try:
            browser = await pw.chromium.launch(executable_path=options.browser_path, args=CHROMIUM_ARGS)
        except PlaywrightError as e:
            raise ScanError(
                f"cannot start the browser at {options.browser_path}: {str(e).splitlines()[0]}"
            ) from None
        try:
            out.region, out.model = await _jurisdiction(browser, prefix_url, options)
            states = STATES_BY_MODEL[out.model]
            while queue and len(out.pages) < options.pages:
                # Breadth-first in waves of a few pages observed at once (three contexts each);
                # results are taken in crawl order, so the report does not depend on timing.
                wave = [
                    queue.popleft()
                    for _ in range(min(options.concurrency, options.pages - len(out.pages), len(queue)))
                ]
                observed = await asyncio.gather(
                    *(
                        asyncio.gather(
                            *(_observe(browser, url, state, prefix_url, options) for state in states)
                        )
                        for url in wave
                    )
                )
                for url, seen in zip(wave, observed, strict=True):
                    _, status, skipped, links = seen[0]
                    if skipped:
                        if not out.pages and url == queued_first:
                            raise ScanError(f"the start page {url} {skipped}")
                        out.skipped.append((url, skipped))
                        if on_page:
                            on_page(None, url)
                        continue
                    results = {s: r for s, (r, *_) in zip(states, seen, strict=True)}
                    page = PageResult(url, _path_of(url), status, results)
                    out.pages.append(page)
                    if on_page:
                        on_page(page, url)
                    for link in links:
                        link = _page_key(urljoin(url, link))
                        path = urlsplit(link).path or "/"
                        if link in queued or origin_of(link) != site_origin:
                            continue
                        if path == config.prefix or path.startswith(config.prefix + "/"):
                            continue
                        if options.exclude is not None and options.exclude.search(path):
                            continue
                        queued.add(link)
                        queue.append(link)
        finally:
            await browser.close()
    return out
