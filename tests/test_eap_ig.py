"""EAP-IG, PEAP-IG and EAP-IG-activations (`pw.attribute(method=...)`, `peap_widget.engine.integrated`).

- ``steps=1`` is EAP / PEAP exactly (float64, 1e-9), on tiny GPT-2 and tiny Llama;
- with ``steps=3`` every score equals an independent brute force: the hand-written float64 GPT-2
  of tests/brute_force.py run once per path point on the interpolated input embeddings, its
  per-slot gradients (and head-output gradients, for the crossing closed forms) averaged over
  the points, then the (P)EAP definitions of DESIGN.md section 4 applied with those gradients;
- on a GPT-2 made linear in its input (no q/k weights: uniform attention; affine norms; linear
  MLP activation) EAP-IG equals exact patching, computed here by explicitly patched forwards;
- the ``remote="local"`` dry run gives the same numbers, and the settings keep method and steps.
"""

from __future__ import annotations

import dataclasses
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
import brute_force as bf  # noqa: E402
import peap_widget as pw  # noqa: E402
from peap_widget.errors import PeapError  # noqa: E402
from peap_widget.models.examples import (SCHEMA, TINY_FAMILIES, tiny_gpt2, tiny_model,  # noqa: E402
                                  tiny_records)

KEY = ["kind", "src", "dst", "src_span", "dst_span"]


def table(df) -> dict:
    return {tuple(r[:5]): r[5] for r in df[KEY + ["score"]].itertuples(index=False)}


def assert_same(got: dict, want: dict, rtol=1e-6, atol_rel=1e-9):
    assert set(got) == set(want)
    scale = max(abs(v) for v in want.values())
    assert scale > 0
    bad = [(k, got[k], want[k]) for k in want
           if abs(got[k] - want[k]) > rtol * abs(want[k]) + atol_rel * scale]
    assert not bad, f"{len(bad)} of {len(want)} differ, e.g. {bad[:3]}"


@functools.lru_cache(maxsize=None)
def setup(family):
    if family == "gpt2":
        hf, tok = tiny_gpt2()
    else:
        hf, tok = tiny_model(family, dtype=torch.float64)
    model = pw.load_model(hf, tokenizer=tok)
    return model, pw.Dataset.from_records(tiny_records(), model)


# ----------------------------------------------------------------------------------------------
# steps=1 is EAP / PEAP exactly
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("plain,ig", [("eap", "eap-ig"), ("peap", "peap-ig"),
                                      ("eap", "eap-ig-activations")])
def test_one_step_is_plain_method(family, plain, ig):
    model, ds = setup(family)
    for ablation in ("counterfactual", "mean"):
        want = pw.attribute(model, ds, method=plain, ablation=ablation, batch_size=2,
                            progress=False)
        got = pw.attribute(model, ds, method=ig, ablation=ablation, batch_size=2,
                           progress=False, steps=1)
        a, b = table(got.edges), table(want.edges)
        assert set(a) == set(b)
        assert max(abs(a[k] - b[k]) for k in a) <= 1e-9
        np.testing.assert_allclose(got.clean_metric, want.clean_metric, rtol=0, atol=1e-12)


@pytest.mark.parametrize("family", [f for f in TINY_FAMILIES if f not in ("gpt2", "llama")])
def test_one_step_is_plain_method_every_family(family):
    """GQA, rotary, sliding windows, parallel blocks, post-norms (Gemma-2): the activation
    variant's shifts go through each family's own modules."""
    model, ds = setup(family)
    for plain, ig in (("peap", "peap-ig"), ("eap", "eap-ig-activations")):
        want = table(pw.attribute(model, ds, method=plain, batch_size=5, progress=False).edges)
        got = table(pw.attribute(model, ds, method=ig, steps=1, batch_size=5,
                                 progress=False).edges)
        assert max(abs(got[k] - want[k]) for k in want) <= 1e-9
        two = table(pw.attribute(model, ds, method=ig, steps=2, batch_size=5,
                                 progress=False).edges)
        assert np.isfinite(list(two.values())).all()
        assert max(abs(two[k] - want[k]) for k in want) > 1e-6


def test_steps_change_the_scores_and_are_recorded(tmp_path):
    model, ds = setup("gpt2")
    one = pw.attribute(model, ds, method="eap-ig", steps=1, batch_size=5, progress=False)
    five = pw.attribute(model, ds, method="eap-ig", batch_size=5, progress=False)
    assert five.settings["method"] == "eap-ig" and five.settings["steps"] == 5
    a, b = table(one.edges), table(five.edges)
    assert max(abs(a[k] - b[k]) for k in a) > 1e-4   # a nonlinear model: the path matters
    five.save(tmp_path / "r.json")
    back = pw.AttributionResult.load(tmp_path / "r.json")
    assert back.settings["steps"] == 5 and back.settings["method"] == "eap-ig"


def test_bad_steps_raise():
    model, ds = setup("gpt2")
    for steps in (0, -1, 2.5, True, "5"):
        with pytest.raises(PeapError, match="steps must be a positive integer"):
            pw.attribute(model, ds, method="eap-ig", steps=steps, progress=False)


# ----------------------------------------------------------------------------------------------
# steps=3 against an independent brute force (tests/brute_force.py's hand-written GPT-2)
# ----------------------------------------------------------------------------------------------


def run_from_embeddings(hf, x0, correct, incorrect):
    """bf.run_gpt2 with the residual entering block 0 set to ``x0`` [T, D]: the prompt is
    replaced by positions 0..T-1 of a temporary embedding table holding x0 minus the position
    embeddings (the unembedding keeps its own weight: the tie is broken on purpose)."""
    wte = hf.transformer.wte
    old = wte.weight
    T = x0.shape[0]
    wte.weight = torch.nn.Parameter(x0 - hf.transformer.wpe.weight[:T].detach(),
                                    requires_grad=False)
    try:
        return bf.run_gpt2(hf, torch.arange(T), correct, incorrect)
    finally:
        wte.weight = old


def path_averaged_examples(hf, tok, ablation, steps):
    """tests/brute_force.py's examples with each clean trace's gradients (per slot, and at each
    head's result) replaced by their mean over the path points alpha = k / steps, k = 1..steps,
    between the ablated and the clean input embeddings."""
    examples = bf.prepare(hf, tok, tiny_records(), SCHEMA)
    sources = bf.ablation_sources(hf, examples, ablation, SCHEMA)
    out = []
    for ex, src in zip(examples, sources):
        r = ex.record
        c, w = bf.answer_id(tok, r["correct"]), bf.answer_id(tok, r["incorrect"])
        x, x_src = ex.clean.z["input"], src.z["input"]
        g = {s: 0.0 for s in ex.clean.g}
        g_out = {h: 0.0 for h in ex.clean.g_out}
        for k in range(1, steps + 1):
            tr = run_from_embeddings(hf, x_src + (k / steps) * (x - x_src), c, w)
            for s in g:
                g[s] = g[s] + tr.g[s] / steps
            for h in g_out:
                g_out[h] = g_out[h] + tr.g_out[h] / steps
        out.append(dataclasses.replace(ex, clean=dataclasses.replace(ex.clean, g=g, g_out=g_out)))
    return out


@pytest.mark.parametrize("ablation", ["counterfactual", "zero", "mean"])
def test_three_steps_equal_brute_force(ablation):
    hf, tok = tiny_gpt2()                     # the reference's own instance
    examples = path_averaged_examples(hf, tok, ablation, steps=3)
    model, ds = setup("gpt2")
    for method, bf_method in (("eap-ig", "eap"), ("peap-ig", "peap")):
        aggs = ("sum", "max_abs") if method == "peap-ig" else ("sum",)
        want = bf.brute_force_scores(hf, tok, tiny_records(), SCHEMA, ablation=ablation,
                                     aggregations=aggs, method=bf_method, examples=examples)
        for agg in aggs:
            got = pw.attribute(model, ds, method=method, ablation=ablation, aggregation=agg,
                               steps=3, batch_size=2, progress=False)
            assert_same(table(got.edges), want[agg])


@pytest.mark.parametrize("family", ["llama", "qwen3", "gemma2", "gpt_neox"])
def test_two_steps_equal_brute_force_families(family):
    """GQA (per query head k/v slots), rotary, q/k norms, sliding windows, soft-capping,
    post-norms, parallel blocks: PEAP-IG against tests/brute_families.py's generic forward run
    at each path point (the interpolated input fed as a one-row-per-position embedding table),
    its slot and head-output gradients averaged. Tolerance: 2e-6 of the largest |score|, the
    float32-in-float64 rounding HF's RMSNorm leaves (see tests/test_families_oracle.py)."""
    steps = 2
    kw = {"scale": 8.0} if family.startswith("gpt_neox") else {}
    hf, tok = tiny_model(family, **kw)
    spec = bfm.describe(hf, hf_rounding=True)
    examples = bfm.prepare(spec, tok, tiny_records(), SCHEMA)
    sources = bfm.ablation_sources(spec, examples, "counterfactual", SCHEMA)
    averaged = []
    for ex, src in zip(examples, sources):
        x, x_src = ex.clean.z["input"], src.z["input"]
        T = x.shape[0]
        g = {s: 0.0 for s in ex.clean.g}
        g_out = {h: 0.0 for h in ex.clean.g_out}
        for k in range(1, steps + 1):
            table_k = x_src + (k / steps) * (x - x_src)
            at = dataclasses.replace(spec, embed={"wte": table_k, "wpe": None, "scale": None})
            tr = bfm.run(at, torch.arange(T), ex.correct, ex.incorrect)
            for s in g:
                g[s] = g[s] + tr.g[s] / steps
            for h in g_out:
                g_out[h] = g_out[h] + tr.g_out[h] / steps
        averaged.append(dataclasses.replace(
            ex, clean=dataclasses.replace(ex.clean, g=g, g_out=g_out)))
    want = bfm.brute_force_scores(spec, tok, tiny_records(), SCHEMA, method="peap",
                                  examples=averaged, sources=sources)["sum"]
    hf2, tok2 = tiny_model(family, **kw)
    model = pw.load_model(hf2, tokenizer=tok2)
    ds = pw.Dataset.from_records(tiny_records(), model)
    got = pw.attribute(model, ds, method="peap-ig", steps=steps, batch_size=5, progress=False)
    assert_same(table(got.edges), want, rtol=0, atol_rel=2e-6)


def activation_path_examples(hf, tok, steps):
    """tests/brute_force.py's examples (counterfactual source) with the gradients averaged over
    EAP-IG-activations' runs: for each node group (``input``; per layer all heads; the MLP) and
    point alpha = k / steps, the clean prompt with only that group's output moved by
    -(1 - alpha)(z - z*): the input through the embeddings, a head through bf.run_gpt2's
    ``head_delta``, an MLP as the same shift of every slot copy that reads it (``slot_delta``)."""
    L, H, _, _ = bf.dims(hf)
    examples = bf.prepare(hf, tok, tiny_records(), SCHEMA)
    sources = bf.ablation_sources(hf, examples, "counterfactual", SCHEMA)
    out = []
    for ex, src in zip(examples, sources):
        r = ex.record
        c, w = bf.answer_id(tok, r["correct"]), bf.answer_id(tok, r["incorrect"])
        z, zs = ex.clean.z, src.z
        runs = []
        for k in range(1, steps + 1):
            f = 1 - k / steps
            runs.append(run_from_embeddings(hf, z["input"] - f * (z["input"] - zs["input"]), c, w))
            for layer in range(L):
                heads = {(layer, h): -f * (z[bf.head_name(layer, h)] - zs[bf.head_name(layer, h)])
                         for h in range(H)}
                runs.append(bf.run_gpt2(hf, ex.clean.ids, c, w, head_delta=heads))
                shift = -f * (z[f"m{layer}"] - zs[f"m{layer}"])
                readers = {v: shift for v in bf.slots(hf) if f"m{layer}" in bf.upstream(hf, v)}
                runs.append(bf.run_gpt2(hf, ex.clean.ids, c, w, slot_delta=readers))
        g = {s: sum(tr.g[s] for tr in runs) / len(runs) for s in ex.clean.g}
        out.append(dataclasses.replace(ex, clean=dataclasses.replace(ex.clean, g=g)))
    return out


def test_activations_variant_equals_brute_force():
    hf, tok = tiny_gpt2()
    examples = activation_path_examples(hf, tok, steps=2)
    want = bf.brute_force_scores(hf, tok, tiny_records(), SCHEMA, ablation="counterfactual",
                                 method="eap", examples=examples)["sum"]
    model, ds = setup("gpt2")
    got = pw.attribute(model, ds, method="eap-ig-activations", steps=2, batch_size=2,
                       progress=False)
    assert_same(table(got.edges), want)


# ----------------------------------------------------------------------------------------------
# A model linear in its input: EAP-IG is exact patching
# ----------------------------------------------------------------------------------------------


class AffineNorm(torch.nn.Module):
    """x * weight + bias: a norm-shaped affine map (the engine goes through it by autograd)."""

    def __init__(self, d, seed):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = torch.nn.Parameter(1 + 0.3 * torch.randn(d, generator=g, dtype=torch.float64))
        self.bias = torch.nn.Parameter(0.3 * torch.randn(d, generator=g, dtype=torch.float64))
        self.eps = 1e-5

    def forward(self, x):
        return x * self.weight + self.bias


def linear_gpt2():
    hf, tok = tiny_gpt2(activation_function="linear")
    D = hf.config.n_embd
    with torch.no_grad():
        for i, block in enumerate(hf.transformer.h):
            block.attn.c_attn.weight[:, :2 * D] = 0      # q = k = 0: uniform causal attention
            block.attn.c_attn.bias[:2 * D] = 0
            block.ln_1, block.ln_2 = AffineNorm(D, 2 * i), AffineNorm(D, 2 * i + 1)
    hf.transformer.ln_f = AffineNorm(D, 99)
    return hf, tok


def exact_patching(hf, tok, records):
    """{(src, dst): mean over records of m(clean, edge src -> dst ablated) - m(clean)}: HF
    forwards with hooks, one per edge and record; the slot's own copy of the residual gets
    z*_src in place of z_src (for a head's q/k/v slot: only that head's projection sees it)."""
    L, H, D, dh = bf.dims(hf)
    out = {}

    def run(ids, hooks=()):
        handles = [m.register_forward_hook(f) if kind == "post" else m.register_forward_pre_hook(f)
                   for m, kind, f in hooks]
        try:
            with torch.no_grad():
                return hf(ids[None]).logits[0]
        finally:
            for h in handles:
                h.remove()

    def outputs(ids):
        """component -> [T, D] outputs z_u of one run."""
        z = {}
        hooks = [(hf.transformer.h[0], "pre", lambda m, a: z.__setitem__("input", a[0][0]))]
        for layer in range(L):
            blk = hf.transformer.h[layer]

            def heads(m, a, layer=layer, blk=blk):
                o = a[0][0]
                for h in range(H):
                    cols = slice(h * dh, (h + 1) * dh)
                    z[bf.head_name(layer, h)] = o[:, cols] @ blk.attn.c_proj.weight[cols]
            hooks.append((blk.attn.c_proj, "pre", heads))
            hooks.append((blk.mlp, "post", lambda m, a, o, layer=layer: z.__setitem__(f"m{layer}", o[0])))
        run(ids, hooks)
        return z

    for r in records:
        ids, cids = bf.encode(tok, r["clean"]), bf.encode(tok, r["corrupted"])
        c, w = bf.answer_id(tok, r["correct"]), bf.answer_id(tok, r["incorrect"])
        metric = lambda logits: (logits[-1, c] - logits[-1, w]).item()  # noqa: E731
        base = metric(run(ids))
        z, zs = outputs(ids), outputs(cids)
        for u, v in bf.residual_edges(hf):
            d = zs[u] - z[u]
            if v == "logits":
                hooks = [(hf.transformer.ln_f, "pre", lambda m, a, d=d: (a[0] + d,))]
            elif v.startswith("m"):
                blk = hf.transformer.h[int(v[1:])]
                hooks = [(blk.ln_2, "pre", lambda m, a, d=d: (a[0] + d,))]
            else:
                layer, head, kind = int(v[1:v.index(".")]), int(v[v.index("h") + 1:v.index("<")]), v[-2]
                blk = hf.transformer.h[layer]
                part = "qkv".index(kind)
                cols = slice(part * D + head * dh, part * D + (head + 1) * dh)

                def add(m, a, o, d=d, cols=cols, blk=blk):
                    # the slot's own normed input moves by norm(x + d) - norm(x); only its columns
                    moved = (blk.ln_1(a[0][0] + d) - blk.ln_1(a[0][0])) @ m.weight[:, cols]
                    o = o.clone()
                    o[0, :, cols] += moved
                    return o
                hooks = [(blk.attn.c_attn, "post", add)]
            out[(u, v)] = out.get((u, v), 0.0) + (metric(run(ids, hooks)) - base) / len(records)
    return out


def test_linear_model_eap_ig_is_exact_patching():
    hf_ref, tok = linear_gpt2()
    want = exact_patching(hf_ref, tok, tiny_records())
    hf, tok = linear_gpt2()
    model = pw.load_model(hf, tokenizer=tok)
    ds = pw.Dataset.from_records(tiny_records(), model)
    got = table(pw.attribute(model, ds, method="eap-ig", steps=4, batch_size=2,
                             progress=False).edges)
    assert_same({(k[1], k[2]): v for k, v in got.items()}, want)


# ----------------------------------------------------------------------------------------------
# remote="local" dry run
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["eap-ig", "peap-ig", "eap-ig-activations"])
def test_dry_run_equals_local(method):
    hf, tok = tiny_model("llama", dtype=torch.float64)
    model = pw.load_model(hf, tokenizer=tok)
    ds = pw.Dataset.from_records(tiny_records(), model)
    local = pw.attribute(model, ds, method=method, steps=2, batch_size=3, progress=False)
    model.remote = "local"
    try:
        dry = pw.attribute(model, ds, method=method, steps=2, batch_size=3, progress=False)
    finally:
        model.remote = False
    a, b = table(local.edges), table(dry.edges)
    assert set(a) == set(b) and max(abs(a[k] - b[k]) for k in a) <= 1e-12
    assert [e["job"] for e in model.remote_log].count("attribute_batches") == 2
    model.remote = "local"
    try:   # both batches in one request
        one = pw.attribute(model, ds, method=method, steps=2, batch_size=3, progress=False,
                           batches_per_request=2)
    finally:
        model.remote = False
    c = table(one.edges)
    assert max(abs(a[k] - c[k]) for k in a) <= 1e-12
    assert [e["job"] for e in model.remote_log].count("attribute_batches") == 3


# ----------------------------------------------------------------------------------------------
# Failures: non-finite values are named, an allocation failure halves the batch
# ----------------------------------------------------------------------------------------------


def test_a_nan_weight_is_named():
    hf, tok = tiny_gpt2()
    model = pw.load_model(hf, tokenizer=tok)
    ds = pw.Dataset.from_records(tiny_records(), model)
    d, dh = hf.config.n_embd, hf.config.n_embd // hf.config.n_head
    with torch.no_grad():                       # one entry of head 1's W_V in layer 0
        hf.transformer.h[0].attn.c_attn.weight[3, 2 * d + dh + 1] = float("nan")
    for method in ("eap-ig", "peap-ig", "eap-ig-activations"):
        with pytest.raises(pw.NonFiniteError, match="examples 0-1: NaN or inf in a0.h1 in the clean"):
            pw.attribute(model, ds, method=method, steps=3, batch_size=2, progress=False)


def test_out_of_memory_halves_the_batch():
    """The model itself fails to allocate (torch.OutOfMemoryError from a hook on block 0) when a
    trace holds more than 6 rows: 5 examples x 3 points do not fit, 2 x 3 do."""
    model, ds = setup("gpt2")
    want = table(pw.attribute(model, ds, method="peap-ig", steps=3, batch_size=2,
                              progress=False).edges)

    def refuse(module, args):
        if args[0].shape[0] > 6:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated by the test's hook)")

    handle = model.hf.transformer.h[0].register_forward_pre_hook(refuse)
    try:
        with pytest.warns(ResourceWarning, match="5 examples per batch; retrying with 2"):
            res = pw.attribute(model, ds, method="peap-ig", steps=3, batch_size=5,
                               progress=False)
    finally:
        handle.remove()
    assert res.settings["batch_size"] == 2
    got = table(res.edges)
    assert max(abs(got[k] - want[k]) for k in want) <= 1e-12
