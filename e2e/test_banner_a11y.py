"""Accessibility of the open banner and dialog: axe-core, target sizes, focus ring (R8, R12)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from conftest import AXE
from playwright.sync_api import BrowserContext, Page, expect

BAD = ("serious", "critical")


def axe(page: Page, selector: str) -> list[dict[str, Any]]:
    page.add_script_tag(path=AXE)
    result = page.evaluate("sel => axe.run(sel, {resultTypes: ['violations']})", selector)
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in result["violations"]
        if v["impact"] in BAD
    ]


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("path", ["/", "/sv"])
def test_axe_finds_no_serious_violation(
    new_context: Callable[..., BrowserContext], site: Any, path: str, scheme: str
) -> None:
    """R8, R12: axe-core reports no serious or critical violation in the banner or the open dialog."""
    # bypass_csp: axe itself is injected as an inline script
    page = new_context(color_scheme=scheme, bypass_csp=True).new_page()
    page.goto(site.url + path)
    expect(page.locator("#cb-banner")).to_be_visible()
    assert axe(page, "#cb") == []
    page.locator("#cb-banner .cb-actions > button").nth(2).click()
    for summary in page.locator("#cb-dialog summary").all():
        summary.click()
    assert axe(page, "#cb-dialog") == []


def test_controls_are_at_least_24_px(page: Page, site: Any) -> None:
    """R8: every button, switch and summary of the banner and dialog is at least 24×24 px."""
    page.goto(site.url + "/")
    page.get_by_role("button", name="Customise").click()
    for summary in page.locator("#cb-dialog summary").all():
        summary.click()
    sizes = page.evaluate("""() => [...document.querySelectorAll(
        '#cb button, #cb input:not([type=hidden]), #cb summary')]
        .filter(el => el.getClientRects().length)
        .map(el => [el.outerHTML.slice(0, 50), el.getBoundingClientRect().width,
                    el.getBoundingClientRect().height])""")
    assert len(sizes) >= 12
    small = [s for s in sizes if s[1] < 24 or s[2] < 24]
    assert small == []
