import { describe, it, expect } from "vitest";
import {
  MEASURES, X_AXES, PALETTE, project, axisScale, axisTicks, xTickCount, tickFormat, xDomain,
  yDomain, formatValue, formatPercent, nearest, nearGroup, markerPath, linePath, legendLayout,
} from "./logic.js";
import { fileStem } from "./index.js";

const pt = (n_edges, fraction, faithfulness, extra = {}) => ({
  n_edges, fraction, n_real_edges: n_edges * 2, real_fraction: fraction / 2, faithfulness,
  soft: faithfulness * 1.1, hard: 1, kl: 0.01, ...extra,
});

describe("project", () => {
  const series = [
    { name: "PEAP", points: [pt(10, 0.1, 0.8), pt(0, 0, 0), pt(1, 0.01, 0.3)] },
    { name: "EAP", points: [pt(5, 0.05, null), pt(20, 0.2, 0.9, { n_real_edges: null })] },
  ];

  it("sorts by x and keeps the index of each point in its series", () => {
    const [peap] = project(series, "faithfulness", "fraction_linear");
    expect(peap.points.map((p) => p.x)).toEqual([0, 0.01, 0.1]);
    expect(peap.points.map((p) => p.i)).toEqual([1, 2, 0]);
    expect(peap.dropped).toBe(0);
  });

  it("drops sizes <= 0 on log axes and counts them", () => {
    const [peap] = project(series, "faithfulness", "fraction");
    expect(peap.points.map((p) => p.x)).toEqual([0.01, 0.1]);
    expect(peap.dropped).toBe(1);
  });

  it("skips null sizes and null (NaN) measures", () => {
    const [, eap] = project(series, "faithfulness", "n_real_edges");
    expect(eap.points).toEqual([]);
    expect(eap.dropped).toBe(1); // n_real_edges null
    expect(eap.missing).toBe(1); // faithfulness null
  });

  it("reads the chosen measure and gives colours and shapes", () => {
    const [peap, eap] = project(series, "soft", "n_edges");
    expect(peap.points.map((p) => p.y)).toEqual([0.3 * 1.1, 0.8 * 1.1]);
    expect(peap.color).toBe(PALETTE[0]);
    expect(eap.color).toBe(PALETTE[1]);
    expect(peap.shape).not.toBe(eap.shape);
  });

  it("falls back to the fraction axis for an unknown x and tolerates empty input", () => {
    expect(project(series, "faithfulness", "nope")[0].points.length).toBe(2);
    expect(project(null, "faithfulness", "fraction")).toEqual([]);
    expect(project([{ name: "x" }], "faithfulness", "fraction")[0].points).toEqual([]);
  });
});

describe("scales (d3-scale)", () => {
  it("linear maps and inverts; a constant domain maps to the middle", () => {
    const s = axisScale([0, 10], [100, 200]);
    expect(s(5)).toBe(150);
    expect(s.invert(120)).toBeCloseTo(2);
    expect(axisScale([3, 3], [0, 10])(3)).toBe(5);
  });

  it("log maps decades evenly", () => {
    const s = axisScale([0.001, 1], [0, 300], true);
    expect(s(0.001)).toBeCloseTo(0);
    expect(s(0.01)).toBeCloseTo(100);
    expect(s(1)).toBeCloseTo(300);
    expect(s.invert(200)).toBeCloseTo(0.1);
  });

  it("the log x domain of fractions 0.001..1 (padded) keeps every fraction inside the plot", () => {
    const d = xDomain([0.001, 0.01, 0.5, 1], true);
    const s = axisScale(d, [50, 650], true);
    expect(s.domain()).toEqual(d);
    for (const f of [0.001, 0.01, 0.5, 1]) {
      expect(s(f)).toBeGreaterThan(50);
      expect(s(f)).toBeLessThan(650);
    }
    // equal padding in log space at both ends
    expect(s(0.001) - 50).toBeCloseTo(650 - s(1), 6);
  });
});

describe("ticks (d3)", () => {
  it("tick counts follow the plot width, fewer on log axes", () => {
    expect(xTickCount(600, false)).toBe(7);
    expect(xTickCount(600, true)).toBe(4);
    expect(xTickCount(100, false)).toBe(3);
    expect(xTickCount(100, true)).toBe(3);   // a small chart still labels three decades
  });

  it("linear ticks are round and inside the range", () => {
    const t = (lo, hi, n) => axisTicks(axisScale([lo, hi], [0, 1]), false, n);
    expect(t(0, 1, 5)).toEqual({ major: [0, 0.2, 0.4, 0.6, 0.8, 1], minor: [] });
    expect(t(-0.07, 1.06, 5).major).toEqual([0, 0.2, 0.4, 0.6, 0.8, 1]);
    expect(t(0, 1000, 4).major).toEqual([0, 200, 400, 600, 800, 1000]);
    expect(t(0.1, 0.35, 5).major).toEqual([0.1, 0.15, 0.2, 0.25, 0.3, 0.35]);
    for (const v of t(-0.3, 0.9, 6).major) expect(String(v).length).toBeLessThan(6);
  });

  it("log ticks over fractions 0.001..1: decades labelled, the other multiples as grid", () => {
    const s = axisScale(xDomain([0.001, 1], true), [0, 600], true);
    const { major, minor } = axisTicks(s, true, xTickCount(600, true));
    expect(major).toEqual([0.001, 0.01, 0.1, 1]);
    expect(minor).toContain(0.002);
    expect(minor).toContain(0.5);
    expect(minor).not.toContain(0.1);
    // 2..9 times each decade inside the padded domain (0.000708..1.41)
    expect(minor.slice(0, 3)).toEqual([0.0008, 0.0009, 0.002]);
    expect(minor.length).toBe(2 + 3 * 8);
  });

  it("a narrow log axis (the explorer's small chart) still labels every decade", () => {
    const s = axisScale(xDomain([0.002, 1], true), [0, 220], true);
    expect(axisTicks(s, true, xTickCount(220, true)).major).toEqual([0.01, 0.1, 1]);
  });

  it("log ticks over a narrow range label more than decades", () => {
    const { major } = axisTicks(axisScale([0.018, 1.1], [0, 600], true), true, xTickCount(600, true));
    expect(major).toEqual([0.02, 0.1, 0.2, 1]);
  });

  it("log ticks over many decades: decades only, thinned to about `count`", () => {
    const { major, minor } = axisTicks(axisScale([1, 1e12], [0, 600], true), true, xTickCount(600, true));
    expect(major).toEqual([1, 1e2, 1e4, 1e6, 1e8, 1e10, 1e12]);
    expect(minor).toEqual([]);
  });
});

describe("domains", () => {
  it("log x domain is padded and positive; zero sizes ignored", () => {
    const [a, b] = xDomain([0, 0.001, 1], true);
    expect(a).toBeGreaterThan(0);
    expect(a).toBeLessThan(0.001);
    expect(b).toBeGreaterThan(1);
    const [c, d] = xDomain([5], true);
    expect(c).toBeLessThan(5);
    expect(d).toBeGreaterThan(5);
    expect(xDomain([], true)).toEqual([0.001, 1]);
  });

  it("linear x domain starts at 0", () => {
    const [a, b] = xDomain([0.1, 0.5], false);
    expect(a).toBeLessThanOrEqual(0);
    expect(b).toBeGreaterThan(0.5);
    expect(xDomain([0], false)).toEqual([0, 1]);
  });

  it("y domain holds 0, the reference and the values", () => {
    const [a, b] = yDomain([0.4, 0.6], 1);
    expect(a).toBeLessThan(0);
    expect(b).toBeGreaterThan(1);
    const [c, d] = yDomain([-0.5, 1.7, null, NaN], 1);
    expect(c).toBeLessThan(-0.5);
    expect(d).toBeGreaterThan(1.7);
    const [e, f] = yDomain([0.001, 0.002], null); // KL: no reference line
    expect(f).toBeLessThan(0.01);
    expect(e).toBeLessThan(0);
  });
});

describe("formats", () => {
  it("tick labels (d3-format)", () => {
    const logPercent = tickFormat(axisScale([0.001, 1], [0, 1], true), "percent", 6, true);
    expect([0.001, 0.01, 0.1, 0.5, 1, 0.125].map(logPercent)).toEqual(["0.1%", "1%", "10%", "50%", "100%", "12.5%"]);
    const linPercent = tickFormat(axisScale([0, 1], [0, 1]), "percent", 5);
    expect([0, 0.2, 0.6000000000000001, 1].map(linPercent)).toEqual(["0%", "20%", "60%", "100%"]);
    const count = tickFormat(axisScale([1, 1e7], [0, 1], true), "count", 6, true);
    expect([1000, 2500000, 20, 1, 1234, 0.5].map(count)).toEqual(["1k", "2.5M", "20", "1", "1.23k", "0.5"]);
    const number = tickFormat(axisScale([-0.07, 1.06], [0, 1]), "number", 5);
    expect([0, 0.2, 0.30000000000000004, 1].map(number)).toEqual(["0", "0.2", "0.3", "1"]);
    expect(number(-0.2)).toBe("−0.2");   // d3-format's minus sign
  });

  it("tooltip values", () => {
    expect(formatValue(1234)).toBe("1,234");
    expect(formatValue(0.964293)).toBe("0.9643");
    expect(formatValue(1)).toBe("1");
    expect(formatValue(null)).toBe("–");
    expect(formatValue(NaN)).toBe("–");
    expect(formatValue(1.2571e-5)).toBe("1.257e-5");
    expect(formatValue(460.2)).toBe("460.2");
    expect(formatPercent(0.2)).toBe("20%");
    expect(formatPercent(0.117)).toBe("11.7%");
    expect(formatPercent(0.0125)).toBe("1.25%");
    expect(formatPercent(0.001)).toBe("0.1%");
    expect(formatPercent(null)).toBe("–");
  });

  it("export file names", () => {
    expect(fileStem("IOI: PEAP vs EAP", "soft")).toBe("ioi_peap_vs_eap_soft");
    expect(fileStem("", "faithfulness")).toBe("faithfulness_curves_faithfulness");
  });
});

describe("hover and drawing helpers", () => {
  const pts = [{ px: 0, py: 0 }, { px: 10, py: 0 }, { px: 100, py: 100 }];

  it("nearest point within a radius", () => {
    expect(nearest(pts, 8, 1)).toBe(1);
    expect(nearest(pts, 1, 0)).toBe(0);
    expect(nearest(pts, 60, 60, 20)).toBe(-1);
    expect(nearest(pts, 95, 95, 20)).toBe(2);
    expect(nearest([], 0, 0)).toBe(-1);
  });

  it("points drawn on top of each other are grouped, the hovered one first", () => {
    const stacked = [{ px: 5, py: 5 }, { px: 50, py: 50 }, { px: 6, py: 5 }, { px: 5, py: 5 }];
    expect(nearGroup(stacked, 3, 3)).toEqual([3, 0, 2]);
    expect(nearGroup(stacked, 1, 3)).toEqual([1]);
    expect(nearGroup(stacked, 9)).toEqual([]);
  });

  it("marker paths (d3 symbols) are closed, differ by shape, and the triangles point up and down", () => {
    const shapes = ["circle", "square", "triangle", "diamond", "triangle-down", "cross"];
    const paths = shapes.map((s) => markerPath(s, 4));
    expect(new Set(paths).size).toBe(shapes.length);
    for (const p of paths.slice(1)) expect(p.endsWith("Z")).toBe(true);
    expect(paths[0]).toMatch(/^M4,0A4,4/);   // the circle: two arcs
    const firstY = (p) => Number(/^M[-\d.]+,([-\d.]+)/.exec(p)[1]);
    expect(firstY(markerPath("triangle", 4))).toBeLessThan(0);        // apex above the centre
    expect(firstY(markerPath("triangle-down", 4))).toBeGreaterThan(0);
    expect(markerPath("nope", 4)).toBe(markerPath("circle", 4));
  });

  it("line paths and legend rows", () => {
    expect(linePath([{ px: 1, py: 2 }, { px: 3.456, py: 4 }])).toBe("M1,2L3.46,4");
    expect(linePath([])).toBe("");
    expect(legendLayout([50, 50, 50], 120, 10)).toEqual([{ row: 0, x: 0 }, { row: 0, x: 60 }, { row: 1, x: 0 }]);
  });

  it("every measure and axis has a label", () => {
    for (const m of Object.values(MEASURES)) expect(m.label && m.short).toBeTruthy();
    for (const a of Object.values(X_AXES)) expect(a.label && a.key).toBeTruthy();
    expect(X_AXES.fraction_linear.log).toBe(false);
    expect(X_AXES.n_real_edges.log).toBe(true);
  });
});

import { rocLabel, rocArea, rocProject, rocAt } from "./logic.js";
import { views } from "./index.js";

describe("ROC view", () => {
  it("labels carry the AUROC to three decimals", () => {
    expect(rocLabel("PEAP", 0.98765)).toBe("PEAP · AUROC 0.988");
    expect(rocLabel("EAP", null)).toBe("EAP · AUROC –");
  });

  it("areas: perfect 1, reversed 0, diagonal 1/2", () => {
    expect(rocArea([[0, 0], [0, 1], [1, 1]])).toBe(1);
    expect(rocArea([[0, 0], [1, 0], [1, 1]])).toBe(0);
    expect(rocArea([[0, 0], [1, 1]])).toBe(0.5);
    expect(rocArea([])).toBe(0);
  });

  it("projects: sorted, clamped, ends added, junk dropped, one colour per method", () => {
    const [a, b] = rocProject([
      { name: "A", auroc: 0.875, points: [[0.5, 1], [0, 0.5], [null, 1], [1.2, 1]] },
      { name: "B", points: [] },
    ]);
    expect(a.points).toEqual([{ x: 0, y: 0 }, { x: 0, y: 0.5 }, { x: 0.5, y: 1 }, { x: 1, y: 1 }]);
    expect(rocArea(a.points.map((p) => [p.x, p.y]))).toBe(0.875);
    expect(a.label).toBe("A · AUROC 0.875");
    expect(b.points).toEqual([{ x: 0, y: 0 }, { x: 1, y: 1 }]);
    expect(b.auroc).toBe(null);
    expect(a.color).not.toBe(b.color);
  });

  it("reads the curve at a false positive rate (top of a vertical run)", () => {
    const pts = [{ x: 0, y: 0 }, { x: 0, y: 0.5 }, { x: 0.5, y: 1 }, { x: 1, y: 1 }];
    expect(rocAt(pts, 0)).toEqual({ x: 0, y: 0.5 });
    expect(rocAt(pts, 0.7)).toEqual({ x: 0.5, y: 1 });
  });

  it("offers the views that have data and shows the chosen one", () => {
    const s = [{ name: "PEAP", points: [] }], r = [{ name: "PEAP", auroc: 1, points: [] }];
    expect(views(s, [], "roc")).toEqual({ offered: ["faithfulness"], shown: "faithfulness" });
    expect(views([], r, "faithfulness")).toEqual({ offered: ["roc"], shown: "roc" });
    expect(views(s, r, "roc")).toEqual({ offered: ["faithfulness", "roc"], shown: "roc" });
    expect(views([], [], "roc")).toEqual({ offered: ["faithfulness"], shown: "faithfulness" });
  });
});
