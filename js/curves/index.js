// FaithfulnessCurves: faithfulness against circuit size, one line per attribution result, with
// a measure switch, an x-axis switch, the current circuit as a highlighted point, hover
// tooltips and SVG/PNG export. The chart itself is ./chart.js (reusable by other widgets).
// A second view ("ROC", trait `view`) draws the `roc_series` trait: ROC curves of several
// methods' edge rankings against a known circuit (./roc.js).
import css from "./style.css";
import { h, injectStyle, download } from "../lib/dom.js";
import { onChange, update } from "../lib/model.js";
import { drawChart } from "./chart.js";
import { drawRoc } from "./roc.js";
import { MEASURES, X_AXES, isNum } from "./logic.js";

const TRAITS = ["series", "current", "measure", "x", "title", "refusal", "warning", "view", "roc_series"];

function options(model) {
  return {
    series: model.get("series") ?? [],
    current: model.get("current") ?? null,
    measure: model.get("measure") || "faithfulness",
    x: model.get("x") || "fraction",
    title: model.get("title") ?? "",
    refusal: model.get("refusal") ?? "",
  };
}

/** File name stem for exports: the title's words, else "faithfulness_curves". */
export function fileStem(title, measure) {
  const slug = String(title ?? "").toLowerCase().replace(/[^a-z0-9]+/g, "_").replace(/^_+|_+$/g, "");
  return `${slug || "faithfulness_curves"}_${measure}`;
}

/** Which views the widget offers: faithfulness when it has curves (or no ROC), ROC when it has
 * ROC curves; and the one to show (the `view` trait when offered, else the first). */
export function views(series, roc, view) {
  const offered = [];
  if ((series ?? []).length || !(roc ?? []).length) offered.push("faithfulness");
  if ((roc ?? []).length) offered.push("roc");
  return { offered, shown: offered.includes(view) ? view : offered[0] };
}

function render({ model, el }) {
  injectStyle(el, "curves", css);
  const measureButtons = Object.entries(MEASURES).map(([key, m]) => h("button", {
    type: "button", class: "pcw-seg", "data-measure": key, title: m.label,
    onclick: () => update(model, { measure: key }),
  }, m.short));
  const xSelect = h("select", { class: "pcw-x", "aria-label": "circuit size axis",
    onchange: (e) => update(model, { x: e.target.value }) },
  Object.entries(X_AXES).map(([key, a]) => h("option", { value: key }, a.short)));
  const exportButton = (format) => h("button", { type: "button", class: "pcw-export",
    "data-format": format, title: `download the chart as ${format.toUpperCase()}`,
    onclick: () => exportChart(format) }, `⤓ ${format.toUpperCase()}`);
  const viewButtons = [["faithfulness", "Faithfulness"], ["roc", "ROC"]].map(([key, label]) => h("button", {
    type: "button", class: "pcw-seg", "data-view": key, role: "tab",
    title: key === "roc" ? "ROC curves against a known circuit" : "faithfulness against circuit size",
    onclick: () => update(model, { view: key }),
  }, label));
  const viewGroup = h("div", { class: "pcw-group pcw-views", role: "tablist", "aria-label": "view" },
    h("div", { class: "pcw-segs" }, viewButtons));
  const faithControls = h("span", { class: "pcw-group pcw-faith-controls" },
    h("div", { class: "pcw-group", role: "group", "aria-label": "measure" },
      h("span", { class: "pcw-label" }, "Measure"), h("div", { class: "pcw-segs" }, measureButtons)),
    h("label", { class: "pcw-group" }, h("span", { class: "pcw-label" }, "Size"), xSelect));
  const toolbar = h("div", { class: "pcw-toolbar" }, viewGroup, faithControls,
    h("span", { class: "pcw-spacer" }),
    exportButton("svg"), exportButton("png"));
  const plot = h("div", { class: "pcw-plot" });
  const rocPlot = h("div", { class: "pcw-plot pcw-roc", "data-role": "roc", hidden: true });
  // the model does not do the task / normalized faithfulness refused: said above the chart
  const notice = h("div", { class: "pcw-notice", role: "status", hidden: true });
  const root = h("div", { class: "peap-curves" }, toolbar, notice, plot, rocPlot);
  el.append(root);

  const chart = drawChart(plot, options(model));
  const rocChart = drawRoc(rocPlot, { roc: model.get("roc_series") ?? [], title: model.get("title") ?? "" });
  const shownView = () => views(model.get("series"), model.get("roc_series"), model.get("view")).shown;

  function syncControls() {
    const o = options(model);
    const v = views(o.series, model.get("roc_series"), model.get("view"));
    viewGroup.hidden = v.offered.length < 2;
    for (const b of viewButtons) {
      const on = b.dataset.view === v.shown;
      b.classList.toggle("pcw-on", on);
      b.setAttribute("aria-selected", String(on));
    }
    faithControls.hidden = v.shown !== "faithfulness";
    plot.hidden = v.shown !== "faithfulness";
    rocPlot.hidden = v.shown !== "roc";
    root.dataset.view = v.shown;
    for (const b of measureButtons) {
      const on = b.dataset.measure === o.measure;
      b.classList.toggle("pcw-on", on);
      b.setAttribute("aria-pressed", String(on));
    }
    xSelect.value = o.x;
    // the refusal is drawn in the chart for normalized faithfulness; said here for the others
    const notes = v.shown === "roc" ? [] : [model.get("warning"), o.measure !== "faithfulness" && o.refusal].filter(Boolean);
    notice.textContent = notes.join(" · ");
    notice.hidden = notes.length === 0;
    // an axis no point has a value for (real edges without span lengths) cannot be chosen
    for (const opt of xSelect.options) {
      const key = X_AXES[opt.value].key;
      opt.disabled = opt.value !== o.x && !o.series.some((s) => (s.points ?? []).some((p) => isNum(p?.[key])));
    }
  }

  async function exportChart(format) {
    const o = options(model);
    const roc = shownView() === "roc";
    const stem = fileStem(o.title, roc ? "roc" : o.measure);
    const c = roc ? rocChart : chart;
    if (format === "svg") download(`${stem}.svg`, c.toSVG(), "image/svg+xml");
    else download(`${stem}.png`, await c.toPNG(2), "image/png");
  }

  syncControls();
  const off = onChange(model, TRAITS, () => {
    syncControls();
    chart.update(options(model));
    if (shownView() === "roc") rocChart.update({ roc: model.get("roc_series") ?? [], title: model.get("title") ?? "" });
  });
  return () => { off(); chart.destroy(); rocChart.destroy(); root.remove(); };
}

export default { render };
