"""What attention heads do, for hover cards and labs: where they attend (per span pair, from
the data) and which tokens their OV circuit promotes (a logit-lens view of their weights).

Example:
    >>> model = pw.models.load("toy-ioi")
    >>> ds = pw.tasks.get("ioi", n=4, seed=0).dataset(model)
    >>> span_attention(model, ds).shape                              # [L, H, S_query, S_key]
    (4, 4, 9, 9)
    >>> ov_promotions(model, ds, k=2)["a2.h1"]
    {'promotes': [['Thomas', 'park', 6.7...], ['Sarah', 'park', 6.4...]], 'copying': 0.0}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..runtime import remote
from ..engine.ablation import read_activations
from ..arch.base import tensor_of
from ..graph.names import head_name
from ..runtime.model import model_lock
from ..data.dataset import Batch, Dataset

if TYPE_CHECKING:
    from ..runtime.model import Model


def span_attention(model: Model, ds: Dataset, batch_size: int | None = 64) -> np.ndarray:
    """[L, H, S, S] mean attention an average query token of span r pays to all key tokens of
    span s (rows sum to 1 over s), averaged over the dataset's clean prompts."""
    ad = model.adapter
    L, H, S = ad.config.n_layers, ad.config.n_heads, len(ds.schema)
    total = torch.zeros(L, H, S, S, dtype=torch.float64)
    queries = torch.zeros(S, dtype=torch.float64)
    for batch in ds.batches(batch_size, device=model.device):
        with model_lock(model):   # the batch's one trace (read_activations holds it as well)
            part_total, part_queries = remote.run(model, span_attention_sums, model, batch)
        total += part_total.cpu()
        queries += part_queries.cpu()
    return (total / queries.clamp(min=1)[None, None, :, None]).numpy()


def span_attention_sums(model: Model, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Job: ([L, H, S, S] attention from query spans to key spans summed over the batch's
    query tokens, [S] query tokens per span)."""
    ad = model.adapter
    batch = remote.batch_on(batch, model.device)
    acts = read_activations(model, batch.clean_ids)
    onehot = batch.span_onehot(torch.float64)                              # [B, S, T]
    total = []
    for layer in range(ad.config.n_layers):
        p = ad.attention_pattern(acts.q[layer], acts.k[layer], layer).to(torch.float64)
        to_span = torch.einsum("bhqk,bsk->bhqs", p, onehot)                # key tokens summed
        total.append(torch.einsum("bhqs,brq->hrs", to_span, onehot))
    return torch.stack(total), onehot.sum((0, 2))


@torch.no_grad()
def ov_promotions(model: Model, ds: Dataset | None = None, k: int = 5,
                  token_ids: Sequence[int] | None = None) -> dict:
    """For every head ``a{L}.h{H}``, the output tokens its OV circuit promotes most.

    Each input token's embedding goes through the head's own norm, W_V and W_O and is unembedded
    (a weight-based logit lens, no positions, other components ignored). Scores are centred per
    input token; an output token's score is its best over input tokens. Inputs and outputs are the
    tokens of ``ds`` (or ``token_ids``; without either, the whole vocabulary up to 4096 tokens).

    Returns ``{head: {"promotes": [[output, from_input, score], ...] (k best), "copying": the
    fraction of input tokens whose most promoted output is the token itself}}``.
    """
    hf, tok = model.hf, model.tokenizer
    if token_ids is None:
        if ds is not None:
            ids = {i for e in ds.examples for i in e.clean_ids}
            ids |= {e.correct_id for e in ds.examples} | {e.incorrect_id for e in ds.examples}
            token_ids = sorted(ids)
        else:
            token_ids = list(range(min(hf.get_input_embeddings().weight.shape[0], 4096)))
    names = tok.convert_ids_to_tokens(list(token_ids)) if tok is not None else list(map(str, token_ids))
    best, best_in, copying = remote.run(model, ov_scores, model, torch.as_tensor(token_ids))
    out: dict = {}
    L, H = best.shape[:2]
    for layer in range(L):
        for h in range(H):
            top = torch.topk(best[layer, h], min(k, len(names))).indices.tolist()
            out[head_name(layer, h)] = {
                "promotes": [[names[j], names[int(best_in[layer, h, j])],
                              round(float(best[layer, h, j]), 4)] for j in top],
                "copying": round(float(copying[layer, h]), 4),
            }
    return out


@torch.no_grad()
def ov_scores(model: Model, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Job: each head's centred OV logit-lens scores over the tokens ``ids``, reduced: (best
    score of each output token [L, H, n], the input token giving it [L, H, n], the fraction of
    inputs whose top output is themselves [L, H]). Reads the weights where the model is."""
    ad, hf = model.adapter, model.hf
    dev = tensor_of(hf.get_input_embeddings(), "weight").device
    unemb = tensor_of(hf.get_output_embeddings(), "weight")[ids.to(dev)]  # [n, D]
    bests, best_ins, copyings = [], [], []
    for layer in range(ad.config.n_layers):
        z = ov_outputs(model, layer, ids)                                 # [H, n, D]
        logits = torch.einsum("hnD,mD->hnm", z, unemb.to(z.device, z.dtype)).float()
        logits = logits - logits.mean(-1, keepdim=True)                   # centre per input
        best, best_in = logits.max(1)                                     # [H, m]
        copying = (logits.argmax(-1) == torch.arange(len(ids), device=logits.device)
                   ).float().mean(-1)
        bests.append(best.double().to(dev))
        best_ins.append(best_in.to(dev))
        copyings.append(copying.double().to(dev))
    return torch.stack(bests), torch.stack(best_ins), torch.stack(copyings)


def token_rows(model: Model, layer: int, ids: torch.Tensor, which: int,
               weights: tuple[torch.Tensor, torch.Tensor | None] | None = None) -> torch.Tensor:
    """[H, n, dh] each query head's q (``which`` 0), k (1) or v (2) of the tokens ``ids`` seen
    alone: each token's input embedding (as the model's embedding module gives it, Gemma's
    scale included; no position) through ``layer``'s attention-input norm and the head's own
    rows of the projection (a KV group's k/v rows for each of its query heads), bias included;
    in the compute dtype, on the projection's device. ``weights``: `Adapter.qkv_weights` of the
    layer in the compute dtype, when already at hand."""
    ad, hf = model.adapter, model.hf
    cd = ad.compute_dtype()
    embed = hf.get_input_embeddings()
    e = embed(ids.to(tensor_of(embed, "weight").device))
    normed = ad.norm(hf, layer, "attn")(e.to(ad.model_dtype)).to(cd)
    W, b = ad.qkv_weights(layer, cd) if weights is None else weights        # [3, H, dh, D]
    y = torch.einsum("nD,hdD->hnd", normed.to(W.device), W[which])
    return y if b is None else y + b[which][:, None]


def ov_outputs(model: Model, layer: int, ids: torch.Tensor, final_norm: bool = False,
               weights: tuple[torch.Tensor, torch.Tensor | None] | None = None) -> torch.Tensor:
    """[H, n, D] what each head of ``layer`` writes when it attends to token s of ``ids`` alone
    (its OV circuit on the token's embedding): the head's value (`token_rows`) through its slice
    of the output projection (the projection's bias, shared by all heads, left out), then the
    norm after the attention where the family has one (Gemma-2) and, with ``final_norm``, the
    model's final norm, each on this head's output alone. Compute dtype.

    >>> model = pw.models.load("toy-ioi")
    >>> ov_outputs(model, 0, torch.tensor([5, 7])).shape                # [heads, tokens, d_model]
    torch.Size([4, 2, 64])
    """
    ad, hf = model.adapter, model.hf
    md, cd = ad.model_dtype, ad.compute_dtype()
    v = token_rows(model, layer, ids, 2, weights)
    z = torch.einsum("hnd,hdD->hnD", v, ad.W_O(layer).to(cd).to(v.device))
    post = ad.post_attention_norm(hf, layer)
    if post is not None:
        z = post(z.to(md)).to(cd)
    if final_norm:
        z = ad.norm(hf, None, "final")(z.to(md)).to(cd)
    return z
