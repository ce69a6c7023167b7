"""Exact single-edge patching (`pw.exact_scores`, MIB's EActP) against an independent brute force.

For each sampled edge e the reference is tests/brute_eval.py's explicit per-example circuit run
of (every edge but e), written from DESIGN.md section 5 with loops over positions, upstream
components and attention entries; the score is mean m(full - e) - mean m(full), in float64.
"""

from __future__ import annotations

import functools
import os
import sys

import numpy as np
import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import brute_eval as be  # noqa: E402
import test_evaluate_oracle as oracle  # noqa: E402  (its reference model, sources and engine)
from tiny import SCHEMA  # noqa: E402

from peap_widget.analysis.exact import exact_scores  # noqa: E402

TOL = 1e-9


@functools.lru_cache(maxsize=None)
def engine_exact(ablation="counterfactual", positional=True, copies=None):
    _, model, ds = oracle.engine_setup()
    return exact_scores(model, ds, positional=positional, ablation=ablation, progress=False,
                        copies=copies)


def brute_score(ablation, circuit_minus_edge, full):
    per, _ = oracle.brute(ablation, frozenset(circuit_minus_edge))
    base, _ = oracle.brute(ablation, frozenset(full))
    return per.mean().item() - base.mean().item()


def sample_rows(keys, n, seed):
    """``n`` rows of every kind (resid into each slot type, q, k, v crossing), by seed."""
    rng = np.random.default_rng(seed)
    groups = {}
    for i, (kind, _src, dst, _s1, _s2) in enumerate(keys):
        tag = kind if kind != "resid" else "resid:" + (dst.split("<")[-1] if "<" in dst else dst[0])
        groups.setdefault(tag, []).append(i)
    out = []
    for rows in groups.values():
        out += rng.choice(rows, min(n, len(rows)), replace=False).tolist()
    return sorted(out)


@pytest.mark.parametrize("ablation,n", [("counterfactual", 6), ("mean", 3), ("zero", 3)])
def test_exact_equals_brute_force(ablation, n):
    res = engine_exact(ablation)
    keys = oracle.row_keys(res.edges)
    assert set(keys) == set(oracle.all_keys())           # the PEAP edge table's rows
    full = oracle._circuit("full")
    rows = sample_rows(keys, n, seed=1)
    want = np.array([brute_score(ablation, full - {keys[r]}, full) for r in rows])
    got = res.scores[rows]
    err = np.abs(got - want)
    assert err.max() < TOL, [(keys[r], g, w) for r, g, w in zip(rows, got, want)
                             if abs(g - w) >= TOL]
    # discriminative: most sampled edges move the metric far more than the tolerance
    assert (np.abs(want) > 1e-4).sum() >= len(rows) // 3, want


def test_exact_big_edges_equal_brute_force():
    """The 15 largest exact scores (the edges a circuit keeps) against the brute force."""
    res = engine_exact("counterfactual")
    keys = oracle.row_keys(res.edges)
    full = oracle._circuit("full")
    rows = np.argsort(-np.abs(res.scores))[:15]
    want = np.array([brute_score("counterfactual", full - {keys[r]}, full) for r in rows])
    assert np.abs(res.scores[rows] - want).max() < TOL
    assert np.abs(want).min() > 0.02


def test_exact_eap_graph_equals_brute_force():
    """positional=False: one EAP edge removed at every position, every crossing edge in."""
    res = engine_exact("counterfactual", positional=False)
    keys = oracle.row_keys(res.edges)
    assert {k[0] for k in keys} == {"resid"} and {k[3] for k in keys} == {"all"}
    hf, _, _ = oracle.ref()
    all_eap = frozenset(keys)
    full = frozenset(be.expand_eap(hf, all_eap, SCHEMA))
    rows = sample_rows(keys, 8, seed=2)
    want = np.array([brute_score("counterfactual", be.expand_eap(hf, all_eap - {keys[r]}, SCHEMA),
                                 full) for r in rows])
    assert np.abs(res.scores[rows] - want).max() < TOL
    assert (np.abs(want) > 1e-3).sum() >= len(rows) // 2, want


def test_unreachable_rows_are_exactly_zero():
    """Rows whose receiver never reaches the last token's logits (e.g. into logits at an
    earlier span) are 0 without a run; the brute force agrees for a few of them."""
    res = engine_exact("counterfactual")
    keys = oracle.row_keys(res.edges)
    full = oracle._circuit("full")
    early = [i for i, k in enumerate(keys) if k[2] == "logits" and k[3] != "to"][:3]
    assert (res.scores[early] == 0).all()
    for r in early:
        assert abs(brute_score("counterfactual", full - {keys[r]}, full)) < 1e-12


def test_copies_per_pass_do_not_change_scores():
    """One circuit per pass and 7 stacked circuits per pass (a chunk boundary in every batch
    of copies) give the same table."""
    a = engine_exact("counterfactual", copies=1).scores
    b = engine_exact("counterfactual", copies=7).scores
    c = engine_exact("counterfactual").scores
    assert np.abs(a - b).max() < 1e-12 and np.abs(a - c).max() < 1e-12


def test_exact_result_plugs_into_circuits_and_curves():
    import peap_widget as pw

    _, model, ds = oracle.engine_setup()
    res = engine_exact("counterfactual")
    assert res.settings["method"] == "exact" and res.settings["seconds"] > 0
    assert list(res.edges.columns) == ["kind", "src", "dst", "src_span", "dst_span", "score"]
    circ = res.circuit(n_edges=40)
    assert 0 < circ.n_edges <= 40
    assert np.isfinite(pw.evaluate(model, ds, circ).faithfulness)
    whole = res.circuit(n_edges=10 ** 6, prune=False)
    assert abs(pw.evaluate(model, ds, whole).faithfulness - 1) < 1e-9


def test_dry_run_equals_local():
    _, model, ds = oracle.engine_setup()
    want = exact_scores(model, ds, progress=False, ablation="mean").scores
    model.remote = "local"
    try:
        got = exact_scores(model, ds, progress=False, ablation="mean").scores
        jobs = {e["job"] for e in model.remote_log}
    finally:
        model.remote = False
    assert np.array_equal(got, want)
    assert "circuits_batch" in jobs


def test_progress_callback_and_estimate(capsys):
    _, model, ds = oracle.engine_setup()
    calls = []
    res = exact_scores(model, ds, progress=lambda d, t: calls.append((d, t)), copies=100)
    total = calls[-1][1]
    assert calls[-1][0] == total and [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert len(calls) <= -(-total // 100) + 1 and len(set(calls)) == len(calls)
    assert res.settings["estimated_seconds"] > 0
    exact_scores(model, ds, progress=True, copies=400)
    cap = capsys.readouterr()
    assert "estimated total" in cap.out + cap.err


def test_float32_model_close_to_float64():
    """The same model in float32: exact scores agree with float64 to float32 accuracy."""
    import peap_widget as pw

    hf, tok = oracle.make_model()
    model = pw.load_model(hf.float(), tokenizer=tok)
    ds = pw.Dataset.from_records(oracle.tiny_records(), model)
    got = exact_scores(model, ds, progress=False).scores
    want = engine_exact("counterfactual").scores
    assert np.abs(got - want).max() < 1e-3 * max(1.0, np.abs(want).max())


pytestmark = pytest.mark.usefixtures("one_thread")   # tiny ops: threads only contend
