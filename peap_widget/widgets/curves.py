"""FaithfulnessCurves: interactive faithfulness-vs-circuit-size curves (anywidget).

One line per attribution result (e.g. PEAP and EAP of the same data), a switch between
normalized / soft / hard faithfulness (and KL), a switch of the size axis, hover tooltips with
every value, the user's current circuit as a highlighted point, and SVG/PNG export.

Example:
    >>> curve = pw.faithfulness_curve(model, ds, {"PEAP": peap, "EAP": eap})   # doctest: +SKIP
    >>> w = pw.FaithfulnessCurves(curve, measure="soft", x="n_real_edges")     # doctest: +SKIP
    >>> w                                        # shows it in the notebook   # doctest: +SKIP
    >>> circ = peap.circuit(n_edges=40)                                       # doctest: +SKIP
    >>> w.set_current(circ, pw.evaluate(model, ds, circ))                     # doctest: +SKIP
    >>> w.to_html("curves.html")                 # an offline page            # doctest: +SKIP

ROC view (a second tab): ROC curves of several methods' edge rankings against a known circuit,
AUROC in the legend:

    >>> truth = gt.true_edge_mask(peap.edges)                                 # doctest: +SKIP
    >>> pw.FaithfulnessCurves.roc({"PEAP": peap, "EAP-IG": ig}, truth)       # doctest: +SKIP
    >>> pw.FaithfulnessCurves(curve, roc=pw.roc_curves([peap], truth))        # both views  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Union

import traitlets as t

from ..analysis.curves import FaithfulnessCurve
from ..errors import PeapError
from .base import PeapWidget

if TYPE_CHECKING:
    import pandas as pd

    from ..analysis.quality import RocCurve, Truth
    from ..circuits.circuit import Circuit
    from ..circuits.result import AttributionResult
    from ..engine.evaluate import EvalResult

#: what the widget draws lines from: a curve, its table, or several of them
Curves = Union[FaithfulnessCurve, "pd.DataFrame", Sequence, Mapping, None]
#: ROC curves: one, a list, or ``{name: RocCurve}``
Rocs = Union["RocCurve", Sequence, Mapping, None]

#: y measures the widget can show (columns of `FaithfulnessCurve.table`).
MEASURES = ("faithfulness", "soft", "hard", "kl")
#: x axes: fraction of edges, edges, real per-example edges, fraction of real edges (log scales),
#: and the fraction of edges on a linear scale (MIB's area axis).
X_AXES = ("fraction", "n_edges", "n_real_edges", "real_fraction", "fraction_linear")
#: the widget's views: faithfulness against size, ROC curves against a known circuit.
VIEWS = ("faithfulness", "roc")
#: the values of one point (and of ``current`` next to its ``label``).
POINT_KEYS = ("n_edges", "fraction", "n_real_edges", "real_fraction", "faithfulness", "soft",
              "hard", "kl")


def json_number(v):
    """A JSON-safe number: None for None/NaN/inf, int for integral sizes, else float."""
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(f):
        return None
    if isinstance(v, bool):
        return int(v)
    if hasattr(v, "dtype") and v.dtype.kind in "iu" or isinstance(v, int):
        return int(v)
    return f


def _point(values) -> dict:
    return {k: json_number(values.get(k)) for k in POINT_KEYS}


def _table_series(table) -> list[dict]:
    """``[{name, points}]`` from a curve table (one series per ``result``, sorted by size)."""
    missing = {"result", "n_edges", "fraction", "faithfulness"} - set(table.columns)
    if missing:
        raise PeapError(f"a faithfulness curve table needs the columns {sorted(missing)} "
                        f"(see pw.faithfulness_curve); it has {list(table.columns)}")
    out = []
    for name in dict.fromkeys(table["result"]):
        rows = table[table["result"] == name].sort_values(["fraction", "n_edges"], kind="stable")
        out.append({"name": str(name),
                    "points": [_point(r) for r in rows.to_dict("records")]})
    return out


def curve_series(curves) -> list[dict]:
    """The widget's ``series`` trait from a `FaithfulnessCurve`, a table DataFrame, a list of
    them or ``{prefix: curve}`` (names then read ``"prefix: result"``). NaN becomes None (JSON
    has no NaN); a name used twice gets " (2)", " (3)"...

    Example:
        >>> curve_series(curve)[0]["name"]                       # doctest: +SKIP
        'PEAP'
    """
    if curves is None:
        return []
    if isinstance(curves, Mapping):
        out = []
        for prefix, c in curves.items():
            for s in curve_series(c):
                out.append({**s, "name": f"{prefix}: {s['name']}"})
        return _dedupe(out)
    if isinstance(curves, (list, tuple)):
        return _dedupe([s for c in curves for s in curve_series(c)])
    if isinstance(curves, FaithfulnessCurve):
        return _table_series(curves.table)
    if hasattr(curves, "columns") and hasattr(curves, "to_dict"):
        return _table_series(curves)
    raise PeapError("FaithfulnessCurves takes a pw.FaithfulnessCurve (from pw.faithfulness_curve), "
                    f"its table, or a list of them; got {type(curves).__name__}")


def _notes(curves) -> dict:
    """{"refusal", "warning"} of a curve (or the distinct ones of several, joined)."""
    if isinstance(curves, Mapping):
        curves = list(curves.values())
    items = curves if isinstance(curves, (list, tuple)) else [curves]
    out = {}
    for key in ("refusal", "warning"):
        seen = dict.fromkeys(str(v) for c in items if (v := getattr(c, key, None)))
        out[key] = " · ".join(seen)
    return out


def _dedupe(series: list[dict]) -> list[dict]:
    seen: dict[str, int] = {}
    out = []
    for s in series:
        name = s["name"]
        seen[name] = seen.get(name, 0) + 1
        out.append(s if seen[name] == 1 else {**s, "name": f"{name} ({seen[name]})"})
    return out


def roc_series(roc, max_points: int = 400) -> list[dict]:
    """The widget's ``roc_series`` trait from a `pw.RocCurve`, a list of them or ``{name:
    RocCurve}``: ``[{name, auroc, n_pos, n_neg, points: [[fpr, tpr], ...]}]`` (points thinned to
    about ``max_points`` per curve; the AUROC is the exact one)."""
    from ..analysis.quality import RocCurve

    if roc is None:
        return []
    if isinstance(roc, RocCurve):
        return [roc.to_json(max_points)]
    if isinstance(roc, Mapping):
        out = []
        for name, c in roc.items():
            if not isinstance(c, RocCurve):
                raise PeapError(f"roc[{name!r}] is a {type(c).__name__}, not a pw.RocCurve; "
                                "build them with pw.roc_curves(results, truth)")
            out.append({**c.to_json(max_points), "name": str(name)})
        return _dedupe(out)
    if isinstance(roc, (list, tuple)):
        return _dedupe([s for c in roc for s in roc_series(c, max_points)])
    raise PeapError("roc= takes a pw.RocCurve, a list of them or {name: RocCurve} (see "
                    f"pw.roc_curves); got {type(roc).__name__}")


def current_point(circuit=None, result=None, label: str | None = None) -> dict:
    """The ``current`` trait for a `Circuit` and its `EvalResult` (either may be None: sizes come
    from the circuit, else from the result; measures from the result)."""
    if circuit is None and result is None:
        raise PeapError("set_current needs a circuit, an evaluation result, or both")
    sizes = {}
    if result is not None:
        sizes = {"n_edges": result.n_edges, "fraction": result.fraction,
                 "n_real_edges": result.n_real_edges}
    if circuit is not None:
        sizes = {"n_edges": circuit.n_edges, "fraction": circuit.fraction,
                 "n_real_edges": circuit.n_real_edges, "real_fraction": circuit.real_fraction}
    values = dict(sizes)
    if result is not None:
        values.update(faithfulness=result.faithfulness, soft=result.soft, hard=result.hard,
                      kl=result.kl)
    name = label if label is not None else (getattr(circuit, "name", "") or "current circuit")
    return {"label": str(name), **_point(values)}


class FaithfulnessCurves(PeapWidget):
    """Faithfulness against circuit size, one line per result, with the current circuit.

    Args:
        curves: a `FaithfulnessCurve` (from `pw.faithfulness_curve`, one line per result in it),
            its ``table`` DataFrame, a list of them, or ``{prefix: curve}``.
        current: the highlighted point, ``{label, n_edges, fraction, n_real_edges,
            real_fraction, faithfulness, soft, hard, kl}`` (missing values may be None) or None;
            `set_current` builds it from a circuit and its evaluation.
        measure: y axis: ``"faithfulness"`` (normalized), ``"soft"``, ``"hard"`` or ``"kl"``.
        x: size axis: ``"fraction"`` (of edges), ``"n_edges"``, ``"n_real_edges"`` (real
            per-example edges), ``"real_fraction"`` (log scales; sizes <= 0 are left out and
            the chart says how many), or ``"fraction_linear"``.
        title: a title drawn above the chart (and in its exports).

        roc: ROC curves for the ROC view: a `pw.RocCurve`, a list of them or ``{name:
            RocCurve}`` (`pw.roc_curves(results, truth)`); `FaithfulnessCurves.roc` builds the
            widget straight from results and a known circuit.
        view: ``"faithfulness"`` or ``"roc"`` (shown as tabs when both have data).

    The keyword arguments ``refusal`` and ``warning`` (traits) default to the curve's
    (`FaithfulnessCurve.refusal` / ``.warning``): why normalized faithfulness was not computed
    (the chart then shows this reason instead of the faithfulness lines) and whether the model
    does the task.

    Traits (synced): ``series`` ([{name, points: [{n_edges, fraction, n_real_edges,
    real_fraction, faithfulness, soft, hard, kl}]}], NaN as None), ``current``, ``measure``,
    ``x``, ``title``, ``refusal``, ``warning``, ``view``, ``roc_series`` ([{name, auroc, n_pos,
    n_neg, points: [[fpr, tpr], ...]}]). The chart's measure and axis switches write
    ``measure`` and ``x``, its tabs ``view``.

    Example:
        >>> curve = pw.faithfulness_curve(model, ds, {"PEAP": peap, "EAP": eap})   # doctest: +SKIP
        >>> w = pw.FaithfulnessCurves(curve, title="IOI, counterfactual ablation")  # doctest: +SKIP
        >>> w.measure = "hard"; w.x = "n_real_edges"                                # doctest: +SKIP
        >>> circ = peap.circuit(n_edges=40)                                         # doctest: +SKIP
        >>> w.set_current(circ, pw.evaluate(model, ds, circ))                       # doctest: +SKIP
        >>> w.add(pw.faithfulness_curve(model, ds, {"EAP-IG": eap_ig}))             # doctest: +SKIP
        >>> w.to_html("curves.html")                                                # doctest: +SKIP
    """

    _bundle_name = "curves"

    series = t.List(t.Dict()).tag(sync=True)
    current = t.Dict(default_value=None, allow_none=True).tag(sync=True)
    measure = t.Unicode("faithfulness").tag(sync=True)
    x = t.Unicode("fraction").tag(sync=True)
    title = t.Unicode("").tag(sync=True)
    refusal = t.Unicode("").tag(sync=True)
    warning = t.Unicode("").tag(sync=True)
    view = t.Unicode("faithfulness").tag(sync=True)
    roc_series = t.List(t.Dict()).tag(sync=True)

    def __init__(self, curves: Curves = None, current: dict | None = None,
                 measure: str = "faithfulness", x: str = "fraction", title: str = "",
                 roc: Rocs = None, view: str | None = None, **kwargs):
        notes = _notes(curves)
        kwargs.setdefault("refusal", notes["refusal"])
        kwargs.setdefault("warning", notes["warning"])
        rocs = roc_series(roc)
        if view is None:
            view = "roc" if rocs and curves is None else "faithfulness"
        super().__init__(series=curve_series(curves), current=current, measure=measure, x=x,
                         title=title, roc_series=rocs, view=view, **kwargs)

    @classmethod
    def roc(cls, results: Mapping[str, AttributionResult], truth: Truth, absolute: bool = True,
            title: str = "", curves: Curves = None, **kwargs) -> FaithfulnessCurves:
        """A widget showing the ROC curves of ``results`` against ``truth`` (the ROC view;
        ``curves`` adds the faithfulness view). ``results``: ``{name: result}``, a list of
        `AttributionResult` (named by method) or one; ``truth``: a bool mask over the edge
        table, a `pw.Circuit` or edge keys (see `pw.roc_curve`).

        Example:
            >>> from peap_widget.models import groundtruth as gt                      # doctest: +SKIP
            >>> pw.FaithfulnessCurves.roc({"PEAP": peap}, gt.true_edge_mask(peap.edges))  # doctest: +SKIP
        """
        from ..analysis.quality import roc_curves

        return cls(curves, roc=roc_curves(results, truth, absolute), title=title,
                   view="roc", **kwargs)

    def add_roc(self, roc: Rocs) -> FaithfulnessCurves:
        """Add ROC curves (a `pw.RocCurve`, list or ``{name: RocCurve}``). Returns self."""
        self.roc_series = _dedupe(list(self.roc_series) + roc_series(roc))
        return self

    @t.validate("view")
    def _check_view(self, proposal):
        if proposal["value"] not in VIEWS:
            raise PeapError(f"view must be one of {VIEWS}, got {proposal['value']!r}")
        return proposal["value"]

    @t.validate("measure")
    def _check_measure(self, proposal):
        if proposal["value"] not in MEASURES:
            raise PeapError(f"measure must be one of {MEASURES}, got {proposal['value']!r}")
        return proposal["value"]

    @t.validate("x")
    def _check_x(self, proposal):
        if proposal["value"] not in X_AXES:
            raise PeapError(f"x must be one of {X_AXES}, got {proposal['value']!r}")
        return proposal["value"]

    @t.validate("current")
    def _check_current(self, proposal):
        value = proposal["value"]
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise PeapError("current is a dict {label, n_edges, fraction, ..., faithfulness, soft, "
                            f"hard, kl}} or None, got {type(value).__name__}")
        unknown = set(value) - set(POINT_KEYS) - {"label"}
        if unknown:
            raise PeapError(f"current has unknown keys {sorted(unknown)}; "
                            f"known: label, {', '.join(POINT_KEYS)}")
        label = value.get("label")
        return {"label": "current circuit" if label is None else str(label), **_point(value)}

    @t.validate("series")
    def _check_series(self, proposal):
        out = []
        for k, s in enumerate(proposal["value"]):
            if not isinstance(s, Mapping) or "points" not in s:
                raise PeapError(f"series[{k}] must be a dict {{name, points: [...]}}")
            out.append({"name": str(s.get("name", f"series {k + 1}")),
                        "points": [_point(p) for p in s["points"]]})
        return out

    def set_current(self, circuit: Circuit | None = None, result: EvalResult | None = None,
                    label: str | None = None) -> FaithfulnessCurves:
        """Highlight a circuit: its sizes from ``circuit`` (a `Circuit`), its faithfulness from
        ``result`` (its `EvalResult`). ``label`` defaults to the circuit's name. Returns self.

        Example:
            >>> circ = peap.circuit(n_edges=40)                            # doctest: +SKIP
            >>> w.set_current(circ, pw.evaluate(model, ds, circ), "top 40")   # doctest: +SKIP
        """
        self.current = current_point(circuit, result, label)
        return self

    def add(self, curves: Curves) -> FaithfulnessCurves:
        """Add the lines of another curve (or table, or list of them). Returns self.

        Example:
            >>> w.add(pw.faithfulness_curve(model, ds, {"EAP-IG": eap_ig}))   # doctest: +SKIP
        """
        self.series = _dedupe(list(self.series) + curve_series(curves))
        notes = _notes(curves)
        for key in ("refusal", "warning"):
            if notes[key] and notes[key] not in getattr(self, key):
                setattr(self, key, " · ".join(filter(None, [getattr(self, key), notes[key]])))
        return self

    def __repr__(self) -> str:
        names = [s["name"] for s in self.series]
        roc = f", roc={[s['name'] for s in self.roc_series]}" if self.roc_series else ""
        return f"FaithfulnessCurves({names}, measure={self.measure!r}, x={self.x!r}{roc})"
