// Keyboard navigation over the diagram, pure: which node takes the roving tab stop, the nearest
// node in an arrow's direction, and a node's own edges (drawn and pruned) to step through.
import { NODE, nodeGroup } from "./logic.js";

const focusable = (d, active, gone, n) => {
  const t = d.nodeType[n];
  return (active[n] || gone.has(n)) && t !== NODE.Q && t !== NODE.K && t !== NODE.V;
};

/** The first node in reading order from the bottom left (the input side), or -1. */
export function firstNodeOf(d, pos, active, gone) {
  let best = -1;
  for (let n = 0; n < d.nNodes; n++) {
    if (!focusable(d, active, gone, n)) continue;
    if (best < 0 || pos.y[n] > pos.y[best] || (pos.y[n] === pos.y[best] && pos.x[n] < pos.x[best])) best = n;
  }
  return best;
}

/** The node nearest to `n` in direction (dx, dy) (screen axes), or -1. */
export function neighbourOf(d, pos, active, gone, n, dx, dy) {
  let best = -1, bestScore = Infinity;
  for (let m = 0; m < d.nNodes; m++) {
    if (m === n || !focusable(d, active, gone, m)) continue;
    const vx = pos.x[m] - pos.x[n], vy = pos.y[m] - pos.y[n];
    const along = vx * dx + vy * dy;
    if (along <= 0.5) continue;
    const score = along + 2.5 * Math.abs(vx * dy - vy * dx);
    if (score < bestScore) { bestScore = score; best = m; }
  }
  return best;
}

/** [[row, isGhost]] of the edges touching node `n` (a head with its q/k/v ports). */
export function nodeEdgesOf(d, drawn, ghosts, n) {
  const group = new Set(nodeGroup(d, n)), out = [];
  for (const r of drawn) if (group.has(d.parent[r]) || group.has(d.child[r])) out.push([r, false]);
  for (const r of ghosts) if (group.has(d.parent[r]) || group.has(d.child[r])) out.push([r, true]);
  return out;
}
