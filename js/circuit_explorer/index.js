// CircuitExplorer front end: the circuit as a layers x spans diagram, pruned by hand.
// State lives in the model's traits (selection, history, evaluation); everything drawn is
// recomputed from them, so a saved notebook or a standalone page shows the same circuit.
// Parts: view.js (zoom, pan, fit, minimap), draw.js (markup and canvas), size.js (the size
// control's arithmetic), evaluation.js (requests and whether numbers are current), tip.js.
import css from "./style.css";
import { h, injectStyle, download } from "../lib/dom.js";
import { onChange } from "../lib/model.js";
import { drawChart } from "../curves/chart.js";
import {
  NODE, KINDS, readData, indexNames, circuitRows, circuitSize, toggleUnit, toggleNodes, setEdges,
  setThreshold, nodeGroup, searchNodes, circuitJSON, defaultSelection, missing, appendChunk,
  holdsAll, minThreshold,
} from "./logic.js";
import { layoutNodes, edgeCurve, sampleCurve, hitEdge, emptyParts, POSITIVE, NEGATIVE } from "./layout.js";
import { createView } from "./view.js";
import {
  GHOST, esc, edgeName, edgeLabel, strongCut, edgeMarkup, ghostMarkup, nodeMarkup, shadeMarkup,
  labelMarkup, drawCanvas, edgeAlpha,
} from "./draw.js";
import { SLIDER_STEPS, sliderToEdges, edgesToSlider, thresholdForSize, sizeNote } from "./size.js";
import { evaluationClient, qualityState, qualityRows, qualityProgress } from "./evaluation.js";
import { placeTip } from "./tip.js";
import { hitTest } from "./hit.js";
import { firstNodeOf, neighbourOf, nodeEdgesOf } from "./keyboard.js";

export { edgeName };
const SVG_LIMIT = 1500;      // above this many drawn edges, edges go on a canvas
const HISTORY = 200;

const count = (n) => Number(n).toLocaleString("en-US");
const fmt = (v, digits = 3) => (v == null || Number.isNaN(v) ? "–" : Number(v).toFixed(digits));

function render({ model, el }) {
  const started = performance.now();
  injectStyle(el, "peap-explorer", css);
  const d = indexNames(readData(model));
  let pos = layoutNodes(d);
  const hasKernel = model.kernel !== false;   // a kernel can send more rows
  const live = Boolean(d.info.live) && hasKernel;
  const viewId = Math.random().toString(36).slice(2, 8);

  // --- DOM -------------------------------------------------------------------------------------
  const mode = h("select", { "data-role": "mode", title: "size by edge count or by |score| threshold" },
    h("option", { value: "edges" }, "edges"), h("option", { value: "threshold" }, "threshold"));
  const slider = h("input", { type: "range", min: 0, max: SLIDER_STEPS, step: 1, "data-role": "size-slider",
    "aria-label": "circuit size (log scale)" });
  const number = h("input", { type: "number", min: 0, "data-role": "size-input", "aria-label": "circuit size" });
  const sizeLabel = h("span", { class: "pe-size", "data-role": "size-label" });
  const whyText = h("span", { class: "pe-why-text", role: "tooltip", id: `pe-why-${Math.random().toString(36).slice(2, 8)}` });
  const why = h("span", { class: "pe-why", "data-role": "size-why", tabindex: 0, hidden: true }, "why?", whyText);
  why.setAttribute("aria-describedby", whyText.id);
  const collapse = h("input", { type: "checkbox", "data-role": "collapse" });
  const capNote = h("div", { class: "pe-cap", "data-role": "cap-note" });
  const waitBox = h("div", { class: "pe-wait", hidden: true, "data-role": "waiting" });
  const undoBtn = h("button", { "data-role": "undo", title: "undo the last edit (Ctrl+Z)" }, "Undo");
  const resetBtn = h("button", { "data-role": "reset", title: "drop all manual edits" }, "Reset edits");
  const search = h("input", { type: "search", placeholder: "find a node (a1.h2, m0@IO)", "data-role": "search" });
  const exportSvg = h("button", { "data-role": "export-svg" }, "SVG");
  const exportPng = h("button", { "data-role": "export-png" }, "PNG");
  const exportJson = h("button", { "data-role": "export-json", title: "circuit JSON (pw.Circuit.from_json)" }, "JSON");
  const bar = h("div", { class: "pe-bar" },
    h("label", {}, "size", mode), slider, number, h("span", { class: "pe-size-box" }, sizeLabel, why),
    h("label", { title: "draw spans and layers with no circuit node narrow" }, collapse, "collapse empty"),
    h("span", { class: "pe-group" }, undoBtn, resetBtn),
    search,
    h("span", { class: "pe-group" }, h("span", { class: "pe-muted" }, "export"), exportSvg, exportPng, exportJson));
  const canvas = h("canvas", { "data-role": "canvas" });
  const svg = h("svg", { class: "pe-svg", "data-role": "diagram", tabindex: -1, focusable: "false" });
  const tip = h("div", { class: "pe-tip", hidden: true, "data-role": "tooltip" });
  const diagram = h("div", { class: "pe-diagram", "data-role": "diagram-box", tabindex: 0, role: "group",
    "aria-label": "circuit diagram: arrows pan, + and - zoom, 0 fits; Tab reaches the nodes (arrows move between them, Enter prunes or restores, E visits a node's edges)" },
  canvas, svg, tip, waitBox);
  const status = h("div", { class: "pe-status", "data-role": "status" }, h("span", { class: "pe-spinner" }),
    h("span", { "data-role": "status-text" }));
  const which = h("div", { class: "pe-which", "data-role": "eval-which" });
  const evalBox = h("dl", { class: "pe-eval", "data-role": "evaluation" });
  const fullBtn = h("button", { "data-role": "evaluate-full", hidden: true, type: "button",
    title: "evaluate this circuit on every example (slower)" }, "Evaluate on all prompts");
  const note = h("div", { class: "pe-note", "data-role": "note" });
  const qualityBtn = h("button", { "data-role": "quality-button", type: "button",
    title: "completeness (random node subsets knocked out of circuit and model) and minimality (each edge's own contribution) of the circuit shown, on every prompt" },
  "Completeness & minimality");
  const qualityWhich = h("div", { class: "pe-which", "data-role": "quality-which" });
  const qualityBox = h("dl", { class: "pe-eval pe-quality", "data-role": "quality" });
  const qualityPanel = h("div", { class: "pe-quality-panel", "data-role": "quality-panel" }, qualityBtn, qualityWhich, qualityBox);
  const chartBox = h("div", { "data-role": "curves" });
  const dashLine = (dash) => h("svg", { width: 22, height: 6, "aria-hidden": "true" },
    `<line x1="0" y1="3" x2="22" y2="3" stroke="#4b5563" stroke-width="2" stroke-dasharray="${dash}"/>`);
  const legend = h("div", { class: "pe-legend", "data-role": "legend" },
    h("span", {}, h("i", { style: { borderColor: POSITIVE } }), "positive score: ablating the edge raises the metric (the edge works against the task)"),
    h("span", {}, h("i", { style: { borderColor: NEGATIVE } }), "negative score: ablating it lowers the metric (the edge helps the task)"),
    h("span", {}, dashLine("1.5 2.5"), "crossing q"), h("span", {}, dashLine("6 3"), "crossing k"),
    h("span", {}, dashLine("3 2 1 2"), "crossing v"),
    h("span", {}, h("i", { style: { borderColor: GHOST, borderTopStyle: "dotted" } }), "pruned (click to restore)"),
    h("span", {}, "faint: weaker edges at large sizes; hover a node to see its own edges"));
  const side = h("div", { class: "pe-side" }, status, which, evalBox, fullBtn, note, qualityPanel, chartBox, legend);
  const root = h("div", { class: "pe-root", tabindex: -1, "data-lm-suppress-shortcuts": "true" },
    bar, capNote, h("div", { class: "pe-main" }, diagram, side));
  el.append(root);
  // dashLine's markup goes in as text by h(); put it in as SVG
  for (const s of legend.querySelectorAll("svg")) s.innerHTML = s.textContent;

  const curves = model.get("curves") ?? [];
  const chart = curves.length ? drawChart(chartBox, { series: curves, current: null, measure: "faithfulness",
    x: "fraction", width: 310, height: 250, title: "" }) : null;
  if (!curves.length) chartBox.append(h("div", { class: "pe-muted" }, "No faithfulness curve (give a model and dataset, or curves=)."));

  // --- state -----------------------------------------------------------------------------------
  let rows = new Uint8Array(d.nRows), drawn = new Int32Array(0), ghosts = new Int32Array(0);
  let samples = [], ghostSamples = [], active = new Uint8Array(d.nNodes), matches = new Set();
  let size = { edges: 0, rows: 0 }, maxAbsScore = 0, cut = 0;
  let focus = null;            // {node, group: Set} highlighted (hover or keyboard)
  let tabNode = -1;            // the node holding the roving tabindex
  let kbEdge = null;           // {node, list: [[row, ghost]], i} keyboard over a node's edges
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

  // --- evaluation: the request carries the selection; numbers only for the shown circuit -----
  const client = evaluationClient({ send: (msg) => model.send(msg), current: sel });
  let evalStarted = 0, tick = null, expireTimer = null;
  function requestEvaluation(full = false) {
    if (!live) { showEvaluation(); return; }
    if (client.request(full)) started_();
    showEvaluation();
  }
  function started_() {
    evalStarted = performance.now();
    clearInterval(tick);
    tick = setInterval(showEvaluation, 250);     // elapsed time after 0.5 s
    clearTimeout(expireTimer);
    expireTimer = setTimeout(() => { if (client.expire()) onEvaluation(); }, 121000);
  }
  function onEvaluation() {
    if (!live) { showEvaluation(); return; }
    const asked = client.answer(model.get("evaluation") ?? {});
    if (asked) started_();
    else if (!client.inFlight) { clearInterval(tick); clearTimeout(expireTimer); }
    showEvaluation();
  }

  // --- completeness and minimality on demand: numbers only for the circuit shown ------------
  function requestQuality() {
    if (!live) return;
    model.send({ type: "quality", selection: sel(), n_samples: 10, seed: 0 });
    model.set("quality", { selection: sel(), running: true, done: 0, total: null });
    showQuality();
  }
  function showQuality() {
    const q = model.get("quality") ?? {};
    const state = waiting ? "pending" : qualityState(q, sel());
    qualityPanel.hidden = !live && state !== "current";
    qualityBtn.disabled = !live || state === "running";
    qualityBox.replaceChildren();
    qualityBox.dataset.fresh = String(state === "current");
    qualityWhich.dataset.state = state === "current" ? "current" : state === "none" ? "" : "pending";
    qualityWhich.textContent = state === "none" ? "completeness and minimality: not computed for this circuit"
      : state === "running" ? `${qualityProgress(q)} (${count(q.n_edges ?? size.edges)} edges)`
      : state === "error" ? `quality failed: ${q.error}`
      : state === "pending" ? `pending: the last numbers were for another circuit (${count(q.n_edges ?? 0)} edges); press the button for the one shown`
      : `completeness and minimality of the circuit shown: ${count(q.n_edges)} edges, on ${q.examples ?? "all"} prompts, ${fmt(q.seconds, 1)} s · current`;
    if (state !== "current") return;
    for (const [k, v, raw, field] of qualityRows(q)) {
      qualityBox.append(h("dt", {}, k), h("dd", { "data-field": field, ...(raw != null ? { "data-value": String(raw) } : {}) }, v));
    }
    const weak = q.minimality.weakest ?? [];
    if (weak.length) {
      qualityBox.append(h("dt", {}, "weakest edges"), h("dd", { class: "pe-weakest", "data-field": "weakest" },
        weak.map(([name, c]) => h("div", { title: `F(C) - F(C without it) = ${c}` }, `${name}: ${fmt(c, 3)}`))));
    }
  }

  function showEvaluation() {
    const ev = model.get("evaluation") ?? {};
    const state = live ? client.state(ev) : (ev.selection && client.state(ev) === "current" ? "current" : "saved");
    const busy = live && client.inFlight != null;
    root.classList.toggle("pe-busy", busy);
    evalBox.replaceChildren();
    const item = (k, v, raw) => evalBox.append(h("dt", {}, k),
      h("dd", { "data-field": k, ...(raw != null ? { "data-value": String(raw) } : {}) }, v));
    const fresh = state === "current" && !waiting;
    evalBox.dataset.fresh = String(fresh);
    evalBox.dataset.version = String(ev.version ?? "");
    const n = ev.examples, total = ev.total_examples;
    const sample = n != null && total != null && n < total;
    fullBtn.hidden = !(live && sample && fresh);
    const elapsed = (performance.now() - evalStarted) / 1000;
    const statusText = (t) => { status.lastChild.textContent = t; };
    if (!live && !d.info.live) statusText("no model/dataset: not evaluated");
    else if (!live) statusText("no kernel: edits are not re-evaluated on this page");
    else if (busy) statusText(elapsed > 0.5 ? `evaluating… ${elapsed.toFixed(1)} s` : "evaluating…");
    else if (ev.error && state === "error") statusText(`evaluation failed: ${ev.error}`);
    else if (fresh) statusText(`evaluated in ${fmt(ev.seconds, 2)} s${sample ? ` on ${n} of ${total} prompts` : ""}`);
    else statusText("pending");
    // which circuit the numbers belong to
    const evSize = ev.n_edges != null ? `${count(ev.n_edges)} edges` : "";
    which.dataset.state = waiting ? "pending" : state;
    which.textContent = waiting ? "numbers pending: the circuit is loading"
      : ev.selection == null ? (d.info.live ? "not evaluated yet" : "not evaluated (no model and dataset)")
      : state === "current" ? `numbers for the circuit shown: ${evSize}${ev.version != null ? `, version ${ev.version}` : ""}${sample ? `, on ${n} of ${total} prompts` : total ? `, on all ${total} prompts` : ""} · current`
      : live ? `pending: the numbers below would be for an earlier circuit (${evSize}${ev.version != null ? `, version ${ev.version}` : ""}); the shown one (${count(size.edges)} edges, version ${client.version}) is being evaluated`
      : `numbers for the circuit as saved (${evSize}); this page cannot re-evaluate edits`;
    if (waiting || (state !== "current" && live) || ev.error) {
      for (const k of ["faithfulness", "soft", "hard", "KL", "metric", "edges"]) item(k, waiting === "unavailable" ? "–" : "pending");
      note.textContent = "";
      if (chart && live) chart.update({ current: null });    // no point for an earlier circuit
      return;
    }
    if (ev.selection == null && ev.faithfulness == null) { note.textContent = ""; return; }
    if (ev.refusal) item("faithfulness", ev.refusal);
    else item("faithfulness", fmt(ev.faithfulness), ev.faithfulness);
    item("soft", fmt(ev.soft), ev.soft);
    item("hard", fmt(ev.hard), ev.hard);
    item("KL", fmt(ev.kl), ev.kl);
    item("metric", `${fmt(ev.metric)} (full model ${fmt(ev.clean_metric ?? d.info.clean_metric)})`, ev.metric);
    item("edges", ev.n_edges ?? size.edges, ev.n_edges);
    item("real edges / example", ev.n_real_edges == null ? "–" : Math.round(ev.n_real_edges));
    note.textContent = !live && state !== "current" && ev.faithfulness != null
      ? "The numbers are for the circuit as saved; this page cannot re-evaluate edits." : "";
    if (chart && ev.faithfulness != null && state === "current") {
      chart.update({ current: { label: "current circuit", n_edges: ev.n_edges, fraction: ev.fraction,
        n_real_edges: ev.n_real_edges, real_fraction: ev.real_fraction, faithfulness: ev.faithfulness,
        soft: ev.soft, hard: ev.hard, kl: ev.kl } });
    }
  }

  // --- view: zoom, pan, fit ------------------------------------------------------------------
  const view = createView(diagram, {
    onChange: () => { paint(); },
    minimapDraw: (ctx, s) => {
      ctx.fillStyle = "#f8fafc"; ctx.fillRect(0, 0, pos.width, pos.height);
      ctx.fillStyle = "#e2e8f0";
      pos.columns.forEach((c, i) => { if (i % 2 === 1) ctx.fillRect(c.x0, 0, c.x1 - c.x0, pos.height); });
      ctx.fillStyle = "#374151";
      const r = 2.2 / s;
      for (let n = 0; n < d.nNodes; n++) if (active[n]) ctx.fillRect(pos.x[n] - r / 2, pos.y[n] - r / 2, r, r);
    },
  });

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
    const prevW = pos.width, prevH = pos.height;
    pos = layoutNodes(d, undefined, collapse.checked ? emptyParts(d, active) : null);
    if (view.auto || pos.width !== prevW || pos.height !== prevH) {
      if (view.auto) view.w = pos.width, view.h = pos.height;
    }
    samples = Array.from(drawn, (r) => sampleCurve(edgeCurve(d, pos, r)));
    ghostSamples = Array.from(ghosts, (r) => sampleCurve(edgeCurve(d, pos, r)));
    maxAbsScore = 0;
    for (const r of drawn) maxAbsScore = Math.max(maxAbsScore, Math.abs(d.score[r]));
    cut = strongCut(d, drawn);
    if (focus && !active[focus.node] && !(s.removed_nodes ?? []).includes(focus.node)) focus = null;
  }

  let stateKey = 0;            // bumped whenever what the canvas shows changes (not the view)
  const canvasCache = {};
  const drawState = () => ({ key: stateKey, drawn, ghosts, active, maxAbs: maxAbsScore, cut, focus: focus?.group ?? null,
    gone: new Set(sel().removed_nodes ?? []), matches, tabNode });

  let renderMode = "", layers = { edges: "", ghosts: "", nodes: "", frame: "", shade: "" };
  /** Rebuild the markup (after an edit or a highlight); `paint` places it in view. */
  function build() {
    stateKey++;
    const s = drawState();
    if (tabNode < 0 || !(active[tabNode] || s.gone.has(tabNode))) tabNode = firstNode();
    s.tabNode = tabNode;
    renderMode = drawn.length > SVG_LIMIT ? "canvas" : "svg";
    layers = {
      shade: renderMode === "svg" ? shadeMarkup(pos) : "",
      frame: labelMarkup(d, pos),
      ghosts: ghostMarkup(d, pos, s),
      edges: renderMode === "svg" ? edgeMarkup(d, pos, s) : "",
      nodes: nodeMarkup(d, pos, s),
    };
    svg.innerHTML = `<g data-role="viewport">${layers.shade}${layers.frame}<g>${layers.ghosts}${layers.edges}</g><g data-role="nodes">${layers.nodes}</g><g data-role="kb-edge"></g></g>`;
    canvas.hidden = renderMode !== "canvas";
    paint();
    drawKbEdge();
  }

  let paintFrame = 0;
  /** Apply the view transform (and redraw the canvas): cheap, for zoom and pan. */
  function paint() {
    const g = svg.firstChild;
    const bw = diagram.clientWidth, bh = diagram.clientHeight;
    svg.setAttribute("width", bw);
    svg.setAttribute("height", bh);
    if (g) g.setAttribute("transform", view.transform());
    if (renderMode === "canvas" && !canvas.hidden) {      // at most once a frame
      cancelAnimationFrame(paintFrame);
      paintFrame = requestAnimationFrame(() => {
        drawCanvas(canvas, d, pos, drawState(), view, bw, bh, canvasCache);
        el.dataset.paints = String(Number(el.dataset.paints ?? 0) + 1);
      });
    }
    diagram.dataset.zoom = view.k.toFixed(4);
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
    if (applied) { keyMax = null; sortedKeys = null; }
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
    build();
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

  let firstDraw = true;
  function draw() {
    const t0 = performance.now();
    const need = missing(d, sel());
    if (need) {
      drawWaiting(need);
      syncControls();
      return;
    }
    if (waiting) { waiting = ""; showEvaluation(); }
    waitBox.hidden = true;
    el.dataset.state = "ready";
    const before = [pos.width, pos.height];
    recompute();
    if (firstDraw || (view.auto && (before[0] !== pos.width || before[1] !== pos.height))) {
      firstDraw = false;
      // the box: as tall as the fitted diagram needs (300-640 px)
      const k0 = Math.min((diagram.clientWidth || 900) / pos.width, 1.25);
      diagram.style.height = `${Math.round(Math.max(300, Math.min(640, pos.height * k0 + 12)))}px`;
      view.w = pos.width; view.h = pos.height;
      renderMode = drawn.length > SVG_LIMIT ? "canvas" : "svg";
      view.fit(pos.width, pos.height);
    } else { view.w = pos.width; view.h = pos.height; }
    build();
    syncControls();
    el.dataset.mode = renderMode;
    el.dataset.drawn = String(drawn.length);
    el.dataset.updateMs = (performance.now() - t0).toFixed(2);
  }

  let sortedKeys = null;
  function syncControls() {
    const s = sel();
    mode.value = s.mode;
    if (s.mode === "threshold") {
      const top = maxKey();
      slider.min = 0; slider.max = SLIDER_STEPS; slider.step = 1;
      slider.value = String(Math.round(SLIDER_STEPS * Math.sqrt(Math.min(1, s.threshold / (top || 1)))));
      number.step = "any";
      number.removeAttribute("max");
      number.value = String(Number(Number(s.threshold).toPrecision(6)));
    } else {
      slider.min = 0; slider.max = SLIDER_STEPS; slider.step = 1;
      slider.value = String(edgesToSlider(s.n_edges, maxEdges()));
      number.step = 1;
      number.max = maxEdges();
      number.value = String(s.n_edges);
    }
    slider.setAttribute("aria-valuetext", s.mode === "threshold" ? `threshold ${number.value}` : `${s.n_edges} edges`);
    const note = waiting ? "" : sizeNote(s, size.edges, d.info.merge_qkv);
    sizeLabel.textContent = waiting
      ? `${waiting === "loading" ? "pending" : "not on this page"} · of ${d.nUnitsTotal}`
      : `${size.edges} edges${note ? " in the circuit" : ""} · ${size.rows} rows · ${(100 * size.edges / Math.max(1, d.nUnitsTotal)).toFixed(2)}% of ${d.nUnitsTotal}`;
    whyText.textContent = note;
    why.hidden = !note;
    sizeLabel.dataset.differs = String(Boolean(note));
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
  function boxPoint(ev) {
    const rect = diagram.getBoundingClientRect();
    return [ev.clientX - rect.left, ev.clientY - rect.top];
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
    const hf = model.get("head_functions") ?? {};
    const scores = hf.heads?.[name.split("@")[0]];
    if (scores && d.nodeType[n] === NODE.HEAD) {
      const rows = (hf.relations ?? []).map((r, k) => [r, scores[k]]).filter(([, v]) => v != null)
        .sort((a, b) => b[1] - a[1]);
      html += `<div class="pe-functions" data-role="head-functions"><span class="pe-muted">function scores:</span> ${rows.map(([r, v]) => `${esc(r)} <b>${fmt(v, 2)}</b>`).join(", ")}</div>`;
    }
    const removed = (sel().removed_nodes ?? []).includes(n);
    html += `<div class="pe-muted">${removed ? "pruned: click to restore" : active[n] ? "click to prune this node" : "not in the circuit"}</div>`;
    return html;
  }

  function showTip(html, bx, by) {
    tip.innerHTML = html;
    tip.hidden = false;
    const { left, top } = placeTip(bx, by, tip.offsetWidth, tip.offsetHeight, diagram.clientWidth, diagram.clientHeight);
    tip.style.left = `${left}px`;
    tip.style.top = `${top}px`;
  }

  function setFocus(n) {
    const next = n >= 0 ? { node: n, group: new Set(nodeGroup(d, n)) } : null;
    if ((next?.node ?? -1) === (focus?.node ?? -1)) return;
    focus = next;
    stateKey++;
    diagram.dataset.highlight = next ? d.nodeNames[n] : "";
    if (renderMode === "svg") {       // classes only: no rebuild
      const g = svg.querySelectorAll("path[data-row]");
      svg.classList.toggle("pe-dim", Boolean(next));
      const s = drawState();
      for (const p of g) {
        const r = Number(p.dataset.local);
        const on = next && (next.group.has(d.parent[r]) || next.group.has(d.child[r]));
        p.classList.toggle("hl", Boolean(on));
        p.setAttribute("stroke-opacity", String(edgeAlpha(d, r, s)));
      }
    } else paint();
  }
  let hoverFrame = 0;
  function onMove(ev) {
    const [bx, by] = boxPoint(ev);
    cancelAnimationFrame(hoverFrame);
    hoverFrame = requestAnimationFrame(() => {
      if (diagram.classList.contains("pe-dragging")) { tip.hidden = true; return; }
      const hit = hitAt(bx, by);
      setFocus(hit?.node ?? (kbFocusNode() ?? -1));
      if (!hit) { tip.hidden = true; diagram.style.cursor = ""; return; }
      diagram.style.cursor = "pointer";
      showTip(tipHTML(hit), bx, by);
    });
  }

  function toggleHit(hit) {
    const s = sel();
    if (hit.node != null) {
      const removed = (s.removed_nodes ?? []).includes(hit.node);
      if (!removed && !active[hit.node]) return false;
      edit(toggleNodes(s, nodeGroup(d, hit.node)));
    } else if (hit.row != null) edit(toggleUnit(s, d.unitIds[d.unit[hit.row]], true));
    else edit(toggleUnit(s, d.unitIds[d.unit[hit.ghost]], false));
    return true;
  }

  function onClick(ev) {
    if (view.dragged) return;
    if (ev.target.closest?.(".pe-zoom, .pe-minimap")) return;
    const [bx, by] = boxPoint(ev);
    const hit = hitAt(bx, by);
    if (!hit) return;
    toggleHit(hit);
    tip.hidden = true;
  }

  function onSlider() {
    const s = sel();
    if (s.mode === "threshold") {
      const f = Number(slider.value) / SLIDER_STEPS;
      edit(setThreshold(s, capThreshold(Number((maxKey() * f * f).toPrecision(4)))));
    } else edit(setEdges(s, sliderToEdges(slider.value, maxEdges())));
    syncControls();   // a capped value moves the control back (the selection may not change)
  }

  // arrow keys on the slider: one edge at a time (the log scale is too coarse for that)
  function onSliderKey(ev) {
    const s = sel();
    if (s.mode !== "edges") return;
    const step = { ArrowRight: 1, ArrowUp: 1, ArrowLeft: -1, ArrowDown: -1 }[ev.key];
    if (!step) return;
    ev.preventDefault();
    edit(setEdges(s, Math.max(0, Math.min(maxEdges(), s.n_edges + step))));
    syncControls();
  }

  function onNumber() {
    const s = sel(), v = Number(number.value);
    if (number.value === "" || !Number.isFinite(v) || v < 0) { syncControls(); return; }
    edit(s.mode === "threshold" ? setThreshold(s, capThreshold(v)) : setEdges(s, Math.min(Math.round(v), maxEdges())));
    syncControls();
  }

  // Enter takes the typed size at once (JupyterLab keeps a number input's Enter from making a
  // change event, and may take Enter as a notebook command: stopped here)
  function onNumberKey(ev) {
    if (ev.key === "Enter") { ev.preventDefault(); ev.stopPropagation(); onNumber(); }
  }

  function onMode() {
    const s = sel();
    if (mode.value === "threshold") {
      // keep the circuit's size: the threshold is the key of the last unit included
      if (!sortedKeys) sortedKeys = d.unitKey;
      const n = Math.max(1, waiting ? s.n_edges : Math.min(s.n_edges, d.unitKey.length));
      edit(setThreshold(s, capThreshold(thresholdForSize(sortedKeys, n, minThreshold(d)))));
    } else edit(setEdges(s, waiting ? s.n_edges : Math.min(size.edges, maxEdges())));
    syncControls();
  }

  function onSearch() {
    matches = new Set(searchNodes(d, search.value));
    build();
    const first = [...matches][0];
    if (first !== undefined && view.zoomed()) view.centerOn(pos.x[first], pos.y[first]);
  }

  // --- keyboard: nodes (roving tabindex), a node's edges, zoom and pan ------------------------
  const kbFocusNode = () => {
    const a = svg.ownerDocument.activeElement;
    return a && svg.contains(a) && a.dataset?.node != null ? Number(a.dataset.node) : null;
  };
  function focusNodeEl(n) {
    const old = svg.querySelector('[data-node][tabindex="0"]');
    old?.setAttribute("tabindex", "-1");
    tabNode = n;
    const elN = svg.querySelector(`[data-node="${n}"]`);
    if (!elN) return;
    elN.setAttribute("tabindex", "0");
    elN.focus({ preventScroll: true });
    setFocus(n);
    const [sx, sy] = view.toScreen(pos.x[n], pos.y[n]);
    if (sx < 20 || sy < 20 || sx > diagram.clientWidth - 20 || sy > diagram.clientHeight - 20) view.centerOn(pos.x[n], pos.y[n]);
  }
  const firstNode = () => firstNodeOf(d, pos, active, new Set(sel().removed_nodes ?? []));
  const neighbour = (n, dx, dy) => neighbourOf(d, pos, active, new Set(sel().removed_nodes ?? []), n, dx, dy);
  const nodeEdges = (n) => nodeEdgesOf(d, drawn, ghosts, n);

  /** What is under a point of the box (see hit.js). */
  const hitAt = (bx, by) => hitTest(d, pos, view, { active, gone: new Set(sel().removed_nodes ?? []), drawn,
    ghosts, samples, ghostSamples }, bx, by);

  function drawKbEdge() {
    const g = svg.querySelector('[data-role="kb-edge"]');
    if (!g) return;
    if (!kbEdge || !kbEdge.list.length) { g.innerHTML = ""; return; }
    const [r, ghost] = kbEdge.list[kbEdge.i];
    const b = edgeCurve(d, pos, r);
    g.innerHTML = `<path data-role="focus-edge" tabindex="-1" role="button" aria-label="${esc(edgeLabel(d, r, ghost))}: Enter ${ghost ? "restores" : "prunes"} it (${kbEdge.i + 1} of ${kbEdge.list.length})" data-edge="${d.rowId[r]}" d="M${b[0]},${b[1]}C${b[2]},${b[3]} ${b[4]},${b[5]} ${b[6]},${b[7]}" fill="none" stroke="#f59e0b" stroke-width="4" stroke-opacity="0.85"/>`;
    const p = g.firstChild;
    p.focus({ preventScroll: true });
    const box = diagram.getBoundingClientRect();
    showTip(tipHTML(ghost ? { ghost: r } : { row: r }), ...view.toScreen((b[0] + b[6]) / 2, (b[1] + b[7]) / 2).map((v, i) => v + (i ? 0 : 0)));
    void box;
  }

  function onDiagramKey(ev) {
    const a = svg.ownerDocument.activeElement;
    if (kbEdge && a?.dataset?.role === "focus-edge") {
      if (ev.key === "ArrowRight" || ev.key === "ArrowDown" || ev.key === "]") kbEdge.i = (kbEdge.i + 1) % kbEdge.list.length;
      else if (ev.key === "ArrowLeft" || ev.key === "ArrowUp" || ev.key === "[") kbEdge.i = (kbEdge.i - 1 + kbEdge.list.length) % kbEdge.list.length;
      else if (ev.key === "Enter" || ev.key === " ") {
        const [r, ghost] = kbEdge.list[kbEdge.i];
        const node = kbEdge.node;
        toggleHit(ghost ? { ghost: r } : { row: r });
        kbEdge = { node, list: nodeEdges(node), i: Math.min(kbEdge.i, Math.max(0, nodeEdges(node).length - 1)) };
      } else if (ev.key === "Escape") {
        const n = kbEdge.node; kbEdge = null; drawKbEdge(); tip.hidden = true; focusNodeEl(n);
      } else return;
      ev.preventDefault(); ev.stopPropagation();
      drawKbEdge();
      return;
    }
    const n = kbFocusNode();
    if (n != null) {
      const dir = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] }[ev.key];
      if (dir) {
        const m = neighbour(n, ...dir);
        if (m >= 0) focusNodeEl(m);
      } else if (ev.key === "Enter" || ev.key === " ") {
        toggleHit({ node: n });
        focusNodeEl(n);
      } else if (ev.key === "e" || ev.key === "E") {
        const list = nodeEdges(n);
        if (list.length) { kbEdge = { node: n, list, i: 0 }; drawKbEdge(); }
      } else if (ev.key === "Escape") { diagram.focus(); setFocus(-1); }
      else if (!view.key(ev)) return;
      ev.preventDefault(); ev.stopPropagation();
      return;
    }
    if (a === diagram) {
      if (ev.key === "Enter" || ev.key === "n") { const f = tabNode >= 0 ? tabNode : firstNode(); if (f >= 0) focusNodeEl(f); ev.preventDefault(); return; }
      if (view.key(ev)) ev.stopPropagation();
    }
  }
  function onFocusIn(ev) {
    const n = ev.target?.dataset?.node;
    if (n != null) { tabNode = Number(n); setFocus(Number(n)); }
  }
  function onFocusOut() {
    requestAnimationFrame(() => { if (kbFocusNode() == null && !kbEdge) setFocus(-1); });
  }

  function onKey(ev) {
    if ((ev.ctrlKey || ev.metaKey) && ev.key.toLowerCase() === "z") { ev.preventDefault(); undo(); }
  }

  const stem = () => `circuit_${d.info.method ?? "peap"}_${size.edges}edges`;
  /** The whole diagram as a standalone SVG document (export), at scale 1. */
  function svgDocument() {
    const s = { ...drawState(), focus: null };
    return `<svg xmlns="http://www.w3.org/2000/svg" width="${pos.width}" height="${pos.height}" viewBox="0 0 ${pos.width} ${pos.height}" font-family="system-ui, sans-serif">` +
      `<rect width="100%" height="100%" fill="#fff"/>${shadeMarkup(pos)}${labelMarkup(d, pos)}<g>${ghostMarkup(d, pos, s)}${edgeMarkup(d, pos, s)}</g><g>${nodeMarkup(d, pos, s)}</g></svg>`;
  }
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
    [diagram, "mouseleave", () => { tip.hidden = true; setFocus(kbFocusNode() ?? -1); }],
    [diagram, "keydown", onDiagramKey], [svg, "focusin", onFocusIn], [svg, "focusout", onFocusOut],
    [slider, "input", onSlider], [slider, "keydown", onSliderKey],
    [number, "change", onNumber], [number, "keydown", onNumberKey],
    [mode, "change", onMode], [collapse, "change", () => { draw(); view.fit(pos.width, pos.height); }],
    [undoBtn, "click", undo], [resetBtn, "click", () => edit({ ...sel(), added: [], removed: [], removed_nodes: [] })],
    [fullBtn, "click", () => requestEvaluation(true)],
    [qualityBtn, "click", requestQuality],
    [search, "input", onSearch], [root, "keydown", onKey],
    [exportSvg, "click", onExportSvg], [exportPng, "click", onExportPng], [exportJson, "click", onExportJson],
  ];
  for (const [target, type, fn] of listeners) target.addEventListener(type, fn);
  const stopSel = onChange(model, ["selection", "history"], () => { draw(); showEvaluation(); showQuality(); });
  const stopQuality = onChange(model, ["quality"], showQuality);
  const stopEval = onChange(model, ["evaluation"], onEvaluation);
  model.on("msg:custom", onCustom);

  draw();
  onEvaluation();
  showQuality();
  el.dataset.renderMs = (performance.now() - started).toFixed(2);
  el.explorer = { data: d, rows: () => rows, edit, undo, svgDocument, json: () => circuitJSON(d, rows),
    waiting: () => waiting, selection: sel, view, pos: () => pos, highlight: setFocus,
    /** A point of the diagram in page coordinates. */
    pagePoint: (x, y) => { const r = diagram.getBoundingClientRect(), [sx, sy] = view.toScreen(x, y); return [r.left + sx, r.top + sy]; },
    edgeMid: (r) => { const b = sampleCurve(edgeCurve(d, pos, r), 2); return [b[2], b[3]]; },
    sliderFor: (n) => edgesToSlider(n, maxEdges()) };

  return () => {
    for (const [target, type, fn] of listeners) target.removeEventListener(type, fn);
    stopSel(); stopEval(); stopQuality();
    model.off("msg:custom", onCustom);
    if (fetching) clearTimeout(fetching.timer);
    chart?.destroy();
    clearInterval(tick); clearTimeout(expireTimer);
    view.destroy();
    root.remove();
  };
}

export default { render };
