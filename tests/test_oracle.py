"""Oracle tests: every edge score of ``pw.attribute`` against an independent brute force.

The brute force (tests/brute_force.py) is written from the contract only: a hand-written float64
GPT-2 forward per example, per-slot input copies for the gradients, and an explicit single-entry
recomputation of the attention for every crossing edge (t, t'). The first tests check the brute
force itself (against HF logits and finite differences); the rest compare it with the engine.
"""

from __future__ import annotations

import functools
import math
import os
import sys

import pytest
import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
for _p in (_HERE, os.path.dirname(_HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import brute_force as bf  # noqa: E402
from tiny import SCHEMA, tiny_gpt2, tiny_records  # noqa: E402

RTOL = 1e-6
ATOL_REL = 1e-9  # times the largest |score| of the table

MODELS = {
    "base": dict(n_layer=2, n_head=4, d_model=16),
    "inv_layer": dict(n_layer=2, n_head=4, d_model=16, scale_attn_by_inverse_layer_idx=True),
}
KEY_COLS = ["kind", "src", "dst", "src_span", "dst_span"]


# ----------------------------------------------------------------------------------------------
# Cached builders (a separate model instance for the engine, so neither side can affect the other)
# ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def ref_model(name):
    return tiny_gpt2(**MODELS[name])


@functools.lru_cache(maxsize=None)
def ref_examples(name):
    hf, tok = ref_model(name)
    return bf.prepare(hf, tok, tiny_records(), SCHEMA)


@functools.lru_cache(maxsize=None)
def expected(name, ablation, method="peap"):
    hf, tok = ref_model(name)
    return bf.brute_force_scores(hf, tok, tiny_records(), SCHEMA, ablation=ablation,
                                 aggregations=("sum", "mean", "max_abs"), method=method,
                                 examples=ref_examples(name))


@functools.lru_cache(maxsize=None)
def engine_setup(name):
    import peap_widget as pw

    hf, tok = tiny_gpt2(**MODELS[name])
    model = pw.load_model(hf, tokenizer=tok)
    ds = pw.Dataset.from_records(tiny_records(), model)
    return pw, model, ds


@functools.lru_cache(maxsize=None)
def engine(name, method="peap", ablation="counterfactual", aggregation="sum", batch_size=2):
    pw, model, ds = engine_setup(name)
    res = pw.attribute(model, ds, method=method, ablation=ablation, aggregation=aggregation,
                       batch_size=batch_size, progress=False)
    return res.edges


def table_dict(df):
    """Edge table -> {(kind, src, dst, src_span, dst_span): score}; rows must be unique."""
    for c in KEY_COLS + ["score"]:
        assert c in df.columns, f"missing column {c!r}; have {list(df.columns)}"
    keys = list(zip(*(df[c].astype(str).tolist() for c in KEY_COLS)))
    scores = [float(x) for x in df["score"].tolist()]
    assert len(set(keys)) == len(keys), "duplicate edge rows"
    return dict(zip(keys, scores))


def assert_matches(df, exp, label=""):
    got = table_dict(df)
    missing = sorted(set(exp) - set(got))
    extra = sorted(set(got) - set(exp))
    assert not missing and not extra, (
        f"{label}: {len(missing)} missing rows (e.g. {missing[:5]}), "
        f"{len(extra)} unexpected rows (e.g. {extra[:5]})")
    assert len(df) == len(exp)
    scale = max(abs(v) for v in exp.values())
    bad = []
    for key, want in exp.items():
        have = got[key]
        if not (math.isfinite(have) and abs(have - want) <= RTOL * abs(want) + ATOL_REL * scale):
            bad.append((abs(have - want), key, have, want))
    bad.sort(reverse=True)
    by_kind = {}
    for _, key, _, _ in bad:
        by_kind[key[0]] = by_kind.get(key[0], 0) + 1
    assert not bad, (
        f"{label}: {len(bad)}/{len(exp)} rows differ (per kind {by_kind}); worst:\n"
        + "\n".join(f"  {k}: engine={h!r} brute={w!r}" for _, k, h, w in bad[:12]))


def closed_form_row_count(n_layer, n_head, n_spans, method="peap"):
    """Number of valid edges, counted from the contract without the brute force's helpers."""
    per_span = 0
    for L in range(n_layer):
        up_head = 1 + L * (n_head + 1)      # input + heads and MLPs of earlier layers
        per_span += n_head * 3 * up_head     # q, k, v slot of every head of layer L
        per_span += up_head + n_head         # m{L} also sees the heads of layer L
    per_span += 1 + n_layer * (n_head + 1)   # logits: all components
    if method == "eap":
        return per_span
    return per_span * n_spans + n_layer * n_head * 3 * (n_spans * (n_spans + 1) // 2)


# ----------------------------------------------------------------------------------------------
# Self-checks of the brute force (no engine needed)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(MODELS))
def test_manual_forward_matches_hf(name):
    hf, tok = ref_model(name)
    for r in tiny_records():
        for text in (r["clean"], r["corrupted"]):
            ids = bf.encode(tok, text)
            assert ids.shape[0] == len(text.split())
            tr = bf.run_gpt2(hf, ids)
            with torch.no_grad():
                ref = hf(ids[None]).logits[0]
            assert ref.dtype == torch.float64
            assert torch.allclose(tr.logits, ref, rtol=0, atol=1e-10), (tr.logits - ref).abs().max()


def test_brute_force_head_results_sum_to_attention_output():
    """Sum of head results + c_proj bias == HF attention output (checks the W_O^h slicing)."""
    hf, tok = ref_model("base")
    ids = bf.encode(tok, tiny_records()[0]["clean"])
    captured = {}
    handles = [hf.transformer.h[L].attn.register_forward_hook(
        lambda mod, inp, out, L=L: captured.__setitem__(L, out[0][0].detach()))
        for L in range(hf.config.n_layer)]
    try:
        with torch.no_grad():
            hf(ids[None])
    finally:
        for hd in handles:
            hd.remove()
    tr = bf.run_gpt2(hf, ids)
    for L in range(hf.config.n_layer):
        total = sum(tr.z[f"a{L}.h{h}"] for h in range(hf.config.n_head))
        total = total + hf.transformer.h[L].attn.c_proj.bias
        assert torch.allclose(total, captured[L], atol=1e-10)


def _metric(hf, tok, ex, **deltas):
    r = ex.record
    return bf.run_gpt2(hf, ex.clean.ids, bf.answer_id(tok, r["correct"]),
                       bf.answer_id(tok, r["incorrect"]), **deltas).metric


def test_brute_force_residual_gradients_finite_difference():
    """Per-example residual edge (sum over a span) == d metric / d alpha when the edge's slot copy
    gets alpha * (z*_u - z_u) on that span's positions."""
    hf, tok = ref_model("base")
    exs = ref_examples("base")
    srcs = bf.ablation_sources(hf, exs, "counterfactual", SCHEMA)
    edges = [("input", "a1.h2<k>", "S2"), ("a0.h1", "m1", "IO"), ("m0", "logits", "to"),
             ("a1.h3", "m1", "action2"), ("a0.h0", "a1.h1<q>", "to"), ("input", "a0.h3<v>", "S1"),
             ("m1", "logits", "to"), ("a0.h2", "m0", "prefix")]
    alpha = 1e-4
    checked = 0
    for ex, src in zip(exs, srcs):
        vals = bf.residual_values(hf, ex, src)
        for u, v, s in edges:
            a, b = ex.record["spans"][s]
            if a == b:
                continue
            delta = torch.zeros_like(ex.clean.z[u])
            delta[a:b] = src.z[u][a:b] - ex.clean.z[u][a:b]
            up = _metric(hf, tok, ex, slot_delta={v: alpha * delta})
            dn = _metric(hf, tok, ex, slot_delta={v: -alpha * delta})
            fd = (up - dn) / (2 * alpha)
            score = vals[(u, v)][a:b].sum().item()
            assert abs(fd - score) <= 1e-5 * abs(score) + 1e-9, (u, v, s, fd, score)
            checked += 1
    assert checked >= 30


def _zhat_matrix_form(hf, ex, src, L, h, kind, t, tp):
    """Head (L, h) result at query t with one change, computed with full score/value matrices
    (a second code path, independent of the per-row recomputation in the brute force)."""
    c = ex.clean
    T = c.ids.shape[0]
    Wo = bf.head_weights(hf, L, h)[-1]
    q, k, v = c.q[(L, h)].clone(), c.k[(L, h)].clone(), c.v[(L, h)].clone()
    S = q @ k.T
    V = v.unsqueeze(0).repeat(T, 1, 1)  # per-query copy of the value vectors
    if kind == "q":
        S[t, tp] = src.q[(L, h)][t] @ k[tp]
    elif kind == "k":
        S[t, tp] = q[t] @ src.k[(L, h)][tp]
    else:
        V[t, tp] = src.v[(L, h)][tp]
    S = S * bf.attn_scale(hf, L)
    S = S.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
    A = torch.softmax(S, -1)
    return torch.einsum("ij,ijd->id", A, V)[t] @ Wo


@pytest.mark.parametrize("name", list(MODELS))
def test_brute_force_crossing_finite_difference(name):
    """Crossing value [t, t'] == d metric / d alpha when head h's result at t is moved by
    alpha * (zhat - z_h[t]), zhat from a matrix-form recomputation."""
    hf, tok = ref_model(name)
    exs = ref_examples(name)
    alpha = 1e-4
    for ablation in ("counterfactual", "mean"):
        srcs = bf.ablation_sources(hf, exs, ablation, SCHEMA)
        for ex, src in list(zip(exs, srcs))[:2]:
            cv = bf.crossing_values(hf, ex, src)
            T = ex.clean.ids.shape[0]
            for (L, h) in [(0, 1), (1, 2)]:
                for kind in bf.KINDS:
                    for t, tp in [(T - 1, T - 1), (T - 1, 2), (T - 1, 0), (5, 3)]:
                        zhat = _zhat_matrix_form(hf, ex, src, L, h, kind, t, tp)
                        d = torch.zeros_like(ex.clean.z[f"a{L}.h{h}"])
                        d[t] = zhat - ex.clean.z[f"a{L}.h{h}"][t]
                        up = _metric(hf, tok, ex, head_delta={(L, h): alpha * d})
                        dn = _metric(hf, tok, ex, head_delta={(L, h): -alpha * d})
                        fd = (up - dn) / (2 * alpha)
                        val = cv[((L, h), kind)][t, tp].item()
                        assert abs(fd - val) <= 1e-5 * abs(val) + 1e-9, (L, h, kind, t, tp, fd, val)
            # above the diagonal there are no edges
            assert torch.isnan(cv[((0, 0), "q")][0, 1])


def test_brute_force_row_count():
    hf, _ = ref_model("base")
    n = closed_form_row_count(2, 4, len(SCHEMA))
    assert n == 1744
    assert bf.expected_row_count(hf, SCHEMA) == n
    assert len(expected("base", "counterfactual")["sum"]) == n
    assert len(expected("base", "counterfactual", "eap")["sum"]) == closed_form_row_count(
        2, 4, 1, "eap")


def test_brute_force_has_signal():
    """Each kind has clearly nonzero scores, so the comparisons below can fail."""
    for ablation in ("counterfactual", "mean", "zero"):
        exp = expected("base", ablation)["sum"]
        for kind in ("resid", "q", "k", "v"):
            vals = [abs(v) for k, v in exp.items() if k[0] == kind]
            assert sum(v > 1e-4 for v in vals) >= 20, (ablation, kind)
            assert max(vals) > 1e-3, (ablation, kind)


# ----------------------------------------------------------------------------------------------
# Engine vs brute force
# ----------------------------------------------------------------------------------------------


def test_engine_counterfactual_sum():
    df = engine("base")
    exp = expected("base", "counterfactual")["sum"]
    assert len(df) == closed_form_row_count(2, 4, len(SCHEMA))
    assert set(df["kind"]) == {"resid", "q", "k", "v"}
    got = table_dict(df)
    for kind in ("resid", "q", "k", "v"):
        assert sum(abs(v) > 1e-4 for k, v in got.items() if k[0] == kind) >= 20, kind
    assert_matches(df, exp, "counterfactual/sum")


def test_engine_rows_structure():
    df = engine("base")
    resid = df[df["kind"] == "resid"]
    assert (resid["src_span"] == resid["dst_span"]).all()
    cross = df[df["kind"] != "resid"]
    assert (cross["src"] == cross["dst"]).all()
    order = {s: i for i, s in enumerate(SCHEMA)}
    assert all(order[a] <= order[b] for a, b in zip(cross["src_span"], cross["dst_span"]))
    # the empty prefix span of record 2 still has rows; spans empty everywhere would be 0
    assert len(resid[resid["src_span"] == "prefix"]) == len(resid) // len(SCHEMA)


@pytest.mark.parametrize("ablation", ["mean", "zero"])
def test_engine_ablations(ablation):
    assert_matches(engine("base", ablation=ablation), expected("base", ablation)["sum"],
                   f"{ablation}/sum")


@pytest.mark.parametrize("aggregation", ["mean", "max_abs"])
def test_engine_aggregations(aggregation):
    assert_matches(engine("base", aggregation=aggregation),
                   expected("base", "counterfactual")[aggregation], f"counterfactual/{aggregation}")


def test_engine_batch_size_none_same():
    a = table_dict(engine("base", batch_size=2))
    b = table_dict(engine("base", batch_size=None))
    assert a.keys() == b.keys()
    scale = max(abs(v) for v in a.values())
    worst = max(abs(a[k] - b[k]) for k in a)
    assert worst <= 1e-10 * scale, worst
    assert_matches(engine("base", batch_size=None), expected("base", "counterfactual")["sum"],
                   "counterfactual/sum, batch_size=None")


def test_engine_scale_attn_by_inverse_layer_idx():
    assert_matches(engine("inv_layer"), expected("inv_layer", "counterfactual")["sum"],
                   "inv_layer counterfactual/sum")


@pytest.mark.parametrize("ablation", ["counterfactual", "mean", "zero"])
def test_eap_equals_sum_over_spans(ablation):
    eap = engine("base", method="eap", ablation=ablation)
    peap = engine("base", ablation=ablation)
    assert set(eap["kind"]) == {"resid"}
    assert set(eap["src_span"]) == {"all"} and set(eap["dst_span"]) == {"all"}
    assert len(eap) == closed_form_row_count(2, 4, 1, "eap")
    e = table_dict(eap)
    p = peap[peap["kind"] == "resid"].groupby(["src", "dst"])["score"].sum()
    assert len(p) == len(e)
    scale = max(abs(v) for v in e.values())
    for (_, src, dst, _, _), val in e.items():
        assert abs(val - p[(src, dst)]) <= 1e-9 * scale, (src, dst, val, p[(src, dst)])


@pytest.mark.parametrize("ablation", ["counterfactual", "mean"])
def test_eap_matches_brute_force(ablation):
    """EAP: residual edges summed over the whole prompt (one span "all"). The mean-ablation source
    is the per-span-type mean of the dataset's spans, as for PEAP (the contract's identity
    EAP == sum over spans of PEAP holds for every ablation), not a mean over all tokens."""
    assert_matches(engine("base", method="eap", ablation=ablation),
                   expected("base", ablation, "eap")["sum"], f"eap/{ablation}")
