// The page's side of live evaluation, pure (no DOM): at most one request in flight, the request
// carries the selection itself, and numbers count only for the selection they answer.

/** A selection as a canonical string (keys sorted; threshold only matters in threshold mode,
 * n_edges only in edges mode). */
export function selectionKey(s) {
  if (s == null) return null;
  const o = { ...s };
  if (o.mode === "threshold") delete o.n_edges; else delete o.threshold;
  return JSON.stringify(Object.keys(o).sort().map((k) => [k, o[k]]));
}
export const sameSelection = (a, b) => a != null && b != null && selectionKey(a) === selectionKey(b);

/**
 * `send(msg)` posts {type: "evaluate", version, selection, full}; `current()` gives the selection
 * shown now (normalised). Call `request()` after each edit and `answer(evaluation)` when the
 * evaluation trait changes; `state(evaluation)` says what the panel may show.
 */
export function evaluationClient({ send, current, timeoutMs = 120000, now = () => Date.now() }) {
  let version = 0, inFlight = null, dirty = false, wantFull = false;
  const c = {
    get version() { return version; },
    get inFlight() { return inFlight; },
    request(full = false) {
      wantFull = wantFull || full;
      if (inFlight) { dirty = true; return false; }
      dirty = false;
      const selection = current();
      inFlight = { version: ++version, selection, at: now(), full: wantFull };
      send({ type: "evaluate", version, selection, full: wantFull });
      wantFull = false;
      return true;
    },
    /** An evaluation arrived: clears the request it answers; asks again when the page moved
     * on (never waits forever on an answer for an older state). Returns whether it asked. */
    answer(ev) {
      if (inFlight && ev && ev.version === inFlight.version) inFlight = null;
      if (inFlight) return false;
      const fresh = ev && sameSelection(ev.selection, current());
      if (fresh && !dirty && !wantFull) return false;   // current numbers, or its error
      return c.request();
    },
    /** No answer came (a lost message, a restarted kernel): forget the request in flight. */
    expire() {
      if (inFlight && now() - inFlight.at >= timeoutMs) { inFlight = null; return true; }
      return false;
    },
    /** "current" (numbers are for the shown selection), "pending" or "error". */
    state(ev) {
      if (!ev || ev.selection == null) return "pending";
      if (!sameSelection(ev.selection, current())) return "pending";
      return ev.error ? "error" : "current";
    },
  };
  return c;
}

// --- circuit quality on demand (completeness, minimality) ---------------------------------------

/**
 * What the quality box may show for the `quality` trait `q` and the selection shown now:
 * "none" (never computed), "running" (for the shown selection, with progress), "current"
 * (numbers for the shown selection), "error", or "pending" (the numbers are for another
 * circuit: they are not shown).
 */
export function qualityState(q, current) {
  if (!q || q.selection == null) return "none";
  if (!sameSelection(q.selection, current)) return "pending";
  if (q.error) return "error";
  if (q.running) return "running";
  return q.completeness && q.minimality ? "current" : "none";
}

const num = (v, digits = 3) => (v == null || Number.isNaN(v) ? "–"
  : Math.abs(v) !== 0 && (Math.abs(v) < 1e-3 || Math.abs(v) >= 1e5) ? Number(v).toExponential(2)
    : Number(v).toFixed(digits));

/** The rows [label, text, raw value, field] of current quality numbers. */
export function qualityRows(q) {
  const c = q.completeness, m = q.minimality;
  return [
    ["completeness gap (worst)", num(c.worst_gap), c.worst_gap, "worst_gap"],
    ["completeness gap (mean)", num(c.mean_gap), c.mean_gap, "mean_gap"],
    ["node subsets K", `${c.n_samples} (seed ${c.seed})`, c.n_samples, "n_samples"],
    ["edges below threshold", `${m.n_below} of ${m.n_edges} (|Δ| < ${num(m.threshold)})`, m.n_below, "n_below"],
    ["smallest |contribution|", num(m.min_contribution), m.min_contribution, "min_contribution"],
  ];
}

/** "computing… 12 of 40 circuits" for a running quality request. */
export function qualityProgress(q) {
  return q?.total ? `computing… ${q.done ?? 0} of ${q.total} circuits` : "computing…";
}
