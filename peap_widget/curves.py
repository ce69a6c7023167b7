"""Faithfulness against circuit size, for one or several attribution results, and MIB's CPR/CMD.

Example:
    >>> curve = pw.faithfulness_curve(model, ds, {"PEAP": peap, "EAP": eap})   # doctest: +SKIP
    >>> curve.table            # one row per (result, size)                      # doctest: +SKIP
    >>> fig = curve.plot()     # matplotlib Figure                               # doctest: +SKIP
    >>> curve.edges_needed(0.8)                                                  # doctest: +SKIP
    >>> pw.mib_scores(model, ds, peap)   # {'cpr': ..., 'cmd': ...}               # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .errors import PeapError
from .evaluate import Evaluator

#: MIB's circuit sizes, as fractions of all edges.
MIB_FRACTIONS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
MEASURES = ("faithfulness", "soft", "hard", "kl")


def _trapezoid(y, x) -> float:
    y, x = np.asarray(y, dtype=np.float64), np.asarray(x, dtype=np.float64)
    return float(((y[1:] + y[:-1]) * np.diff(x)).sum() / 2)


class FaithfulnessCurve:
    """``table``: a DataFrame with one row per (result, size): ``result``, ``requested``,
    ``n_edges``, ``fraction``, ``n_real_edges``, ``real_fraction``, ``faithfulness`` (normalized),
    ``soft``, ``hard``, ``kl``, ``metric``, ``seconds``."""

    def __init__(self, table):
        self.table = table

    @property
    def results(self) -> list[str]:
        return list(dict.fromkeys(self.table["result"]))

    def _rows(self, result: str | None):
        if result is None:
            if len(self.results) != 1:
                raise PeapError(f"several results on this curve {self.results}: name one")
            result = self.results[0]
        return self.table[self.table["result"] == result].sort_values("fraction")

    def area(self, measure: str = "faithfulness", result: str | None = None,
             distance_from_one: bool = False) -> float:
        """Trapezoid area of ``measure`` over the linear fraction axis (MIB's CPR; with
        ``distance_from_one`` the area of |1 - measure|, MIB's CMD)."""
        rows = self._rows(result)
        y = rows[measure].to_numpy()
        return _trapezoid(np.abs(1 - y) if distance_from_one else y, rows["fraction"])

    def point(self, level: float = 0.8, result: str | None = None, measure: str = "faithfulness"):
        """The table row of the smallest evaluated circuit whose ``measure`` reaches ``level``
        (None if none does); ``row.requested`` rebuilds it with `AttributionResult.circuit`."""
        rows = self._rows(result)
        hit = rows[rows[measure] >= level]
        return None if hit.empty else hit.sort_values(["n_edges", "requested"]).iloc[0]

    def edges_needed(self, level: float = 0.8, result: str | None = None,
                     measure: str = "faithfulness") -> int | None:
        """Edges of the smallest evaluated circuit whose ``measure`` reaches ``level``."""
        row = self.point(level, result, measure)
        return None if row is None else int(row["n_edges"])

    def plot(self, measures: Sequence[str] | str = ("faithfulness",), x: str = "fraction",
             logx: bool = True, ax=None):
        """A matplotlib Figure: each measure against circuit size, one line per result."""
        from matplotlib.figure import Figure

        measures = [measures] if isinstance(measures, str) else list(measures)
        if ax is None:
            fig = Figure(figsize=(5.5 * len(measures), 3.8), layout="constrained")
            axes = fig.subplots(1, len(measures), squeeze=False)[0]
        else:
            fig, axes = ax.figure, [ax]
        xlabel = {"fraction": "circuit size (fraction of edges)", "n_edges": "circuit size (edges)",
                  "real_fraction": "circuit size (fraction of real per-example edges)",
                  "n_real_edges": "circuit size (real per-example edges)"}.get(x, x)
        for a, m in zip(axes, measures):
            for name in self.results:
                rows = self._rows(name)
                a.plot(rows[x], rows[m], marker="o", ms=3, label=name)
            if logx and (self.table[x] > 0).any():  # log axis needs a positive size
                a.set_xscale("log")
            if m != "kl":
                a.axhline(1.0, color="0.6", lw=0.8, ls="--")
            a.set_xlabel(xlabel)
            a.set_ylabel({"faithfulness": "normalized faithfulness", "soft": "soft faithfulness",
                          "hard": "hard faithfulness (argmax agreement)", "kl": "KL(full || circuit)"}[m])
            a.grid(alpha=0.3)
            a.legend()
        return fig

    def overview(self):
        """A two-panel Figure: normalized faithfulness against the fraction of each graph's
        edges (MIB's axis) and against real per-example edges (the PEAP paper's count, which
        compares positional and position-free circuits fairly)."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(11, 3.8), layout="constrained")
        left, right = fig.subplots(1, 2)
        self.plot("faithfulness", x="fraction", ax=left)
        self.plot("faithfulness", x="n_real_edges", ax=right)
        return fig

    def _repr_html_(self):
        return self.table.to_html(index=False, float_format=lambda v: f"{v:.4g}")

    def __repr__(self) -> str:
        return f"FaithfulnessCurve({len(self.table)} points, results={self.results})"


def _named(results) -> dict:
    if isinstance(results, Mapping):
        return dict(results)
    if not isinstance(results, (list, tuple)):
        results = [results]
    out = {}
    for r in results:
        name = r.method.upper()
        while name in out:
            name += "'"
        out[name] = r
    return out


def faithfulness_curve(model, ds, results, sizes: Sequence[float] | None = None,
                       method: str = "greedy", merge_qkv: bool = True, absolute: bool = True,
                       ablation: str | None = None, metric=None, batch_size: int | None = None,
                       evaluator: Evaluator | None = None, progress: bool = True) -> FaithfulnessCurve:
    """Evaluate circuits of several sizes found from each result.

    Args:
        results: an `AttributionResult`, a list of them, or ``{label: result}``.
        sizes: floats in (0, 1] are fractions of all edges of each result's graph, integers are
            edge counts; default MIB's fractions 0.001 ... 1.
        method, merge_qkv, absolute: passed to `AttributionResult.circuit`.
        ablation, metric: default the first result's settings; every result is evaluated with
            the same ones (and one cached `Evaluator`).
    """
    named = _named(results)
    if not named:
        raise PeapError("faithfulness_curve needs at least one attribution result")
    first = next(iter(named.values()))
    if evaluator is None:
        evaluator = Evaluator(model, ds, ablation or first.settings["ablation"],
                              metric or first.settings["metric"], batch_size)
    sizes = list(MIB_FRACTIONS if sizes is None else sizes)
    for s in sizes:
        if not (isinstance(s, (int, np.integer)) and s >= 0) and not (0 < float(s) <= 1):
            raise PeapError(f"sizes are edge counts (integers >= 0) or fractions in (0, 1], got {s!r}")
    import pandas as pd
    from tqdm.auto import tqdm

    rows = []
    total = len(named) * len(sizes)
    with tqdm(total=total, desc="faithfulness curve", unit="circuit", disable=not progress) as bar:
        for name, res in named.items():
            n_units = res.circuit(n_edges=0, method="topn", merge_qkv=merge_qkv).units.n
            for s in sizes:
                if isinstance(s, (int, np.integer)):
                    n, frac = int(s), int(s) / n_units
                else:  # MIB's x axis is the requested fraction itself
                    n, frac = int(round(float(s) * n_units)), float(s)
                circ = res.circuit(n_edges=n, method=method, merge_qkv=merge_qkv, absolute=absolute)
                ev = evaluator.run(circ)
                rows.append({"result": name, "requested": n, "n_edges": circ.n_edges,
                             "fraction": frac, "n_real_edges": circ.n_real_edges,
                             "real_fraction": circ.real_fraction, "faithfulness": ev.faithfulness,
                             "soft": ev.soft, "hard": ev.hard, "kl": ev.kl, "metric": ev.metric,
                             "seconds": ev.seconds})
                bar.update()
    return FaithfulnessCurve(pd.DataFrame(rows))


def mib_scores(model, ds, result, method: str = "greedy", merge_qkv: bool = True,
               evaluator: Evaluator | None = None, progress: bool = False) -> dict:
    """MIB's CPR (area under normalized faithfulness, circuits ranked by signed score; higher is
    better) and CMD (area of |1 - f|, circuits ranked by |score|; lower is better), trapezoids
    over the linear fraction axis at MIB's sizes 0.001 ... 1."""
    if evaluator is None:
        evaluator = Evaluator(model, ds, result.settings["ablation"], result.settings["metric"])
    kw = dict(sizes=MIB_FRACTIONS, method=method, merge_qkv=merge_qkv, evaluator=evaluator,
              progress=progress)
    signed = faithfulness_curve(model, ds, {"r": result}, absolute=False, **kw)
    unsigned = faithfulness_curve(model, ds, {"r": result}, absolute=True, **kw)
    return {"cpr": signed.area("faithfulness"),
            "cmd": unsigned.area("faithfulness", distance_from_one=True)}
