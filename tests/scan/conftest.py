"""Shared pieces for the scanner's tests: a configuration, and observations built by hand (what
the crawler would have recorded), so the judgement is tested without a browser."""

from __future__ import annotations

from typing import Any

import pytest

from consent_banner.config import ConsentConfig
from consent_banner.scan.model import CookieSeen, HostSeen, PageResult, State, StateResult, StorageSeen

SITE = "https://shop.example.com"
CONFIG: dict[str, Any] = {
    "policy_revision": "2026-11-01",
    "controller": "Example AB",
    "privacy_policy_url": "/privacy",
    "categories": {
        "necessary": {"label": "Necessary"},
        "analytics": {"label": {"en": "Statistics", "sv": "Statistik"}},
        "marketing": {"label": "Marketing"},
    },
    "services": [
        {
            "name": "booking",
            "category": "necessary",
            "cookies": [{"name": "booking_session", "lifetime": "session"}],
        },
        {
            "name": "stats",
            "category": "analytics",
            "origins": ["https://stats.example.net"],
            "cookies": [
                {"name": "_st_id.*", "lifetime": "13 months"},
                {"name": "_st_ses", "lifetime": "30 minutes"},
            ],
        },
        {
            "name": "pixel",
            "category": "marketing",
            "origins": ["https://*.ads.example.com"],
            "cookies": [{"name": "_ads", "lifetime": "90 days"}],
        },
        {"name": "cdn", "category": "necessary", "origins": ["https://cdn.example.org"]},
        {"name": "video", "category": "marketing"},  # nothing to observe: never called stale
    ],
}


@pytest.fixture
def config() -> ConsentConfig:
    return ConsentConfig.from_dict(CONFIG)


def cookie(name: str, *, lifetime: float | None = None, before: bool = False, **kw: Any) -> CookieSeen:
    values: dict[str, Any] = {
        "domain": "shop.example.com",
        "path": "/",
        "http_only": False,
        "secure": True,
        "set_by": None,
    }
    values.update(kw)
    return CookieSeen(name=name, lifetime=lifetime, existed_before_decision=before, **values)


def host(origin: str, *, before: int = 1, after: int = 0) -> HostSeen:
    return HostSeen(
        origin,
        origin + "/first",
        ["script"],
        before,
        after,
        origin + "/after" if after else None,
    )


def page(path: str = "/", **states: dict[str, list[Any]]) -> PageResult:
    """page("/", before={"cookies": [...], "hosts": [...]}, reject={...}); missing states are empty."""
    built: dict[State, StateResult] = {}
    for name in ("before", "reject", "accept"):
        parts = states.get(name, {})
        result = StateResult(name)  # type: ignore[arg-type]
        result.cookies = list(parts.get("cookies", []))
        result.storage = [
            s if isinstance(s, StorageSeen) else StorageSeen("localStorage", s)
            for s in parts.get("storage", [])
        ]
        result.hosts = {h.origin: h for h in parts.get("hosts", [])}
        built[name] = result  # type: ignore[index]
    return PageResult(SITE + path, path, 200, built)
