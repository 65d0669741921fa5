"""R4: no "legitimate interest" for trackers.

Storing or reading anything on a visitor's device that is not strictly necessary needs their consent
(ePrivacy art. 5(3)); the EDPB taskforce (TF 24) found banners offering "legitimate interest" as a
second basis for the same trackers, switched on until the visitor objects. For us that means, seen
from outside:

- a consent.toml cannot say it: a category or service marked as legitimate interest, or switched on
  by default, is a config error naming the key;
- whatever an optional category is called, it is not granted before the visitor grants it: its
  Set-Cookie is dropped, its scripts are neutralised and kept out of script-src, `get_consent` says no;
- the banner and the dialog offer consent switches only, every optional one off, and never speak of
  legitimate interest or of objecting to it, in any shipped language.
"""

from __future__ import annotations

import re
import textwrap
from html.parser import HTMLParser
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from consent_banner import ConsentConfig, ConsentMiddleware, get_consent
from consent_banner.errors import ConfigError

from .conftest import ORIGIN

# An optional category named and labelled as a tracker would be under "legitimate interest".
CONFIG = """
policy_revision = "1"
controller = "Example Offices AB"
privacy_policy_url = "/privacy"
languages = ["en", "sv"]
log = "memory://"

[cookie]
secure = false

[categories.necessary]
label = "Necessary"
[categories.legitimate_interest]
label = {{ en = "Legitimate interest", sv = "Berättigat intresse" }}
{category_extra}

[[services]]
name = "audience"
category = "legitimate_interest"
provider = "Audience Ltd"
purpose = "Measures the audience"
origins = ["https://audience.example.net"]
cookies = [ {{ name = "_aud", lifetime = "13 months" }} ]
switch = true
{service_extra}
"""
# What a "legitimate interest" banner asks for (words of the shipped texts would match these too).
WORDING = re.compile(r"legitimate|interest|object|berättigat|intresse|invänd", re.IGNORECASE)


def write_config(tmp_path: Path, category_extra: str = "", service_extra: str = "") -> Path:
    path = tmp_path / "consent.toml"
    path.write_text(
        textwrap.dedent(CONFIG.format(category_extra=category_extra, service_extra=service_extra)),
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize(
    ("where", "line", "key"),
    [
        ("category", "legitimate_interest = true", "categories.legitimate_interest.legitimate_interest"),
        ("category", 'legal_basis = "legitimate_interest"', "categories.legitimate_interest.legal_basis"),
        ("category", "default = true", "categories.legitimate_interest.default"),
        ("category", "enabled = true", "categories.legitimate_interest.enabled"),
        ("category", "checked = true", "categories.legitimate_interest.checked"),
        ("service", "legitimate_interest = true", "services[0].legitimate_interest"),
        ("service", 'legal_basis = "legitimate_interest"', "services[0].legal_basis"),
        ("service", "default = true", "services[0].default"),
        ("service", "opt_out = true", "services[0].opt_out"),
    ],
)
def test_config_cannot_mark_a_tracker_legitimate_interest_or_on_by_default(
    tmp_path: Path, where: str, line: str, key: str
) -> None:
    """R4: no key of consent.toml grants an optional category or service without consent."""
    extra = {"category_extra": line} if where == "category" else {"service_extra": line}
    with pytest.raises(ConfigError) as raised:
        ConsentConfig.from_toml(write_config(tmp_path, **extra))
    assert raised.value.problems == [f"{key}: unknown key (check the spelling against the README's schema)"]


async def tracked_page(request: Request) -> HTMLResponse:
    granted = get_consent(request).allows("legitimate_interest")
    response = HTMLResponse(
        f"<!doctype html><html lang='{request.query_params.get('lang', 'en')}'><head><title>t</title>"
        "<script src='https://audience.example.net/a.js'></script></head>"
        f"<body><p>granted={granted}</p></body></html>"
    )
    response.set_cookie("_aud", "visitor-1", max_age=3600)
    return response


async def state(request: Request) -> JSONResponse:
    c = get_consent(request)
    return JSONResponse({"decided": c.decided, "categories": list(c.categories)})


class Switches(HTMLParser):
    """The checkboxes of a page: (name, value, checked, disabled)."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, str, bool, bool]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "input" and a.get("type") == "checkbox":
            self.found.append((a.get("name") or "", a.get("value") or "", "checked" in a, "disabled" in a))


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    config = ConsentConfig.from_toml(write_config(tmp_path))
    app = ConsentMiddleware(
        Starlette(routes=[Route("/", tracked_page), Route("/state", state)]), config=config
    )
    with TestClient(app, base_url=ORIGIN) as c:  # the context runs the lifespan, which closes the log
        yield c


def test_a_tracker_category_is_not_granted_before_a_decision_whatever_its_name(client: TestClient) -> None:
    """R4: before a decision the category is denied like any optional one: no cookie, no script."""
    r = client.get("/")
    assert "granted=False" in r.text
    assert "_aud" not in r.headers.get("set-cookie", "")
    assert "<script src='https://audience.example.net/a.js'>" not in r.text  # neutralised
    script_src = next(
        d for d in r.headers["content-security-policy"].split(";") if d.strip().startswith("script-src")
    )
    assert "audience.example.net" not in script_src
    assert client.get("/state").json() == {"decided": False, "categories": ["necessary"]}


@pytest.mark.parametrize("lang", ["en", "sv"])
def test_banner_offers_consent_switches_only_all_off_and_no_legitimate_interest(
    client: TestClient, lang: str
) -> None:
    """R4: the first layer and the dialog hold one switch per category and per switchable service,
    necessary on and locked, every other one off; nothing in the texts speaks of legitimate interest
    or of objecting (the config's own label is shown as the site wrote it, nothing else)."""
    page = client.get(f"/?lang={lang}").text
    switches = Switches()
    switches.feed(page)
    assert switches.found == [
        ("categories", "necessary", True, True),
        ("categories", "legitimate_interest", False, False),
        ("service.audience", "on", False, False),
    ]
    assert "cb-dialog" in page
    ours = page
    for site_wrote in ("Legitimate interest", "Berättigat intresse", "legitimate_interest"):
        ours = ours.replace(site_wrote, "")
    assert WORDING.findall(ours) == []
