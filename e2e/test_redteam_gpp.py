"""Red team, issue 17: a hostile frame against window.__gpp in Chromium (the US demo as California).

GPP is meant to be read by frames (postMessage through __gppLocator), so what a frame may read is what
any caller reads; what it must not do is change what another party hears. Fixtures and helpers are
e2e/test_gpp.py's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from playwright.sync_api import Frame, expect
from test_gpp import CALIFORNIA, DNS, LISTEN, call, us_demo, us_visitor

if TYPE_CHECKING:
    from demo_support import Visitor

pytest_plugins = ("demo_support",)
__all__ = ["us_demo", "us_visitor"]  # the fixtures, used by name

# From inside a frame: one __gppCall to the top page, resolved with its __gppReturn.
FRAME_CALL = """([command, parameter, callId]) => new Promise((resolve) => {
  addEventListener("message", (e) => {
    const r = e.data && e.data.__gppReturn;
    if (r && r.callId === callId) resolve(r);
  });
  parent.postMessage({ __gppCall: { command, parameter, callId } }, "*");
})"""


def frame_call(frame: Frame, command: str, parameter: Any, call_id: str) -> dict[str, Any]:
    answer: dict[str, Any] = frame.evaluate(FRAME_CALL, [command, parameter, call_id])
    return answer


def test_a_frame_cannot_remove_another_partys_gpp_listener(us_visitor: Callable[..., Visitor]) -> None:
    """R38. The page's own ad library listens for GPP changes; a hostile frame (an ad creative, a
    widget) posts removeEventListener for listener ids 1..20 (they are small counters). Before the fix
    that removed the page's listener, so after "Do Not Sell or Share" the library never heard the
    opted-out string and kept selling on the old one. Now a frame removes only the listeners it added
    itself; the page's own calls remove any."""
    v = us_visitor(CALIFORNIA)
    v.goto("/")
    page_listener = v.page.evaluate(LISTEN)
    v.page.evaluate("""() => { const f = document.createElement("iframe"); f.name = "hostile";
      document.body.appendChild(f); }""")
    frame = v.page.frame(name="hostile")
    assert frame is not None
    for n in range(1, 21):
        answer = frame_call(frame, "removeEventListener", n, f"rm{n}")
        assert answer["returnValue"]["data"] is False, n
    # Its own listener it may remove.
    own = frame_call(frame, "addEventListener", None, "add")["returnValue"]["listenerId"]
    assert own != page_listener
    assert frame_call(frame, "removeEventListener", own, "rm-own")["returnValue"]["data"] is True
    # The page's listener still hears the opt-out.
    v.click(DNS)
    expect(v.page.locator("#cb-banner")).to_have_count(0)
    v.wait_until("window.__events.some((e) => e[0] === 'signalStatus')")
    assert [e for e in v.page.evaluate("window.__events") if e[0] == "sectionChange"]
    assert call(v, "removeEventListener", page_listener)[0]["data"] is True


def test_a_frame_adding_listeners_by_the_thousand_keeps_sixteen(us_visitor: Callable[..., Visitor]) -> None:
    """R38. A hostile frame posts addEventListener 2,000 times: each listener would cost the page a
    message per event, so one decision would have the page's main thread post 6,000 (or millions).
    Now a frame keeps 16 and is told no for the rest; the page's own listeners are not limited, and
    after "Do Not Sell or Share" the frame hears only its 16 listeners' events."""
    v = us_visitor(CALIFORNIA)
    v.goto("/")
    v.page.evaluate("""() => { const f = document.createElement("iframe"); f.name = "hostile";
      document.body.appendChild(f); }""")
    frame = v.page.frame(name="hostile")
    assert frame is not None
    answers = frame.evaluate(
        """(n) => new Promise((resolve) => {
          const answers = [];
          window.__heard = 0;
          addEventListener("message", (e) => {
            const r = e.data && e.data.__gppReturn;
            if (!r) return;
            if (r.callId.startsWith("add")) {
              if (r.returnValue && r.returnValue.eventName !== "listenerRegistered") window.__heard++;
              else answers.push(r.success);
              if (answers.length === n) resolve(answers);
            }
          });
          for (let i = 0; i < n; i++)
            parent.postMessage({ __gppCall: { command: "addEventListener", callId: "add" + i } }, "*");
        })""",
        2000,
    )
    assert answers.count(True) == 16 and answers.count(False) == 1984
    for _ in range(40):  # the page itself is not limited
        v.page.evaluate("() => __gpp('addEventListener', () => {})")
    v.click(DNS)
    expect(v.page.locator("#cb-banner")).to_have_count(0)
    v.page.wait_for_timeout(500)
    heard = frame.evaluate("window.__heard")
    assert 16 * 2 <= heard <= 16 * 3, heard  # sectionChange, signalStatus (and cmpDisplayStatus)
