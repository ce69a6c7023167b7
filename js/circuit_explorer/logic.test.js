import { describe, expect, it } from "vitest";
import {
  NODE, prepare, circuitRows, chosenUnits, onPaths, toggleUnit, toggleNodes, setEdges,
  setThreshold, defaultSelection, circuitSize, indexNames, nodeGroup, searchNodes, circuitJSON,
  missing, appendChunk, minThreshold, holdsAll, localUnit,
} from "./logic.js";
import { layoutNodes, edgeCurve, sampleCurve, hitEdge, strokeWidth } from "./layout.js";

// A hand-made graph, one span: input(0) -> head A(1) -> logits(3); input -> mlp(2) -> logits;
// a dangling edge head A -> mlp-less node 4 (a head B with no way to the logits).
//   rows: 0 input->A, 1 A->logits, 2 input->mlp, 3 mlp->logits, 4 input->B
function tiny() {
  const d = {
    info: { layers: 1, heads: 2, spans: ["END"], n_units: 5, root: 3, crossing: false,
      merge_qkv: true, graph: { n_layers: 1 }, settings: {},
      forward_names: ["input", "a0.h0", "a0.h1", "m0"], backward_names: ["a0.h0<q>", "m0", "logits"] },
    nodeNames: ["input@END", "a0.h0@END", "m0@END", "logits@END", "a0.h1@END"],
    nodeType: Int8Array.from([NODE.INPUT, NODE.HEAD, NODE.MLP, NODE.LOGITS, NODE.HEAD]),
    nodeLayer: Int16Array.from([-1, 0, 0, 1, 0]),
    nodeHead: Int16Array.from([0, 0, 2, 0, 1]),
    nodeSpan: Int16Array.from([0, 0, 0, 0, 0]),
    parent: Int32Array.from([0, 1, 0, 2, 0]),
    child: Int32Array.from([1, 3, 2, 3, 4]),
    unit: Int32Array.from([0, 1, 2, 3, 4]),
    kind: Int8Array.from([0, 0, 0, 0, 0]),
    score: Float64Array.from([0.5, -2, 0.1, 0.3, 1]),
    src: Int16Array.from([0, 1, 0, 3, 0]),
    dst: Int16Array.from([0, 2, 1, 2, 0]),
    srcSpan: Int16Array.from([0, 0, 0, 0, 0]),
    dstSpan: Int16Array.from([0, 0, 0, 0, 0]),
    order: Int32Array.from([1, 0, 3, 4, 2]),
  };
  return indexNames(prepare(d));
}

const rowsOf = (mask) => [...mask].flatMap((v, i) => (v ? [i] : []));

// The same graph on a page holding a part: units {0, 1, 4} = the first 2 of the greedy order
// (1, 0) and the 2 largest |scores| (1, 4); the largest key outside is unit 3's 0.3.
function partial() {
  const t = tiny(), keep = [0, 1, 4];
  const pick = (a) => a.constructor.from(keep.map((r) => a[r]));
  const d = { info: { ...t.info, n_order: 5 }, shipped: { order: 2, top: 2, key_floor: 0.3, units: 3 },
    nodeNames: t.nodeNames, nodeType: t.nodeType, nodeLayer: t.nodeLayer, nodeHead: t.nodeHead,
    nodeSpan: t.nodeSpan, rowId: Int32Array.from(keep), unitIds: Int32Array.from(keep),
    order: Int32Array.from([1, 0]) };
  for (const k of ["parent", "child", "unit", "kind", "score", "src", "dst", "srcSpan", "dstSpan"]) d[k] = pick(t[k]);
  return indexNames(prepare(d));
}
const drawnRows = (d, sel) => rowsOf(circuitRows(d, sel)).map((r) => d.rowId[r]);
const chunk = (rows, order, extra = {}) => {
  const t = tiny(), arrays = { unit_ids: Int32Array.from(new Set(rows.map((r) => t.unit[r]))),
    order: Int32Array.from(order), row_id: Int32Array.from(rows) };
  const names = { parent: "row_parent", child: "row_child", unit: "row_unit", kind: "row_kind",
    score: "row_score", src: "row_src", dst: "row_dst", srcSpan: "row_src_span", dstSpan: "row_dst_span" };
  for (const [k, name] of Object.entries(names)) arrays[name] = t[k].constructor.from(rows.map((r) => t[k][r]));
  return [{ type: "chunk", from: { order: 2, top: 2 }, to: { order: 2 + order.length, top: 2 },
    key_floor: null, limited: false, ...extra }, arrays];
};

describe("selection -> rows", () => {
  it("takes the first n units of the greedy order, then prunes dangling rows", () => {
    const d = tiny();
    expect(rowsOf(circuitRows(d, defaultSelection(1)))).toEqual([]);       // A->logits alone: no input
    expect(rowsOf(circuitRows(d, defaultSelection(2)))).toEqual([0, 1]);
    expect(rowsOf(circuitRows(d, defaultSelection(4)))).toEqual([0, 1]);   // input->B dangles
    expect(rowsOf(circuitRows(d, defaultSelection(5)))).toEqual([0, 1, 2, 3]);
    expect(rowsOf(circuitRows(d, { ...defaultSelection(4), prune: false }))).toEqual([0, 1, 3, 4]);
  });

  it("thresholds on |score| per unit", () => {
    const d = tiny();
    expect(rowsOf(chosenUnits(d, setThreshold(defaultSelection(), 0.5)))).toEqual([0, 1, 4]);
    expect(rowsOf(circuitRows(d, setThreshold(defaultSelection(), 0.3)))).toEqual([0, 1]);
    expect(rowsOf(circuitRows(d, setThreshold(defaultSelection(), 0)))).toEqual([0, 1, 2, 3]);
  });

  it("applies added, removed and removed nodes before pruning", () => {
    const d = tiny();
    let s = toggleUnit(defaultSelection(2), 0, true);                       // prune input->A
    expect(s.removed).toEqual([0]);
    expect(rowsOf(circuitRows(d, s))).toEqual([]);                         // A->logits now dangles
    s = toggleUnit(s, 0, false);                                           // restore
    expect(s.removed).toEqual([]);
    expect(s.added).toEqual([0]);
    s = toggleUnit(toggleUnit(s, 2, false), 3, false);                     // add the mlp path
    expect(rowsOf(circuitRows(d, s))).toEqual([0, 1, 2, 3]);
    s = toggleNodes(s, [1]);                                               // remove head A
    expect(rowsOf(circuitRows(d, s))).toEqual([2, 3]);
    expect(rowsOf(circuitRows(d, toggleNodes(s, [1])))).toEqual([0, 1, 2, 3]);
    expect(circuitSize(d, circuitRows(d, s))).toEqual({ edges: 2, rows: 2 });
  });

  it("onPaths keeps exactly the rows between an input and the root", () => {
    const d = tiny();
    expect(rowsOf(onPaths(d, Uint8Array.from([1, 1, 1, 0, 1])))).toEqual([0, 1]);
    expect(rowsOf(onPaths(d, Uint8Array.from([0, 1, 1, 1, 0])))).toEqual([2, 3]);
  });

  it("edits are pure and sizes clamp", () => {
    const s0 = defaultSelection(3);
    const s1 = setEdges(s0, -4);
    expect(s1.n_edges).toBe(0);
    expect(s0.n_edges).toBe(3);
    expect(setEdges(s0, 2.6).n_edges).toBe(3);
  });
});

describe("a page holding part of the graph", () => {
  it("says what a selection lacks, and draws what it holds like the whole graph does", () => {
    const d = partial(), all = tiny();
    expect(d.nUnits).toBe(3);
    expect(localUnit(d, 4)).toBe(2);
    expect(localUnit(d, 3)).toBe(-1);
    expect(holdsAll(d)).toBe(false);
    expect(missing(d, defaultSelection(2))).toBe(null);
    expect(missing(d, defaultSelection(3))).toEqual({ order: 3 });
    expect(missing(d, defaultSelection(9))).toEqual({ order: 5 });           // the whole order
    expect(missing(d, setThreshold(defaultSelection(), 0.31))).toBe(null);
    expect(missing(d, setThreshold(defaultSelection(), 0.3))).toEqual({ threshold: 0.3 });
    expect(missing(d, { ...defaultSelection(1), added: [3, 4], removed: [2] })).toEqual({ units: [2, 3] });
    for (const sel of [defaultSelection(2), setThreshold(defaultSelection(), 0.4),
      { ...defaultSelection(2), removed: [0] }, { ...defaultSelection(1), added: [0, 4] }]) {
      expect(drawnRows(d, sel)).toEqual(rowsOf(circuitRows(all, sel)));
    }
    expect(minThreshold(d)).toBe(0.5);
  });

  it("appends a chunk once, skipping units it holds, and ignores answers for another state", () => {
    const d = partial();
    const [msg, arrays] = chunk([2, 3, 4], [3, 4, 2]);                      // unit 4 is held
    expect(appendChunk(d, { ...msg, from: { order: 1, top: 2 } }, arrays)).toBe(false);
    expect(d.nRows).toBe(3);
    expect(appendChunk(d, msg, arrays)).toBe(true);
    expect(d.nRows).toBe(5);
    expect([...d.rowId]).toEqual([0, 1, 4, 2, 3]);
    expect(d.order.length).toBe(5);
    expect(holdsAll(d)).toBe(true);
    expect(appendChunk(d, msg, arrays)).toBe(false);                        // already applied
    const all = tiny();
    for (const n of [0, 2, 3, 5]) {
      expect(missing(d, defaultSelection(n))).toBe(null);
      expect(drawnRows(d, defaultSelection(n)).sort()).toEqual(rowsOf(circuitRows(all, defaultSelection(n))));
    }
    expect(drawnRows(d, setThreshold(defaultSelection(), 0)).sort()).toEqual([0, 1, 2, 3]);
  });

  it("marks a page the kernel stopped filling", () => {
    const d = partial();
    const [msg, arrays] = chunk([], [], { limited: true, key_floor: 0.3 });
    expect(appendChunk(d, msg, arrays)).toBe(true);
    expect(d.limited).toBe(true);
    expect(missing(d, defaultSelection(3))).toEqual({ order: 3 });
  });
});

describe("nodes, search, export", () => {
  it("a head node takes its q/k/v slots along; search skips slots", () => {
    const d = tiny();
    d.nodeNames = [...d.nodeNames, "a0.h0<q>@END"];
    d.nodeType = Int8Array.from([...d.nodeType, NODE.Q]);
    d.nNodes += 1;
    indexNames(d);
    expect(nodeGroup(d, 1)).toEqual([1, 5]);
    expect(nodeGroup(d, 2)).toEqual([2]);
    expect(searchNodes(d, "A0.H0")).toEqual([1]);
    expect(searchNodes(d, " ")).toEqual([]);
  });

  it("exports pw.Circuit JSON rows with names and scores", () => {
    const d = tiny();
    const j = circuitJSON(d, circuitRows(d, defaultSelection(2)));
    expect(j.format).toBe("peap_widget.circuit");
    expect(j.edges).toEqual([["resid", "input", "a0.h0<q>", "END", "END", 0.5],
      ["resid", "a0.h0", "logits", "END", "END", -2]]);
  });
});

describe("layout", () => {
  it("puts input at the bottom, logits on top, spans left to right", () => {
    const d = tiny();
    d.info.spans = ["A", "B"];
    d.nodeSpan = Int16Array.from([0, 0, 0, 0, 1]);
    const pos = layoutNodes(d);
    expect(pos.y[0]).toBeGreaterThan(pos.y[1]);   // input below the head
    expect(pos.y[1]).toBeGreaterThan(pos.y[2]);   // layer 0 attention below its MLP
    expect(pos.y[2]).toBeGreaterThan(pos.y[3]);   // logits on top
    expect(pos.x[4]).toBeGreaterThan(pos.columns[0].x1);
    expect(pos.columns.map((c) => c.name)).toEqual(["A", "B"]);
  });

  it("hit-tests the nearest drawn edge within the radius", () => {
    const d = tiny();
    const pos = layoutNodes(d);
    const drawn = [0, 2];
    const samples = drawn.map((r) => sampleCurve(edgeCurve(d, pos, r)));
    const mid = sampleCurve(edgeCurve(d, pos, 2), 2);               // its midpoint
    expect(hitEdge(samples, drawn, mid[2], mid[3], 4)).toBe(2);
    expect(hitEdge(samples, drawn, mid[2] + 400, mid[3], 4)).toBe(-1);
  });

  it("widths grow with |score| and shrink when dense", () => {
    expect(strokeWidth(1, 1)).toBeGreaterThan(strokeWidth(0.1, 1));
    expect(strokeWidth(1, 1, 5000)).toBeLessThan(strokeWidth(1, 1, 10));
    expect(strokeWidth(1, 0)).toBe(1);
  });
});

// --- size control, evaluation requests, hover cards (issue 12) ---------------------------------
import { sliderToEdges, edgesToSlider, thresholdForSize, sizeNote, SLIDER_STEPS } from "./size.js";
import { evaluationClient, sameSelection } from "./evaluation.js";
import { placeTip } from "./tip.js";

describe("log-scaled size slider", () => {
  it("spans 0..max, is fine at small sizes and inverts", () => {
    const max = 250000;
    expect(sliderToEdges(0, max)).toBe(0);
    expect(sliderToEdges(SLIDER_STEPS, max)).toBe(max);
    // one step at the small end moves by at most a few edges, not 250 (linear)
    expect(sliderToEdges(300, max) - sliderToEdges(299, max)).toBeLessThan(5);
    for (const n of [1, 10, 60, 479, 4000, 100000]) {
      const back = sliderToEdges(edgesToSlider(n, max), max);
      expect(Math.abs(back - n) / n).toBeLessThan(0.015);
    }
  });
  it("threshold keeps the size: the key of the n-th largest unit", () => {
    const keys = Float64Array.from([0.5, 3, 1, 2, 0.1]);
    expect(thresholdForSize(keys, 2)).toBe(2);
    expect(thresholdForSize(keys, 5)).toBe(0.1);
    expect(thresholdForSize(keys, 9)).toBe(0.1);
    expect(thresholdForSize(keys, 3)).toBeGreaterThan(0);
  });
  it("explains a shown count that differs from the one asked", () => {
    const sel = { mode: "edges", n_edges: 479, added: [], removed: [], removed_nodes: [], prune: true };
    expect(sizeNote(sel, 479, true)).toBe("");
    const why = sizeNote(sel, 468, true);
    expect(why).toMatch(/479/);
    expect(why).toMatch(/468/);
    expect(why).toMatch(/q, k and v/);
    expect(why).toMatch(/path from an input to the logits/);
  });
});

describe("evaluation requests carry the selection", () => {
  const mk = () => {
    let cur = { mode: "edges", n_edges: 1 };
    const sent = [];
    const c = evaluationClient({ send: (m) => sent.push(m), current: () => cur });
    return { c, sent, set: (n) => { cur = { mode: "edges", n_edges: n }; } };
  };
  it("one in flight, the message holds the selection, the last state is asked for next", () => {
    const { c, sent, set } = mk();
    c.request();
    for (let n = 2; n <= 15; n++) { set(n); c.request(); }
    expect(sent.length).toBe(1);
    expect(sent[0].selection.n_edges).toBe(1);
    // the answer is for selection 1: pending (not current), and the page asks again for 15
    const ev = { version: sent[0].version, selection: sent[0].selection, faithfulness: 0.5 };
    expect(c.state(ev)).toBe("pending");
    expect(c.answer(ev)).toBe(true);
    expect(sent.length).toBe(2);
    expect(sent[1].selection.n_edges).toBe(15);
    const ev2 = { version: sent[1].version, selection: sent[1].selection, faithfulness: 0.7 };
    expect(c.answer(ev2)).toBe(false);
    expect(c.state(ev2)).toBe("current");
  });
  it("an answer for an older state (e.g. from Python) never leaves it pending forever", () => {
    const { c, sent, set } = mk();
    c.request();
    c.answer({ version: sent[0].version, selection: { mode: "edges", n_edges: 1 } });
    set(7);                        // the selection changed without an edit on this page
    expect(c.answer({ version: null, selection: { mode: "edges", n_edges: 1 } })).toBe(true);
    expect(sent.at(-1).selection.n_edges).toBe(7);
  });
  it("compares selections by content", () => {
    expect(sameSelection({ a: 1, mode: "edges", n_edges: 2 }, { n_edges: 2, mode: "edges", a: 1 })).toBe(true);
    expect(sameSelection({ mode: "threshold", n_edges: 2, threshold: 1 }, { mode: "threshold", n_edges: 9, threshold: 1 })).toBe(true);
    expect(sameSelection({ mode: "edges", n_edges: 2 }, { mode: "edges", n_edges: 3 })).toBe(false);
  });
});

describe("hover cards stay in the box", () => {
  it("flips near the right and bottom edges, clamps, never squeezes", () => {
    expect(placeTip(10, 10, 200, 100, 800, 600)).toEqual({ left: 24, top: 22 });
    const r = placeTip(790, 590, 200, 100, 800, 600);
    expect(r.left + 200).toBeLessThanOrEqual(800);
    expect(r.top + 100).toBeLessThanOrEqual(600);
    expect(r.left).toBe(790 - 14 - 200);
  });
});

import { hitTest } from "./hit.js";
import { firstNodeOf, neighbourOf, nodeEdgesOf } from "./keyboard.js";
import { emptyParts } from "./layout.js";

describe("hit test: a ghost under the pointer wins over a drawn edge", () => {
  it("restores the pruned edge, not its drawn neighbour", () => {
    const d = tiny(), pos = layoutNodes(d);
    const view = { k: 1, toDiagram: (x, y) => [x, y] };
    // rows 0 (input->A, pruned: a ghost) and 2 (input->mlp, drawn) start at the same input
    const curve = (r) => sampleCurve(edgeCurve(d, pos, r));
    const s = { active: Uint8Array.from([1, 0, 1, 1, 0]), gone: new Set(), drawn: Int32Array.from([2, 3]),
      ghosts: Int32Array.from([0]), samples: [curve(2), curve(3)], ghostSamples: [curve(0)] };
    // a point on the ghost with the drawn edge also within reach
    const g = curve(0), p = [g[4], g[5]];
    const near = hitEdge(s.samples, s.drawn, p[0], p[1], 40);
    expect(near).toBe(2);                                   // a drawn neighbour is in reach
    expect(hitTest(d, pos, view, s, p[0], p[1])).toEqual({ ghost: 0 });
    // on a node's glyph the node wins
    expect(hitTest(d, pos, view, s, pos.x[2], pos.y[2])).toEqual({ node: 2 });
  });
});

describe("keyboard navigation", () => {
  it("starts at the input, moves by arrows, lists a node's edges with ghosts", () => {
    const d = tiny(), pos = layoutNodes(d);
    const active = Uint8Array.from([1, 1, 1, 1, 0]);
    expect(firstNodeOf(d, pos, active, new Set())).toBe(0);
    const up = neighbourOf(d, pos, active, new Set(), 0, 0, -1);
    expect([1, 2]).toContain(up);
    expect(neighbourOf(d, pos, active, new Set(), 3, 0, -1)).toBe(-1);   // nothing above the logits
    expect(nodeEdgesOf(d, Int32Array.from([0, 1]), Int32Array.from([2]), 0)).toEqual([[0, false], [2, true]]);
  });
  it("collapses levels and spans with no circuit node", () => {
    const d = tiny();
    const parts = emptyParts(d, Uint8Array.from([1, 0, 0, 1, 0]));
    expect([...parts.levels]).toEqual([1, 2]);
    const pos = layoutNodes(d, undefined, parts);
    expect(pos.height).toBeLessThan(layoutNodes(d).height);
  });
});

import { qualityState, qualityRows, qualityProgress } from "./evaluation.js";

describe("quality box", () => {
  const a = { mode: "edges", n_edges: 10, added: [], removed: [], removed_nodes: [], prune: true, threshold: 0 };
  const b = { ...a, n_edges: 11 };
  const done = { selection: a, running: false, n_edges: 10,
    completeness: { worst_gap: 0.5, mean_gap: 0.25, n_samples: 10, n_nodes: 4, seed: 0 },
    minimality: { n_edges: 10, n_below: 2, threshold: 0.18, min_contribution: 0.0001, weakest: [] } };

  it("shows numbers only for the selection shown", () => {
    expect(qualityState(null, a)).toBe("none");
    expect(qualityState(done, a)).toBe("current");
    expect(qualityState(done, b)).toBe("pending");
    expect(qualityState({ ...done, selection: { ...a, threshold: 3 } }, { ...a, threshold: 7 })).toBe("current"); // threshold unused in edges mode
    expect(qualityState({ selection: a, running: true, done: 3, total: 20 }, a)).toBe("running");
    expect(qualityState({ selection: a, running: false, error: "boom" }, a)).toBe("error");
    expect(qualityState({ selection: a, running: true }, b)).toBe("pending");
  });

  it("formats the rows and the progress", () => {
    const rows = qualityRows(done);
    expect(rows.map((r) => r[3])).toEqual(["worst_gap", "mean_gap", "n_samples", "n_below", "min_contribution"]);
    expect(rows[0][1]).toBe("0.500");
    expect(rows[3][1]).toBe("2 of 10 (|Δ| < 0.180)");
    expect(rows[4][1]).toBe("1.00e-4");
    expect(qualityProgress({ done: 3, total: 20 })).toBe("computing… 3 of 20 circuits");
  });
});
