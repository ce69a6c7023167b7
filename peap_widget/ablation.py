"""Ablation sources: what a component's output is replaced by when it is left out.

``counterfactual``: the run on each example's paired corrupted prompt (same length).
``mean``: per span type, the mean over reference examples of the activation at all tokens of that
span (so lengths may vary). ``zero``: zeros. Each gives, per batch, a `SourceValues` holding
every forward node's output and every head's q/k/v in the source.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .data import Batch, Dataset
from .errors import PeapError
from .metrics import last_token_logits

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


def read_activations(model, ids: torch.Tensor, lengths: torch.Tensor | None = None, metric=None,
                     batch: Batch | None = None) -> SourceValues:
    """One gradient-free trace over ``ids`` reading every node output and q/k/v."""
    ad, nn = model.adapter, model.nn
    got: dict = {"o": [], "mlp": [], "q": [], "k": [], "v": []}
    with torch.no_grad(), nn.trace(ids, remote=model.remote):
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


def counterfactual_values(model, batch: Batch, metric) -> SourceValues:
    return read_activations(model, batch.corrupted_ids, batch.lengths, metric, batch)


def zero_values(model, batch: Batch) -> SourceValues:
    c, dh = model.adapter.config, model.adapter.d_head
    B, T = batch.clean_ids.shape
    kw = {"dtype": model.dtype, "device": model.device}
    L = c.n_layers
    z_res = torch.zeros(B, T, c.d_model, **kw)
    z_o = torch.zeros(B, T, c.n_heads * dh, **kw)
    z_h = torch.zeros(B, c.n_heads, T, dh, **kw)
    return SourceValues(z_res, [z_o] * L, [z_res] * L, [z_h] * L, [z_h] * L, [z_h] * L)


def ablation_sources(model, ds: Dataset, ablation: str, batch_size: int | None = None,
                     reference: Dataset | None = None, metric=None):
    """Check the ablation against the data and return ``batch -> SourceValues``.

    Mean ablation computes its span means over ``reference`` (default ``ds``) here, once; the
    counterfactual source also records ``metric`` of the corrupted run when given."""
    if ablation not in ABLATIONS:
        raise PeapError(f"unknown ablation {ablation!r}; use one of {ABLATIONS}")
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


class SpanMeans:
    """Per-span-type means of every node output and q/k/v over a reference dataset."""

    def __init__(self, model, reference: Dataset, batch_size: int | None = None):
        self.spans = list(reference.schema.spans)
        S = len(self.spans)
        sums = None
        count = torch.zeros(S, dtype=torch.float64)
        for batch in reference.batches(batch_size, device=model.device):
            acts = read_activations(model, batch.clean_ids)
            M = batch.span_onehot(torch.float64)                       # [B, S, T]
            count += M.sum((0, 2)).cpu()
            part = {
                "input": torch.einsum("bst,btd->sd", M, acts.input.double()),
                "o": torch.stack([torch.einsum("bst,btd->sd", M, x.double()) for x in acts.o]),
                "mlp": torch.stack([torch.einsum("bst,btd->sd", M, x.double()) for x in acts.mlp]),
                **{n: torch.stack([torch.einsum("bst,bhtd->shd", M, x.double())
                                   for x in getattr(acts, n)]) for n in "qkv"},
            }
            sums = part if sums is None else {n: sums[n] + part[n] for n in sums}
        self.count = count
        denom = count.clamp_min(1).to(model.device)
        self.means = {
            "input": sums["input"] / denom[:, None],
            "o": sums["o"] / denom[None, :, None],
            "mlp": sums["mlp"] / denom[None, :, None],
            **{n: sums[n] / denom[None, :, None, None] for n in "qkv"},
        }
        self.means = {n: x.to(model.dtype) for n, x in self.means.items()}

    def values(self, batch: Batch) -> SourceValues:
        present = torch.unique(batch.span_ids[batch.span_ids >= 0]).cpu()
        empty = [self.spans[i] for i in present.tolist() if self.count[i] == 0]
        if empty:
            raise PeapError(f"mean ablation: spans {empty} have tokens in the data but none in the "
                            "reference examples, so they have no mean")
        idx = batch.span_ids.clamp_min(0)                                # pads: any finite value
        m = self.means
        L = m["o"].shape[0]
        per_head = {n: [m[n][layer][idx].permute(0, 2, 1, 3) for layer in range(L)] for n in "qkv"}
        return SourceValues(m["input"][idx], [m["o"][layer][idx] for layer in range(L)],
                            [m["mlp"][layer][idx] for layer in range(L)], **per_head)
