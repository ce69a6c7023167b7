import { describe, expect, it } from "vitest";
import {
  addSpanType, assign, checkName, clearTokens, createHistory, decide, differingSpans, displayToken,
  editExample, fileContent, formatInfo, labelsOf, moveSpanType, nextColor, placeEmpty, progressOf,
  proposedRow, pyRepr, record, redo, removeSpanType, restoreValues, saliencyLevels, schemaOf,
  selectionRange, setEmpty, suggestionSummary, summarize, tint, undo, updateSpanType, validate,
  validateExample,
} from "./logic.js";

const SCHEMA = { spans: ["IO", "S1", "S2", "END"], required: [] };
const types = (names, required = []) =>
  names.map((name) => ({ name, color: "#4e79a7", required: required.includes(name) }));

describe("validate (same rules as Schema.validate)", () => {
  const ok = { IO: [0, 2], S1: [2, 2], S2: [2, 5], END: [5, 6] };
  it("accepts a contiguous cover with an empty span", () => {
    expect(validate(SCHEMA, ok, 6)).toBeNull();
  });
  const cases = [
    ["empty_prompt", null, ok, 0],
    ["format", null, [[0, 1]], 6],
    ["unknown_span", "X", { ...ok, X: [0, 1] }, 6],
    ["missing_span", "S1", { IO: [0, 2], S2: [2, 5], END: [5, 6] }, 6],
    ["format", "S1", { ...ok, S1: [2] }, 6],
    ["format", "S1", { ...ok, S1: [2, 2.5] }, 6],
    ["format", "S1", { ...ok, S1: [true, 2] }, 6],
    ["out_of_range", "END", { ...ok, END: [5, 7] }, 6],
    ["out_of_range", "IO", { ...ok, IO: [-1, 2] }, 6],
    ["reversed", "S2", { ...ok, S2: [5, 2] }, 6],
    ["contiguous", "S2", { ...ok, S2: [3, 5] }, 6],
    ["contiguous", "S2", { ...ok, S2: [1, 5] }, 6],
    ["last_token_alone", "END", { IO: [0, 2], S1: [2, 2], S2: [2, 4], END: [4, 6] }, 6],
  ];
  it.each(cases)("rule %s (span %s)", (rule, span, spans, length) => {
    const err = validate(SCHEMA, spans, length);
    expect(err).toMatchObject({ rule, span });
    expect(err.message.length).toBeGreaterThan(10);
  });
  it("requires non-empty required spans and always the last one", () => {
    const s = { spans: SCHEMA.spans, required: ["S1"] };
    expect(validate(s, ok, 6)).toMatchObject({ rule: "nonempty", span: "S1" });
    const lastEmpty = { IO: [0, 2], S1: [2, 3], S2: [3, 6], END: [6, 6] };
    expect(validate(SCHEMA, lastEmpty, 6)).toMatchObject({ rule: "nonempty", span: "END" });
  });
  it("says which tokens to mark", () => {
    expect(validate(SCHEMA, { ...ok, S2: [3, 5] }, 6).tokens).toEqual([2, 3]);   // the gap
    expect(validate(SCHEMA, { ...ok, S2: [1, 5] }, 6).tokens).toEqual([1, 2]);   // the overlap
    expect(validate(SCHEMA, { ...ok, END: [5, 7] }, 6).tokens).toEqual([5, 6]);
    const last = { IO: [0, 2], S1: [2, 2], S2: [2, 4], END: [4, 6] };
    expect(validate(SCHEMA, last, 6).tokens).toEqual([4, 6]);
    expect(validate(SCHEMA, { ...ok, S2: [5, 2] }, 6).tokens).toBeNull();
  });
  it("words messages as Python does", () => {
    expect(validate(SCHEMA, { ...ok, S2: [3, 5] }, 6).message).toBe(
      "range [3, 5) must start at token 2, where the previous span ends (a gap before it; " +
      "spans cover every token in schema order)");
    expect(validate(SCHEMA, { ...ok, X: [0, 1] }, 6).message).toBe(
      "span 'X' is not in the schema ['IO', 'S1', 'S2', 'END']");
    expect(pyRepr([null, true, "it's", { a: 1 }])).toBe(`[None, True, "it's", {'a': 1}]`);
  });
});

describe("editor state validation", () => {
  const st = types(["A", "B", "END"], ["B"]);
  it("derives the schema and drops unannotated spans", () => {
    expect(schemaOf(st)).toEqual({ spans: ["A", "B", "END"], required: ["B"] });
    expect(validateExample(st, [[0, 1], null, [2, 3]], 3)).toMatchObject({ rule: "missing_span", span: "B" });
  });
  it("counts valid and invalid examples", () => {
    const s = summarize(st, [[[0, 1], [1, 2], [2, 3]], [[0, 0], [0, 1], [1, 3]]], [3, 3]);
    expect([s.valid, s.invalid]).toEqual([1, 1]);
    expect(s.errors[0]).toBeNull();
    expect(s.errors[1]).toMatchObject({ rule: "last_token_alone", span: "END" });
  });
});

describe("selection and labels", () => {
  it("orders a selection's ends", () => {
    expect(selectionRange({ anchor: 5, focus: 2 })).toEqual([2, 6]);
    expect(selectionRange(null)).toBeNull();
  });
  it("labels tokens and flags overlaps", () => {
    const { labels, overlap } = labelsOf([[0, 2], null, [1, 3]], 4);
    expect(labels).toEqual([0, 0, 2, -1]);
    expect(overlap).toEqual([false, true, false, false]);
  });
});

describe("assign keeps an ordered contiguous cover", () => {
  // A B C END over 6 tokens
  const base = [[0, 2], [2, 4], [4, 5], [5, 6]];
  it("grows a span into its neighbour", () => {
    expect(assign(base, 0, 0, 3)).toEqual([[0, 3], [3, 4], [4, 5], [5, 6]]);
  });
  it("shrinking a span gives the freed tokens to the bordering span", () => {
    expect(assign(base, 1, 2, 3)).toEqual([[0, 2], [2, 3], [3, 5], [5, 6]]);
    expect(assign(base, 1, 3, 4)).toEqual([[0, 3], [3, 4], [4, 5], [5, 6]]);
  });
  it("a span swallowed whole becomes empty at its place", () => {
    expect(assign(base, 0, 0, 4)).toEqual([[0, 4], [4, 4], [4, 5], [5, 6]]);
  });
  it("a span cut in two keeps the part on its side of the new span", () => {
    const r = [[0, 5], null, null, [5, 6]];
    expect(assign(r, 1, 2, 3)).toEqual([[0, 2], [2, 3], null, [5, 6]]);  // A before B: left part
    const r2 = [null, null, [0, 5], [5, 6]];
    expect(assign(r2, 1, 2, 3)).toEqual([null, [2, 3], [3, 5], [5, 6]]);  // C after B: right part
  });
  it("annotates from scratch left to right", () => {
    let r = [null, null, null, [5, 6]];
    r = assign(r, 0, 0, 2);
    r = assign(r, 1, 2, 4);
    r = assign(r, 2, 4, 5);
    expect(r).toEqual(base);
    expect(validate({ spans: ["A", "B", "C", "END"] }, { A: r[0], B: r[1], C: r[2], END: r[3] }, 6)).toBeNull();
  });
  it("does not mutate its input", () => {
    const copy = JSON.parse(JSON.stringify(base));
    assign(base, 0, 0, 5);
    expect(base).toEqual(copy);
  });
});

describe("clear, empty, placeEmpty", () => {
  const base = [[0, 2], [2, 4], [4, 5], [5, 6]];
  it("clearing unlabels tokens", () => {
    expect(clearTokens(base, 2, 4)).toEqual([[0, 2], null, [4, 5], [5, 6]]);
    expect(clearTokens(base, 1, 3)).toEqual([[0, 1], [3, 4], [4, 5], [5, 6]]);
    expect(clearTokens([[0, 5], [5, 6]], 1, 2)).toEqual([[0, 1], [5, 6]]);
  });
  it("setEmpty gives the tokens to the previous span", () => {
    expect(setEmpty(base, 1)).toEqual([[0, 4], [4, 4], [4, 5], [5, 6]]);
    expect(setEmpty(base, 0)).toEqual([[0, 0], [0, 4], [4, 5], [5, 6]]);
    expect(setEmpty([[0, 1], null, [1, 2]], 1)).toEqual([[0, 1], [1, 1], [1, 2]]);
  });
  it("places empty spans after the previous annotated span", () => {
    expect(placeEmpty([[0, 0], [0, 3], [9, 9], null, [5, 5]])).toEqual([[0, 0], [0, 3], [3, 3], null, [3, 3]]);
  });
  it("edits one example only", () => {
    const ann = [base, base];
    const out = editExample(ann, 1, (r) => setEmpty(r, 2));
    expect(out[0]).toBe(base);
    expect(out[1][2]).toEqual([5, 5]);
  });
});

describe("span types", () => {
  const state = {
    span_types: types(["A", "B", "END"]),
    annotations: [[[0, 1], [1, 2], [2, 3]], [null, null, [3, 4]], [null, null, null]],
  };
  it("adds a type before the last one, empty where the example is annotated", () => {
    const s = addSpanType(state, { name: "C", color: "#f28e2b" });
    expect(s.span_types.map((t) => t.name)).toEqual(["A", "B", "C", "END"]);
    expect(s.annotations[0]).toEqual([[0, 1], [1, 2], [2, 2], [2, 3]]);
    expect(s.annotations[1]).toEqual([null, null, [0, 0], [3, 4]]);
    expect(s.annotations[2]).toEqual([null, null, null, null]);
    expect(addSpanType(state, { name: "P" }, 0).span_types[0].name).toBe("P");
  });
  it("renames, recolours, reorders and deletes", () => {
    const r = updateSpanType(state, 1, { name: "B2", color: "#000000" });
    expect(r.span_types[1]).toEqual({ name: "B2", color: "#000000", required: false });
    expect(r.annotations).toBe(state.annotations);
    const m = moveSpanType(state, 0, 1);
    expect(m.span_types.map((t) => t.name)).toEqual(["B", "A", "END"]);
    expect(m.annotations[0]).toEqual([[1, 2], [0, 1], [2, 3]]);
    const withEmpty = { ...state, annotations: [[[0, 1], [1, 1], [1, 3]]] };
    expect(moveSpanType(withEmpty, 1, 0).annotations[0]).toEqual([[0, 0], [0, 1], [1, 3]]);
    expect(removeSpanType(withEmpty, 0).annotations[0]).toEqual([[0, 0], [1, 3]]);
    const d = removeSpanType(state, 0);
    expect(d.span_types.map((t) => t.name)).toEqual(["B", "END"]);
    expect(d.annotations[0]).toEqual([[1, 2], [2, 3]]);
  });
  it("checks names", () => {
    expect(checkName(state.span_types, "")).toMatch(/needs a name/);
    expect(checkName(state.span_types, " x")).toMatch(/spaces/);
    expect(checkName(state.span_types, "A")).toMatch(/already/);
    expect(checkName(state.span_types, "A", 0)).toBeNull();
    expect(checkName(state.span_types, "Z")).toBeNull();
  });
  it("picks an unused palette colour", () => {
    expect(nextColor(["#4E79A7", "#f28e2b"], state.span_types)).toBe("#f28e2b");
  });
});

describe("history", () => {
  it("undoes and redoes snapshots; a new edit drops the redo branch", () => {
    let h = createHistory();
    h = record(h, "s0");
    h = record(h, "s1");
    let r = undo(h, "s2");
    expect(r.state).toBe("s1");
    r = undo(r.history, "s1");
    expect(r.state).toBe("s0");
    const again = redo(r.history, "s0");
    expect(again.state).toBe("s1");
    expect(redo(again.history, "s1").state).toBe("s2");
    expect(record(again.history, "s1").future).toEqual([]);
    expect(undo(createHistory(), "x")).toBeNull();
    expect(redo(createHistory(), "x")).toBeNull();
  });
  it("keeps at most `limit` snapshots", () => {
    let h = createHistory(3);
    for (let i = 0; i < 5; i++) h = record(h, i);
    expect(h.past).toEqual([2, 3, 4]);
  });
});

describe("display", () => {
  it("shows BPE markers readably", () => {
    expect(displayToken("ĠMary")).toBe("·Mary");
    expect(displayToken("▁the")).toBe("·the");
    expect(displayToken("Ċ")).toBe("↵");
    expect(displayToken("")).toBe("∅");
    expect(displayToken("to")).toBe("to");
  });
  it("tints colours toward white", () => {
    expect(tint("#000000", 0)).toBe("#ffffff");
    expect(tint("#000000", 1)).toBe("#000000");
    expect(tint("#ff0000", 0.5)).toBe("#ff8080");
    expect(tint("nope", 0.5)).toBe("#eeeeee");
  });
});

describe("file content", () => {
  it("is a dataset JSON with colours and lengths", () => {
    const st = types(["A", "END"], ["A"]);
    const f = fileContent(st, [[[0, 1], [1, 2]], [null, [2, 3]]],
      [{ clean: "a b", correct: "x", incorrect: "y" }, { clean: "c d e", correct: "x", incorrect: "y" }], [2, 3]);
    expect(f.format).toBe("peap_widget.dataset");
    expect(f.schema).toEqual({ spans: ["A", "END"], required: ["A"] });
    expect(f.span_colors).toEqual({ A: "#4e79a7", END: "#4e79a7" });
    expect(f.examples[1]).toEqual({ clean: "c d e", correct: "x", incorrect: "y", spans: { END: [2, 3] } });
    expect(f.lengths).toEqual([2, 3]);
  });
});

describe("suggestions (the pending layer)", () => {
  const st = types(["IO", "S1", "S2", "END"]);
  // three examples of 6 tokens; the suggestion proposes for 0 and 1, leaves 2 out
  const annotations = [
    [[0, 2], [2, 3], [3, 5], [5, 6]],
    [[0, 1], [1, 3], [3, 5], [5, 6]],
    [null, null, null, [5, 6]],
  ];
  const sug = {
    id: "a1", name: "rules", span_names: ["IO", "S1", "S2", "END"],
    spans: [{ IO: [0, 2], S1: [2, 3], S2: [3, 5], END: [5, 6] },
      { IO: [0, 2], S1: [2, 3], S2: [3, 5], END: [5, 6] }, null],
    failed: { 2: "no comma" }, info: {}, status: [null, null, null],
  };

  it("maps a proposal onto the editor's span types (missing names empty, in place)", () => {
    expect(proposedRow(types(["A", "IO", "S1", "S2", "END"]), sug.spans[0]))
      .toEqual([[0, 0], [0, 2], [2, 3], [3, 5], [5, 6]]);
    expect(proposedRow(types(["IO", "X", "S1", "S2", "END"]), sug.spans[0]))
      .toEqual([[0, 2], [2, 2], [2, 3], [3, 5], [5, 6]]);
    expect(proposedRow(st, null)).toBeNull();
    expect(differingSpans(st, [[0, 1], [1, 3], null], [[0, 1], [1, 2], null])).toEqual(["S1"]);
  });

  it("summarizes: agrees, disagrees (which spans), left out with the reason", () => {
    const sm = suggestionSummary(sug, st, annotations);
    expect(sm.status).toEqual(["agrees", "disagrees", "left out"]);
    expect(sm.differs[1]).toEqual(["IO", "S1"]);
    expect(sm.pending).toEqual([0, 1]);
    expect(sm.disagree).toEqual([1]);
    expect(sm.leftOut).toEqual([[2, "no comma"]]);
    expect(suggestionSummary({}, st, annotations).status).toEqual([]);
  });

  it("accepts and rejects as new values (nothing mutated); only pending examples", () => {
    const frozen = JSON.stringify([annotations, sug]);
    const a = decide(st, annotations, sug, [1, 2], "accepted");
    expect(a.done).toEqual([1]);
    expect(a.annotations[1]).toEqual([[0, 2], [2, 3], [3, 5], [5, 6]]);
    expect(a.annotations[0]).toBe(annotations[0]);
    expect(a.suggestion.status).toEqual([null, "accepted", null]);
    const r = decide(st, a.annotations, a.suggestion, null, "rejected");
    expect(r.done).toEqual([0]);
    expect(r.annotations).toEqual(a.annotations);
    expect(suggestionSummary(r.suggestion, st, r.annotations)).toMatchObject({ accepted: 1, rejected: 1, pending: [] });
    expect(decide(st, r.annotations, r.suggestion, null, "accepted").done).toEqual([]);
    expect(JSON.stringify([annotations, sug])).toBe(frozen);
  });

  it("undo restores the suggestion only within the same run", () => {
    const snap = { span_types: st, annotations, current: 1, suggestion: sug };
    expect(restoreValues(snap, { ...sug, status: [null, "accepted", null] }).suggestion).toBe(sug);
    expect(restoreValues(snap, { ...sug, id: "b2" })).not.toHaveProperty("suggestion");
    expect(restoreValues(snap, {})).toEqual({ span_types: st, annotations, current: 1 });
  });

  it("formats progress and the running counts", () => {
    expect(formatInfo({ tokens: 12345, cost: 0.01234, requests: 3, model: "m", x: null })).toBe("12,345 tokens · $0.0123 · 3 requests · model m");
    expect(progressOf({ running: true, name: "llm", done: 3, total: 12, info: { tokens: 40 } }))
      .toEqual({ text: "Running llm… 3 / 12 examples · 40 tokens", fraction: 0.25, running: true, error: false });
    expect(progressOf({ running: false, name: "llm", error: "llm failed: boom" })).toMatchObject({ text: "llm failed: boom", error: true });
    expect(progressOf({ running: false, name: "rules", message: "3 proposed", done: 3, total: 3 }).text).toBe("rules: 3 proposed");
    expect(progressOf({}).text).toBe("");
  });

  it("shades tokens by |score| relative to the example's largest", () => {
    expect(saliencyLevels([1, -4, null, 2, NaN])).toEqual([0.25, 1, 0, 0.5, 0]);
    expect(saliencyLevels([0, 0])).toEqual([0, 0]);
  });

  it("the downloaded file carries a pending suggestion", () => {
    const doc = fileContent(st, annotations, [{}, {}, {}], [6, 6, 6], sug);
    expect(doc.suggestion).toBe(sug);
    expect(fileContent(st, annotations, [{}, {}, {}], [6, 6, 6], {})).not.toHaveProperty("suggestion");
  });
});
