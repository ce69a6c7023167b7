"""CircuitLab: the whole path in one notebook widget: schema, attribution with a progress bar,
the circuit explorer, and PEAP-vs-EAP faithfulness curves.

It only arranges the other widgets (ipywidgets tabs); the work is done by `pw.attribute`,
`pw.faithfulness_curve` and the explorer's evaluator.
"""

from __future__ import annotations

import html
import time

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import ipywidgets as W

from ..engine.attribution import attribute
from ..analysis.curves import MIB_FRACTIONS, faithfulness_curve
from ..errors import PeapError
from ..engine.evaluate import Evaluator
from .circuit_explorer import CircuitExplorer
from .curves import FaithfulnessCurves, current_point
from .export import to_html
from .schema_editor import SchemaEditor

if TYPE_CHECKING:
    from ..data.dataset import Dataset
    from ..runtime.model import Model

TABS = ("1 · Schema", "2 · Attribute", "3 · Explore", "4 · Curves")

#: the run's cost in passes over the data, per stage (for one progress bar over the whole run):
#: an attribution (ablation source, clean forward, backward), the evaluator's cached runs
#: (ablation source, clean), one circuit evaluation, the explorer's set-up (attention per span
#: pair and its first evaluation)
COST = {"attribution": 3.0, "evaluator": 2.0, "circuit": 1.0, "explorer": 2.0}


class CircuitLab(W.VBox):
    """Position-aware circuit discovery in one widget.

    1. **Schema**: the `SchemaEditor` over ``dataset`` (autosaved to ``path`` when given).
    2. **Attribute**: choose the ablation and methods, press *Run*: PEAP and EAP scores, then a
       faithfulness curve for each, under one progress bar over the whole run (``progress``,
       in thousandths, with the stage beside it in ``stage``). When normalized faithfulness
       is refused on the data (the ablation does not move the metric) or the model does not do
       the task, the status line says so and suggests no circuit size.
    3. **Explore**: the `CircuitExplorer` on the first method's result; each edit is
       re-evaluated and drawn as the current point on the curves.
    4. **Curves**: `FaithfulnessCurves` of every method on the same data.

    Args:
        model: a `pw.Model`.
        dataset: a `pw.Dataset` (or records with ``model``'s tokenizer).
        path: autosave file for the schema editor's annotations.
        methods: attribution methods to run and compare (``("peap", "eap")``).
        curve_sizes: circuit sizes for the curves (default MIB's fractions).

    Example:
        >>> model = pw.models.load("toy-ioi")
        >>> ds = pw.tasks.get("ioi", n=8).dataset(model)
        >>> lab = pw.CircuitLab(model, ds)
        >>> lab                                     # doctest: +SKIP
        >>> # (in the notebook: annotate, press Run, prune, compare)
        >>> lab.run()                               # or run from Python
        True
        >>> sorted(lab.results)
        ['EAP', 'PEAP']
        >>> lab.explorer.circuit                    # what the explorer shows
        Circuit(... edges (... rows), ...% of the graph, ...)
    """

    def __init__(self, model: Model, dataset: Dataset | Sequence[Mapping],
                 path: str | Path | None = None, methods: Sequence[str] = ("peap", "eap"),
                 ablation: str = "counterfactual", curve_sizes: Sequence[float] | None = None,
                 batch_size: int | None = None):
        self.model = model
        self.methods = tuple(methods)
        self.curve_sizes = curve_sizes
        self.batch_size = batch_size
        self.results: dict = {}
        self.curve = None
        self.explorer: CircuitExplorer | None = None
        self.curves: FaithfulnessCurves | None = None
        self.schema_editor = SchemaEditor(dataset, path=path, model=model)
        self.ablation = W.Dropdown(options=["counterfactual", "mean", "zero"], value=ablation,
                                   description="ablation")
        self.method_boxes = [W.Checkbox(value=True, description=m.upper(), indent=False)
                             for m in self.methods]
        self.run_button = W.Button(description="Run attribution", button_style="primary",
                                   icon="play")
        #: one bar over the whole run (attribution, the faithfulness curves, the explorer),
        #: in thousandths; ``stage`` says what runs now
        self.progress = W.IntProgress(value=0, min=0, max=1000, description="", bar_style="")
        self.stage = W.HTML("")
        self.status = W.HTML("Annotate the spans (tab 1), then press <b>Run attribution</b>.")
        self.run_button.on_click(lambda _b: self.run())
        attribute_tab = W.VBox([W.HBox([self.ablation, *self.method_boxes, self.run_button]),
                                W.HBox([self.progress, self.stage]), self.status])
        self._explore_tab = W.VBox([W.HTML("<i>Run the attribution first.</i>")])
        self._curves_tab = W.VBox([W.HTML("<i>Run the attribution first.</i>")])
        self.tabs = W.Tab(children=[self.schema_editor, attribute_tab, self._explore_tab,
                                    self._curves_tab])
        for i, title in enumerate(TABS):
            self.tabs.set_title(i, title)
        super().__init__([self.tabs])

    def _say(self, html: str, style: str = ""):
        self.status.value = html
        self.progress.bar_style = style

    def run(self) -> bool:
        """Attribute, draw the curves and open the explorer. Returns False (with the reason in
        the status line) when the annotations are not valid yet; nothing is lost."""
        try:
            ds = self.schema_editor.dataset
        except PeapError as e:
            self._say(f"<b>Fix the schema first:</b> {e}", "danger")
            self.tabs.selected_index = 0
            return False
        chosen = [m for m, box in zip(self.methods, self.method_boxes) if box.value]
        if not chosen:
            self._say("Choose at least one method.", "warning")
            return False
        self.run_button.disabled = True
        started = time.perf_counter()
        n_sizes = len(MIB_FRACTIONS if self.curve_sizes is None else self.curve_sizes)
        steps = StagedProgress(self, [COST["attribution"]] * len(chosen)
                               + [COST["evaluator"],
                                  COST["circuit"] * (len(chosen) * n_sizes + 1),  # + the empty one
                                  COST["explorer"]])
        try:
            self.results = {}
            for k, m in enumerate(chosen):
                self._say(f"{m.upper()} attribution on {len(ds)} examples…", "info")
                report = steps.start(k, f"{m.upper()} attribution: examples")
                self.results[m.upper()] = attribute(self.model, ds, method=m,
                                                    ablation=self.ablation.value,
                                                    batch_size=self.batch_size, progress=report)
            k = len(chosen)
            self._say("Faithfulness curves…", "info")
            steps.start(k, "Faithfulness curves: clean and ablated runs")
            evaluator = Evaluator(self.model, ds, self.ablation.value, batch_size=self.batch_size)
            report = steps.start(k + 1, "Faithfulness curves: circuits")
            evaluator.empty_per_example          # the empty circuit: one step of this stage
            report(1, len(chosen) * n_sizes + 1)
            self.curve = faithfulness_curve(self.model, ds, self.results, sizes=self.curve_sizes,
                                            evaluator=evaluator,
                                            progress=lambda d, t: report(d + 1, t + 1))
            steps.start(k + 2, "Opening the explorer…")
            self._open_views(ds, evaluator)
            self.stage.value = "done"
            self.progress.value = self.progress.max
        except Exception as e:  # shown in the widget; the annotations are untouched
            self._say(f"<b>Failed:</b> {type(e).__name__}: {html.escape(str(e))}", "danger")
            raise
        finally:
            self.run_button.disabled = False
        self._report_done(len(ds), time.perf_counter() - started)
        self.tabs.selected_index = 2
        return True

    def _open_views(self, ds, evaluator) -> None:
        """The explorer (on the first result) and the curves, in their tabs, following each
        other: the explorer's circuit is the curves' current point."""
        first = next(iter(self.results.values()))
        self.explorer = CircuitExplorer(first, self.model, ds, curves=self.curve,
                                        evaluator=evaluator)
        # the panel's "metric (clean ...)": both on the data the evaluations ran on
        self.explorer.info = {**self.explorer.info, "clean_metric": evaluator.clean_metric}
        self.curves = FaithfulnessCurves(self.curve)
        self.explorer.observe(self._follow, names="evaluation")
        self._follow(None)
        self._explore_tab.children = [self.explorer]
        self._curves_tab.children = [self.curves]

    def _report_done(self, n_examples: int, took: float) -> None:
        """The status line after a run: time, edges for f >= 0.8 per method, and any warning
        or refusal of the curves."""
        notes = [html.escape(n) for n in (self.curve.warning, self.curve.refusal) if n]
        if self.curve.refusal:
            summary = "Normalized faithfulness was not computed, so no circuit size is suggested"
        else:
            summary = ", ".join(
                f"{k}: " + (f"f≥0.8 at {e} edges" if (e := self.curve.edges_needed(0.8, k)) is not None
                            else "f≥0.8 not reached at the sizes tried")
                for k in self.results)
        text = f"Done in {took:.1f} s. {summary}."
        if notes:
            text += "<br><b>Note:</b> " + "<br>".join(notes)
        text += (f"<br>All numbers (explorer, curves) are on these {n_examples} examples, the data "
                 "the attribution ran on.")
        self._say(text, "warning" if notes else "success")

    def _follow(self, _change):
        ev = self.explorer.evaluation
        # a refused faithfulness (None) still places the point for soft, hard and KL
        if self.curves is not None and ev and not ev.get("error") and ev.get("n_edges") is not None:
            self.curves.current = current_point(None, _Eval(ev), "current circuit")

    def to_html(self, path: str | Path, title: str = "Circuit lab") -> Path:
        """An offline page with the explorer and the curves (after `run`)."""
        if self.explorer is None:
            raise PeapError("nothing to export yet: run the attribution first (lab.run())")
        return to_html(path, self.explorer, self.curves, title=title)


class StagedProgress:
    """The lab's one progress bar over stages of given weights: ``start(k, label)`` begins
    stage ``k`` and returns ``report(done, of)`` for the work inside it."""

    def __init__(self, lab: CircuitLab, weights: list[float]):
        self.lab, self.weights, self.total = lab, weights, sum(weights)
        lab.progress.value = 0

    def start(self, k: int, label: str):
        before, weight, lab = sum(self.weights[:k]), self.weights[k], self.lab

        def report(done, of):
            frac = (before + weight * (done / of if of else 1)) / self.total
            lab.stage.value = f"{html.escape(label)} {done}/{of}"
            lab.progress.value = min(lab.progress.max, int(round(frac * lab.progress.max)))
        lab.stage.value = html.escape(label)
        report(0, 1)
        return report


class _Eval:
    """The explorer's evaluation dict seen as an `EvalResult` (for `current_point`)."""

    def __init__(self, ev: dict):
        self.__dict__.update(ev)

    def __getattr__(self, name):   # a value the dict lacks: unknown
        return None
