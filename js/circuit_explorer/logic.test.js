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
