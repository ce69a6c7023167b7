"""Path patching (`pw.path_patch`) against explicit HF runs with hooks on the tiny float64 GPT-2.

The reference adds z*_s - z_s (sender's counterfactual minus clean output, from
tests/brute_force.py) to the receiver's input only: for ``logits`` to the final LayerNorm's
input, for a head's q/k/v to that head's columns of ``c_attn`` recomputed from the shifted
LayerNorm input, everything else of the HF forward untouched.
"""

from __future__ import annotations

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
import test_evaluate_oracle as oracle  # noqa: E402

import peap_widget as pw  # noqa: E402
from peap_widget.analysis.path_patching import path_patch  # noqa: E402

TOL = 1e-9


@functools.lru_cache(maxsize=None)
def evaluator():
    _, model, ds = oracle.engine_setup()
    return model, ds, pw.Evaluator(model, ds)


def reference(sender, receivers, span=None):
    """Mean over examples of m(patched) - m(clean) from hooked HF forwards.

    ``receivers``: list of ("logits",) or (layer, head, "q"|"k"|"v")."""
    hf, tok, exs = oracle.ref()
    srcs = oracle.sources("counterfactual")
    D = hf.config.n_embd
    dh = D // hf.config.n_head
    out = []
    for ex, src in zip(exs, srcs):
        delta = src.z[sender] - ex.clean.z[sender]
        if span is not None:
            keep = torch.tensor([s == span for s in ex.span_at], dtype=delta.dtype)[:, None]
            delta = delta * keep
        hooks, saved = [], {}
        for rec in receivers:
            if rec == ("logits",):
                hooks.append(hf.transformer.ln_f.register_forward_pre_hook(
                    lambda m, a: (a[0] + delta,)))
                continue
            layer, head, kind = rec
            block = hf.transformer.h[layer]
            col = "qkv".index(kind) * D + head * dh

            def save_x(m, a, _l=layer):
                saved[_l] = a[0]

            def patch(m, a, y, _l=layer, _c=col, _b=block):
                # functional LN: calling the module would re-enter save_x
                shifted = bf._ln(_b.ln_1, saved[_l] + delta) @ m.weight + m.bias
                y = y.clone()
                y[..., _c:_c + dh] = shifted[..., _c:_c + dh]
                return y

            hooks.append(block.ln_1.register_forward_pre_hook(save_x))
            hooks.append(block.attn.c_attn.register_forward_hook(patch))
        try:
            with torch.no_grad():
                patched = hf(ex.clean.ids[None]).logits[0, -1]
        finally:
            for h in hooks:
                h.remove()
        with torch.no_grad():
            clean = hf(ex.clean.ids[None]).logits[0, -1]
        c, i = bf.answer_id(tok, ex.record["correct"]), bf.answer_id(tok, ex.record["incorrect"])
        out.append(((patched[c] - patched[i]) - (clean[c] - clean[i])).item())
    return float(np.mean(out)), np.array(out)


CASES = [
    ("a0.h1", "logits", [("logits",)], None),
    ("a0.h2", "a1.h3.q", [(1, 3, "q")], None),
    ("a0.h0", "a1.h1<k>", [(1, 1, "k")], None),
    ("input", "a1.h0.v", [(1, 0, "v")], None),
    ("m0", ["a1.h2.q", "a1.h2.k"], [(1, 2, "q"), (1, 2, "k")], None),
    ("a0.h3", "a1.h2", [(1, 2, "q"), (1, 2, "k"), (1, 2, "v")], None),
    ("a0.h2", ["a1.h3.q", "logits"], [(1, 3, "q"), ("logits",)], None),
    ("a0.h1@S2", "a1.h0.q", [(1, 0, "q")], "S2"),
    ("input", "logits@IO", [("logits",)], "IO"),
]


@pytest.mark.parametrize("sender,receivers,ref_receivers,span", CASES)
def test_path_patch_equals_hooked_hf(sender, receivers, ref_receivers, span):
    model, ds, ev = evaluator()
    got, got_per = path_patch(model, ds, sender, receivers, per_example=True, evaluator=ev)
    want, want_per = reference(sender.split("@")[0], ref_receivers, span)
    assert abs(got - want) < TOL, (got, want)
    assert np.abs(got_per - want_per).max() < TOL


def test_paths_are_discriminative():
    """Most of these paths move the metric well above the tolerance."""
    moved = [abs(reference(s.split("@")[0], r, sp)[0]) for s, _, r, sp in CASES]
    assert sum(m > 1e-3 for m in moved) >= 6, moved


def test_path_patch_without_evaluator_and_mean_ablation():
    model, ds, _ = evaluator()
    a = path_patch(model, ds, "a0.h2", "a1.h3.q", ablation="mean")
    ev = pw.Evaluator(model, ds, ablation="mean")
    assert a == path_patch(model, ds, "a0.h2", "a1.h3.q", evaluator=ev)


@pytest.mark.parametrize("sender,receivers,match", [
    ("a1.h0", "a0.h1.q", "not upstream"),
    ("a9.h0", "logits", "unknown sender"),
    ("a0.h0", "a1.h0.x", "unknown receiver"),
    ("a0.h0@nope", "logits", "no span"),
    ("a0.h0@IO", "logits@S2", "do not overlap"),
    ("a0.h0", [], "at least one"),
])
def test_path_patch_bad_names(sender, receivers, match):
    model, ds, ev = evaluator()
    with pytest.raises(pw.PeapError, match=match):
        path_patch(model, ds, sender, receivers, evaluator=ev)


def test_dry_run_equals_local():
    _, model, ds = oracle.engine_setup()
    want = path_patch(model, ds, "a0.h2", ["a1.h3.q", "logits"])
    model.remote = "local"
    try:
        got = path_patch(model, ds, "a0.h2", ["a1.h3.q", "logits"])
    finally:
        model.remote = False
    assert got == want
