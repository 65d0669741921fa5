"""window.__gpp in Chromium (issue 17): the demo as a US controller (server/consent-us.toml), visited as
California, as California with GPC, and as Sweden or with no region header. What the page's __gpp
answers is checked against IAB's own decoder (@iabgpp/cmpapi, pinned in e2e/package.json, run in
Node) on the string the page gives; after "Do Not Sell or Share" the listener hears the new string.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from playwright.sync_api import BrowserContext, expect

if TYPE_CHECKING:
    from demo_support import RunningDemo, Visitor

pytest_plugins = ("demo_support",)

E2E = Path(__file__).resolve().parent
CALIFORNIA = {"CF-IPCountry": "US", "CF-Region-Code": "CA"}
SWEDEN = {"CF-IPCountry": "SE"}
GPC = {"Sec-GPC": "1"}
DNS = "Do Not Sell or Share My Personal Information"

# An IAB stub as a site puts it in its page before any CMP: calls are queued; `__gpp()` hands the
# queue over. Its queued ping must be answered once our __gpp is there.
IAB_STUB = """
window.__answers = [];
window.__gpp = function () {
  window.__gpp.queue = window.__gpp.queue || [];
  if (!arguments.length) return window.__gpp.queue;
  window.__gpp.queue.push([].slice.apply(arguments));
};
window.__gpp("ping", function (data, ok) { window.__answers.push(["queued ping", data, ok]); });
"""

# The GPP CMP API's commands, each answered through its callback (ours answers synchronously).
CALL = """([command, parameter]) => {
  let out = null;
  window.__gpp(command, (data, success) => { out = [data, success]; }, parameter);
  return out;
}"""
LISTEN = """() => {
  window.__events = [];
  let id = null;
  window.__gpp("addEventListener", (event, success) => {
    if (id === null) id = event.listenerId;
    window.__events.push([event.eventName, event.data, event.pingData.gppString, success]);
  });
  return id;
}"""

DECODE = r"""
import { GppModel } from "@iabgpp/cmpapi";
let input = "";
for await (const chunk of process.stdin) input += chunk;
const model = new GppModel(input.trim());
console.log(JSON.stringify({ sectionIds: model.getSectionIds(), usnat: model.getSection("usnat") }));
"""


def iab_decode(gpp_string: str) -> dict[str, Any]:
    """IAB's reading of a GPP string: its section ids and the usnat section's fields."""
    node = shutil.which("node")
    assert node, "Node.js is needed to run IAB's @iabgpp/cmpapi"
    done = subprocess.run(
        [node, "--input-type=module", "-e", DECODE],
        input=gpp_string,
        cwd=E2E,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    decoded: dict[str, Any] = json.loads(done.stdout)
    return decoded


@pytest.fixture(scope="module")
def us_demo() -> Iterator[RunningDemo]:
    """The demo with its US configuration, on free ports, its own log in a temporary directory."""
    from demo_support import RunningDemo  # registered as a plugin by now (see demo_support's docstring)

    from server.app import US_CONFIG, Demo

    with tempfile.TemporaryDirectory(prefix="consent-demo-gpp-") as tmp:
        demo = Demo.prepare("127.0.0.1", 0, US_CONFIG, workdir=Path(tmp)).start()
        try:
            user, password = os.environ["CONSENT_AUDIT_USER"], os.environ["CONSENT_AUDIT_PASSWORD"]
            yield RunningDemo(demo, Path(tmp), user, password)
        finally:
            demo.join()


@pytest.fixture
def us_visitor(new_context: Callable[..., BrowserContext], us_demo: RunningDemo) -> Callable[..., Visitor]:
    """A visitor of the US demo whose browser sends `headers` (the region, GPC) on every request."""
    from demo_support import Visitor

    def make(headers: dict[str, str] | None = None, **kwargs: Any) -> Visitor:
        context = new_context(extra_http_headers=headers or {}, **kwargs)
        return Visitor(us_demo, context, context.new_page())

    return make


def call(v: Visitor, command: str, parameter: Any = None) -> list[Any]:
    answer: list[Any] = v.page.evaluate(CALL, [command, parameter])
    return answer


def test_california_gets_a_gpp_api_whose_string_iab_decodes_as_the_page_says(
    us_visitor: Callable[..., Visitor],
) -> None:
    """R38: as California the page answers __gpp (ping, getSection, getField), and IAB's own library
    decodes the page's string into the fields the page reports."""
    v = us_visitor(CALIFORNIA)
    v.context.add_init_script(IAB_STUB)
    v.goto("/")
    ping, ok = call(v, "ping")
    assert ok is True
    assert ping["gppVersion"] == "1.1" and ping["cmpStatus"] == "loaded" and ping["signalStatus"] == "ready"
    assert ping["cmpDisplayStatus"] == "visible"  # the notice at collection is shown
    assert ping["supportedAPIs"] == ["7:usnat"]
    assert ping["sectionList"] == ping["applicableSections"] == [7]
    assert ping["cmpId"] == 0
    # A call queued by a stub before our script ran was answered with the same ping.
    queued = v.page.evaluate("window.__answers")
    assert [(name, data["gppString"], ok) for name, data, ok in queued] == [
        ("queued ping", ping["gppString"], True)
    ]

    decoded = iab_decode(ping["gppString"])
    assert decoded["sectionIds"] == [7]
    section, ok = call(v, "getSection", "usnat")
    assert ok is True and section == decoded["usnat"] == ping["parsedSections"]["usnat"]
    assert decoded["usnat"]["SaleOptOut"] == 2 and decoded["usnat"]["Gpc"] is False
    assert call(v, "getField", "usnat.SaleOptOut") == [2, True]
    assert call(v, "getField", "usnat.NoSuchField") == [None, False]
    assert call(v, "hasSection", "usnat") == [True, True]
    assert call(v, "hasSection", "tcfeuv2") == [False, True]
    assert call(v, "getSection", "tcfeuv2") == [None, False]
    assert call(v, "no-such-command") == [None, False]
    # Names a caller (or a frame) makes up reach nothing inherited from Object.prototype.
    for command, parameter in (("__proto__", None), ("constructor", None), ("toString", None)):
        assert call(v, command, parameter) == [None, False], command
    assert call(v, "getField", "usnat.constructor") == [None, False]
    assert call(v, "getField", "__proto__.x") == [None, False]
    assert call(v, "hasSection", "__proto__") == [False, True]
    assert call(v, "getSection", "constructor") == [None, False]
    # What a caller gets is a copy: changing it changes nothing for the next caller.
    v.page.evaluate("() => { let s; __gpp('getSection', (d) => { s = d; }, 'usnat'); s.SaleOptOut = 1; }")
    assert call(v, "getField", "usnat.SaleOptOut") == [2, True]
    # Frames find the API by the __gppLocator frame and call it with postMessage.
    assert v.page.evaluate("Boolean(window.frames.__gppLocator)")
    reply = v.page.evaluate(
        """() => new Promise((resolve) => {
          addEventListener("message", (e) => e.data && e.data.__gppReturn && resolve(e.data.__gppReturn));
          const call = { command: "getField", parameter: "usnat.SharingNotice", callId: "c1" };
          postMessage({ __gppCall: call }, "*");
        })"""
    )
    assert reply == {"returnValue": 1, "success": True, "callId": "c1"}


def test_after_do_not_sell_the_listener_hears_the_new_string(us_visitor: Callable[..., Visitor]) -> None:
    """R38: after "Do Not Sell or Share" an addEventListener listener hears the new string, whose
    sale, sharing and targeted-advertising opt-outs say "opted out"."""
    v = us_visitor(CALIFORNIA)
    v.goto("/")
    before = call(v, "ping")[0]["gppString"]
    listener = v.page.evaluate(LISTEN)
    assert v.page.evaluate("window.__events")[0][:2] == ["listenerRegistered", True]
    v.click(DNS)
    expect(v.page.locator("#cb-banner")).to_have_count(0)
    v.wait_until("window.__events.some((e) => e[0] === 'signalStatus')")
    events = v.page.evaluate("window.__events")
    names = [e[0] for e in events]
    assert names[names.index("sectionChange") :][:2] == ["sectionChange", "signalStatus"], names
    after = events[-1][2]
    assert after != before and events[-1][1] == "ready"
    assert iab_decode(after)["usnat"]["SaleOptOut"] == 1
    assert iab_decode(after)["usnat"]["SharingOptOut"] == 1
    assert call(v, "getField", "usnat.TargetedAdvertisingOptOut") == [1, True]
    assert call(v, "ping")[0]["cmpDisplayStatus"] == "hidden"
    # Removed, a listener hears nothing more; removing it twice says so.
    removed = call(v, "removeEventListener", listener)[0]
    assert removed["eventName"] == "listenerRemoved" and removed["data"] is True
    assert call(v, "removeEventListener", listener)[0]["data"] is False
    # The next page answers with the opt-out from its first byte.
    v.goto("/")
    assert iab_decode(call(v, "ping")[0]["gppString"])["usnat"]["SaleOptOut"] == 1


def test_california_with_gpc_is_opted_out_with_the_gpc_subsection(us_visitor: Callable[..., Visitor]) -> None:
    v = us_visitor({**CALIFORNIA, **GPC})
    v.goto("/")
    ping = call(v, "ping")[0]
    usnat = iab_decode(ping["gppString"])["usnat"]
    assert usnat["Gpc"] is True and usnat["SaleOptOut"] == usnat["TargetedAdvertisingOptOut"] == 1
    assert usnat == ping["parsedSections"]["usnat"]


@pytest.mark.parametrize("headers", [SWEDEN, {}], ids=["sweden", "no header"])
def test_opt_in_visitors_get_no_gpp_at_all(
    us_visitor: Callable[..., Visitor], headers: dict[str, str]
) -> None:
    v = us_visitor(headers)
    v.goto("/")
    v.settle()
    assert v.page.evaluate("typeof window.__gpp") == "undefined"
    assert v.page.evaluate("Boolean(window.frames.__gppLocator)") is False
    assert not [s for s in v.seen if "gpp.js" in s.url]
