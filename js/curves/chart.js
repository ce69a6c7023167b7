// The faithfulness-vs-size chart as a plain DOM component (SVG), used by the FaithfulnessCurves
// widget and importable by other widgets:
//
//   import { drawChart } from "../curves/chart.js";
//   const chart = drawChart(el, { series, current, measure: "faithfulness", x: "fraction" });
//   chart.update({ measure: "soft" });   // any subset of the options
//   chart.destroy();
//
// Every colour, font and stroke is an SVG attribute (not CSS), so `toSVG()` / `toPNG()` export
// exactly what is on screen. Only the tooltip (HTML) and hover cues use the small stylesheet below.
import { axisBottom, axisLeft } from "d3-axis";
import { select } from "d3-selection";
import { h, injectStyle } from "../lib/dom.js";
import {
  MEASURES, X_AXES, project, axisScale, axisTicks, xTickCount, tickFormat, xDomain, yDomain,
  formatValue, formatPercent, nearest, nearGroup, markerPath, linePath, legendLayout, isNum,
} from "./logic.js";

export { MEASURES, X_AXES, PALETTE } from "./logic.js";

const FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif";
const INK = "#1f2937", MUTED = "#4b5563", FAINT = "#6b7280", GRID = "#e5e7eb", GRID_MINOR = "#f1f3f5";
const CURRENT = "#111827";

const CSS = `
.pc-chart { position: relative; font-family: ${FONT}; color: ${INK}; line-height: 1.3; }
.pc-chart svg { display: block; max-width: 100%; height: auto; overflow: visible; }
.pc-chart .pc-legend-item { cursor: pointer; }
.pc-chart .pc-legend-item.pc-off { opacity: 0.35; }
.pc-chart .pc-marker { transition: opacity 120ms; }
.pc-chart.pc-hovering .pc-series:not(.pc-active) { opacity: 0.35; }
.pc-tooltip { position: absolute; z-index: 10; pointer-events: none; background: #fff;
  border: 1px solid #d1d5db; border-radius: 6px; box-shadow: 0 4px 14px rgba(15, 23, 42, 0.12);
  padding: 7px 9px 6px; font-size: 12px; white-space: nowrap; font-variant-numeric: tabular-nums; }
.pc-tooltip[hidden] { display: none; }
.pc-tooltip .pc-tip-head { display: flex; align-items: center; gap: 6px; font-weight: 600;
  margin-bottom: 4px; font-size: 12.5px; }
.pc-tooltip .pc-swatch { width: 10px; height: 10px; border-radius: 2px; display: inline-block; }
.pc-tooltip table { border-collapse: collapse; }
.pc-tooltip th { text-align: left; font-weight: 400; color: ${FAINT}; padding: 1px 0; }
.pc-tooltip td { text-align: right; padding: 1px 0 1px 12px; }
.pc-tooltip tr.pc-tip-cols th { color: ${INK}; font-weight: 600; text-align: right; padding: 0 0 3px 12px; }
.pc-tooltip tr.pc-tip-cols .pc-swatch { vertical-align: -1px; }
.pc-tooltip tr.pc-on th, .pc-tooltip tr.pc-on td { color: ${INK}; font-weight: 600; }
.pc-note { font-size: 11.5px; color: ${FAINT}; margin: 2px 0 0 4px; }
.pc-note:empty { display: none; }
`;

let chartCount = 0;

const DEFAULTS = {
  series: [], current: null, measure: "faithfulness", x: "fraction", title: "", refusal: "",
  width: null, height: 380, tooltip: true, legend: true, onHover: null,
};

/**
 * Draw a faithfulness-vs-circuit-size chart into `container`.
 *
 * @param {HTMLElement} container  the chart is appended to it (the rest is left alone)
 * @param {object} opts
 *   series   [{name, points: [{n_edges, fraction, n_real_edges, real_fraction, faithfulness,
 *            soft, hard, kl}]}]  one line per series (nulls allowed: such points are skipped)
 *   current  null or {label, n_edges, fraction, n_real_edges, real_fraction, faithfulness, soft,
 *            hard, kl}: the highlighted "current circuit" point
 *   measure  "faithfulness" | "soft" | "hard" | "kl"                       (y)
 *   x        "fraction" | "n_edges" | "n_real_edges" | "real_fraction" (log axes) | "fraction_linear"
 *   title    text above the legend ("" for none)
 *   refusal  why normalized faithfulness was not computed ("" when it was): with measure
 *            "faithfulness" the chart shows this reason instead of lines and the current point
 *   width    px (null: the container's width, following resizes); height px (380)
 *   tooltip  show the built-in tooltip on hover (true); legend (true)
 *   onHover  called with {series, seriesIndex, index, point, current, group} or null (`group`:
 *            the same fields for every point drawn on the hovered spot, the hovered one first)
 * @returns {{update(opts): void, destroy(): void, svg: SVGSVGElement, toSVG(): string,
 *            toPNG(scale?: number): Promise<Blob>, hover(seriesIndex, index): void}}
 *   `index` is the point's index in its series' `points`; hover(-1) for the current point,
 *   hover(null) hides.
 */
export function drawChart(container, opts = {}) {
  injectStyle(container, "peap-chart", CSS);
  const id = `pc${++chartCount}`;
  let o = { ...DEFAULTS, ...opts };
  const hidden = new Set(); // series names switched off in the legend
  const root = h("div", { class: "pc-chart" });
  const tip = h("div", { class: "pc-tooltip", role: "tooltip", hidden: true });
  const note = h("div", { class: "pc-note" });
  let svg = h("svg", {});
  root.append(svg, tip, note);
  container.append(root);
  let targets = []; // hoverable points in svg coordinates: {px, py, s, p, current}
  let hoverRing = null;
  let lastWidth = 0;

  const width = () => Math.max(320, Math.round(o.width ?? (container.clientWidth || 640)));

  function render() {
    const W = width(), H = Math.max(220, o.height ?? 380);
    lastWidth = W;
    const measure = MEASURES[o.measure] ? o.measure : "faithfulness";
    const m = MEASURES[measure], ax = X_AXES[o.x] ?? X_AXES.fraction;
    const refused = measure === "faithfulness" && o.refusal ? String(o.refusal) : "";
    const all = refused ? [] : project(o.series, measure, o.x);
    const shown = all.filter((s) => !hidden.has(s.name));
    const cur = !refused && o.current && typeof o.current === "object" ? o.current : null;
    const cx = cur?.[ax.key], cy = cur?.[measure];
    const curOk = cur && isNum(cx) && isNum(cy) && (!ax.log || cx > 0);

    // --- layout -------------------------------------------------------------------------------
    const el = (tag, attrs, ...kids) => h(tag, attrs, ...kids);
    const next = el("svg", { width: W, height: H,
      viewBox: `0 0 ${W} ${H}`, "font-family": FONT, role: "img",
      "aria-label": `${m.label} against ${ax.label}`, class: "pc-svg" });
    next.append(el("rect", { x: 0, y: 0, width: W, height: H, fill: "#fff", class: "pc-bg" }));
    let top = 10;
    if (o.title) {
      next.append(el("text", { x: 14, y: top + 14, "font-size": 15, "font-weight": 600,
        fill: INK, class: "pc-title" }, o.title));
      top += 26;
    }
    // y ticks first: the left margin fits their widest label
    const xs = shown.flatMap((s) => s.points.map((p) => p.x));
    const ys = shown.flatMap((s) => s.points.map((p) => p.y));
    if (curOk) { xs.push(cx); ys.push(cy); }
    const yd = yDomain(ys, m.reference);
    const Y = axisScale(yd, [H - 50, top]);   // range set below, once the legend is placed
    const yCount = Math.max(3, Math.round((H - top - 110) / 45));
    const yt = Y.ticks(yCount);
    const yFormat = tickFormat(Y, "number", yCount);
    const yLabels = yt.map(yFormat);
    const left = Math.round(Math.max(56, 36 + Math.max(0, ...yLabels.map((t) => textWidth(t, 11)))));
    const right = 22, bottom = 50;
    const legendItems = o.legend ? [
      ...all.map((s) => ({ kind: "series", s, label: s.name })),
      ...(cur ? [{ kind: "current", label: cur.label ? String(cur.label) : "current circuit" }] : []),
    ] : [];
    const widths = legendItems.map((it) => 30 + textWidth(it.label, 12));
    const rows = legendLayout(widths, W - left - right);
    const nRows = rows.length ? rows[rows.length - 1].row + 1 : 0;
    const legendTop = top;
    top += nRows * 20 + (nRows ? 8 : 4);
    const plot = { x0: left, x1: W - right, y0: top, y1: H - bottom };

    // --- scales, grid and axes (d3-scale, d3-axis) ------------------------------------------------
    const xd = xDomain(xs, ax.log);
    const X = axisScale(xd, [plot.x0, plot.x1], ax.log);
    Y.range([plot.y1, plot.y0]);
    const xCount = xTickCount(plot.x1 - plot.x0, ax.log);
    const xt = axisTicks(X, ax.log, xCount);
    const r1 = (v) => Math.round(v * 100) / 100;
    const plotW = plot.x1 - plot.x0, plotH = plot.y1 - plot.y0;

    // grid lines: d3 axes with ticks across the plot and no labels
    const grid = el("g", { class: "pc-grid", "shape-rendering": "crispEdges" });
    const gridAxis = (axis, values, across) => axis.tickValues(values).tickSizeInner(-across)
      .tickSizeOuter(0).tickFormat("");
    const atBottom = () => el("g", { transform: `translate(0,${plot.y1})` });
    drawAxis(atBottom(), grid, gridAxis(axisBottom(X), xt.minor, plotH), { line: GRID_MINOR });
    drawAxis(atBottom(), grid, gridAxis(axisBottom(X), xt.major, plotH), { line: GRID });
    drawAxis(el("g", { transform: `translate(${plot.x0},0)` }), grid, gridAxis(axisLeft(Y), yt, plotW),
      { line: (v) => (v === 0 ? "#d1d5db" : GRID) });
    next.append(grid);

    const axes = el("g", { class: "pc-axes", "font-size": 11, fill: MUTED });
    const xAxis = drawAxis(el("g", { class: "pc-x-axis", transform: `translate(0,${plot.y1})` }), axes,
      axisBottom(X).tickValues(xt.major).tickFormat(tickFormat(X, ax.kind, xCount, ax.log))
        .tickSizeInner(5).tickSizeOuter(0).tickPadding(4), { line: "#9ca3af", text: MUTED, domain: true });
    xAxis.querySelector(".domain")?.setAttribute("shape-rendering", "crispEdges");
    drawAxis(el("g", { class: "pc-y-axis", transform: `translate(${plot.x0},0)` }), axes,
      axisLeft(Y).tickValues(yt).tickFormat((v, k) => yLabels[k]).tickSize(0).tickPadding(8),
      { text: MUTED });
    axes.append(el("text", { x: (plot.x0 + plot.x1) / 2, y: H - 12, "text-anchor": "middle",
      "font-size": 12, fill: "#374151", class: "pc-x-label" }, ax.label));
    const ymid = (plot.y0 + plot.y1) / 2;
    axes.append(el("text", { x: 0, y: 0, transform: `translate(16,${ymid}) rotate(-90)`,
      "text-anchor": "middle", "font-size": 12, fill: "#374151", class: "pc-y-label" }, m.label));
    next.append(axes);

    // --- reference line y = 1 -------------------------------------------------------------------
    if (isNum(m.reference)) {
      const py = r1(Y(m.reference));
      next.append(el("g", { class: "pc-reference" },
        el("line", { x1: plot.x0, x2: plot.x1, y1: py, y2: py, stroke: FAINT, "stroke-width": 1.2,
          "stroke-dasharray": "6 4" }),
        el("text", { x: plot.x1 - 4, y: py - 5, "text-anchor": "end", "font-size": 10.5,
          fill: FAINT }, "full model")));
    }

    // --- series ---------------------------------------------------------------------------------
    const clip = `${id}-clip`;
    next.append(el("defs", {}, el("clipPath", { id: clip },
      el("rect", { x: plot.x0 - 8, y: plot.y0 - 8, width: plot.x1 - plot.x0 + 16,
        height: plot.y1 - plot.y0 + 16 }))));
    const data = el("g", { class: "pc-data", "clip-path": `url(#${clip})` });
    targets = [];
    for (const s of shown) {
      const pts = s.points.map((p) => ({ ...p, px: X(p.x), py: Y(p.y) }));
      const g = el("g", { class: "pc-series", "data-series": s.name, "data-index": s.index });
      g.append(el("path", { class: "pc-line", d: linePath(pts), fill: "none", stroke: s.color,
        "stroke-width": 2, "stroke-linejoin": "round", "stroke-linecap": "round",
        "data-series": s.name }));
      for (const p of pts) {
        g.append(el("path", { class: "pc-marker", d: markerPath(s.shape, 4.2),
          transform: `translate(${r1(p.px)},${r1(p.py)})`, fill: s.color, stroke: "#fff",
          "stroke-width": 1.3, "data-series": s.name, "data-index": p.i,
          "data-x": p.x, "data-y": p.y }));
        targets.push({ px: p.px, py: p.py, s, p });
      }
      data.append(g);
    }
    next.append(data);

    // --- the current circuit --------------------------------------------------------------------
    if (curOk) {
      const px = r1(X(cx)), py = r1(Y(cy));
      const label = cur.label ? String(cur.label) : "current circuit";
      const g = el("g", { class: "pc-current", "data-x": cx, "data-y": cy });
      g.append(el("line", { x1: px, x2: px, y1: py, y2: plot.y1, stroke: CURRENT,
        "stroke-width": 1, "stroke-dasharray": "2 3", opacity: 0.55 }));
      g.append(el("line", { x1: plot.x0, x2: px, y1: py, y2: py, stroke: CURRENT,
        "stroke-width": 1, "stroke-dasharray": "2 3", opacity: 0.55 }));
      g.append(el("circle", { cx: px, cy: py, r: 9, fill: "none", stroke: "#fff", "stroke-width": 4 }));
      g.append(el("circle", { class: "pc-current-marker", cx: px, cy: py, r: 8, fill: "#fbbf24",
        "fill-opacity": 0.35, stroke: CURRENT, "stroke-width": 2 }));
      g.append(el("circle", { cx: px, cy: py, r: 2.6, fill: CURRENT }));
      const tw = textWidth(label, 11.5);
      const flip = px + 14 + tw > plot.x1;
      const ly = py - 12 < plot.y0 + 10 ? py + 22 : py - 12;
      g.append(el("text", { x: flip ? px - 13 : px + 13, y: ly, "text-anchor": flip ? "end" : "start",
        "font-size": 11.5, "font-weight": 600, fill: CURRENT, stroke: "#fff", "stroke-width": 3.5,
        "paint-order": "stroke", "stroke-linejoin": "round", class: "pc-current-label" }, label));
      next.append(g);
      targets.push({ px, py, s: null, p: { raw: cur, i: -1 }, current: true });
    }

    // --- legend ---------------------------------------------------------------------------------
    if (legendItems.length) {
      const lg = el("g", { class: "pc-legend", "font-size": 12, fill: "#374151" });
      legendItems.forEach((it, k) => {
        const { row, x } = rows[k];
        const gx = left + x, gy = legendTop + row * 20 + 10;
        const item = el("g", { class: "pc-legend-item", transform: `translate(${gx},${gy})` },
          el("rect", { x: -4, y: -10, width: widths[k] + 8, height: 20, fill: "#fff", "fill-opacity": 0 }));
        if (it.kind === "series") {
          const s = it.s;
          if (hidden.has(s.name)) item.classList.add("pc-off");
          item.dataset.series = s.name;
          item.append(el("line", { x1: 0, x2: 22, y1: 0, y2: 0, stroke: s.color, "stroke-width": 2 }),
            el("path", { d: markerPath(s.shape, 4.2), transform: "translate(11,0)", fill: s.color,
              stroke: "#fff", "stroke-width": 1.3 }));
          item.append(el("title", {}, hidden.has(s.name) ? "click to show" : "click to hide"));
          item.addEventListener("click", () => {
            if (hidden.has(s.name)) hidden.delete(s.name); else hidden.add(s.name);
            render();
          });
        } else {
          item.classList.add("pc-legend-current");
          item.append(el("circle", { cx: 11, cy: 0, r: 6, fill: "#fbbf24", "fill-opacity": 0.35,
            stroke: CURRENT, "stroke-width": 2 }), el("circle", { cx: 11, cy: 0, r: 2, fill: CURRENT }));
        }
        item.append(el("text", { x: 29, y: 4 }, it.label));
        lg.append(item);
      });
      next.append(lg);
    }

    if (refused) {
      const lines = wrapText(refused, Math.max(160, plot.x1 - plot.x0 - 40), 12.5);
      const y0 = (plot.y0 + plot.y1) / 2 - (lines.length - 1) * 9;
      next.append(el("text", { x: (plot.x0 + plot.x1) / 2, y: y0, "text-anchor": "middle",
        "font-size": 12.5, fill: "#7c2d12", class: "pc-refusal" },
      lines.map((line, k) => el("tspan", { x: (plot.x0 + plot.x1) / 2, dy: k ? 18 : 0 }, line))));
    } else if (!targets.length) {
      next.append(el("text", { x: (plot.x0 + plot.x1) / 2, y: (plot.y0 + plot.y1) / 2,
        "text-anchor": "middle", "font-size": 13, fill: FAINT, class: "pc-empty" },
      all.length ? "no points to show on this axis" : "no curves yet"));
    }

    hoverRing = el("circle", { class: "pc-hover-ring", r: 8, fill: "none", stroke: INK,
      "stroke-width": 1.5, visibility: "hidden", "pointer-events": "none" });
    next.append(hoverRing);

    svg.replaceWith(next);
    svg = next;
    svg.addEventListener("pointermove", onMove);
    svg.addEventListener("pointerleave", () => hover(null));

    // --- notes (HTML, not exported) ---------------------------------------------------------------
    const notes = [];
    const dropped = all.reduce((n, s) => n + s.dropped, 0);
    const missing = all.reduce((n, s) => n + s.missing, 0);
    if (dropped) {
      notes.push(ax.log ? `${dropped} point${dropped > 1 ? "s" : ""} with size 0 or unknown not shown on this log axis`
        : `${dropped} point${dropped > 1 ? "s" : ""} with unknown size not shown`);
    }
    if (missing) notes.push(`${missing} point${missing > 1 ? "s" : ""} without a ${measure} value (NaN) not shown`);
    if (cur && !curOk) notes.push(`the current circuit has no position on this ${ax.log ? "log " : ""}axis`);
    note.textContent = notes.join(" · ");
  }

  function onMove(ev) {
    const rect = svg.getBoundingClientRect();
    const k = rect.width ? lastWidth / rect.width : 1;
    const mx = (ev.clientX - rect.left) * k, my = (ev.clientY - rect.top) * k;
    const j = nearest(targets, mx, my, 28);
    showTargets(j < 0 ? [] : nearGroup(targets, j, 3).map((i) => targets[i]));
  }

  // `group`: the hovered point first, then any drawn on top of it (within 3 px)
  function showTargets(group) {
    const t = group[0];
    const names = new Set(group.filter((g) => g.s).map((g) => g.s.name));
    root.classList.toggle("pc-hovering", names.size > 0);
    for (const g of svg.querySelectorAll(".pc-series")) g.classList.toggle("pc-active", names.has(g.dataset.series));
    if (!t) {
      hoverRing?.setAttribute("visibility", "hidden");
      tip.hidden = true;
      o.onHover?.(null);
      return;
    }
    hoverRing.setAttribute("cx", t.px);
    hoverRing.setAttribute("cy", t.py);
    hoverRing.setAttribute("r", t.current ? 11 : 8);
    hoverRing.setAttribute("visibility", "visible");
    if (o.tooltip) {
      fillTooltip(group);
      tip.hidden = false;
      placeTooltip(t);
    }
    const info = (g) => ({ series: g.s?.name ?? null, seriesIndex: g.s?.index ?? -1, index: g.p.i,
      point: g.p.raw, current: !!g.current });
    o.onHover?.({ ...info(t), group: group.map(info) });
  }

  function fillTooltip(group) {
    const measure = MEASURES[o.measure] ? o.measure : "faithfulness";
    const nameOf = (t) => (t.current ? (t.p.raw.label ? String(t.p.raw.label) : "current circuit") : t.s.name);
    const swatch = (t) => (t.current
      ? h("span", { class: "pc-swatch", style: { background: "#fbbf24", border: `2px solid ${CURRENT}`, borderRadius: "50%" } })
      : h("span", { class: "pc-swatch", style: { background: t.s.color } }));
    const rows = [
      ["n_edges", "edges", (p) => formatValue(p.n_edges)],
      ["fraction", "fraction", (p) => (isNum(p.fraction) ? `${formatValue(p.fraction)} (${formatPercent(p.fraction)})` : "–")],
      ["n_real_edges", "real edges", (p) => formatValue(p.n_real_edges)],
      ["real_fraction", "real fraction", (p) => (isNum(p.real_fraction) ? formatPercent(p.real_fraction) : "–")],
      ["faithfulness", "faithfulness", (p) => formatValue(p.faithfulness)],
      ["soft", "soft", (p) => formatValue(p.soft)],
      ["hard", "hard", (p) => formatValue(p.hard)],
      ["kl", "KL", (p) => formatValue(p.kl)],
    ];
    const one = group.length === 1;
    const head = one
      ? h("div", { class: "pc-tip-head" }, swatch(group[0]), h("span", { class: "pc-tip-name" }, nameOf(group[0])))
      : h("div", { class: "pc-tip-head" }, `${group.length} points here`);
    const header = one ? null : h("tr", { class: "pc-tip-cols" }, h("th", {}),
      group.map((t) => h("th", { "data-series": nameOf(t) }, swatch(t), " ", nameOf(t))));
    tip.replaceChildren(head, h("table", {}, h("tbody", {}, header,
      rows.map(([key, label, f]) => h("tr", { "data-key": key, class: key === measure ? "pc-on" : null },
        h("th", {}, label),
        group.map((t) => h("td", { "data-series": nameOf(t) }, f(t.p.raw))))))));
  }

  function placeTooltip(t) {
    const rect = svg.getBoundingClientRect(), host = root.getBoundingClientRect();
    const k = lastWidth ? rect.width / lastWidth : 1;
    const px = rect.left - host.left + t.px * k, py = rect.top - host.top + t.py * k;
    const tw = tip.offsetWidth, th = tip.offsetHeight;
    let left = px + 14, top = py - th - 10;
    if (left + tw > host.width) left = px - tw - 14;
    if (top < 0) top = py + 14;
    tip.style.left = `${Math.max(0, left)}px`;
    tip.style.top = `${top}px`;
  }

  function hover(seriesIndex, index) {
    const j = seriesIndex == null ? -1 : targets.findIndex((t) => (seriesIndex === -1 ? t.current
      : t.s && t.s.index === seriesIndex && t.p.i === index));
    showTargets(j < 0 ? [] : nearGroup(targets, j, 3).map((i) => targets[i]));
  }

  render();

  let ro = null;
  if (o.width == null && typeof ResizeObserver !== "undefined") {
    ro = new ResizeObserver(() => {
      if (o.width == null && container.clientWidth && width() !== lastWidth) render();
    });
    ro.observe(container);
  }

  return {
    update(newOpts = {}) { o = { ...o, ...newOpts }; tip.hidden = true; render(); },
    destroy() { ro?.disconnect(); root.remove(); },
    get svg() { return svg; },
    toSVG: () => svgString(svg),
    toPNG: (scale = 2) => pngBlob(svg, scale),
    hover,
  };
}

/**
 * Draw a d3 `axis` into the <g> `g` (appended to `parent`), then turn d3-axis's inherited styles
 * (currentColor, its own font) into explicit SVG attributes, so an exported SVG looks the same:
 * `colors.line` (a colour, or a function of the tick value) for tick lines, `colors.text` for
 * labels (class pc-tick), `colors.domain` true to keep the axis line (else removed).
 */
function drawAxis(g, parent, axis, colors) {
  parent.append(g);
  const sel = select(g).call(axis);
  sel.attr("fill", null).attr("font-size", null).attr("font-family", null);
  if (colors.domain) sel.select(".domain").attr("stroke", colors.line);
  else sel.select(".domain").remove();
  if (colors.line) sel.selectAll(".tick line").attr("stroke", colors.line);
  else sel.selectAll(".tick line").remove();
  if (colors.text) sel.selectAll(".tick text").attr("fill", colors.text).attr("class", "pc-tick");
  else sel.selectAll(".tick text").remove();
  return g;
}

/** `text` broken at spaces into lines at most `maxWidth` px wide in the chart font. */
function wrapText(text, maxWidth, size) {
  const lines = [];
  let line = "";
  for (const word of String(text).split(/\s+/)) {
    const next = line ? `${line} ${word}` : word;
    if (line && textWidth(next, size) > maxWidth) { lines.push(line); line = word; } else line = next;
  }
  if (line) lines.push(line);
  return lines;
}

let measureCtx = null;
/** Width in px of `text` in the chart font (canvas measurement; an estimate without a canvas). */
function textWidth(text, size) {
  try {
    measureCtx ??= document.createElement("canvas").getContext("2d");
    if (measureCtx) {
      measureCtx.font = `${size}px ${FONT}`;
      return measureCtx.measureText(String(text)).width;
    }
  } catch { /* no canvas */ }
  return String(text).length * size * 0.58;
}

/** A standalone SVG document of a chart's `<svg>` (hover cues left out). */
export function svgString(svgEl) {
  const copy = svgEl.cloneNode(true);
  copy.querySelectorAll(".pc-hover-ring, title").forEach((n) => n.remove());
  copy.removeAttribute("class");
  return `<?xml version="1.0" encoding="UTF-8"?>\n${new XMLSerializer().serializeToString(copy)}\n`;
}

/** A PNG of a chart's `<svg>` at `scale` times its size. */
export function pngBlob(svgEl, scale = 2) {
  const w = Number(svgEl.getAttribute("width")), hgt = Number(svgEl.getAttribute("height"));
  const url = `data:image/svg+xml;charset=utf-8,${encodeURIComponent(svgString(svgEl))}`;
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => {
      const canvas = document.createElement("canvas");
      canvas.width = Math.round(w * scale);
      canvas.height = Math.round(hgt * scale);
      const ctx = canvas.getContext("2d");
      ctx.fillStyle = "#fff";
      ctx.fillRect(0, 0, canvas.width, canvas.height);
      ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
      canvas.toBlob((b) => (b ? resolve(b) : reject(new Error("PNG export failed"))), "image/png");
    };
    img.onerror = () => reject(new Error("PNG export: the SVG could not be drawn"));
    img.src = url;
  });
}
