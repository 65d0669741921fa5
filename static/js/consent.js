/* consent-banner (see banner.py). No eval, inline handlers or styles: strict-CSP safe. ES2020. */
((w, d) => {
  "use strict";
  const me = d.currentScript || { dataset: {} };
  const server = (me.dataset.consentServer || "").replace(/\/+$/, "");
  const cookieName = me.dataset.consentCookie || "consent";
  const nonce = me.nonce || "";
  // The first copy wins, but one with the gate's nonce beats a reflected one ('self' admits it).
  if (w.consentBanner && !(nonce && !w.consentBanner.n)) return;
  const ours = (el) => el.nonce === nonce && (nonce || server);
  const handlers = [];
  let root, dialog, state, opener, source, prefix, fallback, busy;

  const all = (sel, el = d) => [...el.querySelectorAll(sel)];
  const words = (s) => (s ? s.split(" ") : []);
  const find = (sel) => root.querySelector(sel);
  const gpc = () => state.gpc || !!navigator.globalPrivacyControl;
  // = Consent.allows_service
  const allows = (cat, svc) =>
    cat === "necessary" || (state.decided && state.categories.includes(cat) && state.services[svc] !== false);

  function token() {
    const c = d.cookie.split("; ").find((c) => c.startsWith(cookieName + "="));
    return c && c.slice(cookieName.length + 1);
  }

  // Embedded: no third-party cookie; the first-party token goes in a header.
  async function call(path, body) {
    const headers = {}, t = server && token();
    if (body) headers["Content-Type"] = "application/json";
    if (t) headers["X-Consent-Token"] = t;
    const r = await fetch(server + prefix + path, { method: body ? "POST" : "GET", headers,
      body: body && JSON.stringify(body), credentials: server ? "omit" : "same-origin" });
    if (!r.ok) throw Error(r.status);
    return r;
  }

  async function decide(action) {
    const body = { language: root.dataset.lang, source, gpc: !!navigator.globalPrivacyControl };
    let path = "";
    if (action === "reject_all" && state.decided) {
      path = "/withdraw"; // refusing after a decision is a withdrawal
    } else {
      body.action = action;
      if (action === "custom") {
        body.categories = all("[data-cb-category]:checked:not(:disabled)", root).map((el) => el.value);
        body.services = {};
        for (const el of all("[data-cb-service]", root)) body.services[el.dataset.cbService] = el.checked;
      }
    }
    const s = await (await call(path, body)).json();
    if (server && s.token) {
      d.cookie = `${cookieName}=${s.token}; Max-Age=${s.max_age}; Path=/; SameSite=Lax` +
        (location.protocol === "https:" ? "; Secure" : "");
    }
    const was = (state.decided || root.dataset.strict) && state.categories,
      { token: _t, max_age: _m, ...rest } = s, reload = was && !server && rest.categories.some((c) => !was.includes(c));
    state = rest;
    const banner = find("#cb-banner"), settings = find("[data-cb-settings]");
    const wasIn = banner && banner.contains(d.activeElement);
    banner?.remove();
    settings.hidden = false;
    if (dialog.open) dialog.close();
    else if (wasIn) settings.focus();
    sync();
    consentMode("update");
    if (!reload) activate();
    const copy = api.get();
    for (const f of handlers) {
      try { f(copy); } catch (e) { console.error(e); }
    }
    d.dispatchEvent(new CustomEvent("consent:change", { detail: copy }));
    if (reload) location.reload();
  }

  // Consent Mode v2: one call per decision, pushed as gtag.js does.
  function consentMode(kind) {
    const dl = (w.dataLayer = w.dataLayer || []);
    if (typeof w.gtag !== "function") w.gtag = function () { dl.push(arguments); };
    const o = {};
    for (const p of words(root.dataset.consentMode)) {
      const [signal, cat] = p.split(":");
      o[signal] = allows(cat) ? "granted" : "denied";
    }
    w.gtag("consent", kind, o);
  }

  const ok = (el, a = el.dataset) => ours(el) && allows(a.consentCategory, a.consentService || a.consentPlaceholder);

  // Neutralised scripts run one after the other, in document order, as the parser would.
  function activate() {
    let chain = Promise.resolve();
    for (const old of all("script[type='text/plain'][data-consent-category]")) {
      if (old.cbQueued || !ok(old)) continue;
      old.cbQueued = 1;
      chain = chain.then(() => new Promise((done) => {
        const s = d.createElement("script"), src = old.dataset.consentSrc;
        for (const a of old.attributes) {
          if (!/^(type$|src$|data-consent-)/.test(a.name)) s.setAttribute(a.name, a.value);
        }
        if (old.dataset.consentType) s.type = old.dataset.consentType;
        s.nonce = nonce;
        if (src) {
          s.async = false;
          s.onload = s.onerror = done;
          s.src = src;
        } else {
          s.text = old.text;
        }
        old.replaceWith(s);
        if (!src) done();
      }));
    }
    for (const el of all("[data-consent-category]:not(script,[data-consent-placeholder])")) {
      if (!ok(el)) continue;
      for (const a of [...el.attributes]) {
        const n = a.name.slice(13);
        if (/^data-consent-/.test(a.name) && !/^(category|service|hidden)$/.test(n)) {
          el.setAttribute(n, a.value);
          el.removeAttribute(a.name);
        }
      }
      // an iframe the gate hid behind its placeholder
      if (el.hasAttribute("data-consent-hidden")) {
        el.hidden = false;
        el.removeAttribute("data-consent-hidden");
      }
    }
    for (const el of all("[data-consent-placeholder]")) if (ok(el)) el.remove();
  }

  // The dialog shows the current choices (undecided: all off).
  function sync() {
    const denied = words(root.dataset.gpcDenied);
    for (const el of all("[data-cb-category]:not([value=necessary]),[data-cb-service]", root)) {
      const cat = el.dataset.cbOf || el.value;
      el.checked = allows(cat, el.dataset.cbService);
      el.disabled = gpc() && denied.includes(cat);
    }
    for (const el of all("[data-cb-gpc]", root)) el.hidden = !gpc();
  }

  function open() {
    if (dialog.open) return;
    opener = d.activeElement;
    source = state.decided ? "settings" : "dialog";
    sync();
    dialog.showModal();
  }

  function mount(el) {
    root = el;
    dialog = find("dialog");
    dialog.removeAttribute("popover"); // the no-JS popover becomes a modal
    prefix = root.dataset.prefix;
    state = JSON.parse(root.dataset.state); // the shape of GET {prefix}/state
    sync();
    if (state.decided) activate();
    root.addEventListener("submit", (e) => {
      const b = e.submitter;
      if (fallback || !b || b.name !== "action") return;
      e.preventDefault();
      if (!dialog.contains(b)) source = "banner";
      run(b.value, b);
    });
    // A category switch carries its services; a service needs its category.
    root.addEventListener("change", ({ target: t }) => {
      const c = t.dataset.cbCategory, of = t.dataset.cbOf;
      if (c) for (const s of all(`[data-cb-of='${c}']`, root)) s.checked = t.checked;
      if (of && t.checked) find("#cb-c-" + of).checked = true;
    });
    // Focus stays in the dialog; Escape closes it natively, recording nothing.
    dialog.addEventListener("keydown", (e) => {
      if (e.key !== "Tab") return;
      const f = all("a[href],button,input:not(:disabled),summary", dialog).filter((el) => el.getClientRects().length);
      if (d.activeElement === (e.shiftKey ? f[0] : f[f.length - 1])) {
        e.preventDefault();
        (e.shiftKey ? f[f.length - 1] : f[0]).focus();
      }
    });
    dialog.addEventListener("close", () => {
      const back = opener?.isConnected && opener !== d.body ? opener : find("[data-cb-settings]");
      if (!back.hidden) back.focus();
    });
  }

  function run(action, b) {
    if (busy) return;
    busy = 1;
    decide(action).then(() => (busy = 0), (err) => {
      busy = 0;
      if (server || !b) throw err;
      fallback = 1; // same origin: the plain form post still works
      b.form.requestSubmit(b);
    });
  }

  // Open/close buttons, and the gate's placeholders: "Allow <category>" grants it on top.
  function click(e) {
    const t = e.target.closest?.("[data-cb-open],[data-cb-close],[data-consent-allow]");
    if (!t || !root) return;
    const cat = t.dataset.consentAllow;
    if (cat && !ours(t.parentNode)) return;
    e.preventDefault();
    if (cat) {
      const c = find("#cb-c-" + cat);
      if (!c) return;
      sync();
      c.checked = true;
      c.dispatchEvent(new Event("change", { bubbles: true }));
      source = "banner";
      run("custom");
    } else if (t.hasAttribute("data-cb-close")) dialog.close();
    else open();
  }

  // Embedded mode: the banner and state come from the consent server.
  async function load() {
    const lang = (d.documentElement.lang || navigator.language || "").split("-")[0];
    const r = await call("/banner?lang=" + encodeURIComponent(lang)).catch(() => call("/banner"));
    const t = d.createElement("template");
    t.innerHTML = (await r.text()).trim();
    const el = t.content.firstElementChild;
    const l = d.createElement("link");
    l.rel = "stylesheet";
    l.href = server + el.dataset.css;
    await new Promise((r) => {
      l.onload = l.onerror = r;
      d.head.append(l);
    });
    d.body.append(el);
    mount(el);
    if (!(w.dataLayer || []).some((a) => a[0] === "consent" && a[1] === "default")) consentMode("default");
  }

  const api = (w.consentBanner = {
    n: !!nonce,
    show: () => root && open(),
    get: () => state && JSON.parse(JSON.stringify(state)),
    on: (ev, fn) => ev === "change" && handlers.push(fn),
  });

  function boot() {
    if (w.consentBanner !== api) return;
    if (server) {
      prefix = new URL(me.src).pathname.replace(/\/consent\.js$/, "");
      load();
    } else {
      // the last root before us: one reflected into the page comes earlier
      const el = all("[data-consent-root]").filter((r) => r.compareDocumentPosition(me) & 4).pop();
      if (el) mount(el);
    }
    d.addEventListener("click", click);
  }
  if (d.readyState === "loading") d.addEventListener("DOMContentLoaded", boot);
  else boot();
})(window, document);
