"""Circuit quality beyond faithfulness: completeness, minimality, overlap with a known circuit.

Every number comes from a public `Evaluator` (its clean and ablation runs are cached; each
circuit below is one more patched run), with the evaluator's ablation and metric. ``F`` is the
evaluated circuit's metric m(C) (``measure="metric"``, Wang et al. 2023's F) or its normalized
faithfulness (``measure="faithfulness"``).

- **Completeness** (Wang et al. 2023, section 5.2): a complete circuit C behaves like the full
  model M when parts are knocked out of both: for subsets K of C's nodes, compare F(C \\ K)
  with F(M \\ K). Removing a node removes every edge touching it (`Circuit.remove_node`: a head
  at a span takes its q/k/v inputs there along). Subsets are drawn with a seed (each node in K
  with probability ``p``), plus, with ``greedy=k``, Wang et al.'s greedy K that grows the gap
  node by node. The full model is complete: C = M gives C \\ K = M \\ K, gap 0 exactly.
- **Minimality**: each circuit edge's own contribution F(C) - F(C minus that edge) (q/k/v of
  one head and span pair are one edge when the circuit merges them); edges whose |contribution|
  is below a threshold are flagged (they could go).
- **Overlap**: precision and recall of a circuit or of a score ranking's top n against a
  ground-truth edge set, and the ROC curve and AUROC of the ranking (ties count one half, so the
  AUROC is the Mann-Whitney U statistic over (true, other) pairs).

Example:
    >>> from peap_widget.models import groundtruth as gt
    >>> model = pw.models.load("induction-groundtruth")     # hand-built: its circuit is known
    >>> ds = pw.Dataset.from_records(gt.make_records(16, seed=0), model)
    >>> peap = pw.attribute(model, ds, progress=False)
    >>> ev, circ = pw.Evaluator(model, ds), peap.circuit(n_edges=9)
    >>> round(pw.completeness(ev, circ, n_samples=5, seed=0, progress=False).worst_gap, 4)
    0.0
    >>> int(pw.minimality(ev, circ, progress=False).below.sum())   # edges that do (almost) nothing
    2
    >>> truth = gt.true_edge_mask(peap.edges)                      # the 9 true positional edges
    >>> round(pw.roc_curve(peap, truth).auroc, 3)
    1.0
    >>> {k: round(float(v), 3) for k, v in pw.overlap(circ, truth).items()}
    {'n': 11.0, 'true_positives': 9.0, 'precision': 0.818, 'recall': 1.0}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Union
from dataclasses import dataclass, field

import numpy as np

from ..circuits.circuit import Circuit
from ..graph.names import component_of, node_name, split_node
from ..errors import PeapError

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from ..circuits.result import AttributionResult
    from ..engine.evaluate import Evaluator

#: the true edges: a bool mask over edge-table rows, a `Circuit`, or edge keys
#: ``(kind, src, dst, src_span, dst_span)``
Truth = Union[np.ndarray, Circuit, Sequence[tuple]]
#: a ranking of the edges: a result, or one score per edge-table row
Ranking = Union["AttributionResult", np.ndarray]

MEASURES = ("metric", "faithfulness")


# --- evaluating through the public Evaluator ----------------------------------------------------

class _F:
    """F of circuits through one `Evaluator`, memoised by edge set (two edits that leave the same
    rows are one run: C \\ K and M \\ K coincide for C = M)."""

    def __init__(self, evaluator, measure: str):
        if measure not in MEASURES:
            raise PeapError(f"measure must be one of {MEASURES}, got {measure!r}")
        if measure == "faithfulness" and evaluator.refusal:
            raise PeapError(evaluator.refusal)
        self.evaluator, self.measure = evaluator, measure
        self.memo: dict[bytes, float] = {}
        self.runs = 0

    def __call__(self, circuit: Circuit) -> float:
        key = np.packbits(circuit.in_rows).tobytes()
        if key not in self.memo:
            ev = self.evaluator.run(circuit)
            self.runs += 1
            self.memo[key] = float(ev.metric if self.measure == "metric" else ev.faithfulness)
        return self.memo[key]


def _progress(progress, total: int, desc: str):
    """(tick(), close()) for a tqdm bar (True), nothing (False) or ``progress(done, total)``."""
    if callable(progress):
        done = [0]

        def tick():
            done[0] += 1
            progress(done[0], total)
        return tick, lambda: None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="circuit", disable=not progress)
    return (lambda: bar.update()), bar.close


def _check(evaluator, circuit):
    if not hasattr(evaluator, "run") or not hasattr(evaluator, "ds"):
        raise PeapError("pass a pw.Evaluator(model, ds) (its cached runs are reused), got "
                        f"{type(evaluator).__name__}")
    if not isinstance(circuit, Circuit):
        raise PeapError(f"expected a pw.Circuit, got {type(circuit).__name__}")


def full_model(circuit: Circuit) -> Circuit:
    """The full model M over ``circuit``'s edge space (every edge), with its settings."""
    return Circuit(circuit.space, np.ones(len(circuit.space), dtype=bool), circuit.scores,
                   circuit.merge_qkv, circuit.settings, circuit.span_lengths, name="full model")


def circuit_nodes(circuit: Circuit) -> list[str]:
    """The circuit's component nodes at spans (``"a1.h0@B"``, ``"m0@S1"``): the heads and MLPs
    its edges touch (a q/k/v input node counts as its head), in graph order; ``input`` and
    ``logits`` are not removable and left out."""
    out = []
    for name in circuit.nodes():
        base, span = split_node(name)
        base = component_of(base)
        if base in ("input", "logits"):
            continue
        out.append(node_name(base, span))
    index = circuit.space.node_index
    return sorted(set(out), key=lambda n: index[n])


def without_nodes(circuit: Circuit, nodes) -> Circuit:
    """A copy of ``circuit`` with every edge touching ``nodes`` removed."""
    c = circuit.copy()
    for n in nodes:
        c.remove_node(n)
    return c


# --- completeness -----------------------------------------------------------------------------------

@dataclass
class Completeness:
    """`completeness`'s answer. ``samples``: one row per subset K (``sample``: its number, or
    ``"greedy k"``; ``nodes``: K; ``size``; ``f_circuit`` = F(C \\ K); ``f_model`` = F(M \\ K);
    ``gap`` = |f_circuit - f_model|). ``worst_gap``: the largest gap, ``worst_nodes`` its K.
    ``f_circuit`` / ``f_model``: F(C) and F(M) (K empty). ``runs``: patched runs made."""

    samples: object
    worst_gap: float
    worst_nodes: tuple
    f_circuit: float
    f_model: float
    measure: str
    nodes: list = field(default_factory=list)
    runs: int = 0

    @property
    def mean_gap(self) -> float:
        return float(self.samples["gap"].mean()) if len(self.samples) else 0.0

    def __repr__(self) -> str:
        return (f"Completeness(worst_gap={self.worst_gap:.4g}, mean_gap={self.mean_gap:.4g}, "
                f"{len(self.samples)} subsets of {len(self.nodes)} nodes, measure={self.measure!r})")


def sample_subsets(nodes, n_samples: int, p: float = 0.5, seed: int = 0) -> list[tuple]:
    """``n_samples`` subsets of ``nodes``: each node in a subset with probability ``p``, drawn
    with ``numpy.random.default_rng(seed)`` (so the same seed gives the same subsets)."""
    if not 0 < p <= 1:
        raise PeapError(f"p must be in (0, 1], got {p}")
    rng = np.random.default_rng(seed)
    nodes = list(nodes)
    return [tuple(n for n, keep in zip(nodes, rng.random(len(nodes)) < p) if keep)
            for _ in range(int(n_samples))]


def completeness(evaluator: Evaluator, circuit: Circuit, n_samples: int = 10, p: float = 0.5,
                 seed: int = 0, greedy: int = 0, subsets: Sequence[Sequence[str]] | None = None,
                 measure: str = "metric", progress: bool | Callable = True) -> Completeness:
    """Completeness of ``circuit`` (Wang et al. 2023): |F(C \\ K) - F(M \\ K)| over subsets K
    of its nodes (see the module docstring).

    Args:
        evaluator: a `pw.Evaluator` on the model and data (its cached runs are reused).
        n_samples: how many random subsets K.
        p: each node is in K with probability ``p``.
        seed: of the random subsets.
        greedy: also grow K greedily for this many steps, each adding the node that makes the
            gap largest (costs about 2 x nodes runs per step).
        subsets: explicit subsets (lists of node names) instead of random ones.
        measure: ``"metric"`` (m, the default) or ``"faithfulness"`` (normalized).
        progress: a tqdm bar (True), none (False) or ``progress(done, total)``.

    Example:
        >>> res = pw.completeness(pw.Evaluator(model, ds), circ, n_samples=20)   # doctest: +SKIP
        >>> res.worst_gap, res.samples.sort_values("gap").tail(3)                # doctest: +SKIP
    """
    import pandas as pd

    _check(evaluator, circuit)
    F = _F(evaluator, measure)
    M = full_model(circuit)
    nodes = circuit_nodes(circuit)
    if subsets is None:
        subsets = sample_subsets(nodes, n_samples, p, seed)
    else:
        known = set(nodes)
        subsets = [tuple(s) for s in subsets]
        bad = [n for s in subsets for n in s if n not in known]
        if bad:
            raise PeapError(f"subset node {bad[0]!r} is not a node of the circuit; its nodes: "
                            f"{nodes[:8]}{' ...' if len(nodes) > 8 else ''}")
    steps = min(int(greedy), len(nodes))
    total = 2 + 2 * len(subsets) + sum(2 * (len(nodes) - k) for k in range(steps))
    tick, close = _progress(progress, total, "completeness")
    rows = []

    def gap_of(K):
        fc = F(without_nodes(circuit, K))
        tick()
        fm = F(without_nodes(M, K))
        tick()
        return fc, fm, abs(fc - fm)

    try:
        f_c, f_m = F(circuit), F(M)
        tick(), tick()
        for i, K in enumerate(subsets):
            fc, fm, gap = gap_of(K)
            rows.append({"sample": i, "nodes": K, "size": len(K), "f_circuit": fc,
                         "f_model": fm, "gap": gap})
        K: tuple = ()
        for step in range(steps):
            best = None
            for n in nodes:
                if n in K:
                    continue
                fc, fm, gap = gap_of((*K, n))
                if best is None or gap > best[3]:
                    best = ((*K, n), fc, fm, gap)
            K = best[0]
            rows.append({"sample": f"greedy {step + 1}", "nodes": K, "size": len(K),
                         "f_circuit": best[1], "f_model": best[2], "gap": best[3]})
    finally:
        close()
    table = pd.DataFrame(rows, columns=["sample", "nodes", "size", "f_circuit", "f_model", "gap"])
    if len(table):
        worst = table.loc[table["gap"].idxmax()]
        worst_gap, worst_nodes = float(worst["gap"]), tuple(worst["nodes"])
    else:
        worst_gap, worst_nodes = 0.0, ()
    return Completeness(table, worst_gap, worst_nodes, f_c, f_m, measure, nodes, F.runs)


# --- minimality ------------------------------------------------------------------------------------

def minimality(evaluator: Evaluator, circuit: Circuit, threshold: float | None = None,
               measure: str = "metric", progress: bool | Callable = True) -> pd.DataFrame:
    """Each circuit edge's own contribution F(C) - F(C minus that edge), as a DataFrame.

    An *edge* is what the circuit's size counts as one: a residual row, or (``merge_qkv``) the
    q, k and v rows of one head and span pair that are in the circuit. Nothing is pruned after
    the removal (the other edges stay as they are).

    Args:
        threshold: edges with |contribution| below it get ``below=True``; default 1% of
            |F(M) - F(empty)| (the effect of the whole model).
        measure: as for `completeness`.
        progress: as for `completeness`.

    Returns:
        A DataFrame, one row per edge, largest |contribution| first: ``unit``, ``rows`` (edge
        table rows), ``kind`` (``"q+k+v"``, ``"q+k"``... for a merged group's rows in C),
        ``src``, ``dst``, ``src_span``,
        ``dst_span``, ``score`` (attribution score of the first row), ``f_without``,
        ``contribution``, ``below``. ``df.attrs`` holds ``f_circuit``, ``threshold``,
        ``measure``.

    Example:
        >>> df = pw.minimality(pw.Evaluator(model, ds), circ)             # doctest: +SKIP
        >>> df[df.below]          # candidates to prune                   # doctest: +SKIP
    """
    import pandas as pd

    _check(evaluator, circuit)
    F = _F(evaluator, measure)
    units = circuit.units
    in_units = np.nonzero(units.unit_mask(circuit.in_rows))[0]
    tick, close = _progress(progress, 1 + len(in_units), "minimality")
    try:
        f_c = F(circuit)
        tick()
        if threshold is None:
            if measure == "faithfulness":
                scale = 1.0
            else:
                scale = abs(evaluator.clean_metric - evaluator.empty_metric)
            threshold = 0.01 * scale
        rows = []
        frame = circuit.space.frame
        for u in in_units:
            rr = units.rows_of([u])
            rr = rr[circuit.in_rows[rr]]
            c = circuit.copy()
            c.in_rows[rr] = False
            f = F(c)
            tick()
            keys = frame(rr)
            key = keys.iloc[0]
            rows.append({"unit": int(u), "rows": [int(r) for r in rr],
                         "kind": "+".join(map(str, keys["kind"])),
                         "src": str(key["src"]), "dst": str(key["dst"]),
                         "src_span": str(key["src_span"]), "dst_span": str(key["dst_span"]),
                         "score": float(circuit.scores[rr[0]]), "f_without": f,
                         "contribution": f_c - f})
    finally:
        close()
    cols = ["unit", "rows", "kind", "src", "dst", "src_span", "dst_span", "score", "f_without",
            "contribution"]
    df = pd.DataFrame(rows, columns=cols)
    df["below"] = df["contribution"].abs() < threshold
    df = df.iloc[np.argsort(-df["contribution"].abs().to_numpy(), kind="stable")]
    df = df.reset_index(drop=True)
    df.attrs.update(f_circuit=f_c, threshold=float(threshold), measure=measure)
    return df


# --- overlap with a known circuit ------------------------------------------------------------------

def _scores_of(x) -> np.ndarray:
    if hasattr(x, "scores") and not isinstance(x, np.ndarray):
        return np.asarray(x.scores, dtype=np.float64)
    if hasattr(x, "columns"):
        return x["score"].to_numpy(dtype=np.float64)
    return np.asarray(x, dtype=np.float64)


def truth_mask(truth: Truth, like: AttributionResult | Circuit | None = None,
               n: int | None = None) -> np.ndarray:
    """A bool mask over edge-table rows from ``truth``: a bool array, a `Circuit` (its edges),
    or a list of edge keys ``(kind, src, dst, src_span, dst_span)`` (needs ``like``: an
    `AttributionResult` or `Circuit` whose edge space the keys name)."""
    if isinstance(truth, Circuit):
        mask = truth.in_rows.copy()
    else:
        arr = np.asarray(truth)
        if arr.dtype == bool:
            mask = arr.copy()
        elif arr.ndim == 2 and arr.shape[1] == 5:
            arr = np.asarray(truth, dtype=object)
            space = getattr(like, "space", None)
            if space is None:
                raise PeapError("edge keys as truth need the result (or circuit) they belong to")
            rows = space.rows_of_keys(*(list(col) for col in arr.T))
            if (rows < 0).any():
                raise PeapError(f"truth edge {tuple(arr[int(np.argmin(rows))])!r} is not in "
                                "this edge table")
            mask = np.zeros(len(space), dtype=bool)
            mask[rows] = True
        else:
            raise PeapError("truth is a bool mask over the edge table's rows, a pw.Circuit, or "
                            "a list of (kind, src, dst, src_span, dst_span) keys")
    if n is not None and mask.shape != (n,):
        raise PeapError(f"the truth mask has {mask.shape[0]} rows, the scores {n}")
    return mask


@dataclass
class RocCurve:
    """A ROC curve of a score ranking against true edges: ``fpr``, ``tpr`` at every distinct
    score (from (0, 0) to (1, 1)), ``thresholds`` (the |score| or score cut at each point),
    ``auroc`` (area, = Mann-Whitney U / (n_pos n_neg), ties 1/2), ``n_pos``, ``n_neg``."""

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    auroc: float
    n_pos: int
    n_neg: int
    name: str = ""
    order: np.ndarray | None = None   # rows, best rank first (ties by row)
    truth: np.ndarray | None = None

    def precision_recall(self, n: int) -> dict:
        """Precision and recall of the top ``n`` rows of the ranking (ties by row)."""
        return _pr(np.asarray(self.truth[self.order[: int(n)]]).sum(), int(n), self.n_pos)

    def points(self, max_points: int = 400) -> list[list[float]]:
        """[[fpr, tpr], ...] for drawing: the curve's corners, thinned to about ``max_points``
        (the first and last kept; thinning only drops points on a near-straight run)."""
        f, t = self.fpr, self.tpr
        keep = np.ones(len(f), dtype=bool)
        if len(f) > 2:   # drop points in the middle of a straight run
            d1 = np.stack([f[1:-1] - f[:-2], t[1:-1] - t[:-2]])
            d2 = np.stack([f[2:] - f[1:-1], t[2:] - t[1:-1]])
            keep[1:-1] = np.abs(d1[0] * d2[1] - d1[1] * d2[0]) > 1e-15
        idx = np.nonzero(keep)[0]
        if len(idx) > max_points:
            grid = np.linspace(0, len(idx) - 1, max_points).round().astype(int)
            idx = idx[np.unique(grid)]
        return [[float(f[i]), float(t[i])] for i in idx]

    def to_json(self, max_points: int = 400) -> dict:
        """What the `FaithfulnessCurves` widget's ``roc`` trait holds for this curve."""
        return {"name": self.name, "auroc": float(self.auroc), "n_pos": int(self.n_pos),
                "n_neg": int(self.n_neg), "points": self.points(max_points)}

    def plot(self, ax: Axes | None = None) -> Figure:
        """A matplotlib Figure with this curve and the diagonal."""
        from matplotlib.figure import Figure

        if ax is None:
            fig = Figure(figsize=(4.2, 4), layout="constrained")
            ax = fig.subplots()
        ax.plot(self.fpr, self.tpr, label=f"{self.name or 'scores'} (AUROC {self.auroc:.3f})")
        ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.legend(loc="lower right")
        return ax.figure

    def __repr__(self) -> str:
        return (f"RocCurve({self.name + ', ' if self.name else ''}auroc={self.auroc:.4f}, "
                f"{self.n_pos} true / {self.n_neg} other edges)")


def _pr(tp, n, n_pos) -> dict:
    tp = int(tp)
    return {"n": int(n), "true_positives": tp, "precision": tp / n if n else float("nan"),
            "recall": tp / n_pos if n_pos else float("nan")}


def roc_curve(scores: Ranking, truth: Truth, absolute: bool = True, name: str = "") -> RocCurve:
    """The ROC curve of ranking edges by ``scores`` against ``truth``.

    Args:
        scores: an `AttributionResult` (its scores), an edge table with a ``score`` column, or
            a score array over the edge table's rows.
        truth: a bool mask over the rows, a `Circuit`, or edge keys (see `truth_mask`).
        absolute: rank by |score| (default: an edge matters in either direction) or by the
            signed score. NaN scores rank last.

    Example:
        >>> from peap_widget.models import groundtruth as gt                  # doctest: +SKIP
        >>> pw.roc_curve(peap, gt.true_edge_mask(peap.edges)).auroc          # doctest: +SKIP
    """
    s = _scores_of(scores)
    y = truth_mask(truth, scores, len(s))
    key = np.abs(s) if absolute else s.copy()
    key = np.where(np.isnan(key), -np.inf, key)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise PeapError(f"a ROC curve needs true and other edges; got {n_pos} true and "
                        f"{n_neg} other")
    order = np.lexsort((np.arange(len(key)), -key))       # best first, ties by row
    k, yy = key[order], y[order]
    last = np.r_[np.nonzero(k[1:] != k[:-1])[0], len(k) - 1]   # last index of each tied group
    tp, fp = np.cumsum(yy)[last], np.cumsum(~yy)[last]
    tpr = np.r_[0.0, tp / n_pos]
    fpr = np.r_[0.0, fp / n_neg]
    auroc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    return RocCurve(fpr, tpr, np.r_[np.inf, k[last]], auroc, n_pos, n_neg,
                    name or getattr(scores, "method", "") and str(scores.method).upper(),
                    order, y)


def roc_curves(results: AttributionResult | Sequence[AttributionResult] | Mapping[str, Ranking],
               truth: Truth, absolute: bool = True) -> dict[str, RocCurve]:
    """``{name: RocCurve}`` for several rankings: ``{name: result}``, a list of results (named
    by method) or one result; ``truth`` as for `roc_curve`."""
    if isinstance(results, Mapping):
        named = dict(results)
    else:
        items = results if isinstance(results, (list, tuple)) else [results]
        named = {}
        for r in items:
            nm = str(getattr(r, "method", "scores")).upper()
            while nm in named:
                nm += "'"
            named[nm] = r
    return {nm: r if isinstance(r, RocCurve) else roc_curve(r, truth, absolute, nm)
            for nm, r in named.items()}


def overlap(x: Circuit | Ranking, truth: Truth, n_edges: int | None = None,
            absolute: bool = True) -> dict:
    """Precision and recall against ``truth`` (see `truth_mask`), on edge-table rows: of a
    `Circuit` (its rows), or of the top ``n_edges`` rows of a score ranking (an
    `AttributionResult` or score array; default ``n_edges``: as many as there are true edges,
    where precision = recall). Also ``auroc`` for a ranking.

    Example:
        >>> pw.overlap(circ, truth)            # {'precision': ..., 'recall': ...}   # doctest: +SKIP
        >>> pw.overlap(peap, truth, n_edges=20)                                   # doctest: +SKIP
    """
    if isinstance(x, Circuit):
        y = truth_mask(truth, x, len(x.in_rows))
        return _pr((x.in_rows & y).sum(), x.n_rows, y.sum())
    curve = roc_curve(x, truth, absolute)
    n = curve.n_pos if n_edges is None else int(n_edges)
    return {**curve.precision_recall(n), "auroc": curve.auroc}
