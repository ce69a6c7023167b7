// The explorer's circuit logic, pure (no DOM): which edge-table rows a selection stands for.
// It mirrors `selection_rows` in peap_widget/widgets/circuit_explorer.py (a test runs both):
//   units = the first n of the greedy order (or every unit with max |score| >= threshold)
//           + added - removed;
//   rows  = rows of those units, minus rows touching a removed node,
//           then (prune) only rows on a path from an input node to the root logits.
import { typed } from "../lib/model.js";

export const NODE = { INPUT: 0, HEAD: 1, MLP: 2, Q: 3, K: 4, V: 5, LOGITS: 6 };
export const KINDS = ["resid", "q", "k", "v"];

// Which rows a page holds (peap_widget/widgets/circuit_explorer.py explains it): the rows of
// some units (edges as sizes count them), with `unit` holding the *global* unit id in the
// traits and messages and, once read, a local index into `unitIds`; `order` is the first `a`
// units of the greedy order; thresholds above `keyFloor` and sizes up to `order.length` are
// exact; anything past that is fetched from the kernel (`missing` says what) or, on a page
// without a kernel, is out of reach.

export const ROW_ARRAYS = [["rowId", "row_id", Int32Array], ["parent", "row_parent", Int32Array],
  ["child", "row_child", Int32Array], ["unit", "row_unit", Int32Array],
  ["kind", "row_kind", Int8Array], ["score", "row_score", Float64Array],
  ["src", "row_src", Int16Array], ["dst", "row_dst", Int16Array],
  ["srcSpan", "row_src_span", Int16Array], ["dstSpan", "row_dst_span", Int16Array]];

/** Typed arrays of the explorer's model traits, read once per result. */
export function readData(model) {
  const d = {
    info: model.get("info"),
    shipped: model.get("shipped"),
    nodeNames: model.get("node_names"),
    nodeType: typed(model.get("node_type"), Int8Array),
    nodeLayer: typed(model.get("node_layer"), Int16Array),
    nodeHead: typed(model.get("node_head"), Int16Array),
    nodeSpan: typed(model.get("node_span"), Int16Array),
    unitIds: typed(model.get("unit_ids"), Int32Array),
    order: typed(model.get("unit_order"), Int32Array),
  };
  // copies: chunks grow these arrays, and the trait values stay as they were
  for (const [key, trait, T] of ROW_ARRAYS) d[key] = T.from(typed(model.get(trait), T));
  return prepare(d);
}

/** Derived values: sizes, local unit indices, and the per-unit key (max |score|). Arrays left
 *  out (hand-made data) default to a page holding everything: row ids 0..n-1, every unit. */
export function prepare(d) {
  d.nRows = d.parent.length;
  d.nNodes = d.nodeType.length;
  d.root = d.info?.root ?? d.nNodes - 1;
  if (!d.rowId) d.rowId = Int32Array.from(d.parent, (_, i) => i);
  if (!d.unitIds) d.unitIds = Int32Array.from(new Set(d.unit)).sort();
  d.nUnitsTotal = d.info?.n_units ?? d.unitIds.length;
  d.nOrderTotal = d.info?.n_order ?? d.order.length;
  d.top = d.shipped?.top ?? d.nUnitsTotal;
  d.keyFloor = d.shipped?.key_floor ?? -Infinity;
  d.limited = false;
  d.unitIds = Int32Array.from(d.unitIds);
  d.nUnits = d.unitIds.length;
  indexUnits(d);
  d.unit = toLocal(d, d.unit);
  d.order = toLocal(d, d.order);
  d.unitKey = new Float64Array(d.nUnits).fill(-Infinity);
  updateKeys(d, 0);
  return d;
}

/** A sorted index of the held units' global ids (for `localUnit`). */
function indexUnits(d) {
  const n = d.unitIds.length;
  const packed = new Float64Array(n);   // global * 2^26 + local: one numeric sort
  for (let i = 0; i < n; i++) packed[i] = d.unitIds[i] * 67108864 + i;
  packed.sort();
  d.sortedIds = new Int32Array(n);
  d.sortedLocal = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    d.sortedIds[i] = Math.floor(packed[i] / 67108864);
    d.sortedLocal[i] = packed[i] - d.sortedIds[i] * 67108864;
  }
}

/** The local index of global unit `g`, or -1 when the page does not hold it. */
export function localUnit(d, g) {
  let lo = 0, hi = d.sortedIds.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (d.sortedIds[mid] < g) lo = mid + 1; else hi = mid;
  }
  return lo < d.sortedIds.length && d.sortedIds[lo] === g ? d.sortedLocal[lo] : -1;
}

function toLocal(d, globals) {
  const out = new Int32Array(globals.length);
  for (let i = 0; i < globals.length; i++) {
    out[i] = localUnit(d, globals[i]);
    if (out[i] < 0) throw new Error(`explorer data: unit ${globals[i]} is used but not held`);
  }
  return out;
}

function updateKeys(d, fromRow) {
  for (let r = fromRow; r < d.nRows; r++) {
    const a = Math.abs(d.score[r]);
    if (a > d.unitKey[d.unit[r]]) d.unitKey[d.unit[r]] = a;
  }
}

/** What the page lacks to show `sel` exactly: null, or {order: n, threshold: t, units: [ids]}
 *  (the parts that are missing) as a "more" request asks for them. */
export function missing(d, sel) {
  const need = {};
  if (sel.mode === "threshold") {
    const t = Number(sel.threshold) || 0;
    if (!(t > d.keyFloor)) need.threshold = t;
  } else {
    const n = Math.max(0, Math.min(d.nOrderTotal, sel.n_edges | 0));
    if (n > d.order.length) need.order = n;
  }
  const units = [...new Set([...(sel.added ?? []), ...(sel.removed ?? [])])]
    .filter((u) => localUnit(d, u) < 0);
  if (units.length) need.units = units.sort((a, b) => a - b);
  return Object.keys(need).length ? need : null;
}

/** Append a kernel's "chunk" answer (arrays: name -> typed array or DataView, as sent) to the
 *  page's data. Returns false (and changes nothing) when it answers a page that held less or
 *  more than this one (another view's request, or an old one). */
export function appendChunk(d, msg, arrays) {
  if (msg.error || msg.from?.order !== d.order.length || msg.from?.top !== d.top) return false;
  const get = (name, T) => typed(arrays[name], T);
  const ids = get("unit_ids", Int32Array);
  const fresh = [];
  for (const g of ids) if (localUnit(d, g) < 0) fresh.push(g);
  const isFresh = new Set(fresh);
  const unitIds = new Int32Array(d.nUnits + fresh.length);
  unitIds.set(d.unitIds);
  unitIds.set(fresh, d.nUnits);
  const rowUnit = get("row_unit", Int32Array);
  const keep = [];
  for (let r = 0; r < rowUnit.length; r++) if (isFresh.has(rowUnit[r])) keep.push(r);
  const start = d.nRows;
  for (const [key, trait, T] of ROW_ARRAYS) {
    const add = get(trait, T);
    const out = new T(start + keep.length);
    out.set(d[key]);
    for (let i = 0; i < keep.length; i++) out[start + i] = add[keep[i]];
    d[key] = out;
  }
  d.unitIds = unitIds;
  d.nUnits = unitIds.length;
  d.nRows = d.parent.length;
  indexUnits(d);
  for (let r = start; r < d.nRows; r++) d.unit[r] = localUnit(d, d.unit[r]);
  const order = toLocal(d, get("order", Int32Array));
  const grown = new Int32Array(d.order.length + order.length);
  grown.set(d.order);
  grown.set(order, d.order.length);
  d.order = grown;
  const keys = new Float64Array(d.nUnits).fill(-Infinity);
  keys.set(d.unitKey);
  d.unitKey = keys;
  updateKeys(d, start);
  d.top = msg.to.top;
  d.keyFloor = msg.key_floor ?? -Infinity;
  if (msg.limited) d.limited = true;
  return true;
}

/** Whether the data holds everything (then nothing is ever missing). */
export function holdsAll(d) {
  return d.order.length >= d.nOrderTotal && d.keyFloor === -Infinity;
}

/** The smallest threshold the page can show exactly (every threshold above the key floor
 *  selects the same units as the smallest held key above it), or 0 when it holds every unit. */
export function minThreshold(d) {
  if (d.keyFloor === -Infinity) return 0;
  let m = Infinity;
  for (let u = 0; u < d.nUnits; u++) if (d.unitKey[u] > d.keyFloor && d.unitKey[u] < m) m = d.unitKey[u];
  return m;
}

export function defaultSelection(n = 0) {
  return { mode: "edges", n_edges: n, threshold: 0, added: [], removed: [], removed_nodes: [],
    prune: true };
}

/** Units (local indices) chosen by the size control and the manual edits. */
export function chosenUnits(d, sel) {
  const chosen = new Uint8Array(d.nUnits);
  if (sel.mode === "threshold") {
    const thr = Number(sel.threshold) || 0;
    for (let u = 0; u < d.nUnits; u++) if (d.unitKey[u] >= thr) chosen[u] = 1;
  } else {
    const n = Math.max(0, Math.min(d.order.length, sel.n_edges | 0));
    for (let i = 0; i < n; i++) chosen[d.order[i]] = 1;
  }
  for (const g of sel.added ?? []) { const u = localUnit(d, g); if (u >= 0) chosen[u] = 1; }
  for (const g of sel.removed ?? []) { const u = localUnit(d, g); if (u >= 0) chosen[u] = 0; }
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
