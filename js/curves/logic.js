// Pure helpers of the faithfulness chart: measures and x axes, scales, ticks, number formats,
// marker shapes and nearest-point search. No DOM here (unit-tested with vitest in node).
//
// Log axes and zero sizes: a log axis cannot show a size <= 0 (the empty circuit, or a
// curve whose real per-example edges are unknown). Such points are DROPPED from that axis
// (never clamped, which would invent a position) and counted in `dropped`, so the chart can
// say how many are hidden; the linear fraction axis shows them.

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

/** A linear scale domain -> range (a constant domain maps to the range's middle). */
export function linearScale([d0, d1], [r0, r1]) {
  const k = d1 === d0 ? 0 : (r1 - r0) / (d1 - d0);
  const f = (v) => (k === 0 ? (r0 + r1) / 2 : r0 + (v - d0) * k);
  f.invert = (p) => (k === 0 ? d0 : d0 + (p - r0) / k);
  return f;
}

/** A log10 scale domain -> range; the domain must be positive. Values <= 0 map to NaN. */
export function logScale([d0, d1], range) {
  const lin = linearScale([Math.log10(d0), Math.log10(d1)], range);
  const f = (v) => (v > 0 ? lin(Math.log10(v)) : NaN);
  f.invert = (p) => 10 ** lin.invert(p);
  return f;
}

/** About `count` evenly spaced round ticks (steps of 1, 2 or 5 times a power of ten) in [lo, hi]. */
export function linearTicks(lo, hi, count = 5) {
  if (!isNum(lo) || !isNum(hi)) return [];
  if (hi < lo) [lo, hi] = [hi, lo];
  if (hi === lo) return [lo];
  const raw = (hi - lo) / Math.max(count, 1);
  const p = 10 ** Math.floor(Math.log10(raw));
  const ticks = (step) => {
    const first = Math.ceil(lo / step - 1e-9), last = Math.floor(hi / step + 1e-9);
    const out = [];
    for (let k = first; k <= last; k++) out.push(roundTo(k * step, step));
    return out;
  };
  // the 1-2-5 step whose tick count is nearest `count` (the coarser one on a tie)
  let best = null;
  for (const m of [10, 5, 2, 1]) {
    const t = ticks(m * p);
    if (!best || Math.abs(t.length - count) < Math.abs(best.length - count)) best = t;
  }
  return best;
}

function roundTo(v, step) {
  const digits = Math.max(0, -Math.floor(Math.log10(step)) + 1);
  return Number(v.toFixed(Math.min(digits, 15))) + 0; // + 0 turns -0 into 0
}

/**
 * Ticks of a log axis on [lo, hi] (positive): `major` (labelled) and `minor` (grid only).
 * Decades when the range holds at least three; else 1-2-5 steps; else every integer multiple.
 */
export function logTicks(lo, hi) {
  if (!(lo > 0) || !(hi > 0)) return { major: [], minor: [] };
  if (hi < lo) [lo, hi] = [hi, lo];
  const e0 = Math.floor(Math.log10(lo)), e1 = Math.ceil(Math.log10(hi));
  const inside = (v) => v >= lo * (1 - 1e-9) && v <= hi * (1 + 1e-9);
  const at = (mults) => {
    const out = [];
    for (let e = e0; e <= e1; e++) {
      for (const m of mults) {
        const v = Number((m * 10 ** e).toPrecision(12));
        if (inside(v)) out.push(v);
      }
    }
    return out;
  };
  const all = at([1, 2, 3, 4, 5, 6, 7, 8, 9]);
  // decades when at least three fit, else 1-2-5 steps, else every integer multiple
  for (const [mults, need] of [[[1], 3], [[1, 2, 5], 2], [[1, 2, 3, 4, 5, 6, 7, 8, 9], 1]]) {
    const major = at(mults);
    if (major.length >= need) {
      const span = e1 - e0;
      // many decades: label every decade, but thin the labels past about 8 of them
      const thin = mults.length === 1 && major.length > 8 ? Math.ceil(major.length / 8) : 1;
      const labelled = major.filter((_, k) => k % thin === 0);
      const minor = span <= 12 ? all.filter((v) => !labelled.includes(v)) : [];
      return { major: labelled, minor };
    }
  }
  return { major: all.length ? all : [lo], minor: [] };
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

const SI = [[1e9, "G"], [1e6, "M"], [1e3, "k"]];

/** A tick label: "0.1%"/"50%" for fractions (kind "percent"), "1k" for counts, else short. */
export function formatTick(v, kind = "number") {
  if (!isNum(v)) return "";
  if (kind === "percent") {
    const p = v * 100;
    return `${trim(Math.abs(p) >= 1 || p === 0 ? p.toFixed(p % 1 === 0 ? 0 : 1) : p.toPrecision(1))}%`;
  }
  if (kind === "count") {
    for (const [d, s] of SI) if (Math.abs(v) >= d) return `${trim((v / d).toPrecision(3))}${s}`;
    return trim(v >= 1 || v === 0 ? v.toFixed(v % 1 === 0 ? 0 : 1) : v.toPrecision(2));
  }
  return trim(Math.abs(v) < 1e-12 ? "0" : Number(v.toPrecision(6)).toString());
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

/** An SVG path (centred on 0, 0) of a marker of radius about `r`. */
export function markerPath(shape, r = 4) {
  const f = (v) => Number(v.toFixed(2));
  switch (shape) {
    case "square": { const s = f(r * 0.88); return `M${-s},${-s}H${s}V${s}H${-s}Z`; }
    case "triangle": { const s = r * 1.2;
      return `M0,${f(-s)}L${f(s * 0.866)},${f(s * 0.5)}L${f(-s * 0.866)},${f(s * 0.5)}Z`; }
    case "triangle-down": { const s = r * 1.2;
      return `M0,${f(s)}L${f(s * 0.866)},${f(-s * 0.5)}L${f(-s * 0.866)},${f(-s * 0.5)}Z`; }
    case "diamond": { const s = f(r * 1.25); return `M0,${-s}L${s},0L0,${s}L${-s},0Z`; }
    case "cross": { const a = f(r * 1.1), b = f(r * 0.38);
      return `M${-b},${-a}H${b}V${-b}H${a}V${b}H${b}V${a}H${-b}V${b}H${-a}V${-b}H${-b}Z`; }
    default: return `M${-r},0A${r},${r} 0 1,0 ${r},0A${r},${r} 0 1,0 ${-r},0Z`;
  }
}

/** "M x0,y0 L x1,y1 ..." through screen points [{px, py}] ("" for none). */
export function linePath(pts) {
  return pts.map((p, k) => `${k ? "L" : "M"}${p.px.toFixed(2)},${p.py.toFixed(2)}`).join("");
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
