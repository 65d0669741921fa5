"""The banner and the preferences dialog in Chromium, with JavaScript on (R2, R7–R12, R15, R31)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from playwright.sync_api import BrowserContext, Page, expect

OPTIONAL_COOKIES = ("_stats", "_ads")
STYLE_PROPS = (
    "font-family",
    "font-size",
    "font-weight",
    "font-style",
    "color",
    "background-color",
    "border-top-width",
    "border-top-style",
    "border-top-color",
    "border-radius",
    "padding-top",
    "padding-left",
    "text-decoration-line",
    "text-transform",
    "letter-spacing",
)


def record_requests(page: Page) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    page.on("request", lambda r: seen.append((r.method, r.url)))
    return seen


def decisions(seen: list[tuple[str, str]], prefix: str = "/_consent") -> list[str]:
    """Paths of the decision requests (POST {prefix} and {prefix}/withdraw) made so far."""
    out = []
    for method, url in seen:
        path = "/" + url.split("/", 3)[3].split("?")[0]
        if method == "POST" and path in (prefix, prefix + "/withdraw"):
            out.append(path)
    return out


def state(page: Page, site: Any) -> dict[str, Any]:
    return page.request.get(site.url + "/_consent/state").json()


def consent_calls(page: Page) -> list[list[Any]]:
    return page.evaluate("(window.dataLayer||[]).map(a => Array.from(a)).filter(a => a[0] === 'consent')")


def banner_buttons(page: Page):
    return page.locator("#cb-banner .cb-actions > button")


def open_dialog(page: Page) -> None:
    page.get_by_role("button", name="Customise").click()
    expect(page.locator("#cb-dialog")).to_be_visible()


def test_three_first_layer_buttons_are_equal_siblings(page: Page, site: Any, new_context) -> None:
    """R7: Accept all, Reject all and Customise are sibling <button>s of equal size, weight and style."""
    for width, path, names in (
        (1280, "/", ["Accept all", "Reject all", "Customise"]),
        (1280, "/sv", ["Acceptera alla", "Avvisa alla", "Anpassa"]),
        (360, "/", ["Accept all", "Reject all", "Customise"]),
    ):
        p = new_context(viewport={"width": width, "height": 740}).new_page()
        p.goto(site.url + path)
        buttons = banner_buttons(p)
        expect(buttons).to_have_count(3)
        assert buttons.all_inner_texts() == names
        info = buttons.evaluate_all(
            """(els, props) => els.map(b => ({
                tag: b.tagName, parent: b.parentElement === els[0].parentElement,
                box: b.getBoundingClientRect().toJSON(),
                style: props.map(p => getComputedStyle(b).getPropertyValue(p)),
                cls: b.className}))""",
            list(STYLE_PROPS),
        )
        for b in info:
            assert b["tag"] == "BUTTON" and b["parent"]
            assert abs(b["box"]["width"] - info[0]["box"]["width"]) < 1, (width, path, info)
            assert abs(b["box"]["height"] - info[0]["box"]["height"]) < 1, (width, path, info)
            assert b["style"] == info[0]["style"], (width, path, b["style"], info[0]["style"])
            assert b["cls"] == info[0]["cls"]
            assert b["box"]["width"] >= 24 and b["box"]["height"] >= 24


def test_reject_takes_one_click_and_sets_no_optional_cookie(
    page: Page, site: Any, context: BrowserContext
) -> None:
    """R7, R10, R17: one click on Reject all records a refusal; the banner goes, settings appear."""
    seen = record_requests(page)
    page.goto(site.url + "/")
    page.get_by_role("button", name="Reject all").click()
    expect(page.locator("#cb-banner")).to_have_count(0)
    expect(page.get_by_role("button", name="Cookie settings")).to_be_visible()
    assert decisions(seen) == ["/_consent"]
    s = state(page, site)
    assert s["decided"] and s["categories"] == ["necessary"]
    page.wait_for_timeout(300)
    assert not [c for c in context.cookies() if c["name"] in OPTIONAL_COOKIES]
    assert not [u for _, u in seen if "/t/" in u]
    # remembered: the next page shows no banner (R17)
    page.goto(site.url + "/other")
    expect(page.locator("#cb-banner")).to_have_count(0)
    expect(page.get_by_role("button", name="Cookie settings")).to_be_visible()


def test_nothing_optional_runs_before_a_decision(page: Page, site: Any, context: BrowserContext) -> None:
    """R1, R2, R30, R32: before a decision no tracker request, no optional cookie, Consent Mode denied."""
    seen = record_requests(page)
    page.goto(site.url + "/")
    page.wait_for_load_state("networkidle")
    assert not [u for _, u in seen if "/t/" in u]
    assert page.locator("#video").get_attribute("src") is None
    assert page.evaluate("window.cbOrder") is None
    # only what the middleware itself sets: the form token's cookie (necessary, declared)
    assert {c["name"] for c in context.cookies()} <= {"consent_csrf"}
    assert page.evaluate("localStorage.length") == 0
    assert consent_calls(page) == [
        [
            "consent",
            "default",
            {
                "ad_storage": "denied",
                "ad_user_data": "denied",
                "ad_personalization": "denied",
                "analytics_storage": "denied",
                "wait_for_update": 500,
            },
        ]
    ]
    assert not state(page, site)["decided"]


def test_dialog_switches_start_off_and_necessary_is_locked(page: Page, site: Any) -> None:
    """R10, R5: optional switches start off, necessary is on and locked; services list the cookies."""
    page.goto(site.url + "/")
    open_dialog(page)
    dialog = page.locator("#cb-dialog")
    assert dialog.evaluate("d => d.matches(':modal')")
    necessary = dialog.get_by_role("switch", name="Necessary")
    expect(necessary).to_be_checked()
    expect(necessary).to_be_disabled()
    for summary in dialog.locator("summary").all():
        summary.click()
    for name in ("Analytics", "Marketing", "Allow stats", "Allow video"):
        expect(dialog.get_by_role("switch", name=name)).not_to_be_checked()
    table = dialog.locator(".cb-cat").nth(1).locator("table")
    expect(table).to_contain_text("_stats")
    expect(table).to_contain_text("13 months")
    expect(dialog.locator(".cb-cat").nth(1)).to_contain_text("Stats Oy")
    buttons = dialog.locator(".cb-actions > button")
    assert buttons.all_inner_texts() == ["Save choices", "Accept all", "Reject all"]


def test_saving_with_nothing_ticked_is_a_refusal(page: Page, site: Any) -> None:
    """R10: Save choices with nothing ticked records a refusal."""
    page.goto(site.url + "/")
    open_dialog(page)
    page.get_by_role("button", name="Save choices").click()
    expect(page.locator("#cb-dialog")).to_be_hidden()
    s = state(page, site)
    assert s["decided"] and s["categories"] == ["necessary"]


def test_escape_closes_the_dialog_and_records_nothing(page: Page, site: Any) -> None:
    """R11, R12: Escape closes the dialog without recording; focus returns to Customise."""
    seen = record_requests(page)
    page.goto(site.url + "/")
    open_dialog(page)
    page.get_by_role("switch", name="Analytics").check()
    page.keyboard.press("Escape")
    expect(page.locator("#cb-dialog")).to_be_hidden()
    expect(page.get_by_role("button", name="Customise")).to_be_focused()
    expect(page.locator("#cb-banner")).to_be_visible()
    page.mouse.wheel(0, 400)
    page.wait_for_timeout(200)
    assert decisions(seen) == []
    assert not state(page, site)["decided"]
    # the switch the visitor flipped before Escape is not kept as a choice
    open_dialog(page)
    expect(page.get_by_role("switch", name="Analytics")).not_to_be_checked()
    # navigating away records nothing either (R11)
    page.goto(site.url + "/other")
    expect(page.locator("#cb-banner")).to_be_visible()
    assert decisions(seen) == [] and not state(page, site)["decided"]


def test_keyboard_only_journey_through_the_dialog(page: Page, site: Any) -> None:
    """R12, R8: Tab reaches Customise (with a visible focus ring), Enter opens, Space toggles, Enter
    on Save records the choice."""
    page.goto(site.url + "/")
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent.trim()") == "Customise":
            break
    else:
        raise AssertionError("Customise is not reachable with Tab")
    # a visible focus ring (R8)
    ring = page.evaluate("getComputedStyle(document.activeElement).outlineWidth")
    assert float(ring.removesuffix("px")) >= 2
    page.keyboard.press("Enter")
    expect(page.locator("#cb-dialog")).to_be_visible()
    assert page.evaluate("document.getElementById('cb-dialog').contains(document.activeElement)")
    analytics = page.get_by_role("switch", name="Analytics")
    for _ in range(20):
        if page.evaluate("document.activeElement.id") == "cb-c-analytics":
            break
        page.keyboard.press("Tab")
    else:
        raise AssertionError("the Analytics switch is not reachable with Tab")
    page.keyboard.press("Space")
    expect(analytics).to_be_checked()
    for _ in range(20):
        if page.evaluate("document.activeElement.textContent.trim()") == "Save choices":
            break
        page.keyboard.press("Tab")
    else:
        raise AssertionError("Save choices is not reachable with Tab")
    page.keyboard.press("Enter")
    expect(page.locator("#cb-dialog")).to_be_hidden()
    s = state(page, site)
    assert s["decided"] and s["categories"] == ["necessary", "analytics"]
    assert s["services"].get("stats") is True
    expect(page.get_by_role("button", name="Cookie settings")).to_be_focused()


def test_focus_is_trapped_in_the_dialog_and_returned(page: Page, site: Any) -> None:
    """R12: Tab and Shift+Tab cycle inside the open dialog; closing returns focus to the opener."""
    page.goto(site.url + "/")
    customise = page.get_by_role("button", name="Customise")
    customise.focus()
    page.keyboard.press("Enter")
    inside = "document.getElementById('cb-dialog').contains(document.activeElement)"
    assert page.evaluate(inside)
    visited = set()
    for _ in range(30):
        page.keyboard.press("Tab")
        assert page.evaluate(inside)
        visited.add(page.evaluate("[...document.querySelectorAll('*')].indexOf(document.activeElement)"))
    for _ in range(30):
        page.keyboard.press("Shift+Tab")
        assert page.evaluate(inside)
    assert len(visited) >= 8  # it cycled through the controls rather than sticking to one
    page.get_by_role("button", name="Close").click()
    expect(customise).to_be_focused()


def test_accept_activates_scripts_and_iframes_in_order_without_reload(
    page: Page, site: Any, context: BrowserContext
) -> None:
    """R2, R31: after Accept all, neutralised scripts run in document order and iframes load, no reload."""
    page.goto(site.url + "/")
    page.evaluate("window.loadMarker = 42")
    page.get_by_role("button", name="Accept all").click()
    page.wait_for_function("() => (window.cbOrder || []).length >= 4")
    assert page.evaluate("window.cbOrder") == ["stats", "inline", "late", "ads"]
    assert page.evaluate("window.loadMarker") == 42  # same document: no reload
    expect(page.locator("#video")).to_have_attribute("src", "/t/frame.html")
    expect(page.locator("#video")).to_be_visible()  # the gate's `hidden` is lifted
    expect(page.frame_locator("#video").get_by_text("Video player")).to_be_visible()
    expect(page.locator("#video-placeholder")).to_have_count(0)
    expect(page.locator("#pixel")).to_have_attribute("src", "/t/px.gif")
    assert page.locator("script[type='text/plain']").count() == 0
    names = {c["name"] for c in context.cookies()}
    assert {"_stats", "_ads"} <= names


def test_custom_choice_activates_only_the_granted_category(page: Page, site: Any) -> None:
    """R10: only the categories ticked start; marketing stays blocked."""
    page.goto(site.url + "/")
    open_dialog(page)
    page.get_by_role("switch", name="Analytics").check()
    page.get_by_role("button", name="Save choices").click()
    page.wait_for_function("() => (window.cbOrder || []).length >= 3")
    page.wait_for_timeout(300)
    assert page.evaluate("window.cbOrder") == ["stats", "inline", "late"]
    assert page.locator("#video").get_attribute("src") is None
    expect(page.locator("#video")).to_be_hidden()
    expect(page.locator("#video-placeholder")).to_be_visible()
    assert page.locator("#pixel").get_attribute("src") is None


def test_placeholder_allow_button_grants_its_category(page: Page, site: Any) -> None:
    """R10, R2: a placeholder's "Allow Marketing" grants marketing alone and loads the video in place."""
    page.goto(site.url + "/")
    page.get_by_role("button", name="Allow Marketing").click()
    expect(page.locator("#video")).to_be_visible()
    expect(page.locator("#video-placeholder")).to_have_count(0)
    page.wait_for_function("() => (window.cbOrder || []).length >= 1")
    assert page.evaluate("window.cbOrder") == ["ads"]
    s = state(page, site)
    assert s["categories"] == ["necessary", "marketing"] and s["services"]["video"] is True
    expect(page.locator("#cb-banner")).to_have_count(0)


def test_exactly_one_consent_mode_update_per_decision(page: Page, site: Any) -> None:
    """R30, R31: the default comes first; each decision or withdrawal adds exactly one update."""
    page.goto(site.url + "/")
    page.get_by_role("button", name="Accept all").click()
    page.wait_for_function("() => (window.cbOrder || []).length >= 4")
    granted = {
        "ad_storage": "granted",
        "ad_user_data": "granted",
        "ad_personalization": "granted",
        "analytics_storage": "granted",
    }
    calls = consent_calls(page)
    assert [c[1] for c in calls] == ["default", "update"]
    assert calls[1][2] == granted
    # withdrawal from the settings: one more update, everything denied (R16)
    page.get_by_role("button", name="Cookie settings").click()
    page.locator("#cb-dialog").get_by_role("button", name="Reject all").click()
    expect(page.locator("#cb-dialog")).to_be_hidden()
    calls = consent_calls(page)
    assert [c[1] for c in calls] == ["default", "update", "update"]
    assert calls[2][2] == dict.fromkeys(granted, "denied")
    # a decided visitor's next page starts from the recorded state
    page.goto(site.url + "/other")
    assert consent_calls(page) == [["consent", "default", dict.fromkeys(granted, "denied")]]


def test_settings_button_reopens_current_choices(page: Page, site: Any) -> None:
    """R15: after a decision every page has a settings button that opens the current choices."""
    seen = record_requests(page)
    page.goto(site.url + "/")
    open_dialog(page)
    page.get_by_role("switch", name="Analytics").check()
    page.get_by_role("button", name="Save choices").click()
    expect(page.locator("#cb-dialog")).to_be_hidden()
    for path in ("/other", "/"):
        page.goto(site.url + path)
        expect(page.locator("#cb-banner")).to_have_count(0)
        settings = page.get_by_role("button", name="Cookie settings")
        settings.click()
        expect(page.locator("#cb-dialog")).to_be_visible()
        expect(page.get_by_role("switch", name="Analytics")).to_be_checked()
        expect(page.get_by_role("switch", name="Marketing")).not_to_be_checked()
        page.keyboard.press("Escape")
        expect(settings).to_be_focused()
    # withdrawing takes no more clicks than accepting did, counting the settings button (R15, R16)
    page.get_by_role("button", name="Cookie settings").click()
    page.locator("#cb-dialog").get_by_role("button", name="Reject all").click()
    expect(page.locator("#cb-dialog")).to_be_hidden()
    assert decisions(seen) == ["/_consent", "/_consent/withdraw"]
    assert state(page, site)["categories"] == ["necessary"]


def test_public_api_and_change_event(page: Page, site: Any) -> None:
    """R15: window.consentBanner.show/get/on and the consent:change DOM event."""
    page.goto(site.url + "/")
    page.evaluate("""() => {
        window.seenApi = []; window.seenDom = [];
        consentBanner.on('change', s => seenApi.push(s));
        document.addEventListener('consent:change', e => seenDom.push(e.detail));
    }""")
    assert page.evaluate("consentBanner.get()")["decided"] is False
    page.evaluate("consentBanner.show()")
    expect(page.locator("#cb-dialog")).to_be_visible()
    page.get_by_role("switch", name="Marketing").check()
    page.get_by_role("button", name="Save choices").click()
    page.wait_for_function("() => window.seenDom.length === 1")
    api, dom = page.evaluate("[window.seenApi, window.seenDom]")
    assert len(api) == 1 and api == dom
    assert api[0]["decided"] and api[0]["categories"] == ["necessary", "marketing"]
    assert page.evaluate("consentBanner.get()") == api[0]


def test_gpc_notice_and_marketing_locked(new_context: Callable[..., BrowserContext], site: Any) -> None:
    """R26, R28: with Global Privacy Control the notice shows and marketing cannot be granted."""
    ctx = new_context(extra_http_headers={"Sec-GPC": "1"})
    ctx.add_init_script("Object.defineProperty(navigator, 'globalPrivacyControl', {value: true})")
    page = ctx.new_page()
    page.goto(site.url + "/")
    expect(page.locator("#cb-banner").get_by_text("Opt-out preference signal honored")).to_be_visible()
    open_dialog(page)
    expect(page.get_by_role("switch", name="Marketing")).to_be_disabled()
    page.locator("#cb-dialog").get_by_role("button", name="Accept all").click()
    expect(page.locator("#cb-dialog")).to_be_hidden()
    s = state(page, site)
    assert s["decided"] and "marketing" not in s["categories"] and "analytics" in s["categories"]
    assert consent_calls(page)[-1][2]["ad_storage"] == "denied"


def test_do_not_sell_link_opens_the_choices(page: Page, site: Any) -> None:
    """R29: the "Do Not Sell or Share My Personal Information" link is there and opens the choices;
    after a decision it is in the choices the settings button opens, on every page."""
    page.goto(site.url + "/")
    link = page.locator("#cb-banner").get_by_role("link", name="Do Not Sell or Share My Personal Information")
    link.click()
    expect(page.locator("#cb-dialog")).to_be_visible()
    page.keyboard.press("Escape")
    page.get_by_role("button", name="Reject all").click()
    # the decision is recorded in the background: the settings button shows once it is
    expect(page.get_by_role("button", name="Cookie settings")).to_be_visible()
    page.goto(site.url + "/other")
    page.get_by_role("button", name="Cookie settings").click()
    in_dialog = page.locator("#cb-dialog").get_by_role(
        "link", name="Do Not Sell or Share My Personal Information"
    )
    expect(in_dialog).to_be_visible()
    assert in_dialog.get_attribute("href") == "/privacy"


def test_first_layer_names_controller_purposes_links_and_withdrawal(page: Page, site: Any) -> None:
    """R9: the first layer names the controller and purposes, links policy and recipients, says withdraw."""
    page.goto(site.url + "/")
    banner = page.locator("#cb-banner")
    expect(banner).to_contain_text("Example Booking AB")
    expect(banner).to_contain_text("Analytics")
    expect(banner).to_contain_text("Marketing")
    expect(banner).to_contain_text("withdraw your consent at any time")
    expect(banner.get_by_role("link", name="Privacy policy")).to_have_attribute("href", "/privacy")
    expect(banner.get_by_role("link", name="Who receives the data")).to_have_attribute(
        "href", "/privacy#recipients"
    )


def test_page_language_picks_the_banner_and_dialog_texts(new_context, site: Any, screenshot) -> None:
    """R14: the page's <html lang> picks the banner's and the dialog's texts over Accept-Language, in
    the light and the dark scheme. The screenshots (e2e/artifacts/) are for a person reviewing a
    change: nothing is judged from them (axe-core checks contrast in both schemes)."""
    for lang, path, texts in (
        ("en", "/", ("Your privacy choices", "Cookie settings", "Save choices")),
        ("sv", "/sv", ("Dina val om integritet", "Kakinställningar", "Spara val")),
    ):
        # Accept-Language says the other language: the page's own lang wins
        other = "sv" if lang == "en" else "en"
        page = new_context(locale=other, extra_http_headers={"Accept-Language": other}).new_page()
        page.goto(site.url + path)
        expect(page.locator("#cb-banner h2")).to_have_text(texts[0])
        screenshot(page, f"banner-{lang}")
        page.locator("#cb-banner .cb-actions > button").nth(2).click()
        expect(page.locator("#cb-dialog h2")).to_have_text(texts[1])
        expect(page.locator("#cb-dialog")).to_contain_text(texts[2])
        screenshot(page, f"dialog-{lang}")
        dark = new_context(color_scheme="dark").new_page()
        dark.goto(site.url + path)
        expect(dark.locator("#cb-banner h2")).to_have_text(texts[0])
        screenshot(dark, f"banner-{lang}-dark")


def test_banner_comes_back_when_the_policy_revision_changed(
    context: BrowserContext, site: Any, old_revision_token: str
) -> None:
    """R18, R33: a choice made under an earlier policy revision counts as undecided: banner, nothing runs."""
    context.add_cookies([{"name": "consent", "value": old_revision_token, "url": site.url}])
    page = context.new_page()
    page.goto(site.url + "/")
    expect(page.locator("#cb-banner")).to_be_visible()
    assert page.evaluate("consentBanner.get()")["decided"] is False
    page.wait_for_timeout(300)
    assert page.evaluate("window.cbOrder") is None


def test_script_tells_the_server_about_gpc(new_context: Callable[..., BrowserContext], site: Any) -> None:
    """R26: navigator.globalPrivacyControl alone (no header) travels with the decision and is honoured."""
    ctx = new_context()
    ctx.add_init_script("Object.defineProperty(navigator, 'globalPrivacyControl', {value: true})")
    page = ctx.new_page()
    bodies: list[str] = []
    page.on("request", lambda r: bodies.append(r.post_data or "") if r.method == "POST" else None)
    page.goto(site.url + "/")
    expect(page.locator("#cb-banner").get_by_text("Opt-out preference signal honored")).to_be_visible()
    page.get_by_role("button", name="Accept all").click()
    expect(page.locator("#cb-banner")).to_have_count(0)
    assert len(bodies) == 1 and '"gpc":true' in bodies[0]
    assert state(page, site)["categories"] == ["necessary", "analytics"]
