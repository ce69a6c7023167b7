"""Closed-form edge scores and span aggregation: pure tensor code, no model access.

Shapes: B batch, T positions, S spans, H heads, dh head size, N flattened edges.
``M`` is the [B, S, T] span indicator (pads belong to no span).
"""

from __future__ import annotations

import torch

AGGREGATIONS = ("sum", "mean", "max_abs")


def signed_max_abs(x: torch.Tensor, keep: torch.Tensor, dim: int) -> torch.Tensor:
    """Along ``dim``, the entry of ``x`` with the largest |value| among those where ``keep``
    (broadcastable to x), sign kept; 0 where nothing is kept."""
    x, keep = torch.broadcast_tensors(x, keep)
    mag = torch.where(keep, x.abs(), torch.full_like(x, -1.0))
    idx = mag.argmax(dim=dim, keepdim=True)
    picked = torch.gather(torch.where(keep, x, torch.zeros_like(x)), dim, idx)
    return picked.squeeze(dim)


def aggregate_positions(P: torch.Tensor, M: torch.Tensor, how: str) -> torch.Tensor:
    """Per-position edge values [B, T, N] -> per-span [B, S, N]."""
    if how == "max_abs":
        return signed_max_abs(P[:, None], M[..., None].bool(), dim=2)
    out = torch.bmm(M, P)
    if how == "mean":
        out = out / M.sum(-1, keepdim=True).clamp_min(1)
    return out


def pair_counts(M: torch.Tensor) -> torch.Tensor:
    """[B, S_query, S_key]: how many (t, t') with t in s_q, t' in s_k, t' <= t."""
    T = M.shape[-1]
    causal = torch.ones(T, T, dtype=M.dtype, device=M.device).tril()
    return M @ causal @ M.transpose(1, 2)


def aggregate_pairs(P: torch.Tensor, M: torch.Tensor, how: str) -> torch.Tensor:
    """Per-(query, key) values [B, H, T, T] -> per-(query span, key span) [B, H, S, S].

    Entries with key after query must already be 0 in ``P`` for sum/mean; max_abs masks them."""
    if how == "max_abs":
        T = P.shape[-1]
        causal = torch.ones(T, T, dtype=torch.bool, device=P.device).tril()
        Mb = M.bool()
        keep = (Mb[:, :, None, :, None] & Mb[:, None, :, None, :]) & causal  # [B, Sq, Sk, T, T]
        x = P[:, :, None, None]                                              # [B, H, 1, 1, T, T]
        return signed_max_abs(x.flatten(-2), keep[:, None].flatten(-2), dim=-1)
    out = M[:, None] @ P @ M.transpose(1, 2)[:, None]
    if how == "mean":
        out = out / pair_counts(M)[:, None].clamp_min(1)
    return out


def logit_change_weight(A: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """c / (1 + c) with c = A (exp(delta) - 1): how far one attention weight's change moves the
    output from o_t towards v_t' when only score (t, t') shifts by ``delta``.

    Written so neither branch overflows: for delta > 0 divide through by exp(delta)."""
    pos = delta > 0
    e_neg = torch.exp(torch.where(pos, -delta, delta))          # exp(-|delta|) in (0, 1]
    # delta > 0: A (1 - e^-d) / ((1 - A) e^-d + A);   delta <= 0: A (e^d - 1) / ((1 - A) + A e^d)
    num = torch.where(pos, -torch.expm1(-delta), torch.expm1(delta)) * A
    den = torch.where(pos, (1 - A) * e_neg + A, (1 - A) + A * e_neg)
    return torch.where(A > 0, num / den.clamp_min(torch.finfo(A.dtype).tiny), torch.zeros_like(A))


def crossing_values(A, G, q, k, v, o, q_src, k_src, v_src, logits_fn):
    """Per-(query t, key t') real-edge scores of every head for kinds q, k, v: [3, B, H, T, T].

    A: attention pattern [B, H, T, T]; G: gradient at each head's output o_t [B, H, T, dh];
    q, k, v, o: this run's [B, H, T, dh]; *_src: the ablation source's; ``logits_fn(q, k)`` gives
    the model's attention scores [B, H, T, T] for any (q, k).

        v:     (zhat - z) . g = A[t,t'] (v*_t' - v_t') . G_t
        k, q:  c / (1 + c) (v_t' - o_t) . G_t,  c = A[t,t'] (exp(delta) - 1)
    """
    Gv = G @ v.transpose(-1, -2)                      # [B, H, T, T]  G_t . v_t'
    Go = (G * o).sum(-1, keepdim=True)                # [B, H, T, 1]  G_t . o_t
    toward = Gv - Go                                  # (v_t' - o_t) . G_t
    base = logits_fn(q, k)
    P_v = A * (G @ (v_src - v).transpose(-1, -2))
    P_k = logit_change_weight(A, logits_fn(q, k_src) - base) * toward
    P_q = logit_change_weight(A, logits_fn(q_src, k) - base) * toward
    return torch.stack([P_q, P_k, P_v])


def mixed_attention(q, k, v, q_src, k_src, v_src, Cq, Ck, Cv, logits_fn, pattern_fn):
    """Heads' outputs [B, H, T, dh] when each (query t, key t') pair uses this run's q_t, k_t',
    v_t' where its crossing edge of that kind is in the circuit (``C*[b, h, t, t']`` True) and the
    ablation source's otherwise. ``C*`` None means every pair of that kind is in.

    ``logits_fn(q, k)`` gives the model's scores; ``pattern_fn(scores)`` its masked softmax."""
    if Cq is None and Ck is None:
        scores = logits_fn(q, k)
    else:
        Cq = torch.ones_like(Ck) if Cq is None else Cq
        Ck = torch.ones_like(Cq) if Ck is None else Ck
        scores = torch.where(Cq, torch.where(Ck, logits_fn(q, k), logits_fn(q, k_src)),
                             torch.where(Ck, logits_fn(q_src, k), logits_fn(q_src, k_src)))
    A = pattern_fn(scores)
    if Cv is None:
        return A @ v
    keep = A * Cv
    return keep @ v + (A - keep) @ v_src
