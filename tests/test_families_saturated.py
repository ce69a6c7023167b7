"""Crossing scores on saturated heads for the non-GPT-2 families, against the float64 generic
brute force (tests/brute_families.py); the GPT-2 counterpart is tests/test_saturated.py.

Per family the q/k path is scaled by factors f so that 1 - max A (over every head and query row
with more than one visible key) runs from ~1e-1 down to below 1e-7 (0 in float64), with score
shifts between the clean and counterfactual runs of up to one or a few hundred: q_proj/k_proj
weights (and Qwen2's q/k biases), GPT-NeoX's q and k rows of the fused query_key_value, Qwen3's
q_norm/k_norm weights (its q/k norms would undo a scaled projection). Gemma-2 gets
``attn_logit_softcapping=50`` (the real models' value): with the tiny default of 3 no head can
saturate. The engine, in the model's own dtype, must match the float64 brute force run on the
same rounded weights (float32: tolerances as in tests/test_saturated.py; bf16: finite, and the
q/k closed forms within the noise the bf16 forward itself carries).
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
for _p in (_HERE, os.path.dirname(_HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import brute_families as bfm  # noqa: E402
from peap_widget.models.examples import SCHEMA, tiny_model, tiny_records  # noqa: E402

KEY_COLS = ["kind", "src", "dst", "src_span", "dst_span"]
FACTORS = {
    "llama": (1, 4, 6, 12),
    "qwen2": (1, 3, 6, 12),
    "qwen3": (1, 2, 3, 8),
    "gpt_neox": (1, 2, 3, 8),
    "gemma2": (1, 3, 4, 12),
}
CASES = [(fam, f) for fam, fs in FACTORS.items() for f in fs]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def saturated_model(family, f, dtype):
    """The tiny ``family`` model (float64 build) with its q/k path scaled by ``f``, then cast."""
    kw = {"scale": 8.0} if family.startswith("gpt_neox") else {}
    if family == "gemma2":
        kw["attn_logit_softcapping"] = 50.0
    hf, tok = tiny_model(family, **kw)
    H = hf.config.num_attention_heads
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if family == "qwen3":
                if name.endswith(("q_norm.weight", "k_norm.weight")):
                    p.mul_(f)
            elif family.startswith("gpt_neox"):
                if "query_key_value" in name:      # per head [q | k | v] rows
                    dh = hf.config.hidden_size // H
                    p.view(H, 3, dh, *p.shape[1:])[:, :2] *= f
            elif name.endswith(("q_proj.weight", "k_proj.weight", "q_proj.bias", "k_proj.bias")):
                p.mul_(f)
    return hf.to(dtype), tok


@functools.lru_cache(maxsize=None)
def brute(family, f, dtype):
    """Float64 brute force on the weights of the ``dtype`` model, rounded to that dtype."""
    hf, tok = saturated_model(family, f, dtype)
    sp = bfm.describe(copy.deepcopy(hf).to(torch.float64))
    return bfm.brute_force_scores(sp, tok, tiny_records(), SCHEMA)["sum"]


@functools.lru_cache(maxsize=None)
def engine(family, f, dtype):
    import peap_widget as pw

    hf, tok = saturated_model(family, f, dtype)
    model = pw.load_model(hf, tokenizer=tok)
    ds = pw.Dataset.from_records(tiny_records(), model)
    df = pw.attribute(model, ds, batch_size=2, progress=False).edges
    keys = list(zip(*(df[c].astype(str).tolist() for c in KEY_COLS)))
    assert df["score"].dtype in (np.float32, np.float64), df["score"].dtype   # never bf16/fp16
    return keys, df["score"].to_numpy(dtype=np.float64)


def compare(family, f, dtype):
    keys, have = engine(family, f, dtype)
    exp = brute(family, f, dtype)
    assert set(keys) == set(exp)
    want = np.asarray([exp[k] for k in keys])
    return np.asarray([k[0] for k in keys]), have, want


@functools.lru_cache(maxsize=None)
def saturation(family, f):
    """(smallest 1 - max A over heads and query rows with >= 2 visible keys, largest |score
    shift| of one visible (t, t') pair from the counterfactual's q or k), float64."""
    hf, tok = saturated_model(family, f, torch.float64)
    sp = bfm.describe(hf)
    exs = bfm.prepare(sp, tok, tiny_records(), SCHEMA)
    gap, shift = 1.0, 0.0
    for ex, src in zip(exs, bfm.ablation_sources(sp, exs, "counterfactual", SCHEMA)):
        for (L, h), A in ex.clean.attn.items():
            allowed = bfm.allowed_mask(A.shape[0], sp.layers[L].window)
            rows = allowed.sum(-1) >= 2
            gap = min(gap, float((1 - A[rows].max(-1).values).min()))
            q, k = ex.clean.q[(L, h)], ex.clean.k[(L, h)]
            base = bfm.score_matrix(sp, L, q, k)
            for d in (bfm.score_matrix(sp, L, q, src.k[(L, h)]) - base,
                      bfm.score_matrix(sp, L, src.q[(L, h)], k) - base):
                shift = max(shift, float(d[allowed].abs().max()))
    return gap, shift


@pytest.mark.parametrize("family", list(FACTORS))
def test_the_models_cover_the_saturation_levels(family):
    levels = {f: saturation(family, f) for f in FACTORS[family]}
    gaps = [g for g, _ in levels.values()]
    assert gaps[0] > 1e-2, levels
    assert min(gaps) < 1e-7, levels                     # saturated: 1 - max A below 1e-7
    assert any(1e-7 < g < 1e-2 for g in gaps), levels    # the 'almost saturated' middle
    assert max(s for _, s in levels.values()) > 60, levels


@pytest.mark.parametrize("family,f", CASES)
def test_float32_saturated_heads_match_float64_brute_force(family, f):
    kinds, have, want = compare(family, f, torch.float32)
    assert np.isfinite(have).all()
    scale = np.abs(want).max()
    for kind in ("resid", "q", "k", "v"):
        sel = kinds == kind
        err = np.abs(have[sel] - want[sel])
        bound = 1e-3 * scale + 1e-2 * np.abs(want[sel])
        worst = int(np.argmax(err / bound))
        assert (err <= bound).all(), (family, kind, f, err[worst], want[sel][worst], scale)


@pytest.mark.parametrize("family,f", CASES)
def test_bfloat16_saturated_heads_finite_and_within_bf16_noise(family, f):
    """A bf16 model gives finite float32 (or float64) scores. Its forward differs from the
    float64 one by bf16 rounding of every activation (on the most saturated factors, scores of
    ~100 carry errors of ~0.5 and the residual rows are off by up to half the scale): that noise is
    measured on the rows whose closed forms cannot cancel (resid, v). The q/k closed forms, the
    ones that divide by 1 - A, must add nothing beyond it."""
    kinds, have, want = compare(family, f, torch.bfloat16)
    assert np.isfinite(have).all()
    scale = np.abs(want).max()
    err = np.abs(have - want)
    noise = max(err[kinds == "resid"].max(), err[kinds == "v"].max(), 1e-3 * scale)
    for kind in ("q", "k"):
        assert err[kinds == kind].max() <= 1.5 * noise, (family, f, kind,
                                                          err[kinds == kind].max(), noise, scale)
