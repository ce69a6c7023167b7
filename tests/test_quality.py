"""Circuit quality (`peap_widget.analysis.quality`): completeness, minimality, overlap / ROC.

Every number is checked against an independent computation written here: explicit
`Evaluator.run` calls on edge masks built from the edge space's parent/child arrays (not through
`Circuit.remove_node`), and a pairwise Mann-Whitney count for the AUROC. The hand-built
induction model (`peap_widget.models.groundtruth`) supplies a circuit known to be complete.
"""

import numpy as np
import pytest
import torch

import peap_widget as pw
from peap_widget.analysis import quality as q
from peap_widget.errors import PeapError
from peap_widget.models import groundtruth as gt


@pytest.fixture(scope="module")
def setup():
    n = torch.get_num_threads()
    torch.set_num_threads(1)   # tiny tensors: threads only cost time
    model = pw.models.load("induction-groundtruth")
    ds = pw.Dataset.from_records(gt.make_records(32), model)
    peap = pw.attribute(model, ds, method="peap", ablation="counterfactual", progress=False)
    ev = pw.Evaluator(model, ds)
    truth = gt.true_edge_mask(peap.edges)
    yield model, ds, peap, ev, truth
    torch.set_num_threads(n)


def rows_without_nodes(space, in_rows, nodes):
    """Independent node removal: drop every row whose parent or child is one of ``nodes``
    (``"a1.h0@B"``) or one of that head's q/k/v input nodes at the same span."""
    names = space.node_names
    gone = set()
    for node in nodes:
        base, span = node.split("@")
        gone |= {i for i, nm in enumerate(names)
                 if nm == node or (nm.startswith(base + "<") and nm.endswith("@" + span))}
    gone = np.array(sorted(gone))
    hit = np.isin(space.parent, gone) | np.isin(space.child, gone)
    return in_rows & ~hit


def mann_whitney_auroc(scores, positive):
    """U / (n_pos n_neg) over every (positive, negative) pair, ties one half."""
    s = np.asarray(scores, dtype=float)
    p, n = s[positive], s[~positive]
    u = 0.0
    for a in p:
        u += np.sum(a > n) + 0.5 * np.sum(a == n)
    return u / (len(p) * len(n))


# --- completeness --------------------------------------------------------------------------------

def test_full_model_is_complete_exactly(setup):
    _, _, peap, ev, _ = setup
    full = peap.full_circuit()
    res = q.completeness(ev, full, n_samples=4, seed=1, progress=False)
    assert len(res.samples) == 4 and (res.samples["size"] > 0).all()
    assert (res.samples["gap"] == 0).all() and res.worst_gap == 0.0
    assert res.f_circuit == res.f_model


def test_completeness_sample_equals_explicit_runs(setup):
    _, _, peap, ev, truth = setup
    circ = peap.circuit(n_edges=5)             # part of the induction circuit: not complete
    nodes = q.circuit_nodes(circ)
    K = nodes[:1]
    res = q.completeness(ev, circ, subsets=[K], progress=False)
    sp = circ.space
    c_k = pw.Circuit(sp, rows_without_nodes(sp, circ.in_rows, K))
    m_k = pw.Circuit(sp, rows_without_nodes(sp, np.ones(len(sp), bool), K))
    want = abs(ev.run(c_k).metric - ev.run(m_k).metric)
    assert res.samples["gap"].iloc[0] == pytest.approx(want, abs=1e-9)
    assert res.f_circuit == pytest.approx(ev.run(circ).metric, abs=1e-9)


def test_completeness_subsets_are_seeded():
    nodes = [f"a0.h{i}@S" for i in range(10)]
    a = q.sample_subsets(nodes, 5, 0.5, seed=3)
    assert a == q.sample_subsets(nodes, 5, 0.5, seed=3)
    assert a != q.sample_subsets(nodes, 5, 0.5, seed=4)
    assert all(set(k) <= set(nodes) for k in a)


def test_true_circuit_is_complete_and_a_cut_one_is_not(setup):
    _, _, peap, ev, truth = setup
    true_c = peap.circuit_from(truth)
    res = q.completeness(ev, true_c, n_samples=12, seed=0, greedy=2, progress=False)
    scale = abs(ev.clean_metric - ev.empty_metric)
    print(f"\ninduction-groundtruth true circuit: worst completeness gap {res.worst_gap:.3g} "
          f"(metric scale {scale:.3g}), {res.runs} runs")
    assert res.worst_gap < 1e-5 * scale
    assert any(str(s).startswith("greedy") for s in res.samples["sample"])
    # without the v path (B's token into the induction head) the circuit is not complete
    v_rows = [r for r in np.nonzero(truth)[0] if peap.edges.iloc[r]["kind"] == "v"]
    cut = true_c.copy()
    cut.in_rows[v_rows] = False
    bad = q.completeness(ev, cut, n_samples=6, seed=0, progress=False)
    assert bad.worst_gap > 0.1 * scale


def test_unknown_subset_node_is_refused(setup):
    _, _, peap, ev, truth = setup
    with pytest.raises(PeapError, match="not a node of the circuit"):
        q.completeness(ev, peap.circuit_from(truth), subsets=[["m1@pre"]], progress=False)


# --- minimality ----------------------------------------------------------------------------------

def test_minimality_of_one_edge_equals_two_runs(setup):
    _, _, peap, ev, truth = setup
    circ = peap.circuit(n_edges=12)
    df = q.minimality(ev, circ, progress=False)
    assert len(df) == circ.n_edges
    row = df.iloc[len(df) // 2]
    without = circ.in_rows.copy()
    without[row["rows"]] = False
    want = ev.run(circ).metric - ev.run(pw.Circuit(circ.space, without)).metric
    assert row["contribution"] == pytest.approx(want, abs=1e-9)
    assert (df["below"] == (df["contribution"].abs() < df.attrs["threshold"])).all()


def test_minimality_flags_the_edges_that_do_nothing(setup):
    _, _, peap, ev, truth = setup
    true_c = peap.circuit_from(truth)
    df = q.minimality(ev, true_c, progress=False)
    assert not df["below"].any()               # every true edge matters
    # a decoy edge (a0.h1 writes where nobody that matters reads) does nothing
    decoy = np.nonzero((peap.edges["src"] == "a0.h1").to_numpy()
                       & (peap.edges["kind"] == "resid").to_numpy())[0][0]
    padded = true_c.copy()
    padded.in_rows[decoy] = True
    df2 = q.minimality(ev, padded, progress=False)
    flagged = df2[df2["below"]]
    assert [list(r) for r in flagged["rows"]] == [[decoy]]


# --- overlap and ROC -----------------------------------------------------------------------------

def test_roc_perfect_and_reversed():
    y = np.array([1, 1, 0, 0, 0, 1, 0], bool)
    perfect = np.where(y, 10.0, 1.0) + np.arange(7) * 0.01
    assert q.roc_curve(perfect, y).auroc == 1.0
    assert q.roc_curve(-perfect, y, absolute=False).auroc == 0.0
    c = q.roc_curve(perfect, y)
    assert c.fpr[0] == c.tpr[0] == 0 and c.fpr[-1] == c.tpr[-1] == 1
    assert np.all(np.diff(c.fpr) >= 0) and np.all(np.diff(c.tpr) >= 0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_equals_mann_whitney(seed):
    rng = np.random.default_rng(seed)
    s = rng.normal(size=300).round(1)          # rounding makes ties
    y = rng.random(300) < 0.2 + 0.1 * (s > 0)
    for absolute in (True, False):
        key = np.abs(s) if absolute else s
        assert q.roc_curve(s, y, absolute).auroc == pytest.approx(mann_whitney_auroc(key, y),
                                                                 abs=1e-12)


def test_precision_recall_at_n(setup):
    _, _, peap, _, truth = setup
    rng = np.random.default_rng(0)
    s = rng.normal(size=len(truth))
    top = np.argsort(-np.abs(s), kind="stable")[:20]
    got = q.overlap(s, truth, n_edges=20)
    assert got["precision"] == truth[top].sum() / 20
    assert got["recall"] == truth[top].sum() / truth.sum()
    circ = peap.circuit(n_edges=5)
    o = q.overlap(circ, truth)
    assert o["precision"] == (circ.in_rows & truth).sum() / circ.in_rows.sum()


def test_truth_as_keys_equals_mask(setup):
    _, _, peap, _, truth = setup
    a = q.roc_curve(peap, truth)
    b = q.roc_curve(peap, gt.TRUE_EDGES)
    assert a.auroc == b.auroc and np.array_equal(a.tpr, b.tpr)
    with pytest.raises(PeapError, match="true and other"):
        q.roc_curve(peap.scores, np.zeros(len(truth), bool))


def test_peap_auroc_on_induction_groundtruth(setup):
    model, ds, peap, _, truth = setup
    eap_ig = None
    roc = q.roc_curves({"PEAP": peap}, truth)
    print(f"\ninduction-groundtruth: AUROC of PEAP scores against the true edges "
          f"{roc['PEAP'].auroc:.4f} ({roc['PEAP'].n_pos} true of "
          f"{roc['PEAP'].n_pos + roc['PEAP'].n_neg})")
    assert roc["PEAP"].auroc == 1.0            # PEAP ranks every true edge first (test_groundtruth)
    pts = roc["PEAP"].points(50)
    assert pts[0] == [0.0, 0.0] and pts[-1] == [1.0, 1.0] and len(pts) <= 50
    del eap_ig


def test_dry_run_gives_identical_numbers(setup):
    model, ds, peap, ev, truth = setup
    circ = peap.circuit(n_edges=6)
    want_c = q.completeness(ev, circ, n_samples=2, seed=0, progress=False)
    want_m = q.minimality(ev, circ, progress=False)
    model.remote = "local"
    try:
        ev2 = pw.Evaluator(model, ds)
        got_c = q.completeness(ev2, circ, n_samples=2, seed=0, progress=False)
        got_m = q.minimality(ev2, circ, progress=False)
    finally:
        model.remote = False
    assert got_c.samples["gap"].tolist() == want_c.samples["gap"].tolist()
    assert got_m["contribution"].tolist() == want_m["contribution"].tolist()


# --- the widgets' Python side --------------------------------------------------------------------

def test_curves_widget_roc_traits(setup):
    _, _, peap, _, truth = setup
    w = pw.FaithfulnessCurves.roc({"PEAP": peap}, truth)
    assert w.view == "roc" and w.series == []
    (s,) = w.roc_series
    want = q.roc_curve(peap, truth)
    assert s["name"] == "PEAP" and s["auroc"] == want.auroc
    assert s["n_pos"] == want.n_pos and s["points"][0] == [0.0, 0.0] and s["points"][-1] == [1.0, 1.0]
    w.add_roc({"PEAP again": want})
    assert [r["name"] for r in w.roc_series] == ["PEAP", "PEAP again"]
    with pytest.raises(PeapError, match="view must be one of"):
        w.view = "bars"
    with pytest.raises(PeapError, match="RocCurve"):
        pw.FaithfulnessCurves(roc={"PEAP": peap})


def test_explorer_quality_and_head_functions(setup):
    import pandas as pd

    model, ds, peap, _, truth = setup
    ex = pw.CircuitExplorer(peap, model, ds, n_edges=6, curves=[], head_details=False)
    got = ex.compute_quality(n_samples=3, seed=2)
    ev = pw.Evaluator(model, ds)
    want = q.completeness(ev, ex.circuit, n_samples=3, seed=2, progress=False)
    mini = q.minimality(ev, ex.circuit, progress=False)
    assert got["selection"] == ex.selection and not got["running"]
    assert got["completeness"]["worst_gap"] == pytest.approx(want.worst_gap, abs=1e-12)
    assert got["minimality"]["n_below"] == int(mini["below"].sum())
    ex.show_head_functions(pd.DataFrame({"copying": [1.0, 0.5]}, index=["a1.h0", "a0.h1"]))
    assert ex.head_functions == {"relations": ["copying"],
                                 "heads": {"a1.h0": [1.0], "a0.h1": [0.5]}}
    with pytest.raises(PeapError, match="not heads of this model"):
        ex.show_head_functions(pd.DataFrame({"copying": [1.0]}, index=["a7.h0"]))
