"""Faithfulness against circuit size, for one or several attribution results, and MIB's CPR/CMD.

Example:
    >>> from peap_widget.models import groundtruth as gt
    >>> model = pw.models.load("induction-groundtruth")     # hand-built: its circuit is known
    >>> ds = pw.Dataset.from_records(gt.make_records(16, seed=0), model)
    >>> peap = pw.attribute(model, ds, progress=False)
    >>> eap = pw.attribute(model, ds, method="eap", progress=False)
    >>> curve = pw.faithfulness_curve(model, ds, {"PEAP": peap, "EAP": eap}, progress=False)
    >>> len(curve.table)       # one row per (result, size): MIB's 10 sizes each
    20
    >>> fig = curve.plot()     # a matplotlib Figure
    >>> curve.edges_needed(0.8, "PEAP"), curve.edges_needed(0.8, "EAP")
    (3, 2)
    >>> sorted(pw.mib_scores(model, ds, peap))
    ['cmd', 'cpr']
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..circuits.result import AttributionResult
from ..errors import PeapError
from ..engine.evaluate import Evaluator
from ..errors import NormalisationError
from ..engine.metrics import Metric

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from ..data.dataset import Dataset
    from ..runtime.model import Model

#: one result, a list of them, or ``{label: result}``
Results = AttributionResult | Sequence[AttributionResult] | Mapping[str, AttributionResult]

#: MIB's circuit sizes, as fractions of all edges: `mib_scores` integrates over exactly these
#: (CPR / CMD are defined on them), and `faithfulness_curve` and the explorer draw them by default.
MIB_FRACTIONS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
#: the demo's and command line's sizes (`run_discovery`): MIB's fractions plus a few in between,
#: for a smoother curve and a finer `edges_needed`; kept apart from MIB_FRACTIONS on purpose,
#: since MIB's scores must not change with them.
DISCOVERY_SIZES = (0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3,
                   0.5, 1.0)
MEASURES = ("faithfulness", "soft", "hard", "kl")


def _trapezoid(y, x) -> float:
    y, x = np.asarray(y, dtype=np.float64), np.asarray(x, dtype=np.float64)
    return float(((y[1:] + y[:-1]) * np.diff(x)).sum() / 2)


class FaithfulnessCurve:
    """``table``: a DataFrame with one row per (result, size): ``result``, ``requested``,
    ``n_edges``, ``fraction``, ``requested_fraction``, ``n_real_edges``, ``real_fraction``,
    ``faithfulness`` (normalized), ``soft``, ``hard``, ``kl``, ``metric``, ``seconds``.
    ``fraction`` is the evaluated circuit's own (``n_edges`` after path pruning over all edges,
    as `Circuit.fraction`, so a circuit shown elsewhere lands on its curve point);
    ``requested_fraction`` the size asked for (MIB's x axis, which `area` integrates over).

    ``refusal``: why normalized faithfulness was not formed on this data (its column is then
    NaN, `area` of it raises `NormalisationError`, `point` / `edges_needed` of it give None and
    the plots show the reason instead of lines), else None. ``warning``: the model does not do
    the task (`peap_widget.engine.evaluate.task_warning`), else None."""

    def __init__(self, table: pd.DataFrame, refusal: str | None = None,
                 warning: str | None = None):
        self.table = table
        self.refusal = refusal
        self.warning = warning

    @property
    def results(self) -> list[str]:
        return list(dict.fromkeys(self.table["result"]))

    def _rows(self, result: str | None, by: str = "fraction"):
        if result is None:
            if len(self.results) != 1:
                raise PeapError(f"several results on this curve {self.results}: name one")
            result = self.results[0]
        if by not in self.table:   # a table from before requested_fraction
            by = "fraction"
        return self.table[self.table["result"] == result].sort_values(by, kind="stable")

    def area(self, measure: str = "faithfulness", result: str | None = None,
             distance_from_one: bool = False) -> float:
        """Trapezoid area of ``measure`` over the linear requested-fraction axis (MIB's CPR;
        with ``distance_from_one`` the area of |1 - measure|, MIB's CMD)."""
        if measure == "faithfulness" and self.refusal:
            raise NormalisationError(self.refusal)
        rows = self._rows(result, "requested_fraction")
        y = rows[measure].to_numpy()
        x = rows["requested_fraction" if "requested_fraction" in rows else "fraction"]
        return _trapezoid(np.abs(1 - y) if distance_from_one else y, x)

    def point(self, level: float = 0.8, result: str | None = None,
              measure: str = "faithfulness") -> pd.Series | None:
        """The table row of the smallest evaluated circuit whose ``measure`` reaches ``level``
        (None if none does, or if normalized faithfulness was refused); ``row.requested``
        rebuilds it with `AttributionResult.circuit`."""
        if measure == "faithfulness" and self.refusal:
            return None
        rows = self._rows(result)
        hit = rows[rows[measure] >= level]
        return None if hit.empty else hit.sort_values(["n_edges", "requested"]).iloc[0]

    def edges_needed(self, level: float = 0.8, result: str | None = None,
                     measure: str = "faithfulness") -> int | None:
        """Edges of the smallest evaluated circuit whose ``measure`` reaches ``level``."""
        row = self.point(level, result, measure)
        return None if row is None else int(row["n_edges"])

    def plot(self, measures: Sequence[str] | str = ("faithfulness",), x: str = "fraction",
             logx: bool = True, ax: Axes | None = None) -> Figure:
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
            if m == "faithfulness" and self.refusal:
                import textwrap

                a.text(0.5, 0.5, textwrap.fill(self.refusal, 60), ha="center", va="center",
                       transform=a.transAxes, fontsize=9, color="#7c2d12", wrap=True)
                a.set_xticks([])
                a.set_yticks([])
                a.set_title("normalized faithfulness: not computed")
                continue
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

    def overview(self) -> Figure:
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
        note = "" if not self.refusal else f"<p><b>{self.refusal}</b></p>"
        return note + self.table.to_html(index=False, float_format=lambda v: f"{v:.4g}")

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


def faithfulness_curve(model: Model, ds: Dataset, results: Results,
                       sizes: Sequence[float] | None = None, method: str = "greedy",
                       merge_qkv: bool = True, absolute: bool = True, ablation: str | None = None,
                       metric: str | Metric | None = None, batch_size: int | None = None,
                       evaluator: Evaluator | None = None, progress: bool | Callable = True,
                       desc: str = "faithfulness curve") -> FaithfulnessCurve:
    """Evaluate circuits of several sizes found from each result.

    Args:
        results: an `AttributionResult`, a list of them, or ``{label: result}``.
        sizes: floats in (0, 1] are fractions of all edges of each result's graph, integers are
            edge counts; default MIB's fractions 0.001 ... 1.
        method: passed to `AttributionResult.circuit`.
        merge_qkv: passed to `AttributionResult.circuit`.
        absolute: passed to `AttributionResult.circuit`.
        ablation: default the first result's settings; every result is evaluated with
            the same one (and one cached `Evaluator`).
        metric: likewise, default the first result's.
        progress: a tqdm bar over the circuits (True), none (False), or a function called as
            ``progress(done, total)`` with circuit counts after each evaluation (widgets).

    When the full model's and the empty circuit's metric are equal within the evaluator's
    tolerance, the ``faithfulness`` column is NaN and ``curve.refusal`` says why (see
    `FaithfulnessCurve`); the other measures are still computed.
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
    report = progress if callable(progress) else None
    with tqdm(total=total, desc=desc, unit="circuit",
              disable=not progress or report is not None) as bar:
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
                             "fraction": circ.fraction, "requested_fraction": frac,
                             "n_real_edges": circ.n_real_edges,
                             "real_fraction": circ.real_fraction,
                             "faithfulness": float("nan") if ev.faithfulness is None else ev.faithfulness,
                             "soft": ev.soft, "hard": ev.hard, "kl": ev.kl, "metric": ev.metric,
                             "seconds": ev.seconds})
                bar.update()
                if report is not None:
                    report(len(rows), total)
    return FaithfulnessCurve(pd.DataFrame(rows), evaluator.refusal, evaluator.warning)


def mib_scores(model: Model, ds: Dataset, result: AttributionResult, method: str = "greedy",
               merge_qkv: bool = True, evaluator: Evaluator | None = None,
               progress: bool | Callable = False, desc: str = "CPR/CMD") -> dict:
    """MIB's CPR (area under normalized faithfulness, circuits ranked by signed score with the
    edges that help the task first, see `helping_first`; higher is better) and CMD (area of
    |1 - f|, circuits ranked by |score|; lower is better), trapezoids
    over the linear fraction axis at MIB's sizes 0.001 ... 1.

    Raises `NormalisationError` (a `PeapError`, with the reason) when normalized faithfulness is
    refused on this data (the full model's and the empty circuit's metric are equal within the
    tolerance), before evaluating any circuit. ``progress`` as for `faithfulness_curve`, over
    both curves' circuits."""
    if evaluator is None:
        evaluator = Evaluator(model, ds, result.settings["ablation"], result.settings["metric"])
    if evaluator.refusal:
        raise NormalisationError(evaluator.refusal)
    if callable(progress):
        report, n = progress, len(MIB_FRACTIONS)
        progress = [lambda d, _t: report(d, 2 * n), lambda d, _t: report(n + d, 2 * n)]
    else:
        progress = [progress, progress]
    kw = dict(sizes=MIB_FRACTIONS, method=method, merge_qkv=merge_qkv, evaluator=evaluator)
    signed = faithfulness_curve(model, ds, {"r": helping_first(result)}, absolute=False,
                                progress=progress[0],
                                desc=f"{desc} (signed, CPR)", **kw)
    unsigned = faithfulness_curve(model, ds, {"r": result}, absolute=True, progress=progress[1],
                                  desc=f"{desc} (|score|, CMD)", **kw)
    return {"cpr": signed.area("faithfulness"),
            "cmd": unsigned.area("faithfulness", distance_from_one=True)}


def helping_first(result: AttributionResult) -> AttributionResult:
    """``result`` with every score negated, so that a ranking by signed score (MIB's CPR) puts
    the edges that help the task first. A score here is m(edge ablated) - m(clean) for the task
    metric (docs/numbers.md), so an edge the task needs has a negative one; MIB scores the same
    difference for a loss (minus the metric), where it is positive and ranked first."""
    return AttributionResult(-result.scores, result.spans, result.settings, result.clean_metric,
                             result.counterfactual_metric, result.schema, result.graph_config,
                             result.span_lengths)
