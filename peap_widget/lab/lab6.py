"""Checks of lab 6 (beyond EAP). Each recomputes the expected value on its own: Spearman
correlations from its own ranks (average ranks for ties), exact edge effects spot-checked on the
plain-PyTorch `Reference`, circuit sizes and faithfulness with a separate `pw.Evaluator`,
minimality and completeness by removing edges and nodes one circuit at a time (not through
`pw.minimality` / `pw.completeness`), and AUROC as the Mann-Whitney statistic over pairs.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .core import as_float, close, correct, fmt, register, wrong
from .shared import ds_key, circuit_of, mean_metric

_EVALUATORS: dict = {}


def evaluator(model, ds):
    """One cached `Evaluator` per (model, data), separate from the notebook's."""
    from ..engine.evaluate import Evaluator

    key = (id(getattr(model, "hf", model)), ds_key(ds))
    if key not in _EVALUATORS:
        _EVALUATORS[key] = Evaluator(model, ds)
    return _EVALUATORS[key]


def _scores(x, what: str) -> np.ndarray:
    s = getattr(x, "scores", x)
    s = np.asarray(s, dtype=np.float64)
    if s.ndim != 1:
        wrong(f"{what} should be an attribution result (pw.attribute / pw.exact_scores).")
    return s


def ranks(x) -> np.ndarray:
    """Ranks 1..n of ``x``, tied values sharing their average rank."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    sx = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sx[j + 1] == sx[i]:
            j += 1
        r[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return r


def spearman(a, b) -> float:
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / np.sqrt((ra ** 2).sum() * (rb ** 2).sum()))


def _answer_dict(answer, keys) -> dict:
    if not isinstance(answer, Mapping) or set(answer) != set(keys):
        wrong(f"answer with a dict with the keys {sorted(keys)}.")
    return {k: as_float(answer[k], f"answer[{k!r}]") for k in keys}


@register("lab6.rank_correlation")
def rank_correlation(answer, results: Mapping, exact, model, ds, spot_checks: int = 2):
    """{name: Spearman correlation of results[name]'s scores with ``exact``'s scores}. The
    largest exact scores are re-measured on the reference first (removing that edge at every
    position), so the correlation is against true patching effects."""
    got = _answer_dict(answer, results)
    ex = _scores(exact, "exact")
    edges = exact.edges
    base = mean_metric(model, ds)
    for row in np.argsort(-np.abs(ex))[:spot_checks]:
        e = edges.iloc[int(row)]
        true = mean_metric(model, ds, {(str(e["src"]), str(e["dst"])): 1.0}) - base
        if not close(ex[row], true, rtol=1e-3, atol=1e-4):
            wrong(f"`exact` does not hold exact patching effects: removing {e['src']}->{e['dst']} "
                  f"changes the metric by {fmt(true)}, `exact` says {fmt(ex[row])}. Use "
                  "pw.exact_scores(model, ds, positional=False) on the same data.")
    want = {k: spearman(_scores(r, k), ex) for k, r in results.items()}
    bad = [f"{k}: expected {want[k]:.3f}, got {fmt(got[k])}" for k in want
           if not close(got[k], want[k], rtol=0, atol=2e-3)]
    if bad:
        pearson = {k: float(np.corrcoef(_scores(r, k), ex)[0, 1]) for k, r in results.items()}
        hint = [k for k in bad if close(got[k.split(":")[0]], pearson[k.split(":")[0]], rtol=0, atol=2e-3)]
        wrong("; ".join(bad) + (". That is the Pearson correlation of the scores: Spearman "
                                "correlates their ranks" if hint else
                                ". Spearman = the Pearson correlation of the ranks of the signed "
                                "scores (ties get their average rank)") + ".")
    best = max(want, key=want.get)
    spread = max(want.values()) - min(want.values())
    verdict = (f"{best} ranks edges most like exact patching" if spread > 0.02 else
               "they rank edges about equally well")
    correct(", ".join(f"{k} {want[k]:.3f}" for k in want) + f": {verdict}, and none is close to 1: "
            "a gradient estimate misses effects where the model is far from linear.")


@register("lab6.circuit_sizes")
def circuit_sizes(answer, acdc_circuit, attribution, model, ds, grid=range(50, 1001, 50)):
    """{"acdc": rows of the ACDC circuit, "peap": rows of the smallest greedy PEAP circuit
    (``attribution.circuit(n_edges=n, merge_qkv=False)``, n on ``grid``) at least as faithful}."""
    got = _answer_dict(answer, ["acdc", "peap"])
    ev = evaluator(model, ds)
    acdc_c = circuit_of(acdc_circuit)
    n_acdc = int(np.count_nonzero(acdc_c.in_rows))
    f_acdc = ev.run(acdc_c).faithfulness
    n_peap, f_peap = None, None
    for n in grid:
        c = attribution.circuit(n_edges=n, merge_qkv=False)
        f = ev.run(c).faithfulness
        if f >= f_acdc:
            n_peap, f_peap = int(np.count_nonzero(c.in_rows)), f
            break
    if n_peap is None:
        wrong(f"no greedy circuit on the grid reaches ACDC's faithfulness {f_acdc:.3f}.")
    msgs = []
    if got["acdc"] != n_acdc:
        msgs.append(f"the ACDC circuit has {n_acdc} edges (rows of its edge table), got {fmt(got['acdc'])}")
    if got["peap"] != n_peap:
        msgs.append(f"expected {n_peap} edges for greedy PEAP (the first size on the grid with "
                    f"faithfulness >= {f_acdc:.3f}: it has {f_peap:.3f}), got {fmt(got['peap'])}")
    if msgs:
        wrong("; ".join(msgs) + ". Count rows after pruning: len(circuit.edges).")
    correct(f"ACDC: {n_acdc} edges at faithfulness {f_acdc:.3f}; greedy PEAP needs {n_peap} edges "
            f"({n_peap / max(n_acdc, 1):.1f}x) for {f_peap:.3f}. ACDC tests every removal exactly; "
            "PEAP ranks by a first-order estimate in one pass.")


@register("lab6.minimality")
def minimality(answer, circuit, model, ds):
    """{"n_below": edges whose own contribution m(C) - m(C minus the edge) is under 1% of
    |m(full) - m(empty)|, "weakest": the smallest |contribution|}; an edge as the circuit
    counts one (q/k/v of a head and span pair together when merged)."""
    got = _answer_dict(answer, ["n_below", "weakest"])
    ev = evaluator(model, ds)
    circ = circuit_of(circuit)
    full, empty = circ.copy(), circ.copy()
    full.in_rows[:] = True
    empty.in_rows[:] = False
    threshold = 0.01 * abs(ev.run(full).metric - ev.run(empty).metric)
    m_c = ev.run(circ).metric
    units = circ.units
    contrib = []
    for u in np.nonzero(units.unit_mask(circ.in_rows))[0]:
        rows = units.rows_of([u])
        c = circ.copy()
        c.in_rows[rows] = False
        contrib.append(m_c - ev.run(c).metric)
    contrib = np.abs(np.asarray(contrib))
    n_below, weakest = int((contrib < threshold).sum()), float(contrib.min())
    msgs = []
    if got["n_below"] != n_below:
        msgs.append(f"{n_below} of the {len(contrib)} edges contribute less than the threshold "
                    f"{threshold:.3g}, got {fmt(got['n_below'])}")
    if not close(got["weakest"], weakest, rtol=1e-3, atol=1e-4):
        msgs.append(f"the weakest edge's |contribution| is {fmt(weakest)}, got {fmt(got['weakest'])}")
    if msgs:
        wrong("; ".join(msgs) + ". Use pw.minimality(evaluator, circuit): the `below` and "
              "`contribution` columns.")
    correct(f"{n_below} of {len(contrib)} edges are below {threshold:.3g} (1% of the model's "
            f"effect); the weakest changes the metric by {weakest:.3g}."
            + (" Those are the ones to prune." if n_below else " The circuit is minimal."))


@register("lab6.completeness")
def completeness(answer, circuit, model, ds, n_samples: int = 10, p: float = 0.5, seed: int = 0):
    """The worst completeness gap max_K |m(C minus K) - m(full minus K)| over ``n_samples``
    random node subsets K (each node in with probability ``p``, numpy's ``default_rng(seed)``)."""
    got = as_float(answer, "the worst gap")
    ev = evaluator(model, ds)
    circ = circuit_of(circuit)
    full = circ.copy()
    full.in_rows[:] = True
    from ..analysis.quality import circuit_nodes

    nodes = circuit_nodes(circ)     # its order defines which random subsets a seed draws
    rng = np.random.default_rng(seed)
    gaps = []
    for _ in range(n_samples):
        K = [n for n, keep in zip(nodes, rng.random(len(nodes)) < p) if keep]
        c, m = circ.copy(), full.copy()
        for node in K:
            c.remove_node(node)
            m.remove_node(node)
        gaps.append(abs(ev.run(c).metric - ev.run(m).metric))
    worst = max(gaps)
    if not close(got, worst, rtol=2e-3, atol=2e-3):
        wrong(f"expected a worst gap of {fmt(worst)}, got {fmt(got)}: "
              f"pw.completeness(evaluator, circuit, n_samples={n_samples}, seed={seed}).worst_gap.")
    f_full = ev.run(full).metric
    correct(f"the worst gap is {worst:.3g} against m(full) = {f_full:.3g}: "
            + ("the circuit is far from complete: the model still uses parts it leaves out."
               if worst > 0.1 * abs(f_full) else "the circuit is nearly complete."))


def mann_whitney(scores, truth) -> float:
    """P(a true edge outranks another edge by |score|), ties counting one half."""
    s = np.abs(np.asarray(scores, dtype=np.float64))
    pos, neg = s[truth], s[~truth]
    gt = (pos[:, None] > neg[None, :]).sum()
    eq = (pos[:, None] == neg[None, :]).sum()
    return float((gt + 0.5 * eq) / (len(pos) * len(neg)))


@register("lab6.auroc")
def auroc(answer, results: Mapping, truth_edges):
    """{name: AUROC of ranking results[name]'s edges by |score| against ``truth_edges`` (edge
    keys (kind, src, dst, src_span, dst_span))}."""
    got = _answer_dict(answer, results)
    keys = set(map(tuple, truth_edges))
    want = {}
    for k, r in results.items():
        rows = r.edges[["kind", "src", "dst", "src_span", "dst_span"]].itertuples(index=False, name=None)
        mask = np.array([row in keys for row in rows])
        want[k] = mann_whitney(_scores(r, k), mask)
    bad = [f"{k}: expected {want[k]:.4f}, got {fmt(got[k])}" for k in want
           if not close(got[k], want[k], rtol=0, atol=1e-3)]
    if bad:
        wrong("; ".join(bad) + ". AUROC = the chance that a true edge has a larger |score| than "
              "another edge: pw.roc_curve(result, truth).auroc.")
    correct(", ".join(f"{k} {want[k]:.3f}" for k in want) + ".")
