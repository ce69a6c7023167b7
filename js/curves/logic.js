// Pure helpers of the faithfulness chart: measures and x axes, scales, ticks, number formats,
// marker shapes and nearest-point search. No DOM here (unit-tested with vitest in node).
//
// Log axes and zero sizes: a log axis cannot show a size <= 0 (the empty circuit, or a
// curve whose real per-example edges are unknown). Such points are DROPPED from that axis
// (never clamped, which would invent a position) and counted in `dropped`, so the chart can
// say how many are hidden; the linear fraction axis shows them.
//
// Scales, ticks, tick labels and paths are d3's (d3-scale, d3-format, d3-shape), bundled.
import { scaleLinear, scaleLog } from "d3-scale";
import { format } from "d3-format";
import {
  line, symbol, symbolCircle, symbolCross, symbolDiamond, symbolSquare, symbolTriangle,
} from "d3-shape";

/** The y measures: a column of the curve table, its axis label and whether y = 1 is the full model. */
export const MEASURES = {
  faithfulness: { label: "normalized faithfulness", short: "Normalized", reference: 1 },
  soft: { label: "soft faithfulness  m(C) / m(full)", short: "Soft", reference: 1 },
  hard: { label: "hard faithfulness (argmax agreement)", short: "Hard", reference: 1 },
  kl: { label: "KL(full model ‖ circuit)", short: "KL", reference: null },
};

/** The x axes: the column they read, whether they are log scaled, their label and tick kind. */
export const X_AXES = {
  fraction: { key: "fraction", log: true, kind: "percent",
    label: "circuit size (% of edges, log scale)", short: "Fraction of edges (log)" },
  n_edges: { key: "n_edges", log: true, kind: "count",
    label: "circuit size (edges, log scale)", short: "Edges (log)" },
  n_real_edges: { key: "n_real_edges", log: true, kind: "count",
    label: "circuit size (real per-example edges, log scale)", short: "Real per-example edges (log)" },
  real_fraction: { key: "real_fraction", log: true, kind: "percent",
    label: "circuit size (% of real per-example edges, log scale)", short: "Fraction of real edges (log)" },
  fraction_linear: { key: "fraction", log: false, kind: "percent",
    label: "circuit size (% of edges)", short: "Fraction of edges (linear)" },
};

/** Okabe & Ito's colour-blind-safe palette (yellow left out: too pale on white). */
export const PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#000000"];
/** Marker shapes, one per series next to its colour (so lines differ without colour too). */
export const SHAPES = ["circle", "square", "triangle", "diamond", "triangle-down", "cross"];

export const isNum = (v) => typeof v === "number" && Number.isFinite(v);

/**
 * The drawable points of each series for one measure and x axis.
 * Returns [{name, index, color, shape, points: [{x, y, i, raw}], dropped, missing}], points
 * sorted by x. `dropped`: points without a position on this x axis (null size, or size <= 0
 * on a log axis); `missing`: points whose measure is null (NaN in Python).
 */
export function project(series, measure, xName) {
  const ax = X_AXES[xName] ?? X_AXES.fraction;
  return (series ?? []).map((s, index) => {
    const points = [];
    let dropped = 0, missing = 0;
    (s.points ?? []).forEach((raw, i) => {
      const x = raw?.[ax.key], y = raw?.[measure];
      if (!isNum(x) || (ax.log && x <= 0)) { dropped++; return; }
      if (!isNum(y)) { missing++; return; }
      points.push({ x, y, i, raw });
    });
    points.sort((a, b) => a.x - b.x || a.i - b.i);
    return { name: String(s.name ?? `series ${index + 1}`), index,
      color: PALETTE[index % PALETTE.length], shape: SHAPES[index % SHAPES.length],
      points, dropped, missing };
  });
}

/** A scale of an axis: log10 on the log x axes (every point on one has x > 0: `project` drops the rest),
 * else linear; d3-scale's, so `invert` and `ticks` come with it. */
export function axisScale(domain, range, log = false) {
  return (log ? scaleLog() : scaleLinear()).domain(domain).range(range);
}

/**
 * Ticks of an axis: `major` (labelled) and `minor` (grid lines only), about `count` labels.
 * Linear: d3's round 1-2-5 steps. Log: every 1..9 multiple of each decade (d3's log ticks; only
 * decades over many decades), the ones d3's log tick format keeps a label for being major.
 */
export function axisTicks(scale, log, count) {
  if (!log) return { major: scale.ticks(count), minor: [] };
  const all = scale.ticks(count);
  const keep = scale.tickFormat(count, () => "label");
  return { major: all.filter((v) => keep(v) !== ""), minor: all.filter((v) => keep(v) === "") };
}

/** About how many labelled ticks an x axis `width` px wide gets (log axes: fewer, so that over
 * three decades or more only the decades are labelled). */
export function xTickCount(width, log) {
  return Math.max(3, Math.round(width / (log ? 150 : 90)));
}

const formatPercentTick = format("~%"), formatSI = format(".3~s"), formatSmall = format(".2~r");

/** Tick labels of an axis (d3-format): "0.1%"/"50%" (kind "percent"), "1k"/"2.5M" (kind "count"),
 * else numbers to the precision of the tick step ("0.2", never "0.30000000000000004"). */
export function tickFormat(scale, kind, count, log = false) {
  if (kind === "count") return (v) => (Math.abs(v) >= 1 ? formatSI(v) : formatSmall(v));
  if (log) return formatPercentTick;
  return scale.tickFormat(count, kind === "percent" ? "~%" : "~f");
}

/** The x domain of a set of sizes: padded (in log space on a log axis); a single value gets room. */
export function xDomain(values, log) {
  const v = values.filter((x) => isNum(x) && (!log || x > 0));
  if (!v.length) return log ? [0.001, 1] : [0, 1];
  let lo = Math.min(...v), hi = Math.max(...v);
  if (log) {
    let a = Math.log10(lo), b = Math.log10(hi);
    const pad = Math.max((b - a) * 0.05, 0.08);
    if (a === b) { a -= 0.5; b += 0.5; } else { a -= pad; b += pad; }
    return [10 ** a, 10 ** b];
  }
  if (lo === hi) return lo === 0 ? [0, 1] : [lo - Math.abs(lo) * 0.1, hi + Math.abs(hi) * 0.1];
  lo = Math.min(lo, 0); // a linear size axis starts at 0 (the empty circuit)
  const pad = (hi - lo) * 0.03;
  return [lo - pad, hi + pad];
}

/** The y domain: the values, 0, and the reference line (1 for the faithfulness measures), padded. */
export function yDomain(values, reference = 1) {
  const v = values.filter(isNum);
  if (isNum(reference)) v.push(reference);
  v.push(0);
  const lo = Math.min(...v), hi = Math.max(...v);
  const pad = (hi - lo || 1) * 0.06;
  return [lo - pad, hi + pad];
}

function trim(s) {
  return s.includes(".") && !s.includes("e") ? s.replace(/0+$/, "").replace(/\.$/, "") : s;
}

/** A value for the tooltip: integers as they are ("1,234"), other numbers to `digits` significant digits. */
export function formatValue(v, digits = 4) {
  if (v == null || (typeof v === "number" && Number.isNaN(v))) return "–";
  if (typeof v !== "number") return String(v);
  if (!Number.isFinite(v)) return v > 0 ? "∞" : "−∞";
  if (Number.isInteger(v) && Math.abs(v) < 1e15) return v.toLocaleString("en-US");
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-4 || a >= 1e6)) return v.toExponential(digits - 1);
  return trim(v.toPrecision(digits));
}

/** A fraction in (0, 1] as a percentage for the tooltip ("1.25%"). */
export function formatPercent(v) {
  if (!isNum(v)) return "–";
  const p = v * 100;
  return `${trim(p >= 10 ? p.toFixed(1) : p >= 1 ? p.toFixed(2) : p.toPrecision(2))}%`;
}

/** Index of the point of `pts` ([{px, py}]) nearest to (mx, my) within `maxDist` pixels, else -1. */
export function nearest(pts, mx, my, maxDist = Infinity) {
  let best = -1, bestD = maxDist * maxDist;
  pts.forEach((p, k) => {
    const d = (p.px - mx) ** 2 + (p.py - my) ** 2;
    if (d <= bestD && (best < 0 || d < bestD)) { best = k; bestD = d; }
  });
  return best;
}

/** Indices of the points of `pts` within `tol` pixels of pts[k] (points drawn on top of each
 * other), k first. */
export function nearGroup(pts, k, tol = 3) {
  const a = pts[k];
  if (!a) return [];
  const out = [k];
  pts.forEach((p, i) => {
    if (i !== k && (p.px - a.px) ** 2 + (p.py - a.py) ** 2 <= tol * tol) out.push(i);
  });
  return out;
}

// d3 has no downward triangle: its triangle drawn mirrored top to bottom
const symbolTriangleDown = { draw(ctx, size) {
  symbolTriangle.draw({ moveTo: (x, y) => ctx.moveTo(x, -y), lineTo: (x, y) => ctx.lineTo(x, -y),
    closePath: () => ctx.closePath() }, size);
} };
const SYMBOLS = { circle: symbolCircle, square: symbolSquare, triangle: symbolTriangle,
  "triangle-down": symbolTriangleDown, diamond: symbolDiamond, cross: symbolCross };

/** An SVG path (centred on 0, 0) of a marker (d3-shape symbol) as large as a circle of radius `r`. */
export function markerPath(shape, r = 4) {
  return symbol(SYMBOLS[shape] ?? symbolCircle, Math.PI * r * r).digits(2)();
}

const screenLine = line().x((p) => p.px).y((p) => p.py).digits(2);

/** The SVG path of a polyline through screen points [{px, py}] ("" for none; d3-shape's line). */
export function linePath(pts) {
  return pts.length ? screenLine(pts) : "";
}

/** Lay out legend items of `widths` (px) in rows of at most `maxWidth`: [{row, x}] per item. */
export function legendLayout(widths, maxWidth, gap = 18) {
  const out = [];
  let row = 0, x = 0;
  for (const w of widths) {
    if (x > 0 && x + w > maxWidth) { row++; x = 0; }
    out.push({ row, x });
    x += w + gap;
  }
  return out;
}

// --- ROC curves (the "ROC" view) -------------------------------------------------------------------

/** "PEAP · AUROC 0.987" (AUROC to 3 decimals; "–" when unknown). */
export function rocLabel(name, auroc) {
  return `${name} · AUROC ${isNum(auroc) ? auroc.toFixed(3) : "–"}`;
}

/** Trapezoid area under [[fpr, tpr], ...] sorted by fpr (what a thinned curve still encloses;
 * the trait's `auroc` is computed exactly in Python). */
export function rocArea(points) {
  let a = 0;
  for (let k = 1; k < (points?.length ?? 0); k++) {
    a += (points[k][0] - points[k - 1][0]) * (points[k][1] + points[k - 1][1]) / 2;
  }
  return a;
}

/**
 * The drawable ROC series: [{name, index, color, shape, auroc, label, points: [{x, y}]}] with
 * points clamped to [0, 1], non-numbers dropped, sorted by (fpr, tpr), and (0, 0) / (1, 1)
 * added when missing (every ROC curve runs between them).
 */
export function rocProject(roc) {
  return (roc ?? []).map((s, index) => {
    const clamp = (v) => Math.min(1, Math.max(0, v));
    const pts = (s.points ?? []).filter((p) => Array.isArray(p) && isNum(p[0]) && isNum(p[1]))
      .map(([x, y]) => ({ x: clamp(x), y: clamp(y) }))
      .sort((a, b) => a.x - b.x || a.y - b.y);
    if (!pts.length || pts[0].x !== 0 || pts[0].y !== 0) pts.unshift({ x: 0, y: 0 });
    const last = pts[pts.length - 1];
    if (last.x !== 1 || last.y !== 1) pts.push({ x: 1, y: 1 });
    const name = String(s.name ?? `method ${index + 1}`);
    const auroc = isNum(s.auroc) ? s.auroc : null;
    return { name, index, color: PALETTE[index % PALETTE.length], shape: SHAPES[index % SHAPES.length],
      auroc, label: rocLabel(name, auroc), points: pts, n_pos: s.n_pos ?? null, n_neg: s.n_neg ?? null };
  });
}

/** The point of a projected curve at false positive rate `x` (the highest tpr there; a step
 * curve's vertical run counts at its top), for the hover read-out. */
export function rocAt(points, x) {
  let best = null;
  for (const p of points) if (p.x <= x + 1e-12 && (!best || p.x > best.x || (p.x === best.x && p.y > best.y))) best = p;
  return best;
}
