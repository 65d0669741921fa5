/*
 * consent-banner's browser script, readable source. The file the middleware serves,
 * static/js/consent.js, is built from this one by esbuild: edit here, then `./run build`
 * (`./run test` fails while the built file is stale).
 *
 * It mounts the banner the server rendered (embedded on another site: fetches it from the
 * consent server first), records decisions as JSON, keeps the settings dialog in step with the
 * decision, activates what the gate neutralised once it is allowed, and offers
 * window.consentBanner (show, get, on) and the `consent:change` DOM event. What fails is never
 * swallowed: a decision that was not recorded is said in the banner or the dialog (and the
 * visitor can try again), and every error goes to console.error with its cause.
 *
 * Strict CSP: no string evaluation, no inline handlers or styles; activated scripts carry the
 * page's nonce. ES2020, no dependencies. Everything it needs comes from data-* attributes of
 * its own <script> element and of the banner's root element (see consent_banner/banner.py).
 *
 * Every byte counts (tests/test_banner.py: 4 KB gzipped with the stylesheet): functions are arrow
 * constants (all are defined before boot() calls any), and what esbuild cannot shorten (property
 * names, selectors, event names) is written once where it can be.
 */
((window, document) => {
  "use strict";

  // Our own <script> element (absent when injected by hand from a console).
  const script = document.currentScript || { dataset: {} };
  // Embedded mode: the consent server's origin. Empty when the page's own server is the gate.
  const server = (script.dataset.consentServer || "").replace(/\/+$/, "");
  const cookieName = script.dataset.consentCookie || "consent";
  const nonce = script.nonce || "";

  // On its own origin the gate injects this script with the page's nonce. A copy without it was
  // put there by someone else ('self' admits one reflected into the page, perhaps beside a fake
  // banner, perhaps after markup that buried the gate's own copy): it does nothing at all.
  if (!nonce && !server) return;
  // Included twice, the first wins. The flag is a symbol, because markup reflected into the page
  // can clobber window.consentBanner (<form id="consentBanner">) but never a symbol.
  const running = Symbol.for("consent-banner");
  if (window[running]) return;
  window[running] = true;

  // The gate marks what it wrote with the page's nonce, so markup reflected into the page
  // cannot pose as a placeholder or a neutralised tag. Embedded there is no gate, and no nonce.
  const writtenByGate = (el) => el.nonce === nonce && (nonce || server);

  let root; // the banner's root element: [data-consent-root]
  let dialog; // the settings <dialog> inside it
  let state; // the visitor's consent, shaped as GET {prefix}/state answers
  let settings; // the settings button, shown after a decision
  let opener; // what had focus before the dialog opened, to return focus to
  let source; // where the decision is being made: "banner", "dialog" or "settings"
  let prefix; // the consent routes' prefix, e.g. "/_consent"
  let busy; // a decision is on its way

  const selectAll = (selector, within = document) => [...within.querySelectorAll(selector)];
  const splitWords = (text) => (text ? text.split(" ") : []);
  const inRoot = (selector) => root.querySelector(selector);
  const gpcApplies = () => state.gpc || !!navigator.globalPrivacyControl;
  // What went wrong, for the site's developers (the visitor is told in the banner or dialog).
  const report = (error) => console.error("consent-banner:", error);

  // The same rule as Consent.allows_service on the server.
  const allows = (category, service) =>
    category === "necessary" ||
    (state.categories.includes(category) && state.services[service] !== false);

  // One call to the consent routes: a decision (POST, answered with JSON) or the banner (GET,
  // answered with HTML). Embedded: no third-party cookie (fetch sends cookies to its own origin
  // only, and keeps none from another); the token goes in a header. Whatever
  // goes wrong (no network, a refusal, an answer that is not JSON) throws an Error naming the call
  // and the cause, with the server's own explanation when it gave one (a 403 names the origin).
  const request = async (path, body) => {
    const method = body ? "POST" : "GET";
    const url = server + prefix + path;
    const headers = {};
    // Embedded mode keeps the signed token as a first-party cookie of the page.
    const token = server && document.cookie.split("; ").find((c) => c.startsWith(cookieName + "="));
    if (body) headers["Content-Type"] = "application/json";
    if (token) headers["X-Consent-Token"] = token.slice(cookieName.length + 1);
    try {
      const response = await fetch(url, {
        method,
        headers,
        body: body && JSON.stringify(body),
      });
      if (!response.ok) throw Error(response.status + " " + (await response.text()));
      return await (body ? response.json() : response.text());
    } catch (error) {
      throw Error(`${method} ${url}: ${error.message}`);
    }
  };

  // Records one decision ("accept_all", "reject_all" or "custom") and applies it to the page.
  const decide = async (action) => {
    const body = { language: root.dataset.lang, source, gpc: !!navigator.globalPrivacyControl };
    let path = "";
    if (action === "reject_all" && state.decided) {
      path = "/withdraw"; // refusing after a decision is a withdrawal
    } else {
      body.action = action;
      if (action === "custom") {
        body.categories = selectAll("[data-cb-category]:checked:not(:disabled)", root).map((el) => el.value);
        body.services = {};
        for (const el of selectAll("[data-cb-service]", root)) body.services[el.dataset.cbService] = el.checked;
      }
    }
    const answer = await request(path, body);
    if (server && answer.token) {
      document.cookie =
        `${cookieName}=${answer.token}; Max-Age=${answer.max_age}; Path=/; SameSite=Lax` +
        (location.protocol === "https:" ? "; Secure" : "");
    }

    // While the page's policy admits only what was granted (a decided visitor, or an undecided
    // one under csp_undecided = "strict"), granting more needs a fresh page; so does a loader the
    // gate marked data-consent-reload, now allowed: what it loads comes from origins this page's
    // policy refuses. Embedded pages have no gate policy to widen. The page that comes back is
    // decided, and nothing reloads it again: only a decision made on it can.
    const grantedBefore = (state.decided || root.dataset.strict) && state.categories;
    const { token: _token, max_age: _maxAge, ...newState } = answer;
    state = newState;
    const reload =
      !server &&
      ((grantedBefore && state.categories.some((c) => !grantedBefore.includes(c))) ||
        selectAll("[data-consent-reload]").some(mayActivate));

    // The banner goes; the settings button takes its place (and the focus, if it was inside).
    const banner = inRoot("#cb-banner");
    const focusWasInBanner = banner?.contains(document.activeElement);
    banner?.remove();
    settings.hidden = false;
    if (dialog.open) dialog.close();
    else if (focusWasInBanner) settings.focus();
    dodge();

    syncSwitches();
    pushConsentMode("update");
    if (!reload) activate();
    // consentBanner.on("change") listens to this event too: one broken listener cannot stop the
    // others (the browser reports its error and goes on).
    document.dispatchEvent(new CustomEvent("consent:change", { detail: api.get() }));
    if (reload) location.reload();
  };

  // Google Consent Mode v2: one call per decision, pushed as gtag.js does; Microsoft UET's consent
  // mode too, when the page declares UET. Each attribute lists "signal:category[:service]", e.g.
  // data-consent-mode="analytics_storage:analytics ..." and data-uet="ad_storage:marketing:bing".
  const pushConsentMode = (kind) => {
    const dataLayer = (window.dataLayer = window.dataLayer || []);
    const signals = (pairs) => {
      const granted = {};
      for (const pair of splitWords(pairs)) {
        const [signal, category, service] = pair.split(":");
        granted[signal] = allows(category, service) ? "granted" : "denied";
      }
      return granted;
    };
    if (typeof window.gtag !== "function") {
      window.gtag = function () {
        dataLayer.push(arguments);
      };
    }
    window.gtag("consent", kind, signals(root.dataset.consentMode));
    if (root.dataset.uet) (window.uetq = window.uetq || []).push("consent", kind, signals(root.dataset.uet));
  };

  // Whether the consent now allows a tag or placeholder the gate neutralised.
  const mayActivate = (el) =>
    writtenByGate(el) &&
    allows(el.dataset.consentCategory, el.dataset.consentService || el.dataset.consentPlaceholder);

  // Gives back what the gate neutralised, now that it is allowed.
  const activate = () => {
    // Scripts: a <script type="text/plain"> becomes a real one. They run one after the other,
    // in document order, as the parser would have run them.
    let queue = Promise.resolve();
    for (const held of selectAll("script[type='text/plain'][data-consent-category]")) {
      if (held.cbQueued || !mayActivate(held)) continue;
      held.cbQueued = 1;
      queue = queue.then(
        () =>
          new Promise((done) => {
            const live = document.createElement("script");
            const src = held.dataset.consentSrc;
            for (const attribute of held.attributes) {
              if (!/^(type$|src$|data-consent-)/.test(attribute.name)) {
                live.setAttribute(attribute.name, attribute.value);
              }
            }
            if (held.dataset.consentType) live.type = held.dataset.consentType;
            live.nonce = nonce;
            if (src) {
              live.async = false;
              live.onload = live.onerror = done;
              live.src = src;
            } else {
              live.text = held.text;
            }
            held.replaceWith(live);
            if (!src) done();
          }),
      );
    }
    queue.catch(report); // a held script that throws while made live stops those after it (order)

    // Other tags: every URL attribute the gate renamed data-consent-NAME gets its name back.
    // An iframe the gate hid behind its placeholder (data-consent-hidden) is shown again.
    for (const el of selectAll("[data-consent-category]:not(script,[data-consent-placeholder])")) {
      if (!mayActivate(el)) continue;
      for (const { name, value } of [...el.attributes]) {
        const original = name.slice(13); // after "data-consent-"
        if (/^data-consent-/.test(name) && !/^(category|service)$/.test(original)) {
          el.removeAttribute(name);
          if (original === "hidden") el.hidden = false;
          else el.setAttribute(original, value);
        }
      }
      // A media element picks its <source> only when loaded: a source given its URL back needs load().
      if (el.localName === "source") el.parentNode.load?.();
    }

    // The placeholders ("Allow <category>") of what is now allowed.
    for (const el of selectAll("[data-consent-placeholder]")) if (mayActivate(el)) el.remove();
  };

  // The dialog's switches show what is allowed now (undecided under opt-in: all off; under opt-out:
  // what runs before a decision); what GPC denies is locked.
  const syncSwitches = () => {
    const deniedByGpc = splitWords(root.dataset.gpcDenied);
    for (const input of selectAll("[data-cb-category]:not([value=necessary]),[data-cb-service]", root)) {
      const category = input.dataset.cbOf || input.value;
      input.checked = allows(category, input.dataset.cbService);
      input.disabled = gpcApplies() && deniedByGpc.includes(category);
    }
    for (const notice of selectAll("[data-cb-gpc]", root)) notice.hidden = !gpcApplies();
  };

  // The message that a decision was not recorded, in the live regions of the banner and the dialog
  // (role="alert"): emptied when the visitor tries again, so that a second failure is a new text,
  // announced again.
  const clearError = () => selectAll("[data-cb-error]", root).forEach((region) => (region.textContent = ""));

  const openDialog = () => {
    if (dialog.open) return;
    clearError();
    opener = document.activeElement;
    source = state.decided ? "settings" : "dialog";
    syncSwitches();
    dialog.showModal();
  };

  // Takes over the server-rendered banner: its forms post JSON from now on.
  const mount = (el) => {
    root = el;
    dialog = inRoot("dialog");
    settings = inRoot("[data-cb-settings]");
    dialog.removeAttribute("popover"); // without JavaScript a popover; with it a modal
    prefix = root.dataset.prefix;
    state = JSON.parse(root.dataset.state);
    syncSwitches();
    if (state.decided) activate();

    root.addEventListener("submit", (event) => {
      const button = event.submitter;
      if (button?.name !== "action") return;
      event.preventDefault();
      if (!dialog.contains(button)) source = "banner";
      record(button.value);
    });

    // A category switch carries its services along; switching a service on switches its category on.
    root.addEventListener("change", ({ target }) => {
      const category = target.dataset.cbCategory;
      const ofCategory = target.dataset.cbOf;
      if (category) {
        for (const service of selectAll(`[data-cb-of='${category}']`, root)) service.checked = target.checked;
      }
      if (ofCategory && target.checked) inRoot("#cb-c-" + ofCategory).checked = true;
    });

    // Focus stays in the dialog: its first and last controls are always its Close button and its
    // last action button, so Tab from the last goes to the first and Shift+Tab back. Escape closes
    // it natively, recording nothing.
    dialog.addEventListener("keydown", (event) => {
      const buttons = selectAll("button", dialog);
      const [from, to] = event.shiftKey ? [buttons[0], buttons.pop()] : [buttons.pop(), buttons[0]];
      if (event.key === "Tab" && document.activeElement === from) {
        event.preventDefault();
        to.focus();
      }
    });
    dialog.addEventListener("close", () => {
      const back = opener?.isConnected && opener !== document.body ? opener : settings;
      if (!back.hidden) back.focus();
    });

    // The settings button sits over the page: it must never hide what has focus (WCAG 2.4.11).
    // Checked again whenever focus moves or the page scrolls.
    for (const type of ["focusin", "scroll"]) addEventListener(type, dodge, true);

    // A page the back/forward cache shows again is the page as it was, scripts and all: if the
    // decision changed meanwhile (withdrawn on another page), only a fresh page obeys it. The
    // server's JSON and ours are alike (same keys, same order, no spaces) while nothing changed.
    addEventListener("pageshow", (event) => {
      if (event.persisted) {
        request("/state").then((now) => now !== JSON.stringify(state) && location.reload(), report);
      }
    });
  };

  // Over the focused element the button fades out (and lets clicks through) until focus moves on
  // or the page scrolls it clear; it stays where it is, so nothing jumps. Never for itself, nor
  // for <body>.
  const dodge = () => {
    const focused = document.activeElement;
    const a = settings.getBoundingClientRect();
    const b = focused.getBoundingClientRect();
    settings.classList.toggle(
      "cb-x",
      focused !== settings &&
        focused !== document.body &&
        a.left < b.right &&
        b.left < a.right &&
        a.top < b.bottom &&
        b.top < a.bottom,
    );
  };

  // Records a decision once at a time. When it cannot be recorded (refused, the log down, no
  // network, an answer that is not ours) the visitor stays undecided and is told so where they
  // are: in the dialog when it is open, else in the banner, else (a decided visitor allowing from
  // a placeholder) in the dialog, opened for it. Its buttons try again. A form
  // post instead would pass the same checks and fail the same way, landing on a JSON answer.
  const record = (action) => {
    if (busy) return;
    busy = 1;
    clearError();
    decide(action)
      .catch((error) => {
        report(error);
        if (!inRoot("#cb-banner")) openDialog();
        const region = (dialog.open ? dialog : root).querySelector("[data-cb-error]");
        region.textContent = region.dataset.cbError;
      })
      .finally(() => (busy = 0));
  };

  // Open and close buttons, and the gate's placeholders, whose "Allow <category>" grants that
  // category on top of the current choices.
  const onClick = (event) => {
    const target = event.target.closest?.("[data-cb-open],[data-cb-close],[data-consent-allow]");
    if (!target || !root) return;
    const category = target.dataset.consentAllow;
    if (category && !writtenByGate(target.parentNode)) return;
    event.preventDefault();
    if (category) {
      const categorySwitch = inRoot("#cb-c-" + category);
      if (!categorySwitch) return;
      syncSwitches();
      categorySwitch.checked = true;
      categorySwitch.dispatchEvent(new Event("change", { bubbles: true }));
      source = "banner";
      record("custom");
    } else if (target.hasAttribute("data-cb-close")) dialog.close();
    else openDialog();
  };

  // Embedded mode: the banner, its stylesheet and the state come from the consent server. The
  // server picks the language as it does for its own pages: the page's <html lang> when it has
  // texts for it, else the Accept-Language the browser sends.
  const loadEmbedded = async () => {
    const html = await request("/banner?lang=" + encodeURIComponent(document.documentElement.lang));
    const template = document.createElement("template");
    template.innerHTML = html; // the first element: text around it aside
    const el = template.content.firstElementChild;
    const stylesheet = document.createElement("link");
    stylesheet.rel = "stylesheet";
    stylesheet.href = server + el.dataset.css;
    // The banner waits for its stylesheet: no flash of unstyled markup. Should the stylesheet not
    // load, the banner still comes, unstyled but usable, and the console says why.
    await new Promise((resolve) => {
      stylesheet.onload = resolve;
      stylesheet.onerror = () => resolve(report(Error("GET " + stylesheet.href + ": not loaded")));
      document.head.append(stylesheet);
    });
    document.body.append(el);
    mount(el);
    const hasDefault = (window.dataLayer || []).some((a) => a[0] === "consent" && a[1] === "default");
    if (!hasDefault) pushConsentMode("default");
  };

  const api = (window.consentBanner = {
    show: () => root && openDialog(),
    get: () => state && JSON.parse(JSON.stringify(state)), // a copy: callers cannot change ours
    on: (event, listener) =>
      event === "change" && document.addEventListener("consent:change", (e) => listener(e.detail)),
  });

  const boot = () => {
    if (server) {
      prefix = new URL(script.src).pathname.replace(/\/consent\.js$/, "");
      loadEmbedded().catch(report); // no banner: the page stays as it is, undecided
    } else {
      // The last banner root before this script: one reflected into the page comes earlier.
      const el = selectAll("[data-consent-root]")
        .filter((candidate) => candidate.compareDocumentPosition(script) & 4) // DOCUMENT_POSITION_FOLLOWING
        .pop();
      if (el) mount(el);
    }
    document.addEventListener("click", onClick);
  };

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", boot);
  else boot();
})(window, document);
