"""What attention heads do, for hover cards and labs: where they attend (per span pair, from
the data) and which tokens their OV circuit promotes (a logit-lens view of their weights).

Example:
    >>> att = pw.analysis.heads.span_attention(model, ds)           # [L, H, S_query, S_key]   # doctest: +SKIP
    >>> pw.analysis.heads.ov_promotions(model, ds, k=5)["a2.h1"]                              # doctest: +SKIP
    {'promotes': [['ĠMary', 'ĠMary', 7.1], ...], 'copying': 0.92}
"""

from __future__ import annotations

import numpy as np
import torch

from ..runtime import remote
from ..engine.ablation import read_activations
from ..arch.base import tensor_of
from ..runtime.model import model_lock


def span_attention(model, ds, batch_size: int | None = 64) -> np.ndarray:
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


def span_attention_sums(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
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
def ov_promotions(model, ds=None, k: int = 5, token_ids=None) -> dict:
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
            out[f"a{layer}.h{h}"] = {
                "promotes": [[names[j], names[int(best_in[layer, h, j])],
                              round(float(best[layer, h, j]), 4)] for j in top],
                "copying": round(float(copying[layer, h]), 4),
            }
    return out


@torch.no_grad()
def ov_scores(model, ids: torch.Tensor):
    """Job: each head's centred OV logit-lens scores over the tokens ``ids``, reduced: (best
    score of each output token [L, H, n], the input token giving it [L, H, n], the fraction of
    inputs whose top output is themselves [L, H]). Reads the weights where the model is."""
    ad, hf = model.adapter, model.hf
    dev = tensor_of(hf.get_input_embeddings(), "weight").device
    emb = tensor_of(hf.get_input_embeddings(), "weight")[ids.to(dev)]     # [n, D]
    unemb = tensor_of(hf.get_output_embeddings(), "weight")[ids.to(dev)]  # [n, D]
    bests, best_ins, copyings = [], [], []
    for layer in range(ad.config.n_layers):
        normed = ad.norm(hf, layer, "attn")(emb)
        per_slot = normed[None, :, None, None, :].expand(1, -1, 3, ad.config.n_heads, -1)
        v = ad.qkv_from_slots(hf, layer, per_slot)[2][0]                  # [H, n, dh]
        w_o = ad.W_O(layer).to(v.dtype)                                   # [H, dh, D]
        logits = torch.einsum("hnd,hdD,mD->hnm", v, w_o, unemb.to(v.dtype)).float()
        logits = logits - logits.mean(-1, keepdim=True)                   # centre per input
        best, best_in = logits.max(1)                                     # [H, m]
        copying = (logits.argmax(-1) == torch.arange(len(ids), device=dev)).float().mean(-1)
        bests.append(best.double())
        best_ins.append(best_in)
        copyings.append(copying.double())
    return torch.stack(bests), torch.stack(best_ins), torch.stack(copyings)
