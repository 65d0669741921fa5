"""Sites made by static-site generators, in Chromium (issue 15: the site's own inline scripts).

Two real sites we did not write (tests/fixtures/ssg/: MkDocs with Material, Sphinx with the PyData
theme), each with its built-in Google Analytics integration on, served as files by Starlette's
`StaticFiles` behind the real ConsentMiddleware: csp = "enforce", a `google-analytics` preset in a
`statistics` category. Such a site cannot put `csp_nonce()` in its templates; with
`inline_scripts = "nonce"` the gate gives its own inline scripts the page's nonce, and holds the
analytics snippets until consent.

Google is stood in for by Playwright routing: a fake gtag.js that records that it ran and the
`config` calls it finds in `dataLayer`; every request for a Google host is counted, none leaves the
machine. CSP violations are collected from `securitypolicyviolation` events from the first script on.
The same sites under "block" show what the default costs them, so the checks can tell.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import ServerThread, _free_socket
from playwright.sync_api import BrowserContext, Page, Request, Route
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from consent_banner import ConsentConfig, ConsentMiddleware

SSG = Path(__file__).parent.parent / "tests" / "fixtures" / "ssg"
# The measurement id each generator was built with (tests/fixtures/ssg/README.md).
MEASUREMENT = {"mkdocs": "G-TEST12345", "sphinx": "G-TEST67890"}
GOOGLE = ("www.googletagmanager.com", "www.google-analytics.com", "analytics.google.com")

# Stands in for https://www.googletagmanager.com/gtag/js: records its run and every `config` call
# gtag would send (what the site pushed to dataLayer before it loaded, and after).
FAKE_GTAG = """(function () {
  var seen = window.fakeGtag = window.fakeGtag || {runs: 0, configs: []};
  seen.runs += 1;
  var dl = window.dataLayer = window.dataLayer || [];
  function look(a) { if (a && a[0] === "config") seen.configs.push(a[1]); }
  for (var i = 0; i < dl.length; i++) look(dl[i]);
  var push = dl.push;
  dl.push = function () {
    for (var j = 0; j < arguments.length; j++) look(arguments[j]);
    return push.apply(dl, arguments);
  };
})();"""

# From the first script on: every CSP violation the page sees.
VIOLATIONS = """window.cspViolations = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.cspViolations.push({directive: e.effectiveDirective, blocked: e.blockedURI, line: e.lineNumber});
});"""


def config(log: Path, inline_scripts: str) -> ConsentConfig:
    return ConsentConfig.from_dict(
        {
            "policy_revision": "2026-11-01",
            "controller": "Example Docs AB",
            "privacy_policy_url": "/index.html",
            "log": f"sqlite:///{log}",
            "cookie": {"secure": False},
            "csp": "enforce",
            "inline_scripts": inline_scripts,
            "categories": {
                "necessary": {"label": "Necessary"},
                "statistics": {"label": "Statistics", "description": "Counts visits."},
            },
            "services": [{"name": "ga", "preset": "google-analytics", "category": "statistics"}],
        }
    )


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[tuple[str, str], str]]:
    """(generator, inline_scripts) -> the served site's origin."""
    urls: dict[tuple[str, str], str] = {}
    servers = []
    for tool in MEASUREMENT:
        for mode in ("nonce", "block"):
            app = Starlette(routes=[Mount("/", app=StaticFiles(directory=SSG / tool / "site", html=True))])
            log = tmp_path_factory.mktemp(f"ssg-{tool}-{mode}") / "log.db"
            sock = _free_socket()
            urls[tool, mode] = f"http://127.0.0.1:{sock.getsockname()[1]}"
            servers.append(ServerThread(ConsentMiddleware(app, config=config(log, mode)), sock))
    for s in servers:
        s.__enter__()
    try:
        yield urls
    finally:
        for s in servers:
            s.__exit__(None, None, None)


@dataclass
class Visit:
    """One visitor's tab: what reached Google, and every document the tab loaded."""

    page: Page
    google: list[str] = field(default_factory=list)  # URLs requested from Google's hosts
    documents: list[str] = field(default_factory=list)  # URLs of the top-level documents loaded

    def gtag(self) -> dict[str, Any] | None:
        result: dict[str, Any] | None = self.page.evaluate("window.fakeGtag || null")
        return result

    def inline_refused(self) -> list[dict[str, Any]]:
        """The violations of inline scripts (script elements, not event handlers)."""
        found: list[dict[str, Any]] = self.page.evaluate("window.cspViolations")
        return [v for v in found if v["blocked"] == "inline" and v["directive"].startswith("script-src")]


def visit(context: BrowserContext) -> Visit:
    page = context.new_page()
    v = Visit(page)

    def google(route: Route) -> None:
        v.google.append(route.request.url)
        if route.request.url.startswith("https://www.googletagmanager.com/gtag/js"):
            route.fulfill(body=FAKE_GTAG, content_type="text/javascript")
        else:
            route.fulfill(status=204)

    for host in GOOGLE:
        context.route(f"https://{host}/**", google)
    context.route("https://*.google-analytics.com/**", google)

    def document(request: Request) -> None:
        if request.resource_type == "document" and request.frame == page.main_frame:
            v.documents.append(request.url)

    page.on("request", document)
    page.add_init_script(VIOLATIONS)
    return v


def theme_works(v: Visit, tool: str) -> None:
    """What the theme's own inline scripts make work, observed from outside."""
    page = v.page
    if tool == "mkdocs":
        # the inline head script defines __md_get, which bundle.js needs; then the search works
        assert page.evaluate("typeof __md_get") == "function"
        assert "Guide" in search(page, "cookies")
    else:
        # the inline script after documentation_options.js names the page
        assert page.evaluate("DOCUMENTATION_OPTIONS.pagename") in ("index", "guide")
    assert v.inline_refused() == []


def search(page: Page, query: str) -> str:
    """The first result of the Material theme's search, typed key by key as a visitor does (the
    theme reads the query on keyup)."""
    page.locator("input.md-search__input").press_sequentially(query)
    return page.locator(".md-search-result__item").first.inner_text()


def load(v: Visit, url: str) -> None:
    v.page.goto(url)
    v.page.wait_for_load_state("load")


@pytest.mark.parametrize("tool", list(MEASUREMENT))
def test_before_a_decision_nothing_reaches_google_and_the_theme_works(
    context: BrowserContext, sites: dict[tuple[str, str], str], tool: str
) -> None:
    """R2, R32: a generator's own analytics integration, under inline_scripts = "nonce", sends
    nothing to Google before a decision, on the first page or the next, while every one of the
    theme's inline scripts runs."""
    v = visit(context)
    load(v, sites[tool, "nonce"] + "/index.html")
    theme_works(v, tool)
    load(v, sites[tool, "nonce"] + "/guide.html")
    theme_works(v, tool)
    v.page.wait_for_timeout(300)  # an async loader would have asked by now
    assert v.google == [] and v.gtag() is None


@pytest.mark.parametrize("tool", list(MEASUREMENT))
def test_after_reject_nothing_reaches_google_and_the_theme_works(
    context: BrowserContext, sites: dict[tuple[str, str], str], tool: str
) -> None:
    """R16: after Reject all, on that page and the next ones, nothing reaches Google and the theme
    keeps working."""
    v = visit(context)
    load(v, sites[tool, "nonce"] + "/index.html")
    v.page.get_by_role("button", name="Reject all").click()
    v.page.get_by_role("button", name="Reject all").wait_for(state="hidden")
    theme_works(v, tool)
    for path in ("/guide.html", "/index.html"):
        load(v, sites[tool, "nonce"] + path)
        theme_works(v, tool)
    v.page.wait_for_timeout(300)
    assert v.google == [] and v.gtag() is None


@pytest.mark.parametrize("tool", list(MEASUREMENT))
def test_after_accept_the_analytics_runs_with_its_configuration(
    context: BrowserContext, sites: dict[tuple[str, str], str], tool: str
) -> None:
    """The generator's analytics starts after Accept with its measurement id. Google's preset is a
    loader whose origin an undecided page's script-src does not list (gtag.js loads further), so the
    page reloads exactly once after the decision, and the reloaded page runs it: the theme works
    throughout."""
    v = visit(context)
    url = sites[tool, "nonce"] + "/index.html"
    load(v, url)
    assert v.documents == [url]
    v.page.get_by_role("button", name="Accept all").click()
    v.page.wait_for_function("() => window.fakeGtag && window.fakeGtag.configs.length > 0")
    v.page.wait_for_load_state("load")
    assert v.gtag() == {"runs": 1, "configs": [MEASUREMENT[tool]]}
    assert v.documents == [url, url]  # one reload
    loader = "https://www.googletagmanager.com/gtag/js?id=" + MEASUREMENT[tool]
    assert [u for u in v.google if u.startswith(loader)] == [loader]
    theme_works(v, tool)
    load(v, sites[tool, "nonce"] + "/guide.html")
    v.page.wait_for_function("() => window.fakeGtag && window.fakeGtag.configs.length > 0")
    assert v.gtag() == {"runs": 1, "configs": [MEASUREMENT[tool]]}
    theme_works(v, tool)


@pytest.mark.parametrize("tool", list(MEASUREMENT))
def test_under_block_the_themes_inline_scripts_are_refused(
    context: BrowserContext, sites: dict[tuple[str, str], str], tool: str
) -> None:
    """The default's price, and proof that the checks above can fail: the same site under
    inline_scripts = "block" has its own inline scripts refused and the theme degraded."""
    v = visit(context)
    load(v, sites[tool, "block"] + "/index.html")
    v.page.wait_for_timeout(200)
    assert v.inline_refused(), "the theme's inline scripts ran without a nonce"
    with pytest.raises(AssertionError):
        theme_works(v, tool)
    assert v.google == []
