// The ROC chart of the FaithfulnessCurves widget's "ROC" view: one curve per method (true
// positive rate against false positive rate of its edge ranking against a known circuit), the
// chance diagonal, AUROC in the legend, hover read-out. Plain DOM (SVG); every style is an SVG
// attribute so the chart's `svgString` / `pngBlob` export exactly what is drawn.
//
//   const chart = drawRoc(el, { roc: [{name, auroc, points: [[fpr, tpr], ...]}], title: "" });
//   chart.update({ roc }); chart.destroy();
import { h } from "../lib/dom.js";
import { rocProject, axisScale, linePath, markerPath, legendLayout, formatPercent, rocAt } from "./logic.js";
import { svgString, pngBlob } from "./chart.js";

const FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif";
const INK = "#1f2937", FAINT = "#6b7280", GRID = "#e5e7eb";

export function drawRoc(container, opts = {}) {
  let o = { roc: [], title: "", height: 420, ...opts };
  const root = h("div", { class: "pr-chart", style: { fontFamily: FONT, position: "relative" } });
  const readout = h("div", { class: "pr-readout", "data-role": "roc-readout" });
  let svg = h("svg", {});
  root.append(svg, readout);
  container.append(root);

  function render() {
    const all = rocProject(o.roc);
    const W = Math.max(360, Math.min(container.clientWidth || 640, 760));
    const el = (tag, attrs, ...kids) => h(tag, attrs, ...kids);
    // legend: on the right of the square plot when there is room, else above it
    const labels = all.map((s) => s.label);
    const widths = labels.map((t) => 34 + t.length * 6.6);
    let top = 10;
    const next = el("svg", { width: W, height: 10, "font-family": FONT, role: "img",
      "aria-label": "ROC curves: true positive rate against false positive rate", class: "pr-svg" });
    const bg = el("rect", { x: 0, y: 0, width: W, height: 10, fill: "#fff" });
    next.append(bg);
    if (o.title) {
      next.append(el("text", { x: 14, y: top + 14, "font-size": 15, "font-weight": 600, fill: INK,
        class: "pr-title" }, o.title));
      top += 26;
    }
    const wide = Math.max(0, ...widths) + 40;
    let side = Math.max(220, Math.min((o.height ?? 420) - top - 56, W - 100 - wide));
    const beside = side >= 220 && 62 + side + wide <= W;
    let rows, legendX, legendTop;
    if (beside) {
      rows = all.map((_, k) => ({ row: k, x: 0 }));
      legendX = 62 + side + 28;
      legendTop = top + 14;
    } else {
      rows = legendLayout(widths, W - 80);
      legendX = 14;
      legendTop = top;
      top += (all.length ? (rows[rows.length - 1].row + 1) * 20 : 0) + 8;
      side = Math.max(220, Math.min((o.height ?? 420) - top - 56, W - 90));
    }
    const plot = { x0: 62, x1: 62 + side, y0: top + 6, y1: top + 6 + side };
    const Hh = plot.y1 + 46;
    next.setAttribute("height", Hh);
    next.setAttribute("viewBox", `0 0 ${W} ${Hh}`);
    bg.setAttribute("height", Hh);
    const X = axisScale([0, 1], [plot.x0, plot.x1]), Y = axisScale([0, 1], [plot.y1, plot.y0]);
    const ticks = X.ticks(5), label = X.tickFormat(5, "~f");   // 0, 0.2, ..., 1

    const grid = el("g", { class: "pr-grid" });
    for (const v of ticks) {
      grid.append(el("line", { x1: X(v), x2: X(v), y1: plot.y0, y2: plot.y1, stroke: GRID }),
        el("line", { x1: plot.x0, x2: plot.x1, y1: Y(v), y2: Y(v), stroke: GRID }));
    }
    next.append(grid);
    const axes = el("g", { "font-size": 11, fill: "#4b5563" });
    for (const v of ticks) {
      axes.append(el("text", { x: X(v), y: plot.y1 + 17, "text-anchor": "middle", class: "pr-tick" }, label(v)),
        el("text", { x: plot.x0 - 8, y: Y(v) + 3.5, "text-anchor": "end", class: "pr-tick" }, label(v)));
    }
    axes.append(el("text", { x: (plot.x0 + plot.x1) / 2, y: plot.y1 + 36, "text-anchor": "middle",
      "font-size": 12, fill: "#374151" }, "false positive rate (other edges ranked above the cut)"),
    el("text", { x: 0, y: 0, transform: `translate(18,${(plot.y0 + plot.y1) / 2}) rotate(-90)`,
      "text-anchor": "middle", "font-size": 12, fill: "#374151" }, "true positive rate (known edges found)"));
    next.append(axes);
    next.append(el("line", { class: "pr-chance", x1: X(0), y1: Y(0), x2: X(1), y2: Y(1), stroke: FAINT,
      "stroke-width": 1.2, "stroke-dasharray": "6 4" }),
    el("text", { x: X(0.62), y: Y(0.58) + 14, "font-size": 10.5, fill: FAINT,
      transform: `rotate(-45 ${X(0.62)} ${Y(0.58) + 14})` }, "chance (AUROC 0.5)"));

    const data = el("g", { class: "pr-data" });
    for (const s of all) {
      const pts = s.points.map((p) => ({ px: X(p.x), py: Y(p.y) }));
      // earlier curves wider, so a curve drawn over an identical one (two perfect rankings)
      // still shows the one below as a border
      const wdt = 2 + 1.6 * Math.min(3, all.length - 1 - s.index);
      data.append(el("path", { class: "pr-line", d: linePath(pts), fill: "none", stroke: s.color,
        "stroke-width": wdt, "stroke-linejoin": "round", "data-series": s.name, "data-auroc": s.auroc ?? "" }));
    }
    next.append(data);
    const lg = el("g", { class: "pr-legend", "font-size": 12, fill: "#374151" });
    all.forEach((s, k) => {
      const gx = legendX + rows[k].x, gy = legendTop + rows[k].row * 22 + 10;
      lg.append(el("g", { class: "pr-legend-item", transform: `translate(${gx},${gy})`,
        "data-series": s.name },
      el("line", { x1: 0, x2: 22, y1: 0, y2: 0, stroke: s.color, "stroke-width": 2.2 }),
      el("path", { d: markerPath(s.shape, 4), transform: "translate(11,0)", fill: s.color, stroke: "#fff" }),
      el("text", { x: 29, y: 4, class: "pr-label" }, s.label)));
    });
    next.append(lg);
    if (!all.length) {
      next.append(el("text", { x: (plot.x0 + plot.x1) / 2, y: (plot.y0 + plot.y1) / 2, "text-anchor": "middle",
        "font-size": 13, fill: FAINT, class: "pr-empty" }, "no ROC curves yet"));
    }
    const cursor = el("line", { y1: plot.y0, y2: plot.y1, stroke: INK, "stroke-width": 1, visibility: "hidden",
      "stroke-dasharray": "2 3" });
    next.append(cursor);
    next.addEventListener("pointermove", (ev) => {
      const r = next.getBoundingClientRect(), k = r.width ? W / r.width : 1;
      const fx = X.invert((ev.clientX - r.left) * k);
      if (fx < 0 || fx > 1 || !all.length) { cursor.setAttribute("visibility", "hidden"); readout.textContent = ""; return; }
      cursor.setAttribute("x1", X(fx)); cursor.setAttribute("x2", X(fx));
      cursor.setAttribute("visibility", "visible");
      readout.textContent = `at false positive rate ${formatPercent(fx)}: ` + all.map((s) =>
        `${s.name} finds ${formatPercent(rocAt(s.points, fx)?.y ?? 0)} of the known edges`).join(" · ");
    });
    next.addEventListener("pointerleave", () => { cursor.setAttribute("visibility", "hidden"); readout.textContent = ""; });
    svg.replaceWith(next);
    svg = next;
  }

  render();
  return {
    update(newOpts = {}) { o = { ...o, ...newOpts }; render(); },
    destroy() { root.remove(); },
    get svg() { return svg; },
    get element() { return root; },
    toSVG: () => svgString(svg),
    toPNG: (scale = 2) => pngBlob(svg, scale),
  };
}
