"""Checks of lab 2 (EAP as a first-order approximation of patching). EAP scores and exact
patching effects are recomputed with `reference.Reference` (autograd and explicit slot sums on a
plain-PyTorch GPT-2), not with `pw.attribute` or `pw.Evaluator`."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from .core import as_float, close, correct, fmt, register, wrong
from .shared import ds_key, edge_label, mean_metric, reference, residual_edge

_EAP: dict = {}


def eap_table(model, ds) -> dict:
    """{(u, v): EAP score} of every residual edge, from the reference (cached)."""
    key = (id(getattr(model, "hf", model)), ds_key(ds))
    if key not in _EAP:
        ref = reference(model)
        edges = ref.edges()
        _EAP[key] = dict(zip(edges, ref.eap_scores(ds, edges)))
    return _EAP[key]


def top_edges(model, ds, k: int) -> list:
    table = eap_table(model, ds)
    return sorted(table, key=lambda e: -abs(table[e]))[:k]


def exact_effect(model, ds, edge) -> float:
    """m(full minus edge) - m(full), counterfactual ablation, every position."""
    return mean_metric(model, ds, {edge: 1.0}) - mean_metric(model, ds)


@register("lab2.saturated_softmax")
def saturated_softmax(answer, score: float = 6.0, new_score: float = 0.0):
    """{"first_order": ..., "exact": ...} for the attention weight softmax([s, 0])[0] when s
    moves from ``score`` to ``new_score``."""
    if not isinstance(answer, Mapping) or not {"first_order", "exact"} <= set(answer):
        wrong('answer with a dict {"first_order": ..., "exact": ...}.')
    fo, ex = as_float(answer["first_order"], "first_order"), as_float(answer["exact"], "exact")
    a = 1 / (1 + math.exp(-score))
    b = 1 / (1 + math.exp(-new_score))
    exp_fo, exp_ex = a * (1 - a) * (new_score - score), b - a
    ok_fo, ok_ex = close(fo, exp_fo, atol=1e-5), close(ex, exp_ex, atol=1e-5)
    if ok_fo and ok_ex:
        correct(f"the tangent predicts {fmt(exp_fo)} but the weight really moves by {fmt(exp_ex)}: "
                f"{abs(exp_ex / exp_fo):.0f} times more. A saturated softmax has almost no slope.")
    msgs = []
    if not ok_fo:
        msgs.append(f"first_order should be a'(s) * (new - old) with a' = a (1 - a): {fmt(exp_fo)}, "
                    f"got {fmt(fo)}")
    if not ok_ex:
        msgs.append(f"exact should be a(new) - a(old) = {fmt(exp_ex)}, got {fmt(ex)}")
    wrong("; ".join(msgs) + ".")


@register("lab2.eap_slope")
def eap_slope(answer, model, ds, edge: str = "a3.h2->logits"):
    """The finite-difference slope d m / d alpha at alpha = 0 of patching ``edge`` a fraction
    alpha of the way: it equals the edge's EAP score."""
    got = as_float(answer)
    u, v, _ = residual_edge(edge)
    exp = eap_table(model, ds)[(u, v)]
    if close(got, exp, rtol=1e-2, atol=1e-3):
        correct(f"the slope at alpha = 0 is {fmt(got)}; the EAP score of {edge_label(u, v)} is "
                f"{fmt(exp)}. EAP is exactly this derivative.")
    full_effect = exact_effect(model, ds, (u, v))
    hint = (" That is the whole effect m(1) - m(0), not the slope at 0: use a tiny alpha."
            if close(got, full_effect, rtol=1e-2) else
            " Divide (m(alpha) - m(0)) by alpha, with a small alpha such as 1e-4.")
    wrong(f"expected about {fmt(exp)}, got {fmt(got)}.{hint}")


def _effects(answer):
    if hasattr(answer, "to_dict") and not isinstance(answer, Mapping):
        answer = answer.to_dict()
    if not isinstance(answer, Mapping):
        wrong("answer with a dict {edge name: exact effect}, e.g. {'a3.h2->logits': -4.76, ...}.")
    out = {}
    for name, value in answer.items():
        u, v, _ = residual_edge(name, "a key")
        out[(u, v)] = as_float(value, f"the effect of {name!r}")
    return out


@register("lab2.exact_effects")
def exact_effects(answer, model, ds, k: int = 10):
    """{edge: m(full minus edge) - m(full)} for the ``k`` edges of largest |EAP score|."""
    effects = _effects(answer)
    want = top_edges(model, ds, k)
    missing = [edge_label(*e) for e in want if e not in effects]
    extra = [edge_label(*e) for e in effects if e not in want]
    if missing or extra:
        wrong(f"the {k} edges of largest |EAP score| are {', '.join(edge_label(*e) for e in want)}"
              + (f"; missing: {', '.join(missing)}" if missing else "")
              + (f"; not among them: {', '.join(extra)}" if extra else "") + ".")
    bad = []
    for e in want:
        exp = exact_effect(model, ds, e)
        if not close(effects[e], exp):
            bad.append(f"{edge_label(*e)}: expected {fmt(exp)}, got {fmt(effects[e])}")
    if bad:
        wrong("effect = m(full circuit minus the edge) - m(full circuit); " + "; ".join(bad) + ".")
    correct(f"all {k} exact patching effects are right.")


@register("lab2.wrong_signs")
def wrong_signs(answer, model, ds, k: int = 10):
    """How many of the ``k`` largest-|EAP| edges have an EAP score of the wrong sign."""
    got = as_float(answer)
    table = eap_table(model, ds)
    edges = top_edges(model, ds, k)
    flips = [e for e in edges if np.sign(table[e]) != np.sign(exact_effect(model, ds, e))]
    if got == len(flips):
        correct(f"{len(flips)} of the top {k} point the wrong way: "
                f"{', '.join(edge_label(*e) for e in flips) or 'none'}.")
    wrong(f"expected {len(flips)}, got {answer}. Compare the sign of each EAP score with the "
          "sign of its exact effect.")


@register("lab2.worst_edge")
def worst_edge(answer, model, ds, k: int = 20):
    """The edge among the ``k`` largest-|EAP| edges where |EAP - exact| is largest."""
    u, v, _ = residual_edge(answer, "your answer")
    table = eap_table(model, ds)
    edges = top_edges(model, ds, k)
    err = {e: abs(table[e] - exact_effect(model, ds, e)) for e in edges}
    best = max(err, key=err.get)
    if (u, v) == best:
        correct(f"{edge_label(*best)}: EAP says {fmt(table[best])}, patching gives "
                f"{fmt(exact_effect(model, ds, best))}. A big change pushed through a nonlinearity "
                "(here an MLP) is far from the tangent.")
    if (u, v) not in err:
        wrong(f"{edge_label(u, v)} is not among the {k} edges of largest |EAP score|.")
    wrong(f"the error of {edge_label(u, v)} is {fmt(err[(u, v)])}, but another edge's is larger.")
