"""Oracle tests for every tiny model family: ``pw.attribute`` edge scores and ``pw.evaluate``
circuit runs against the independent generic brute force of tests/brute_families.py.

Families: ``peap_widget.models.examples.TINY_FAMILIES`` (GPT-2, Llama, Llama-3 rope scaling, Mistral,
Qwen2, Qwen3, GPT-NeoX parallel and sequential, Gemma-2), the real transformers classes in
float64, 2 layers, GQA where the family has it, sliding windows of 4 tokens, soft-capping, etc.

The first group of tests checks the reference on its own (HF logits, HF sublayer outputs, finite
differences, an independent full recomputation of the head for crossing edges, deliberately broken
variants disagreeing, full/empty circuits); the second compares the engine, through the public
API only, with it.

Precision: HF's RMSNorm computes in float32 even in a float64 model (and Gemma-2's eager softmax
too), so "the float64 model" has two readings: the reference either reproduces HF's float32 steps
(``hf`` mode, the model exactly as HF runs it; matches HF logits to 1e-10) or computes in float64
throughout (``f64`` mode). The two differ by up to ~6e-7 of the largest |score| on these models
(1e-6 for Mistral's ``mean`` aggregation). A score row passes when the engine lies within
1e-6 x the largest |score| of the interval between the two readings. (LayerNorm families, GPT-2
and GPT-NeoX, round nothing: there the two coincide.) Circuit runs are compared with the hf-mode
reference (Gemma-2: its post-norm is decomposed into per-head terms with the exact factor, so it
can reproduce HF's float32 norm only to ~1e-7).
"""

from __future__ import annotations

import functools
import math
import os
import random
import sys

import numpy as np
import pytest
import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
for _p in (_HERE, os.path.dirname(_HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import brute_families as bfm  # noqa: E402
from peap_widget.models.examples import SCHEMA, TINY_FAMILIES, tiny_model, tiny_records  # noqa: E402

FAMILIES = list(TINY_FAMILIES)
GQA = ["llama", "llama3", "mistral", "qwen2", "qwen3", "gemma2"]
WINDOWED = ["mistral", "qwen2", "gemma2"]
FROM_DIRECTORY = "mistral"         # this family's engine model is saved and loaded from a folder
KEY_COLS = ["kind", "src", "dst", "src_span", "dst_span"]
RTOL = 1e-6                        # times the largest |score| of the table
EVAL_RTOL, EVAL_ATOL = 1e-6, 1e-6  # circuit runs: metric and last-token logits (values ~0.1-5)

# (family, ablation) and (family, aggregation) beyond counterfactual / sum, which every family gets
ABLATION_CASES = [(f, a) for f in ("gpt2", "llama", "mistral", "qwen3", "gpt_neox", "gemma2")
                  for a in ("mean", "zero")]
AGGREGATION_CASES = [(f, a) for f in ("gpt2", "llama3", "mistral", "gpt_neox_sequential",
                                      "gemma2") for a in ("mean", "max_abs")]
EVAL_ABLATIONS = {"gpt_neox": ("counterfactual", "zero"), "gemma2": ("counterfactual", "mean"),
                  "mistral": ("counterfactual", "mean")}
CIRCUITS = ["rand50_s1", "resid_all_cross30", "cross_all_resid40"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Thousands of tiny tensor ops: torch's intra-op thread pool only adds overhead here (and
    milliseconds per op on a busy 2-core machine). Restored after this module."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def model_kwargs(family):
    # GPT-NeoX at the default x4 barely separates clean and corrupted runs (metric moves <= 0.02)
    return {"scale": 8.0} if family.startswith("gpt_neox") else {}


# ----------------------------------------------------------------------------------------------
# Reference side (its own model instances)
# ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def ref_model(family):
    return tiny_model(family, **model_kwargs(family))


@functools.lru_cache(maxsize=None)
def spec(family, mode="hf"):
    hf, _ = ref_model(family)
    return bfm.describe(hf, hf_rounding=(mode == "hf"))


@functools.lru_cache(maxsize=None)
def examples(family, mode="hf"):
    _, tok = ref_model(family)
    return bfm.prepare(spec(family, mode), tok, tiny_records(), SCHEMA)


@functools.lru_cache(maxsize=None)
def sources(family, ablation, mode="hf"):
    return bfm.ablation_sources(spec(family, mode), examples(family, mode), ablation, SCHEMA)


@functools.lru_cache(maxsize=None)
def expected(family, ablation="counterfactual", method="peap", mode="hf"):
    _, tok = ref_model(family)
    return bfm.brute_force_scores(spec(family, mode), tok, tiny_records(), SCHEMA,
                                  aggregations=("sum", "mean", "max_abs"), method=method,
                                  examples=examples(family, mode),
                                  sources=sources(family, ablation, mode))


@functools.lru_cache(maxsize=None)
def hf_logits(family, which):
    hf, _ = ref_model(family)
    out = []
    with torch.no_grad():
        for ex in examples(family):
            ids = ex.clean.ids if which == "clean" else ex.corrupted_ids
            out.append(hf(ids[None]).logits[0])
    return out


def hf_metric(family, which):
    return np.array([(lg[-1, ex.correct] - lg[-1, ex.incorrect]).item()
                     for ex, lg in zip(examples(family), hf_logits(family, which))])


@functools.lru_cache(maxsize=None)
def all_keys(family):
    keys = bfm.all_keys(spec(family), SCHEMA)
    assert len(set(keys)) == len(keys)
    return tuple(sorted(keys))


def _rand_subset(keys, frac, seed):
    rng = random.Random(seed)
    return frozenset(k for k in keys if rng.random() < frac)


@functools.lru_cache(maxsize=None)
def circuit(family, name):
    keys = all_keys(family)
    resid = [k for k in keys if k[0] == "resid"]
    cross = [k for k in keys if k[0] != "resid"]
    if name == "full":
        return frozenset(keys)
    if name == "empty":
        return frozenset()
    if name.startswith("rand"):
        pct, seed = name[4:].split("_s")
        return _rand_subset(keys, int(pct) / 100, int(seed))
    if name == "resid_all_cross30":
        return frozenset(resid) | _rand_subset(cross, 0.3, 11)
    if name == "cross_all_resid40":
        return frozenset(cross) | _rand_subset(resid, 0.4, 13)
    raise KeyError(name)


@functools.lru_cache(maxsize=None)
def brute_circuit(family, ablation, name, mode="hf", _break=None):
    return bfm.run_dataset(spec(family, mode), examples(family, mode),
                           sources(family, ablation, mode), circuit(family, name), _break=_break)


def closed_form_row_count(n_layer, n_head, n_spans, parallel=False, method="peap"):
    """Number of edges from the contract, without the reference's helpers."""
    per_span = 0
    for L in range(n_layer):
        up = 1 + L * (n_head + 1)                  # input + heads and MLPs of earlier layers
        per_span += n_head * 3 * up                # q, k, v slots of layer L
        per_span += up + (0 if parallel else n_head)   # m{L} (+ layer L's heads if sequential)
    per_span += 1 + n_layer * (n_head + 1)         # logits
    if method == "eap":
        return per_span
    return per_span * n_spans + n_layer * n_head * 3 * (n_spans * (n_spans + 1) // 2)


# ----------------------------------------------------------------------------------------------
# Engine side (a separate model instance, through the public API only)
# ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def engine_setup(family):
    import peap_widget as pw

    hf, tok = tiny_model(family, **model_kwargs(family))
    if family == FROM_DIRECTORY:
        import tempfile

        d = os.path.join(tempfile.mkdtemp(prefix="peap_fam_"), family)
        hf.save_pretrained(d)
        tok.save_pretrained(d)
        model = pw.load_model(d)
        assert model.dtype == torch.float64, model.dtype
    else:
        model = pw.load_model(hf, tokenizer=tok)
    ds = pw.Dataset.from_records(tiny_records(), model)
    return pw, model, ds


@functools.lru_cache(maxsize=None)
def engine_result(family, method="peap", ablation="counterfactual", aggregation="sum"):
    pw, model, ds = engine_setup(family)
    return pw.attribute(model, ds, method=method, ablation=ablation, aggregation=aggregation,
                        batch_size=2, progress=False)


def table_dict(df):
    for c in KEY_COLS + ["score"]:
        assert c in df.columns, f"missing column {c!r}; have {list(df.columns)}"
    keys = list(zip(*(df[c].astype(str).tolist() for c in KEY_COLS)))
    assert len(set(keys)) == len(keys), "duplicate edge rows"
    return dict(zip(keys, (float(x) for x in df["score"].tolist())))


def assert_matches(df, family, ablation="counterfactual", aggregation="sum", method="peap"):
    """Every row within RTOL x the largest |score| of the interval between the hf-mode and the
    f64-mode reference."""
    label = f"{family} {method} {ablation}/{aggregation}"
    want = expected(family, ablation, method, "hf")[aggregation]
    other = expected(family, ablation, method, "f64")[aggregation]
    got = table_dict(df)
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    assert not missing and not extra, (
        f"{label}: {len(missing)} missing rows (e.g. {missing[:4]}), {len(extra)} unexpected "
        f"rows (e.g. {extra[:4]})")
    scale = max(abs(v) for v in want.values())
    assert scale > 0
    bad, by_kind = [], {}
    for key, w in want.items():
        h, o = got[key], other[key]
        lo, hi = min(w, o), max(w, o)
        dist = 0.0 if lo <= h <= hi else min(abs(h - lo), abs(h - hi))
        if not (math.isfinite(h) and dist <= RTOL * scale):
            bad.append((dist, key, h, w, o))
            by_kind[key[0]] = by_kind.get(key[0], 0) + 1
    bad.sort(reverse=True)
    hint = ""
    if aggregation == "mean" and family in WINDOWED and set(by_kind) <= {"q", "k", "v"}:
        hint = ("\n  NOTE: only crossing rows differ under mean aggregation on a sliding-window "
                "model: the reference divides by the number of (t, t') pairs the head's mask "
                "ALLOWS (causal and window); a causal-only pair count gives these differences.")
    assert not bad, (
        f"{label}: {len(bad)}/{len(want)} rows differ by more than {RTOL:g} x {scale:.3g} "
        f"(per kind {by_kind}); worst:\n"
        + "\n".join(f"  {k}: engine={h!r} brute(hf)={w!r} brute(f64)={o!r}"
                    for _, k, h, w, o in bad[:12]) + hint)


def mask_for(res, circ):
    keys = list(zip(*(res.edges[c].astype(str).tolist() for c in KEY_COLS)))
    mask = np.array([k in circ for k in keys], dtype=bool)
    assert int(mask.sum()) == len(circ), "circuit rows missing from the engine's edge table"
    return mask


@functools.lru_cache(maxsize=None)
def engine_eval(family, ablation, name):
    pw, model, ds = engine_setup(family)
    res = engine_result(family)
    circ = res.circuit_from(mask_for(res, circuit(family, name)))
    return pw.evaluate(model, ds, circ, ablation=ablation, metric="logit_diff", batch_size=2)


def assert_close(label, got, want, rtol=EVAL_RTOL, atol=EVAL_ATOL):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{label}: shape {got.shape} != {want.shape}"
    assert np.all(np.isfinite(got)), f"{label}: non-finite values"
    err = np.abs(got - want)
    bad = err > atol + rtol * np.abs(want)
    if bad.any():
        idx = np.unravel_index(np.argmax(err - rtol * np.abs(want)), err.shape)
        raise AssertionError(f"{label}: {int(bad.sum())}/{bad.size} entries differ; worst at "
                             f"{idx}: engine={got[idx]!r} brute={want[idx]!r} "
                             f"(max abs err {err.max():.3e})")


# ----------------------------------------------------------------------------------------------
# Self-checks of the reference (no engine)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_reference_matches_hf_logits(family):
    """hf mode == HF logits to 1e-10 (relative to the largest |logit|) on every clean and
    corrupted prompt; f64 mode within HF's own float32 rounding (1e-5)."""
    hf, tok = ref_model(family)
    assert next(hf.parameters()).dtype == torch.float64
    worst = {"hf": 0.0, "f64": 0.0}
    for r in tiny_records():
        for text in (r["clean"], r["corrupted"]):
            ids = bfm.encode(tok, text)
            assert ids.shape[0] == len(text.split())
            with torch.no_grad():
                want = hf(ids[None]).logits[0]
            for mode in worst:
                got = bfm.run(spec(family, mode), ids).logits
                rel = ((got - want).abs().max() / want.abs().max()).item()
                worst[mode] = max(worst[mode], rel)
    assert worst["hf"] <= 1e-10, worst
    assert worst["f64"] <= 1e-5, worst


def _first_arg_hook(store, key):
    def hook(mod, args, kwargs, *out):
        x = args[0] if args else kwargs["hidden_states"]
        store[key] = (x[0] if isinstance(x, tuple) else x)[0].detach()
    return hook


@pytest.mark.parametrize("family", FAMILIES)
def test_reference_components_match_hf_modules(family):
    """The components are HF's own pieces: ``input`` == what enters block 0; sum_h z_h + bias ==
    what the attention sublayer adds to the residual (Gemma-2: the post-attention norm's output);
    m{L} == what the MLP sublayer adds (Gemma-2: after the post-feedforward norm)."""
    hf, tok = ref_model(family)
    sp = spec(family)
    if sp.family == "gpt2":
        blocks, att, mlp = hf.transformer.h, [b.attn for b in hf.transformer.h], \
            [b.mlp for b in hf.transformer.h]
    elif sp.family == "gpt_neox":
        blocks = hf.gpt_neox.layers
        att, mlp = [b.attention for b in blocks], [b.mlp for b in blocks]
    elif sp.family == "gemma2":
        blocks = hf.model.layers
        att = [b.post_attention_layernorm for b in blocks]
        mlp = [b.post_feedforward_layernorm for b in blocks]
    else:
        blocks = hf.model.layers
        att, mlp = [b.self_attn for b in blocks], [b.mlp for b in blocks]
    got = {}
    handles = [blocks[0].register_forward_pre_hook(_first_arg_hook(got, "input"), with_kwargs=True)]
    for L in range(sp.n_layers):
        handles.append(att[L].register_forward_hook(
            lambda m, i, o, L=L: got.__setitem__(f"a{L}", (o[0] if isinstance(o, tuple) else o)[0].detach())))
        handles.append(mlp[L].register_forward_hook(
            lambda m, i, o, L=L: got.__setitem__(f"m{L}", o[0].detach())))
    try:
        ids = bfm.encode(tok, tiny_records()[0]["clean"])
        with torch.no_grad():
            hf(ids[None])
    finally:
        for h in handles:
            h.remove()
    tr = bfm.run(sp, ids)

    def rel(a, b):
        return ((a - b).abs().max() / b.abs().max()).item()

    assert rel(tr.z["input"], got["input"]) <= 1e-12
    for L in range(sp.n_layers):
        total = sum(tr.z[f"a{L}.h{h}"] for h in range(sp.n_heads))
        if sp.layers[L].bo is not None:
            total = total + sp.layers[L].bo
        # Gemma-2: the components use the exact post-norm factor, HF rounds the norm in float32
        assert rel(total, got[f"a{L}"]) <= (1e-6 if sp.family == "gemma2" else 1e-12), L
        assert rel(tr.z[f"m{L}"], got[f"m{L}"]) <= 1e-12, L


def _metric(sp, ex, **kw):
    return bfm.run(sp, ex.clean.ids, ex.correct, ex.incorrect, grad=False, **kw).metric


RESID_FD_EDGES = [("input", "a1.h1<k>", "S2"), ("input", "a1.h0<k>", "S2"),
                  ("a0.h1", "m1", "IO"), ("m0", "logits", "to"), ("a1.h3", "m1", "action2"),
                  ("a0.h0", "a1.h1<q>", "to"), ("input", "a0.h3<v>", "S1"),
                  ("a0.h2", "a1.h2<v>", "S2"), ("m1", "logits", "to"), ("a0.h2", "m0", "prefix"),
                  ("a1.h0", "logits", "to")]


@pytest.mark.parametrize("family", FAMILIES)
def test_reference_residual_gradients_finite_difference(family):
    """Residual value summed over a span == d metric / d alpha when the slot's OWN input copy gets
    alpha (z*_u - z_u) on that span (f64 mode; central differences). The pairs a1.h0<k> /
    a1.h1<k> share a KV group under GQA: each is its own slot."""
    sp = spec(family, "f64")
    exs = examples(family, "f64")
    srcs = sources(family, "counterfactual", "f64")
    alpha = 1e-4
    checked = 0
    for ex, src in list(zip(exs, srcs))[:3]:
        vals = bfm.residual_values(sp, ex, src)
        for u, v, s in RESID_FD_EDGES:
            if (u, v) not in vals:          # parallel blocks: layer L's heads do not reach m{L}
                continue
            a, b = ex.record["spans"][s]
            if a == b:
                continue
            delta = torch.zeros_like(ex.clean.z[u])
            delta[a:b] = src.z[u][a:b] - ex.clean.z[u][a:b]
            up = _metric(sp, ex, slot_delta={v: alpha * delta})
            dn = _metric(sp, ex, slot_delta={v: -alpha * delta})
            fd = (up - dn) / (2 * alpha)
            score = vals[(u, v)][a:b].sum().item()
            assert abs(fd - score) <= 1e-5 * abs(score) + 1e-10, (u, v, s, fd, score)
            checked += 1
    assert checked >= 25


def _rhat_full(sp, ex, src, L, h, kind, t, tp):
    """Head (L, h)'s result r at query t with ONE change, from a full recomputation of the head
    (all queries, matrix form, mask with window): k/v: the key/value vector t' replaced for every
    query (only row t is read); q: only the score entry (t, t') from q*_t; kind None: no change."""
    c = ex.clean
    T = c.ids.shape[0]
    lw = sp.layers[L]
    q, k, v = c.q[(L, h)].clone(), c.k[(L, h)].clone(), c.v[(L, h)].clone()
    if kind == "k":
        k[tp] = src.k[(L, h)][tp]
    if kind == "v":
        v[tp] = src.v[(L, h)][tp]
    S = (q @ k.T) * lw.scale
    if kind == "q":
        S[t, tp] = src.q[(L, h)][t] @ k[tp] * lw.scale
    if sp.attn_softcap is not None:
        S = torch.tanh(S / sp.attn_softcap) * sp.attn_softcap
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    visible = (j <= i) if lw.window is None else ((j <= i) & (i - j < lw.window))
    A = torch.softmax(S.masked_fill(~visible, float("-inf")), -1)
    return (A @ v @ lw.Wo[h])[t]


@pytest.mark.parametrize("family", FAMILIES)
def test_reference_crossing_recompute_and_finite_difference(family):
    """Crossing value [t, t'] == (rhat - r[t]) . g_out[t] with rhat from an independent full
    recomputation of the head, and == d metric / d alpha when the head's result r at t moves by
    alpha (rhat - r[t]) (the forward then renormalises: Gemma-2's post-norm rms path included)."""
    for mode in ("f64", "hf"):
        sp = spec(family, mode)
        for ablation in ("counterfactual", "mean"):
            srcs = sources(family, ablation, mode)
            for ex, src in list(zip(examples(family, mode), srcs))[:2]:
                cv = bfm.crossing_values(sp, ex, src)
                T = ex.clean.ids.shape[0]
                for (L, h) in [(0, 1), (1, 2), (1, 3)]:
                    window = sp.layers[L].window
                    for kind in bfm.KINDS:
                        pairs = [(T - 1, T - 1), (T - 1, T - 2), (T - 1, 2), (T - 1, 0), (5, 3),
                                 (6, 6)]
                        for t, tp in pairs:
                            val = cv[((L, h), kind)][t, tp].item()
                            if window is not None and t - tp >= window:
                                assert math.isnan(val), (L, h, kind, t, tp)
                                continue
                            rhat = _rhat_full(sp, ex, src, L, h, kind, t, tp)
                            d = rhat - _rhat_full(sp, ex, src, L, h, None, t, tp)
                            # (== r_h[t] of the forward; in hf mode up to its float32 softmax)
                            assert torch.allclose(rhat - d, ex.clean.r[(L, h)][t], rtol=1e-6,
                                                  atol=1e-9)
                            direct = torch.dot(d, ex.clean.g_out[(L, h)][t]).item()
                            tol = 1e-9 if mode == "f64" else 1e-6
                            scale = ex.clean.g_out[(L, h)][t].abs().max().item() * max(
                                d.abs().max().item(), 1e-3)
                            assert abs(direct - val) <= tol * scale + 1e-12, (
                                mode, L, h, kind, t, tp, direct, val)
                            if mode != "f64" or ablation != "counterfactual":
                                continue
                            alpha = 1e-4
                            delta = torch.zeros_like(ex.clean.r[(L, h)])
                            delta[t] = d
                            up = _metric(sp, ex, head_delta={(L, h): alpha * delta})
                            dn = _metric(sp, ex, head_delta={(L, h): -alpha * delta})
                            fd = (up - dn) / (2 * alpha)
                            assert abs(fd - val) <= 1e-5 * abs(val) + 1e-10, (
                                L, h, kind, t, tp, fd, val)
                # no edges above the diagonal
                assert math.isnan(cv[((0, 0), "q")][0, 1].item())


@pytest.mark.parametrize("family", FAMILIES)
def test_reference_modes_agree(family):
    """hf and f64 readings differ only by HF's float32 rounding: within RTOL of the scale."""
    a, b = expected(family)["sum"], expected(family, mode="f64")["sum"]
    scale = max(abs(v) for v in a.values())
    worst = max(abs(a[k] - b[k]) for k in a)
    if family in ("gpt2", "gpt_neox", "gpt_neox_sequential"):   # LayerNorm: nothing rounded
        assert worst <= 1e-12 * scale, worst
    assert worst <= RTOL * scale, (worst / scale)


@pytest.mark.parametrize("family", FAMILIES)
def test_reference_row_count_and_signal(family):
    sp = spec(family)
    n = closed_form_row_count(sp.n_layers, sp.n_heads, len(SCHEMA), parallel=sp.parallel)
    assert bfm.row_count(sp, len(SCHEMA)) == n
    exp = expected(family)["sum"]
    assert len(exp) == n
    assert len(expected(family, method="eap")["sum"]) == closed_form_row_count(
        sp.n_layers, sp.n_heads, 1, parallel=sp.parallel, method="eap")
    scale = max(abs(v) for v in exp.values())
    # every kind has scores far above the tolerance (mistral: its 4-token window keeps the names
    # away from the last query, so counterfactual q rows are all 0; its mean ablation has them)
    for kind in ("resid", "q", "k", "v"):
        ablation = "mean" if (family == "mistral" and kind == "q") else "counterfactual"
        vals = [abs(v) for k, v in expected(family, ablation)["sum"].items() if k[0] == kind]
        big = sum(v > 1e-3 * scale for v in vals)
        assert big >= 8, (kind, ablation, big, max(vals) / scale)


@pytest.mark.parametrize("family,brk", [(f, "gqa_shared") for f in GQA]
                         + [(f, "no_window") for f in WINDOWED] + [("gemma2", "no_softcap")])
def test_reference_broken_variants_disagree(family, brk):
    """Sharing one k/v residual copy per KV group, ignoring the window or the soft-capping changes
    the scores by far more than the tolerance (so the engine comparisons can fail); the last two
    also break the HF logit match."""
    sp = spec(family, "f64")
    _, tok = ref_model(family)
    good = expected(family, mode="f64")["sum"]
    bad = bfm.brute_force_scores(sp, tok, tiny_records(), SCHEMA, _break=brk)["sum"]
    scale = max(abs(v) for v in good.values())
    diff = {}
    for k, v in good.items():
        if abs(v - bad[k]) > 1e-3 * scale:
            diff[k[0]] = diff.get(k[0], 0) + 1
    assert sum(diff.values()) >= 20, diff
    if brk == "gqa_shared":
        assert diff.get("resid", 0) >= 20, diff
        # only k/v slots of grouped heads move
        moved = {k[2][-2] for k, v in good.items() if k[0] == "resid"
                 and abs(v - bad[k]) > 1e-9 * scale}
        assert moved <= {"k", "v"}, moved
    else:
        ex = examples(family, "f64")[0]
        want = hf_logits(family, "clean")[0]
        got = bfm.run(sp, ex.clean.ids, _break=brk).logits
        assert (got - want).abs().max().item() > 1e-2 * want.abs().max().item()


@pytest.mark.parametrize("family", ["mistral", "gemma2"])
def test_reference_window_pair_counts_matter(family):
    """Crossing ``mean``: dividing by the causal pair count instead of the pairs the window allows
    changes rows by far more than the tolerance (so the engine test can tell the two apart).
    (Not Qwen2: its only windowed layer is the last one, whose crossing values are nonzero only at
    the last query, and each key span is wholly inside or wholly outside that query's window.)"""
    _, tok = ref_model(family)
    good = expected(family)["mean"]
    bad = bfm.brute_force_scores(spec(family), tok, tiny_records(), SCHEMA,
                                 aggregations=("mean",), examples=examples(family),
                                 sources=sources(family, "counterfactual"),
                                 _break="causal_pair_counts")["mean"]
    scale = max(abs(v) for v in good.values())
    moved = [k for k in good if abs(good[k] - bad[k]) > 1e-3 * scale]
    assert len(moved) >= 3 and {k[0] for k in moved} <= {"q", "k", "v"}, moved


@pytest.mark.parametrize("family", FAMILIES)
def test_reference_full_and_empty_circuits(family):
    """Circuit forward: full circuit == the plain forward (f64 mode: exact; hf mode: == HF logits,
    Gemma-2's decomposed post-norm within float32 rounding); empty circuit with the counterfactual
    source == the corrupted run."""
    sp64, sphf = spec(family, "f64"), spec(family, "hf")
    tol_hf = 1e-6 if family == "gemma2" else 1e-10
    for i, (ex, src) in enumerate(zip(examples(family, "f64"),
                                      sources(family, "counterfactual", "f64"))):
        full = bfm.run_circuit(sp64, ex.clean.ids, ex.span_at, circuit(family, "full"), src)
        assert torch.allclose(full, ex.clean.logits, rtol=0, atol=1e-10)
        empty = bfm.run_circuit(sp64, ex.clean.ids, ex.span_at, frozenset(), src)
        corr = bfm.run(sp64, ex.corrupted_ids).logits
        assert torch.allclose(empty, corr, rtol=0, atol=1e-10)
        exh, srch = examples(family, "hf")[i], sources(family, "counterfactual", "hf")[i]
        for circ, want in ((circuit(family, "full"), hf_logits(family, "clean")[i]),
                           (frozenset(), hf_logits(family, "corrupted")[i])):
            got = bfm.run_circuit(sphf, exh.clean.ids, exh.span_at, circ, srch)
            assert (got - want).abs().max().item() <= tol_hf * want.abs().max().item()


@pytest.mark.parametrize("family", FAMILIES)
def test_reference_circuits_are_discriminative(family):
    """The random circuits sit far from full and empty, and ignoring crossing rows or the attention
    output bias (GPT-2, GPT-NeoX) moves them by far more than the tolerance."""
    for ablation in EVAL_ABLATIONS.get(family, ("counterfactual",)):
        full, _ = brute_circuit(family, ablation, "full")
        empty, _ = brute_circuit(family, ablation, "empty")
        assert (full - empty).abs().max().item() > 0.05
        for name in CIRCUITS:
            per, _ = brute_circuit(family, ablation, name)
            assert (per - full).abs().max().item() > 1e-3, (ablation, name)
            assert (per - empty).abs().max().item() > 1e-3, (ablation, name)
        moved = [(brute_circuit(family, ablation, n, _break="crossing_all_in")[0]
                  - brute_circuit(family, ablation, n)[0]).abs().max().item()
                 for n in ("rand50_s1", "resid_all_cross30")]
        assert max(moved) > 1e-3, moved
        if spec(family).layers[0].bo is not None:
            per, _ = brute_circuit(family, ablation, "rand50_s1")
            wrong, _ = brute_circuit(family, ablation, "rand50_s1", _break="drop_bias")
            assert (wrong - per).abs().max().item() > 1e-3


@pytest.mark.parametrize("family", FAMILIES)
def test_reference_circuit_modes_agree(family):
    a, _ = brute_circuit(family, "counterfactual", "rand50_s1")
    b, _ = brute_circuit(family, "counterfactual", "rand50_s1", mode="f64")
    assert (a - b).abs().max().item() <= 1e-5 * max(1.0, a.abs().max().item())


# ----------------------------------------------------------------------------------------------
# Engine vs reference
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_engine_rows_are_contract_rows(family):
    sp = spec(family)
    df = engine_result(family).edges
    keys = list(zip(*(df[c].astype(str).tolist() for c in KEY_COLS)))
    assert len(keys) == len(set(keys))
    assert set(keys) == set(all_keys(family))
    assert len(keys) == closed_form_row_count(sp.n_layers, sp.n_heads, len(SCHEMA),
                                              parallel=sp.parallel)


@pytest.mark.parametrize("family", FAMILIES)
def test_engine_counterfactual_sum(family):
    assert_matches(engine_result(family).edges, family)


@pytest.mark.parametrize("family,ablation", ABLATION_CASES)
def test_engine_ablations(family, ablation):
    assert_matches(engine_result(family, ablation=ablation).edges, family, ablation)


@pytest.mark.parametrize("family,aggregation", AGGREGATION_CASES)
def test_engine_aggregations(family, aggregation):
    assert_matches(engine_result(family, aggregation=aggregation).edges, family,
                   aggregation=aggregation)


@pytest.mark.parametrize("family", FAMILIES)
def test_engine_eap(family):
    """EAP rows == the reference's (one span over the prompt), and == the sum over spans of the
    engine's own PEAP residual rows."""
    eap = engine_result(family, method="eap").edges
    assert set(eap["kind"]) == {"resid"} and set(eap["src_span"]) == {"all"}
    assert_matches(eap, family, method="eap")
    peap = engine_result(family).edges
    p = peap[peap["kind"] == "resid"].groupby(["src", "dst"])["score"].sum()
    e = table_dict(eap)
    assert len(p) == len(e)
    scale = max(abs(v) for v in e.values())
    for (_, src, dst, _, _), val in e.items():
        assert abs(val - p[(src, dst)]) <= 1e-9 * scale, (src, dst, val, p[(src, dst)])


@pytest.mark.parametrize("family", FAMILIES)
def test_engine_full_and_empty_circuits(family):
    clean, corrupted = hf_metric(family, "clean"), hf_metric(family, "corrupted")
    ev = engine_eval(family, "counterfactual", "full")
    assert_close(f"{family} full per_example vs HF clean", ev.per_example, clean, 0, 1e-5)
    assert abs(ev.metric - clean.mean()) < 1e-5 and abs(ev.clean_metric - clean.mean()) < 1e-5
    assert_close(f"{family} full last_logits vs HF clean", ev.last_logits,
                 torch.stack([lg[-1] for lg in hf_logits(family, "clean")]).numpy(), 0, 1e-5)
    ev = engine_eval(family, "counterfactual", "empty")
    assert_close(f"{family} empty per_example vs HF corrupted", ev.per_example, corrupted, 0,
                 1e-5)
    assert abs(ev.metric - corrupted.mean()) < 1e-5
    assert abs(ev.empty_metric - corrupted.mean()) < 1e-5


@pytest.mark.parametrize("family,ablation,name",
                         [(f, a, n) for f in FAMILIES
                          for a in EVAL_ABLATIONS.get(f, ("counterfactual",))
                          for n in (["full", "empty"] if a != "counterfactual" else []) + CIRCUITS])
def test_engine_random_circuits(family, ablation, name):
    per, last = brute_circuit(family, ablation, name)
    ev = engine_eval(family, ablation, name)
    assert_close(f"{family} {ablation}/{name} per_example", ev.per_example, per.numpy())
    assert_close(f"{family} {ablation}/{name} last_logits", ev.last_logits, last.numpy())


@pytest.mark.parametrize("family,ablation", [("gemma2", "mean"), ("gpt_neox", "zero"),
                                             ("qwen2", "counterfactual")])
def test_engine_evaluator_reused_across_circuits(family, ablation):
    """One ``pw.Evaluator`` (its cached clean run and ablation source) for several circuits in
    turn, another batch size: ``.logits`` and ``.run`` equal the reference for each."""
    pw, model, ds = engine_setup(family)
    res = engine_result(family)
    ev = pw.Evaluator(model, ds, ablation=ablation, batch_size=3)
    for name in ["rand50_s1", "full", "resid_all_cross30", "empty", "cross_all_resid40"]:
        per, last = brute_circuit(family, ablation, name)
        circ = res.circuit_from(mask_for(res, circuit(family, name)))
        assert_close(f"{family} {ablation}/{name} Evaluator.logits",
                     ev.logits(circ).double().cpu().numpy(), last.numpy())
        out = ev.run(circ)
        assert_close(f"{family} {ablation}/{name} Evaluator.run", out.per_example, per.numpy())
    full, _ = brute_circuit(family, ablation, "full")
    empty, _ = brute_circuit(family, ablation, "empty")
    per, _ = brute_circuit(family, ablation, "rand50_s1")
    out = ev.run(res.circuit_from(mask_for(res, circuit(family, "rand50_s1"))))
    want = (per.mean() - empty.mean()) / (full.mean() - empty.mean())
    assert abs(out.faithfulness - want.item()) <= 1e-5 * max(1.0, abs(want.item()))
