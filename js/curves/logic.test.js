import { describe, it, expect } from "vitest";
import {
  MEASURES, X_AXES, PALETTE, project, linearScale, logScale, linearTicks, logTicks, xDomain,
  yDomain, formatTick, formatValue, formatPercent, nearest, nearGroup, markerPath, linePath, legendLayout,
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

describe("scales", () => {
  it("linear maps and inverts", () => {
    const s = linearScale([0, 10], [100, 200]);
    expect(s(5)).toBe(150);
    expect(s.invert(120)).toBeCloseTo(2);
    expect(linearScale([3, 3], [0, 10])(3)).toBe(5);
  });

  it("log maps decades evenly; non-positive values give NaN", () => {
    const s = logScale([0.001, 1], [0, 300]);
    expect(s(0.001)).toBeCloseTo(0);
    expect(s(0.01)).toBeCloseTo(100);
    expect(s(1)).toBeCloseTo(300);
    expect(s.invert(200)).toBeCloseTo(0.1);
    expect(s(0)).toBeNaN();
    expect(s(-1)).toBeNaN();
  });
});

describe("ticks", () => {
  it("linear ticks are round and inside the range", () => {
    expect(linearTicks(0, 1, 5)).toEqual([0, 0.2, 0.4, 0.6, 0.8, 1]);
    expect(linearTicks(-0.07, 1.06, 5)).toEqual([0, 0.2, 0.4, 0.6, 0.8, 1]);
    expect(linearTicks(0, 1000, 4)).toEqual([0, 500, 1000]);
    const t = linearTicks(0.1, 0.35, 5);
    expect(t).toEqual([0.1, 0.15, 0.2, 0.25, 0.3, 0.35]);
    expect(linearTicks(2, 2)).toEqual([2]);
    expect(linearTicks(NaN, 1)).toEqual([]);
  });

  it("linear ticks never print float noise", () => {
    for (const v of linearTicks(-0.3, 0.9, 6)) expect(String(v).length).toBeLessThan(6);
  });

  it("log ticks: decades over a wide range, minor ticks in between", () => {
    const { major, minor } = logTicks(0.0008, 1.2);
    expect(major).toEqual([0.001, 0.01, 0.1, 1]);
    expect(minor).toContain(0.002);
    expect(minor).toContain(0.5);
    expect(minor).not.toContain(0.1);
  });

  it("log ticks: 1-2-5 over a narrow range", () => {
    expect(logTicks(0.018, 1.1).major).toEqual([0.02, 0.05, 0.1, 0.2, 0.5, 1]);
    expect(logTicks(15, 90).major).toEqual([20, 50]);
  });

  it("log ticks: thinned labels over many decades; empty for non-positive ranges", () => {
    expect(logTicks(1, 1e12).major.length).toBeLessThanOrEqual(8);
    expect(logTicks(0, 1)).toEqual({ major: [], minor: [] });
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
  it("tick labels", () => {
    expect(formatTick(0.001, "percent")).toBe("0.1%");
    expect(formatTick(0.5, "percent")).toBe("50%");
    expect(formatTick(1, "percent")).toBe("100%");
    expect(formatTick(0, "percent")).toBe("0%");
    expect(formatTick(0.125, "percent")).toBe("12.5%");
    expect(formatTick(1000, "count")).toBe("1k");
    expect(formatTick(2500000, "count")).toBe("2.5M");
    expect(formatTick(20, "count")).toBe("20");
    expect(formatTick(0.2, "number")).toBe("0.2");
    expect(formatTick(0.30000000000000004, "number")).toBe("0.3");
    expect(formatTick(-1e-17, "number")).toBe("0");
    expect(formatTick(null)).toBe("");
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

  it("marker paths are closed and differ by shape", () => {
    const shapes = ["circle", "square", "triangle", "diamond", "triangle-down", "cross"];
    const paths = shapes.map((s) => markerPath(s, 4));
    expect(new Set(paths).size).toBe(shapes.length);
    for (const p of paths) expect(p.endsWith("Z")).toBe(true);
  });

  it("line paths and legend rows", () => {
    expect(linePath([{ px: 1, py: 2 }, { px: 3.456, py: 4 }])).toBe("M1.00,2.00L3.46,4.00");
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
