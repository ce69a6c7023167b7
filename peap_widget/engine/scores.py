"""Closed-form edge scores and span aggregation: pure tensor code, no model access.

Shapes: B batch, T positions, S spans, H heads, dh head size, N flattened edges.
``M`` is the [B, S, T] span indicator (pads belong to no span).
"""

from __future__ import annotations

from collections.abc import Callable

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


def pair_counts(M: torch.Tensor, allowed: torch.Tensor | None = None) -> torch.Tensor:
    """[B, S_query, S_key]: how many (t, t') with t in s_q, t' in s_k that attend: ``allowed``
    [T, T] (the model's mask), by default t' <= t."""
    T = M.shape[-1]
    if allowed is None:
        allowed = torch.ones(T, T, dtype=torch.bool, device=M.device).tril()
    return M @ allowed.to(M.dtype) @ M.transpose(1, 2)


def aggregate_pairs(P: torch.Tensor, M: torch.Tensor, how: str,
                    allowed: torch.Tensor | None = None) -> torch.Tensor:
    """Per-(query, key) values [B, H, T, T] -> per-(query span, key span) [B, H, S, S].

    ``allowed`` [T, T]: the pairs that are real edges (the model's mask; default causal).
    Entries outside it must already be 0 in ``P`` for sum/mean; max_abs masks them; mean
    divides by the number of allowed pairs."""
    T = P.shape[-1]
    if allowed is None:
        allowed = torch.ones(T, T, dtype=torch.bool, device=P.device).tril()
    if how == "max_abs":
        Mb = M.bool()
        keep = (Mb[:, :, None, :, None] & Mb[:, None, :, None, :]) & allowed  # [B, Sq, Sk, T, T]
        x = P[:, :, None, None]                                               # [B, H, 1, 1, T, T]
        return signed_max_abs(x.flatten(-2), keep[:, None].flatten(-2), dim=-1)
    out = M[:, None] @ P @ M.transpose(1, 2)[:, None]
    if how == "mean":
        out = out / pair_counts(M, allowed)[:, None].clamp_min(1)
    return out


def _others_sum(x: torch.Tensor) -> torch.Tensor:
    """Along the last axis, for every entry the sum of all the *other* entries, formed as an
    exclusive prefix sum plus an exclusive suffix sum (never total - own, which cancels when
    the own entry dominates)."""
    zero = torch.zeros_like(x[..., :1])
    before = torch.cat([zero, x.cumsum(-1)[..., :-1]], dim=-1)
    after = torch.cat([x.flip(-1).cumsum(-1).flip(-1)[..., 1:], zero], dim=-1)
    return before + after


def leave_one_out(scores: torch.Tensor,
                  values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax statistics of each key t' against the *other* keys of its query row.

    ``scores``: [..., T, T] attention scores, -inf where a key is masked; ``values``: [..., T, T]
    one number per (query t, key j). Returns, per (t, t'):

    - ``log_odds`` l = s_t' - logsumexp_{j != t'} s_j, so A[t,t'] = sigmoid(l) and
      1 - A[t,t'] = sigmoid(-l), both to full relative precision however saturated the head;
    - ``others`` = sum_{j != t'} A[t,j] values[t,j] / sum_{j != t'} A[t,j], the attention-weighted
      mean over the other keys (0 where there is no other key).

    The other keys' weights are taken relative to the row's largest score, except for the
    largest key itself, whose others are taken relative to the second largest: each normaliser
    then holds a term equal to 1, so nothing underflows to 0/0 and nothing cancels.
    """
    T = scores.shape[-1]
    top = scores.argmax(-1, keepdim=True)
    is_top = torch.arange(T, device=scores.device) == top                   # [..., T, T]
    m1 = scores.gather(-1, top)
    rest = scores.masked_fill(is_top, float("-inf"))
    m2 = rest.amax(-1, keepdim=True)
    m2 = torch.where(torch.isfinite(m2), m2, torch.zeros_like(m2))            # a single key
    e1 = torch.exp(scores - m1)
    e2 = torch.exp(rest - m2)
    w = torch.where(is_top, e2.sum(-1, keepdim=True), _others_sum(e1))
    x = torch.where(is_top, (e2 * values).sum(-1, keepdim=True), _others_sum(e1 * values))
    log_odds = scores - (torch.where(is_top, m2, m1) + torch.log(w))
    others = torch.where(w > 0, x / w.clamp_min(torch.finfo(w.dtype).tiny), torch.zeros_like(x))
    return log_odds, others


def sigmoid_shift(log_odds: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """sigmoid(l + delta) - sigmoid(l) without cancellation: A' - A when one score moves by
    ``delta``. Written as sign(delta) sigmoid(hi) sigmoid(-lo) (1 - exp(-|delta|)) with
    hi/lo = max/min(l, l + delta): every factor lies in [0, 1], so nothing overflows, an
    underflowing pair gives 0 (never NaN), and l = +-inf (a lone or masked key) gives 0."""
    shifted = log_odds + delta
    hi, lo = torch.maximum(log_odds, shifted), torch.minimum(log_odds, shifted)
    return torch.sign(delta) * torch.sigmoid(hi) * torch.sigmoid(-lo) * -torch.expm1(-delta.abs())


#: the model's attention scores [B, H, Tq, Tk] of any (q, k) (scale, soft-capping)
ScoresFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def crossing_values(G: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    q_src: torch.Tensor, k_src: torch.Tensor, v_src: torch.Tensor,
                    logits_fn: ScoresFn, allowed: torch.Tensor) -> torch.Tensor:
    """Per-(query t, key t') real-edge scores of every head for kinds q, k, v: [3, B, H, T, T],
    0 where ``allowed`` [T, T] (the model's mask: causal, sliding window) is False.

    G: gradient at each head's output o_t [B, H, T, dh]; q, k, v: this run's [B, H, T, dh];
    *_src: the ablation source's; ``logits_fn(q, k)`` gives the model's attention scores
    [B, H, T, T] (scale, soft-capping) for any (q, k). docs/numbers.md, in the form that
    stays exact on saturated heads:

        v:     A[t,t'] (v*_t' - v_t') . G_t
        k, q:  (A' - A) (v_t' - m_tt') . G_t,  m_tt' = mean of the other keys' values under A

    with A' - A from the leave-one-out log-odds (`leave_one_out`, `sigmoid_shift`), which is
    c/(1+c) (v_t' - o_t) rewritten so that neither 1 - A nor v_t' - o_t is ever a difference.
    """
    raw = logits_fn(q, k)
    scores = raw.masked_fill(~allowed, float("-inf"))
    A = torch.softmax(scores, dim=-1)
    Gv = G @ v.transpose(-1, -2)                      # [B, H, T, T]  G_t . v_t'
    log_odds, Gm = leave_one_out(scores, Gv)          # Gm: G_t . m_tt'
    toward = Gv - Gm
    P_v = A * (G @ (v_src - v).transpose(-1, -2))
    P_k = sigmoid_shift(log_odds, logits_fn(q, k_src) - raw) * toward
    P_q = sigmoid_shift(log_odds, logits_fn(q_src, k) - raw) * toward
    P = torch.stack([P_q, P_k, P_v])
    return torch.where(allowed, P, torch.zeros_like(P))


def mixed_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_src: torch.Tensor,
                    k_src: torch.Tensor, v_src: torch.Tensor, Cq: torch.Tensor | None,
                    Ck: torch.Tensor | None, Cv: torch.Tensor | None, logits_fn: ScoresFn,
                    pattern_fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
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
