// Where nodes and edges go, pure (no DOM). x: the schema's spans, one column each, in order;
// y: levels from the input (bottom) through each layer's heads then MLP to the logits (top).
// A head's q/k/v inputs are small ports just under it; residual edges run up within a column,
// crossing edges (a head reading another span) arc below the head row between columns.
import { NODE } from "./logic.js";

export const STYLE = { top: 34, left: 64, rowH: 46, headW: 16, minColW: 96, pad: 12, portDy: 9,
  portDx: 4 };

/** The level (row, 0 = input at the bottom) of node n: input 0, L{l} attn 2l+1 (its q/k/v ports
 * too), L{l} mlp 2l+2, logits 2L+1. */
export function levelOf(d, n) {
  const t = d.nodeType[n], l = d.nodeLayer[n];
  if (t === NODE.INPUT) return 0;
  if (t === NODE.LOGITS) return 2 * d.info.layers + 1;
  if (t === NODE.MLP) return 2 * l + 2;
  return 2 * l + 1;
}

/** Spans and levels holding no node of the circuit (`active`: per node 0/1): {spans, levels}
 * as Sets (input and logits levels never collapse). */
export function emptyParts(d, active) {
  const S = d.info.spans.length, nLevels = 2 * d.info.layers + 2;
  const spanUsed = new Uint8Array(S), levelUsed = new Uint8Array(nLevels);
  for (let n = 0; n < d.nNodes; n++) {
    if (!active[n]) continue;
    spanUsed[d.nodeSpan[n]] = 1;
    levelUsed[levelOf(d, n)] = 1;
  }
  const spans = new Set(), levels = new Set();
  for (let s = 0; s < S; s++) if (!spanUsed[s]) spans.add(s);
  for (let lv = 1; lv < nLevels - 1; lv++) if (!levelUsed[lv]) levels.add(lv);
  return { spans, levels };
}

/** Node positions: {x, y: Float32Array per node, width, height, columns, levels}. `hidden`
 * ({spans, levels} Sets, optional): parts drawn collapsed (narrow columns, low rows). */
export function layoutNodes(d, style = STYLE, hidden = null) {
  const { layers: L, heads: H, spans } = d.info;
  const colW = Math.max(style.minColW, H * style.headW + 2 * style.pad + style.headW);
  const nLevels = 2 * L + 2;
  const hs = hidden?.spans ?? new Set(), hl = hidden?.levels ?? new Set();
  const narrow = 22, low = 12;
  const colX = new Float32Array(spans.length + 1);
  colX[0] = style.left;
  for (let s = 0; s < spans.length; s++) colX[s + 1] = colX[s] + (hs.has(s) ? narrow : colW);
  const levY = new Float32Array(nLevels);   // top to bottom: level nLevels-1 first
  let yy = style.top;
  for (let lv = nLevels - 1; lv >= 0; lv--) {
    levY[lv] = yy;
    if (lv > 0) yy += hl.has(lv) || hl.has(lv - 1) ? low : style.rowH;
  }
  const levelY = (lv) => levY[lv];
  const x = new Float32Array(d.nNodes), y = new Float32Array(d.nNodes);
  for (let n = 0; n < d.nNodes; n++) {
    const s = d.nodeSpan[n], l = d.nodeLayer[n], t = d.nodeType[n];
    const x0 = colX[s], w = colX[s + 1] - colX[s];
    const centre = x0 + w / 2;
    const scale = w / colW;
    const headSpace = (w - scale * (2 * style.pad + style.headW)) / Math.max(H, 1);
    if (t === NODE.INPUT) { x[n] = centre; y[n] = levelY(0); }
    else if (t === NODE.LOGITS) { x[n] = centre; y[n] = levelY(nLevels - 1); }
    else if (t === NODE.MLP) { x[n] = x0 + w - scale * (style.pad + style.headW / 2); y[n] = levelY(2 * l + 2); }
    else {
      const hx = x0 + scale * style.pad + (d.nodeHead[n] + 0.5) * headSpace;
      const hy = levelY(2 * l + 1);
      if (t === NODE.HEAD) { x[n] = hx; y[n] = hy; }
      else { x[n] = hx + (t - NODE.K) * style.portDx * scale; y[n] = hy + (hl.has(2 * l + 1) ? 3 : style.portDy); }
    }
  }
  const columns = spans.map((name, s) => ({ name, x0: colX[s], x1: colX[s + 1], collapsed: hs.has(s) }));
  const levels = [];
  for (let lv = 0; lv < nLevels; lv++) {
    const label = lv === 0 ? "input" : lv === nLevels - 1 ? "logits"
      : lv % 2 === 1 ? `L${(lv - 1) / 2} attn` : `L${(lv - 2) / 2} mlp`;
    levels.push({ label, y: levelY(lv), collapsed: hl.has(lv) });
  }
  return { x, y, width: colX[spans.length] + 16, height: levelY(0) + 30, columns, levels, colW };
}

/** Control points of a row's edge: a cubic Bézier [x0, y0, c1x, c1y, c2x, c2y, x1, y1]. */
export function edgeCurve(d, pos, r) {
  const p = d.parent[r], c = d.child[r];
  const x0 = pos.x[p], y0 = pos.y[p], x1 = pos.x[c], y1 = pos.y[c];
  if (d.kind[r] > 0) {  // crossing: arc under the head row
    const dip = 14 + Math.min(60, Math.abs(x1 - x0) * 0.12);
    return [x0, y0, x0, y0 + dip, x1, y1 + dip + 8, x1, y1 + 5];
  }
  const dy = Math.max(12, (y0 - y1) * 0.45);
  return [x0, y0, x0, y0 - dy, x1, y1 + dy, x1, y1];
}

/** Points along a Bézier (for hit testing), flattened [x, y, x, y, ...]. */
export function sampleCurve(b, n = 8) {
  const out = new Float32Array(2 * (n + 1));
  for (let i = 0; i <= n; i++) {
    const t = i / n, u = 1 - t;
    const a = u * u * u, bb = 3 * u * u * t, c = 3 * u * t * t, e = t * t * t;
    out[2 * i] = a * b[0] + bb * b[2] + c * b[4] + e * b[6];
    out[2 * i + 1] = a * b[1] + bb * b[3] + c * b[5] + e * b[7];
  }
  return out;
}

function segDist2(px, py, ax, ay, bx, by) {
  const dx = bx - ax, dy = by - ay;
  const len = dx * dx + dy * dy;
  let t = len ? ((px - ax) * dx + (py - ay) * dy) / len : 0;
  t = Math.max(0, Math.min(1, t));
  const qx = ax + t * dx - px, qy = ay + t * dy - py;
  return qx * qx + qy * qy;
}

/** The drawn row nearest to (px, py) within `radius` pixels, or -1. */
export function hitEdge(samples, rowsDrawn, px, py, radius = 5) {
  let best = -1, bestD = radius * radius;
  for (let i = 0; i < rowsDrawn.length; i++) {
    const s = samples[i];
    for (let j = 0; j + 3 < s.length; j += 2) {
      const dd = segDist2(px, py, s[j], s[j + 1], s[j + 2], s[j + 3]);
      if (dd < bestD) { bestD = dd; best = rowsDrawn[i]; }
    }
  }
  return best;
}

/** Stroke width by |score| relative to the largest drawn |score|. */
export function strokeWidth(score, maxAbs, drawn = 0) {
  if (!(maxAbs > 0)) return 1;
  const widest = drawn > 2000 ? 1.8 : drawn > 500 ? 2.6 : 3.4;  // thinner when dense
  return 0.5 + widest * Math.sqrt(Math.abs(score) / maxAbs);
}

// blue / orange (PuOr-like): no red-green pair, stays apart under deuteranopia and protanopia,
// and orange does not read as "error" (the legend says what sign means)
export const POSITIVE = "#2166ac";
export const NEGATIVE = "#e66101";
/** Dash pattern per edge kind (resid, q, k, v): crossing q/k/v stay distinguishable. */
export const DASH = [null, [1.5, 2.5], [6, 3], [3, 2, 1, 2]];
export function edgeColor(score) { return score >= 0 ? POSITIVE : NEGATIVE; }
