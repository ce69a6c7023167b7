"""Checks of lab 3 (span schemas). Expected spans come from the task's character ranges mapped
through the tokenizer's offsets; rules from `Schema.validate`; name positions from the tokens."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .core import as_float, blank, correct, fmt, register, wrong
from .lab4 import curve_points


def _spans_of(answer) -> list[dict]:
    """Per-example {span: [s, e]} from an editor, a Dataset, records or span dicts."""
    from ..data.dataset import Dataset

    obj = answer
    rows = getattr(obj, "annotations", None)
    if isinstance(rows, list) and all(all(r is None for r in row[:-1]) for row in rows):
        blank("nothing is annotated yet: tag the spans in the editor above (or call "
              "editor.set_spans), then run this check again.")
    if not isinstance(obj, (Dataset, Sequence, Mapping)) and hasattr(type(obj), "dataset"):
        try:
            obj = obj.dataset
        except Exception as err:  # noqa: BLE001  (the editor cannot build a dataset yet)
            wrong(f"the annotations are not a valid dataset yet: {err}")
    if isinstance(obj, Dataset):
        return [ex.span_dict(obj.schema) for ex in obj.examples]
    if isinstance(obj, Mapping):
        return [dict(obj[k]) for k in sorted(obj)]
    if isinstance(obj, Sequence) and not isinstance(obj, str):
        out = []
        for r in obj:
            if isinstance(r, Mapping) and "spans" in r:
                r = r["spans"]
            if not isinstance(r, Mapping):
                wrong("give the editor, a dataset, or a list of {span: [start, end]} dicts.")
            out.append({k: list(v) for k, v in r.items()})
        return out
    wrong(f"expected the SchemaEditor (or a dataset / list of span dicts), got {type(answer).__name__}.")


@register("lab3.annotation")
def annotation(answer, task, model, examples: Sequence[int] | None = None):
    """The hand-made token spans of ``task``'s first examples equal the task's own."""
    got = _spans_of(answer)
    want = [r["spans"] for r in task.token_records(model.tokenizer)]
    idx = list(range(len(got))) if examples is None else list(examples)
    if len(got) < (max(idx) + 1 if idx else 0):
        wrong(f"expected annotations for examples {idx}, got {len(got)} examples.")
    bad = []
    for i in idx:
        g, w = got[i], want[i]
        diff = [n for n in w if list(g.get(n, [None, None])) != list(w[n])]
        if diff:
            n = diff[0]
            bad.append(f"example {i}: span {n!r} should be {w[n]}, not {g.get(n)}")
    if bad:
        wrong("; ".join(bad[:3]) + (" ..." if len(bad) > 3 else "")
              + ". Spans are [start, end) token indices; every token belongs to exactly one span.")
    correct(f"your spans of {len(idx)} examples match the built-in IOI schema exactly.")


@register("lab3.broken_rule")
def broken_rule(answer, spans, n_tokens: int, schema):
    """The rule (``SchemaError.rule``) the given annotation breaks."""
    from ..errors import SchemaError
    from ..data.schema import Schema

    schema = schema if isinstance(schema, Schema) else Schema(list(schema))
    try:
        schema.validate(spans, n_tokens)
    except SchemaError as err:
        rule, msg = err.rule, str(err)
    else:
        wrong("this annotation breaks no rule.")
    if str(answer).strip().lower() == rule:
        correct(f"rule {rule!r}: {msg}")
    wrong(f"it breaks a different rule than {answer!r}. Read the message of editor.validation() "
          "(or of pw.Dataset.from_records) for that example.")


@register("lab3.io_positions")
def io_positions(answer, ds):
    """How many different token positions the indirect object's name takes in ``ds``."""
    got = as_float(answer)
    pos = {ex.clean_ids.index(ex.correct_id) for ex in ds.examples}
    if got == len(pos):
        correct(f"the name sits at {len(pos)} different positions ({sorted(pos)}): no fixed token "
                "index means 'the indirect object' in every prompt, a span does.")
    wrong(f"expected {len(pos)}, got {answer}. Collect the IO span's start of every example in a "
          "set and count it.")


@register("lab3.schema_comparison")
def schema_comparison(answer, fine, coarse, level: float = 0.5):
    """{"fine": ..., "coarse": ...}: real per-example edges each schema's circuit needs to
    reach ``level`` (from the two faithfulness curves)."""
    if not isinstance(answer, Mapping) or not {"fine", "coarse"} <= set(answer):
        wrong('answer with a dict {"fine": ..., "coarse": ...}.')
    want = {"fine": next(iter(curve_points(fine, level).values())),
            "coarse": next(iter(curve_points(coarse, level).values()))}
    bad = []
    for k, exp in want.items():
        got = answer[k]
        if exp is None:
            if got is not None:
                bad.append(f"{k} never reaches {level} on these sizes (answer None)")
        elif abs(as_float(got, k) - exp) > 1e-6 * max(1, exp):
            bad.append(f"{k}: expected {fmt(exp)}, got {fmt(as_float(got, k))}")
    if bad:
        wrong("; ".join(bad) + f". Use curve.point({level})['n_real_edges'] on each curve.")
    f, c = want["fine"], want["coarse"]
    ratio = "" if f is None or c is None else f" ({c / f:.1f} times fewer with the fine schema)"
    correct(f"fine schema {fmt(f)} vs coarse {fmt(c)} real edges per example{ratio}.")
