"""Accept-Language: hostile headers are answered right and cost a bounded amount of work (issue 12).

The parse considers only the first MAX_ACCEPT_LANGUAGE characters and MAX_LANGUAGE_RANGES ranges,
so a 64 KB header is read like its first kilobyte; bench/bench_parsers.py measures the time.
"""

from __future__ import annotations

import re

import httpx
import pytest

from consent_banner import ConsentConfig
from consent_banner.language import MAX_ACCEPT_LANGUAGE, MAX_LANGUAGE_RANGES, Languages, parse_accept_language

from .conftest import ORIGIN, make_app

HOSTILE = 64 * 1024  # characters: four times uvicorn's default header limit, whatever a server allows

# Shapes that made the old pattern backtrack (whitespace, subtags, weights) or read a cut range.
SHAPES = {
    "spaces": "sv-SE," + " " * HOSTILE + "x",
    "spaces after a weight": "sv,en;q=0.1" + " " * HOSTILE + "x",
    "endless subtags": "sv," + "de" + "-abc" * (HOSTILE // 4),
    "endless weights": "sv," + ";q=1" * (HOSTILE // 4),
    "commas": "sv" + "," * HOSTILE + "en",
}


@pytest.mark.parametrize("header", SHAPES.values(), ids=SHAPES.keys())
async def test_a_64_kb_hostile_header_gets_the_language_of_its_first_range(client, header) -> None:
    page = await client.get("/plain", headers={"accept-language": header})
    assert page.status_code == 200
    assert "Nödvändiga" in page.text and 'lang="sv"' in page.text


@pytest.mark.parametrize("header", SHAPES.values(), ids=SHAPES.keys())
def test_a_long_header_reads_like_its_first_kilobyte(header: str) -> None:
    """Bounded work: nothing past the limit is looked at, whatever follows."""
    assert parse_accept_language(header) == parse_accept_language(header[:MAX_ACCEPT_LANGUAGE] + ",")
    tail = "Z" * HOSTILE
    assert parse_accept_language(header) == parse_accept_language(header[:MAX_ACCEPT_LANGUAGE] + tail)


def test_ranges_past_the_limits_do_not_count() -> None:
    padding = "x" * (MAX_ACCEPT_LANGUAGE * 2)
    assert parse_accept_language(f"en;q=0.1,{padding},sv") == ["en"]
    many = ",".join(["de;q=0.5"] * MAX_LANGUAGE_RANGES)
    assert parse_accept_language(f"{many},sv") == ["de"] * MAX_LANGUAGE_RANGES


def test_a_range_cut_by_the_limit_is_dropped_not_misread() -> None:
    head = "de;q=0.1,"
    header = head + "e" * (MAX_ACCEPT_LANGUAGE - len(head) - 3) + ",sv" + "x" * 10  # "svxxx…" cut to "sv"
    assert parse_accept_language(header) == ["de"]


def test_weights_follow_the_rfc() -> None:
    """A qvalue is 0 to 1 with at most three decimals; anything else drops its range, never promotes it."""
    assert parse_accept_language("sv;q=2, en;q=0.5") == ["en"]
    assert parse_accept_language("sv;q=1e3, en;q=0.5") == ["en"]
    assert parse_accept_language("sv;q=0.1234, en;q=0.5") == ["en"]
    assert parse_accept_language("sv ; Q = 0.9 , en;q=0.5, *;q=0") == ["sv", "en"]
    assert parse_accept_language("sv;level=1, en;q=0.5") == ["en"]


async def test_the_receipt_weighs_the_header_like_the_banner(client: httpx.AsyncClient) -> None:
    """q=0 means "not this one" for the receipt too (one parser for the whole package)."""
    english = await client.get("/_consent/receipt", headers={"accept-language": "sv;q=0, en"})
    assert 'lang="en"' in english.text
    swedish = await client.get("/_consent/receipt", headers={"accept-language": "en;q=0.2, sv"})
    assert 'lang="sv"' in swedish.text


# --- one negotiation for everything a visitor reads (issue 13) ------------------------------------------


def lang_of(html: str) -> str:
    m = re.search(r'<html lang="([^"]+)"|<div id="cb" class="cb" lang="([^"]+)"', html)
    assert m, html[:300]
    return m.group(1) or m.group(2)


@pytest.mark.parametrize(
    ("languages", "query", "header"),
    [
        (["en", "sv"], "sv-SE", "en"),  # a regional tag in ?lang= is its language, for the receipt too
        (["en", "sv"], "", "sv-FI;q=0.9, en;q=0.5"),
        (["sv"], "", "en"),  # only Swedish configured: the receipt does not speak English either
        (["sv", "en"], "de", "*"),  # nothing matches: the default, the first configured
    ],
)
async def test_the_receipt_speaks_the_language_the_banner_does(
    config: ConsentConfig, languages: list[str], query: str, header: str
) -> None:
    """Issue 13: the receipt chose its language itself, among the two it had texts for and ignoring the
    configured ones and regional tags; banner and receipt now ask the one negotiation."""
    app = make_app(ConsentConfig.from_dict({**config.model_dump(), "languages": languages}))
    transport = httpx.ASGITransport(app=app)
    q = f"?lang={query}" if query else ""
    async with httpx.AsyncClient(transport=transport, base_url=ORIGIN) as c:
        banner = (await c.get(f"/_consent/banner{q}", headers={"accept-language": header})).text
        receipt = (await c.get(f"/_consent/receipt{q}", headers={"accept-language": header})).text
    await app.close()
    assert lang_of(receipt) == lang_of(banner) == Languages(languages).pick(query, header)


def test_the_negotiation_remembers_a_bounded_amount() -> None:
    """What a pair of inputs picked is remembered, bounded by the characters held whatever visitors send."""
    languages = Languages(["en", "sv"])
    for i in range(20_000):
        assert languages.pick(None, f"x{i}-{'a' * 20}, sv") == "sv"
    assert 0 < languages._picked.weight <= languages._picked.size
