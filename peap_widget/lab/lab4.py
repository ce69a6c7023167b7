"""Checks of lab 4 (PEAP: positional and crossing edges, PEAP vs EAP). Edge counts come from
the model's shape, EAP scores from the reference's autograd, name movers from reference patching
and attention patterns."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..graph.names import head_name as name_of_head
from ..graph.names import parse_component
from .core import as_float, close, correct, fmt, register, wrong
from .shared import edge_label, head_name, mean_metric, reference, residual_edge


@register("lab4.n_crossing_edges")
def n_crossing_edges(answer, model, ds):
    """Crossing edges of the PEAP graph: q, k and v for every head and every (key span, query
    span) pair with the key span not after the query span."""
    got = as_float(answer)
    ref = reference(model)
    S = len(ds.schema.spans)
    pairs = S * (S + 1) // 2
    exp = 3 * ref.L * ref.H * pairs
    if got == exp:
        correct(f"3 kinds x {ref.L * ref.H} heads x {pairs} span pairs = {exp}.")
    hint = ""
    if got == 3 * ref.L * ref.H * S * S:
        hint = " A key span may not come after its query span: count only pairs with key <= query."
    elif got == ref.L * ref.H * pairs:
        hint = " Each (head, key span, query span) has three edges: q, k and v."
    wrong(f"expected {exp}, got {answer}.{hint}")


@register("lab4.eap_is_sum")
def eap_is_sum(answer, model, ds, edge: str = "m0->a3.h2<k>"):
    """The sum over spans of an edge's PEAP residual scores (= its EAP score)."""
    got = as_float(answer)
    u, v, _ = residual_edge(edge)
    exp = float(reference(model).eap_scores(ds, [(u, v)])[0])
    if close(got, exp, rtol=1e-4, atol=1e-6):
        correct(f"the spans of {edge_label(u, v)} add up to {fmt(got)}, its EAP score: EAP is "
                "PEAP with the positions summed away.")
    wrong(f"expected {fmt(exp)} (the EAP score of {edge_label(u, v)}), got {fmt(got)}. Add the "
          "score of the 'resid' rows of this edge over every span.")


def _name_movers(model, ds, k: int):
    ref = reference(model)
    last = ds.schema.spans[-1]
    heads = [name_of_head(layer, h) for layer in range(ref.L) for h in range(ref.H)]
    full = mean_metric(model, ds)
    drop = {h: full - mean_metric(model, ds, {(h, "logits"): {last: 1.0}}) for h in heads}
    return sorted(heads, key=lambda h: -drop[h])[:k], drop


@register("lab4.name_movers")
def name_movers(answer, model, ds, k: int = 2):
    """The ``k`` heads whose direct edge into the logits at the last span matters most."""
    if isinstance(answer, str):
        answer = [answer]
    got = {head_name(h) for h in answer}
    want, drop = _name_movers(model, ds, k)
    if got == set(want):
        correct(f"{' and '.join(want)}: patching their edge into the logits at "
                f"'{ds.schema.spans[-1]}' costs {', '.join(fmt(drop[h]) for h in want)} logits.")
    if len(got) != k:
        wrong(f"name {k} heads (got {len(got)}).")
    wrong(f"not quite: patching the edge into the logits of {', '.join(sorted(got - set(want)))} "
          "costs less than that of other heads. Rank the heads by the |score| of their "
          f"'resid' edge into 'logits' at span '{ds.schema.spans[-1]}'.")


@register("lab4.read_spans")
def read_spans(answer, model, ds, k: int = 2):
    """{head: the key span it reads from at the last token} for the name-mover heads."""
    if not isinstance(answer, Mapping):
        wrong("answer with a dict {head: span}, e.g. {'a3.h2': 'S2', ...}.")
    want, _ = _name_movers(model, ds, k)
    got = {head_name(h): str(s) for h, s in answer.items()}
    if set(got) != set(want):
        wrong(f"give a span for each name-mover head ({', '.join(want)}); got {', '.join(got)}.")
    ref, spans = reference(model), list(ds.schema.spans)
    bad, where = [], {}
    for h in want:
        _, layer, head = parse_component(h)
        att = np.zeros(len(spans))
        for ex in ds.examples:
            A = ref.attention(ex.clean_ids, layer, head)[-1]
            for i, (s, e) in enumerate(ex.spans):
                att[i] += A[s:e].sum()
        att /= len(ds)
        best = spans[int(att.argmax())]
        where[h] = (best, att.max())
        if got[h] != best:
            bad.append(f"{h} puts {att[spans.index(got[h])] if got[h] in spans else 0:.0%} of its "
                       f"attention on {got[h]!r}")
    if bad:
        wrong("; ".join(bad) + ". Look at the v crossing edges of each head into the last span: "
              "which key span has the largest |score|?")
    correct("; ".join(f"{h} reads {s!r} ({w:.0%} of its attention from the last token)"
                      for h, (s, w) in where.items()) + ": they copy the indirect object's name.")


def curve_points(curve, level: float) -> dict[str, float | None]:
    """{result: real per-example edges of the curve's smallest circuit reaching ``level``, or
    None where none does}."""
    out = {}
    for name in curve.results:
        p = curve.point(level, name)
        out[name] = None if p is None else float(p["n_real_edges"])
    return out



@register("lab4.real_edges_needed")
def real_edges_needed(answer, curve, level: float = 0.5):
    """{result: real per-example edges of the smallest circuit on the curve reaching ``level``}."""
    if not isinstance(answer, Mapping):
        wrong('answer with a dict {"PEAP": ..., "EAP": ...}.')
    want = curve_points(curve, level)
    bad = []
    for name, exp in want.items():
        if name not in answer:
            bad.append(f"missing {name!r}")
            continue
        got = answer[name]
        if exp is None:
            if got is not None and not (isinstance(got, float) and np.isnan(got)):
                bad.append(f"{name} never reaches {level} on these sizes (answer None)")
        elif not close(as_float(got, name), exp, rtol=1e-6, atol=1e-6):
            bad.append(f"{name}: expected {fmt(exp)}, got {fmt(as_float(got, name))}")
    if bad:
        wrong("; ".join(bad) + f". Use curve.point({level}, name)['n_real_edges'].")
    correct(", ".join(f"{n}: {fmt(v)}" for n, v in want.items() if v is not None)
            + " real edges per example.")


@register("lab4.fewer_real_edges")
def fewer_real_edges(answer, curve, level: float = 0.5):
    """Which result reaches ``level`` with fewer real per-example edges."""
    want = curve_points(curve, level)
    reached = {n: v for n, v in want.items() if v is not None}
    best = min(reached, key=reached.get)
    if str(answer).strip().upper() == best.upper():
        others = [f"{n} {fmt(v)}" for n, v in reached.items() if n != best]
        correct(f"{best} needs {fmt(reached[best])} real edges per example"
                + (f" against {', '.join(others)}" if others else "") + ".")
    wrong(f"compare the two numbers of the previous exercise: the smaller one wins (got {answer!r}).")
