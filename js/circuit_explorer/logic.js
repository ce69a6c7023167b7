// The explorer's circuit logic, pure (no DOM): which edge-table rows a selection stands for.
// It mirrors `selection_rows` in peap_widget/widgets/circuit_explorer.py (a test runs both):
//   units = the first n of the greedy order (or every unit with max |score| >= threshold)
//           + added - removed;
//   rows  = rows of those units, minus rows touching a removed node,
//           then (prune) only rows on a path from an input node to the root logits.
import { typed } from "../lib/model.js";

export const NODE = { INPUT: 0, HEAD: 1, MLP: 2, Q: 3, K: 4, V: 5, LOGITS: 6 };
export const KINDS = ["resid", "q", "k", "v"];

/** Typed arrays of the explorer's model traits, read once per result. */
export function readData(model) {
  const info = model.get("info");
  const d = {
    info,
    nodeNames: model.get("node_names"),
    nodeType: typed(model.get("node_type"), Int8Array),
    nodeLayer: typed(model.get("node_layer"), Int16Array),
    nodeHead: typed(model.get("node_head"), Int16Array),
    nodeSpan: typed(model.get("node_span"), Int16Array),
    parent: typed(model.get("row_parent"), Int32Array),
    child: typed(model.get("row_child"), Int32Array),
    unit: typed(model.get("row_unit"), Int32Array),
    kind: typed(model.get("row_kind"), Int8Array),
    score: typed(model.get("row_score"), Float64Array),
    src: typed(model.get("row_src"), Int16Array),
    dst: typed(model.get("row_dst"), Int16Array),
    srcSpan: typed(model.get("row_src_span"), Int16Array),
    dstSpan: typed(model.get("row_dst_span"), Int16Array),
    order: typed(model.get("unit_order"), Int32Array),
  };
  return prepare(d);
}

/** Derived values: sizes and the per-unit key (max |score|). */
export function prepare(d) {
  d.nRows = d.parent.length;
  d.nNodes = d.nodeType.length;
  d.nUnits = d.info?.n_units ?? (d.unit.length ? Math.max(...d.unit) + 1 : 0);
  d.root = d.info?.root ?? d.nNodes - 1;
  d.unitKey = new Float64Array(d.nUnits).fill(-Infinity);
  for (let r = 0; r < d.nRows; r++) {
    const a = Math.abs(d.score[r]);
    if (a > d.unitKey[d.unit[r]]) d.unitKey[d.unit[r]] = a;
  }
  return d;
}

export function defaultSelection(n = 0) {
  return { mode: "edges", n_edges: n, threshold: 0, added: [], removed: [], removed_nodes: [],
    prune: true };
}

/** Units chosen by the size control and the manual edits. */
export function chosenUnits(d, sel) {
  const chosen = new Uint8Array(d.nUnits);
  if (sel.mode === "threshold") {
    const thr = Number(sel.threshold) || 0;
    for (let u = 0; u < d.nUnits; u++) if (d.unitKey[u] >= thr) chosen[u] = 1;
  } else {
    const n = Math.max(0, Math.min(d.order.length, sel.n_edges | 0));
    for (let i = 0; i < n; i++) chosen[d.order[i]] = 1;
  }
  for (const u of sel.added ?? []) chosen[u] = 1;
  for (const u of sel.removed ?? []) chosen[u] = 0;
  return chosen;
}

/** [rows] 1 where the row is in the circuit the selection stands for. */
export function circuitRows(d, sel) {
  const chosen = chosenUnits(d, sel);
  const rows = new Uint8Array(d.nRows);
  for (let r = 0; r < d.nRows; r++) rows[r] = chosen[d.unit[r]];
  const gone = sel.removed_nodes ?? [];
  if (gone.length) {
    const isGone = new Uint8Array(d.nNodes);
    for (const n of gone) isGone[n] = 1;
    for (let r = 0; r < d.nRows; r++) if (isGone[d.child[r]] || isGone[d.parent[r]]) rows[r] = 0;
  }
  return sel.prune === false ? rows : onPaths(d, rows);
}

/** Rows of `rows` on some path from an input node to the root (breadth-first both ways). */
export function onPaths(d, rows) {
  const active = [];
  for (let r = 0; r < d.nRows; r++) if (rows[r]) active.push(r);
  const byParent = groupRows(active, d.parent, d.nNodes);
  const byChild = groupRows(active, d.child, d.nNodes);
  const inputs = [];
  for (let n = 0; n < d.nNodes; n++) if (d.nodeType[n] === NODE.INPUT) inputs.push(n);
  const fromInput = reach(d.nNodes, inputs, byParent, d.child);
  const toRoot = reach(d.nNodes, [d.root], byChild, d.parent);
  const keep = new Uint8Array(d.nRows);
  for (const r of active) if (toRoot[d.child[r]] && fromInput[d.parent[r]]) keep[r] = 1;
  return keep;
}

/** Nodes reachable from `seeds`, stepping along the rows grouped by `index` to `across[row]`. */
function reach(nNodes, seeds, index, across) {
  const seen = new Uint8Array(nNodes);
  const queue = [...seeds];
  for (const n of seeds) seen[n] = 1;
  while (queue.length) {
    const n = queue.pop();
    for (let i = index.start[n]; i < index.start[n + 1]; i++) {
      const m = across[index.items[i]];
      if (!seen[m]) { seen[m] = 1; queue.push(m); }
    }
  }
  return seen;
}

/** Rows grouped by `nodeOf[row]` (CSR: start[k]..start[k+1] index into items). */
function groupRows(active, nodeOf, nNodes) {
  const start = new Int32Array(nNodes + 1);
  for (const r of active) start[nodeOf[r] + 1]++;
  for (let i = 0; i < nNodes; i++) start[i + 1] += start[i];
  const fill = start.slice(0, nNodes);
  const items = new Int32Array(active.length);
  for (const r of active) items[fill[nodeOf[r]]++] = r;
  return { start, items };
}

/** Counts shown in the toolbar: edges (units, as sizes count them) and rows. */
export function circuitSize(d, rows) {
  const seen = new Uint8Array(d.nUnits);
  let units = 0, n = 0;
  for (let r = 0; r < d.nRows; r++) {
    if (!rows[r]) continue;
    n++;
    if (!seen[d.unit[r]]) { seen[d.unit[r]] = 1; units++; }
  }
  return { edges: units, rows: n };
}

// --- edits (each returns a new selection) ---------------------------------------------------

/** Prune an edge in the circuit, or put back one that is not. */
export function toggleUnit(sel, unit, inCircuit) {
  const added = (sel.added ?? []).filter((u) => u !== unit);
  const removed = (sel.removed ?? []).filter((u) => u !== unit);
  if (inCircuit) removed.push(unit); else added.push(unit);
  return { ...sel, added: added.sort((a, b) => a - b), removed: removed.sort((a, b) => a - b) };
}

/** Remove a node group (a head at a span with its q/k/v inputs) or restore it. */
export function toggleNodes(sel, ids) {
  const current = new Set(sel.removed_nodes ?? []);
  const allGone = ids.every((n) => current.has(n));
  for (const n of ids) { if (allGone) current.delete(n); else current.add(n); }
  return { ...sel, removed_nodes: [...current].sort((a, b) => a - b) };
}

export function setEdges(sel, n) {
  return { ...sel, mode: "edges", n_edges: Math.max(0, Math.round(n)) };
}

export function setThreshold(sel, threshold) {
  return { ...sel, mode: "threshold", threshold: Number(threshold) };
}

/** The node ids pruned together when a drawn node is clicked: a head takes its q/k/v inputs
 *  at that span along (as `CircuitExplorer.remove_node` does). */
export function nodeGroup(d, node) {
  if (d.nodeType[node] !== NODE.HEAD) return [node];
  const ids = [node];
  const base = d.nodeNames[node].split("@");
  for (const c of ["q", "k", "v"]) {
    const name = `${base[0]}<${c}>@${base[1]}`;
    const id = d.nameIndex?.get(name);
    if (id !== undefined) ids.push(id);
  }
  return ids;
}

export function indexNames(d) {
  d.nameIndex = new Map(d.nodeNames.map((n, i) => [n, i]));
  return d;
}

/** Nodes whose name contains `query` (case-insensitive), drawn ones only. */
export function searchNodes(d, query) {
  const q = query.trim().toLowerCase();
  if (!q) return [];
  const out = [];
  for (let n = 0; n < d.nNodes; n++) {
    const t = d.nodeType[n];
    if (t === NODE.Q || t === NODE.K || t === NODE.V) continue;
    if (d.nodeNames[n].toLowerCase().includes(q)) out.push(n);
  }
  return out;
}

/** The circuit in `pw.Circuit`'s JSON format (loads with pw.Circuit.from_json). */
export function circuitJSON(d, rows, name = "explorer") {
  const info = d.info;
  const edges = [];
  for (let r = 0; r < d.nRows; r++) {
    if (!rows[r]) continue;
    const kind = KINDS[d.kind[r]];
    const src = info.forward_names[d.src[r]];
    const dst = d.dst[r] >= 0 ? info.backward_names[d.dst[r]] : src;
    edges.push([kind, src, dst, info.spans[d.srcSpan[r]], info.spans[d.dstSpan[r]], d.score[r]]);
  }
  return {
    format: "peap_widget.circuit", version: 1, name, graph: info.graph, spans: info.spans,
    crossing: info.crossing, merge_qkv: info.merge_qkv, settings: info.settings,
    span_lengths: null, edges,
  };
}
