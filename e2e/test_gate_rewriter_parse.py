"""The rewriter against Chromium's own HTML parser (issue 12, item 4), as the html5lib property in
tests/gate/test_html_differential.py, over the same generated markup: every element that would fetch
from a denied host as Chromium parses the input fetches nothing from it as Chromium parses the output,
the output parses into the same elements (beside held copies of a `<style>`), and what names no
denied host is left as it was. Parsed with scripting on (a <template>, whose content never loads
anything) and off (DOMParser)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from playwright.sync_api import BrowserContext, Page

from tests.gate.test_html_differential import _piece, denied_urls, is_held_copy, names_denied, rewrite

PARSE = """([html, scripting]) => {
  let root;
  if (scripting) {
    const t = document.createElement("template");
    t.innerHTML = html;
    root = t.content;
  } else {
    root = new DOMParser().parseFromString(html, "text/html");
  }
  return [...root.querySelectorAll("*")].map((e) => ({
    tag: "{" + e.namespaceURI + "}" + e.localName,
    attrib: Object.fromEntries([...e.attributes].map((a) =>
      [a.namespaceURI ? "{" + a.namespaceURI + "}" + a.localName : a.name, a.value])),
    text: e.localName === "style" ? e.textContent : "",
  }));
}"""


class Element:
    """What the checks of the html5lib property read of an element."""

    def __init__(self, parsed: dict[str, Any]) -> None:
        self.tag, self.attrib, self._text = parsed["tag"], parsed["attrib"], parsed["text"]

    def itertext(self) -> Iterator[str]:
        yield self._text


@pytest.fixture(scope="module")
def parser(browser: Any) -> Iterator[Page]:
    ctx: BrowserContext = browser.new_context(java_script_enabled=True)
    ctx.route("**/*", lambda route: route.fulfill(status=204))  # nothing leaves the machine
    blank = "<!doctype html>"
    ctx.route("https://parser.test/", lambda route: route.fulfill(content_type="text/html", body=blank))
    page = ctx.new_page()
    page.goto("https://parser.test/")
    yield page
    ctx.close()


def parse(page: Page, markup: str, scripting: bool) -> list[Element]:
    return [Element(e) for e in page.evaluate(PARSE, [markup, scripting])]


# Chromium follows the standard where html5lib 1.1 does not (`</p>`, `</br>` leave SVG/MathML), and
# has the newer <select> parser: those go in here too.
_chromium_piece = st.one_of(_piece, st.sampled_from(["</p>", "</br>", "<select>", "</select>", "<template>"]))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(_chromium_piece, min_size=1, max_size=25), st.booleans())
def test_rewritten_markup_fetches_nothing_denied_in_chromium(
    parser: Page, pieces: list[str], scripting: bool
) -> None:
    markup = "".join(pieces)
    before, after = parse(parser, markup, scripting), parse(parser, rewrite(markup), scripting)
    after = [e for e in after if not is_held_copy(e)]  # checked in the html5lib property
    assert [e.tag for e in after] == [e.tag for e in before], "the rewrite changed the parse"
    for old, new in zip(before, after, strict=True):
        assert denied_urls(new) == [], (markup, old.tag, old.attrib, new.attrib)
        if not names_denied(old):
            assert new.attrib == old.attrib, (markup, old.tag, old.attrib, new.attrib)
