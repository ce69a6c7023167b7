"""The SchemaEditor's review of suggestions: suggesters run in the kernel, their result held as a
pending layer over the annotations, accepted or rejected per example (undoable in the page),
and per-token saliency shading. A mixin of `SchemaEditor`, which owns the traits it uses."""

from __future__ import annotations

import copy
import itertools
import math
import os
from collections.abc import Mapping, Sequence

from ..data.schema import Schema
from ..errors import PeapError, SchemaError
from .annotations import bare_message, padded_row, place_empty, plain_json, span_pair


class SuggestionReview:
    """Suggesters, the pending layer and saliency shading (see `SchemaEditor`)."""

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
                     info=plain_json(getattr(result, "info", {}) or {}), error="",
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
            raise SchemaError(f"the suggestion's span names are not a schema: {bare_message(err)}",
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
                clean = {str(k): span_pair(v, i, k) for k, v in proposed.items()}
                schema.validate(clean, len(self.tokens[i]), example=i)
            except SchemaError as err:
                failed[str(i)] = f"invalid proposal: {bare_message(err)} [rule: {err.rule}]"
                kept.append(None)
                continue
            failed.pop(str(i), None)
            kept.append(clean)
        self.suggestion = {
            "id": os.urandom(6).hex(), "name": name or getattr(suggestion, "source", "") or "suggestion",
            "source": str(getattr(suggestion, "source", "") or ""), "span_names": names,
            "spans": kept, "failed": failed, "info": plain_json(getattr(suggestion, "info", {}) or {}),
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
        return [i for i in self.pending() if self._proposed_row(i) != padded_row(self.annotations[i], n)]

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
                cur = padded_row(self.annotations[i], n)
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
        return place_empty([list(proposed[n]) if n in proposed else [0, 0] for n in self.span_names])

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
            self._status(done=done, total=total, info=plain_json(info or {}))
        return progress

    def _on_message(self, _widget, content, _buffers):
        """The page's requests: ``{"type": "suggest", "name": ...}`` runs a suggester."""
        if not isinstance(content, Mapping) or content.get("type") != "suggest":
            return
        try:
            self.suggest(content.get("name", content.get("index", 0)))
        except Exception:  # shown in the panel (suggest_status.error); the kernel keeps going
            pass

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

