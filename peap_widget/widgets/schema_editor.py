"""SchemaEditor: tag the token spans of every example by hand, in a notebook or an offline page.

Example:
    >>> editor = pw.SchemaEditor(ds, path="ioi_spans.json")          # doctest: +SKIP
    >>> editor                                  # annotate in the notebook; autosaved on each change
    >>> editor.validation()                     # invalid examples: example, span, rule, message
    >>> ds2 = editor.dataset                    # a pw.Dataset once every example is valid

State (the synced traits; the front end edits the first two):

- ``span_types``: ``[{"name", "color", "required"}]`` in schema order. The last span type is
  always required (it holds exactly the last token); ``required`` marks the others that may not
  be empty.
- ``annotations``: one list per example, one entry per span type in schema order: ``[start, end]``
  (a token range, end-exclusive, ``start == end`` for an empty span) or ``None`` when that span is
  not annotated yet in that example. Ranges are exactly what ``Schema.validate`` checks, so an
  example is valid when its ranges cover every token in schema order (DESIGN.md section 7).
- ``tokens`` (token strings per example), ``examples`` (each record's other fields: clean,
  corrupted, correct, incorrect, ...), ``palette``, ``current`` (the example shown), ``save_path``.

Assigning a span type to selected tokens (in the page) makes that span exactly the selection;
the other spans give the selected tokens up and tokens the span left go to its bordering span,
so an ordered contiguous cover stays one (the rules are in ``js/schema_editor/logic.js``,
``assign``). Validation runs in the page (same rules and messages as `Schema.validate`) and in
Python (`validation`, `dataset`).

The autosave file is a ``pw.Dataset.to_json`` document plus ``span_colors`` and ``lengths`` (tokens
per example), written atomically on every change: ``pw.Dataset.from_json(path, model)`` loads a
finished annotation directly, and ``SchemaEditor(ds, path=path)`` resumes one.

Suggestions (issue 16): the editor runs schema suggesters (``peap_widget.suggest``: any callable
``suggester(examples, tokens, *, progress=None) -> Suggestion`` with a ``name``) in the kernel and
holds the result as a *pending layer* over the annotations (the ``suggestion`` trait), accepted or
rejected per example or all at once, in the page (undoable there) or from Python. The autosave
file carries the pending layer too (key ``"suggestion"``), so it survives a kernel restart.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
import dataclasses
from pathlib import Path

import traitlets as t

from ..data.dataset import FORMAT, Dataset, encode_text, tokenizer_of
from ..errors import DatasetError, PeapError, SchemaError, where_prefix
from ..util.jsonio import finite_or_none
from ..data.schema import Schema
from .base import PeapWidget

#: Span type colours, in the order new span types get them (Tableau 10).
PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2", "#edc948",
           "#ff9da7", "#9c755f", "#bab0ac"]
#: The span type an editor starts with when neither the data nor ``schema=`` names any.
DEFAULT_SPAN = "END"

_HEX = re.compile(r"^#(?:[0-9a-fA-F]{3}){1,2}$")


class SchemaEditor(PeapWidget):
    """Annotate span schemas by hand: every example's tokens as chips coloured by span type.

    ``SchemaEditor(dataset, schema=None, path=None, model=None)``

    - ``dataset``: a `pw.Dataset` (its spans are the starting point), or a list of records
      (``clean``, optional ``corrupted``, ``correct``, ``incorrect``, optional ``spans``
      ``{name: [start, end)}`` in tokens) together with ``model=`` (a pw Model or a tokenizer).
    - ``schema``: a `pw.Schema` or a list of span names. Default: the dataset's schema, else the
      span names found in the records (first seen first), else a single span type ``"END"``.
      Records without spans start with only the last span set, on the last token (its only
      valid place); spans a record lacks start unannotated.
    - ``path``: a JSON file autosaved (atomically) on every change. If it exists, its span
      types (colours too) and annotations are restored; a file of another dataset (other number
      of examples, prompts or token counts) or bad JSON raises an error and is left untouched.

    In the page: select tokens by click, shift-click or drag; press 1-9 or click a span type in
    the palette to assign it (0 / Delete clears); ← → or j k change example; Ctrl+Z undo,
    Ctrl+Shift+Z / Ctrl+Y redo. "Span types" adds, renames, recolours, reorders and deletes span
    types and marks them required. Counts of valid / invalid examples are always shown; the
    example and span in error are marked and explained.

    From Python: `schema`, `dataset` (raises a `SchemaError` naming the first invalid example,
    span and rule), `validation` (a DataFrame), `records`, and the editing methods `set_spans`,
    `add_span_type`, `rename_span_type`, `set_color`, `set_required`, `move_span_type`,
    `remove_span_type`. ``to_html(path)`` writes an offline page where the editor still works
    (its "Download JSON" button saves a file that ``SchemaEditor(ds, path=file)`` resumes).

    Suggestions: ``suggesters=[...]`` (or `add_suggester`) lists schema suggesters in the page's
    Suggest panel; Run there (or `suggest`) calls one in the kernel, with its progress shown, and
    its result becomes a pending layer (trait ``suggestion``) drawn under the chips. Span names
    the editor lacks are added as span types at their place in the suggestion's order
    (``new_spans="refuse"`` raises instead); a suggestion whose spans come in another order than
    the editor's is refused. `accept_suggestion` / `reject_suggestion` (all pending examples, or
    some), `disagreements`, `left_out` and `suggestion_report` work from Python; the page's
    accept / reject buttons are undoable edits (Ctrl+Z). A failing suggester is reported in the
    panel (``suggest_status["error"]``) and changes nothing. `show_saliency` shades the tokens by
    a per-token score (a list per example, or a DataFrame with example / position / score).

    Example:
        >>> editor = pw.SchemaEditor(records, model=model, schema=["IO", "S1", "END"],
        ...                          path="spans.json")                      # doctest: +SKIP
        >>> editor.set_spans(0, {"IO": [0, 2], "S1": [2, 5], "END": [5, 6]})  # doctest: +SKIP
        >>> editor.add_span_type("S2", required=True)    # before the last type  # doctest: +SKIP
        >>> editor.validation()                                              # doctest: +SKIP
        >>> ds = editor.dataset                                              # doctest: +SKIP

        >>> editor = pw.SchemaEditor(ds, suggesters=[ioi_rules], path="spans.json")  # doctest: +SKIP
        >>> editor.suggest("rules")             # or Run in the Suggest panel  # doctest: +SKIP
        >>> editor.disagreements()              # examples where it differs    # doctest: +SKIP
        >>> editor.accept_suggestion([0, 1, 2]); editor.reject_suggestion()  # doctest: +SKIP
        >>> editor.show_saliency(pw.token_saliency(model, ds), column="score")  # doctest: +SKIP
    """

    _bundle_name = "schema_editor"

    span_types = t.List(t.Dict()).tag(sync=True)
    annotations = t.List(t.List()).tag(sync=True)
    tokens = t.List(t.List(t.Unicode())).tag(sync=True)
    examples = t.List(t.Dict()).tag(sync=True)
    palette = t.List(t.Unicode(), default_value=PALETTE).tag(sync=True)
    current = t.Int(0).tag(sync=True)
    save_path = t.Unicode("").tag(sync=True)
    #: why the last autosave failed ("" when the file holds every edit); the page shows it
    save_error = t.Unicode("").tag(sync=True)
    #: the suggesters' names, in order (the Suggest panel lists them; `suggest` takes a name
    #: or an index)
    suggesters = t.List(t.Unicode()).tag(sync=True)
    #: the pending layer: ``{}`` or ``{"id", "name", "source", "span_names", "spans", "failed",
    #: "info", "status"}``; ``spans[i]`` is ``{name: [start, end)}`` or None (left out, reason in
    #: ``failed[str(i)]``); ``status[i]`` is None (pending), "accepted" or "rejected"
    suggestion = t.Dict().tag(sync=True)
    #: the run in progress or the last one: ``{"running", "name", "done", "total", "info",
    #: "error", "message"}``
    suggest_status = t.Dict().tag(sync=True)
    #: per-token scores that shade the chips: ``{}`` or ``{"label", "scores": [[float | None]]}``
    saliency = t.Dict().tag(sync=True)

    def __init__(self, dataset, schema=None, path=None, model=None, suggesters=None, **kwargs):
        source = _load_source(dataset, schema, model)
        state = {"span_types": source["span_types"], "annotations": source["annotations"]}
        path = Path(path).expanduser() if path is not None else None
        restored = path is not None and path.exists()
        if restored:
            state = read_annotation_file(path, source["examples"], source["tokens"])
        self._dataset = source["dataset"]
        self._tokenizer = source["tokenizer"]
        self._path = None            # no autosave while the traits are first set
        self._last_saved = None
        self._suggesters: list[tuple[str, object]] = []
        super().__init__(tokens=source["tokens"], examples=source["examples"],
                         save_path=str(path) if path is not None else "", **state, **kwargs)
        for s in suggesters or ():
            self.add_suggester(s)
        self.on_msg(self._on_message)
        self._path = path
        if path is not None and not restored:
            self.save()

    def __repr__(self) -> str:
        n = len(self.annotations)
        invalid = len(self._problems())
        where = f", path={str(self._path)!r}" if self._path else ""
        return (f"SchemaEditor({n} examples, span types {self.span_names}, "
                f"{n - invalid} valid / {invalid} invalid{where})")

    # --- reading the state ------------------------------------------------------------------

    @property
    def span_names(self) -> list[str]:
        return [st["name"] for st in self.span_types]

    @property
    def schema(self) -> Schema:
        """The span types as a `pw.Schema` (names in order, required set)."""
        names = self.span_names
        return Schema(names, [st["name"] for st in self.span_types if st.get("required")])

    def spans(self, i: int) -> dict[str, list[int]]:
        """Example ``i``'s annotated spans ``{name: [start, end)}`` (unannotated ones left out)."""
        i = self._check_example(i)
        ranges = self.annotations[i]
        return {name: list(ranges[j]) for j, name in enumerate(self.span_names)
                if j < len(ranges) and ranges[j] is not None}

    def records(self) -> list[dict]:
        """Every example as a record (its fields and ``spans``), ready for `Dataset.from_records`."""
        return [{**fields, "spans": self.spans(i)} for i, fields in enumerate(self.examples)]

    def _problems(self) -> list[SchemaError]:
        try:
            schema = self.schema
        except SchemaError as err:
            return [err]
        out = []
        for i, toks in enumerate(self.tokens):
            try:
                schema.validate(self.spans(i), len(toks), example=i)
            except SchemaError as err:
                out.append(err)
        return out

    def validation(self):
        """The invalid examples, one row each with the first rule broken (the same rules and
        messages as `Schema.validate` and the page): columns example, span, rule, message."""
        import pandas as pd

        rows = [{"example": e.example, "span": e.span, "rule": e.rule, "message": _bare(e)}
                for e in self._problems()]
        return pd.DataFrame(rows, columns=["example", "span", "rule", "message"])

    @property
    def dataset(self) -> Dataset:
        """The annotated examples as a `pw.Dataset`; raises a `SchemaError` naming the first
        invalid example, span and rule (and how many are invalid) while any is invalid."""
        problems = self._problems()
        if problems:
            first = problems[0]
            raise SchemaError(f"{_bare(first)} ({len(problems)} of {len(self.tokens)} examples are "
                              "invalid; editor.validation() lists them)",
                              example=first.example, span=first.span, rule=first.rule)
        schema = self.schema
        if self._dataset is not None:
            examples = [dataclasses.replace(ex, spans=[tuple(r) for r in self.annotations[i]])
                        for i, ex in enumerate(self._dataset.examples)]
            return Dataset(schema, examples, self._dataset.tokenizer)
        return Dataset.from_records(self.records(), self._tokenizer, schema=schema)

    # --- editing -----------------------------------------------------------------------------

    def set_spans(self, i: int, spans: Mapping[str, Sequence[int] | None], replace: bool = False):
        """Set example ``i``'s spans ``{name: [start, end) or None}`` (None: not annotated).
        Spans not named keep their ranges unless ``replace``, which leaves them unannotated.
        Ranges are stored as given (validation reports what is wrong with them)."""
        i = self._check_example(i)
        if not isinstance(spans, Mapping):
            raise SchemaError("spans must be a mapping {name: [start, end)}", example=i, rule="format")
        names = self.span_names
        ranges = [None] * len(names) if replace else _row(self.annotations[i], len(names))
        for name, value in spans.items():
            if name not in names:
                raise SchemaError(f"span {name!r} is not in the schema {names}", example=i,
                                  span=name, rule="unknown_span")
            ranges[names.index(name)] = None if value is None else _pair(value, i, name)
        self.annotations = [ranges if j == i else r for j, r in enumerate(self.annotations)]

    def add_span_type(self, name: str, color: str | None = None, required: bool = False,
                      index: int | None = None):
        """Add a span type at ``index`` (default: just before the last one). It starts empty in
        every annotated example (where an empty span fits, the examples stay valid)."""
        self._check_name(name)
        n = len(self.span_types)
        index = max(0, n - 1) if index is None else index
        if not 0 <= index <= n:
            raise PeapError(f"index must be between 0 and {n}, got {index}")
        used = {st.get("color") for st in self.span_types}
        color = _color(color) if color is not None else next(
            (c for c in self.palette if c not in used), self.palette[n % len(self.palette)])
        types = copy.deepcopy(self.span_types)
        types.insert(index, {"name": name, "color": color, "required": bool(required)})
        rows = []
        for ranges in self.annotations:
            row = _row(ranges, n)
            annotated = any(r is not None for r in row)
            row.insert(index, [0, 0] if annotated else None)
            rows.append(_place_empty(row) if annotated else row)
        self._set(types, rows)

    def rename_span_type(self, old: str, new: str):
        """Rename a span type (its annotations keep)."""
        j = self._type_index(old)
        if new != old:
            self._check_name(new)
        self._update_type(j, name=new)

    def set_color(self, name: str, color: str):
        """Recolour a span type (``"#rrggbb"``)."""
        self._update_type(self._type_index(name), color=_color(color))

    def set_required(self, name: str, required: bool = True):
        """Mark a span type as required (never empty) or optional; the last is always required."""
        self._update_type(self._type_index(name), required=bool(required))

    def move_span_type(self, name: str, index: int):
        """Move a span type to position ``index`` of the schema (annotations move with it;
        empty spans take their place in the new order)."""
        j = self._type_index(name)
        n = len(self.span_types)
        if not 0 <= index < n:
            raise PeapError(f"index must be between 0 and {n - 1}, got {index}")
        types = copy.deepcopy(self.span_types)
        types.insert(index, types.pop(j))
        rows = []
        for ranges in self.annotations:
            row = _row(ranges, n)
            row.insert(index, row.pop(j))
            rows.append(_place_empty(row))
        self._set(types, rows)

    def remove_span_type(self, name: str):
        """Delete a span type; its tokens become unlabelled in every example."""
        j = self._type_index(name)
        if len(self.span_types) == 1:
            raise SchemaError("a schema needs at least one span", span=name, rule="nonempty_schema")
        n = len(self.span_types)
        types = [st for k, st in enumerate(copy.deepcopy(self.span_types)) if k != j]
        rows = [_place_empty([r for k, r in enumerate(_row(ranges, n)) if k != j])
                for ranges in self.annotations]
        self._set(types, rows)

    # --- suggestions ---------------------------------------------------------------------------

    def add_suggester(self, suggester, name: str | None = None) -> str:
        """List a suggester (``suggester(examples, tokens, *, progress=None) -> Suggestion``) in
        the Suggest panel under ``name`` (default: its ``name`` attribute); returns the name
        used (made unique with " (2)", " (3)"... when taken)."""
        if not callable(suggester):
            raise PeapError(f"a suggester is a callable suggester(examples, tokens, *, progress=None) "
                            f"-> Suggestion, got {type(suggester).__name__}")
        base = name or getattr(suggester, "name", None) or getattr(suggester, "__name__", None) \
            or type(suggester).__name__
        taken = {n for n, _ in self._suggesters}
        name = next(n for n in itertools.chain([str(base)], (f"{base} ({k})" for k in itertools.count(2)))
                    if n not in taken)
        self._suggesters.append((name, suggester))
        self.suggesters = [n for n, _ in self._suggesters]
        return name

    def suggest(self, which: int | str = 0, *, new_spans: str = "add"):
        """Run a suggester (its name or index in `suggesters`) on every example and make its
        result the pending layer (replacing any); returns the `Suggestion`. Progress and the
        suggester's ``info`` counts go to the page (``suggest_status``). An exception in the
        suggester is shown in the panel and raised here; the annotations and the previous
        pending layer are left as they were."""
        name = "?"
        try:
            name, fn = self._suggester(which)
            self._status(running=True, name=name, done=0, total=len(self.tokens), info={},
                         error="", message="")
            result = fn(copy.deepcopy(self.examples), [list(x) for x in self.tokens],
                        progress=self._progress_callback())
            self.set_suggestion(result, name=name, new_spans=new_spans)
        except Exception as err:
            why = str(err) if isinstance(err, PeapError) else f"{type(err).__name__}: {err}"
            self._status(running=False, name=name, error=f"{name} failed: {why}", message="")
            raise
        left = len(self.suggestion["failed"])
        self._status(running=False, done=len(self.tokens), total=len(self.tokens),
                     info=_plain(getattr(result, "info", {}) or {}), error="",
                     message=f"{len(self.tokens) - left} proposed, {left} left out")
        return result

    def set_suggestion(self, suggestion, name: str | None = None, *, new_spans: str = "add"):
        """Make a `Suggestion` (computed elsewhere) the pending layer. Span names the editor
        lacks are added as span types at their place in the suggestion's order (``new_spans=
        "refuse"``: a `SchemaError` instead); common span names in another order than the
        editor's are refused. Proposals that break the suggestion's own schema (or are not
        ``{name: [start, end)}``) are left out, with the reason, as the suggester's own
        failures are."""
        n = len(self.tokens)
        names, spans = getattr(suggestion, "span_names", None), getattr(suggestion, "spans", None)
        if not isinstance(names, Sequence) or isinstance(names, str) or not isinstance(spans, Sequence):
            raise PeapError(f"a suggester returns a peap_widget.suggest.Suggestion (span_names, spans, "
                            f"failed, info), got {type(suggestion).__name__}")
        names = [str(x) for x in names]
        if len(spans) != n:
            raise PeapError(f"the suggestion has {len(spans)} examples, the editor {n}")
        if new_spans not in ("add", "refuse"):
            raise PeapError(f"new_spans is 'add' or 'refuse', got {new_spans!r}")
        try:
            schema = Schema(names)
        except SchemaError as err:
            raise SchemaError(f"the suggestion's span names are not a schema: {_bare(err)}",
                              rule=err.rule) from None
        self._merge_span_types(names, refuse=new_spans == "refuse")
        failed = {str(int(k)): str(v) for k, v in dict(getattr(suggestion, "failed", {}) or {}).items()}
        kept = []
        for i, proposed in enumerate(spans):
            if proposed is None:
                failed.setdefault(str(i), "no proposal")
                kept.append(None)
                continue
            try:
                if not isinstance(proposed, Mapping):
                    raise SchemaError("spans must be a mapping {name: [start, end)}", rule="format")
                clean = {str(k): _pair(v, i, k) for k, v in proposed.items()}
                schema.validate(clean, len(self.tokens[i]), example=i)
            except SchemaError as err:
                failed[str(i)] = f"invalid proposal: {_bare(err)} [rule: {err.rule}]"
                kept.append(None)
                continue
            failed.pop(str(i), None)
            kept.append(clean)
        self.suggestion = {
            "id": os.urandom(6).hex(), "name": name or getattr(suggestion, "source", "") or "suggestion",
            "source": str(getattr(suggestion, "source", "") or ""), "span_names": names,
            "spans": kept, "failed": failed, "info": _plain(getattr(suggestion, "info", {}) or {}),
            "status": [None] * n}

    def clear_suggestion(self):
        """Drop the pending layer (the annotations stay as they are)."""
        self.suggestion = {}

    def pending(self) -> list[int]:
        """Examples with a proposal not yet accepted or rejected."""
        sug = self.suggestion
        if not sug:
            return []
        return [i for i, (p, st) in enumerate(zip(sug["spans"], sug["status"]))
                if p is not None and st is None]

    def proposed_spans(self, i: int) -> dict[str, list[int]] | None:
        """The pending layer's spans for example ``i`` in the editor's span types (a span type
        the suggestion does not name is empty), or None when it proposes nothing there."""
        i = self._check_example(i)
        row = self._proposed_row(i)
        return None if row is None else dict(zip(self.span_names, row))

    def disagreements(self) -> list[int]:
        """Pending examples whose proposal differs from the current annotation."""
        n = len(self.span_types)
        return [i for i in self.pending() if self._proposed_row(i) != _row(self.annotations[i], n)]

    def left_out(self) -> dict[int, str]:
        """Examples the suggester proposed nothing for (or nothing valid), with its reasons."""
        return {int(k): v for k, v in (self.suggestion or {}).get("failed", {}).items()}

    def suggestion_report(self):
        """One row per example: ``status`` (disagrees, agrees, left out, accepted, rejected),
        ``differs`` (the span names whose ranges differ, for pending ones) and ``reason`` (why
        the suggester left it out). Columns example, status, differs, reason."""
        import pandas as pd

        rows = []
        sug = self.suggestion
        names, n = self.span_names, len(self.span_types)
        for i in range(len(self.tokens) if sug else 0):
            st, row = sug["status"][i], self._proposed_row(i)
            reason = sug["failed"].get(str(i), "")
            differs = []
            if row is None:
                status = "left out"
            elif st is not None:
                status = st
            else:
                cur = _row(self.annotations[i], n)
                differs = [name for name, a, b in zip(names, row, cur) if a != b]
                status = "disagrees" if differs else "agrees"
            rows.append({"example": i, "status": status, "differs": differs, "reason": reason})
        return pd.DataFrame(rows, columns=["example", "status", "differs", "reason"])

    def accept_suggestion(self, examples=None) -> list[int]:
        """Replace the annotation of ``examples`` (an index, a list, or None: every pending
        one) by the proposal; examples without a pending proposal are skipped. Returns the
        examples accepted. The page records it as an undoable edit."""
        return self._decide(examples, "accepted")

    def reject_suggestion(self, examples=None) -> list[int]:
        """Dismiss the proposal for ``examples`` (an index, a list, or None: every pending one);
        the annotation stays. Returns the examples rejected."""
        return self._decide(examples, "rejected")

    def _decide(self, examples, verdict) -> list[int]:
        if not self.suggestion:
            raise PeapError("no suggestion is pending: run one first (editor.suggest(...))")
        pending = set(self.pending())
        if examples is None:
            chosen = sorted(pending)
        else:
            wanted = [examples] if isinstance(examples, int) else list(examples)
            chosen = [i for i in dict.fromkeys(self._check_example(i) for i in wanted) if i in pending]
        status = list(self.suggestion["status"])
        rows = [list(r) for r in self.annotations]
        for i in chosen:
            status[i] = verdict
            if verdict == "accepted":
                rows[i] = self._proposed_row(i)
        values = {"suggestion": {**self.suggestion, "status": status}}
        if verdict == "accepted":
            values["annotations"] = rows
        self._apply(values)
        return chosen

    def _apply(self, values: dict):
        """Set traits as one edit. Open pages first get the values as an "apply" message and
        commit them as their own edit (undoable there); the trait update that follows then
        carries no change for them."""
        self.send({"type": "apply", "values": values})
        with self.hold_sync(), self.hold_trait_notifications():
            for k, v in values.items():
                setattr(self, k, v)

    def _proposed_row(self, i):
        sug = self.suggestion
        proposed = sug["spans"][i] if sug else None
        if proposed is None:
            return None
        return _place_empty([list(proposed[n]) if n in proposed else [0, 0] for n in self.span_names])

    def _merge_span_types(self, names, refuse):
        mine = self.span_names
        common, theirs = [n for n in mine if n in names], [n for n in names if n in mine]
        if common != theirs:
            raise SchemaError(f"the suggestion orders its spans {theirs}, the editor {common}: an "
                              "annotation cannot be valid in both; reorder the span types first "
                              "(Span types… in the page, or move_span_type)", rule="order")
        missing = [n for n in names if n not in mine]
        if missing and refuse:
            raise SchemaError(f"the suggestion names spans the editor lacks: {missing}; add them "
                              "(add_span_type) or run with new_spans='add'", span=missing[0],
                              rule="unknown_span")
        for k, name in enumerate(names):
            if name not in self.span_names:
                at = 0 if k == 0 else self.span_names.index(names[k - 1]) + 1
                self.add_span_type(name, index=at)

    def _suggester(self, which):
        names = [n for n, _ in self._suggesters]
        if not names:
            raise PeapError("the editor has no suggesters: SchemaEditor(..., suggesters=[...]) or "
                            "editor.add_suggester(s)")
        if isinstance(which, str) and which in names:
            return self._suggesters[names.index(which)]
        if isinstance(which, int) and not isinstance(which, bool) and -len(names) <= which < len(names):
            return self._suggesters[which]
        raise PeapError(f"no suggester {which!r}; the suggesters are {names}")

    def _status(self, **fields):
        self.suggest_status = {**self.suggest_status, **fields}

    def _progress_callback(self):
        """``progress(done, total, info)`` for a suggester: the page hears of each percent
        (and of the last step), not of every call, so a long run does not flood the comm."""
        seen = {"bucket": -1}

        def progress(done, total, info=None):
            done, total = int(done), max(1, int(total))
            bucket = (100 * done) // total
            if bucket == seen["bucket"] and done < total:
                return
            seen["bucket"] = bucket
            self._status(done=done, total=total, info=_plain(info or {}))
        return progress

    def _on_message(self, _widget, content, _buffers):
        """The page's requests: ``{"type": "suggest", "name": ...}`` runs a suggester."""
        if not isinstance(content, Mapping) or content.get("type") != "suggest":
            return
        try:
            self.suggest(content.get("name", content.get("index", 0)))
        except Exception:  # shown in the panel (suggest_status.error); the kernel keeps going
            pass

    # --- saliency --------------------------------------------------------------------------------

    def show_saliency(self, scores, column: str | None = None, label: str | None = None):
        """Shade every token by a score: ``scores`` a list (one list of per-token numbers per
        example) or a DataFrame with columns ``example``, ``position`` and the score column
        (``column``; default "score", else the only other numeric column), e.g. what
        ``pw.token_saliency`` returns. None hides the shading. The page draws ``|score|``
        relative to the example's largest as a highlight behind the token, with a toggle."""
        if scores is None:
            self.saliency = {}
            return
        scores = getattr(scores, "table", scores)   # a pw.token_saliency result: its table
        lengths = [len(x) for x in self.tokens]
        if hasattr(scores, "columns"):
            rows, column = _saliency_from_frame(scores, column, lengths)
        else:
            rows = _saliency_from_lists(scores, lengths)
        self.saliency = {"label": label or column or "saliency", "scores": rows}

    # --- saving ------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """The annotation file's content: a `pw.Dataset.to_json` document (schema, examples with
        their spans) plus ``span_colors``, ``lengths`` (tokens per example) and, while one is
        pending, ``suggestion`` (the pending layer)."""
        types = self.span_types
        return {
            "format": FORMAT, "version": 1,
            # every mark, the last type's too (it is required anyway, but the mark is the
            # user's and must survive a restart and a new type added after it)
            "schema": {"spans": self.span_names,
                       "required": [st["name"] for st in types if st.get("required")]},
            "span_colors": {st["name"]: st.get("color") for st in types},
            "lengths": [len(toks) for toks in self.tokens],
            "examples": self.records(),
            **({"suggestion": self.suggestion} if self.suggestion else {}),
        }

    def save(self, path=None) -> Path:
        """Write the annotation file atomically (temp file + rename) to ``path`` (default: the
        autosave path). Returns the path."""
        target = Path(path).expanduser() if path is not None else self._path
        if target is None:
            raise PeapError("no path to save to: give save(path) or SchemaEditor(..., path=...)")
        text = json.dumps(finite_or_none(self.to_dict()), indent=1, ensure_ascii=False,
                          allow_nan=False)
        if path is None and text == self._last_saved and target.exists():
            return target
        _write_atomic(target, text)
        if path is None:
            self._last_saved = text
        return target

    @t.observe("span_types", "annotations", "suggestion")
    def _autosave(self, change):
        """Save every change; a failure (read-only file, full disk) is shown in the page
        (``save_error``) and the edit stays in memory, saved with the next change or
        `retry_save`."""
        if getattr(self, "_path", None) is None:
            return
        self.retry_save()

    def retry_save(self) -> bool:
        """Write the autosave file now; True when it holds every edit."""
        try:
            self.save()
        except (OSError, TypeError, ValueError) as err:
            reason = getattr(err, "strerror", None) or str(err)
            self.save_error = (f"Not saved: {reason} ({self._path}). Your edits are kept in "
                               "this session; they are saved with the next change once the "
                               "file can be written (or use Download JSON).")
            return False
        self.save_error = ""
        return True

    # --- helpers -------------------------------------------------------------------------------

    def _set(self, types, rows):
        with self.hold_trait_notifications():
            self.span_types = types
            self.annotations = rows

    def _update_type(self, j, **fields):
        types = copy.deepcopy(self.span_types)
        types[j].update(fields)
        self.span_types = types

    def _type_index(self, name) -> int:
        names = self.span_names
        if name not in names:
            raise SchemaError(f"no span type {name!r}; the span types are {names}", span=name,
                              rule="unknown_span")
        return names.index(name)

    def _check_name(self, name):
        if not isinstance(name, str) or not name.strip() or name != name.strip():
            raise SchemaError(f"a span type name is a non-empty string without surrounding "
                              f"spaces, got {name!r}", rule="name")
        if name in self.span_names:
            raise SchemaError(f"there is already a span type {name!r}", span=name, rule="unique_names")

    def _check_example(self, i) -> int:
        """``i`` as an index in 0..n-1 (negative ones count from the end)."""
        n = len(self.annotations)
        if isinstance(i, bool) or not isinstance(i, int) or not -n <= i < n:
            raise PeapError(f"no example {i!r}: the editor has {n} examples")
        return i % n


# --- building the state --------------------------------------------------------------------


def _load_source(dataset, schema, model) -> dict:
    """Tokens, record fields, starting span types and annotations from a Dataset or records."""
    if isinstance(dataset, Dataset):
        names, required = _schema_names(schema) if schema is not None else _schema_names(dataset.schema)
        tokens = [[str(x) for x in dataset.tokens(i)] for i in range(len(dataset))]
        records = dataset.to_records()
        span_dicts = [r.pop("spans") for r in records]
        tokenizer = dataset.tokenizer
        if schema is not None:   # a new schema for an annotated dataset: spans kept by name
            span_dicts = [{k: v for k, v in d.items() if k in names} for d in span_dicts]
    else:
        if isinstance(dataset, Mapping) or isinstance(dataset, (str, bytes)) or \
                not isinstance(dataset, Sequence):
            raise DatasetError("SchemaEditor needs a pw.Dataset or a list of records "
                               f"(dicts with 'clean', ...), got {type(dataset).__name__}")
        if model is None:
            raise DatasetError("records need model= (a pw Model or a tokenizer) to be tokenized; "
                               "or pass a pw.Dataset")
        if not dataset:
            raise DatasetError("the dataset is empty: give at least one record")
        tokenizer = tokenizer_of(model)
        tokens, records, span_dicts = [], [], []
        for i, rec in enumerate(dataset):
            if not isinstance(rec, Mapping):
                raise DatasetError(f"a record is a mapping, got {type(rec).__name__}", example=i)
            if not isinstance(rec.get("clean"), str):
                raise DatasetError("needs the clean prompt as a string", example=i, field="clean")
            spans = rec.get("spans") or {}
            if not isinstance(spans, Mapping):
                raise DatasetError("spans must be a mapping {name: [start, end)}", example=i,
                                   field="spans")
            ids = encode_text(tokenizer, rec["clean"])
            tokens.append([str(x) for x in tokenizer.convert_ids_to_tokens(ids)])
            records.append({k: v for k, v in rec.items() if k != "spans"})
            span_dicts.append(dict(spans))
        if schema is not None:
            names, required = _schema_names(schema)
        else:
            names = list(dict.fromkeys(n for d in span_dicts for n in d)) or [DEFAULT_SPAN]
            required = set()
    span_types = [{"name": n, "color": PALETTE[k % len(PALETTE)],
                   "required": n in required and n != names[-1]} for k, n in enumerate(names)]
    annotations = []
    for i, (spans, toks) in enumerate(zip(span_dicts, tokens)):
        unknown = [n for n in spans if n not in names]
        if unknown:
            raise DatasetError(f"span {unknown[0]!r} is not in the schema {names}", example=i,
                               field="spans")
        row = [None if spans.get(n) is None else _pair(spans[n], i, n) for n in names]
        if not spans and toks:
            row[-1] = [len(toks) - 1, len(toks)]
        annotations.append(row)
    return {"dataset": dataset if isinstance(dataset, Dataset) else None, "tokenizer": tokenizer,
            "tokens": tokens, "examples": records, "span_types": span_types,
            "annotations": annotations}


def _schema_names(schema) -> tuple[list[str], set[str]]:
    if not isinstance(schema, Schema):
        if isinstance(schema, str):
            raise SchemaError(f"schema is a pw.Schema or a list of span names, got the string "
                              f"{schema!r}", rule="format")
        schema = Schema(list(schema))
    return list(schema.spans), set(schema.required)


def read_annotation_file(path, examples: list[dict], tokens: list[list[str]]) -> dict:
    """The span types and annotations saved in ``path`` for these examples (their prompts and
    token counts must match). Raises `DatasetError` and leaves the file alone otherwise."""
    path = Path(path)
    keep = "it was left untouched; fix it, or move it away (or pass another path) to start afresh"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DatasetError(f"the annotation file {path} is not valid JSON ({err}); {keep}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"cannot read the annotation file {path}: {err}") from None
    if not isinstance(doc, Mapping) or not isinstance(doc.get("examples"), list) \
            or not isinstance(doc.get("schema"), Mapping):
        raise DatasetError(f"{path} is not a SchemaEditor annotation file (it needs 'schema' and "
                           f"'examples'); {keep}")
    saved = doc["examples"]
    if len(saved) != len(examples):
        raise DatasetError(f"the annotation file {path} holds {len(saved)} examples but the dataset "
                           f"has {len(examples)}: it belongs to other data; {keep}")
    for i, (rec, fields) in enumerate(zip(saved, examples)):
        clean = rec.get("clean") if isinstance(rec, Mapping) else None
        if clean != fields.get("clean"):
            raise DatasetError(f"the annotation file {path} does not match the dataset: its prompt "
                               f"is {clean!r}, the dataset's {fields.get('clean')!r}; {keep}",
                               example=i)
    lengths = doc.get("lengths")
    if isinstance(lengths, list):
        for i, (n, toks) in enumerate(zip(lengths, tokens)):
            if n != len(toks):
                raise DatasetError(f"the annotation file {path} was made with another tokenizer: "
                                   f"{n} tokens there, {len(toks)} here; {keep}", example=i)
    try:
        schema = Schema.from_dict(doc["schema"])
    except SchemaError as err:
        raise DatasetError(f"the schema in {path} is invalid: {err}; {keep}") from None
    colors = doc.get("span_colors") if isinstance(doc.get("span_colors"), Mapping) else {}
    names = list(schema.spans)
    marks = doc["schema"].get("required", ()) if isinstance(doc["schema"], Mapping) else ()
    explicit = set(schema.to_dict()["required"]) | ({names[-1]} & set(marks))
    span_types = []
    for k, n in enumerate(names):
        c = colors.get(n)
        color = _color(c) if isinstance(c, str) and _HEX.match(c) else PALETTE[k % len(PALETTE)]
        span_types.append({"name": n, "color": color, "required": n in explicit})
    annotations = []
    for i, rec in enumerate(saved):
        spans = rec.get("spans") or {}
        if not isinstance(spans, Mapping) or any(n not in names for n in spans):
            raise DatasetError(f"the spans in {path} name span types outside its schema {names} "
                               f"(or are not a mapping); {keep}", example=i)
        try:
            annotations.append([None if spans.get(n) is None else _pair(spans[n], i, n) for n in names])
        except SchemaError as err:
            raise DatasetError(f"{path}: {err}; {keep}") from None
    state = {"span_types": span_types, "annotations": annotations}
    if doc.get("suggestion"):         # files written before suggestions have none
        state["suggestion"] = _read_suggestion(doc["suggestion"], len(saved), f"{path}: ", keep)
    return state


def _read_suggestion(sug, n, where, keep) -> dict:
    """A saved pending layer, checked: one proposal (``{name: [start, end)}`` or None) and one
    status (None, "accepted", "rejected") per example."""
    if not isinstance(sug, Mapping) or not isinstance(sug.get("spans"), list) \
            or not isinstance(sug.get("span_names"), list):
        raise DatasetError(f"{where}its 'suggestion' needs 'span_names' and 'spans'; {keep}")
    status = sug.get("status") if isinstance(sug.get("status"), list) else [None] * n
    if len(sug["spans"]) != n or len(status) != n:
        raise DatasetError(f"{where}its 'suggestion' holds {len(sug['spans'])} proposals and "
                           f"{len(status)} statuses for {n} examples; {keep}")
    spans = []
    for i, (p, st) in enumerate(zip(sug["spans"], status)):
        if st not in (None, "accepted", "rejected"):
            raise DatasetError(f"{where}suggestion status {st!r} is not null, 'accepted' or "
                               f"'rejected'; {keep}", example=i)
        if p is not None and not isinstance(p, Mapping):
            raise DatasetError(f"{where}a suggested annotation is {{name: [start, end)}} or null; "
                               f"{keep}", example=i)
        try:
            spans.append(None if p is None else {str(k): _pair(v, i, k) for k, v in p.items()})
        except SchemaError as err:
            raise DatasetError(f"{where}suggestion: {err}; {keep}") from None
    failed = sug.get("failed") if isinstance(sug.get("failed"), Mapping) else {}
    return {"id": str(sug.get("id") or os.urandom(6).hex()), "name": str(sug.get("name", "")),
            "source": str(sug.get("source", "")), "span_names": [str(x) for x in sug["span_names"]],
            "spans": spans, "failed": {str(k): str(v) for k, v in failed.items()},
            "info": _plain(sug.get("info") or {}), "status": status}


def _plain(value):
    """A suggester's ``info`` as JSON values (numbers, strings, lists, dicts; NaN as None)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, bool)) or value is None:
        return value
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(x):
        return None
    return int(x) if x == int(x) and abs(x) < 2 ** 53 and not isinstance(value, float) else x


def _score(x):
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _saliency_from_lists(scores, lengths) -> list[list]:
    if isinstance(scores, (str, bytes, Mapping)) or not hasattr(scores, "__len__"):
        raise PeapError(f"saliency scores are one list of per-token numbers per example (or a "
                        f"DataFrame with example, position, score), got {type(scores).__name__}")
    if len(scores) != len(lengths):
        raise PeapError(f"{len(scores)} lists of saliency scores for {len(lengths)} examples")
    rows = []
    for i, (row, n) in enumerate(zip(scores, lengths)):
        row = list(row)
        if len(row) != n:
            raise PeapError(f"example {i}: {len(row)} saliency scores for its {n} tokens")
        rows.append([_score(x) for x in row])
    return rows


def _saliency_from_frame(frame, column, lengths) -> tuple[list[list], str]:
    cols = [str(c) for c in frame.columns]
    for need in ("example", "position"):
        if need not in cols:
            raise PeapError(f"a saliency DataFrame needs the columns example, position and a score "
                            f"column; it has {cols}")
    if column is None:
        others = [c for c in cols if c not in ("example", "position")
                  and str(frame[c].dtype).startswith(("float", "int", "Float", "Int"))]
        column = "score" if "score" in cols else others[0] if len(others) == 1 else None
        if column is None:
            raise PeapError(f"which column holds the scores? give column= (one of {others or cols})")
    if column not in cols:
        raise PeapError(f"no column {column!r} in the saliency DataFrame; its columns are {cols}")
    rows = [[None] * n for n in lengths]
    for ex, pos, val in zip(frame["example"], frame["position"], frame[column]):
        ex, pos = int(ex), int(pos)
        if not 0 <= ex < len(lengths):
            raise PeapError(f"saliency row for example {ex}: the editor has {len(lengths)} examples")
        if not 0 <= pos < lengths[ex]:
            raise PeapError(f"example {ex}: saliency position {pos} is outside its "
                            f"{lengths[ex]} tokens")
        rows[ex][pos] = _score(val)
    return rows, column


# --- small helpers -----------------------------------------------------------------------------


def _pair(value, example, name) -> list[int]:
    """``[start, end]`` as two ints, else a `SchemaError` (rule ``format``)."""
    try:
        start, end = value
        if any(isinstance(x, bool) or int(x) != x for x in (start, end)):
            raise TypeError
        return [int(start), int(end)]
    except (TypeError, ValueError):
        raise SchemaError(f"a span is a [start, end) pair of token indices, got {value!r}",
                          example=example, span=name, rule="format") from None


def _row(ranges, n) -> list:
    """A copy of one example's ranges, padded with None to ``n`` span types."""
    row = [None if r is None else list(r) for r in list(ranges)[:n]]
    return row + [None] * (n - len(row))


def _place_empty(row) -> list:
    """Empty spans sit at the end of the nearest earlier annotated span (0 if none), as in
    ``logic.js`` ``placeEmpty``."""
    k, out = 0, []
    for r in row:
        if r is not None and r[0] == r[1]:
            r = [k, k]
        elif r is not None:
            k = r[1]
        out.append(r)
    return out


def _color(color) -> str:
    if not isinstance(color, str) or not _HEX.match(color):
        raise PeapError(f"a colour is '#rrggbb' (or '#rgb'), got {color!r}")
    c = color.lower()
    return c if len(c) == 7 else "#" + "".join(ch * 2 for ch in c[1:])


def _bare(err: SchemaError) -> str:
    """A SchemaError's message without its "example i, span 'x': " prefix and rule suffix."""
    msg = str(err)
    prefix, suffix = where_prefix(err.example, "span", err.span), f" [rule: {err.rule}]"
    msg = msg[len(prefix):] if msg.startswith(prefix) else msg
    return msg[: -len(suffix)] if msg.endswith(suffix) else msg


def _file_mode(path: Path) -> int:
    """The mode a new file gets under the umask, or the existing file's own mode."""
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = _file_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)          # mkstemp makes 0600; follow the umask / the old file
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
