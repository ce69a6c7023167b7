"""The main job's report: one offline HTML page (no CDN) with the summary, the interactive
faithfulness curves, a live circuit diagram per method (filter, prune, hover without a kernel)
and each method's top edges. Built with the widgets' `to_html` machinery.
"""

from __future__ import annotations

import html
from pathlib import Path


def write_report(path: str | Path, title: str, summary: dict, results: dict, sizes: dict,
                 curve=None, evaluations: dict | None = None, top: int = 25) -> Path:
    """Write the report.

    Args:
        results: {label: AttributionResult}; each gets a circuit explorer.
        sizes: {label: greedy size} the explorer starts at (the saved circuit's size).
        curve: the `FaithfulnessCurve` of all results (drawn, and next to each explorer).
        evaluations: {label: EvalResult} of the circuits at those sizes (shown as numbers).
        summary: flat {key: value} shown first; its ``task_warning`` and
            ``faithfulness_refused`` (when set) are also shown as notices above everything.

    The explorers' numbers are on the evaluation examples (the curve's data): each explorer's
    "clean" metric is set to that set's, not the discovery set's its result was found on.
    """
    from ..widgets import CircuitExplorer, FaithfulnessCurves
    from ..widgets.export import write_html

    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>"
                   for k, v in summary.items())
    notices = "".join(
        f"<p class='peap-notice' style='border:1px solid #fdba74;background:#fff7ed;"
        f"color:#7c2d12;padding:6px 10px;border-radius:6px'><b>{label}:</b> {html.escape(str(text))}</p>"
        for label, text in (("Warning", summary.get("task_warning")),
                            ("Not computed", summary.get("faithfulness_refused"))) if text)
    items: list = [f"<h1>{html.escape(title)}</h1>{notices}<table class='peap-table'>{rows}</table>"
                   "<p>Interactive and offline: move the size control, click edges or nodes to "
                   "prune them, hover for scores. This page cannot re-evaluate edits (no kernel); "
                   "load the results in a notebook with <code>pw.CircuitExplorer</code> for that.</p>"]
    if curve is not None:
        items += ["<h2>Faithfulness against circuit size</h2>", FaithfulnessCurves(curve)]
    for label, res in results.items():
        ex = CircuitExplorer(res, curves=curve, n_edges=sizes.get(label, 50))
        ev = (evaluations or {}).get(label)
        note = ""
        if ev is not None:
            ex.show_evaluation(ev)
            # the panel's "metric (clean ...)": both on the evaluation examples
            ex.info = {**ex.info, "clean_metric": _finite(ev.clean_metric)}
            note = (f"<p>Numbers in the panel: the circuit's evaluation on the evaluation "
                    f"examples (clean metric {_fmt(ev.clean_metric)}, empty circuit "
                    f"{_fmt(ev.empty_metric)}).</p>")
            if ev.refusal:
                note += f"<p class='peap-notice'><b>Faithfulness not computed:</b> {html.escape(ev.refusal)}</p>"
        items += [f"<h2>Circuit: {html.escape(label)}</h2>{note}", ex]
    for label, res in results.items():
        items.append(f"<h2>Top {top} edges: {html.escape(label)}</h2>"
                     + res.top(top).to_html(index=False, classes="peap-table", border=0,
                                           float_format=lambda v: f"{v:.4g}"))
    return write_html(path, items, title)


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _finite(v):
    import math

    return float(v) if v is not None and math.isfinite(v) else None
