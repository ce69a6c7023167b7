"""Oracle tests: ``pw.evaluate`` (circuit evaluation, DESIGN.md section 5) against an independent
brute force.

tests/brute_eval.py rebuilds, per example and per position, every slot input from the circuit's
residual rows (z_u of the patched run or the ablation source's z*_u, biases kept), every head's
q/k/v from its own slot input, and every attention entry (t, t') from the crossing rows
(q/q*, k/k*, v/v*). The first tests check that reference on its own (full circuit == HF clean,
empty circuit == HF corrupted, closed forms, a hook-based patch) and that the circuits used are
discriminative (deliberately broken references disagree by a lot); the rest compare the engine.
"""

from __future__ import annotations

import functools
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

import brute_eval as be  # noqa: E402
import brute_force as bf  # noqa: E402
from tiny import SCHEMA, tiny_gpt2, tiny_records  # noqa: E402

MODELS = {
    "base": dict(n_layer=2, n_head=4, d_model=16),
    # three layers (bias sums / upstream sets per layer), GPT-2's 1/(layer+1) score scaling
    "deep": dict(n_layer=3, n_head=2, d_model=8, scale_attn_by_inverse_layer_idx=True),
}
KEY_COLS = ["kind", "src", "dst", "src_span", "dst_span"]
ABLATIONS = ["counterfactual", "mean", "zero"]
RTOL, ATOL = 1e-6, 1e-8


# ----------------------------------------------------------------------------------------------
# Reference side (its own model instance)
# ----------------------------------------------------------------------------------------------


def make_model(mname="base"):
    """The tiny random GPT-2 with nonzero biases and non-constant LayerNorm affines (HF's init
    zeroes every bias, which would leave "biases always kept" untested). Deterministic, so the
    reference and the engine get identical, separate instances."""
    hf, tok = tiny_gpt2(**MODELS[mname])
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype)
            if ".ln_" in name and name.endswith(".weight"):
                p.mul_(1 + 0.25 * noise)
            elif ".ln_" in name and name.endswith(".bias"):
                p.copy_(0.5 * noise)
            elif name.endswith(".bias"):
                p.copy_(0.1 * noise)
    return hf, tok


@functools.lru_cache(maxsize=None)
def ref(mname="base"):
    hf, tok = make_model(mname)
    return hf, tok, bf.prepare(hf, tok, tiny_records(), SCHEMA)


@functools.lru_cache(maxsize=None)
def sources(ablation, mname="base"):
    hf, _, exs = ref(mname)
    return bf.ablation_sources(hf, exs, ablation, SCHEMA)


@functools.lru_cache(maxsize=None)
def all_keys(mname="base"):
    hf, _, _ = ref(mname)
    keys = be.all_keys(hf, SCHEMA)
    assert len(set(keys)) == len(keys)
    assert mname != "base" or len(keys) == 1744
    return tuple(sorted(keys))


def _rand_subset(keys, frac, seed):
    rng = random.Random(seed)
    return frozenset(k for k in keys if rng.random() < frac)


@functools.lru_cache(maxsize=None)
def _circuit(name, mname="base"):
    """Named circuits as frozensets of PEAP row keys (fixed by seed, independent of the engine)."""
    keys = all_keys(mname)
    resid = [k for k in keys if k[0] == "resid"]
    cross = [k for k in keys if k[0] != "resid"]
    if name == "full":
        return frozenset(keys)
    if name == "empty":
        return frozenset()
    if name.startswith("rand"):  # rand{pct}_s{seed}: rows of all kinds and spans
        pct, seed = name[4:].split("_s")
        return _rand_subset(keys, int(pct) / 100, int(seed))
    if name == "resid_all_cross50":
        return frozenset(resid) | _rand_subset(cross, 0.5, 11)
    if name == "resid_all_cross20":
        return frozenset(resid) | _rand_subset(cross, 0.2, 12)
    if name == "cross_all_resid50":
        return frozenset(cross) | _rand_subset(resid, 0.5, 13)
    if name.startswith("full_minus_"):  # every row except the crossing rows of one kind
        kind = name[len("full_minus_"):]
        return frozenset(k for k in keys if k[0] != kind)
    if name == "to_all_rand10":
        # every row at the last token's span (resid into it, attention from it) + 10% of the rest
        return frozenset(k for k in keys if k[4] == "to") | _rand_subset(keys, 0.1, 14)
    if name == "spans_io_s2_to":
        # structured: every row whose span(s) are all among IO, S2, to
        keep = {"IO", "S2", "to"}
        return frozenset(k for k in keys if k[3] in keep and k[4] in keep)
    raise KeyError(name)


BREAKS = ["drop_bias", "crossing_all_in", "crossing_swapped", "qk_swapped"]
RANDOM_CIRCUITS = ["rand10_s1", "rand25_s1", "rand50_s1", "rand90_s2", "resid_all_cross50",
                   "resid_all_cross20", "cross_all_resid50", "spans_io_s2_to", "to_all_rand10",
                   "full_minus_q", "full_minus_k", "full_minus_v"]


@functools.lru_cache(maxsize=None)
def brute(ablation, circuit, _break=None, mname="base"):
    """(per_example [N], last logits [N, vocab]) of the reference; circuit: frozenset of keys."""
    hf, tok, exs = ref(mname)
    return be.run_dataset(hf, tok, exs, sources(ablation, mname), circuit, _break=_break)


def brute_named(ablation, name, _break=None):
    return brute(ablation, _circuit(name), _break)


def expected_summary(ablation, circuit, mname="base"):
    per, last = brute(ablation, circuit, mname=mname)
    full_per, full_last = brute(ablation, _circuit("full", mname), mname=mname)
    empty_per, _ = brute(ablation, _circuit("empty", mname), mname=mname)
    return be.summary(per, last, full_per, full_last, empty_per)


@functools.lru_cache(maxsize=None)
def hf_logits(which):
    """Plain HF logits (list over examples of (T, vocab)) on the clean or corrupted prompts."""
    hf, _, exs = ref()
    out = []
    with torch.no_grad():
        for ex in exs:
            ids = ex.clean.ids if which == "clean" else ex.corrupted_ids
            out.append(hf(ids[None]).logits[0])
    return out


def hf_metric(which):
    hf, tok, exs = ref()
    vals = []
    for ex, lg in zip(exs, hf_logits(which)):
        r = ex.record
        c, i = bf.answer_id(tok, r["correct"]), bf.answer_id(tok, r["incorrect"])
        vals.append((lg[-1, c] - lg[-1, i]).item())
    return np.array(vals)


# ----------------------------------------------------------------------------------------------
# Engine side (a separate model instance)
# ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def engine_setup(mname="base"):
    import peap_widget as pw

    hf, tok = make_model(mname)
    model = pw.load_model(hf, tokenizer=tok)
    ds = pw.Dataset.from_records(tiny_records(), model)
    return pw, model, ds


@functools.lru_cache(maxsize=None)
def engine_result(method="peap", mname="base", ablation="counterfactual"):
    pw, model, ds = engine_setup(mname)
    return pw.attribute(model, ds, method=method, ablation=ablation, progress=False)


def row_keys(df):
    for c in KEY_COLS:
        assert c in df.columns, f"missing column {c!r}; have {list(df.columns)}"
    return list(zip(*(df[c].astype(str).tolist() for c in KEY_COLS)))


def mask_for(res, circuit):
    keys = row_keys(res.edges)
    return np.array([k in circuit for k in keys], dtype=bool)


@functools.lru_cache(maxsize=None)
def engine_eval(ablation, circuit, method="peap", batch_size=2, form="mask", mname="base"):
    pw, model, ds = engine_setup(mname)
    res = engine_result(method, mname)
    mask = mask_for(res, circuit)
    assert int(mask.sum()) == len(circuit), "circuit rows missing from the engine's edge table"
    if form == "mask":
        rows = mask
    elif form == "indices":
        rows = [int(i) for i in np.flatnonzero(mask)][::-1]  # order must not matter
    elif form == "frame":
        rows = res.edges[mask].sample(frac=1.0, random_state=0)  # shuffled subset
    else:
        raise ValueError(form)
    circ = res.circuit_from(rows)
    return pw.evaluate(model, ds, circ, ablation=ablation, metric="logit_diff",
                       batch_size=batch_size)


def assert_close(label, got, want, rtol=RTOL, atol=ATOL):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{label}: shape {got.shape} != {want.shape}"
    assert np.all(np.isfinite(got)), f"{label}: non-finite values"
    err = np.abs(got - want)
    bad = err > atol + rtol * np.abs(want)
    if bad.any():
        idx = np.unravel_index(np.argmax(err - atol - rtol * np.abs(want)), err.shape)
        raise AssertionError(
            f"{label}: {int(bad.sum())}/{bad.size} entries differ; worst at {idx}: "
            f"engine={got[idx]!r} brute={want[idx]!r} (max abs err {err.max():.3e})"
            + (f"\n  engine={got.round(6).tolist()}\n  brute ={want.round(6).tolist()}"
               if got.ndim == 1 else ""))


def check_eval(ev, ablation, circuit, label, mname="base"):
    per, last = brute(ablation, circuit, mname=mname)
    assert_close(f"{label} per_example", ev.per_example, per.numpy())
    assert_close(f"{label} last_logits", ev.last_logits, last.numpy())
    exp = expected_summary(ablation, circuit, mname)
    for name in ("metric", "clean_metric", "empty_metric", "faithfulness", "soft", "kl"):
        assert_close(f"{label} {name}", float(getattr(ev, name)), exp[name])
    assert abs(float(ev.hard) - exp["hard"]) < 1e-12, (label, ev.hard, exp["hard"])


# ----------------------------------------------------------------------------------------------
# Self-checks of the reference (no engine needed)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ablation", ABLATIONS)
def test_brute_full_circuit_is_clean_run(ablation):
    hf, _, exs = ref()
    for ex, src, want in zip(exs, sources(ablation), hf_logits("clean")):
        got = be.run_circuit(hf, ex.clean.ids, ex.span_at, _circuit("full"), src)
        assert torch.allclose(got, want, rtol=0, atol=1e-10), (got - want).abs().max()


def test_brute_empty_circuit_is_corrupted_run():
    hf, _, exs = ref()
    for ex, src, want in zip(exs, sources("counterfactual"), hf_logits("corrupted")):
        got = be.run_circuit(hf, ex.clean.ids, ex.span_at, _circuit("empty"), src)
        assert torch.allclose(got, want, rtol=0, atol=1e-10), (got - want).abs().max()


@pytest.mark.parametrize("ablation", ["mean", "zero"])
def test_brute_empty_circuit_closed_form(ablation):
    """Empty circuit: the logits slot gets all attention c_proj biases + sum_u z*_u[t]."""
    hf, _, exs = ref()
    tr = hf.transformer
    for ex, src in zip(exs, sources(ablation)):
        x = sum(tr.h[l].attn.c_proj.bias for l in range(hf.config.n_layer))
        x = x + sum(src.z[u] for u in bf.components(hf))
        want = torch.nn.functional.layer_norm(
            x, (hf.config.n_embd,), tr.ln_f.weight, tr.ln_f.bias, tr.ln_f.eps) @ hf.lm_head.weight.T
        got = be.run_circuit(hf, ex.clean.ids, ex.span_at, _circuit("empty"), src)
        assert torch.allclose(got, want, rtol=0, atol=1e-10), (got - want).abs().max()


def test_brute_single_logits_edge_matches_hf_hook():
    """Full circuit minus one (u -> logits, span s) row == HF run whose ln_f input gets
    z*_u - z_u at the positions of s (a second code path through HF's own modules)."""
    hf, _, exs = ref()
    full = _circuit("full")
    for u, s in [("m0", "to"), ("a1.h2", "S2"), ("input", "IO"), ("a0.h1", "action2")]:
        circ = full - {("resid", u, "logits", s, s)}
        for ex, src in zip(exs, sources("counterfactual")):
            a, b = ex.record["spans"][s]
            delta = torch.zeros_like(ex.clean.z[u])
            delta[a:b] = src.z[u][a:b] - ex.clean.z[u][a:b]
            h = hf.transformer.ln_f.register_forward_pre_hook(lambda m, args: (args[0] + delta,))
            try:
                with torch.no_grad():
                    want = hf(ex.clean.ids[None]).logits[0]
            finally:
                h.remove()
            got = be.run_circuit(hf, ex.clean.ids, ex.span_at, circ, src)
            assert torch.allclose(got, want, rtol=0, atol=1e-10), (u, s, (got - want).abs().max())


@pytest.mark.parametrize("ablation", ABLATIONS)
def test_circuits_are_discriminative(ablation):
    """The circuits move the metric a lot, and deliberately broken references disagree with the
    correct one by far more than the tolerance, so the engine comparisons below can fail."""
    full, _ = brute_named(ablation, "full")
    empty, _ = brute_named(ablation, "empty")
    assert (full - empty).abs().max().item() > 0.5
    far = 1e-2  # ~1e4 times the comparison tolerance
    moved = []
    caught = {brk: [] for brk in BREAKS}
    for name in RANDOM_CIRCUITS:
        per, _ = brute_named(ablation, name)
        d_full = (per - full).abs().max().item()
        d_empty = (per - empty).abs().max().item()
        moved.append(min(d_full, d_empty))
        assert d_full > far, (name, per, full)
        # A sparse random circuit carries no name information to the last token, so under
        # counterfactual ablation it is exactly the empty circuit (inputs differ only at names).
        if not (ablation == "counterfactual" and name == "rand10_s1"):
            assert d_empty > far, (name, per, empty)
        for brk in BREAKS:
            wrong, _ = brute_named(ablation, name, _break=brk)
            caught[brk].append((wrong - per).abs().max().item() > far)
    # Each deliberate break changes the result of many circuits (not all: e.g. crossing breaks do
    # nothing where every crossing row is in). Under zero ablation an ablated q and an ablated k
    # both make the score 0, so swapping q and k rows cannot matter there.
    need = {"drop_bias": len(RANDOM_CIRCUITS), "crossing_all_in": 8, "crossing_swapped": 8,
            "qk_swapped": 0 if ablation == "zero" else 6}
    for brk in BREAKS:
        assert sum(caught[brk]) >= need[brk], (brk, dict(zip(RANDOM_CIRCUITS, caught[brk])))
    assert float(np.median(moved)) > 0.1, moved


# ----------------------------------------------------------------------------------------------
# Engine vs reference
# ----------------------------------------------------------------------------------------------


def test_engine_rows_are_contract_rows():
    keys = row_keys(engine_result("peap").edges)
    assert len(keys) == len(set(keys))
    assert set(keys) == set(all_keys())


@pytest.mark.parametrize("ablation", ABLATIONS)
@pytest.mark.parametrize("name", RANDOM_CIRCUITS)
def test_evaluate_random_circuits(ablation, name):
    circ = _circuit(name)
    check_eval(engine_eval(ablation, circ), ablation, circ, f"{ablation}/{name}")


@pytest.mark.parametrize("ablation", ABLATIONS)
def test_evaluate_full_and_empty(ablation):
    full, empty = _circuit("full"), _circuit("empty")
    clean_metric = hf_metric("clean")
    empty_per, _ = brute(ablation, empty)
    for ev in (engine_eval(ablation, full), engine_eval(ablation, empty),
               engine_eval(ablation, _circuit("rand50_s1"))):
        assert abs(ev.clean_metric - clean_metric.mean()) < 1e-5, (ev.clean_metric, clean_metric)
        assert abs(ev.empty_metric - empty_per.mean().item()) < 1e-5, (ev.empty_metric, empty_per)
        if ablation == "counterfactual":
            corr = hf_metric("corrupted").mean()
            assert abs(ev.empty_metric - corr) < 1e-5, (ev.empty_metric, corr)

    ev = engine_eval(ablation, full)
    assert_close("full per_example", ev.per_example, clean_metric)
    assert_close("full last_logits", ev.last_logits,
                 torch.stack([lg[-1] for lg in hf_logits("clean")]).numpy())
    assert abs(ev.metric - clean_metric.mean()) < 1e-5
    assert abs(ev.faithfulness - 1.0) < 1e-8 and abs(ev.soft - 1.0) < 1e-8
    assert ev.hard == 1.0 and abs(ev.kl) < 1e-10
    check_eval(ev, ablation, full, f"{ablation}/full")

    ev = engine_eval(ablation, empty)
    assert_close("empty per_example", ev.per_example, empty_per.numpy())
    if ablation == "counterfactual":
        assert_close("empty per_example vs HF corrupted", ev.per_example, hf_metric("corrupted"))
        assert_close("empty last_logits vs HF corrupted", ev.last_logits,
                     torch.stack([lg[-1] for lg in hf_logits("corrupted")]).numpy())
    assert abs(ev.metric - ev.empty_metric) < 1e-5
    assert abs(ev.faithfulness) < 1e-8
    check_eval(ev, ablation, empty, f"{ablation}/empty")


def test_evaluate_circuit_from_forms_agree():
    """Boolean mask, (reversed) list of row indices and a (shuffled) DataFrame subset."""
    circ = _circuit("rand50_s1")
    base = engine_eval("counterfactual", circ, form="mask")
    for form in ("indices", "frame"):
        ev = engine_eval("counterfactual", circ, form=form)
        for attr in ("per_example", "last_logits"):
            assert_close(f"form={form} {attr}", getattr(ev, attr), getattr(base, attr),
                         rtol=0, atol=1e-12)


@pytest.mark.parametrize("batch_size", [None, 1, 3])
def test_evaluate_batch_size_independent(batch_size):
    circ = _circuit("rand50_s1")
    ev = engine_eval("mean", circ, batch_size=batch_size)
    check_eval(ev, "mean", circ, f"mean/rand50_s1 batch_size={batch_size}")


@functools.lru_cache(maxsize=None)
def _eap_circuit(name):
    keys = sorted(set(row_keys(engine_result("eap").edges)))
    hf, _, _ = ref()
    assert len(keys) == len(bf.residual_edges(hf))
    assert {k[0] for k in keys} == {"resid"} and {k[3] for k in keys} == {"all"}
    if name == "full":
        return frozenset(keys)
    if name == "empty":
        return frozenset()
    pct, seed = name[4:].split("_s")
    return _rand_subset(keys, int(pct) / 100, int(seed))


@pytest.mark.parametrize("ablation", ABLATIONS)
@pytest.mark.parametrize("name", ["rand50_s3", "rand20_s4", "full", "empty"])
def test_evaluate_eap_circuit(ablation, name):
    """EAP circuit: each resid row applied at every position (on the data's real spans) and every
    crossing edge in."""
    hf, _, _ = ref()
    eap = _eap_circuit(name)
    peap_equiv = frozenset(be.expand_eap(hf, eap, SCHEMA))
    ev = engine_eval(ablation, eap, method="eap")
    check_eval(ev, ablation, peap_equiv, f"eap {ablation}/{name}")
    if name in ("rand50_s3", "rand20_s4"):
        per, _ = brute(ablation, peap_equiv)
        full, _ = brute(ablation, _circuit("full"))
        assert (per - full).abs().max().item() > 0.05, (name, per, full)
    if name == "full":
        assert_close("eap full per_example", ev.per_example, hf_metric("clean"))


@pytest.mark.parametrize("ablation", ABLATIONS)
@pytest.mark.parametrize("name", ["rand50_s1", "resid_all_cross50", "cross_all_resid50"])
def test_evaluate_deeper_model(ablation, name):
    """Three layers, two heads, scale_attn_by_inverse_layer_idx."""
    circ = _circuit(name, "deep")
    per, _ = brute(ablation, circ, mname="deep")
    full, _ = brute(ablation, _circuit("full", "deep"), mname="deep")
    empty, _ = brute(ablation, _circuit("empty", "deep"), mname="deep")
    assert (per - full).abs().max().item() > 1e-2 and (per - empty).abs().max().item() > 1e-2
    check_eval(engine_eval(ablation, circ, mname="deep"), ablation, circ, f"deep {ablation}/{name}",
               mname="deep")


@pytest.mark.parametrize("ablation", ["mean", "zero"])
def test_evaluate_defaults_to_the_attribution_settings(ablation):
    """``ablation=None`` takes the ablation of the attribution the circuit came from."""
    pw, model, ds = engine_setup()
    res = engine_result("peap", ablation=ablation)
    circ = _circuit("rand50_s1")
    ev = pw.evaluate(model, ds, res.circuit_from(mask_for(res, circ)), batch_size=2)
    check_eval(ev, ablation, circ, f"default ablation from a {ablation} attribution")
