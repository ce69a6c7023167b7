// SchemaEditor front end: draws the state (traits) and turns clicks and keys into edits.
// The edits themselves (span assignment, span types, validation, undo) are in logic.js.
import css from "./style.css";
import { download, h, injectStyle } from "../lib/dom.js";
import { onChange } from "../lib/model.js";
import * as L from "./logic.js";

const HELP = [
  ["Select", "click · shift-click · drag · Ctrl+A · Tab to the tokens, ← → move, Shift+← → extend, Home End"],
  ["Assign", "1–9 or a span type button · 0 / Del clears"],
  ["Examples", "← → (outside the tokens) or j k · n next invalid · numbered from 0, as ds.examples[i]"],
  ["Undo", "Ctrl+Z · redo Ctrl+Shift+Z / Ctrl+Y"],
  ["Suggestion", "a accept · r reject (this example) · the list jumps to the examples that differ"],
  ["•", "required span (never empty)"],
];

/** Replace an element's children, skipping null / false ones. */
const fill = (el, ...children) => el.replaceChildren(...children.flat().filter((c) => c != null && c !== false));
// What to do about each broken rule, shown under the rule's own message.
const HINTS = {
  missing_span: "Tag its tokens, or press ∅ next to it below to mark it empty here.",
  contiguous: "Every token belongs to exactly one span, and the spans follow the schema order.",
  nonempty: "Tag at least one token with it, or untick “required” under Span types.",
  last_token_alone: "The last span holds exactly the last token.",
  out_of_range: "The range reaches past the prompt's tokens: tag the span again.",
  reversed: "Tag the span again.",
};
const clamp = (x, lo, hi) => Math.max(lo, Math.min(hi, x));
const pad = (ranges, n) => Array.from({ length: n }, (_, j) => ranges?.[j] ?? null);
const rangeText = (r) => (r == null ? "not annotated" : r[0] === r[1] ? "empty" : `[${r[0]}, ${r[1]})`);

function render({ model, el }) {
  injectStyle(el, "schema-editor", css);
  const root = h("div", {
    class: "pse", tabindex: "0",
    // keep JupyterLab's command-mode shortcuts (j, k, arrows, z...) out of the editor
    "data-lm-suppress-shortcuts": "true", "data-p-suppress-shortcuts": "true",
  });
  const box = {};
  for (const name of ["header", "suggest", "palette", "panel", "nav", "prompt", "tokens", "spans", "status", "help"]) {
    box[name] = root.appendChild(h("div", { class: `pse-${name}` }));
  }
  el.append(root);

  // UI state that is not synced: the selection, the open panels, the undo history.
  // `cursor`: the token chip that takes the focus (roving tabindex: the only chip with tabindex 0)
  const ui = { sel: null, dragging: false, panel: false, colorOf: -1, notice: "", typeError: "",
    history: L.createHistory(), own: false, cursor: 0,
    // the Suggest panel: open, the suggester picked, a run asked for (until the kernel answers),
    // saliency shading on
    suggestOpen: (model.get("suggesters") ?? []).length > 0 || L.hasSuggestion(model.get("suggestion")),
    pick: 0, asked: false, shade: true };

  const get = (name) => model.get(name);
  const types = () => get("span_types") ?? [];
  const tokens = () => get("tokens") ?? [];
  const current = () => clamp(get("current") ?? 0, 0, Math.max(0, tokens().length - 1));
  const state = () => ({ span_types: types(), annotations: get("annotations") ?? [] });
  const suggestion = () => get("suggestion") ?? {};
  const snapshot = () => ({ ...state(), current: current(), suggestion: suggestion() });

  function write(values, opts = {}) {
    ui.own = true;
    try {
      for (const [k, v] of Object.entries(values)) model.set(k, v);
      model.save_changes();
    } finally {
      ui.own = false;
    }
    draw(opts);
  }

  /** An undoable edit of span_types / annotations. */
  function commit(values, opts) {
    ui.history = L.record(ui.history, snapshot());
    ui.notice = "";
    write(values, opts);
  }

  function restore(step) {
    const r = step(ui.history, snapshot());
    if (!r) return say(step === L.undo ? "Nothing to undo." : "Nothing to redo.");
    ui.history = r.history;
    ui.sel = null;
    ui.notice = "";
    write(L.restoreValues(r.state, suggestion()));
  }

  function say(text) {
    ui.notice = text;
    drawStatus();
  }

  // --- edits -----------------------------------------------------------------------------

  function editCurrent(fn) {
    const n = types().length;
    commit({ annotations: L.editExample(get("annotations"), current(), (r) => fn(pad(r, n))) });
  }

  function selected() {
    const r = L.selectionRange(ui.sel);
    const len = tokens()[current()]?.length ?? 0;
    return r && len ? [clamp(r[0], 0, len - 1), clamp(r[1], 1, len)] : null;
  }

  function assignType(k) {
    const st = types();
    if (k >= st.length) return say(`There is no span type ${k + 1}.`);
    const r = selected();
    if (!r) return say(`Select tokens first (click, shift-click or drag), then press ${k + 1} to make them ${st[k].name}.`);
    ui.sel = null;
    editCurrent((ranges) => L.assign(ranges, k, r[0], r[1]));
  }

  function clearSelection() {
    const r = selected();
    if (!r) return say("Select tokens first to clear their span.");
    ui.sel = null;
    editCurrent((ranges) => L.clearTokens(ranges, r[0], r[1]));
  }

  function go(i) {
    const n = tokens().length;
    if (!n) return;
    ui.sel = null;
    ui.notice = "";
    ui.cursor = 0;
    write({ current: clamp(i, 0, n - 1) });
  }

  function nextInvalid() {
    const { errors } = summary();
    const n = errors.length;
    for (let d = 1; d <= n; d++) {
      const i = (current() + d) % n;
      if (errors[i]) return go(i);
    }
    say("Every example is valid.");
  }

  function summary() {
    return L.summarize(types(), get("annotations") ?? [], tokens().map((t) => t.length));
  }

  function renameType(i, input) {
    const name = input.value;
    if (name === types()[i]?.name) return;
    const why = L.checkName(types(), name, i);
    if (why) {
      input.value = types()[i].name;
      ui.typeError = `Cannot rename: ${why}.`;
      return drawPanel();
    }
    ui.typeError = "";
    box.panel.querySelector("[data-role='type-error']")?.remove();
    input.closest("tr").dataset.typeRow = name;   // the panel stays (a click may be under way)
    commit(L.updateSpanType(state(), i, { name }), { keepPanel: true });
  }

  function addType(input) {
    const name = input.value.trim();
    const why = L.checkName(types(), name);
    if (why) {
      ui.typeError = `Cannot add: ${why}.`;
      return drawPanel();
    }
    ui.typeError = "";
    const color = L.nextColor(get("palette") ?? ["#4e79a7"], types());
    commit(L.addSpanType(state(), { name, color, required: false }));
    box.panel.querySelector("[data-field='new-name']")?.focus();
  }

  function downloadFile() {
    const toks = tokens();
    const doc = L.fileContent(types(), get("annotations") ?? [], get("examples") ?? toks.map(() => ({})),
      toks.map((t) => t.length), suggestion());
    const name = (get("save_path") || "annotations.json").split(/[\\/]/).pop();
    download(name, JSON.stringify(doc, null, 1), "application/json");
  }

  // --- suggestions ---------------------------------------------------------------------------

  const hasKernel = () => model.kernel !== false;

  function runSuggester() {
    const names = get("suggesters") ?? [];
    if (!hasKernel() || !names.length || running()) return;
    const name = names[clamp(ui.pick, 0, names.length - 1)];
    ui.asked = true;           // until the kernel's first status arrives
    model.send({ type: "suggest", name });
    drawSuggest();
  }

  const running = () => ui.asked || !!get("suggest_status")?.running;

  /** Accept or reject the proposal of `examples` (null: every pending one): an undoable edit. */
  function decideOn(examples, verdict) {
    const sug = suggestion();
    if (!L.hasSuggestion(sug)) return say("No suggestion is pending.");
    const r = L.decide(types(), get("annotations") ?? [], sug, examples, verdict);
    if (!r.done.length) {
      return say(examples?.length === 1 ? `Example ${examples[0]} has no pending suggestion.` : "No suggestion is pending.");
    }
    const values = { suggestion: r.suggestion };
    if (verdict === "accepted") values.annotations = r.annotations;
    commit(values);
    say(`${verdict === "accepted" ? "Accepted" : "Rejected"} the suggestion for ${r.done.length === 1 ? `example ${r.done[0]}` : `${r.done.length} examples`} (Ctrl+Z undoes).`);
  }

  // --- drawing ---------------------------------------------------------------------------

  function draw(opts = {}) {
    const sum = summary();
    drawHeader(sum);
    drawSuggest();
    drawPalette();
    if (!opts.keepPanel) drawPanel();
    drawNav(sum);
    drawExample(sum.errors[current()] ?? null);
    drawStatus(sum.errors[current()] ?? null);
    box.help.replaceChildren(...HELP.map(([k, v]) => h("span", {}, h("b", {}, k), " ", v)));
  }

  function button(label, action, onclick, attrs = {}) {
    return h("button", {
      type: "button", class: "pse-btn", "data-action": action, ...attrs,
      onclick: (e) => { onclick(e); root.focus({ preventScroll: true }); },
    }, label);
  }

  function drawHeader(sum) {
    const offline = model.kernel === false;
    const path = get("save_path");
    const failed = offline ? "" : (get("save_error") ?? "");   // the kernel could not write the file
    const saved = offline ? "Offline page: edits stay in this page; Download JSON keeps them."
      : failed ? failed
      : path ? `Autosaved to ${path}` : "Not saved to a file (SchemaEditor(..., path=...) autosaves).";
    fill(box.header,
      h("div", { class: "pse-title" }, "Span schema"),
      h("div", { class: "pse-counts", "data-role": "counts" },
        h("span", { class: "pse-count ok" }, h("b", { "data-role": "valid-count" }, sum.valid), " valid"),
        h("span", { class: `pse-count ${sum.invalid ? "bad" : ""}` },
          h("b", { "data-role": "invalid-count" }, sum.invalid), " invalid"),
        h("span", { class: "pse-muted" }, `of ${sum.errors.length} examples`)),
      h("div", { class: `pse-saved ${failed ? "bad" : "pse-muted"}`, "data-role": "save-status",
        "data-failed": failed ? "true" : "false", role: failed ? "alert" : null, title: saved }, saved),
      h("div", { class: "pse-actions" },
        button("↶ Undo", "undo", () => restore(L.undo), { disabled: !ui.history.past.length, title: "Undo (Ctrl+Z)" }),
        button("↷ Redo", "redo", () => restore(L.redo), { disabled: !ui.history.future.length, title: "Redo (Ctrl+Shift+Z or Ctrl+Y)" }),
        button("Span types…", "types", () => { ui.panel = !ui.panel; drawPanel(); },
          { class: `pse-btn ${ui.panel ? "on" : ""}`, title: "Add, rename, recolour, reorder, delete span types" }),
        button("Suggest…", "suggest-panel", () => { ui.suggestOpen = !ui.suggestOpen; draw(); },
          { class: `pse-btn ${ui.suggestOpen ? "on" : ""}`, title: "Run a schema suggester; review its proposals" }),
        button("Download JSON", "download", downloadFile, { title: "The annotation file (SchemaEditor(ds, path=file) resumes it)" })),
    );
  }

  function drawSuggest() {
    if (!ui.suggestOpen) { box.suggest.replaceChildren(); return; }
    const names = get("suggesters") ?? [];
    ui.pick = clamp(ui.pick, 0, Math.max(0, names.length - 1));
    const prog = L.progressOf(get("suggest_status"));
    const busy = running();
    const offline = !hasKernel();
    const why = offline ? "Running a suggester needs a kernel (this page is offline); the pending suggestion can still be reviewed here."
      : !names.length ? "No suggesters: SchemaEditor(..., suggesters=[...]) or editor.add_suggester(s)." : null;
    const runRow = h("div", { class: "pse-sg-run" },
      h("span", { class: "pse-sg-title" }, "Suggest"),
      h("select", { "data-role": "suggester", "aria-label": "suggester", disabled: busy || !names.length || offline,
        onchange: (e) => { ui.pick = Number(e.target.value); } },
      ...(names.length ? names : ["(none)"]).map((n, k) => h("option", { value: k, selected: k === ui.pick }, n))),
      button(busy ? "Running…" : "Run", "run", runSuggester, {
        disabled: busy || !names.length || offline, class: "pse-btn primary",
        title: offline ? "Needs a kernel" : "Run the suggester on every example (in the kernel)" }),
      busy || prog.fraction != null && prog.running ? h("div", { class: "pse-progress", "data-role": "progress",
        role: "progressbar", "aria-valuenow": Math.round(100 * (prog.fraction ?? 0)), "aria-valuemin": 0, "aria-valuemax": 100 },
      h("div", { class: "pse-progress-bar", style: { width: `${Math.round(100 * (prog.fraction ?? 0))}%` } })) : null,
      h("span", { class: `pse-sg-status ${prog.error ? "bad" : "pse-muted"}`, "data-role": "suggest-status",
        "data-running": busy ? "true" : "false", role: prog.error ? "alert" : null },
      busy && !prog.running ? "Asking the kernel…" : prog.text),
      why ? h("span", { class: "pse-muted pse-sg-why", "data-role": "no-kernel" }, why) : null);
    const sug = suggestion();
    if (!L.hasSuggestion(sug)) {
      fill(box.suggest, runRow);
      return;
    }
    const st = types();
    const sm = L.suggestionSummary(sug, st, get("annotations") ?? []);
    const cur = current();
    const here = sm.status[cur];
    const pendingHere = here === "disagrees" || here === "agrees";
    const hereText = here === "disagrees" ? ["differs in ", ...sm.differs[cur].flatMap((n, k) => [k ? ", " : "", h("code", {}, n)])]
      : here === "agrees" ? ["agrees with the annotation"]
      : here === "left out" ? [`left out: ${sug.failed?.[String(cur)] ?? "no proposal"}`]
      : [here];
    const jump = (i, cls, title) => h("button", { type: "button", class: `pse-sg-ex ${cls} ${i === cur ? "current" : ""}`,
      "data-sg-example": i, title, onclick: () => { go(i); root.focus({ preventScroll: true }); } }, i);
    const MAX = 200;
    const list = (label, items, cls, role) => items.length ? h("div", { class: "pse-sg-list", "data-role": role },
      h("span", { class: "pse-sg-label" }, label),
      ...items.slice(0, MAX).map(([i, title]) => jump(i, cls, title)),
      items.length > MAX ? h("span", { class: "pse-muted" }, ` +${items.length - MAX} more`) : null) : null;
    fill(box.suggest, runRow,
      h("div", { class: "pse-sg-summary", "data-role": "suggest-summary" },
        h("span", {}, "Pending from ", h("b", {}, sug.name || sug.source || "a suggester"),
          sug.source && sug.source !== sug.name ? h("span", { class: "pse-muted" }, ` (${sug.source})`) : null, ":"),
        h("span", { class: "pse-sg-count", "data-count": "pending" }, h("b", {}, sm.pending.length), " pending"),
        h("span", { class: "pse-sg-count differ", "data-count": "disagree" }, h("b", {}, sm.disagree.length), " differ"),
        h("span", { class: "pse-sg-count", "data-count": "accepted" }, h("b", {}, sm.accepted), " accepted"),
        h("span", { class: "pse-sg-count", "data-count": "rejected" }, h("b", {}, sm.rejected), " rejected"),
        h("span", { class: "pse-sg-count", "data-count": "left-out" }, h("b", {}, sm.leftOut.length), " left out"),
        h("span", { class: "pse-sg-all" },
          button("Accept all", "accept-all", () => decideOn(null, "accepted"),
            { disabled: !sm.pending.length, title: "Replace every pending example's annotation by the suggestion (undoable)" }),
          button("Reject all", "reject-all", () => decideOn(null, "rejected"),
            { disabled: !sm.pending.length, title: "Dismiss every pending proposal (undoable)" }))),
      h("div", { class: `pse-sg-here ${here === "disagrees" ? "differs" : ""}`, "data-role": "suggest-here", "data-status": here },
        pendingHere ? h("span", { class: "pse-sg-legend", title: "The suggestion is drawn under the tokens" }) : null,
        h("span", {}, h("b", {}, `Example ${cur}`), ": suggestion ", ...hereText),
        button("Accept", "accept-one", () => decideOn([cur], "accepted"), { disabled: !pendingHere, title: "Take the suggestion for this example (a)" }),
        button("Reject", "reject-one", () => decideOn([cur], "rejected"), { disabled: !pendingHere, title: "Keep the annotation, dismiss the suggestion (r)" })),
      list("Differ:", sm.disagree.map((i) => [i, `Example ${i}: ${sm.differs[i].join(", ")} differ`]), "differ", "disagree-list"),
      list("Left out:", sm.leftOut.map(([i, why]) => [i, `Example ${i}: ${why}`]), "left", "left-out-list"));
  }

  function drawPalette() {
    const st = types();
    fill(box.palette,
      ...st.map((t, k) => h("button", {
        type: "button", class: "pse-type", "data-span-type": t.name, "data-index": k,
        title: `Make the selected tokens ${t.name}${k < 9 ? ` (key ${k + 1})` : ""}`,
        style: { background: L.tint(t.color, 0.22), borderColor: t.color },
        onmousedown: (e) => e.preventDefault(),   // keep the selection and the focus
        onclick: () => assignType(k),
      }, k < 9 ? h("kbd", {}, k + 1) : null, h("span", { class: "pse-swatch", style: { background: t.color } }),
      t.name, t.required || k === st.length - 1 ? h("span", { class: "pse-req", title: "required: never empty" }, "•") : null)),
      h("button", { type: "button", class: "pse-type pse-clear", "data-action": "clear",
        title: "Unlabel the selected tokens (0, Delete)", onmousedown: (e) => e.preventDefault(),
        onclick: clearSelection }, h("kbd", {}, "0"), "clear"),
      h("span", { class: "pse-muted pse-selinfo", "data-role": "selection" }),
    );
    paintSelection();
  }

  function drawPanel() {
    if (!ui.panel) { box.panel.replaceChildren(); return; }
    const st = types();
    const palette = get("palette") ?? [];
    const rows = st.map((t, i) => {
      const last = i === st.length - 1;
      const row = h("tr", { "data-type-row": t.name },
        h("td", {}, h("button", { type: "button", class: "pse-swatch big", "data-action": "color",
          title: "Recolour", style: { background: t.color },
          onclick: () => { ui.colorOf = ui.colorOf === i ? -1 : i; drawPanel(); } })),
        h("td", {}, h("input", { type: "text", value: t.name, "data-field": "name", "aria-label": "span type name",
          onchange: (e) => renameType(i, e.target),
          onkeydown: (e) => { if (e.key === "Enter") e.target.blur(); if (e.key === "Escape") { e.target.value = types()[i].name; e.target.blur(); } } })),
        h("td", {}, h("label", { title: last ? "The last span holds the last token: always required" : "Required spans may not be empty" },
          h("input", { type: "checkbox", "data-field": "required", checked: t.required || last, disabled: last,
            onchange: (e) => commit(L.updateSpanType(state(), i, { required: e.target.checked })) }), " required")),
        h("td", { class: "pse-order" },
          button("↑", "up", () => commit(L.moveSpanType(state(), i, i - 1)), { disabled: i === 0, title: "Move earlier" }),
          button("↓", "down", () => commit(L.moveSpanType(state(), i, i + 1)), { disabled: last, title: "Move later" }),
          button("Delete", "delete", () => commit(L.removeSpanType(state(), i)),
            { disabled: st.length === 1, title: "Delete this span type (its tokens become unlabelled)" })),
      );
      if (ui.colorOf !== i) return [row];
      const pick = (color) => { ui.colorOf = -1; commit(L.updateSpanType(state(), i, { color })); };
      return [row, h("tr", { class: "pse-colors" }, h("td", { colspan: 4 },
        ...palette.map((c) => h("button", { type: "button", class: "pse-swatch big", "data-color": c,
          title: c, style: { background: c }, onclick: () => pick(c) })),
        h("input", { type: "color", value: L.isColor(t.color) ? t.color : "#888888", "data-field": "color",
          title: "Any colour", onchange: (e) => pick(e.target.value) })))];
    }).flat();
    const add = h("input", { type: "text", placeholder: "new span type", "data-field": "new-name",
      onkeydown: (e) => { if (e.key === "Enter") addType(e.target); } });
    fill(box.panel,
      h("table", { class: "pse-table" }, h("tbody", {}, ...rows)),
      h("div", { class: "pse-add" }, add, button("Add", "add-type", () => addType(add)),
        h("span", { class: "pse-muted" }, "New span types go before the last one and start empty.")),
      ui.typeError ? h("div", { class: "pse-type-error", "data-role": "type-error" }, ui.typeError) : null,
    );
  }

  function drawNav(sum) {
    const n = sum.errors.length;
    const cur = current();
    const sal = get("saliency");
    const sg = L.suggestionSummary(suggestion(), types(), get("annotations") ?? []);
    fill(box.nav,
      button("‹", "prev", () => go(cur - 1), { disabled: cur === 0, title: "Previous example (← or k)" }),
      h("span", { class: "pse-position", "data-role": "position",
        title: "Examples are numbered from 0, as ds.examples[i] and Python's error messages" },
      `Example ${cur} (0–${n - 1})`),
      button("›", "next", () => go(cur + 1), { disabled: cur >= n - 1, title: "Next example (→ or j)" }),
      button("Next invalid", "next-invalid", nextInvalid, { disabled: !sum.invalid, title: "n" }),
      sal?.scores ? h("label", { class: "pse-shade", title: "Shade each token by |score| relative to the example's largest" },
        h("input", { type: "checkbox", "data-field": "shade", checked: ui.shade,
          onchange: (e) => { ui.shade = e.target.checked; drawExample(summary().errors[current()] ?? null); } }),
        " shade by ", h("b", {}, sal.label || "saliency")) : null,
      h("div", { class: "pse-strip" }, ...sum.errors.map((err, i) => h("button", {
        type: "button", "data-example": i, tabindex: "-1",
        class: `pse-dot ${err ? "bad" : "ok"} ${i === cur ? "current" : ""} ${sg.status[i] === "disagrees" ? "sg" : ""}`,
        title: `Example ${i}: ${err ? `${err.span ?? ""} ${err.rule}` : "valid"}${sg.status[i] === "disagrees" ? " · the suggestion differs" : ""}`,
        onclick: () => { go(i); root.focus({ preventScroll: true }); },
      }))),
    );
  }

  function drawExample(err) {
    const cur = current();
    const toks = tokens()[cur] ?? [];
    const st = types();
    const ranges = pad(get("annotations")?.[cur], st.length);
    const fields = get("examples")?.[cur] ?? {};
    fill(box.prompt,
      h("span", { class: "pse-clean" }, fields.clean ?? ""),
      fields.correct != null ? h("span", { class: "pse-answer" }, ` → ${fields.correct}`,
        fields.incorrect != null ? h("span", { class: "pse-muted" }, ` (not ${fields.incorrect})`) : null) : null,
    );
    const { labels, overlap } = L.labelsOf(ranges, toks.length);
    // the pending suggestion for this example, drawn under the chips
    const sug = suggestion();
    const proposed = L.hasSuggestion(sug) && !sug.status?.[cur] ? sug.spans[cur] : null;
    const prow = L.proposedRow(st, proposed);
    const plabels = prow ? L.labelsOf(prow, toks.length).labels : null;
    const sal = get("saliency");
    const scores = sal?.scores?.[cur] ?? null;
    const levels = ui.shade && scores ? L.saliencyLevels(scores) : null;
    const errIndex = err?.span != null ? st.findIndex((t) => t.name === err.span) : -1;
    const bad = (i) => !!err?.tokens && i >= err.tokens[0] && i < err.tokens[1];
    const hadFocus = box.tokens.contains(document.activeElement);
    ui.cursor = clamp(ui.cursor, 0, Math.max(0, toks.length - 1));
    box.tokens.setAttribute("role", "listbox");
    box.tokens.setAttribute("aria-multiselectable", "true");
    box.tokens.setAttribute("aria-label", `tokens of example ${cur}: arrows move, Shift+arrows extend the selection, 1–9 tag it`);
    box.tokens.replaceChildren(...toks.map((tok, i) => {
      const u = labels[i];
      const t = st[u];
      const first = u !== -1 && labels[i - 1] !== u;
      const p = plabels ? plabels[i] : -1;
      const pt = st[p];
      const differs = !!plabels && p !== u;
      const score = scores?.[i];
      const extra = (pt ? ` — suggested: ${pt.name}` : "") +
        (typeof score === "number" ? ` — ${sal.label || "saliency"} ${score.toPrecision(3)}` : "");
      return h("div", {
        class: ["pse-chip", t ? "labelled" : "unlabelled", bad(i) ? "error" : "",
          overlap[i] ? "overlap" : "", plabels ? "proposed" : "", differs ? "differs" : ""].join(" ").trim(),
        "data-token": i, "data-span": t?.name ?? "", "data-suggested": plabels ? (pt?.name ?? "") : null,
        "data-saliency": levels ? levels[i].toFixed(3) : null,
        title: `token ${i}: ${JSON.stringify(tok)}${t ? ` — ${t.name}` : ""}${extra}`,
        role: "option", tabindex: i === ui.cursor ? "0" : "-1", "aria-selected": "false",
        "aria-label": `token ${i} ${L.displayToken(tok)}${t ? `, ${t.name}` : ", not tagged"}`,
        onfocus: () => setCursor(i),
        style: t ? { background: L.tint(t.color, 0.28), borderColor: t.color } : {},
      }, h("span", { class: "pse-tag", style: t ? { color: L.tint(t.color, 1) } : {} }, first ? t.name : "\u00a0"),
      h("span", { class: "pse-text", style: levels && levels[i] > 0
        ? { background: `rgba(245, 158, 11, ${(0.12 + 0.68 * levels[i]).toFixed(3)})` } : {} }, L.displayToken(tok)),
      h("span", { class: "pse-idx" }, i),
      plabels ? h("span", { class: "pse-sugg", style: pt ? { background: pt.color, color: "#fff" } : {} },
        pt && plabels[i - 1] !== p ? pt.name : "\u00a0") : null);
    }));
    box.spans.replaceChildren(...st.map((t, k) => h("div", {
      class: `pse-span ${k === errIndex ? "error" : ""}`, "data-span-row": t.name,
    }, h("span", { class: "pse-swatch", style: { background: t.color } }),
    h("span", { class: "pse-span-name" }, t.name),
    h("span", { class: "pse-range", "data-role": "range" }, rangeText(ranges[k])),
    h("button", { type: "button", class: "pse-mini", "data-action": "empty",
      title: `Mark ${t.name} empty in this example`, onclick: () => { editCurrent((r) => L.setEmpty(r, k)); root.focus({ preventScroll: true }); } }, "∅"))));
    paintSelection();
    if (hadFocus) box.tokens.children[ui.cursor]?.focus({ preventScroll: true });
  }

  /** Make token chip `i` (clamped) the one with tabindex 0. */
  function setCursor(i) {
    const chips = box.tokens.children;
    if (!chips.length) return;
    ui.cursor = clamp(i, 0, chips.length - 1);
    for (const c of chips) c.tabIndex = Number(c.dataset.token) === ui.cursor ? 0 : -1;
  }

  /** Move the keyboard focus to token chip `i` (clamped). */
  function focusChip(i) {
    setCursor(i);
    box.tokens.children[ui.cursor]?.focus({ preventScroll: false });
  }

  function drawStatus(err = summary().errors[current()] ?? null) {
    const cur = current();
    const parts = [];
    if (err) {
      parts.push(h("div", { class: "pse-error", "data-role": "error", "data-rule": err.rule, "data-span": err.span ?? "" },
        h("b", {}, `Example ${cur} is invalid`),
        err.span != null ? [" — span ", h("code", {}, err.span)] : null, `: ${err.message} `,
        h("span", { class: "pse-rule" }, err.rule),
        HINTS[err.rule] ? h("div", { class: "pse-hint" }, HINTS[err.rule]) : null));
    } else if (tokens().length) {
      parts.push(h("div", { class: "pse-ok", "data-role": "ok" }, `✓ Example ${cur} is valid`));
    }
    if (ui.notice) parts.push(h("div", { class: "pse-notice", "data-role": "notice" }, ui.notice));
    fill(box.status, parts);
  }

  /** Show the selection on the chips without redrawing them (cheap while dragging). */
  function paintSelection() {
    const r = selected();
    for (const chip of box.tokens.children) {
      const i = Number(chip.dataset.token);
      const on = !!r && i >= r[0] && i < r[1];
      chip.classList.toggle("selected", on);
      chip.setAttribute("aria-selected", String(on));
    }
    const info = box.palette.querySelector("[data-role='selection']");
    if (info) {
      info.textContent = r ? `${r[1] - r[0]} token${r[1] - r[0] > 1 ? "s" : ""} selected [${r[0]}, ${r[1]}): press 1–9 or click a span type`
        : "Select tokens by click, shift-click or drag.";
    }
  }

  // --- events ----------------------------------------------------------------------------

  const chipOf = (e) => e.target.closest?.("[data-token]");
  box.tokens.addEventListener("mousedown", (e) => {
    if (e.button !== 0) return;
    e.preventDefault();
    const chip = chipOf(e);
    // the mouse leaves the focus on the editor (arrows keep changing examples); the clicked
    // chip becomes the one Tab reaches
    root.focus({ preventScroll: true });
    if (!chip) { ui.sel = null; paintSelection(); return; }
    const i = Number(chip.dataset.token);
    setCursor(i);
    ui.sel = e.shiftKey && ui.sel ? { anchor: ui.sel.anchor, focus: i } : { anchor: i, focus: i };
    ui.dragging = true;
    ui.notice = "";
    paintSelection();
    drawStatus();
  });
  box.tokens.addEventListener("mouseover", (e) => {
    const chip = chipOf(e);
    if (!ui.dragging || !chip || !ui.sel) return;
    ui.sel = { anchor: ui.sel.anchor, focus: Number(chip.dataset.token) };
    paintSelection();
  });
  const endDrag = () => { ui.dragging = false; };
  window.addEventListener("mouseup", endDrag);

  root.addEventListener("keydown", (e) => {
    if (e.target.closest?.("input, textarea, select")) return;   // typing in the span-type panel
    const key = e.key;
    const mod = e.ctrlKey || e.metaKey;
    let handled = true;
    const onChip = !!e.target.closest?.("[data-token]") && box.tokens.contains(e.target);
    const nTok = tokens()[current()]?.length ?? 0;
    const step = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -1, ArrowDown: 1 }[key];
    if (onChip && !mod && !e.altKey && (step || key === "Home" || key === "End" || key === " ")) {
      // in the tokens: arrows move the focus, Shift+arrows extend the selection from its anchor
      if (key === " ") {
        ui.sel = e.shiftKey && ui.sel ? { anchor: ui.sel.anchor, focus: ui.cursor }
          : { anchor: ui.cursor, focus: ui.cursor };
      } else {
        const to = key === "Home" ? 0 : key === "End" ? nTok - 1 : clamp(ui.cursor + step, 0, nTok - 1);
        const from = ui.cursor;
        focusChip(to);
        ui.sel = e.shiftKey ? { anchor: ui.sel?.anchor ?? from, focus: to } : { anchor: to, focus: to };
      }
      ui.notice = "";
      paintSelection();
      drawStatus();
      e.preventDefault();
      e.stopPropagation();
      return;
    }
    if (mod && key.toLowerCase() === "z") restore(e.shiftKey ? L.redo : L.undo);
    else if (mod && key.toLowerCase() === "y") restore(L.redo);
    else if (mod && key.toLowerCase() === "a") {
      const n = tokens()[current()]?.length ?? 0;
      ui.sel = n ? { anchor: 0, focus: n - 1 } : null;
      paintSelection();
    } else if (mod || e.altKey) handled = false;
    else if (e.shiftKey && (key === "ArrowLeft" || key === "ArrowRight") && ui.sel) {
      const n = tokens()[current()]?.length ?? 1;
      ui.sel = { anchor: ui.sel.anchor, focus: clamp(ui.sel.focus + (key === "ArrowLeft" ? -1 : 1), 0, n - 1) };
      paintSelection();
    } else if (key === "ArrowLeft" || key === "k") go(current() - 1);
    else if (key === "ArrowRight" || key === "j") go(current() + 1);
    else if (/^[1-9]$/.test(key)) assignType(Number(key) - 1);
    else if (key === "0" || key === "Delete" || key === "Backspace") clearSelection();
    else if (key === "Escape") { ui.sel = null; ui.colorOf = -1; paintSelection(); }
    else if (key === "n") nextInvalid();
    else if (key === "a") decideOn([current()], "accepted");
    else if (key === "r") decideOn([current()], "rejected");
    else handled = false;
    if (handled) {
      e.preventDefault();
      e.stopPropagation();
    }
  });

  // Changes from Python (or another view): redraw; edits from elsewhere end this view's undo
  // history, whose snapshots would undo them too.
  const stopEdits = onChange(model, ["span_types", "annotations"], () => {
    if (ui.own) return;
    ui.history = L.createHistory();
    draw();
  });
  const stopOther = onChange(model, ["tokens", "examples", "current", "palette", "save_path", "save_error",
    "suggestion", "saliency"], () => {
    if (!ui.own) draw();
  });
  // a new suggestion keeps the undo history: steps recorded under an older run restore only
  // the annotations (L.restoreValues)
  const stopRun = onChange(model, ["suggest_status", "suggesters"], () => {
    ui.asked = false;
    if (!ui.suggestOpen && (get("suggesters") ?? []).length) ui.suggestOpen = true;
    drawSuggest();
  });
  // Python's accept / reject (editor.accept_suggestion) come first as a message, committed
  // here as this page's own edit so that Ctrl+Z undoes them; the trait update that follows
  // then holds the same values
  const onCustom = (msg) => {
    if (msg?.type === "apply" && msg.values && typeof msg.values === "object") commit(msg.values);
  };
  model.on("msg:custom", onCustom);

  draw();
  return () => {
    window.removeEventListener("mouseup", endDrag);
    stopEdits();
    stopOther();
    stopRun();
    model.off("msg:custom", onCustom);
  };
}

export default { render };
