"""Path patching of one sender -> receivers path (Wang et al. 2022, the IOI paper), as edges.

``path_patch(model, ds, "a3.h0", ["a4.h1.q"])`` is the mean change of the metric when only the
sender's effect *through the given receivers* comes from the counterfactual (or the chosen
ablation source): each receiver's input gets the sender's source output z*_s instead of z_s,
every other path (the sender's direct effect on other components, everything downstream of it
except through the receivers) stays clean, and the receivers' changed outputs propagate normally
to the logits. In the edge graph that is the full circuit minus the residual edges sender ->
receiver (at every span, or at the spans named with ``@``), evaluated exactly
(docs/numbers.md). Components between sender and receivers keep their clean values, heads and MLPs
alike (MIB / edge-level path patching; the IOI paper recomputed MLPs).

Receivers: ``"a4.h1.q"`` / ``"a4.h1<q>"`` (one of a head's q, k, v inputs), ``"a4.h1"`` (all
three), ``"m3"`` (an MLP), ``"logits"``. A sender: ``"input"``, ``"a3.h0"``, ``"m2"``. Either may
end in ``@span`` (``"a3.h0@S2"``) to patch at that span's positions only.

Example:
    >>> model = pw.models.load("toy-ioi")
    >>> ds = pw.tasks.get("ioi", n=4, seed=0).dataset(model)
    >>> change = pw.path_patch(model, ds, "a2.h0", ["a3.h1.q", "a3.h2.q"])
    >>> direct = pw.path_patch(model, ds, "a2.h3", "logits")   # direct effect
    >>> isinstance(change, float) and isinstance(direct, float)
    True
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import numpy as np

from ..circuits.circuit import Circuit
from ..data.dataset import Dataset
from ..errors import PeapError
from ..engine.evaluate import Evaluator
from ..graph.names import QKV, split_node
from ..graph.space import EdgeSpace
from ..engine.metrics import Metric
from .exact import graph_space

if TYPE_CHECKING:
    from ..runtime.model import Model

#: a receiver may name a head's input as ``a4.h1.q`` as well as ``a4.h1<q>``
_QKV_DOT = re.compile(r"^(a\d+\.h\d+)\.([qkv])$")


def _at_spans(name: str, spans: list[str]) -> tuple[str, list[str]]:
    """``"a3.h0@S2"`` -> ("a3.h0", ["S2"]); no span: every span."""
    base, span = split_node(str(name), spans)
    return base, [span] if span else list(spans)


def path_rows(space: EdgeSpace, sender: str, receivers: str | list[str]) -> np.ndarray:
    """Rows of ``space`` (the positional graph) of the residual edges sender -> receivers."""
    g, spans = space.graph, space.spans
    if isinstance(receivers, str):
        receivers = [receivers]
    if not receivers:
        raise PeapError("path_patch needs at least one receiver")
    s_base, s_spans = _at_spans(sender, spans)
    fwd = {n: i for i, n in enumerate(g.forward_names)}
    if s_base not in fwd:
        raise PeapError(f"unknown sender {sender!r}; senders look like 'input', 'a3.h0', 'm2' "
                        f"(optionally '@span')")
    bwd = {n: i for i, n in enumerate(g.backward_names)}
    rows = []
    for rec in receivers:
        r_base, r_spans = _at_spans(rec, spans)
        m = _QKV_DOT.match(r_base)
        if m:
            r_base = f"{m.group(1)}<{m.group(2)}>"
        slots = ([f"{r_base}<{c}>" for c in QKV] if r_base in g.head_names else [r_base])
        for slot in slots:
            if slot not in bwd:
                raise PeapError(f"unknown receiver {rec!r}; receivers look like 'a4.h1.q', "
                                "'a4.h1<k>', 'a4.h1', 'm3', 'logits' (optionally '@span')")
            for s in (x for x in s_spans if x in r_spans):
                row = int(space.resid_row(spans.index(s), fwd[s_base], bwd[slot]))
                if row < 0:
                    raise PeapError(f"{s_base} is not upstream of {slot}: no path "
                                    f"{sender!r} -> {rec!r}")
                rows.append(row)
    if not rows:
        raise PeapError(f"the spans of {sender!r} and the receivers {receivers} do not overlap")
    return np.unique(rows)


def path_patch(model: Model, ds: Dataset, sender: str, receivers: str | list[str],
               ablation: str = "counterfactual", metric: str | Metric = "logit_diff",
               batch_size: int | None = None, reference: Dataset | None = None,
               per_example: bool = False,
               evaluator: Evaluator | None = None) -> float | tuple[float, np.ndarray]:
    """The metric change (patched minus clean, mean over examples) when only the sender's
    effect through ``receivers`` comes from the ablation source (see the module docstring).

    Args:
        sender: ``"input"``, ``"a3.h0"``, ``"m2"``, optionally ``"@span"``.
        receivers: one name or a list: ``"a4.h1.q"``, ``"a4.h1<v>"``, ``"a4.h1"``, ``"m3"``,
            ``"logits"``, optionally ``"@span"``; all are patched together.
        ablation: as for `peap_widget.engine.evaluate`.
        metric: as for `peap_widget.engine.evaluate`.
        batch_size: as for `peap_widget.engine.evaluate`.
        reference: as for `peap_widget.engine.evaluate`.
        per_example: also return the [N] per-example changes.
        evaluator: an `Evaluator` on this data to reuse for many paths (its cached runs).

    Returns:
        The mean change (float), or (mean, per-example array) with ``per_example``.

    Example:
        >>> model = pw.models.load("toy-ioi")
        >>> ds = pw.tasks.get("ioi", n=4, seed=0).dataset(model)
        >>> ev = pw.Evaluator(model, ds)
        >>> direct = {h: pw.path_patch(model, ds, h, "logits", evaluator=ev)
        ...           for h in ["a3.h0", "a3.h1"]}
        >>> sorted(direct)
        ['a3.h0', 'a3.h1']
    """
    ev = evaluator or Evaluator(model, ds, ablation, metric, batch_size, reference)
    space = graph_space(model, ds, True)
    rows = path_rows(space, sender, receivers)
    full = Circuit(space, np.ones(len(space), dtype=bool))
    m, _ = ev.removal_runs(full, [rows])
    per = m[0] - ev.clean_per_example
    return (float(per.mean()), per) if per_example else float(per.mean())
