// Runs widgets without a kernel: on pages written by `to_html` (offline, no CDN) and in the
// browser tests. It gives each widget a model with anywidget's interface (get, set, on, off,
// save_changes, send) over the trait values saved in the page.

/** A kernel-less anywidget model over `state`; `onSend(msg)` receives custom messages. */
export function createModel(state, { onSend, onSave } = {}) {
  const values = { ...state };
  const listeners = new Map();
  const dirty = new Set();
  const emit = (event, ...args) => {
    for (const cb of [...(listeners.get(event) ?? [])]) cb(...args);
  };
  const model = {
    get: (name) => values[name],
    set(name, value) {
      values[name] = value;
      dirty.add(name);
      emit(`change:${name}`, model, value);
    },
    save_changes() {
      if (!dirty.size) return;
      const names = [...dirty];
      dirty.clear();
      emit("change", model);
      onSave?.(names, model);
    },
    on(event, cb) {
      for (const e of event.split(/\s+/)) {
        if (!listeners.has(e)) listeners.set(e, new Set());
        listeners.get(e).add(cb);
      }
    },
    off(event, cb) {
      if (!event) { listeners.clear(); return; }
      for (const e of event.split(/\s+/)) {
        if (cb) listeners.get(e)?.delete(cb); else listeners.delete(e);
      }
    },
    send(msg) { onSend?.(msg, model); },
    /** Deliver a message as if it came from Python (`msg:custom`), with its binary buffers. */
    receive(msg, buffers = []) { emit("msg:custom", msg, buffers); },
    widget_manager: {
      async get_model() { throw new Error("no widget manager on a standalone page"); },
    },
    kernel: false,
  };
  return model;
}

/** Decode the page's saved trait values: {"$b64": "..."} stands for a bytes trait. */
export function decodeState(state) {
  const out = {};
  for (const [k, v] of Object.entries(state)) out[k] = decodeValue(v);
  return out;
}

function decodeValue(v) {
  if (v && typeof v === "object" && !Array.isArray(v) && typeof v.$b64 === "string") {
    const bin = atob(v.$b64);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return new DataView(bytes.buffer);
  }
  return v;
}

function decodeText(b64) {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new TextDecoder().decode(bytes);
}

/** Render every `.peap-widget` element of the page from its saved module and state. */
export async function mountAll(root = document) {
  const mounted = [];
  for (const el of root.querySelectorAll(".peap-widget[data-esm]")) {
    const code = decodeText(document.getElementById(el.dataset.esm).textContent.trim());
    const state = decodeState(JSON.parse(document.getElementById(el.dataset.state).textContent));
    const url = URL.createObjectURL(new Blob([code], { type: "text/javascript" }));
    const widget = (await import(url)).default;
    URL.revokeObjectURL(url);
    const model = createModel(state, {
      onSend: (msg) => el.dispatchEvent(new CustomEvent("peap-send", { detail: msg })),
    });
    // A page may stand in for a kernel (tests do: they answer "peap-send" events).
    model.kernel = Boolean(window.peapStandalone?.kernel);
    await widget.initialize?.({ model });
    const cleanup = await widget.render({ model, el });
    mounted.push({ model, el, cleanup });
  }
  window.peapWidgets = mounted;
  document.body.dataset.peapReady = "true";
  return mounted;
}
