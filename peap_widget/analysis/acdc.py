"""ACDC (Conmy et al. 2023, "Towards Automated Circuit Discovery") on the positional graph.

Start from the full circuit H. Visit the receivers (positional nodes) from the logits backwards
(reverse topological order: `EdgeSpace.node_level` descending); for each receiver try removing
each of its incoming edges still in H, senders from the latest to the earliest, and keep it
removed when the circuit changes by less than ``tau``:

- ``metric="kl"`` (ACDC's default): KL(full model || H minus e) - KL(full model || H) < tau,
  the KL of the last-token distributions, mean over examples;
- a task metric (``"logit_diff"``, ``"prob_diff"``, a callable): |m(H minus e) - m(H)| < tau,
  m the dataset mean.

Every try is an exact patched run (docs/numbers.md) through an `Evaluator`, whose clean and
ablation-source runs are computed once. The decisions are sequential, but the tries are batched
without changing them: for the next edges e1..eK of a receiver, one forward pass evaluates the K
circuits H - {e1}, H - {e1, e2}, ..., H - {e1..eK} (stacked copies, one mask each); walking them
in order, each decision is ACDC's own as long as every edge before it was removed, and at the
first kept edge the rest is re-run from the new H. ACDC removes most edges, so most passes
decide many edges.

A receiver with no path left to the logits at the last token cannot change the metric: its
incoming edges are removed without a run (what ACDC does by skipping such nodes). At the end,
edges not on a path from an input to the logits are dropped (`Circuit.prune`).

Example:
    >>> from peap_widget.models.examples import tiny_gpt2, tiny_records
    >>> hf, tok = tiny_gpt2()                                  # 2 layers, 4 heads, random weights
    >>> model = pw.load_model(hf, tokenizer=tok)
    >>> ds = pw.Dataset.from_records(tiny_records(), tok)
    >>> circ = pw.acdc(model, ds, tau=0.001, progress=False)
    >>> circ.n_edges, round(pw.evaluate(model, ds, circ).faithfulness, 2)
    (..., ...)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from ..circuits.circuit import Circuit
from ..data.dataset import Dataset
from ..errors import PeapError
from ..engine.evaluate import EXAMPLES_PER_PASS, Evaluator
from .exact import graph_space, span_lengths
from ..engine.metrics import Metric

if TYPE_CHECKING:
    from ..runtime.model import Model


def acdc(model: Model, ds: Dataset, tau: float, positional: bool = True,
         metric: str | Metric = "kl", ablation: str = "counterfactual",
         task_metric: str | Metric = "logit_diff", batch_size: int | None = None,
         reference: Dataset | None = None, copies: int | None = None,
         progress: bool | Callable = True, evaluator: Evaluator | None = None,
         prune: bool = True) -> Circuit:
    """Find a circuit with ACDC (see the module docstring).

    Args:
        model: as for `peap_widget.attribute`.
        ds: as for `peap_widget.attribute`.
        ablation: as for `peap_widget.attribute`.
        reference: as for `peap_widget.attribute`.
        tau: the threshold: an edge goes when removing it changes the criterion by less.
        positional: the positional graph (residual edges per span and crossing q/k/v edges) or
            the EAP graph (one span ``all``: an edge goes at every position at once).
        metric: ``"kl"`` (KL to the full model, one-sided) or a task metric (absolute change).
        task_metric: the metric recorded in the circuit's settings (and used by a later
            `peap_widget.engine.evaluate`) when ``metric="kl"``.
        batch_size: examples per batch of the cached runs (None: all).
        copies: circuits per forward pass (default: about `EXAMPLES_PER_PASS` examples).
        progress: a tqdm bar over receivers; or ``progress(done, total)`` with receiver counts.
        evaluator: an `Evaluator` on this data to reuse (its ablation and metric win).
        prune: drop edges not on an input -> logits path at the end.

    Returns:
        A `Circuit` (q/k/v kept apart: ``merge_qkv=False``); ``circ.settings`` holds the
        method ("acdc"), tau, the criterion, the number of forward passes and the seconds.

    Example:
        >>> from peap_widget.models.examples import tiny_gpt2, tiny_records
        >>> hf, tok = tiny_gpt2()
        >>> model = pw.load_model(hf, tokenizer=tok)
        >>> ds = pw.Dataset.from_records(tiny_records(), tok)
        >>> circ = pw.acdc(model, ds, tau=0.01, metric="logit_diff", progress=False)
        >>> circ.settings["method"], circ.settings["tau"]
        ('acdc', 0.01)
    """
    from tqdm.auto import tqdm

    if not np.isfinite(tau) or tau < 0:
        raise PeapError(f"tau must be a non-negative number, got {tau!r}")
    t0 = time.perf_counter()
    use_kl = isinstance(metric, str) and metric == "kl"
    ev = evaluator or Evaluator(model, ds, ablation, task_metric if use_kl else metric,
                                batch_size, reference)
    space = graph_space(model, ds, positional)
    in_rows = np.ones(len(space), dtype=bool)
    B = max(len(b.lengths) for b in ev.batches)
    per_pass = max(1, copies or EXAMPLES_PER_PASS // B)
    current = 0.0 if use_kl else ev.clean_metric       # criterion value of H (the full model)

    level = space.node_level
    receivers = [int(n) for n in np.argsort(-level.astype(np.int64), kind="stable")
                 if len(space.incoming(int(n))[0])]
    report = progress if callable(progress) else None
    bar = tqdm(total=len(receivers), desc=f"ACDC tau={tau:g}", unit="node",
               disable=not progress or report is not None)
    passes = 0
    with bar:
        for done, node in enumerate(receivers):
            current, runs = _decide_receiver(ev, space, in_rows, node, current, tau, use_kl,
                                             per_pass)
            passes += runs
            bar.update(1)
            if report is not None:
                report(done + 1, len(receivers))
    settings = {"method": "acdc", "tau": float(tau),
                "criterion": "kl" if use_kl else ev.metric_name,
                "ablation": ev.ablation, "metric": ev.metric_name, "positional": positional,
                "passes": passes, "seconds": time.perf_counter() - t0, "model": model.name,
                "n_examples": len(ds)}
    circ = Circuit(space, in_rows, merge_qkv=False, settings=settings,
                   span_lengths=span_lengths(ds, positional), name=f"acdc tau={tau:g}")
    if prune:
        circ.prune()
        circ.forget_history()
    return circ


def _decide_receiver(ev: Evaluator, space, in_rows: np.ndarray, node: int, current: float,
                     tau: float, use_kl: bool, per_pass: int) -> tuple[float, int]:
    """ACDC at one receiver ``node``: its incoming edges in ``in_rows``, latest sender first,
    each removed (in place) when that changes the criterion (from ``current``) by less than
    ``tau``; several tries per forward pass. Returns (the criterion of the circuit after,
    forward passes run)."""
    rows = space.incoming(node)[0]
    rows = rows[in_rows[rows]][::-1]               # latest sender first
    if len(rows) and not _reaches_root(space, in_rows, node):
        in_rows[rows] = False
        rows = rows[:0]
    i, passes = 0, 0
    while i < len(rows):
        pending = rows[i: i + per_pass]
        base = Circuit(space, in_rows.copy(), merge_qkv=False)
        m, kl = ev.removal_runs(base, [pending[: j + 1] for j in range(len(pending))], per_pass)
        passes += 1
        values = kl.mean(1) if use_kl else m.mean(1)
        for j, row in enumerate(pending):
            i += 1
            change = values[j] - current if use_kl else abs(values[j] - current)
            if change < tau:
                in_rows[row] = False
                current = values[j]
            else:
                break                              # later tries assumed this edge gone
    return current, passes


def _reaches_root(space, in_rows: np.ndarray, node: int) -> bool:
    """Whether ``node`` has a path to the logits at the last span through ``in_rows``."""
    rows = np.nonzero(in_rows)[0]
    if not len(rows):
        return node == space.root
    return bool(space.reaching_root(space.parent[rows], space.child[rows])[node])
