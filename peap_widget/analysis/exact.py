"""Exact edge patching (MIB's EActP): the true effect of removing one edge from the full model.

For every edge e of the positional graph (or, with ``positional=False``, of the position-free EAP
graph) the score is the mean over examples of

    m(full circuit minus e) - m(full model)

evaluated exactly by ablation (docs/numbers.md: e's receiver gets the ablation source's
z*_u at e's span, or the head uses q*/k*/v* for e's span pair). It is what attribution patching
(PEAP, EAP) estimates to first order, with the same sign, so the table plugs into the same
comparisons, curves and circuit searches.

One patched forward pass per edge is expensive: this is for **small models** (thousands of
edges). Many single-edge-removed circuits share a pass (stacked copies of a batch, one mask per
copy, `peap_widget.engine.evaluate.Evaluator.removal_runs`), and an estimate of the total time, from
the first chunk, is printed before the rest runs.

Example:
    >>> from peap_widget.models.examples import tiny_gpt2, tiny_records
    >>> hf, tok = tiny_gpt2()                                  # 2 layers, 4 heads, random weights
    >>> model = pw.load_model(hf, tokenizer=tok)
    >>> ds = pw.Dataset.from_records(tiny_records(), tok)
    >>> ex = pw.exact_scores(model, ds, positional=True, progress=False)
    >>> ex.edges.columns.tolist()
    ['kind', 'src', 'dst', 'src_span', 'dst_span', 'score']
    >>> peap = pw.attribute(model, ds, progress=False)
    >>> round(float(np.corrcoef(peap.scores, ex.scores)[0, 1]), 2)
    0.86
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from ..circuits.circuit import Circuit
from ..graph.space import EdgeSpace, edge_space
from ..data.dataset import Dataset
from ..engine.evaluate import Evaluator
from ..circuits.result import AttributionResult
from ..engine.metrics import Metric

if TYPE_CHECKING:
    from ..runtime.model import Model

log = logging.getLogger("peap_widget")
EAP_SPAN = "all"


def graph_space(model: Model, ds: Dataset, positional: bool) -> EdgeSpace:
    """The edge space of the positional graph on ``ds``'s spans, or the EAP graph (one span
    ``all``, no crossing edges)."""
    spans = tuple(ds.schema.spans) if positional else (EAP_SPAN,)
    return edge_space(model.adapter.config, spans, positional)


def span_lengths(ds: Dataset, positional: bool) -> np.ndarray:
    lengths = np.asarray([[e - s for s, e in ex.spans] for ex in ds.examples])
    return lengths if positional else lengths.sum(1, keepdims=True)


def exact_scores(model: Model, ds: Dataset, positional: bool = True,
                 ablation: str = "counterfactual", metric: str | Metric = "logit_diff",
                 batch_size: int | None = None, reference: Dataset | None = None,
                 copies: int | None = None, progress: bool | Callable = True,
                 evaluator: Evaluator | None = None) -> AttributionResult:
    """Exact single-edge patching scores for every edge (small models only: one patched
    forward of every example per edge).

    Args:
        model: as for `peap_widget.attribute`.
        ds: as for `peap_widget.attribute`.
        ablation: as for `peap_widget.attribute`.
        metric: as for `peap_widget.attribute`.
        reference: as for `peap_widget.attribute`.
        positional: the positional graph (residual edges per span and crossing q/k/v edges,
            like ``method="peap"``) or the EAP graph (one span ``all``: an edge is removed at
            every position at once, like ``method="eap"``).
        batch_size: examples per batch of the cached clean / source runs (None: all).
        copies: circuits stacked into one forward pass (default: about
            `peap_widget.engine.evaluate.EXAMPLES_PER_PASS` examples per pass).
        progress: a tqdm bar over edges, and the time estimate printed after the first chunk;
            or a function ``progress(done, total)`` called with edge counts.
        evaluator: an `Evaluator` on this data to reuse (its ablation and metric win).

    Returns:
        An `AttributionResult` with ``settings["method"] == "exact"``: ``res.edges`` is the edge
        table (same rows as ``pw.attribute``'s for the same graph), score = mean over examples
        of m(full minus the edge) - m(full). Rows whose receiver has no path to the logits at
        the last token (e.g. into ``logits`` at an earlier span) cannot change the metric and
        are 0 without a run. ``res.settings["seconds"]`` holds the wall time.

    Example:
        >>> from peap_widget.models.examples import tiny_gpt2, tiny_records
        >>> hf, tok = tiny_gpt2()
        >>> model = pw.load_model(hf, tokenizer=tok)
        >>> ds = pw.Dataset.from_records(tiny_records(), tok)
        >>> ex = pw.exact_scores(model, ds, positional=False, progress=False)
        >>> ex.top(2)[["kind", "src", "dst"]].values.tolist()
        [...]
        >>> ex.circuit(n_edges=10).n_edges     # greedy's 10, less those on no input->logits path
        8
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    ev = evaluator or Evaluator(model, ds, ablation, metric, batch_size, reference)
    space = graph_space(model, ds, positional)
    full = Circuit(space, np.ones(len(space), dtype=bool))
    live = np.nonzero(space.root_reachable[space.child])[0]
    removals = [[int(r)] for r in live]
    N, K = len(ds), len(removals)
    B = max(len(b.lengths) for b in ev.batches)
    from ..engine.evaluate import EXAMPLES_PER_PASS

    per_pass = max(1, copies or EXAMPLES_PER_PASS // B)
    report = progress if callable(progress) else None
    bar = tqdm(total=K, desc="exact patching", unit="edge",
               disable=not progress or report is not None)
    metric_rows = np.empty((K, N))
    with bar:
        # one edge alone first: the first patched trace pays one-off costs (nnsight parsing
        # the trace's source), which would inflate the estimate (2x on toy-ioi)
        warm = min(1, K)
        metric_rows[:warm] = ev.removal_runs(full, removals[:warm], 1)[0]
        first = min(warm + per_pass, K)
        t1 = time.perf_counter()
        metric_rows[warm:first] = ev.removal_runs(full, removals[warm:first], per_pass)[0]
        dt = time.perf_counter() - t1
        estimate = dt * (K - warm) / max(first - warm, 1)
        msg = (f"exact patching: {K} edges x {N} examples, {first - warm} edges took {dt:.2f} s; "
               f"estimated total {estimate:.0f} s")
        log.info(msg)
        if progress is True:
            bar.write(msg)
        bar.update(first)
        if report is not None:
            report(first, K)

        def step(done):
            bar.update(first + done - bar.n)
            if report is not None:
                report(first + done, K)

        if K > first:
            metric_rows[first:] = ev.removal_runs(full, removals[first:], per_pass, step)[0]
    scores = np.zeros(len(space))
    scores[live] = metric_rows.mean(1) - ev.clean_per_example.mean()
    settings = {"method": "exact", "positional": positional, "ablation": ev.ablation,
                "aggregation": "sum", "metric": ev.metric_name, "batch_size": ev.batch_size,
                "n_examples": N, "model": model.name, "seconds": time.perf_counter() - t0,
                "estimated_seconds": estimate}
    source = ev.empty_per_example if ev.ablation == "counterfactual" else None
    return AttributionResult(scores, list(space.spans), settings, ev.clean_per_example, source,
                             ds.schema, space.graph.cfg, span_lengths(ds, positional))
