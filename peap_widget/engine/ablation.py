"""Ablation sources: what a component's output is replaced by when it is left out.

``counterfactual``: the run on each example's paired corrupted prompt (same length).
``mean``: per span type, the mean over reference examples of the activation at all tokens of that
span (so lengths may vary). ``zero``: zeros. Each gives, per batch, a `SourceValues` holding
every forward node's output and every head's q/k/v in the source.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..runtime import remote
from ..data.dataset import Batch, Dataset
from ..errors import PeapError
from .metrics import Metric, last_token_logits
from ..runtime.model import model_lock
from ..arch.base import Adapter

if TYPE_CHECKING:
    from ..runtime.model import Model

ABLATIONS = ("counterfactual", "mean", "zero")


@dataclass
class SourceValues:
    input: torch.Tensor            # [B, T, D]
    o: list[torch.Tensor]          # per layer [B, T, H*dh] heads' outputs before W_O
    mlp: list[torch.Tensor]        # per layer [B, T, D]
    q: list[torch.Tensor]          # per layer [B, H, T, dh]
    k: list[torch.Tensor]
    v: list[torch.Tensor]
    metric: torch.Tensor | None = None   # [B] metric of the source run (counterfactual only)
    heads: object = None   # per layer [B, T, H, D] heads' outputs z*_h, where not from ``o``

    def head_outputs(self, adapter: Adapter, layer: int, W_O: torch.Tensor,
                     dtype: torch.dtype) -> torch.Tensor:
        """[B, T, H, D] the source's heads' outputs z*_h (with its own post-norm factor)."""
        if self.heads is not None:
            return self.heads[layer].to(dtype)
        return adapter.head_outputs(layer, self.o[layer].to(dtype), W_O)


def head_deltas(adapter: Adapter, src: SourceValues, layer: int, o: torch.Tensor,
                W_O: torch.Tensor) -> torch.Tensor:
    """[B, T, H, D] z*_h - z_h for the heads of ``layer``, given this run's heads' outputs ``o``
    [B, T, H*dh] (compute dtype). Without a post-norm z is linear in o: one projection of the
    difference."""
    if src.heads is None and not adapter.post_norms:
        return adapter.head_outputs(layer, src.o[layer].to(o.dtype) - o, W_O)
    return src.head_outputs(adapter, layer, W_O, o.dtype) - adapter.head_outputs(layer, o, W_O)


def read_activations(model: Model, ids: torch.Tensor, lengths: torch.Tensor | None = None,
                     metric: Metric | None = None, batch: Batch | None = None) -> SourceValues:
    """One gradient-free trace over ``ids`` reading every node output and q/k/v (holding
    ``model.lock``)."""
    ad, nn = model.adapter, model.nn
    got: dict = {"o": [], "mlp": [], "q": [], "k": [], "v": []}
    with model_lock(model), torch.no_grad(), nn.trace(ids):
        got["input"] = ad.read_input(nn).detach()
        for layer in range(ad.config.n_layers):
            att = ad.read_attention(nn, layer)
            got["o"].append(att.o.detach())
            got["q"].append(att.q)
            got["k"].append(att.k)
            got["v"].append(att.v)
            got["mlp"].append(ad.read_mlp(nn, layer).out.detach())
        if metric is not None:
            logits = ad.read_final(nn).logits
            got["metric"] = metric(last_token_logits(logits, lengths), batch.correct,
                                   batch.incorrect).detach()
    return SourceValues(**got)


def counterfactual_values(model: Model, batch: Batch, metric: Metric | None) -> SourceValues:
    return read_activations(model, batch.corrupted_ids, batch.lengths, metric, batch)


def zero_values(model: Model, batch: Batch) -> SourceValues:
    c, dh = model.adapter.config, model.adapter.d_head
    B, T = batch.clean_ids.shape
    kw = {"dtype": model.adapter.compute_dtype(), "device": model.device}
    L = c.n_layers
    z_res = torch.zeros(B, T, c.d_model, **kw)
    z_o = torch.zeros(B, T, c.n_heads * dh, **kw)
    z_h = torch.zeros(B, c.n_heads, T, dh, **kw)
    return SourceValues(z_res, [z_o] * L, [z_res] * L, [z_h] * L, [z_h] * L, [z_h] * L)


def ablation_sources(model: Model, ds: Dataset, ablation: str, batch_size: int | None = None,
                     reference: Dataset | None = None,
                     metric: Metric | None = None) -> Callable[[Batch], SourceValues]:
    """Check the ablation against the data and return ``batch -> SourceValues``.

    Mean ablation computes its span means over ``reference`` (default ``ds``) here, once; the
    counterfactual source also records ``metric`` of the corrupted run when given."""
    if ablation not in ABLATIONS:
        raise PeapError(f"unknown ablation {ablation!r}; use one of {ABLATIONS}")
    ds.require_model(model)
    if reference is not None:
        reference.require_model(model)
    if ablation == "counterfactual":
        ds.require_counterfactuals()
        return lambda batch: counterfactual_values(model, batch, metric)
    if ablation == "zero":
        return lambda batch: zero_values(model, batch)
    ref = ds if reference is None else reference
    if ref.schema.spans != ds.schema.spans:
        raise PeapError(f"the reference dataset's schema {list(ref.schema.spans)} differs from "
                        f"the data's {list(ds.schema.spans)}")
    return SpanMeans(model, ref, batch_size).values


def span_sums(model: Model, batch: Batch) -> dict:
    """Job: per span type, the float64 sums over ``batch``'s tokens of every node output and
    q/k/v (and, with a norm after the attention, of the heads' outputs z_h themselves), and
    ``count`` [S], the tokens per span."""
    ad = model.adapter
    batch = remote.batch_on(batch, model.device)
    acts = read_activations(model, batch.clean_ids)
    M = batch.span_onehot(torch.float64)                               # [B, S, T]
    part = {
        "count": M.sum((0, 2)),
        "input": torch.einsum("bst,btd->sd", M, acts.input.double()),
        "o": torch.stack([torch.einsum("bst,btd->sd", M, x.double()) for x in acts.o]),
        "mlp": torch.stack([torch.einsum("bst,btd->sd", M, x.double()) for x in acts.mlp]),
        **{n: torch.stack([torch.einsum("bst,bhtd->shd", M, x.double())
                           for x in getattr(acts, n)]) for n in "qkv"},
    }
    if ad.post_norms:   # a head's output is not linear in o there: average z_h itself
        part["heads"] = torch.stack([
            torch.einsum("bst,bthd->shd", M,
                         ad.head_outputs(layer, o.double(), ad.W_O(layer).double()))
            for layer, o in enumerate(acts.o)])
    return part


class SpanMeans:
    """Per-span-type means of every node output and q/k/v over a reference dataset."""

    def __init__(self, model: Model, reference: Dataset, batch_size: int | None = None):
        self.spans = list(reference.schema.spans)
        S = len(self.spans)
        ad = model.adapter
        sums = None
        count = torch.zeros(S, dtype=torch.float64)
        for batch in reference.batches(batch_size, device=model.device):
            part = remote.run(model, span_sums, model, batch)
            count += part.pop("count").cpu()
            sums = part if sums is None else {n: sums[n] + part[n] for n in sums}
        self.count = count
        denom = count.clamp_min(1).to(model.device)
        self.means = {
            "input": sums["input"] / denom[:, None],
            "o": sums["o"] / denom[None, :, None],
            "mlp": sums["mlp"] / denom[None, :, None],
            **{n: sums[n] / denom[None, :, None, None] for n in "qkv"},
        }
        if "heads" in sums:
            self.means["heads"] = sums["heads"] / denom[None, :, None, None]
        cd = ad.compute_dtype()
        self.means = {n: x.to(model.dtype if n in ("input", "o", "mlp") else cd)
                      for n, x in self.means.items()}

    def values(self, batch: Batch) -> SourceValues:
        present = torch.unique(batch.span_ids[batch.span_ids >= 0]).cpu()
        empty = [self.spans[i] for i in present.tolist() if self.count[i] == 0]
        if empty:
            raise PeapError(f"mean ablation: spans {empty} have tokens in the data but none in the "
                            "reference examples, so they have no mean")
        idx = batch.span_ids.clamp_min(0)                                # pads: any finite value
        m = {n: x.to(idx.device) for n, x in self.means.items()}   # a remote job's device
        L = m["o"].shape[0]
        per_head = {n: [m[n][layer][idx].permute(0, 2, 1, 3) for layer in range(L)] for n in "qkv"}
        heads = _Gathered(m["heads"], idx) if "heads" in m else None
        return SourceValues(m["input"][idx], [m["o"][layer][idx] for layer in range(L)],
                            [m["mlp"][layer][idx] for layer in range(L)], **per_head, heads=heads)


class _Gathered:
    """Per-layer span means gathered to positions on demand (``[layer]`` -> [B, T, ...]): one
    layer's heads' outputs at a time, never all layers' at once."""

    def __init__(self, means: torch.Tensor, idx: torch.Tensor):
        self.means, self.idx = means, idx

    def __getitem__(self, layer: int) -> torch.Tensor:
        return self.means[layer][self.idx]
