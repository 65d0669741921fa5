"""A `<style>` naming one denied service gets a held copy (gate/rawtext.py), so that Accept loads a
theme's `@import` of Google Fonts and its `@font-face` without a reload (issue 15, fonts): inert until
activated, labelled with that one service, with no `@import` left in it (Chromium's preload scanner
fetches an `@import` even from a `<style type="text/plain">`), and none where it could load more than
that service or would not be CSS."""

from __future__ import annotations

from consent_banner.consent import UNDECIDED
from consent_banner.gate import ResponseGate
from consent_banner.gate.html import HtmlRewriter
from consent_banner.gate.rawtext import MAX_STYLE_COPY

from .conftest import OWN, make_config

HOSTS = ResponseGate(make_config(), own_cookie_names=OWN).plan(UNDECIDED).hosts
STATS = "https://stats.example.net"
FACE = f"@font-face{{src:url({STATS}/f.woff2)}} p{{color:red}}"
CSS = f'@import url("{STATS}/a.css");\n@import "/own.css";\n{FACE}'


def rewrite(markup: str, *, mark: bool = True, scripting: bool = True, cut: int = 0) -> str:
    rw = HtmlRewriter(HOSTS, None, mark=(lambda: "N0") if mark else None, scripting=scripting)
    data = markup.encode()
    pieces = [data[i : i + cut] for i in range(0, len(data), cut)] if cut else [data]
    return (b"".join(rw.feed(p) for p in pieces) + rw.finish()).decode()


def test_a_style_naming_one_denied_service_is_followed_by_its_held_copy() -> None:
    """R2: the live <style> keeps its CSS with the service's URLs inert; after it, a held link for the
    service's @import and a held <style> with the rest of the original CSS, both marked and labelled
    (before: only the inert <style>, so Accept loaded the fonts only on the next page)."""
    out = rewrite(f'<head><style media="screen">{CSS}</style><p>x')
    labels = 'data-consent-category="analytics" data-consent-service="stats" nonce="N0"'
    live = CSS.replace(f"{STATS}/a.css", "about:invalid").replace(f"{STATS}/f.woff2", "about:invalid")
    assert out == (
        f'<head><style media="screen">{live}</style>'
        f'<link rel="stylesheet" data-consent-import="" data-consent-href="{STATS}/a.css" media="screen" '
        f'{labels}><style type="text/plain" data-consent-type="text/css" media="screen" {labels}>'
        f"\n\n{FACE}</style><p>x"
    )
    for cut in (1, 3, 7):  # however the body arrives
        assert rewrite(f'<head><style media="screen">{CSS}</style><p>x', cut=cut) == out


def test_no_copy_where_it_could_load_more_or_would_not_be_css() -> None:
    """Two denied services (activated for one, the copy would load the other's), an @import the copy
    cannot take out (escaped, conditional), a style that is not CSS, no mark or JavaScript off, and a
    style longer than MAX_STYLE_COPY: the inert <style> alone."""
    for markup in (
        f"<style>@import '{STATS}/a.css'; p{{background:url(https://ads.example.org/b.png)}}</style>",
        f"<style>@\\69mport '{STATS}/a.css';</style>",
        f"<style>@import '{STATS}/a.css' screen;</style>",
        f"<style>p{{}} @import '{STATS}/a.css';</style>",
        f'<style type="text/less">@import "{STATS}/a.css";</style>',
        f"<style>@import '{STATS}/a.css';{' ' * MAX_STYLE_COPY}</style>",
    ):
        out = rewrite(markup)
        assert "data-consent-" not in out and STATS not in out, out
    for kwargs in ({"mark": False}, {"scripting": False}):
        out = rewrite(f"<style>{CSS}</style>", **kwargs)  # type: ignore[arg-type]
        assert "data-consent-" not in out and STATS not in out, out


def test_a_style_naming_no_denied_host_is_left_alone() -> None:
    markup = '<style>@import "/own.css"; @font-face{src:url(https://cdn.example.com/f.woff2)}</style>'
    assert rewrite(markup) == markup
