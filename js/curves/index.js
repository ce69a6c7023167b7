// FaithfulnessCurves: faithfulness against circuit size, one line per attribution result, with
// a measure switch, an x-axis switch, the current circuit as a highlighted point, hover
// tooltips and SVG/PNG export. The chart itself is ./chart.js (reusable by other widgets).
import css from "./style.css";
import { h, injectStyle, download } from "../lib/dom.js";
import { onChange, update } from "../lib/model.js";
import { drawChart } from "./chart.js";
import { MEASURES, X_AXES, isNum } from "./logic.js";

const TRAITS = ["series", "current", "measure", "x", "title", "refusal", "warning"];

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
  const toolbar = h("div", { class: "pcw-toolbar" },
    h("div", { class: "pcw-group", role: "group", "aria-label": "measure" },
      h("span", { class: "pcw-label" }, "Measure"), h("div", { class: "pcw-segs" }, measureButtons)),
    h("label", { class: "pcw-group" }, h("span", { class: "pcw-label" }, "Size"), xSelect),
    h("span", { class: "pcw-spacer" }),
    exportButton("svg"), exportButton("png"));
  const plot = h("div", { class: "pcw-plot" });
  // the model does not do the task / normalized faithfulness refused: said above the chart
  const notice = h("div", { class: "pcw-notice", role: "status", hidden: true });
  const root = h("div", { class: "peap-curves" }, toolbar, notice, plot);
  el.append(root);

  const chart = drawChart(plot, options(model));

  function syncControls() {
    const o = options(model);
    for (const b of measureButtons) {
      const on = b.dataset.measure === o.measure;
      b.classList.toggle("pcw-on", on);
      b.setAttribute("aria-pressed", String(on));
    }
    xSelect.value = o.x;
    // the refusal is drawn in the chart for normalized faithfulness; said here for the others
    const notes = [model.get("warning"), o.measure !== "faithfulness" && o.refusal].filter(Boolean);
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
    const stem = fileStem(o.title, o.measure);
    if (format === "svg") download(`${stem}.svg`, chart.toSVG(), "image/svg+xml");
    else download(`${stem}.png`, await chart.toPNG(2), "image/png");
  }

  syncControls();
  const off = onChange(model, TRAITS, () => { syncControls(); chart.update(options(model)); });
  return () => { off(); chart.destroy(); root.remove(); };
}

export default { render };
