"""The demo site (server/) for the browser journeys: started once per session, plus helpers.

Test modules load this as a plugin (`pytest_plugins = ("demo_support",)`) and import from it only
under TYPE_CHECKING (a module imported before pytest registers it as a plugin cannot have its
asserts rewritten, which this project's warnings-as-errors turns into an error); the helpers are
methods of the fixtures' values. The browser and the
failure screenshots come from e2e/conftest.py (`new_context`). `running_demo()` starts the whole
demo (the site and its five third-party hosts on 127.0.0.2-6) on free ports in a background
thread, with its SQLite log in a temporary directory, and stops it afterwards.

A `Visitor` is one browser context on the demo that records every request by host, so a test can
say which third parties were contacted, and reads the browser's cookies by consent category, so
a test can say which categories left cookies behind.
"""

from __future__ import annotations

import base64
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, Request, Response

from tests.support.browser import wait_until

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `server` is the repository's demo package, not an installed one
    sys.path.insert(0, str(ROOT))

# Keys and audit credentials come from the environment, as for `consent-banner demo`.
os.environ.setdefault("CONSENT_SECRET_KEYS", "e2e-demo-key-0123456789-0123456789-abcdef")
os.environ.setdefault("CONSENT_AUDIT_USER", "auditor")
os.environ.setdefault("CONSENT_AUDIT_PASSWORD", "demo-" + secrets.token_urlsafe(9))

from consent_banner import ConsentConfig  # noqa: E402
from server.app import Demo  # noqa: E402

OPTIONAL = ("analytics", "marketing", "thirdparty")
UNDECLARED = "undeclared"


@dataclass
class RunningDemo:
    """A demo being served: where it is and what its hosts saw."""

    demo: Demo
    workdir: Path
    audit_user: str
    audit_password: str

    @property
    def url(self) -> str:
        return self.demo.site_url

    @property
    def config(self) -> ConsentConfig:
        return self.demo.config

    @property
    def prefix(self) -> str:
        return self.demo.config.prefix

    @property
    def third_parties(self) -> dict[str, str]:
        """name -> origin of stats, ads, maps, chat, gtag."""
        return self.demo.third_parties

    def third_party_of(self, url: str) -> str | None:
        """The third party a URL belongs to, or None (the site itself, data:, about:...)."""
        origin = _origin(url)
        for name, tp_origin in self.third_parties.items():
            if origin == tp_origin:
                return name
        return None

    def category_of(self, name: str) -> str:
        """The category of a third party, from the config the site enforces."""
        return self.config.services_by_name[name].category

    def received(self, name: str, since: float = 0.0) -> list[dict[str, Any]]:
        """What a third-party host received (its own GET /__requests), after `since`."""
        entries = httpx.get(self.third_parties[name] + "/__requests", timeout=5).json()
        return [e for e in entries if e["at"] >= since]

    def basic_auth(self) -> str:
        """The Authorization header value of the audit credentials."""
        return "Basic " + base64.b64encode(f"{self.audit_user}:{self.audit_password}".encode()).decode()

    @staticmethod
    def csp_directives(header: str) -> dict[str, list[str]]:
        """A Content-Security-Policy header as {directive: [sources]}."""
        out: dict[str, list[str]] = {}
        for part in header.split(";"):
            words = part.split()
            if words:
                out[words[0].lower()] = words[1:]
        return out


@contextmanager
def running_demo(
    workdir: Path | None = None, *, overrides: Mapping[str, Any] | None = None
) -> Iterator[RunningDemo]:
    """The full demo on free ports in a background thread; its log lives in `workdir` (a temp dir
    when None). Stops every server on exit."""
    with tempfile.TemporaryDirectory(prefix="consent-demo-") as tmp:
        where = workdir or Path(tmp)
        demo = Demo.prepare("127.0.0.1", 0, None, workdir=where, overrides=overrides).start()
        try:
            yield RunningDemo(
                demo, where, os.environ["CONSENT_AUDIT_USER"], os.environ["CONSENT_AUDIT_PASSWORD"]
            )
        finally:
            demo.join()


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDemo]:
    with running_demo(tmp_path_factory.mktemp("demo")) as running:
        yield running


# --- one visitor --------------------------------------------------------------------------------------


@dataclass
class Seen:
    method: str
    url: str
    resource_type: str
    third_party: str | None  # stats, ads, maps, chat, gtag, or None for the site itself


@dataclass
class Visitor:
    """One browser context (own cookies) on the demo, recording every request it makes."""

    demo: RunningDemo
    context: BrowserContext
    page: Page
    seen: list[Seen] = field(default_factory=list)
    responses: list[Response] = field(default_factory=list)
    started: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        # Context-wide: requests of iframes and of pages opened later are recorded too.
        self.context.on("request", self._record)

    def _record(self, request: Request) -> None:
        self.seen.append(
            Seen(request.method, request.url, request.resource_type, self.demo.third_party_of(request.url))
        )

    # --- navigation ---

    def goto(self, path: str) -> Response:
        response = self.page.goto(self.demo.url + path, wait_until="load")
        assert response is not None, path
        self.responses.append(response)
        return response

    def settle(self, ms: int = 300) -> None:
        """Let late scripts, beacons and iframes go out before counting requests."""
        self.page.wait_for_load_state("networkidle")
        self.page.wait_for_timeout(ms)

    def wait_until(self, expression: str, timeout: float = 5.0) -> None:
        """Polls a JS expression from Python until it is truthy (see `wait_until`)."""
        wait_until(self.page, expression, timeout)

    def click(self, name: str, *, within: str = "#cb") -> None:
        self.page.locator(within).get_by_role("button", name=name, exact=True).click()

    # --- what the browser did ---

    def third_party_requests(self, *names: str) -> list[Seen]:
        wanted = set(names) or set(self.demo.third_parties)
        return [s for s in self.seen if s.third_party in wanted]

    def hosts(self) -> set[str]:
        """Every host:port the browser contacted (http only)."""
        return {urlsplit(s.url).netloc for s in self.seen if s.url.startswith("http")}

    def categories_contacted(self) -> set[str]:
        return {self.demo.category_of(s.third_party) for s in self.seen if s.third_party}

    def cookies(self) -> list[dict[str, Any]]:
        """Every cookie in the browser context, on every host (site and third parties)."""
        return [dict(c) for c in self.context.cookies()]

    def cookies_by_category(self) -> dict[str, set[str]]:
        """Cookie names grouped by the category consent.toml declares them in (or "undeclared")."""
        out: dict[str, set[str]] = {}
        for c in self.cookies():
            found = self.demo.config.category_for_cookie(c["name"])
            out.setdefault(found[0] if found else UNDECLARED, set()).add(c["name"])
        return out

    def optional_cookies(self) -> set[str]:
        by_category = self.cookies_by_category()
        return set().union(*(by_category.get(c, set()) for c in (*OPTIONAL, UNDECLARED)))

    def local_storage(self) -> dict[str, str]:
        return self.page.evaluate("Object.fromEntries(Object.entries(localStorage))")

    def state(self) -> dict[str, Any]:
        """GET {prefix}/state with this visitor's cookies."""
        return self.context.request.get(self.demo.url + self.demo.prefix + "/state").json()

    def consent_calls(self) -> list[list[Any]]:
        """The Consent Mode calls in window.dataLayer, in order."""
        return self.page.evaluate(
            "(window.dataLayer || []).filter(a => a && typeof a === 'object' && a[0] === 'consent')"
            ".map(a => Array.from(a))"
        )

    def receipt(self) -> list[dict[str, Any]]:
        """This visitor's own consent records ({prefix}/receipt as JSON)."""
        response = self.context.request.get(
            self.demo.url + self.demo.prefix + "/receipt?format=json", headers={"accept": "application/json"}
        )
        assert response.ok, f"receipt: HTTP {response.status}: {response.text()[:300]}"
        body = response.json()
        return body["records"] if isinstance(body, dict) else body

    def banner_visible(self) -> bool:
        return self.page.locator("#cb-banner").is_visible()


@pytest.fixture
def visitor(new_context: Callable[..., BrowserContext], demo: RunningDemo) -> Callable[..., Visitor]:
    """Makes a Visitor: `visitor()` or `visitor(extra_http_headers={"Sec-GPC": "1"}, ...)`."""

    def make(**context_kwargs: Any) -> Visitor:
        context = new_context(**context_kwargs)
        return Visitor(demo, context, context.new_page())

    return make


# --- small helpers ------------------------------------------------------------------------------------


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"

