"""CircuitLab: the whole path in one notebook widget: schema, attribution with a progress bar,
the circuit explorer, and PEAP-vs-EAP faithfulness curves.

It only arranges the other widgets (ipywidgets tabs); the work is done by `pw.attribute`,
`pw.faithfulness_curve` and the explorer's evaluator.
"""

from __future__ import annotations

import time

import ipywidgets as W

from ..attribution import attribute
from ..curves import faithfulness_curve
from ..errors import PeapError
from ..evaluate import Evaluator
from .circuit_explorer import CircuitExplorer
from .curves import FaithfulnessCurves, current_point
from .export import to_html
from .schema_editor import SchemaEditor

TABS = ("1 · Schema", "2 · Attribute", "3 · Explore", "4 · Curves")


class CircuitLab(W.VBox):
    """Position-aware circuit discovery in one widget.

    1. **Schema**: the `SchemaEditor` over ``dataset`` (autosaved to ``path`` when given).
    2. **Attribute**: choose the ablation and methods, press *Run*: PEAP and EAP scores with a
       progress bar, then a faithfulness curve for each.
    3. **Explore**: the `CircuitExplorer` on the first method's result; each edit is
       re-evaluated and drawn as the current point on the curves.
    4. **Curves**: `FaithfulnessCurves` of every method on the same data.

    Args:
        model: a `pw.Model`; dataset: a `pw.Dataset` (or records with ``model``'s tokenizer).
        path: autosave file for the schema editor's annotations.
        methods: attribution methods to run and compare (``("peap", "eap")``).
        curve_sizes: circuit sizes for the curves (default MIB's fractions).

    Example:
        >>> lab = pw.CircuitLab(model, ds)          # doctest: +SKIP
        >>> lab                                     # annotate, press Run, prune, compare
        >>> lab.run()                               # or run from Python
        >>> lab.explorer.circuit, lab.results["PEAP"]
    """

    def __init__(self, model, dataset, path=None, methods=("peap", "eap"),
                 ablation: str = "counterfactual", curve_sizes=None, batch_size: int | None = None):
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
        self.progress = W.IntProgress(value=0, min=0, max=1, description="", bar_style="")
        self.status = W.HTML("Annotate the spans (tab 1), then press <b>Run attribution</b>.")
        self.run_button.on_click(lambda _b: self.run())
        attribute_tab = W.VBox([W.HBox([self.ablation, *self.method_boxes, self.run_button]),
                                self.progress, self.status])
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
        try:
            self.results = {}
            for m in chosen:
                self._say(f"{m.upper()} attribution on {len(ds)} examples…", "info")

                def report(done, total):
                    self.progress.max, self.progress.value = total, done

                self.results[m.upper()] = attribute(self.model, ds, method=m,
                                                    ablation=self.ablation.value,
                                                    batch_size=self.batch_size, progress=report)
            self._say("Faithfulness curves…", "info")
            evaluator = Evaluator(self.model, ds, self.ablation.value, batch_size=self.batch_size)
            self.curve = faithfulness_curve(self.model, ds, self.results, sizes=self.curve_sizes,
                                            evaluator=evaluator, progress=False)
            first = next(iter(self.results.values()))
            self.explorer = CircuitExplorer(first, self.model, ds, curves=self.curve,
                                            evaluator=evaluator)
            self.curves = FaithfulnessCurves(self.curve)
            self.explorer.observe(self._follow, names="evaluation")
            self._follow(None)
            self._explore_tab.children = [self.explorer]
            self._curves_tab.children = [self.curves]
        except Exception as e:  # shown in the widget; the annotations are untouched
            self._say(f"<b>Failed:</b> {type(e).__name__}: {e}", "danger")
            raise
        finally:
            self.run_button.disabled = False
        took = time.perf_counter() - started
        summary = ", ".join(f"{k}: f≥0.8 at {self.curve.edges_needed(0.8, k)} edges"
                            for k in self.results)
        self._say(f"Done in {took:.1f} s. {summary}.", "success")
        self.tabs.selected_index = 2
        return True

    def _follow(self, _change):
        ev = self.explorer.evaluation
        if self.curves is not None and ev.get("faithfulness") is not None:
            self.curves.current = current_point(None, _Eval(ev), "current circuit")

    def to_html(self, path, title: str = "Circuit lab"):
        """An offline page with the explorer and the curves (after `run`)."""
        if self.explorer is None:
            raise PeapError("nothing to export yet: run the attribution first (lab.run())")
        return to_html(path, self.explorer, self.curves, title=title)


class _Eval:
    """The explorer's evaluation dict seen as an `EvalResult` (for `current_point`)."""

    def __init__(self, ev: dict):
        self.__dict__.update(ev)
