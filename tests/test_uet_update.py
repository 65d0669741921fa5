"""What the browser script needs to send Microsoft UET's consent update (R30; issue 15): the banner root
names UET's signal, category and service (`data-uet`) when a microsoft-uet service is declared, on the
gated page and the embedded banner alike, before and after a decision; without one, no attribute (the
script then creates no uetq). The update itself is sent in Chromium: e2e/test_uet.py."""

from __future__ import annotations

import re
from pathlib import Path

from .test_consent_mode_config import GA_ADS, SAME, STATS_ADS, decide, open_client, site

BING = {"name": "bing", "preset": "microsoft-uet", "category": "advertising", "switch": True}


def uet_attr(html: str) -> list[str]:
    return re.findall(r'data-uet="([^"]*)"', html)


async def test_the_root_names_uets_category_and_service(tmp_path: Path) -> None:
    """R30: data-uet="ad_storage:advertising:bing" on the page's banner root and on GET /_consent/banner,
    undecided and decided."""
    async for client in open_client(site(tmp_path, STATS_ADS, [*GA_ADS, BING])):
        assert uet_attr((await client.get("/")).text) == ["ad_storage:advertising:bing"]
        await decide(client, {"action": "accept_all"})
        assert uet_attr((await client.get("/")).text) == ["ad_storage:advertising:bing"]
        embedded = await client.get("/_consent/banner", headers=SAME)
        assert embedded.status_code == 200 and uet_attr(embedded.text) == ["ad_storage:advertising:bing"]


async def test_no_uet_attribute_without_the_preset(tmp_path: Path) -> None:
    """R30: a service named like UET but not declared with its preset is not UET: no data-uet."""
    lookalike = {"name": "bing", "category": "advertising", "origins": ["https://bat.bing.com"]}
    async for client in open_client(site(tmp_path, STATS_ADS, [*GA_ADS, lookalike])):
        html = (await client.get("/")).text
        assert "data-consent-root" in html and uet_attr(html) == [] and "data-uet" not in html
