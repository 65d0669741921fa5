"""After a decision, one settings button opens the choices (issue 14, item 7; R15, R29).

The three floating buttons (settings, withdraw, "Do Not Sell") that covered the page are one: the
withdrawal is the dialog's Reject all (one click, with JavaScript or without) and the "Do Not Sell"
link is in the dialog. What the browser does with them is in e2e/test_settings_control.py.
"""

from __future__ import annotations

from consent_banner.banner import Banner

from .test_banner import El, body, decided, dom, make_config

DNS = "Do Not Sell or Share My Personal Information"


def outside_the_panels(html: str) -> list[El]:
    """What a decided visitor's page gets from us beside the banner and the dialog."""
    root = dom(html).one("div", id="cb")
    return [el for el in root.children if el.tag not in ("form", "section", "dialog")]


def test_one_settings_button_and_the_choices_hold_the_rest() -> None:
    """R15, R29: one button outside the dialog; the dialog withdraws in one click and links DNS."""
    banner = Banner(make_config(do_not_sell_link=True), prefix="/_consent")
    html = body(banner, decided("analytics"))
    [button] = outside_the_panels(html)
    assert button.tag == "button" and button.attrs["class"] == "cb-settings"
    assert button.attrs["popovertarget"] == "cb-dialog" and "hidden" not in button.attrs  # works without JS
    assert button.all_text == "Cookie settings"
    dialog = dom(html).one("dialog")
    [withdraw] = [b for b in dialog.all("button") if b.attrs.get("value") == "reject_all"]
    assert withdraw.attrs["formaction"] == "/_consent/withdraw"
    [dns] = [a for a in dialog.all("a") if a.all_text == DNS]
    assert dns.attrs["href"] == "https://example.com/privacy"


def test_without_the_do_not_sell_setting_no_link_and_undecided_no_button() -> None:
    banner = Banner(make_config(), prefix="/_consent")
    assert DNS not in body(banner, decided())
    [button] = outside_the_panels(body(banner))
    assert "hidden" in button.attrs  # the banner is up: the button waits for a decision
