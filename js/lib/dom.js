// A tiny element builder: h("div", {class: "x", onclick: f}, child, "text", ...).
export function h(tag, attrs = {}, ...children) {
  const svg = SVG_TAGS.has(tag);
  const el = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag)
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v == null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "style" && typeof v === "object") Object.assign(el.style, v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const SVG_TAGS = new Set(["svg", "g", "path", "line", "circle", "rect", "text", "title",
  "polyline", "polygon", "defs", "marker", "tspan"]);

/** Insert a widget's CSS once per root (document or shadow root). */
export function injectStyle(el, id, css) {
  const root = el.getRootNode?.() ?? document;
  const host = root === document ? document.head : root;
  if (host.querySelector?.(`style[data-peap="${id}"]`)) return;
  const style = document.createElement("style");
  style.dataset.peap = id;
  style.textContent = css;
  host.append(style);
}

/** Trigger a download of `data` (string or Blob) as `filename`. */
export function download(filename, data, type = "application/octet-stream") {
  const blob = data instanceof Blob ? data : new Blob([data], { type });
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}
