"""PEAP and EAP edge scores over a dataset, computed inside nnsight traces.

Per batch: one gradient-free run of the ablation source (counterfactual prompts; span means and
zeros need none), then one clean run with one backward pass. Inside that trace the scores of
docs/numbers.md are formed in closed form, vectorised over heads, positions and examples, and
only span-aggregated sums leave it.
"""

from __future__ import annotations

import gc
import warnings
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..runtime import remote
from .ablation import SourceValues, ablation_sources
from ..data.dataset import Batch, Dataset
from ..errors import NonFiniteError, PeapError
from .integrated import MODES as IG_MODES, Path, average_blocks, interpolate
from ..runtime.memory import auto_batch_size, chunk_bytes, is_out_of_memory
from .metrics import Metric, last_token_logits, resolve_metric
from ..runtime.grad import frozen_parameters
from ..runtime.model import model_lock
from ..circuits.result import AttributionResult
from .scores import AGGREGATIONS, aggregate_pairs, aggregate_positions, crossing_values
from .walk import walk_layers

if TYPE_CHECKING:
    from ..runtime.model import Model

METHODS = ("peap", "eap", "eap-ig", "peap-ig", "eap-ig-activations")
POSITIONAL = ("peap", "peap-ig")
EAP_SPAN = "all"


def attribute(model: Model, ds: Dataset, method: str = "peap", ablation: str = "counterfactual",
              aggregation: str = "sum", metric: str | Metric = "logit_diff",
              batch_size: int | str | None = "auto", reference: Dataset | None = None,
              progress: bool | Callable = True, batches_per_request: int = 1,
              steps: int = 5) -> AttributionResult:
    """Score every edge of the graph on ``ds``.

    Args:
        model: from `load_model`.
        ds: a `Dataset` tokenized for this model.
        method: ``"peap"`` (positional: residual edges per span plus crossing q/k/v edges),
            ``"eap"`` (residual edges over one span ``"all"`` covering the prompt), or their
            integrated-gradients forms (`peap_widget.engine.integrated`): ``"eap-ig"`` (MIB's
            EAP-IG-inputs: gradients averaged over ``steps`` points on the line from the
            ablated to the clean input embeddings), ``"peap-ig"`` (the same per span, crossing
            edges from the closed forms with the path-averaged head-output gradient) and
            ``"eap-ig-activations"`` (each node group's output interpolated in turn).
        ablation: ``"counterfactual"`` (each example's corrupted prompt), ``"mean"`` (per span
            type over ``reference``, default ``ds``) or ``"zero"``.
        aggregation: within a span, ``"sum"`` (PEAP's Eq. 8), ``"mean"`` (sum over the number
            of real edges: the span's length, or for a crossing edge its (query, key) pairs that
            attend: key <= query, and within the layer's sliding window if it has one) or ``"max_abs"`` (the real edge of largest |score|, sign kept). Then
            the mean over examples.
        metric: ``"logit_diff"``, ``"prob_diff"`` or a callable (see `peap_widget.engine.metrics`).
        batch_size: examples per trace: ``"auto"`` (default) sizes it from the model's shape,
            the longest prompt and the memory free on the model's device
            (`peap_widget.runtime.memory.auto_batch_size`); an int; None for all at once. If a batch
            runs out of memory it is halved and retried, with a warning.
        reference: the examples mean ablation averages over.
        progress: show a tqdm progress bar over examples; or a function called as
            ``progress(done, total)`` with example counts after each batch (widgets use it).
        batches_per_request: for a remote model (``load_model(..., remote=True)``), how many
            batches one NDIF request runs; their aggregates are summed there, so the tables
            come back once per request (fewer requests and bytes, longer requests).
        steps: points on the integration path of the ``*-ig*`` methods (alpha = k / steps,
            k = 1..steps; ``steps=1`` is EAP / PEAP exactly). One trace holds all points of a
            batch: ``steps`` rows per example (``eap-ig-activations``: ``steps * (2 L + 1)``),
            so ``"auto"`` sizes batches that much smaller. Ignored by ``"peap"``/``"eap"``.

    Returns:
        `AttributionResult`; ``res.edges`` is the edge table.

    Raises:
        NonFiniteError: a NaN or inf in an activation, a gradient or a score, naming the batch
            (its examples) and the component.

    Example:
        >>> model = pw.models.load("toy-ioi")
        >>> ds = pw.tasks.get("ioi", n=4, seed=0).dataset(model)
        >>> res = attribute(model, ds, method="peap", ablation="counterfactual", progress=False)
        >>> res.top(2)[["kind", "src", "dst", "src_span", "dst_span"]].values.tolist()
        [['q', 'a3.h2', 'a3.h2', 'S1', 'to'], ['q', 'a3.h3', 'a3.h3', 'S1', 'to']]
    """
    _check_settings(method, aggregation, batches_per_request, steps)
    metric_name, metric_fn = resolve_metric(metric)
    positional = method in POSITIONAL
    path = (Path(IG_MODES[method], steps, model.adapter.config.n_layers)
            if method in IG_MODES else None)
    size = _batch_size(model, ds, batch_size, positional)
    if batch_size == "auto" and path is not None:   # every example takes path.blocks rows
        size = max(1, size // path.blocks)
    source = ablation_sources(model, ds, ablation, size, reference, metric_fn)
    spans = list(ds.schema.spans) if positional else [EAP_SPAN]
    sums = _Sums(model, len(spans), positional)
    job = (source, aggregation, metric_fn, positional, path)
    group = batches_per_request if model.remote else 1
    size = _run_batches(model, ds, job, size, group, sums, method, progress)
    resid, cross, clean, source_metric = sums.means(len(ds))
    settings = {"method": method, "ablation": ablation, "aggregation": aggregation,
                "metric": metric_name, "batch_size": size,
                "n_examples": len(ds), "model": model.name}
    if path is not None:
        settings["steps"] = steps
    lengths = np.asarray([[e - s for s, e in ex.spans] for ex in ds.examples])
    if not positional:
        lengths = lengths.sum(1, keepdims=True)
    return AttributionResult.from_arrays(model.graph, spans, resid, cross, settings, clean,
                                         source_metric, ds.schema, lengths)


def _check_settings(method: str, aggregation: str, batches_per_request, steps) -> None:
    if method not in METHODS:
        raise PeapError(f"unknown method {method!r}; use one of {METHODS}")
    if isinstance(batches_per_request, bool) or not isinstance(batches_per_request, int) \
            or batches_per_request < 1:
        raise PeapError(f"batches_per_request must be a positive integer, got "
                        f"{batches_per_request!r}")
    if aggregation not in AGGREGATIONS:
        raise PeapError(f"unknown aggregation {aggregation!r}; use one of {AGGREGATIONS}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise PeapError(f"steps must be a positive integer (points on the integration path), "
                        f"got {steps!r}")


class _Sums:
    """The running sums over batches: residual scores (the edge mask's entries) and crossing
    scores, kept on the device in float64 (no host synchronisation per batch), the per-example
    metrics and the finiteness checks."""

    def __init__(self, model, n_spans: int, positional: bool):
        graph, cfg, dev = model.graph, model.adapter.config, model.device
        self.graph, self.dev, self.positional = graph, dev, positional
        acc_dtype = torch.float64 if dev.type != "mps" else torch.float32
        # Residual scores as the edge mask's entries (the rest of the dense table is no edge).
        self.resid = torch.zeros(n_spans, int(graph.edge_mask.sum()), dtype=acc_dtype, device=dev)
        self.cross = (torch.zeros(3, cfg.n_layers, cfg.n_heads, n_spans, n_spans,
                                  dtype=acc_dtype, device=dev) if positional else None)
        self.clean_metric, self.source_metric, self.checks = [], [], FiniteChecks()

    def add(self, out: dict, where: str) -> None:
        """One request's aggregates (``attribute_batches``), its examples named by ``where``."""
        self.checks.add(where, out["checks"])
        if out["source_metric"] is not None:
            self.source_metric.append(out["source_metric"])
        self.resid += out["resid"]
        if self.positional:
            self.cross += out["cross"]
        self.clean_metric.append(out["metric"])
        self.checks.verify(keep_last=1)   # the batch before this one: long finished on a GPU

    def means(self, n: int) -> tuple:
        """(dense residual scores [S, Nf, Nb], crossing scores or None, clean metric [n],
        source metric [n] or None) as float64 NumPy, the scores averaged over the ``n``
        examples; raises `NonFiniteError` for any batch's non-finite value first."""
        self.checks.verify()
        graph, dev = self.graph, self.dev
        resid = self.resid / n
        dense = torch.zeros(resid.shape[0], graph.n_forward, graph.n_backward, dtype=resid.dtype,
                            device=dev)
        dense[:, torch.as_tensor(graph.edge_mask, device=dev)] = resid
        cross = None if self.cross is None else (self.cross / n).double().cpu().numpy()
        clean = torch.cat(self.clean_metric).double().cpu().numpy()
        source = (torch.cat(self.source_metric).double().cpu().numpy() if self.source_metric
                  else None)
        return dense.double().cpu().numpy(), cross, clean, source


def _run_batches(model, ds: Dataset, job: tuple, size: int, group: int, sums: _Sums,
                 method: str, progress) -> int:
    """Run ``attribute_batches`` (arguments after the batches: ``job``) over ``ds``, ``group``
    batches of ``size`` examples per request, into ``sums``; halve the batch and retry after an
    allocation failure. Returns the batch size it ended with."""
    from tqdm.auto import tqdm

    n, dev = len(ds), model.device
    report = progress if callable(progress) else None
    bar = tqdm(total=n, desc=f"{method.upper()} attribution", unit="ex",
               disable=not progress or report is not None)
    with bar, frozen_parameters(model.hf):
        done = 0
        while done < n:
            idx = list(range(done, min(n, done + size * group)))
            batches = [ds.batch(idx[i: i + size], device=dev) for i in range(0, len(idx), size)]
            try:
                with model_lock(model):   # one batch's traces never interleave with others'
                    out = remote.run(model, attribute_batches, model, batches, *job)
                failed = False
            except Exception as err:  # noqa: BLE001 (only allocation failures are retried)
                if not is_out_of_memory(err) or size == 1:
                    raise
                failed = True
            if failed:  # outside the except block, so the traceback's frames are gone
                failed_size, size = min(size, len(idx)), max(1, min(size, len(idx)) // 2)
                _release(dev)
                warnings.warn(f"{method.upper()} attribution: out of memory with {failed_size} "
                              f"examples per batch; retrying with {size}", ResourceWarning,
                              stacklevel=3)
                continue
            sums.add(out, f"batch of examples {idx[0]}-{idx[-1]}")
            # nnsight's traces leave reference cycles that hold the batch's activations until
            # the cyclic collector runs: without this, two batches' worth stay alive (+1.4 GB
            # on GPT-2 small at batch 32, measured) and the auto batch size would be wrong.
            del out, batches
            gc.collect()
            done += len(idx)
            bar.update(len(idx))
            if report is not None:
                report(done, n)
    return size


def _batch_size(model, ds: Dataset, batch_size, positional: bool) -> int:
    if batch_size == "auto":
        return auto_batch_size(model, ds, positional)
    if batch_size is None:
        return max(1, len(ds))
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise PeapError(f"batch_size must be a positive integer, None or 'auto', got {batch_size!r}")
    return batch_size


def _release(device) -> None:
    """Give cached blocks back after an allocation failure, before the smaller retry."""
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


class FiniteChecks:
    """Per-batch finiteness flags, kept on the device and read one batch late, so that checking
    never stalls a GPU; `verify` raises `NonFiniteError` naming the first bad component."""

    def __init__(self):
        self.pending: list[tuple[str, list[str], torch.Tensor]] = []

    def add(self, where: str, checks: list[tuple[list[str], torch.Tensor]]) -> None:
        """``checks``: (labels, flags) pairs, one label per entry of the 1-D bool ``flags``."""
        labels = [label for group, _ in checks for label in group]
        device = checks[0][1].device
        flags = torch.cat([flags.to(device) for _, flags in checks])
        self.pending.append((where, labels, flags))

    def verify(self, keep_last: int = 0) -> None:
        while len(self.pending) > keep_last:
            where, labels, flags = self.pending.pop(0)
            ok = flags.cpu().tolist()
            if not all(ok):
                bad = [label for label, good in zip(labels, ok) if not good]
                more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
                raise NonFiniteError(
                    f"{where}: NaN or inf in {bad[0]}{more}. Check the model's weights and dtype "
                    "(float16 overflows easily; try bfloat16 or float32) and these examples.")


def attribute_batches(model: Model, batches: list[Batch], source: Callable[[Batch], SourceValues],
                      aggregation: str, metric_fn: Metric, positional: bool,
                      path: Path | None = None) -> dict:
    """The job (`peap_widget.runtime.remote`) of one or more batches: per batch its ablation source,
    then the clean run with one backward pass (EAP-IG: every point of ``path`` in that run).
    Returns the batch-summed span aggregates
    (``resid`` [S, edges] over the edge mask, ``cross``), the metrics and the finiteness
    flags. Runs where the model is and reads the weights there; for a remote model only this
    comes back, once per request."""
    total = None
    for batch in batches:
        batch = remote.batch_on(batch, model.device)
        src = source(batch)
        out = _score_batch(model, batch, src, aggregation, metric_fn, positional, path)
        out["resid"] = out["resid"][:, torch.as_tensor(model.graph.edge_mask,
                                                       device=out["resid"].device)]
        out["source_metric"] = None if src.metric is None else src.metric.detach()
        total = out if total is None else {
            "resid": total["resid"] + out["resid"],
            "cross": None if out["cross"] is None else total["cross"] + out["cross"],
            "metric": torch.cat([total["metric"], out["metric"]]),
            "source_metric": (None if out["source_metric"] is None
                              else torch.cat([total["source_metric"], out["source_metric"]])),
            "checks": total["checks"] + out["checks"]}
    return total


def _score_batch(model, batch: Batch, src: SourceValues, aggregation: str, metric_fn,
                 positional: bool, path: Path | None = None) -> dict:
    """One clean trace with one backward pass; returns batch-summed span-aggregated scores.

    With an EAP-IG ``path`` the trace runs ``path.blocks`` copies of the batch, one per point
    (`peap_widget.engine.integrated`); the differences z* - z come from the block that is the clean
    run, the slot gradients are averaged over the blocks."""
    ad, nn = model.adapter, model.nn
    L = ad.config.n_layers
    cd, dev = ad.compute_dtype(), batch.clean_ids.device
    rows = _PathRows(batch, path)
    M = _span_weights(batch, positional, cd)
    chunk = _examples_per_chunk(model, batch.clean_ids.shape[1], cd, dev, rows.blocks)
    out: dict = {}
    with nn.trace(rows.ids):
        inp = _clean_input(model, nn, src, path, rows.B)
        reads = _ScoreSteps(model, nn, src, path, rows.B, rows.clean)
        delta = walk_layers(model, src, inp, reads, dev, rows.clean)
        atts, mlps = reads.atts, reads.mlps
        fin = ad.read_final(nn)
        values = metric_fn(last_token_logits(fin.logits.to(dev), rows.lengths), rows.correct,
                           rows.incorrect)
        g_o, g_mlp = [None] * L, [None] * L
        with values.sum().backward():
            g_fin = ad.read_final_grad(fin)
            for layer in reversed(range(L)):
                g_mlp[layer] = ad.read_mlp_grad(mlps[layer])
                g_o[layer] = ad.read_attention_grad(atts[layer])

        # Everything below runs on saved values; only the aggregates leave the trace.
        resid = _residual_scores(model, fin, atts, mlps, g_fin, g_o, g_mlp, delta, M,
                                 aggregation, chunk, rows.blocks)
        cross = (_crossing_scores(model, atts, src, g_o, M, aggregation, rows.blocks, rows.clean)
                 if positional else None)
        out["checks"] = _finiteness(model, inp, src, atts, mlps, values, g_fin, g_o, g_mlp,
                                    resid, cross)
        # In the compute dtype (float32 for 16- and 32-bit models): that is all the precision
        # a batch's sums have, and half the bytes a remote request returns; the running sums
        # over batches are float64.
        out["resid"] = resid
        out["cross"] = cross
        out["metric"] = values[rows.clean].detach()
    return out


class _PathRows:
    """The rows of one scoring trace: the batch once, or (EAP-IG) ``path.blocks`` copies of it,
    one per point of the path; ``clean`` the rows of the block that is the clean run."""

    def __init__(self, batch: Batch, path: Path | None):
        B = self.B = batch.clean_ids.shape[0]
        R = self.blocks = 1 if path is None else path.blocks
        self.clean = (slice(0, B) if path is None
                      else slice(path.clean_block * B, (path.clean_block + 1) * B))
        self.ids = batch.clean_ids if R == 1 else batch.clean_ids.repeat(R, 1)
        self.lengths = batch.lengths if R == 1 else batch.lengths.repeat(R)
        self.correct = batch.correct if R == 1 else batch.correct.repeat(R)
        self.incorrect = batch.incorrect if R == 1 else batch.incorrect.repeat(R)


def _span_weights(batch: Batch, positional: bool, dtype) -> torch.Tensor:
    """[B, S, T] which span each position is in (PEAP), or [B, 1, T] the prompt as one span."""
    if positional:
        return batch.span_onehot(dtype)
    return (batch.span_ids >= 0)[:, None, :].to(dtype)


def _examples_per_chunk(model, T: int, dtype, device, blocks: int) -> int:
    """Examples per contraction of the residual scores, so one chunk's slot gradients stay
    within `peap_widget.runtime.memory.chunk_bytes`."""
    cfg, graph = model.adapter.config, model.graph
    itemsize = torch.finfo(dtype).bits // 8
    per_example = T * (3 * cfg.n_heads + 1) * max(cfg.d_model, graph.n_forward) * itemsize * blocks
    return max(1, chunk_bytes(device) // per_example)


def _clean_input(model, nn, src: SourceValues, path: Path | None, B: int) -> torch.Tensor:
    """The trace's ``input`` node, moved to its points on an EAP-IG-inputs path and made to
    require gradients (the graph's first forward node)."""
    inp = model.adapter.read_input(nn)
    if path is not None:
        # Interpolate in place (nothing requires grad yet): the block's input is this tensor.
        shift = _path_shift(path, "input", inp, src.input, B)
        if shift is not None:
            inp.sub_(shift)
    inp.requires_grad_(True)
    return inp


class _ScoreSteps:
    """`walk_layers` steps of the scoring trace: each layer's attention and MLP reads, kept
    (``atts``, ``mlps``) for the backward pass, with EAP-IG-activations' shifts applied; the
    differences come from the clean block's rows."""

    def __init__(self, model, nn, src: SourceValues, path: Path | None, B: int, clean: slice):
        self.model, self.nn, self.src, self.path = model, nn, src, path
        self.B, self.clean = B, clean
        self.cd = model.adapter.compute_dtype()
        self.atts: list = []
        self.mlps: list = []

    def attention(self, layer: int, delta: torch.Tensor) -> torch.Tensor:
        att = self.model.adapter.read_attention(self.nn, layer)
        self.atts.append(att)
        if self.path is not None:
            _shift_heads(self.model, self.nn, self.path, layer, att.o, self.src.o[layer], self.B)
        return att.o[self.clean].detach().to(self.cd)

    def mlp(self, layer: int, delta: torch.Tensor) -> torch.Tensor:
        mlp = self.model.adapter.read_mlp(self.nn, layer)
        self.mlps.append(mlp)
        if self.path is not None:
            _shift_mlp(self.model, self.nn, self.path, layer, mlp.out, self.src.mlp[layer], self.B)
        return mlp.out[self.clean].detach().to(self.cd)


def _path_shift(path: Path, group: str, x: torch.Tensor, x_src: torch.Tensor, B: int):
    """(1 - alpha) (x - x*) per row for ``group``'s value ``x`` [R, T, ...], or None."""
    factors = path.row_factors(group, B, torch.float64, x.device)
    if factors is None:
        return None
    return x.detach() - interpolate(x.detach(), x_src, factors.to(x.dtype))


def _shift_heads(model, nn, path: Path, layer: int, o, o_src, B: int) -> None:
    """EAP-IG-activations: the heads' outputs of ``layer`` (before the output projection) moved
    to their point on the path in that group's rows; a constant shift, so gradients still
    flow through them as in the clean run."""
    shift = _path_shift(path, f"a{layer}", o, o_src, B)
    if shift is not None:
        model.adapter.set_heads_output(nn, layer, o - shift)


def _shift_mlp(model, nn, path: Path, layer: int, out, out_src, B: int) -> None:
    """EAP-IG-activations: the MLP node's output moved along the path in its group's rows."""
    shift = _path_shift(path, f"m{layer}", out, out_src, B)
    if shift is not None:
        model.adapter.set_mlp_output(nn, layer, out - shift)


def _residual_scores(model, fin, atts, mlps, g_fin, g_o, g_mlp, delta, M, aggregation,
                     chunk, blocks: int = 1) -> torch.Tensor:
    """[S, Nf, Nb] batch-summed residual edge scores: the z* - z differences ``delta`` dotted
    with each slot's own-input gradient (averaged over the ``blocks`` points of an EAP-IG
    path, each through its own point's norm and attention), per position, aggregated per
    span."""
    graph = model.graph
    resid = torch.zeros(M.shape[1], graph.n_forward, graph.n_backward, dtype=delta.dtype,
                        device=delta.device)
    edges_into = partial(_edges_into, delta=delta, M=M, aggregation=aggregation, chunk=chunk,
                         blocks=blocks)
    resid[:, :, graph.logits_slot] = edges_into(
        graph.n_forward, partial(_logits_slot_grads, model, fin, g_fin))[..., 0]
    for layer in range(model.adapter.config.n_layers):
        # q/k/v slots and the MLP slot of a layer share one contraction over the longer
        # upstream prefix; entries off the edge mask (this layer's heads -> its q/k/v) are
        # dropped when the table is built.
        first, prefix = graph.qkv_slot(layer, 0, 0), graph.mlp_upstream(layer)
        slot_grads = partial(_layer_slot_grads, model, layer, atts[layer], mlps[layer],
                             g_o[layer], g_mlp[layer])
        resid[:, :prefix, first: graph.mlp_slot(layer) + 1] = edges_into(prefix, slot_grads)
    return resid


def _edges_into(prefix: int, slot_grads, delta: torch.Tensor, M: torch.Tensor, aggregation: str,
                chunk: int, blocks: int) -> torch.Tensor:
    """[S, prefix, K]: batch-summed scores of forward nodes [:prefix] into the K slots whose
    own-input gradients ``slot_grads(rows)`` gives, chunk by chunk of examples."""
    B, T = delta.shape[:2]
    total = None
    for lo in range(0, B, chunk):
        sl = slice(lo, lo + chunk)
        # [b, T, K, D] (a split model: gathered), averaged over the path's points
        G = average_blocks(slot_grads(_block_rows(lo, B, chunk, blocks)).to(delta.device), blocks)
        P = torch.einsum("btud,btkd->btuk", delta[sl, :, :prefix], G)
        part = aggregate_positions(P.reshape(P.shape[0], T, -1), M[sl], aggregation).sum(0)
        total = part if total is None else total + part
    return total.reshape(M.shape[1], prefix, -1)


def _block_rows(lo: int, B: int, chunk: int, blocks: int):
    """The trace rows of examples ``lo`` to ``lo + chunk`` in every block of the path (row
    indices on the host index any device's tensors: a split model)."""
    if blocks == 1:
        return slice(lo, lo + chunk)
    examples = torch.arange(lo, min(B, lo + chunk), device="cpu")
    return (torch.arange(blocks, device="cpu")[:, None] * B + examples).reshape(-1)


def _logits_slot_grads(model, fin, g_fin, rows) -> torch.Tensor:
    """[b, T, 1, D] the logits slot's own-input gradient in trace rows ``rows``."""
    ad = model.adapter
    cd = ad.compute_dtype()
    return ad.norm_backward(model.nn, None, "final", fin.x[rows].to(cd),
                            g_fin[rows].to(cd)[:, :, None])


def _layer_slot_grads(model, layer: int, att, mlp, g_o, g_mlp, rows) -> torch.Tensor:
    """[b, T, 3H + 1, D] the own-input gradients of ``layer``'s q/k/v slots and its MLP slot
    in trace rows ``rows``."""
    ad, nn = model.adapter, model.nn
    cd, H, dh = ad.compute_dtype(), ad.config.n_heads, ad.d_head
    g = g_o[rows].to(cd)
    g_heads = g.reshape(-1, g.shape[1], H, dh).transpose(1, 2)
    G_att = ad.attention_slot_grads(nn, layer, att.x[rows].to(cd), g_heads)
    G_mlp = ad.norm_backward(nn, layer, "mlp", mlp.x[rows].to(cd), g_mlp[rows].to(cd)[:, :, None])
    return torch.cat([G_att, G_mlp], dim=2)


def _crossing_scores(model, atts, src, g_o, M, aggregation, blocks: int = 1,
                     clean: slice = slice(None)) -> torch.Tensor:
    """[3, L, H, S, S] batch-summed crossing edge scores from the closed forms.

    In the compute dtype: the closed forms are written without cancellation
    (scores.leave_one_out), so saturated heads need no float64. PEAP-IG: the clean run's
    q/k/v (rows ``clean``) with the head-output gradient averaged over the path's
    ``blocks`` points (the closed forms are linear in it)."""
    ad = model.adapter
    L, H, dh = ad.config.n_layers, ad.config.n_heads, ad.d_head
    B, S, T = M.shape
    cd, dev = M.dtype, M.device
    cross = torch.zeros(3, L, H, S, S, dtype=cd, device=dev)
    for layer in range(L):
        att = atts[layer]
        here = att.q.device   # the layer's device (a split model), where its closed forms run
        G = average_blocks(g_o[layer].to(cd), blocks).reshape(B, T, H, dh).transpose(1, 2)
        P = crossing_values(G, att.q[clean].to(cd), att.k[clean].to(cd), att.v[clean].to(cd),
                            src.q[layer].to(cd), src.k[layer].to(cd), src.v[layer].to(cd),
                            partial(ad.attention_logits, layer=layer),
                            ad.attention_mask(T, layer, here)).to(dev)
        agg = aggregate_pairs(P.transpose(0, 1).reshape(B, 3 * H, T, T), M, aggregation,
                              ad.attention_mask(T, layer, dev))
        cross[:, layer] = agg.sum(0).reshape(3, H, S, S)
    return cross


def _finiteness(model, inp, src, atts, mlps, values, g_fin, g_o, g_mlp, resid, cross) -> list:
    """Finiteness flags (on the device; `FiniteChecks` reads them one batch late)."""
    L, H = model.adapter.config.n_layers, model.adapter.config.n_heads
    heads = partial(_head_names, model.graph, H)
    clean_ok, source_ok = [("input", _finite(inp))], [("input", _finite(src.input))]
    for layer in range(L):
        clean_ok += [(heads(layer), _finite(atts[layer].o, H)),
                     (f"m{layer}", _finite(mlps[layer].out))]
        source_ok += [(heads(layer), _finite(src.o[layer], H)),
                      (f"m{layer}", _finite(src.mlp[layer]))]
    grads_ok = [("the logits' norm", _finite(g_fin))]
    for layer in reversed(range(L)):
        grads_ok += [(f"m{layer}", _finite(g_mlp[layer])), (heads(layer), _finite(g_o[layer], H))]
    return (_labelled(clean_ok, "{} in the clean run")
            + _labelled(source_ok, "{} in the ablation source")
            + [(["the metric"], _finite(values))]
            + _labelled(grads_ok, "the gradient at {}")
            + [(["the residual edge scores"], _finite(resid))]
            + ([] if cross is None else [(["the crossing edge scores"], _finite(cross))]))


def _head_names(graph, H: int, layer: int) -> list[str]:
    """The forward node names of ``layer``'s heads."""
    first = graph.head_node(layer, 0)
    return graph.forward_names[first: first + H]


def _finite(x: torch.Tensor, heads: int | None = None) -> torch.Tensor:
    """[1] all-finite flag of ``x``; with ``heads``, [heads] flags of an x laid out
    [B, T, heads * ...] (head outputs and their gradients [B, T, H*dh])."""
    x = x.detach()
    if heads is None:
        return torch.isfinite(x).all().reshape(1)
    return torch.isfinite(x.reshape(x.shape[0] * x.shape[1], heads, -1)).all(-1).all(0)


def _labelled(checks, template: str) -> list:
    """[(label or per-head labels, flags)] -> [(labels put into ``template``, flags)], one
    label per flag."""
    return [([template.format(lb) for lb in ([label] if isinstance(label, str) else label)], flags)
            for label, flags in checks]
