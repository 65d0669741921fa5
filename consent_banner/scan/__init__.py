"""`consent-banner scan`: check a running site against the consent.toml it runs with.

Crawls up to N same-origin pages in Chromium (Playwright, the `scan` extra) and looks at each page
three times, each in a fresh browser context: before any decision, after Reject all, after Accept
all. It records the cookies in the jar (name, domain, HttpOnly, expiry, the response that set it),
the localStorage/sessionStorage keys and every request by origin, classifies each with the config,
and reports what breaks the site's own declaration (see `classify.py` for every finding and its
severity). Exit status: 0 when no finding is an error (warnings allowed), 1 when one is, 2 when the
scan could not run (bad config, browser missing, start page down).

`--header NAME=VALUE` (repeatable) is sent on every request, e.g. the region headers a site's CDN
sets (`--header CF-IPCountry=US --header CF-Region-Code=CA`). Where the site then gives the opt-out
model, the states and rules are those of opt-out (`classify.py`): GPC and "Do Not Sell or Share"
honoured instead of nothing before consent.

Python use: `report = run_scan(config, "https://example.com/", pages=5)`; `render(report, "json")`.
Importing this package does not import Playwright: only running a scan does.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib.util
import re
import sys
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import click

from ..cli_options import config_option
from ..config import ConsentConfig
from ..display import escape_controls
from ..errors import ConfigError, ScanError
from .classify import findings_for
from .model import Finding, PageResult, ScanReport, origin_of
from .report import render
from .suggest import suggest

__all__ = ["Finding", "ScanReport", "render", "run_scan", "scan", "scan_site"]

DEFAULT_BROWSER = "/usr/bin/chromium"
DEFAULT_PAGES = 10
# RFC 9110 field names; values without control characters (no header splitting, no NUL).
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")
_HEADER_VALUE = re.compile(r"[^\x00-\x08\x0a-\x1f\x7f]{0,1024}")
# Headers the browser owns or that would change what the scan means: Chromium sets them itself,
# Playwright refuses some, and a Cookie sent on every request would make every state one visitor.
_NOT_SENDABLE = frozenset({"cookie", "host", "content-length", "connection", "sec-gpc", "origin"})


class ScanFailed(click.ClickException):
    """The scan could not run; exit status 2, so CI tells it apart from a site with findings (1)."""

    exit_code = 2


async def scan_site(
    config: ConsentConfig,
    url: str,
    *,
    pages: int = DEFAULT_PAGES,
    exclude: re.Pattern[str] | None = None,
    browser_path: str = DEFAULT_BROWSER,
    with_suggestions: bool = False,
    config_source: str | None = None,
    on_page: Callable[[PageResult | None, str], None] | None = None,
    headers: Mapping[str, str] | None = None,
) -> ScanReport:
    """Crawls and checks the site at `url`, sending `headers` on every request; raises
    errors.ScanError when it cannot run at all."""
    from .crawl import CrawlOptions, crawl  # Playwright is needed from here on only

    started = datetime.now(UTC).isoformat(timespec="seconds")
    options = CrawlOptions(
        pages=pages, exclude=exclude, browser_path=browser_path, headers=dict(headers or {})
    )
    result = await crawl(config, url, options, on_page)
    site_origin = origin_of(url) or url
    report = ScanReport(url=url, config=config_source, started_at=started)
    report.model, report.region, report.headers = result.model, result.region, tuple(options.headers)
    report.pages = result.pages
    report.skipped = result.skipped
    report.findings = findings_for(config, site_origin, result.pages, result.model)
    if with_suggestions:
        report.suggestions = suggest(config, site_origin, result.pages)
    report.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
    return report


def run_scan(
    config: ConsentConfig,
    url: str,
    *,
    pages: int = DEFAULT_PAGES,
    exclude: re.Pattern[str] | None = None,
    browser_path: str = DEFAULT_BROWSER,
    with_suggestions: bool = False,
    headers: Mapping[str, str] | None = None,
) -> ScanReport:
    """`scan_site` for synchronous code (run on a thread of its own if this one has a loop)."""
    return _run(
        scan_site(
            config,
            url,
            pages=pages,
            exclude=exclude,
            browser_path=browser_path,
            with_suggestions=with_suggestions,
            headers=headers,
        )
    )


T = TypeVar("T")


def _run(job: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, also when called from a thread whose event loop is running (a notebook, or
    Playwright's synchronous API in the same process): then on a fresh thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(job)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, job).result()


def _compile(pattern: str | None) -> re.Pattern[str] | None:
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error as e:
        raise click.BadParameter(
            f"{pattern!r} is not a regular expression: {e}", param_hint="--exclude"
        ) from None


def _headers(values: tuple[str, ...]) -> dict[str, str]:
    """`--header NAME=VALUE` values as a mapping; a bad one is refused naming it."""
    out: dict[str, str] = {}
    for given in values:
        name, eq, value = given.partition("=")
        name, value = name.strip(), value.strip()
        shown = escape_controls(given)[:80]
        if not eq or not _HEADER_NAME.fullmatch(name):
            raise click.BadParameter(
                f"{shown!r}: write NAME=VALUE with an HTTP header name, e.g. CF-IPCountry=US",
                param_hint="--header",
            )
        if not _HEADER_VALUE.fullmatch(value):
            raise click.BadParameter(
                f"{shown!r}: the value holds control characters or is over 1024 characters",
                param_hint="--header",
            )
        if name.lower() in _NOT_SENDABLE:
            raise click.BadParameter(
                f"{shown!r}: {name} is the browser's to send (GPC is scanned on its own under opt-out)",
                param_hint="--header",
            )
        if name.lower() in (n.lower() for n in out):
            raise click.BadParameter(f"{shown!r}: {name} is given twice", param_hint="--header")
        out[name] = value
    return out


@click.command()
@click.argument("url")
@config_option("the consent.toml the site runs with")
@click.option(
    "--pages",
    type=click.IntRange(min=1),
    default=DEFAULT_PAGES,
    show_default=True,
    help="scan at most N pages",
)
@click.option("--exclude", metavar="REGEX", default=None, help="do not follow links whose path matches")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "junit"]),
    default="table",
    show_default=True,
    help="report format",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="write the report to FILE instead of standard output",
)
@click.option("--browser-path", default=DEFAULT_BROWSER, show_default=True, help="the Chromium to drive")
@click.option("--suggest", "with_suggestions", is_flag=True, help="print TOML for what is undeclared")
@click.option(
    "--header",
    "header_values",
    metavar="NAME=VALUE",
    multiple=True,
    help="send this header on every request (repeatable), e.g. the region headers your CDN sets: "
    "--header CF-IPCountry=US --header CF-Region-Code=CA",
)
def scan(
    url: str,
    config_path: Path,
    pages: int,
    exclude: str | None,
    fmt: str,
    output: Path | None,
    browser_path: str,
    with_suggestions: bool,
    header_values: tuple[str, ...],
) -> None:
    """Check the site at URL against its consent.toml, before any decision, after Reject all and
    after Accept all; where the site gives the opt-out model (--header), with Global Privacy Control
    and after "Do Not Sell or Share" instead. Exits 1 when a finding is an error, 2 when the scan
    cannot run."""
    pattern = _compile(exclude)
    headers = _headers(header_values)
    if origin_of(url) is None:
        raise click.BadParameter(f"{url!r} is not an http(s) URL", param_hint="URL")
    try:
        config = ConsentConfig.from_toml(config_path)
    except ConfigError as e:
        raise ScanFailed(str(e)) from None
    if importlib.util.find_spec("playwright") is None:  # pragma: no cover - depends on the installation
        raise ScanFailed(
            "the scanner needs Playwright: install the package with its scan extra "
            "(pip install 'consent-banner[scan]', or pip install '.[scan]' in a clone)"
        )

    bar = None
    if sys.stderr.isatty():
        bar = click.progressbar(length=pages, label="scanning", file=sys.stderr, show_pos=True)

    def on_page(_: PageResult | None, page_url: str) -> None:
        if bar is not None:
            bar.label = escape_controls(f"scanned {urlsplit(page_url).path or '/'}")[:50]
            bar.update(1)

    job = scan_site(
        config,
        url,
        pages=pages,
        exclude=pattern,
        browser_path=browser_path,
        with_suggestions=with_suggestions,
        config_source=str(config_path),
        on_page=on_page,
        headers=headers,
    )
    try:
        with bar if bar is not None else contextlib.nullcontext():
            report = _run(job)
            if bar is not None:
                bar.update(pages - bar.pos)  # the site had fewer pages than --pages: done anyway
    except ScanError as e:
        raise ScanFailed(str(e)) from None

    text = render(report, fmt)
    if output is not None:
        output.write_text(text, encoding="utf-8")
    else:
        click.echo(text, nl=False)
    if report.suggestions is not None and not (fmt == "json" and output is None):
        # JSON on standard output carries them inside; a JUnit report there must stay parseable,
        # so they go to standard error; otherwise they follow the table or stand alone.
        heading = "# Proposed for consent.toml from the Open Cookie Database: review before use.\n"
        body = report.suggestions or "# Nothing to propose: every cookie, key and host is declared.\n"
        click.echo(heading + body, nl=False, err=fmt == "junit" and output is None)
    if report.exit_code:
        click.get_current_context().exit(report.exit_code)
