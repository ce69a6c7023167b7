// What is under the pointer, pure: a node on its own glyph, else a ghost (a pruned edge: it must
// be restorable where it lies under drawn edges), else a node in the easier-to-hit margin around
// it, else a drawn edge, else a node not in the circuit (a hover card, no click).
import { NODE } from "./logic.js";
import { hitEdge } from "./layout.js";

const isPort = (t) => t === NODE.Q || t === NODE.K || t === NODE.V;
const isBox = (t) => t === NODE.INPUT || t === NODE.LOGITS;

/** The node nearest to diagram point (px, py) within reach (wider when zoomed out, `k` < 1);
 * with `clickable`, only nodes in the circuit or pruned (`s.active`, `s.gone`). */
export function hitNode(d, pos, s, px, py, k, clickable = true) {
  let best = -1, bestD = Infinity;
  const slack = Math.max(0, 4 / k - 4);
  for (let n = 0; n < d.nNodes; n++) {
    const t = d.nodeType[n];
    if (isPort(t)) continue;
    if (clickable && !s.active[n] && !s.gone.has(n)) continue;
    const dx = pos.x[n] - px, dy = pos.y[n] - py;
    const reach = (isBox(t) ? 22 : 7) + slack, reachY = 8 + slack;
    if (Math.abs(dx) <= reach && Math.abs(dy) <= reachY) {
      const dd = (dx / reach) ** 2 + (dy / reachY) ** 2;
      if (dd < bestD) { bestD = dd; best = n; }
    }
  }
  return best;
}

/** `view`: {k, toDiagram}; `s`: {active, gone, drawn, ghosts, samples, ghostSamples};
 * (bx, by): box coordinates. Returns {node} | {ghost} | {row} | null. */
export function hitTest(d, pos, view, s, bx, by) {
  const [px, py] = view.toDiagram(bx, by);
  const radius = Math.max(2, 5 / view.k);
  const n = hitNode(d, pos, s, px, py, view.k);
  const onGlyph = n >= 0 && Math.abs(pos.x[n] - px) <= (isBox(d.nodeType[n]) ? 22 : 6)
    && Math.abs(pos.y[n] - py) <= (isBox(d.nodeType[n]) ? 8 : 6);
  if (onGlyph) return { node: n };
  const g = hitEdge(s.ghostSamples, s.ghosts, px, py, radius);
  if (g >= 0) return { ghost: g };
  if (n >= 0) return { node: n };
  const r = hitEdge(s.samples, s.drawn, px, py, radius);
  if (r >= 0) return { row: r };
  const idle = hitNode(d, pos, s, px, py, view.k, false);
  return idle >= 0 ? { node: idle } : null;
}
