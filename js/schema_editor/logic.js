// The SchemaEditor's logic as pure functions (no DOM): validation with the same rules and
// messages as the Python `Schema.validate`, span editing, span-type editing, undo history,
// token display and colours. index.js only draws and wires events.
//
// State (the synced traits):
//   span_types  [{name, color, required}] in schema order; the last type is always required.
//   annotations [[range | null per span type] per example]; range = [start, end), end-exclusive;
//               null = that span is not annotated yet in that example.
// Functions never mutate their arguments: they return new arrays, so any old value can be kept
// as an undo snapshot.

// --- validation (mirrors peap_widget/data/schema.py, rule names and messages) -------------------

/** Python's repr() of a JSON-like value, for messages that quote values as Python does. */
export function pyRepr(v) {
  if (v === null || v === undefined) return "None";
  if (v === true) return "True";
  if (v === false) return "False";
  if (typeof v === "number") return String(v);
  if (typeof v === "string") {
    const q = v.includes("'") && !v.includes('"') ? '"' : "'";
    const body = v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/\t/g, "\\t");
    return q + (q === "'" ? body.replace(/'/g, "\\'") : body) + q;
  }
  if (Array.isArray(v)) return "[" + v.map(pyRepr).join(", ") + "]";
  return "{" + Object.entries(v).map(([k, x]) => `${pyRepr(k)}: ${pyRepr(x)}`).join(", ") + "}";
}

/** Python's type name of a JSON-like value. */
function pyType(v) {
  if (v === null || v === undefined) return "NoneType";
  if (typeof v === "boolean") return "bool";
  if (typeof v === "number") return Number.isInteger(v) ? "int" : "float";
  if (typeof v === "string") return "str";
  return Array.isArray(v) ? "list" : "dict";
}

const isMapping = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const isInt = (x) => typeof x === "number" && Number.isInteger(x);

/** [start, end] when `v` is a pair of integers, else null (Python's rule "format"). */
export function asRange(v) {
  return Array.isArray(v) && v.length === 2 && isInt(v[0]) && isInt(v[1]) ? [v[0], v[1]] : null;
}

// `tokens`: the token range [a, b) to mark in the page (null when there is none to show).
const fail = (rule, span, message, tokens = null) => ({ rule, span, message, tokens });

/**
 * Check one example's spans {name: [start, end)} against `schema` ({spans: [names],
 * required: [names]}; the last span is always required). Returns null when valid, else the
 * first broken rule as {rule, span, message, tokens}, in the order and words of
 * `Schema.validate` (`tokens`: the tokens to mark, [a, b) or null).
 */
export function validate(schema, spans, length) {
  const names = schema.spans;
  const required = new Set([...(schema.required ?? []), names[names.length - 1]]);
  if (!(length >= 1)) return fail("empty_prompt", null, "the prompt has no tokens");
  if (!isMapping(spans)) {
    return fail("format", null,
      `spans must be a mapping {name: [start, end)}, got ${pyType(spans)}`);
  }
  for (const name of Object.keys(spans)) {
    if (!names.includes(name)) {
      return fail("unknown_span", name, `span ${pyRepr(name)} is not in the schema ${pyRepr(names)}`);
    }
  }
  let expected = 0;
  let last = null;
  for (const name of names) {
    if (!Object.hasOwn(spans, name)) {
      return fail("missing_span", name,
        "span is missing (give an empty range [k, k] for an empty span)");
    }
    const r = asRange(spans[name]);
    if (!r) {
      return fail("format", name,
        `a span is a [start, end) pair of token indices, got ${pyRepr(spans[name])}`);
    }
    const [start, end] = r;
    if (start < 0 || end > length) {
      const inside = [Math.max(0, start), Math.min(length, end)];
      return fail("out_of_range", name,
        `range [${start}, ${end}) lies outside the prompt's ${length} tokens`,
        inside[0] < inside[1] ? inside : null);
    }
    if (start > end) return fail("reversed", name, `range [${start}, ${end}) ends before it starts`);
    if (start !== expected) {
      const what = start > expected ? "a gap before it" : "an overlap with the span before";
      return fail("contiguous", name,
        `range [${start}, ${end}) must start at token ${expected}, where the previous span ends ` +
        `(${what}; spans cover every token in schema order)`,
        start > expected ? [expected, start] : [start, Math.max(start + 1, Math.min(expected, end))]);
    }
    if (start === end && required.has(name)) {
      return fail("nonempty", name, "span is empty but the schema requires it");
    }
    last = r;
    expected = end;
  }
  if (last[0] !== length - 1 || last[1] !== length) {
    return fail("last_token_alone", names[names.length - 1],
      `the last span must hold exactly the last token [${length - 1}, ${length}), ` +
      `got [${last[0]}, ${last[1]})`,
      last[0] < last[1] ? [last[0], last[1]] : [length - 1, length]);
  }
  return null;
}

/** The schema of the span types: {spans: [names], required: [names, last excluded]}. */
export function schemaOf(spanTypes) {
  const spans = spanTypes.map((t) => t.name);
  const last = spans[spans.length - 1];
  return { spans, required: spanTypes.filter((t) => t.required && t.name !== last).map((t) => t.name) };
}

/** One example's ranges (schema order, null = not annotated) as {name: [start, end)}. */
export function spansDict(spanTypes, ranges) {
  const out = {};
  spanTypes.forEach((t, i) => { if (ranges?.[i] != null) out[t.name] = ranges[i]; });
  return out;
}

/** Validation of one example of the editor's state (see `validate`). */
export function validateExample(spanTypes, ranges, length) {
  return validate(schemaOf(spanTypes), spansDict(spanTypes, ranges), length);
}

/** Every example's first error (or null) and the counts of valid and invalid examples. */
export function summarize(spanTypes, annotations, lengths) {
  const errors = lengths.map((n, i) => validateExample(spanTypes, annotations[i] ?? [], n));
  const invalid = errors.filter(Boolean).length;
  return { errors, valid: errors.length - invalid, invalid };
}

// --- span editing ------------------------------------------------------------------------

/** Per token: the index of the span type holding it (-1: unlabelled) and whether two spans
 * claim it (`overlap`, the first one in schema order is shown). */
export function labelsOf(ranges, length) {
  const labels = new Array(length).fill(-1);
  const overlap = new Array(length).fill(false);
  (ranges ?? []).forEach((r, u) => {
    if (!r) return;
    for (let t = Math.max(0, r[0]); t < Math.min(length, r[1]); t++) {
      if (labels[t] === -1) labels[t] = u; else overlap[t] = true;
    }
  });
  return { labels, overlap };
}

/** The token range [start, end) between a selection's anchor and focus (both included). */
export function selectionRange(sel) {
  if (!sel) return null;
  return [Math.min(sel.anchor, sel.focus), Math.max(sel.anchor, sel.focus) + 1];
}

const nonEmpty = (r) => r != null && r[0] < r[1];

/** Give empty spans their only consistent place: the end of the nearest earlier annotated
 * span in schema order (0 when there is none). */
export function placeEmpty(ranges) {
  let k = 0;
  return ranges.map((r) => {
    if (r == null) return null;
    if (r[0] === r[1]) return [k, k];
    k = r[1];
    return r;
  });
}

// The tokens [lo, hi) no longer belong to any span: hand them to the span (other than `skip`)
// that borders them on `side` ("left": one ending at lo; "right": one starting at hi).
// Returns whether some span took them.
function giveFreed(out, lo, hi, side, skip) {
  if (lo >= hi) return false;
  const v = out.findIndex((r, u) => u !== skip && nonEmpty(r) &&
    (side === "left" ? r[1] === lo : r[0] === hi));
  if (v === -1) return false;
  out[v] = side === "left" ? [out[v][0], hi] : [lo, out[v][1]];
  return true;
}

/**
 * Assign span type `t` to the tokens [a, b) of one example (ranges in schema order):
 *  1. span t becomes exactly [a, b);
 *  2. every other span gives up its tokens in [a, b); one cut in two keeps the part on its own
 *     side of t in schema order (the left part if it comes before t, else the right part) and
 *     the other part becomes unlabelled; one left with no tokens becomes empty;
 *  3. the tokens t held outside [a, b) go to the span that bordered them (the one ending where t
 *     started, or starting where t ended), so dragging a boundary keeps the cover; with no such
 *     neighbour they become unlabelled;
 *  4. empty spans move to the end of the previous span (`placeEmpty`).
 * So a valid annotation stays an ordered contiguous cover whenever the assignment allows one.
 */
export function assign(ranges, t, a, b) {
  const old = ranges[t];
  const out = ranges.map((r) => (r ? [r[0], r[1]] : null));
  out[t] = [a, b];
  out.forEach((r, u) => {
    if (u === t || !nonEmpty(r) || r[1] <= a || r[0] >= b) return;
    const left = r[0] < a ? [r[0], a] : null;
    const right = r[1] > b ? [b, r[1]] : null;
    if (left && right) out[u] = u < t ? left : right;
    else out[u] = left ?? right ?? [a, a];
  });
  if (nonEmpty(old)) {
    giveFreed(out, old[0], Math.min(a, old[1]), "left", t);   // the part before [a, b)
    giveFreed(out, Math.max(b, old[0]), old[1], "right", t);  // the part after [a, b)
  }
  return placeEmpty(out);
}

/** Unlabel the tokens [a, b): spans lying inside become not annotated (null), a span cut in
 * two keeps its first part, others shrink. */
export function clearTokens(ranges, a, b) {
  const out = ranges.map((r) => {
    if (!nonEmpty(r) || r[1] <= a || r[0] >= b) return r ? [r[0], r[1]] : null;
    if (r[0] < a) return [r[0], a];
    if (r[1] > b) return [b, r[1]];
    return null;
  });
  return placeEmpty(out);
}

/** Mark span type `t` empty in this example; its tokens go to the span ending where it started
 * (else to the one starting where it ended, else they become unlabelled). */
export function setEmpty(ranges, t) {
  const old = ranges[t];
  const out = ranges.map((r) => (r ? [r[0], r[1]] : null));
  out[t] = [0, 0];
  if (nonEmpty(old) && !giveFreed(out, old[0], old[1], "left", t)) {
    giveFreed(out, old[0], old[1], "right", t);
  }
  return placeEmpty(out);
}

/** Apply `fn(ranges)` to example `i` of the annotations (a new list). */
export function editExample(annotations, i, fn) {
  return annotations.map((ranges, j) => (j === i ? fn(ranges) : ranges));
}

// --- span types --------------------------------------------------------------------------

/** Why `name` cannot name a span type (null when it can); `except` is the index being renamed. */
export function checkName(spanTypes, name, except = -1) {
  if (typeof name !== "string" || !name.trim()) return "a span type needs a name";
  if (name !== name.trim()) return "a span type name cannot start or end with spaces";
  if (spanTypes.some((t, i) => i !== except && t.name === name)) {
    return `there is already a span type ${pyRepr(name)}`;
  }
  return null;
}

export const isColor = (c) => typeof c === "string" && /^#[0-9a-fA-F]{6}$/.test(c);

/** The first palette colour no span type uses (cycling when all are used). */
export function nextColor(palette, spanTypes) {
  const used = new Set(spanTypes.map((t) => t.color?.toLowerCase()));
  return palette.find((c) => !used.has(c.toLowerCase())) ?? palette[spanTypes.length % palette.length];
}

/** Add a span type at `index` (default: just before the last one, which keeps the last span on
 * the last token); it is empty in every example. */
export function addSpanType(state, type, index = Math.max(0, state.span_types.length - 1)) {
  const span_types = [...state.span_types];
  span_types.splice(index, 0, { name: type.name, color: type.color, required: !!type.required });
  const annotations = state.annotations.map((ranges) => {
    const r = [...ranges];
    const anyAnnotated = ranges.some((x) => x != null);
    r.splice(index, 0, anyAnnotated ? [0, 0] : null);
    return anyAnnotated ? placeEmpty(r) : r;
  });
  return { span_types, annotations };
}

/** Change some fields ({name, color, required}) of span type `i`. */
export function updateSpanType(state, i, fields) {
  return { ...state, span_types: state.span_types.map((t, j) => (j === i ? { ...t, ...fields } : t)) };
}

const move = (list, i, j) => {
  const out = [...list];
  const [x] = out.splice(i, 1);
  out.splice(j, 0, x);
  return out;
};

/** Move span type `i` to position `j` (every example's ranges move with it; empty spans take
 * their place in the new order). */
export function moveSpanType(state, i, j) {
  return {
    span_types: move(state.span_types, i, j),
    annotations: state.annotations.map((ranges) => placeEmpty(move(ranges, i, j))),
  };
}

/** Delete span type `i`; its tokens become unlabelled in every example. */
export function removeSpanType(state, i) {
  return {
    span_types: state.span_types.filter((_, j) => j !== i),
    annotations: state.annotations.map((ranges) => placeEmpty(ranges.filter((_, j) => j !== i))),
  };
}

// --- undo history ------------------------------------------------------------------------

export function createHistory(limit = 200) {
  return { past: [], future: [], limit };
}

/** Remember `snapshot` (the state before an edit); a new edit forgets what was undone. */
export function record(history, snapshot) {
  return { ...history, past: [...history.past, snapshot].slice(-history.limit), future: [] };
}

/** {history, state} to go back to, or null when there is nothing to undo. */
export function undo(history, current) {
  if (!history.past.length) return null;
  return {
    state: history.past[history.past.length - 1],
    history: { ...history, past: history.past.slice(0, -1), future: [current, ...history.future] },
  };
}

/** {history, state} to go forward to, or null when there is nothing to redo. */
export function redo(history, current) {
  if (!history.future.length) return null;
  return {
    state: history.future[0],
    history: { ...history, past: [...history.past, current], future: history.future.slice(1) },
  };
}

// --- display -----------------------------------------------------------------------------

const MARKS = [
  [/Ġ|▁| /g, "·"],         // spaces (BPE "Ġ", SentencePiece "▁")
  [/Ċ|\n|<0x0A>/g, "↵"],
  [/ĉ|\t|<0x09>/g, "⇥"],
];

/** A token as people read it: leading-space markers shown as "·", newlines as "↵". */
export function displayToken(tok) {
  let s = tok == null ? "∅" : String(tok);
  for (const [re, mark] of MARKS) s = s.replace(re, mark);
  return s === "" ? "∅" : s;
}

/** `hex` (#rrggbb) mixed with white: amount 0 = white, 1 = the colour. */
export function tint(hex, amount) {
  if (!isColor(hex)) return "#eeeeee";
  const c = [1, 3, 5].map((k) => parseInt(hex.slice(k, k + 2), 16));
  const mix = c.map((x) => Math.round(255 + (x - 255) * amount));
  return "#" + mix.map((x) => x.toString(16).padStart(2, "0")).join("");
}

// --- file ----------------------------------------------------------------------------------

/**
 * The annotation file (what Python autosaves; the same as `pw.Dataset.to_json` plus
 * "span_colors" and "lengths"): {format, version, schema, span_colors, lengths, examples}, each
 * example the record's fields with "spans" holding the annotated ranges.
 */
export function fileContent(spanTypes, annotations, examples, lengths, suggestion = null) {
  return {
    format: "peap_widget.dataset",
    version: 1,
    schema: schemaOf(spanTypes),
    span_colors: Object.fromEntries(spanTypes.map((t) => [t.name, t.color])),
    lengths: [...lengths],
    examples: examples.map((fields, i) => ({ ...fields, spans: spansDict(spanTypes, annotations[i]) })),
    ...(hasSuggestion(suggestion) ? { suggestion } : {}),
  };
}

// --- suggestions (the pending layer) -------------------------------------------------------
//
// `suggestion` (a synced trait, {} when none): {id, name, source, span_names,
//   spans: [{name: [start, end)} | null per example], failed: {"i": reason}, info,
//   status: [null (pending) | "accepted" | "rejected" per example]}.
// Accepting or rejecting is an ordinary edit of {annotations, suggestion}, so undo reverts it.

export const hasSuggestion = (s) => !!s && Array.isArray(s.spans);

/** A proposal {name: [start, end)} as a row of ranges in the editor's span types: a span type
 * the proposal does not name is empty (placed by `placeEmpty`). */
export function proposedRow(spanTypes, proposed) {
  if (!proposed) return null;
  return placeEmpty(spanTypes.map((t) => (Array.isArray(proposed[t.name]) ? [...proposed[t.name]] : [0, 0])));
}

const sameRange = (a, b) => (a == null ? b == null : b != null && a[0] === b[0] && a[1] === b[1]);

/** The span type names whose ranges differ between two rows (schema order). */
export function differingSpans(spanTypes, row, current) {
  return spanTypes.filter((_, j) => !sameRange(row?.[j] ?? null, current?.[j] ?? null)).map((t) => t.name);
}

/**
 * Where the suggestion stands, per example and in total: `status[i]` is "disagrees", "agrees",
 * "left out", "accepted" or "rejected" (null when there is no suggestion); `differs[i]` the
 * span names that differ (pending examples); lists `pending`, `disagree`, `leftOut` ([i, reason]).
 */
export function suggestionSummary(suggestion, spanTypes, annotations) {
  const out = { status: [], differs: [], pending: [], disagree: [], leftOut: [], accepted: 0, rejected: 0 };
  if (!hasSuggestion(suggestion)) return out;
  const failed = suggestion.failed ?? {};
  suggestion.spans.forEach((proposed, i) => {
    const verdict = suggestion.status?.[i] ?? null;
    let status, differs = [];
    if (proposed == null) {
      status = "left out";
      out.leftOut.push([i, failed[String(i)] ?? "no proposal"]);
    } else if (verdict) {
      status = verdict;
      out[verdict] += 1;
    } else {
      const row = proposedRow(spanTypes, proposed);
      const cur = spanTypes.map((_, j) => annotations[i]?.[j] ?? null);
      differs = differingSpans(spanTypes, row, cur);
      status = differs.length ? "disagrees" : "agrees";
      out.pending.push(i);
      if (differs.length) out.disagree.push(i);
    }
    out.status.push(status);
    out.differs.push(differs);
  });
  return out;
}

/**
 * Accept ("accepted") or reject ("rejected") the pending proposals of `examples` (indices;
 * null: every pending one). Returns {annotations, suggestion, done: [indices]}: accepted
 * examples take the proposal as their annotation; others keep theirs.
 */
export function decide(spanTypes, annotations, suggestion, examples, verdict) {
  const status = [...(suggestion.status ?? suggestion.spans.map(() => null))];
  const isPending = (i) => suggestion.spans[i] != null && !status[i];
  const chosen = (examples ?? suggestion.spans.map((_, i) => i)).filter(isPending);
  const rows = [...annotations];
  for (const i of chosen) {
    status[i] = verdict;
    if (verdict === "accepted") rows[i] = proposedRow(spanTypes, suggestion.spans[i]);
  }
  return { annotations: rows, suggestion: { ...suggestion, status }, done: chosen };
}

/** The values an undo / redo step writes: the snapshot's span types, annotations and example,
 * and its suggestion only while it is the same run (a newer run's layer is never replaced by
 * an older one's). */
export function restoreValues(snapshot, currentSuggestion) {
  const out = { span_types: snapshot.span_types, annotations: snapshot.annotations, current: snapshot.current };
  const same = hasSuggestion(snapshot.suggestion) && hasSuggestion(currentSuggestion) &&
    snapshot.suggestion.id === currentSuggestion.id;
  if (same) out.suggestion = snapshot.suggestion;
  return out;
}

/** A suggester's running counts as text: "1,234 tokens · $0.0123 · 3 retries". */
export function formatInfo(info) {
  if (!info || typeof info !== "object") return "";
  return Object.entries(info).filter(([, v]) => v != null && typeof v !== "object").map(([k, v]) => {
    if (typeof v !== "number") return `${k} ${v}`;
    if (k === "cost") return `$${v.toFixed(v < 1 ? 4 : 2)}`;
    return `${Number.isInteger(v) ? v.toLocaleString("en-US") : v.toPrecision(3)} ${k}`;
  }).join(" · ");
}

/** The progress line of a run: {text, fraction (0..1 or null), running, error}. */
export function progressOf(status) {
  const s = status ?? {};
  const total = Number(s.total) || 0;
  const done = Math.min(Number(s.done) || 0, total || Infinity);
  const fraction = total ? done / total : null;
  const counts = formatInfo(s.info);
  let text = "";
  if (s.running) text = `Running ${s.name ?? ""}… ${done} / ${total} examples${counts ? ` · ${counts}` : ""}`;
  else if (s.error) text = s.error;
  else if (s.name) text = `${s.name}: ${s.message || "done"}${counts ? ` · ${counts}` : ""}`;
  return { text, fraction, running: !!s.running, error: !s.running && !!s.error };
}

// --- saliency shading ------------------------------------------------------------------------

/** Per token, |score| relative to the example's largest |score| (0..1; missing scores 0). */
export function saliencyLevels(scores) {
  const abs = (scores ?? []).map((x) => (typeof x === "number" && Number.isFinite(x) ? Math.abs(x) : 0));
  const top = Math.max(0, ...abs);
  return abs.map((x) => (top > 0 ? x / top : 0));
}
