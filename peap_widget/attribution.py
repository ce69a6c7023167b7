"""PEAP and EAP edge scores over a dataset, computed inside nnsight traces.

Per batch: one gradient-free run of the ablation source (counterfactual prompts; span means and
zeros need none), then one clean run with one backward pass. Inside that trace the scores of
DESIGN.md section 4 are formed in closed form, vectorised over heads, positions and examples, and
only span-aggregated sums leave it.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

from .ablation import ABLATIONS, SpanMeans, SourceValues, counterfactual_values, zero_values
from .data import Batch, Dataset
from .errors import PeapError
from .metrics import last_token_logits, resolve_metric
from .result import AttributionResult
from .scores import AGGREGATIONS, aggregate_pairs, aggregate_positions, crossing_values

METHODS = ("peap", "eap")
EAP_SPAN = "all"


@contextmanager
def frozen_parameters(module: torch.nn.Module):
    """No parameter gradients (we only need activation gradients); flags restored after."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def attribute(model, ds: Dataset, method: str = "peap", ablation: str = "counterfactual",
              aggregation: str = "sum", metric="logit_diff", batch_size: int | None = None,
              reference: Dataset | None = None, progress: bool = True) -> AttributionResult:
    """Score every edge of the graph on ``ds``.

    Args:
        model: from `load_model`.
        ds: a `Dataset` tokenized for this model.
        method: ``"peap"`` (positional: residual edges per span plus crossing q/k/v edges) or
            ``"eap"`` (residual edges over one span ``"all"`` covering the prompt).
        ablation: ``"counterfactual"`` (each example's corrupted prompt), ``"mean"`` (per span
            type over ``reference``, default ``ds``) or ``"zero"``.
        aggregation: within a span, ``"sum"`` (PEAP's Eq. 8), ``"mean"`` (sum over the number
            of real edges: the span's length, or for a crossing edge its (query, key) pairs with
            key <= query) or ``"max_abs"`` (the real edge of largest |score|, sign kept). Then
            the mean over examples.
        metric: ``"logit_diff"``, ``"prob_diff"`` or a callable (see `peap_widget.metrics`).
        batch_size: examples per trace (None: all at once).
        reference: the examples mean ablation averages over.
        progress: show a tqdm progress bar over batches.

    Returns:
        `AttributionResult`; ``res.edges`` is the edge table.

    Example:
        >>> res = attribute(model, ds, method="peap", ablation="counterfactual")  # doctest: +SKIP
        >>> res.top(10)                                                          # doctest: +SKIP
    """
    if method not in METHODS:
        raise PeapError(f"unknown method {method!r}; use one of {METHODS}")
    if ablation not in ABLATIONS:
        raise PeapError(f"unknown ablation {ablation!r}; use one of {ABLATIONS}")
    if aggregation not in AGGREGATIONS:
        raise PeapError(f"unknown aggregation {aggregation!r}; use one of {AGGREGATIONS}")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise PeapError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    metric_name, metric_fn = resolve_metric(metric)
    if ablation == "counterfactual":
        ds.require_counterfactuals()
    positional = method == "peap"
    spans = list(ds.schema.spans) if positional else [EAP_SPAN]
    graph, cfg = model.graph, model.adapter.config
    S = len(spans)
    resid = torch.zeros(S, graph.n_forward, graph.n_backward, dtype=torch.float64)
    cross = torch.zeros(3, cfg.n_layers, cfg.n_heads, S, S, dtype=torch.float64) if positional else None
    clean_metric, source_metric = [], []

    means = None
    if ablation == "mean":
        ref = ds if reference is None else reference
        if ref.schema.spans != ds.schema.spans:
            raise PeapError(f"the reference dataset's schema {list(ref.schema.spans)} differs from "
                            f"the data's {list(ds.schema.spans)}")
        with frozen_parameters(model.hf):
            means = SpanMeans(model, ref, batch_size)

    from tqdm.auto import tqdm

    batches = list(ds.batches(batch_size, device=model.device))
    with frozen_parameters(model.hf):
        for batch in tqdm(batches, desc=f"{method.upper()} attribution", unit="batch",
                          disable=not progress):
            if ablation == "counterfactual":
                src = counterfactual_values(model, batch, metric_fn)
                source_metric.append(src.metric.double().cpu())
            elif ablation == "mean":
                src = means.values(batch)
            else:
                src = zero_values(model, batch)
            out = _score_batch(model, batch, src, aggregation, metric_fn, positional)
            resid += out["resid"].cpu()
            if positional:
                cross += out["cross"].cpu()
            clean_metric.append(out["metric"].double().cpu())

    n = len(ds)
    resid /= n
    if positional:
        cross /= n
    clean = torch.cat(clean_metric).numpy()
    source = torch.cat(source_metric).numpy() if source_metric else None
    settings = {"method": method, "ablation": ablation, "aggregation": aggregation,
                "metric": metric_name, "batch_size": batch_size, "n_examples": n,
                "model": model.name}
    return AttributionResult.from_arrays(graph, spans, resid.numpy(),
                                         None if cross is None else cross.numpy(), settings,
                                         clean, source, ds.schema)


def _score_batch(model, batch: Batch, src: SourceValues, aggregation: str, metric_fn,
                 positional: bool) -> dict:
    """One clean trace with one backward pass; returns batch-summed span-aggregated scores."""
    ad, nn, graph = model.adapter, model.nn, model.graph
    cfg, dh = ad.config, ad.d_head
    L, H = cfg.n_layers, cfg.n_heads
    B, T = batch.clean_ids.shape
    cd = _compute_dtype(model.dtype)
    if positional:
        M = batch.span_onehot(cd)                                           # [B, S, T]
    else:
        M = (batch.span_ids >= 0)[:, None, :].to(cd)                        # one span: the prompt
    S = M.shape[1]
    W_O = [ad.W_O(layer).to(cd) for layer in range(L)]
    out: dict = {}
    with nn.trace(batch.clean_ids, remote=model.remote):
        inp = ad.read_input(nn)
        inp.requires_grad_(True)
        deltas = [(src.input.to(cd) - inp.detach().to(cd))[:, :, None]]   # z* - z per node
        atts, mlps = [], []
        for layer in range(L):
            att = ad.read_attention(nn, layer)
            atts.append(att)
            d_o = (src.o[layer].to(cd) - att.o.detach().to(cd)).reshape(B, T, H, dh)
            deltas.append(torch.einsum("bthd,hdD->bthD", d_o, W_O[layer]))
            mlp = ad.read_mlp(nn, layer)
            mlps.append(mlp)
            deltas.append((src.mlp[layer].to(cd) - mlp.out.detach().to(cd))[:, :, None])
        fin = ad.read_final(nn)
        values = metric_fn(last_token_logits(fin.logits, batch.lengths), batch.correct,
                           batch.incorrect)
        g_o, g_qkv, g_mlp = [None] * L, [None] * L, [None] * L
        with values.sum().backward():
            g_fin = ad.read_final_grad(fin)
            for layer in reversed(range(L)):
                g_mlp[layer] = ad.read_mlp_grad(mlps[layer])
                g_o[layer], g_qkv[layer] = ad.read_attention_grads(atts[layer])

        # Everything below runs on saved values; only the aggregates leave the trace.
        delta = torch.cat(deltas, dim=2)                                    # [B, T, Nf, D]
        resid = torch.zeros(S, graph.n_forward, graph.n_backward, dtype=cd, device=delta.device)

        def residual(prefix: int, G: torch.Tensor) -> torch.Tensor:
            """[S, prefix, K] batch-summed scores of nodes [:prefix] into K slots (grads G)."""
            P = torch.einsum("btud,btkd->btuk", delta[:, :, :prefix], G)  # per-position edges
            agg = aggregate_positions(P.reshape(B, T, -1), M, aggregation)
            return agg.sum(0).reshape(S, prefix, G.shape[2])

        G_fin = ad.slot_grads_through_norm(nn, None, "final", fin.x.to(cd),
                                           g_fin.to(cd)[:, :, None])
        resid[:, :, graph.logits_slot] = residual(graph.n_forward, G_fin)[..., 0]
        cross = torch.zeros(3, L, H, S, S, dtype=cd, device=delta.device) if positional else None
        for layer in range(L):
            att = atts[layer]
            G_qkv = ad.qkv_grads_to_norm_space(layer, g_qkv[layer].to(cd)).flatten(2, 3)
            G_att = ad.slot_grads_through_norm(nn, layer, "attn", att.x.to(cd), G_qkv)
            G_mlp = ad.slot_grads_through_norm(nn, layer, "mlp", mlps[layer].x.to(cd),
                                               g_mlp[layer].to(cd)[:, :, None])
            # q/k/v slots and the MLP slot of this layer share one contraction over the longer
            # upstream prefix; entries off the edge mask (this layer's heads -> its q/k/v) are
            # dropped when the table is built.
            first = graph.qkv_slot(layer, 0, 0)
            prefix = graph.mlp_upstream(layer)
            resid[:, :prefix, first: graph.mlp_slot(layer) + 1] = residual(
                prefix, torch.cat([G_att, G_mlp], dim=2))
            if positional:
                q, k, v = att.q.to(cd), att.k.to(cd), att.v.to(cd)
                o = att.o.detach().to(cd).reshape(B, T, H, dh).transpose(1, 2)
                G = g_o[layer].to(cd).reshape(B, T, H, dh).transpose(1, 2)
                A = ad.attention_pattern(q, k, layer)
                P = crossing_values(A, G, q, k, v, o, src.q[layer].to(cd), src.k[layer].to(cd),
                                    src.v[layer].to(cd),
                                    lambda qq, kk, _l=layer: ad.attention_logits(qq, kk, _l))
                agg = aggregate_pairs(P.transpose(0, 1).reshape(B, 3 * H, T, T), M, aggregation)
                cross[:, layer] = agg.sum(0).reshape(3, H, S, S)
        out["resid"] = resid.to(torch.float64)
        out["cross"] = None if cross is None else cross.to(torch.float64)
        out["metric"] = values.detach()
    return out
