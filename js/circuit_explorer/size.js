// The size control's arithmetic, pure: a log-scaled slider over the greedy order, the threshold
// that keeps a circuit's size, and what to say when the circuit drawn differs from the size asked.

export const SLIDER_STEPS = 1000;

/** Slider position (0..SLIDER_STEPS) -> edge count in 0..max, log-scaled (fine at small sizes). */
export function sliderToEdges(v, max) {
  if (!(max > 0)) return 0;
  const f = Math.max(0, Math.min(1, Number(v) / SLIDER_STEPS));
  return Math.max(0, Math.min(max, Math.round(Math.expm1(f * Math.log1p(max)))));
}

/** Edge count -> slider position (the inverse of sliderToEdges, rounded). */
export function edgesToSlider(n, max) {
  if (!(max > 0)) return 0;
  return Math.round(SLIDER_STEPS * Math.log1p(Math.max(0, Math.min(max, n))) / Math.log1p(max));
}

/** The threshold that keeps a circuit of `n` units: the key (max |score|) of the n-th largest
 * unit among `keys` (the last one included), or `fallback` where there is none. */
export function thresholdForSize(keys, n, fallback = 0) {
  if (!(n > 0) || !keys.length) return fallback;
  const sorted = Float64Array.from(keys).sort().reverse();
  return sorted[Math.min(n, sorted.length) - 1];
}

/** Why the circuit drawn (`shown` units) differs from the greedy size asked: a sentence for the
 * tooltip, "" when they agree. `sel` is the selection. */
export function sizeNote(sel, shown, mergeQkv) {
  const edits = (sel.added?.length ?? 0) + (sel.removed?.length ?? 0) + (sel.removed_nodes?.length ?? 0);
  const asked = sel.mode === "threshold" ? null : sel.n_edges;
  if (asked == null || asked === shown) return "";
  const why = [];
  if (mergeQkv) why.push("an edge here is a unit: a head's q, k and v inputs from one span to another count as one edge");
  if (sel.prune !== false) why.push("edges not on a path from an input to the logits are pruned (they cannot matter)");
  if (edits) why.push(`your ${edits} manual edit(s) add or remove edges`);
  return `You asked for the first ${asked} edges of the greedy order; ${shown} are in the circuit drawn and evaluated, because ${why.join("; ")}.`;
}
