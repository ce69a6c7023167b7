// CircuitExplorer front end: the circuit as a layers x spans diagram, pruned by hand.
// State lives in the model's traits (selection, history, evaluation); everything drawn is
// recomputed from them, so a saved notebook or a standalone page shows the same circuit.
import css from "./style.css";
import { h, injectStyle, download } from "../lib/dom.js";
import { onChange } from "../lib/model.js";
import { drawChart } from "../curves/chart.js";
import {
  NODE, KINDS, readData, indexNames, circuitRows, circuitSize, toggleUnit, toggleNodes, setEdges,
  setThreshold, nodeGroup, searchNodes, circuitJSON, defaultSelection, missing, appendChunk,
  holdsAll, minThreshold,
} from "./logic.js";
import { layoutNodes, edgeCurve, sampleCurve, hitEdge, strokeWidth, edgeColor } from "./layout.js";

const SVG_LIMIT = 1500;      // above this many drawn edges, edges go on a canvas
const HISTORY = 200;
const GHOST = "#9ca3af";

export function edgeName(d, r) {
  const info = d.info, kind = KINDS[d.kind[r]];
  const src = info.forward_names[d.src[r]];
  const s1 = info.spans[d.srcSpan[r]], s2 = info.spans[d.dstSpan[r]];
  if (kind === "resid") return `${src}->${info.backward_names[d.dst[r]]}@${s1}`;
  const read = kind === "q" ? s2 : s1;
  return `${src}<${kind}>@${read}->${src}@${s2}` + (kind === "q" ? `[${s1}]` : "");
}

const count = (n) => Number(n).toLocaleString("en-US");
const fmt = (v, digits = 3) => (v == null || Number.isNaN(v) ? "–" : Number(v).toFixed(digits));
const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);

function render({ model, el }) {
  const started = performance.now();
  injectStyle(el, "peap-explorer", css);
  const d = indexNames(readData(model));
  const pos = layoutNodes(d);
  const hasKernel = model.kernel !== false;   // a kernel can send more rows
  const live = Boolean(d.info.live) && hasKernel;
  const viewId = Math.random().toString(36).slice(2, 8);

  // --- DOM -------------------------------------------------------------------------------------
  const mode = h("select", { "data-role": "mode", title: "size by edge count or by |score| threshold" },
    h("option", { value: "edges" }, "edges"), h("option", { value: "threshold" }, "threshold"));
  const slider = h("input", { type: "range", min: 0, max: d.order.length, step: 1, "data-role": "size-slider" });
  const number = h("input", { type: "number", min: 0, "data-role": "size-input" });
  const sizeLabel = h("span", { class: "pe-size", "data-role": "size-label" });
  const capNote = h("div", { class: "pe-cap", "data-role": "cap-note" });
  const waitBox = h("div", { class: "pe-wait", hidden: true, "data-role": "waiting" });
  const undoBtn = h("button", { "data-role": "undo", title: "undo the last edit (Ctrl+Z)" }, "Undo");
  const resetBtn = h("button", { "data-role": "reset", title: "drop all manual edits" }, "Reset edits");
  const search = h("input", { type: "search", placeholder: "find a node (a1.h2, m0@IO)", "data-role": "search" });
  const exportSvg = h("button", { "data-role": "export-svg" }, "SVG");
  const exportPng = h("button", { "data-role": "export-png" }, "PNG");
  const exportJson = h("button", { "data-role": "export-json", title: "circuit JSON (pw.Circuit.from_json)" }, "JSON");
  const bar = h("div", { class: "pe-bar" },
    h("label", {}, "size", mode), slider, number, sizeLabel,
    h("span", { class: "pe-group" }, undoBtn, resetBtn),
    search,
    h("span", { class: "pe-group" }, h("span", { class: "pe-muted" }, "export"), exportSvg, exportPng, exportJson));
  const canvas = h("canvas", { "data-role": "canvas" });
  const svg = h("svg", { class: "pe-svg", "data-role": "diagram" });
  const tip = h("div", { class: "pe-tip", hidden: true, "data-role": "tooltip" });
  const diagram = h("div", { class: "pe-diagram", "data-role": "diagram-box" }, canvas, svg, tip, waitBox);
  const status = h("div", { class: "pe-status", "data-role": "status" }, h("span", { class: "pe-spinner" }),
    h("span", { "data-role": "status-text" }));
  const evalBox = h("dl", { class: "pe-eval", "data-role": "evaluation" });
  const note = h("div", { class: "pe-note", "data-role": "note" });
  const chartBox = h("div", { "data-role": "curves" });
  const legend = h("div", { class: "pe-legend" },
    h("span", {}, h("i", { style: { borderColor: "#2166ac" } }), "positive"),
    h("span", {}, h("i", { style: { borderColor: "#d6604d" } }), "negative"),
    h("span", {}, h("i", { style: { borderColor: "#6b7280", borderTopStyle: "dashed" } }), "crossing q/k/v"),
    h("span", {}, h("i", { style: { borderColor: GHOST, borderTopStyle: "dotted" } }), "pruned (click to restore)"));
  const side = h("div", { class: "pe-side" }, status, evalBox, note, chartBox, legend);
  const root = h("div", { class: "pe-root", tabindex: 0 }, bar, capNote, h("div", { class: "pe-main" }, diagram, side));
  el.append(root);

  const curves = model.get("curves") ?? [];
  const chart = curves.length ? drawChart(chartBox, { series: curves, current: null, measure: "faithfulness",
    x: "fraction", width: 310, height: 250, title: "" }) : null;
  if (!curves.length) chartBox.append(h("div", { class: "pe-muted" }, "No faithfulness curve (give a model and dataset, or curves=)."));

  // --- state -----------------------------------------------------------------------------------
  let rows = new Uint8Array(d.nRows), drawn = new Int32Array(0), ghosts = new Int32Array(0);
  let samples = [], ghostSamples = [], active = new Uint8Array(d.nNodes), matches = new Set();
  let size = { edges: 0, rows: 0 };
  let waiting = "";            // "", "loading" (rows on their way) or "unavailable" (not on this page)
  const sel = () => ({ ...defaultSelection(), ...(model.get("selection") ?? {}) });

  function edit(next) {
    const cur = sel();
    if (JSON.stringify(next) === JSON.stringify(cur)) return;
    model.set("history", [...(model.get("history") ?? []), cur].slice(-HISTORY));
    model.set("selection", next);
    model.save_changes();
    requestEvaluation();
  }

  function undo() {
    const hist = model.get("history") ?? [];
    if (!hist.length) return;
    model.set("selection", hist[hist.length - 1]);
    model.set("history", hist.slice(0, -1));
    model.save_changes();
    requestEvaluation();
  }

  // --- evaluation: one request in flight; edits meanwhile are coalesced into the next one ----
  let version = 0, inFlight = false, dirty = false, timer = null;
  function requestEvaluation() {
    if (!live) { showEvaluation(); return; }
    if (inFlight) { dirty = true; return; }
    inFlight = true;
    dirty = false;
    root.classList.add("pe-busy");
    status.lastChild.textContent = "evaluating…";
    model.send({ type: "evaluate", version: ++version });
    clearTimeout(timer);
    timer = setTimeout(() => { inFlight = false; root.classList.remove("pe-busy"); }, 60000);
  }
  function onEvaluation() {
    const ev = model.get("evaluation") ?? {};
    if (ev.version != null && ev.version !== version) return;  // an answer to an older request
    inFlight = false;
    clearTimeout(timer);
    root.classList.remove("pe-busy");
    if (dirty) { requestEvaluation(); return; }
    showEvaluation();
  }

  function showEvaluation() {
    const ev = model.get("evaluation") ?? {};
    const fresh = ev.selection && JSON.stringify({ ...defaultSelection(), ...ev.selection }) === JSON.stringify(sel());
    evalBox.replaceChildren();
    const item = (k, v) => evalBox.append(h("dt", {}, k), h("dd", { "data-field": k }, v));
    if (ev.error) { status.lastChild.textContent = `evaluation failed: ${ev.error}`; return; }
    if (waiting) {    // numbers only next to the circuit they belong to
      for (const k of ["faithfulness", "soft", "hard", "KL", "metric", "edges"]) item(k, waiting === "loading" ? "pending" : "–");
      evalBox.dataset.fresh = "false";
      return;
    }
    item("faithfulness", fmt(ev.faithfulness));
    item("soft", fmt(ev.soft));
    item("hard", fmt(ev.hard));
    item("KL", fmt(ev.kl));
    item("metric", `${fmt(ev.metric)} (clean ${fmt(d.info.clean_metric)})`);
    item("edges", ev.n_edges ?? size.edges);
    item("real edges / example", ev.n_real_edges == null ? "–" : Math.round(ev.n_real_edges));
    evalBox.dataset.fresh = String(Boolean(fresh));
    status.lastChild.textContent = !live
      ? (d.info.live ? "no kernel: edits are not re-evaluated on this page" : "no model/dataset: not evaluated")
      : fresh ? `evaluated in ${fmt(ev.seconds, 2)} s` : "…";
    if (!live && ev.faithfulness != null && !fresh) {
      note.textContent = "The numbers are for the circuit as saved; this page cannot re-evaluate edits.";
    } else note.textContent = "";
    if (chart && ev.faithfulness != null) {
      chart.update({ current: { label: "current circuit", n_edges: ev.n_edges, fraction: ev.fraction,
        n_real_edges: ev.n_real_edges, real_fraction: ev.real_fraction, faithfulness: ev.faithfulness,
        soft: ev.soft, hard: ev.hard, kl: ev.kl } });
    }
  }

  // --- drawing ---------------------------------------------------------------------------------
  function recompute() {
    const s = sel();
    rows = circuitRows(d, s);
    size = circuitSize(d, rows);
    const list = [];
    for (let r = 0; r < d.nRows; r++) if (rows[r]) list.push(r);
    drawn = Int32Array.from(list);
    const removedUnits = new Set(s.removed ?? []);
    const g = [];
    if (removedUnits.size) for (let r = 0; r < d.nRows; r++) if (!rows[r] && removedUnits.has(d.unitIds[d.unit[r]])) g.push(r);
    ghosts = Int32Array.from(g);
    active = new Uint8Array(d.nNodes);
    for (const r of drawn) { active[d.parent[r]] = 1; active[d.child[r]] = 1; }
    samples = Array.from(drawn, (r) => sampleCurve(edgeCurve(d, pos, r)));
    ghostSamples = Array.from(ghosts, (r) => sampleCurve(edgeCurve(d, pos, r)));
  }

  function maxAbs() {
    let m = 0;
    for (const r of drawn) m = Math.max(m, Math.abs(d.score[r]));
    return m;
  }

  function pathD(r) {
    const b = edgeCurve(d, pos, r);
    return `M${b[0].toFixed(1)},${b[1].toFixed(1)}C${b[2].toFixed(1)},${b[3].toFixed(1)} ${b[4].toFixed(1)},${b[5].toFixed(1)} ${b[6].toFixed(1)},${b[7].toFixed(1)}`;
  }

  function edgeMarkup(list, m) {
    const out = [];
    for (const r of list) {
      const dash = d.kind[r] > 0 ? ' stroke-dasharray="4 2.5"' : "";
      out.push(`<path data-row="${d.rowId[r]}" data-local="${r}" d="${pathD(r)}" stroke="${edgeColor(d.score[r])}" stroke-width="${strokeWidth(d.score[r], m, drawn.length).toFixed(2)}" stroke-opacity="0.78" fill="none"${dash}/>`);
    }
    return out.join("");
  }

  function ghostMarkup() {
    return Array.from(ghosts, (r) => `<path data-ghost="${d.rowId[r]}" d="${pathD(r)}" stroke="${GHOST}" stroke-width="1.2" stroke-dasharray="1.5 2.5" fill="none"/>`).join("");
  }

  function nodeMarkup() {
    const gone = new Set(sel().removed_nodes ?? []);
    const out = [];
    for (let n = 0; n < d.nNodes; n++) {
      const t = d.nodeType[n], x = pos.x[n], y = pos.y[n];
      const on = active[n], removed = gone.has(n), hit = matches.has(n);
      const fill = removed ? "#f3f4f6" : on ? "#374151" : "#e5e7eb";
      const stroke = hit ? "#f59e0b" : removed ? "#9ca3af" : on ? "#111827" : "#cbd5e1";
      const sw = hit ? 3 : 1;
      const attrs = `data-node="${n}" data-name="${esc(d.nodeNames[n])}" class="pe-node${on ? " on" : ""}${removed ? " removed" : ""}${hit ? " match" : ""}"`;
      if (t === NODE.HEAD) {
        out.push(`<circle ${attrs} cx="${x}" cy="${y}" r="5" fill="${fill}" stroke="${stroke}" stroke-width="${sw}"/>`);
      } else if (t === NODE.MLP) {
        out.push(`<rect ${attrs} x="${x - 5}" y="${y - 5}" width="10" height="10" rx="2" fill="${on && !removed ? "#6b7280" : fill}" stroke="${stroke}" stroke-width="${sw}"/>`);
      } else if (t === NODE.INPUT || t === NODE.LOGITS) {
        out.push(`<rect ${attrs} x="${x - 22}" y="${y - 8}" width="44" height="16" rx="4" fill="${on ? "#eef2ff" : "#f9fafb"}" stroke="${stroke}" stroke-width="${sw}"/>`,
          `<text x="${x}" y="${y + 4}" text-anchor="middle" font-size="10" fill="${on ? "#1e3a8a" : "#9ca3af"}">${t === NODE.INPUT ? "input" : "logits"}</text>`);
      } else if (on) {
        out.push(`<circle ${attrs} cx="${x}" cy="${y}" r="1.8" fill="#6b7280"/>`);
      }
      if (removed && (t === NODE.HEAD || t === NODE.MLP)) {
        out.push(`<path d="M${x - 4},${y - 4}L${x + 4},${y + 4}M${x + 4},${y - 4}L${x - 4},${y + 4}" stroke="#b91c1c" stroke-width="1.5"/>`);
      }
    }
    return out.join("");
  }

  function frameMarkup() {
    const out = [];
    pos.columns.forEach((c, s) => {
      if (s % 2 === 1) out.push(`<rect x="${c.x0}" y="0" width="${c.x1 - c.x0}" height="${pos.height}" fill="#f8fafc"/>`);
      const len = d.info.span_lengths ? ` (${Number(d.info.span_lengths[s]).toFixed(1)})` : "";
      out.push(`<text x="${(c.x0 + c.x1) / 2}" y="16" text-anchor="middle" font-size="11.5" font-weight="600" fill="#374151">${esc(c.name)}<tspan font-weight="400" fill="#9ca3af" font-size="10">${len}</tspan></text>`);
    });
    for (const lv of pos.levels) {
      out.push(`<text x="8" y="${lv.y + 3.5}" font-size="10" fill="#6b7280">${lv.label}</text>`);
      out.push(`<line x1="${pos.columns[0]?.x0 ?? 0}" x2="${pos.width - 16}" y1="${lv.y}" y2="${lv.y}" stroke="#f1f5f9"/>`);
    }
    return out.join("");
  }

  /** The whole diagram as a standalone SVG document (export). */
  function svgDocument() {
    const m = maxAbs();
    return `<svg xmlns="http://www.w3.org/2000/svg" width="${pos.width}" height="${pos.height}" viewBox="0 0 ${pos.width} ${pos.height}" font-family="system-ui, sans-serif">` +
      `<rect width="100%" height="100%" fill="#fff"/>${frameMarkup()}<g>${ghostMarkup()}${edgeMarkup(drawn, m)}</g><g>${nodeMarkup()}</g></svg>`;
  }

  function drawCanvas(m) {
    const dpr = window.devicePixelRatio || 1;
    canvas.width = Math.ceil(pos.width * dpr);
    canvas.height = Math.ceil(pos.height * dpr);
    canvas.style.width = `${pos.width}px`;
    canvas.style.height = `${pos.height}px`;
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, pos.width, pos.height);
    ctx.globalAlpha = 0.7;
    for (const r of drawn) {
      const b = edgeCurve(d, pos, r);
      ctx.beginPath();
      ctx.moveTo(b[0], b[1]);
      ctx.bezierCurveTo(b[2], b[3], b[4], b[5], b[6], b[7]);
      ctx.strokeStyle = edgeColor(d.score[r]);
      ctx.lineWidth = strokeWidth(d.score[r], m, drawn.length);
      ctx.setLineDash(d.kind[r] > 0 ? [4, 2.5] : []);
      ctx.stroke();
    }
    ctx.globalAlpha = 1;
  }

  // --- rows not on the page yet: fetched from the kernel, one request at a time --------------
  let fetching = null, nReq = 0, stalled = "", failed = null;   // failed: {need, text}
  const final = () => !hasKernel || d.limited;   // no more rows will come

  function fetchMore(need) {
    if (fetching) return;
    const req = `${viewId}-${++nReq}`;
    const key = JSON.stringify(need);
    const timer = setTimeout(() => {
      fetching = null;
      failed = { need: key, text: "no answer from the kernel" };
      draw();
    }, 120000);
    fetching = { req, timer, need: key };
    model.send({ type: "more", req, have: { order: d.order.length, top: d.top, units: d.nUnits },
      order: need.order ?? null, threshold: need.threshold ?? null, units: need.units ?? [] });
  }

  function onCustom(msg, buffers) {
    if (msg?.type !== "chunk") return;
    const mine = fetching !== null && msg.req === fetching.req;
    const arrays = {};
    (msg.arrays ?? []).forEach((name, i) => { arrays[name] = buffers?.[i]; });
    const applied = appendChunk(d, msg, arrays);
    if (mine) {
      clearTimeout(fetching.timer);
      if (msg.error) failed = { need: fetching.need, text: msg.error };
      // an answer that brought nothing: do not ask the same again (e.g. unknown unit ids)
      if (applied && !msg.n_units && msg.to.order === msg.from.order && msg.to.top === msg.from.top
        && !msg.limited) stalled = fetching.need;
      fetching = null;
    }
    if (applied) keyMax = null;
    if (applied || mine) { draw(); showEvaluation(); }
  }

  /** The selection needs rows the page lacks: say so (and fetch them where a kernel can). */
  function drawWaiting(need) {
    const key = JSON.stringify(need);
    const error = failed?.need === key ? failed.text : "";
    const reachable = hasKernel && !error && key !== stalled
      && !(d.limited && (need.order != null || need.threshold != null));
    waiting = reachable ? "loading" : "unavailable";
    if (reachable) fetchMore(need);
    rows = new Uint8Array(d.nRows);
    drawn = new Int32Array(0); ghosts = new Int32Array(0); samples = []; ghostSamples = [];
    active = new Uint8Array(d.nNodes);
    size = { edges: 0, rows: 0 };
    canvas.hidden = true;
    svg.innerHTML = `${frameMarkup()}<g>${nodeMarkup()}</g>`;
    const what = [need.order != null ? `the first ${count(need.order)} edges of the greedy order` : "",
      need.threshold != null ? `every edge with |score| ≥ ${Number(need.threshold).toPrecision(4)}` : "",
      need.units ? `${need.units.length} edge(s) named in the edits` : ""].filter(Boolean).join(", ");
    waitBox.textContent = reachable
      ? `Loading ${what} from the kernel… (${count(d.nUnits)} edges here so far)`
      : error ? `Could not load ${what}: ${error}.`
      : key === stalled ? `Not drawn: the kernel has nothing more for ${what}.`
      : d.limited ? `Not drawn: ${what} would pass the ${count(d.nUnits)} edges this page may hold; explorer.circuit has it in Python.`
      : `Not drawn: this page does not hold ${what} (it was saved without a kernel).`;
    waitBox.hidden = false;
    el.dataset.state = waiting;
    delete el.dataset.drawn;
    showEvaluation();
  }

  let renderMode = "";
  function draw() {
    const t0 = performance.now();
    const need = missing(d, sel());
    if (need) {
      sizeBox();
      drawWaiting(need);
      syncControls();
      return;
    }
    if (waiting) { waiting = ""; showEvaluation(); }
    waitBox.hidden = true;
    el.dataset.state = "ready";
    recompute();
    const m = maxAbs();
    renderMode = drawn.length > SVG_LIMIT ? "canvas" : "svg";
    if (renderMode === "canvas") {
      canvas.hidden = false;
      drawCanvas(m);
      svg.innerHTML = `${frameMarkup()}<g>${ghostMarkup()}</g><g>${nodeMarkup()}</g>`;
      svg.style.background = "transparent";
      canvas.style.zIndex = 1; svg.style.zIndex = 2;
    } else {
      canvas.hidden = true;
      svg.innerHTML = `${frameMarkup()}<g>${ghostMarkup()}${edgeMarkup(drawn, m)}</g><g>${nodeMarkup()}</g>`;
    }
    sizeBox();
    syncControls();
    el.dataset.mode = renderMode;
    el.dataset.drawn = String(drawn.length);
    el.dataset.updateMs = (performance.now() - t0).toFixed(2);
  }
  const spacer = h("div", { style: { position: "relative", pointerEvents: "none" } });
  diagram.append(spacer);

  function sizeBox() {
    svg.setAttribute("width", pos.width);
    svg.setAttribute("height", pos.height);
    svg.setAttribute("viewBox", `0 0 ${pos.width} ${pos.height}`);
    diagram.style.minHeight = `${Math.min(pos.height, 640)}px`;
    svg.style.minWidth = `${pos.width}px`;
    // a spacer so the scroll box knows the diagram's size
    spacer.style.width = `${pos.width}px`;
    spacer.style.height = `${pos.height}px`;
  }

  function syncControls() {
    const s = sel();
    mode.value = s.mode;
    if (s.mode === "threshold") {
      const top = maxKey();
      slider.min = 0; slider.max = 1000; slider.step = 1;
      slider.value = String(Math.round(1000 * Math.sqrt(Math.min(1, s.threshold / (top || 1)))));
      number.step = "any";
      number.value = String(Number(s.threshold.toPrecision(4)));
    } else {
      slider.min = 0; slider.max = maxEdges(); slider.step = 1;
      slider.value = String(s.n_edges);
      number.step = 1;
      number.max = maxEdges();
      number.value = String(s.n_edges);
    }
    sizeLabel.textContent = waiting
      ? `${waiting === "loading" ? "pending" : "not on this page"} · of ${d.nUnitsTotal}`
      : `${size.edges} edges · ${size.rows} rows · ${(100 * size.edges / Math.max(1, d.nUnitsTotal)).toFixed(2)}% of ${d.nUnitsTotal}`;
    undoBtn.disabled = !(model.get("history") ?? []).length;
    for (const b of [exportSvg, exportPng, exportJson]) b.disabled = Boolean(waiting);
    capNote.textContent = !final() || holdsAll(d) ? ""
      : d.limited ? `This page holds ${count(d.nUnits)} edges, as many as it may ask the kernel for (max_page_units): the size control stops at the first ${count(d.order.length)} edges of the greedy order${d.keyFloor > -Infinity ? ` and at |score| > ${d.keyFloor.toPrecision(4)}` : ""}; larger circuits are in explorer.circuit in Python.`
      : `This page holds the first ${count(d.order.length)} of ${count(d.nOrderTotal)} edges of the greedy order${d.keyFloor > -Infinity ? ` and every edge with |score| > ${d.keyFloor.toPrecision(4)}` : ""}; the size control stops there (larger circuits need the notebook's kernel).`;
  }

  /** The largest size the edges control offers: all of the greedy order, or what the page holds. */
  function maxEdges() { return final() ? d.order.length : d.nOrderTotal; }

  /** A threshold the page can show: where no more rows will come, not below the smallest one. */
  function capThreshold(t) {
    return final() && !(t > d.keyFloor) ? minThreshold(d) : t;
  }

  let keyMax = null;
  function maxKey() {
    if (keyMax === null) { keyMax = 0; for (const k of d.unitKey) if (k > keyMax) keyMax = k; }
    return keyMax;
  }

  // --- interaction -----------------------------------------------------------------------------
  function localPoint(ev) {
    const rect = svg.getBoundingClientRect();
    return [ev.clientX - rect.left, ev.clientY - rect.top];
  }

  function hitNode(px, py) {
    let best = -1, bestD = 8 * 8;
    for (let n = 0; n < d.nNodes; n++) {
      const t = d.nodeType[n];
      if (t === NODE.Q || t === NODE.K || t === NODE.V) continue;
      const dx = pos.x[n] - px, dy = pos.y[n] - py;
      const reach = t === NODE.INPUT || t === NODE.LOGITS ? 22 : 7;
      if (Math.abs(dx) <= reach && Math.abs(dy) <= 8) {
        const dd = dx * dx / (reach * reach / 49) + dy * dy;
        if (dd < bestD) { bestD = dd; best = n; }
      }
    }
    return best;
  }

  function hitAt(px, py) {
    const n = hitNode(px, py);
    if (n >= 0) return { node: n };
    const r = hitEdge(samples, drawn, px, py, 5);
    if (r >= 0) return { row: r };
    const g = hitEdge(ghostSamples, ghosts, px, py, 5);
    if (g >= 0) return { ghost: g };
    return null;
  }

  function tipHTML(hit) {
    if (hit.row != null || hit.ghost != null) {
      const r = hit.row ?? hit.ghost;
      const i = d.order.indexOf(d.unit[r]);
      const rank = i >= 0 ? String(i + 1) : d.order.length < d.nOrderTotal ? `> ${count(d.order.length)}` : "unreachable";
      return `<b>${esc(edgeName(d, r))}</b><table>` +
        `<tr><td class="pe-muted">kind</td><td>${KINDS[d.kind[r]] === "resid" ? "residual" : `crossing ${KINDS[d.kind[r]]}`}</td></tr>` +
        `<tr><td class="pe-muted">score</td><td>${d.score[r].toPrecision(4)}</td></tr>` +
        `<tr><td class="pe-muted">greedy rank</td><td>${rank}</td></tr></table>` +
        `<div class="pe-muted">${hit.ghost != null ? "pruned: click to restore" : "click to prune"}</div>`;
    }
    const n = hit.node, name = d.nodeNames[n];
    let inSum = 0, outSum = 0, nIn = 0, nOut = 0;
    const group = new Set(nodeGroup(d, n));
    for (const r of drawn) {
      if (group.has(d.child[r])) { inSum += d.score[r]; nIn++; }
      if (group.has(d.parent[r])) { outSum += d.score[r]; nOut++; }
    }
    let html = `<b>${esc(name)}</b><table><tr><td class="pe-muted">in circuit</td><td>${nIn} in (Σ ${inSum.toPrecision(3)}), ${nOut} out (Σ ${outSum.toPrecision(3)})</td></tr></table>`;
    const info = (model.get("head_info") ?? {})[name.split("@")[0]];
    if (info && d.nodeType[n] === NODE.HEAD) {
      const promotes = info.promotes.map(([out, from, v]) => `${esc(out)} <span class="pe-muted">← ${esc(from)} ${Number(v).toFixed(2)}</span>`).join(", ");
      html += `<div><span class="pe-muted">OV promotes:</span> ${promotes}</div>`;
      html += `<div><span class="pe-muted">copying score:</span> ${fmt(info.copying, 2)}</div>`;
      const row = info.attends?.[d.nodeSpan[n]];
      if (row) {
        const top = row.map((w, s) => [w, s]).filter(([w]) => w > 0.005).sort((a, b) => b[0] - a[0]).slice(0, 4);
        html += `<div><span class="pe-muted">attends from ${esc(d.info.spans[d.nodeSpan[n]])} to:</span> ${top.map(([w, s]) => `${esc(d.info.spans[s])} ${(100 * w).toFixed(0)}%`).join(", ")}</div>`;
      }
    }
    const removed = (sel().removed_nodes ?? []).includes(n);
    html += `<div class="pe-muted">${removed ? "pruned: click to restore" : active[n] ? "click to prune this node" : "not in the circuit"}</div>`;
    return html;
  }

  let hoverFrame = 0;
  function onMove(ev) {
    const [px, py] = localPoint(ev);
    cancelAnimationFrame(hoverFrame);
    hoverFrame = requestAnimationFrame(() => {
      const hit = hitAt(px, py);
      if (!hit) { tip.hidden = true; diagram.style.cursor = ""; return; }
      diagram.style.cursor = "pointer";
      tip.innerHTML = tipHTML(hit);
      tip.hidden = false;
      tip.style.left = `${px + 14 + diagram.scrollLeft * 0}px`;
      tip.style.top = `${py + 12}px`;
    });
  }

  function onClick(ev) {
    const [px, py] = localPoint(ev);
    const hit = hitAt(px, py);
    if (!hit) return;
    const s = sel();
    if (hit.node != null) {
      const removed = (s.removed_nodes ?? []).includes(hit.node);
      if (!removed && !active[hit.node]) return;
      edit(toggleNodes(s, nodeGroup(d, hit.node)));
    } else if (hit.row != null) edit(toggleUnit(s, d.unitIds[d.unit[hit.row]], true));
    else edit(toggleUnit(s, d.unitIds[d.unit[hit.ghost]], false));
    tip.hidden = true;
  }

  function onSlider() {
    const s = sel();
    if (s.mode === "threshold") {
      const f = Number(slider.value) / 1000;
      edit(setThreshold(s, capThreshold(Number((maxKey() * f * f).toPrecision(4)))));
    } else edit(setEdges(s, Math.min(Number(slider.value), maxEdges())));
    syncControls();   // a capped value moves the control back (the selection may not change)
  }

  function onNumber() {
    const s = sel(), v = Number(number.value);
    if (!Number.isFinite(v) || v < 0) { syncControls(); return; }
    edit(s.mode === "threshold" ? setThreshold(s, capThreshold(v)) : setEdges(s, Math.min(v, maxEdges())));
    syncControls();
  }

  // Enter takes the typed size at once (JupyterLab keeps a number input's Enter from making a
  // change event)
  function onNumberKey(ev) {
    if (ev.key === "Enter") { ev.preventDefault(); ev.stopPropagation(); onNumber(); }
  }

  function onMode() {
    const s = sel();
    if (mode.value === "threshold") {
      // keep the circuit about the same size: the threshold of the n-th greedy edge
      const n = Math.max(1, Math.min(s.n_edges, d.order.length));
      edit(setThreshold(s, capThreshold(Number(d.unitKey[d.order[n - 1]].toPrecision(4)))));
    } else edit(setEdges(s, waiting ? s.n_edges : size.edges));
  }

  function onSearch() {
    matches = new Set(searchNodes(d, search.value));
    draw();
    const first = [...matches][0];
    if (first !== undefined) {
      diagram.scrollTo({ left: Math.max(0, pos.x[first] - diagram.clientWidth / 2),
        top: Math.max(0, pos.y[first] - diagram.clientHeight / 2) });
    }
  }

  function onKey(ev) {
    if ((ev.ctrlKey || ev.metaKey) && ev.key.toLowerCase() === "z") { ev.preventDefault(); undo(); }
  }

  const stem = () => `circuit_${d.info.method ?? "peap"}_${size.edges}edges`;
  function onExportSvg() { download(`${stem()}.svg`, svgDocument(), "image/svg+xml"); }
  function onExportJson() {
    download(`${stem()}.json`, JSON.stringify(circuitJSON(d, rows)), "application/json");
  }
  function onExportPng() {
    const img = new Image();
    const url = URL.createObjectURL(new Blob([svgDocument()], { type: "image/svg+xml" }));
    img.onload = () => {
      const c = document.createElement("canvas");
      c.width = pos.width * 2; c.height = pos.height * 2;
      const ctx = c.getContext("2d");
      ctx.scale(2, 2);
      ctx.drawImage(img, 0, 0);
      URL.revokeObjectURL(url);
      c.toBlob((blob) => download(`${stem()}.png`, blob, "image/png"), "image/png");
    };
    img.src = url;
  }

  const listeners = [
    [diagram, "mousemove", onMove], [diagram, "click", onClick],
    [diagram, "mouseleave", () => { tip.hidden = true; }],
    [slider, "input", onSlider], [number, "change", onNumber], [number, "keydown", onNumberKey],
    [mode, "change", onMode],
    [undoBtn, "click", undo], [resetBtn, "click", () => edit({ ...sel(), added: [], removed: [], removed_nodes: [] })],
    [search, "input", onSearch], [root, "keydown", onKey],
    [exportSvg, "click", onExportSvg], [exportPng, "click", onExportPng], [exportJson, "click", onExportJson],
  ];
  for (const [target, type, fn] of listeners) target.addEventListener(type, fn);
  const stopSel = onChange(model, ["selection", "history"], draw);
  const stopEval = onChange(model, ["evaluation"], onEvaluation);
  model.on("msg:custom", onCustom);

  draw();
  showEvaluation();
  el.dataset.renderMs = (performance.now() - started).toFixed(2);
  el.explorer = { data: d, rows: () => rows, edit, undo, svgDocument, json: () => circuitJSON(d, rows),
    waiting: () => waiting };

  return () => {
    for (const [target, type, fn] of listeners) target.removeEventListener(type, fn);
    stopSel(); stopEval();
    model.off("msg:custom", onCustom);
    if (fetching) clearTimeout(fetching.timer);
    chart?.destroy();
    clearTimeout(timer);
    root.remove();
  };
}

export default { render };
