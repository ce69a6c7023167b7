"""ACDC (`pw.acdc`) on the hand-built induction model and against a one-circuit-at-a-time ACDC.

The hand-built model's known circuit (`groundtruth.TRUE_EDGES`, 9 positional edges) changes the
logit difference by 7.3-18 when any one of its edges is removed; every other edge by at most
4.4e-5 (exact patching, 64 examples). ACDC must return exactly the 9 edges, nothing else, at the
documented tau (KL criterion: tau = 1e-3; logit difference: tau = 0.1), and over a range of taus
around them; a tau above the true edges' effects must lose them (the test can fail).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

import peap_widget as pw
from peap_widget.analysis.acdc import acdc
from peap_widget.circuits.circuit import Circuit
from peap_widget.analysis.exact import graph_space
from peap_widget.models import groundtruth as gt

KEYS = ["kind", "src", "dst", "src_span", "dst_span"]


pytestmark = pytest.mark.usefixtures("one_thread")   # tiny ops: threads only contend


@functools.lru_cache(maxsize=None)
def setup():
    model = pw.models.load("induction-groundtruth")
    ds = pw.Dataset.from_records(gt.make_records(64), model)
    return model, ds, pw.Evaluator(model, ds)


def edge_keys(circ):
    return set(circ.edges[KEYS].astype(str).itertuples(index=False, name=None))


@pytest.mark.parametrize("metric,tau", [("kl", 1e-3), ("logit_diff", 0.1)])
def test_acdc_recovers_the_true_circuit_exactly(metric, tau):
    model, ds, ev = setup()
    circ = acdc(model, ds, tau=tau, metric=metric, progress=False, evaluator=ev)
    assert edge_keys(circ) == set(gt.TRUE_EDGES)
    assert circ.n_rows == len(gt.TRUE_EDGES)
    assert circ.settings["method"] == "acdc" and circ.settings["tau"] == tau
    out = pw.evaluate(model, ds, circ)
    assert abs(out.faithfulness - 1) < 1e-3


@pytest.mark.parametrize("metric,tau", [("kl", 1e-4), ("kl", 0.1), ("logit_diff", 1e-3),
                                        ("logit_diff", 1.0)])
def test_acdc_recovery_is_robust_in_tau(metric, tau):
    model, ds, ev = setup()
    circ = acdc(model, ds, tau=tau, metric=metric, progress=False, evaluator=ev, copies=5)
    assert edge_keys(circ) == set(gt.TRUE_EDGES)


def test_acdc_tau_too_large_loses_true_edges():
    model, ds, ev = setup()
    circ = acdc(model, ds, tau=25.0, metric="logit_diff", progress=False, evaluator=ev)
    assert not set(gt.TRUE_EDGES) <= edge_keys(circ)


def naive_acdc(model, ds, ev, tau, positional):
    """ACDC one circuit at a time with `Evaluator.run`: same receiver order (logits backwards by
    topological level), same sender order (latest first), no batching, no skipping."""
    space = graph_space(model, ds, positional)
    in_rows = np.ones(len(space), dtype=bool)
    current = ev.clean_metric
    order = np.argsort(-space.node_level.astype(np.int64), kind="stable")
    for node in order:
        rows = space.incoming(int(node))[0]
        for row in rows[::-1]:
            if not in_rows[row]:
                continue
            trial = in_rows.copy()
            trial[row] = False
            m = ev.run(Circuit(space, trial, merge_qkv=False)).metric
            if abs(m - current) < tau:
                in_rows, current = trial, m
    circ = Circuit(space, in_rows, merge_qkv=False)
    circ.prune()
    return circ


@pytest.mark.parametrize("positional,tau", [(True, 0.01), (False, 0.01)])
def test_batched_acdc_equals_one_at_a_time(positional, tau):
    """On the tiny random float64 model (many edges matter a little), the batched tries make
    exactly the decisions of the plain sequential algorithm."""
    from test_evaluate_oracle import engine_setup

    _, model, ds = engine_setup()
    ev = pw.Evaluator(model, ds, metric="logit_diff")
    want = naive_acdc(model, ds, ev, tau, positional)
    got = acdc(model, ds, tau=tau, metric="logit_diff", positional=positional, progress=False,
               evaluator=ev, copies=4)
    assert 0 < want.n_rows < len(want.space) // 2       # a non-trivial circuit
    assert np.array_equal(got.in_rows, want.in_rows)


def test_acdc_bad_tau():
    model, ds, ev = setup()
    with pytest.raises(pw.PeapError, match="tau"):
        acdc(model, ds, tau=-1, progress=False, evaluator=ev)


def test_dry_run_equals_local():
    model, ds, _ = setup()
    want = acdc(model, ds, tau=1e-3, progress=False)
    model.remote = "local"
    try:
        got = acdc(model, ds, tau=1e-3, progress=False)
    finally:
        model.remote = False
    assert np.array_equal(got.in_rows, want.in_rows)
