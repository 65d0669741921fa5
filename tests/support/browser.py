"""What the browser tests (e2e/) share beyond the demo: waiting on a page the gate serves."""

from __future__ import annotations

import time

from playwright.sync_api import Page


def wait_until(page: Page, expression: str, timeout: float = 5.0) -> None:
    """Polls a JS expression from Python until it is truthy. (Playwright's wait_for_function polls
    with eval inside the page, which a gated page's CSP rightly refuses once the first check fails.)"""
    deadline = time.monotonic() + timeout
    while not page.evaluate(f"Boolean({expression})"):
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout} s: {expression}")
        page.wait_for_timeout(50)
