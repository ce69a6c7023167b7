"""Checks of lab 5 (prune it yourself). Circuits are re-evaluated here with a separate
`pw.Evaluator` (not the explorer's), and compared with the hand-built model's `TRUE_EDGES`."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .core import as_float, close, correct, fmt, register, wrong
from .shared import ds_key, circuit_of, edge_keys

_EVALUATORS: dict = {}


def faithfulness(model, ds, circuit) -> float:
    from ..engine.evaluate import Evaluator

    key = (id(getattr(model, "hf", model)), ds_key(ds))
    if key not in _EVALUATORS:
        _EVALUATORS[key] = Evaluator(model, ds)
    return _EVALUATORS[key].run(circuit).faithfulness


def _true_edges():
    from ..models.groundtruth import TRUE_EDGES

    return set(map(tuple, TRUE_EDGES))


@register("lab5.pruned")
def pruned(answer, model, ds, max_edges: int = 450, min_faithfulness: float = 0.68):
    """A circuit (or the explorer showing it) with at most ``max_edges`` edges and normalized
    faithfulness at least ``min_faithfulness``."""
    circ = circuit_of(answer, edited=True)
    f = faithfulness(model, ds, circ)
    n = circ.n_edges
    if n <= max_edges and f >= min_faithfulness:
        correct(f"{n} edges with faithfulness {f:.3f}: smaller and more faithful than the search's "
                "circuit. Greedy search on first-order scores is not the last word.")
    msgs = []
    if n > max_edges:
        msgs.append(f"it still has {n} edges (at most {max_edges})")
    if f < min_faithfulness:
        msgs.append(f"its faithfulness is {f:.3f} (at least {min_faithfulness})")
    wrong(" and ".join(msgs) + ". Try removing whole heads that the faithfulness does not miss, "
          "and undo the removals that hurt.")


@register("lab5.precision_recall")
def precision_recall(answer, circuit):
    """(precision, recall) of the circuit's edge-table rows against `TRUE_EDGES`."""
    if isinstance(answer, Mapping):
        answer = (answer.get("precision"), answer.get("recall"))
    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        wrong("answer with a pair (precision, recall).")
    p, r = as_float(answer[0], "precision"), as_float(answer[1], "recall")
    rows = edge_keys(circuit_of(circuit))
    truth = _true_edges()
    hit = len(rows & truth)
    exp_p, exp_r = hit / max(len(rows), 1), hit / len(truth)
    if close(p, exp_p, atol=1e-6) and close(r, exp_r, atol=1e-6):
        correct(f"{hit} of the circuit's {len(rows)} rows are true edges (precision {exp_p:.2f}) "
                f"and it holds {hit} of the {len(truth)} true edges (recall {exp_r:.2f}).")
    wrong(f"the circuit has {len(rows)} rows (q, k and v apart), {hit} of them in TRUE_EDGES; "
          f"precision = true rows / rows, recall = true rows / {len(truth)}. Got ({fmt(p)}, {fmt(r)}).")


@register("lab5.true_circuit")
def true_circuit(answer, model, ds):
    """The explorer (or circuit) pruned down to exactly `TRUE_EDGES`, still faithful."""
    circ = circuit_of(answer, edited=True)
    rows, truth = edge_keys(circ), _true_edges()
    f = faithfulness(model, ds, circ)
    if rows == truth and f > 0.99:
        correct(f"exactly the {len(truth)} hand-built edges, faithfulness {f:.3f}.")
    extra, missing = rows - truth, truth - rows
    msgs = []
    if extra:
        msgs.append(f"{len(extra)} extra edge(s), e.g. {min(extra)}")
    if missing:
        msgs.append(f"{len(missing)} true edge(s) missing, e.g. {min(missing)} "
                    "(undo the removal that took it out)")
    if not msgs:
        msgs.append(f"faithfulness is only {f:.3f}")
    wrong("; ".join(msgs) + ".")


def _drops(model, ds, circ):
    f0 = faithfulness(model, ds, circ)
    out = {}
    for row in np.nonzero(circ.in_rows)[0]:
        c = circ.copy()
        c.remove_edge(int(row), merged=False)
        out[circ.space.edge_name(int(row))] = f0 - faithfulness(model, ds, c)
    return out


@register("lab5.minimal")
def minimal(answer, circuit, model, ds):
    """The smallest drop in faithfulness from removing one edge (one row) of ``circuit``."""
    got = as_float(answer)
    drops = _drops(model, ds, circuit_of(circuit))
    name = min(drops, key=drops.get)
    exp = drops[name]
    if close(got, exp, atol=1e-3):
        correct(f"the least important edge, {name}, still costs {exp:.3f} of faithfulness: every "
                "edge is needed, the circuit is minimal." if exp > 0.01 else
                f"{name} costs only {exp:.3f}: the circuit is not minimal.")
    wrong(f"expected {fmt(exp)}, got {fmt(got)}: remove each edge on its own (a copy of the "
          "circuit each time), evaluate, and take the smallest f(C) - f(C minus the edge).")


@register("lab5.smallest_faithful")
def smallest_faithful(answer, model, ds, min_faithfulness: float = 0.99):
    """The smallest circuit you can find with faithfulness >= ``min_faithfulness``; it must
    lose faithfulness when any single edge is removed."""
    circ = circuit_of(answer, edited=True)
    f = faithfulness(model, ds, circ)
    if f < min_faithfulness:
        wrong(f"its faithfulness is {f:.3f}, below {min_faithfulness}: undo the last removal.")
    drops = _drops(model, ds, circ)
    spare = [n for n, d in drops.items() if faithfulness_ok(f - d, min_faithfulness)]
    if spare:
        wrong(f"{circ.n_rows} edges, but you can still remove {spare[0]} and keep "
              f"faithfulness >= {min_faithfulness}.")
    correct(f"{circ.n_rows} edges ({', '.join(drops)}) with faithfulness {f:.3f}, and none of "
            "them can go.")


def faithfulness_ok(f: float, level: float) -> bool:
    return f >= level


@register("lab5.completeness_gap")
def completeness_gap(answer, model, ds, circuits: Mapping, full, knockout):
    """{name: |f(C minus K) - f(full minus K)|} for each named circuit, K = ``knockout`` (an
    edge name of the full circuit's space)."""
    if not isinstance(answer, Mapping) or set(answer) != set(circuits):
        wrong(f"answer with a dict with keys {sorted(circuits)}.")
    full_c = circuit_of(full).copy()
    full_c.remove_edge(knockout, merged=False)
    f_full = faithfulness(model, ds, full_c)
    bad, want = [], {}
    for name, c in circuits.items():
        c = circuit_of(c).copy()
        if c.space.same_as(full_c.space):
            c.remove_edge(knockout, merged=False)
        want[name] = abs(faithfulness(model, ds, c) - f_full)
        got = as_float(answer[name], name)
        if not close(got, want[name], atol=2e-3):
            bad.append(f"{name}: expected {fmt(want[name])}, got {fmt(got)}")
    if bad:
        wrong("; ".join(bad) + f". f(full minus K) = {f_full:.3f}; gap = |f(C minus K) - "
              "f(full minus K)|, an edge not in C stays out.")
    worst = max(want, key=want.get)
    correct(", ".join(f"{n}: {want[n]:.3f}" for n in want)
            + f". {worst!r} behaves unlike the model once K is knocked out: it is incomplete.")
