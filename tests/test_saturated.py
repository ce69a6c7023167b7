"""Crossing scores on saturated heads, against the float64 brute force (tests/brute_force.py).

Trained models have heads whose largest attention weight is within 1e-7 of 1 and score shifts of
hundreds between clean and counterfactual runs. The q/k closed form divides by 1 - A and
multiplies by v_t' - o_t, both about 0 there; written by subtraction it cancels to noise (NaN in
float32, 1e166 in float64 on these models). Here the tiny GPT-2's q/k weights are scaled by
``f`` so that 1 - max A runs from ~1e-1 down to below 1e-12 (0 in float64) and score shifts
reach several hundred; the engine, in the model's own dtype, must match the float64 brute force
run on the same (rounded) weights.
"""

from __future__ import annotations

import copy
import functools
import os
import sys

import numpy as np
import pytest
import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import brute_force as bf  # noqa: E402
from tiny import SCHEMA, tiny_gpt2, tiny_records  # noqa: E402

import peap_widget as pw  # noqa: E402
from peap_widget.engine.scores import leave_one_out, sigmoid_shift  # noqa: E402

KEY_COLS = ["kind", "src", "dst", "src_span", "dst_span"]
FACTORS = (1, 2, 3, 4, 8)


def saturated_gpt2(f, dtype):
    """The tiny GPT-2 (2 layers, 3 heads) with every layer's q and k weights and biases times f."""
    hf, tok = tiny_gpt2(n_layer=2, n_head=3, d_model=12)
    d = hf.config.n_embd
    with torch.no_grad():
        for blk in hf.transformer.h:
            blk.attn.c_attn.weight[:, : 2 * d] *= f
            blk.attn.c_attn.bias[: 2 * d] *= f
    return hf.to(dtype), tok


@functools.lru_cache(maxsize=None)
def brute(f, dtype):
    """Float64 brute force on the weights of the ``dtype`` model, rounded to that dtype."""
    hf, tok = saturated_gpt2(f, dtype)
    return bf.brute_force_scores(copy.deepcopy(hf).to(torch.float64), tok, tiny_records(),
                                 SCHEMA)["sum"]


@functools.lru_cache(maxsize=None)
def engine(f, dtype):
    hf, tok = saturated_gpt2(f, dtype)
    model = pw.load_model(hf, tokenizer=tok)
    ds = pw.Dataset.from_records(tiny_records(), model)
    df = pw.attribute(model, ds, batch_size=2, progress=False).edges
    keys = list(zip(*(df[c].astype(str).tolist() for c in KEY_COLS)))
    return keys, df["score"].to_numpy(dtype=np.float64)


def compare(f, dtype):
    """(kinds, engine scores, brute-force scores) row by row."""
    keys, have = engine(f, dtype)
    exp = brute(f, dtype)
    assert set(keys) == set(exp)
    want = np.asarray([exp[k] for k in keys])
    return np.asarray([k[0] for k in keys]), have, want


def saturation(f):
    """(smallest 1 - max A over every head and query row t >= 1, largest |score shift| of one
    (t, t') pair from the counterfactual's q or k), measured by the brute force in float64."""
    hf, tok = saturated_gpt2(f, torch.float64)
    exs = bf.prepare(hf, tok, tiny_records(), SCHEMA)
    gap, shift = 1.0, 0.0
    for ex, src in zip(exs, bf.ablation_sources(hf, exs, "counterfactual", SCHEMA)):
        for (L, h), A in ex.clean.attn.items():
            T = A.shape[0]
            gap = min(gap, float((1 - A[1:].max(-1).values).min()))
            q, k = ex.clean.q[(L, h)], ex.clean.k[(L, h)]
            causal = torch.ones(T, T, dtype=torch.bool).tril()
            for d in (q @ src.k[(L, h)].T - q @ k.T, src.q[(L, h)] @ k.T - q @ k.T):
                shift = max(shift, float((d * bf.attn_scale(hf, L))[causal].abs().max()))
    return gap, shift


def test_the_models_cover_the_saturation_levels():
    levels = {f: saturation(f) for f in FACTORS}
    gaps = [g for g, _ in levels.values()]
    assert gaps[0] > 5e-2 and min(gaps) < 1e-12, levels
    assert any(1e-7 < g < 1e-3 for g in gaps), levels      # the 'almost saturated' middle
    assert levels[8][1] > 250, levels                        # score shifts of several hundred


@pytest.mark.parametrize("f", FACTORS)
def test_float32_saturated_heads_match_float64_brute_force(f):
    kinds, have, want = compare(f, torch.float32)
    assert np.isfinite(have).all()
    scale = np.abs(want).max()
    for kind in ("resid", "q", "k", "v"):
        sel = kinds == kind
        err = np.abs(have[sel] - want[sel])
        bound = 1e-3 * scale + 1e-2 * np.abs(want[sel])
        worst = int(np.argmax(err / bound))
        assert (err <= bound).all(), (kind, f, err[worst], want[sel][worst], scale)


@pytest.mark.parametrize("f", FACTORS)
def test_float64_saturated_heads_exact(f):
    kinds, have, want = compare(f, torch.float64)
    assert np.isfinite(have).all()
    scale = np.abs(want).max()
    err = np.abs(have - want)
    assert (err <= 1e-9 * scale + 1e-9 * np.abs(want)).all(), (f, err.max(), scale)


@pytest.mark.parametrize("f", FACTORS)
def test_bfloat16_saturated_heads_within_bf16_noise(f):
    """A bf16 forward differs from the float64 one by bf16 rounding of every activation (scores
    of hundreds carry errors of about 1); the crossing closed forms must add nothing to that:
    finite everywhere, no worse than the plain residual scores, and within 10% of the scale."""
    kinds, have, want = compare(f, torch.bfloat16)
    assert np.isfinite(have).all()
    scale = np.abs(want).max()
    err = np.abs(have - want)
    resid_err = err[kinds == "resid"].max()
    cross_err = err[kinds != "resid"].max()
    assert cross_err <= max(resid_err, 1e-3 * scale), (f, cross_err, resid_err)
    assert cross_err <= 0.1 * scale, (f, cross_err, scale)


# --- the two primitives, at the extremes -------------------------------------------------------


def _direct(scores, values, t_prime, delta):
    """float64 reference for one query row: A' - A and the mean of the other keys' values."""
    s = scores.clone()
    A = torch.softmax(s, -1)
    s[t_prime] += delta
    A2 = torch.softmax(s, -1)
    w = A.clone()
    w[t_prime] = 0
    others = (w * values).sum() / w.sum() if w.sum() > 0 else torch.tensor(0.0, dtype=s.dtype)
    return (A2 - A)[t_prime], others


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_leave_one_out_matches_direct_softmax(dtype):
    g = torch.Generator().manual_seed(0)
    T = 9
    for spread in (1.0, 10.0, 40.0):
        scores = (torch.randn(T, T, generator=g, dtype=torch.float64) * spread)
        scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
        values = torch.randn(T, T, generator=g, dtype=torch.float64)
        delta = torch.randn(T, T, generator=g, dtype=torch.float64) * spread
        lo, others = leave_one_out(scores.to(dtype), values.to(dtype))
        shift = sigmoid_shift(lo, delta.to(dtype))
        for t in range(T):
            for tp in range(t + 1):
                want_shift, want_others = _direct(scores[t, : t + 1], values[t, : t + 1], tp,
                                                  float(delta[t, tp]))
                tol = 1e-12 if dtype == torch.float64 else 1e-5
                assert abs(float(shift[t, tp]) - float(want_shift)) <= tol, (spread, t, tp)
                assert abs(float(others[t, tp]) - float(want_others)) <= tol * 10, (spread, t, tp)
        assert torch.isfinite(shift).all() and torch.isfinite(others).all()


def test_underflowing_weights_give_exact_limits_not_nan():
    """float32: the top key beats the others by 200 (their weights underflow to 0 against it);
    a shift of -400 hands the attention to the others: A' - A = -1 exactly, and the others'
    mean is still their own attention-weighted mean."""
    s = torch.tensor([[0.0, float("-inf"), float("-inf")],
                      [0.0, -200.0, float("-inf")],
                      [0.0, -200.0, -201.0]], dtype=torch.float32)
    values = torch.tensor([[5.0, 0.0, 0.0], [5.0, 2.0, 0.0], [5.0, 2.0, 3.0]])
    lo, others = leave_one_out(s, values)
    assert torch.isinf(lo[0, 0]) and lo[0, 0] > 0                 # a lone key: A = 1 exactly
    assert float(others[2, 0]) == pytest.approx((2 + 3 / np.e) / (1 + 1 / np.e), rel=1e-6)
    assert float(others[1, 0]) == 2.0
    shift = sigmoid_shift(lo, torch.full_like(s, -400.0))
    assert float(shift[2, 0]) == -1.0 and float(shift[1, 0]) == -1.0
    assert float(shift[0, 0]) == 0.0                              # the only key: nothing moves
    assert torch.isfinite(shift).all() and torch.isfinite(others).all()
    masked = sigmoid_shift(lo, torch.full_like(s, 3.0))
    assert float(masked[0, 1]) == 0.0 and float(masked[1, 2]) == 0.0
