/*
 * window.__gpp: the IAB Global Privacy Platform CMP API (v1.1) for visitors under the opt-out model.
 * Readable source; static/js/gpp.js is built from it by esbuild (`./run build`), within its own
 * budget of 2 KB gzipped (tests/test_banner.py).
 *
 * No codec here: the server encodes the GPP string (consent_banner/gpp.py) and hands it, with its
 * fields already parsed, in the data-gpp attribute of this script's own element (the middleware
 * injects it at the top of <head>, with the page's nonce, so it answers before any ad script asks).
 * Every decision replaces it: consent.js's `consent:change` event carries the new state, whose
 * `gpp` member is the new answer; listeners hear `sectionChange`, then `signalStatus` "ready".
 *
 * Commands: ping, addEventListener, removeEventListener, hasSection, getSection, getField; any
 * other gets (null, false). Calls an IAB stub queued before this script ran are answered at once.
 * Frames reach the API through a frame named __gppLocator (postMessage __gppCall / __gppReturn).
 * What a caller gets is a copy: nothing it does changes what the next caller reads. A frame removes
 * only the listeners it added (ids are small counters: a hostile frame would otherwise silence the
 * page's ad library, which then never hears an opt-out); the page's own calls remove any. A frame
 * keeps at most FRAME_LISTENERS: each listener costs the page a message per event, and a frame
 * adding a million would have the page's main thread post three million after a decision.
 */
((window, document) => {
  "use strict";

  const script = document.currentScript;
  // { gppString, cmpId, cmpDisplayStatus, sectionList, applicableSections, supportedAPIs, parsedSections }
  let gpp = JSON.parse(script.dataset.gpp);
  const listeners = new Map(); // id -> [callback, the frame's window that added it, or null]
  let lastId = 0;
  const FRAME_LISTENERS = 16;
  const own = (object, key) => ({}).hasOwnProperty.call(object, key);
  const copy = (value) => (value == null ? null : JSON.parse(JSON.stringify(value)));

  const pingData = () => ({
    gppVersion: "1.1",
    cmpStatus: "loaded",
    cmpDisplayStatus: gpp.cmpDisplayStatus,
    signalStatus: "ready",
    supportedAPIs: copy(gpp.supportedAPIs),
    cmpId: gpp.cmpId,
    sectionList: copy(gpp.sectionList),
    applicableSections: copy(gpp.applicableSections),
    gppString: gpp.gppString,
    parsedSections: copy(gpp.parsedSections),
  });
  const eventData = (eventName, listenerId, data) => ({ eventName, listenerId, data, pingData: pingData() });
  // "usnat" or "usnat.1" (a version): the section's fields, or undefined.
  const section = (name) => {
    name = String(name).split(".")[0];
    return own(gpp.parsedSections, name) ? gpp.parsedSections[name] : undefined;
  };

  const commands = {
    ping: () => pingData(),
    addEventListener: (callback, _, from) => {
      if (from && [...listeners.values()].filter((l) => l[1] === from).length >= FRAME_LISTENERS) return null;
      listeners.set(++lastId, [callback, from]);
      return eventData("listenerRegistered", lastId, true);
    },
    removeEventListener: (callback, id, from) => {
      const found = listeners.get(Number(id));
      return eventData("listenerRemoved", id, !!found && (!from || found[1] === from) && listeners.delete(Number(id)));
    },
    hasSection: (callback, name) => own(gpp.parsedSections, String(name).split(".")[0]),
    getSection: (callback, name) => copy(section(name)),
    getField: (callback, path) => {
      const [name, field] = String(path).split(".");
      const fields = section(name);
      return fields && own(fields, field) ? copy(fields[field]) : null;
    },
  };

  // `from`: the window of a frame calling by postMessage; null for the page's own calls.
  const run = (command, callback, parameter, from) => {
    if (typeof callback !== "function") callback = () => {};
    if (!own(commands, command)) return callback(null, false);
    const answer = commands[command](callback, parameter, from);
    callback(answer, answer !== null);
  };
  const api = (command, callback, parameter) => run(command, callback, parameter, null);

  // Calls made before we ran, queued by an IAB stub: `__gpp()` hands its queue over.
  let queued = [];
  try {
    queued = window.__gpp?.() || window.__gpp?.queue || [];
  } catch {
    // a stub that throws queued nothing we can read
  }
  window.__gpp = api;
  if (Array.isArray(queued)) for (const args of queued) api(...args);

  const tell = (eventName, data) => {
    for (const [id, [callback]] of listeners) callback(eventData(eventName, id, data), true);
  };
  document.addEventListener("consent:change", (event) => {
    const next = event.detail?.gpp;
    if (!next) return;
    const displayChanged = next.cmpDisplayStatus !== gpp.cmpDisplayStatus;
    gpp = next;
    if (displayChanged) tell("cmpDisplayStatus", gpp.cmpDisplayStatus);
    tell("sectionChange", "usnat");
    tell("signalStatus", "ready");
  });

  // Frames: they find us by the __gppLocator frame and talk by postMessage (object or JSON string).
  window.addEventListener("message", (event) => {
    let message = event.data;
    try {
      if (typeof message === "string") message = JSON.parse(message);
    } catch {
      return;
    }
    const call = message?.__gppCall;
    if (!call || !event.source) return;
    run(
      call.command,
      (returnValue, success) => {
        const reply = { __gppReturn: { returnValue, success, callId: call.callId } };
        event.source.postMessage(typeof event.data === "string" ? JSON.stringify(reply) : reply, "*");
      },
      call.parameter,
      event.source,
    );
  });
  const locator = () => {
    if (window.frames.__gppLocator) return;
    const frame = document.createElement("iframe");
    frame.name = "__gppLocator";
    frame.hidden = true;
    frame.title = "GPP"; // never shown; named for tools that list frames
    document.body.appendChild(frame);
  };
  if (document.body) locator();
  else document.addEventListener("DOMContentLoaded", locator);
})(window, document);
