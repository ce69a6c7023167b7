"""SchemaEditor: tag the token spans of every example by hand, in a notebook or an offline page.

Example:
    >>> model = pw.models.load("toy-ioi")
    >>> ds = pw.tasks.get("ioi", n=4).dataset(model)
    >>> editor = pw.SchemaEditor(ds, path="ioi_spans.json")
    >>> editor                                  # doctest: +SKIP
    >>> # (annotate in the notebook; autosaved on each change)
    >>> editor.set_spans(0, {"IO": None}); len(editor.validation())   # invalid examples
    1
    >>> editor.set_spans(0, ds.examples[0].span_dict(ds.schema)); len(editor.validation())
    0
    >>> editor.dataset                          # a pw.Dataset once every example is valid
    Dataset(4 examples, ...)

State (the synced traits; the front end edits the first two):

- ``span_types``: ``[{"name", "color", "required"}]`` in schema order. The last span type is
  always required (it holds exactly the last token); ``required`` marks the others that may not
  be empty.
- ``annotations``: one list per example, one entry per span type in schema order: ``[start, end]``
  (a token range, end-exclusive, ``start == end`` for an empty span) or ``None`` when that span is
  not annotated yet in that example. Ranges are exactly what ``Schema.validate`` checks, so an
  example is valid when its ranges cover every token in schema order (docs/numbers.md).
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
import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import traitlets as t

from ..data.dataset import FORMAT, Dataset, TokenizerSource
from ..data.schema import Schema
from ..errors import PeapError, SchemaError
from ..util.jsonio import finite_or_none, write_atomic
from .annotations import (PALETTE, bare_message, hex_color, load_source, padded_row, place_empty,
                          read_annotation_file, span_pair)
from .base import PeapWidget
from .suggestion_review import SuggestionReview

if TYPE_CHECKING:
    import pandas as pd

    from ..suggest.base import Suggester

#: Span type colours, in the order new span types get them (Tableau 10).


class SchemaEditor(SuggestionReview, PeapWidget):
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

    def __init__(self, dataset: Dataset | Sequence[Mapping], schema: Schema | Sequence[str] | None = None,
                 path: str | Path | None = None, model: TokenizerSource | None = None,
                 suggesters: Sequence[Suggester] | None = None, **kwargs):
        source = load_source(dataset, schema, model)
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

    def validation(self) -> pd.DataFrame:
        """The invalid examples, one row each with the first rule broken (the same rules and
        messages as `Schema.validate` and the page): columns example, span, rule, message."""
        import pandas as pd

        rows = [{"example": e.example, "span": e.span, "rule": e.rule, "message": bare_message(e)}
                for e in self._problems()]
        return pd.DataFrame(rows, columns=["example", "span", "rule", "message"])

    @property
    def dataset(self) -> Dataset:
        """The annotated examples as a `pw.Dataset`; raises a `SchemaError` naming the first
        invalid example, span and rule (and how many are invalid) while any is invalid."""
        problems = self._problems()
        if problems:
            first = problems[0]
            raise SchemaError(f"{bare_message(first)} ({len(problems)} of {len(self.tokens)} examples are "
                              "invalid; editor.validation() lists them)",
                              example=first.example, span=first.span, rule=first.rule)
        schema = self.schema
        if self._dataset is not None:
            examples = [dataclasses.replace(ex, spans=[tuple(r) for r in self.annotations[i]])
                        for i, ex in enumerate(self._dataset.examples)]
            return Dataset(schema, examples, self._dataset.tokenizer)
        return Dataset.from_records(self.records(), self._tokenizer, schema=schema)

    # --- editing -----------------------------------------------------------------------------

    def set_spans(self, i: int, spans: Mapping[str, Sequence[int] | None], replace: bool = False) -> None:
        """Set example ``i``'s spans ``{name: [start, end) or None}`` (None: not annotated).
        Spans not named keep their ranges unless ``replace``, which leaves them unannotated.
        Ranges are stored as given (validation reports what is wrong with them)."""
        i = self._check_example(i)
        if not isinstance(spans, Mapping):
            raise SchemaError("spans must be a mapping {name: [start, end)}", example=i, rule="format")
        names = self.span_names
        ranges = [None] * len(names) if replace else padded_row(self.annotations[i], len(names))
        for name, value in spans.items():
            if name not in names:
                raise SchemaError(f"span {name!r} is not in the schema {names}", example=i,
                                  span=name, rule="unknown_span")
            ranges[names.index(name)] = None if value is None else span_pair(value, i, name)
        self.annotations = [ranges if j == i else r for j, r in enumerate(self.annotations)]

    def add_span_type(self, name: str, color: str | None = None, required: bool = False,
                      index: int | None = None) -> None:
        """Add a span type at ``index`` (default: just before the last one). It starts empty in
        every annotated example (where an empty span fits, the examples stay valid)."""
        self._check_name(name)
        n = len(self.span_types)
        index = max(0, n - 1) if index is None else index
        if not 0 <= index <= n:
            raise PeapError(f"index must be between 0 and {n}, got {index}")
        used = {st.get("color") for st in self.span_types}
        color = hex_color(color) if color is not None else next(
            (c for c in self.palette if c not in used), self.palette[n % len(self.palette)])
        types = copy.deepcopy(self.span_types)
        types.insert(index, {"name": name, "color": color, "required": bool(required)})
        rows = []
        for ranges in self.annotations:
            row = padded_row(ranges, n)
            annotated = any(r is not None for r in row)
            row.insert(index, [0, 0] if annotated else None)
            rows.append(place_empty(row) if annotated else row)
        self._set(types, rows)

    def rename_span_type(self, old: str, new: str) -> None:
        """Rename a span type (its annotations keep)."""
        j = self._type_index(old)
        if new != old:
            self._check_name(new)
        self._update_type(j, name=new)

    def set_color(self, name: str, color: str) -> None:
        """Recolour a span type (``"#rrggbb"``)."""
        self._update_type(self._type_index(name), color=hex_color(color))

    def set_required(self, name: str, required: bool = True) -> None:
        """Mark a span type as required (never empty) or optional; the last is always required."""
        self._update_type(self._type_index(name), required=bool(required))

    def move_span_type(self, name: str, index: int) -> None:
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
            row = padded_row(ranges, n)
            row.insert(index, row.pop(j))
            rows.append(place_empty(row))
        self._set(types, rows)

    def remove_span_type(self, name: str) -> None:
        """Delete a span type; its tokens become unlabelled in every example."""
        j = self._type_index(name)
        if len(self.span_types) == 1:
            raise SchemaError("a schema needs at least one span", span=name, rule="nonempty_schema")
        n = len(self.span_types)
        types = [st for k, st in enumerate(copy.deepcopy(self.span_types)) if k != j]
        rows = [place_empty([r for k, r in enumerate(padded_row(ranges, n)) if k != j])
                for ranges in self.annotations]
        self._set(types, rows)



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

    def save(self, path: str | Path | None = None) -> Path:
        """Write the annotation file atomically (temp file + rename) to ``path`` (default: the
        autosave path). Returns the path."""
        target = Path(path).expanduser() if path is not None else self._path
        if target is None:
            raise PeapError("no path to save to: give save(path) or SchemaEditor(..., path=...)")
        text = json.dumps(finite_or_none(self.to_dict()), indent=1, ensure_ascii=False,
                          allow_nan=False)
        if path is None and text == self._last_saved and target.exists():
            return target
        write_atomic(target, text)
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




