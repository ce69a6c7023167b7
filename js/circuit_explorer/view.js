// Zoom and pan of the diagram box: a transform {k, x, y} (screen = diagram * k + offset), fit to
// the box on load (and while the user has not moved it), wheel / drag / buttons / keys, and a
// small overview (minimap) when zoomed in.
import { h } from "../lib/dom.js";

export function createView(box, { onChange, minimapDraw }) {
  const v = { k: 1, x: 0, y: 0, w: 1, h: 1, fitK: 1, auto: true, dragged: false };
  const emit = () => { onChange(v); drawMinimap(); };

  v.fit = (w = v.w, hgt = v.h) => {
    v.w = w; v.h = hgt;
    const bw = Math.max(50, box.clientWidth), bh = Math.max(50, box.clientHeight);
    v.k = v.fitK = Math.min(bw / w, bh / hgt, 1.25);
    v.x = (bw - w * v.k) / 2;
    v.y = Math.max(0, (bh - hgt * v.k) / 2);
    v.auto = true;
    emit();
  };
  v.zoomAt = (factor, px = box.clientWidth / 2, py = box.clientHeight / 2) => {
    const k = Math.max(v.fitK * 0.5, Math.min(8, v.k * factor));
    v.x = px - (px - v.x) * (k / v.k);
    v.y = py - (py - v.y) * (k / v.k);
    v.k = k;
    v.auto = false;
    emit();
  };
  v.panBy = (dx, dy) => { v.x += dx; v.y += dy; v.auto = false; emit(); };
  v.centerOn = (dx, dy) => {
    v.x = box.clientWidth / 2 - dx * v.k;
    v.y = box.clientHeight / 2 - dy * v.k;
    v.auto = false;
    emit();
  };
  v.toDiagram = (px, py) => [(px - v.x) / v.k, (py - v.y) / v.k];
  v.toScreen = (dx, dy) => [dx * v.k + v.x, dy * v.k + v.y];
  v.zoomed = () => v.k > v.fitK * 1.05 || v.x < -1 || v.y < -1
    || v.x + v.w * v.k > box.clientWidth + 1 || v.y + v.h * v.k > box.clientHeight + 1;
  v.transform = () => `translate(${v.x.toFixed(2)},${v.y.toFixed(2)}) scale(${v.k.toFixed(4)})`;

  // --- controls --------------------------------------------------------------------------------
  const btn = (role, text, title, fn) => {
    const b = h("button", { "data-role": role, title, "aria-label": title, type: "button" }, text);
    b.addEventListener("click", (e) => { e.stopPropagation(); fn(); });
    b.addEventListener("pointerdown", (e) => e.stopPropagation());
    return b;
  };
  const controls = h("div", { class: "pe-zoom" },
    btn("zoom-in", "+", "zoom in (+)", () => v.zoomAt(1.4)),
    btn("zoom-out", "−", "zoom out (-)", () => v.zoomAt(1 / 1.4)),
    btn("zoom-fit", "fit", "fit the whole circuit in view (0)", () => v.fit()));
  const minimap = h("canvas", { class: "pe-minimap", "data-role": "minimap", hidden: true,
    title: "overview: click to move there" });
  box.append(controls, minimap);

  function drawMinimap() {
    const show = v.zoomed();
    minimap.hidden = !show;
    if (!show) return;
    const mw = 150, mh = Math.max(40, Math.min(150, mw * v.h / v.w));
    const s = Math.min(mw / v.w, mh / v.h);
    const dpr = window.devicePixelRatio || 1;
    minimap.width = Math.ceil(mw * dpr); minimap.height = Math.ceil(mh * dpr);
    minimap.style.width = `${mw}px`; minimap.style.height = `${mh}px`;
    const ctx = minimap.getContext("2d");
    ctx.setTransform(dpr * s, 0, 0, dpr * s, 0, 0);
    ctx.clearRect(0, 0, v.w, v.h);
    minimapDraw?.(ctx, s);
    const [x0, y0] = v.toDiagram(0, 0), [x1, y1] = v.toDiagram(box.clientWidth, box.clientHeight);
    ctx.strokeStyle = "#d97706"; ctx.lineWidth = 2 / s;
    ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    minimap.dataset.scale = String(s);
  }
  minimap.addEventListener("pointerdown", (e) => {
    e.stopPropagation();
    const s = Number(minimap.dataset.scale), r = minimap.getBoundingClientRect();
    v.centerOn((e.clientX - r.left) / s, (e.clientY - r.top) / s);
  });

  // --- wheel and drag --------------------------------------------------------------------------
  let drag = null;
  const local = (e) => { const r = box.getBoundingClientRect(); return [e.clientX - r.left, e.clientY - r.top]; };
  function onWheel(e) {
    e.preventDefault();
    const [px, py] = local(e);
    v.zoomAt(Math.exp(-e.deltaY * (e.deltaMode === 1 ? 0.05 : 0.0018)), px, py);
  }
  function onDown(e) {
    if (e.button !== 0) return;
    drag = { x: e.clientX, y: e.clientY, moved: false };
    v.dragged = false;
  }
  function onMove(e) {
    if (!drag) return;
    const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
    if (!drag.moved && Math.hypot(dx, dy) < 4) return;
    if (!drag.moved) { drag.moved = true; box.setPointerCapture?.(e.pointerId); box.classList.add("pe-dragging"); }
    drag.x = e.clientX; drag.y = e.clientY;
    v.panBy(dx, dy);
  }
  function onUp() {
    if (drag?.moved) { v.dragged = true; setTimeout(() => { v.dragged = false; }, 0); }
    drag = null;
    box.classList.remove("pe-dragging");
  }
  box.addEventListener("wheel", onWheel, { passive: false });
  box.addEventListener("pointerdown", onDown);
  box.addEventListener("pointermove", onMove);
  box.addEventListener("pointerup", onUp);
  box.addEventListener("pointercancel", onUp);

  /** Keys on the box: + / - zoom, 0 fit, arrows pan. Returns whether it took the key. */
  v.key = (e) => {
    const step = 60;
    if (e.key === "+" || e.key === "=") v.zoomAt(1.4);
    else if (e.key === "-" || e.key === "_") v.zoomAt(1 / 1.4);
    else if (e.key === "0") v.fit();
    else if (e.key === "ArrowLeft") v.panBy(step, 0);
    else if (e.key === "ArrowRight") v.panBy(-step, 0);
    else if (e.key === "ArrowUp") v.panBy(0, step);
    else if (e.key === "ArrowDown") v.panBy(0, -step);
    else return false;
    e.preventDefault();
    return true;
  };

  const resize = typeof ResizeObserver !== "undefined"
    ? new ResizeObserver(() => { if (v.auto) v.fit(); else emit(); }) : null;
  resize?.observe(box);
  v.destroy = () => {
    resize?.disconnect();
    box.removeEventListener("wheel", onWheel);
    box.removeEventListener("pointerdown", onDown);
    box.removeEventListener("pointermove", onMove);
    box.removeEventListener("pointerup", onUp);
    box.removeEventListener("pointercancel", onUp);
  };
  return v;
}
