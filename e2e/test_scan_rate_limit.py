"""`consent-banner scan` against a site whose decision rate limit refuses it (issue 12, item 6).

The site counts the scanner as one client: its Reject all and Accept all contexts decide at the
same moment, more than a tight `decision_rate_limit` lets through at once. The scanner waits out
each 429's Retry-After and decides again, so the report holds no decision errors.
"""

from __future__ import annotations

from pathlib import Path

from conftest import CHROMIUM, ServerThread, _free_socket, build_site_app, site_config

from consent_banner import ConsentConfig
from consent_banner.scan import run_scan


def test_the_scanner_waits_out_the_sites_decision_rate_limit(tmp_path: Path) -> None:
    base = site_config(f"sqlite:///{tmp_path / 'log.db'}", "http://localhost:9")
    config = ConsentConfig.from_dict({**base.model_dump(), "decision_rate_limit": "1/second"})
    with ServerThread(build_site_app(config), _free_socket()) as server:
        report = run_scan(config, f"http://127.0.0.1:{server.port}/", pages=2, browser_path=CHROMIUM)
    decided = [s for p in report.pages for name, s in p.states.items() if name != "before"]
    assert len(decided) == 2 * len(report.pages) >= 2
    assert [(s.state, s.decision_via, s.decision_error) for s in decided] == [
        (s.state, "banner", None) for s in decided
    ]
