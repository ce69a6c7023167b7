"""The course-lab answer checks (`peap_widget.lab`) and the ``%load_ext peap_widget`` magics.

Every check must accept the right answer (computed here with the library, while the checks use
their own plain-PyTorch reference), reject a wrong one with a "Not yet" message, treat a blank
(``...`` / None) as "Not answered yet", and never raise. The reference itself is checked against
the library's evaluator and attribution to 1e-9.
"""

import numpy as np
import pytest
import torch

import peap_widget as pw
from peap_widget import lab
from peap_widget.lab import reference
from peap_widget.models import groundtruth as gt


pytestmark = pytest.mark.usefixtures("one_thread")   # tiny ops: threads only contend


@pytest.fixture(autouse=True)
def fresh_record():
    lab.reset()
    yield
    lab.reset()


@pytest.fixture(scope="module")
def ioi():
    """toy-ioi in float64 on 8 IOI prompts, with PEAP and EAP results and an evaluator."""
    model = pw.models.load("toy-ioi", dtype="float64")
    task = pw.tasks.get("ioi", n=8, order="ABBA", seed=1)
    ds = task.dataset(model)
    return {"model": model, "task": task, "ds": ds, "ev": pw.Evaluator(model, ds),
            "peap": pw.attribute(model, ds, progress=False),
            "eap": pw.attribute(model, ds, method="eap", progress=False)}


@pytest.fixture(scope="module")
def induction():
    model = pw.models.load("induction-groundtruth", dtype="float64")
    ds = pw.Dataset.from_records(gt.make_records(24), model)
    return {"model": model, "ds": ds, "res": pw.attribute(model, ds, progress=False),
            "ev": pw.Evaluator(model, ds)}


def verdict(capsys):
    out = capsys.readouterr().out
    assert out.count("\n") == 1, out          # exactly one message per check
    return out


def right(capsys, fn, answer, **context):
    assert fn(answer, **context) is True, capsys.readouterr().out
    assert "Correct:" in verdict(capsys)


def wrong(capsys, fn, answer, **context):
    assert fn(answer, **context) is False
    out = verdict(capsys)
    assert "Not yet:" in out, out
    return out


def blank(capsys, fn, **context):
    for answer in (..., None, [..., 1], {"a": ...}):
        assert fn(answer, **context) is False
        assert "Not answered yet:" in verdict(capsys)


# --- the machinery ---------------------------------------------------------------------------

def test_blank_detection():
    assert lab.is_blank(...) and lab.is_blank(None) and lab.is_blank([1, ...])
    assert lab.is_blank({"x": ...}) and lab.is_blank({}) and lab.is_blank("...")
    assert not lab.is_blank(0) and not lab.is_blank([1, 2]) and not lab.is_blank("a3.h2")
    assert not lab.is_blank(np.float64(0.0))


def test_checks_never_raise_and_summary_records(capsys, ioi):
    m = ioi["model"]
    # a body that fails inside (a string where a dataset belongs) is reported, not raised
    assert lab.lab1.clean_logit_diff(1.0, model=m, ds="not a dataset") is False
    assert "Could not check:" in verdict(capsys)
    # a blank context variable
    assert lab.lab1.clean_logit_diff(1.0, model=m, ds=...) is False
    assert "`ds` is not set yet" in verdict(capsys)
    # an unknown check by name
    assert lab.check("lab1.no_such_check", 1) is False
    assert "no check named" in verdict(capsys)
    assert lab.check("lab1.n_edges", 479, model=m) is True
    verdict(capsys)
    s = lab.summary("lab1")
    d = s.to_dict()
    assert d["passed"] == 1 and not d["all_passed"]
    assert set(d["not_run"]) == set(lab.checks("lab1")) - {"lab1.n_edges", "lab1.clean_logit_diff"}
    assert "1 of 9 checks passed" in repr(s) and "<table>" in s._repr_html_()
    assert [r["name"] for r in lab.records()] == ["lab1.clean_logit_diff", "lab1.n_edges"]
    assert lab.checks() and all(n.startswith("lab") for n in lab.checks())
    assert {n.split(".")[0] for n in lab.checks()} == {f"lab{i}" for i in range(1, 7)}


# --- the reference ---------------------------------------------------------------------------

def test_reference_matches_the_library(ioi):
    m, ds, ev, eap, peap = ioi["model"], ioi["ds"], ioi["ev"], ioi["eap"], ioi["peap"]
    ref = reference.Reference(m)
    assert len(ref.edges()) == m.graph.n_edges
    assert ref.per_example(ds) == pytest.approx(ev.clean_per_example, abs=1e-9)
    assert ref.metric(ds, corrupted=True) == pytest.approx(ev.empty_per_example.mean(), abs=1e-9)
    edges = [("a3.h2", "logits"), ("m0", "a3.h2<k>"), ("input", "m0"), ("a1.h0", "m1")]
    for u, v in edges:                      # position-free removal = EAP circuit minus the edge
        c = eap.full_circuit()
        c.remove_edge(f"{u}->{v}@all")
        assert ref.metric(ds, {(u, v): 1.0}) == pytest.approx(ev.run(c).metric, abs=1e-9)
    c = peap.full_circuit()                 # per-span removals = PEAP circuit minus rows
    c.remove_edge("m0->a2.h1<k>@S2")
    c.remove_edge("input->m0@IO")
    got = ref.metric(ds, {("m0", "a2.h1<k>"): {"S2": 1.0}, ("input", "m0"): {"IO": 1.0}})
    assert got == pytest.approx(ev.run(c).metric, abs=1e-9)
    scores = ref.eap_scores(ds, edges)
    table = eap.edges.set_index(["src", "dst"])["score"]
    assert scores == pytest.approx([table[e] for e in edges], abs=1e-9)
    at_s2 = ref.eap_scores(ds, edges, span="S2")
    res = peap.edges[(peap.edges.kind == "resid") & (peap.edges.src_span == "S2")].set_index(["src", "dst"])["score"]
    assert at_s2 == pytest.approx([res[e] for e in edges], abs=1e-9)
    with pytest.raises(KeyError):
        ref.metric(ds, {("m3", "a1.h0<q>"): 1.0})          # not an edge


def test_reference_attention_is_the_models(ioi):
    m, ds = ioi["model"], ioi["ds"]
    ex = ds.examples[0]
    hf = pw.models.load("toy-ioi", dtype="float64").hf       # a copy: the eager attention keeps its pattern
    hf.set_attn_implementation("eager")
    with torch.no_grad():
        att = hf(torch.tensor([ex.clean_ids]), output_attentions=True).attentions
    ref = reference.Reference(m)
    for layer, head in [(0, 1), (3, 2)]:
        assert ref.attention(ex.clean_ids, layer, head) == pytest.approx(att[layer][0, head].numpy(), abs=1e-9)
    with pytest.raises(TypeError):
        reference.Reference(torch.nn.Linear(2, 2))


# --- lab 1 -----------------------------------------------------------------------------------

def test_lab1_checks(capsys, ioi):
    m, ds, ev, eap = ioi["model"], ioi["ds"], ioi["ev"], ioi["eap"]
    c1 = lab.lab1
    clean, cf = ev.clean_per_example.mean(), ev.empty_per_example.mean()
    right(capsys, c1.clean_logit_diff, clean, model=m, ds=ds)
    assert "sign" in wrong(capsys, c1.clean_logit_diff, -clean, model=m, ds=ds)
    blank(capsys, c1.clean_logit_diff, model=m, ds=ds)
    right(capsys, c1.counterfactual_logit_diff, cf, model=m, ds=ds)
    assert "clean value" in wrong(capsys, c1.counterfactual_logit_diff, clean, model=m, ds=ds)
    right(capsys, c1.edges_into_slot, 11, model=m, slot="a2.h1<q>")
    right(capsys, c1.edges_into_slot, 15, model=m, slot="m2")      # input, 2 layers, 4 own heads
    wrong(capsys, c1.edges_into_slot, 10, model=m, slot="a2.h1<q>")
    right(capsys, c1.n_edges, m.graph.n_edges, model=m)
    wrong(capsys, c1.n_edges, 480, model=m)
    without = eap.full_circuit()
    without.remove_edge("a3.h2->logits@all")
    m_without = ev.run(without).metric
    right(capsys, c1.evaluator_without_edge, m_without, model=m, ds=ds)
    assert "clean value" in wrong(capsys, c1.evaluator_without_edge, clean, model=m, ds=ds)
    right(capsys, c1.hand_patch, m_without, model=m, ds=ds)
    assert "wrong sign" in wrong(capsys, c1.hand_patch, 2 * clean - m_without, model=m, ds=ds)
    f = ev.run(without).faithfulness
    right(capsys, c1.faithfulness, f, model=m, ds=ds)
    assert "soft" in wrong(capsys, c1.faithfulness, m_without / clean, model=m, ds=ds)
    right(capsys, c1.empty_circuit, "b", model=m, ds=ds)
    wrong(capsys, c1.empty_circuit, "a", model=m, ds=ds)
    wrong(capsys, c1.empty_circuit, "maybe", model=m, ds=ds)
    metrics = {}
    for row in np.nonzero((eap.edges.dst == "logits").to_numpy())[0]:
        c = eap.full_circuit()
        c.remove_edge(int(row))
        metrics[eap.space.edge_name(int(row))] = ev.run(c).metric
    best = min(metrics, key=metrics.get)
    right(capsys, c1.most_important_logit_edge, best, model=m, ds=ds)
    right(capsys, c1.most_important_logit_edge, best.removesuffix("@all"), model=m, ds=ds)
    other = sorted(metrics, key=metrics.get)[1]
    wrong(capsys, c1.most_important_logit_edge, other, model=m, ds=ds)
    wrong(capsys, c1.most_important_logit_edge, "a3.h2->m3", model=m, ds=ds)
    wrong(capsys, c1.most_important_logit_edge, "a3.h2", model=m, ds=ds)     # not an edge name


# --- lab 2 -----------------------------------------------------------------------------------

def test_lab2_checks(capsys, ioi):
    m, ds, ev, eap = ioi["model"], ioi["ds"], ioi["ev"], ioi["eap"]
    c2 = lab.lab2
    def a(s):
        return 1 / (1 + np.exp(-s))

    good = {"first_order": a(6) * (1 - a(6)) * -6, "exact": a(0) - a(6)}
    right(capsys, c2.saturated_softmax, good, score=6.0, new_score=0.0)
    wrong(capsys, c2.saturated_softmax, {**good, "first_order": -6 * a(6)}, score=6.0, new_score=0.0)
    wrong(capsys, c2.saturated_softmax, [1, 2], score=6.0, new_score=0.0)
    blank(capsys, c2.saturated_softmax)
    score = eap.edges.score[eap.space.row("a3.h2->logits@all")]
    right(capsys, c2.eap_slope, score * 1.001, model=m, ds=ds, edge="a3.h2->logits")
    full = eap.full_circuit()
    m_full = ev.run(full).metric

    def effect(row):
        c = full.copy()
        c.remove_edge(int(row))
        return ev.run(c).metric - m_full

    top = eap.top(20).index
    wrong(capsys, c2.eap_slope, effect(eap.space.row("a3.h2->logits@all")), model=m, ds=ds)
    effects = {eap.space.edge_name(r): effect(r) for r in top[:10]}
    right(capsys, c2.exact_effects, effects, model=m, ds=ds, k=10)
    off = dict(effects)
    off[next(iter(off))] += 1.0
    wrong(capsys, c2.exact_effects, off, model=m, ds=ds, k=10)
    wrong(capsys, c2.exact_effects, dict(list(effects.items())[:9]), model=m, ds=ds, k=10)
    flips = sum(np.sign(eap.edges.score[r]) != np.sign(effects[eap.space.edge_name(r)]) for r in top[:10])
    right(capsys, c2.wrong_signs, int(flips), model=m, ds=ds, k=10)
    wrong(capsys, c2.wrong_signs, int(flips) + 1, model=m, ds=ds, k=10)
    err = {eap.space.edge_name(r): abs(eap.edges.score[r] - effect(r)) for r in top}
    worst = max(err, key=err.get)
    right(capsys, c2.worst_edge, worst, model=m, ds=ds, k=20)
    wrong(capsys, c2.worst_edge, min(err, key=err.get), model=m, ds=ds, k=20)


# --- lab 3 -----------------------------------------------------------------------------------

def test_lab3_checks(capsys, ioi):
    m, task, ds = ioi["model"], ioi["task"], ioi["ds"]
    c3 = lab.lab3
    right(capsys, c3.annotation, ds, task=task, model=m)
    right(capsys, c3.annotation, [r["spans"] for r in ds.to_records()][:3], task=task, model=m)
    recs = ds.to_records()
    spans = dict(recs[0]["spans"])
    spans["IO"], spans["and"] = [spans["IO"][0], spans["IO"][1] + 1], [spans["and"][1], spans["and"][1]]
    assert "'IO' should be" in wrong(capsys, c3.annotation, [spans], task=task, model=m)
    blank(capsys, c3.annotation, task=task, model=m)
    n = ds.examples[0].length
    gap = dict(recs[0]["spans"])
    gap["S2"] = [gap["S2"][0] + 1, gap["S2"][1]]
    right(capsys, c3.broken_rule, "contiguous", spans=gap, n_tokens=n, schema=list(ds.schema))
    wrong(capsys, c3.broken_rule, "nonempty", spans=gap, n_tokens=n, schema=list(ds.schema))
    wrong(capsys, c3.broken_rule, "contiguous", spans=recs[0]["spans"], n_tokens=n, schema=ds.schema)
    pos = {ex.spans[ds.schema.index("IO")][0] for ex in ds.examples}
    right(capsys, c3.io_positions, len(pos), ds=ds)
    wrong(capsys, c3.io_positions, len(pos) + 1, ds=ds)
    curve = pw.faithfulness_curve(m, ds, {"PEAP": ioi["peap"]}, sizes=[10, 100, 1.0], progress=False)
    other = pw.faithfulness_curve(m, ds, {"EAP": ioi["eap"]}, sizes=[10, 100, 1.0], progress=False)
    want = {"fine": curve.point(0.5)["n_real_edges"], "coarse": other.point(0.5)["n_real_edges"]}
    right(capsys, c3.schema_comparison, want, fine=curve, coarse=other, level=0.5)
    wrong(capsys, c3.schema_comparison, {**want, "fine": want["fine"] + 1}, fine=curve, coarse=other)
    wrong(capsys, c3.schema_comparison, {"fine": 1}, fine=curve, coarse=other)


def test_lab3_annotation_reads_a_schema_editor(capsys, ioi):
    m, task = ioi["model"], ioi["task"]
    records = [{k: r[k] for k in ("clean", "corrupted", "correct", "incorrect")}
               for r in task.token_records(m.tokenizer)][:2]
    editor = pw.SchemaEditor(records, schema=list(task.schema), model=m)
    blank(capsys, lab.lab3.annotation, task=task, model=m)
    assert lab.lab3.annotation(editor, task=task, model=m) is False
    assert "Not answered yet:" in verdict(capsys)            # an untouched editor is a blank
    want = task.token_records(m.tokenizer)
    editor.set_spans(0, want[0]["spans"])
    assert lab.lab3.annotation(editor, task=task, model=m) is False
    assert "not a valid dataset yet" in verdict(capsys)        # example 1 still unannotated
    editor.set_spans(1, want[1]["spans"])
    right(capsys, lab.lab3.annotation, editor, task=task, model=m)


# --- lab 4 -----------------------------------------------------------------------------------

def test_lab4_checks(capsys, ioi):
    m, ds, peap, eap = ioi["model"], ioi["ds"], ioi["peap"], ioi["eap"]
    c4 = lab.lab4
    n_cross = int((peap.edges.kind != "resid").sum())
    right(capsys, c4.n_crossing_edges, n_cross, model=m, ds=ds)
    assert "key <= query" in wrong(capsys, c4.n_crossing_edges, 3 * 16 * 81, model=m, ds=ds)
    assert "q, k and v" in wrong(capsys, c4.n_crossing_edges, n_cross // 3, model=m, ds=ds)
    e = peap.edges
    summed = e[(e.kind == "resid") & (e.src == "m0") & (e.dst == "a3.h2<k>")].score.sum()
    right(capsys, c4.eap_is_sum, summed, model=m, ds=ds, edge="m0->a3.h2<k>")
    wrong(capsys, c4.eap_is_sum, summed + 0.1, model=m, ds=ds, edge="m0->a3.h2<k>")
    into = e[(e.kind == "resid") & (e.dst == "logits") & (e.dst_span == "to") & e.src.str.startswith("a")]
    movers = list(into.reindex(into.score.abs().sort_values(ascending=False).index).src[:2])
    right(capsys, c4.name_movers, movers, model=m, ds=ds)
    right(capsys, c4.name_movers, set(movers), model=m, ds=ds)
    wrong(capsys, c4.name_movers, [movers[0], "a0.h0"], model=m, ds=ds)
    wrong(capsys, c4.name_movers, ["a9"], model=m, ds=ds)
    reads = {}
    for h in movers:
        v = e[(e.kind == "v") & (e.src == h) & (e.dst_span == "to")]
        reads[h] = v.loc[v.score.abs().idxmax(), "src_span"]
    right(capsys, c4.read_spans, reads, model=m, ds=ds)
    wrong(capsys, c4.read_spans, {h: "S2" for h in movers}, model=m, ds=ds)
    wrong(capsys, c4.read_spans, {movers[0]: "IO"}, model=m, ds=ds)
    curve = pw.faithfulness_curve(m, ds, {"PEAP": peap, "EAP": eap}, sizes=[0.01, 0.1, 0.5, 1.0],
                                  progress=False)
    needed = {n: curve.point(0.5, n)["n_real_edges"] for n in ["PEAP", "EAP"]}
    right(capsys, c4.real_edges_needed, needed, curve=curve, level=0.5)
    wrong(capsys, c4.real_edges_needed, {"PEAP": needed["PEAP"]}, curve=curve, level=0.5)
    best = min(needed, key=needed.get)
    right(capsys, c4.fewer_real_edges, best.lower(), curve=curve, level=0.5)
    wrong(capsys, c4.fewer_real_edges, max(needed, key=needed.get), curve=curve, level=0.5)


# --- lab 5 -----------------------------------------------------------------------------------

def test_lab5_checks(capsys, ioi, induction):
    c5 = lab.lab5
    m, ds, peap = ioi["model"], ioi["ds"], ioi["peap"]
    circ = peap.circuit(n_edges=300)
    f = ioi["ev"].run(circ).faithfulness
    right(capsys, c5.pruned, circ, model=m, ds=ds, max_edges=circ.n_edges, min_faithfulness=f - 0.01)
    assert "still has" in wrong(capsys, c5.pruned, circ, model=m, ds=ds, max_edges=circ.n_edges - 1,
                                min_faithfulness=0)
    assert "faithfulness is" in wrong(capsys, c5.pruned, circ, model=m, ds=ds, max_edges=10**6,
                                      min_faithfulness=f + 0.01)

    gm, gds, res, ev = induction["model"], induction["ds"], induction["res"], induction["ev"]
    true = res.circuit_from(gt.true_edge_mask(res.edges), merge_qkv=False)
    greedy = res.circuit(n_edges=20, merge_qkv=False)
    rows = set(map(tuple, greedy.edges[gt.KEY_COLUMNS].itertuples(index=False, name=None)))
    hit = len(rows & set(gt.TRUE_EDGES))
    right(capsys, c5.precision_recall, (hit / len(rows), hit / 9), circuit=greedy)
    right(capsys, c5.precision_recall, {"precision": hit / len(rows), "recall": hit / 9}, circuit=greedy)
    wrong(capsys, c5.precision_recall, (hit / 9, hit / len(rows)), circuit=greedy)
    right(capsys, c5.true_circuit, true, model=gm, ds=gds)
    assert "extra" in wrong(capsys, c5.true_circuit, greedy, model=gm, ds=gds)
    drops = {}
    f_true = ev.run(true).faithfulness
    for row in np.nonzero(true.in_rows)[0]:
        c = true.copy()
        c.remove_edge(int(row), merged=False)
        drops[row] = f_true - ev.run(c).faithfulness
    right(capsys, c5.minimal, min(drops.values()), circuit=true, model=gm, ds=gds)
    wrong(capsys, c5.minimal, max(drops.values()), circuit=true, model=gm, ds=gds)
    small = true.copy()
    for name in ["input->a0.h0<v>@A1", "a0.h0<v>@A1->a0.h0@B", "a0.h0->a1.h0<k>@B",
                 "a1.h0<k>@B->a1.h0@A2", "input->a1.h0<q>@A2", "a1.h0<q>@A2->a1.h0@A2[B]"]:
        small.remove_edge(name, merged=False)
    assert small.n_rows == 3 and ev.run(small).faithfulness > 0.99
    right(capsys, c5.smallest_faithful, small, model=gm, ds=gds)
    spare = small.copy()
    spare.add_edge("input->logits@A2", merged=False)                 # an edge with no effect
    assert "can still remove" in wrong(capsys, c5.smallest_faithful, spare, model=gm, ds=gds)
    broken = small.copy()
    broken.remove_edge("a1.h0->logits@A2", merged=False)
    assert "below" in wrong(capsys, c5.smallest_faithful, broken, model=gm, ds=gds)
    K = "input->a1.h0<q>@A2"
    full_k = res.full_circuit()
    full_k.remove_edge(K, merged=False)
    fk = ev.run(full_k).faithfulness
    gaps = {}
    for label, c in [("true", true), ("small", small)]:
        c = c.copy()
        c.remove_edge(K, merged=False)
        gaps[label] = abs(ev.run(c).faithfulness - fk)
    assert gaps["true"] < 1e-6 and gaps["small"] > 0.1
    kw = {"model": gm, "ds": gds, "circuits": {"true": true, "small": small},
          "full": res.full_circuit(), "knockout": K}
    right(capsys, c5.completeness_gap, gaps, **kw)
    wrong(capsys, c5.completeness_gap, {"true": gaps["small"], "small": gaps["true"]}, **kw)
    wrong(capsys, c5.completeness_gap, {"true": 0.0}, **kw)


def test_lab5_checks_read_an_explorer(capsys, induction):
    gm, gds, res = induction["model"], induction["ds"], induction["res"]
    explorer = pw.CircuitExplorer(res, gm, gds, n_edges=20, merge_qkv=False, curves=[])
    assert lab.lab5.true_circuit(explorer, model=gm, ds=gds) is False
    assert "Not answered yet:" in verdict(capsys)             # nothing pruned yet
    for span in gds.schema.spans:
        explorer.remove_node(f"a0.h1@{span}")
        explorer.remove_node(f"a1.h1@{span}")
    assert "extra" in wrong(capsys, lab.lab5.true_circuit, explorer, model=gm, ds=gds)
    for edge in ["input->logits@A2", "a0.h0->logits@A2", "input->a0.h0<v>@B", "input->a1.h0<k>@B",
                 "a0.h0->a1.h0<v>@B", "a0.h0<v>@B->a0.h0@A2"]:
        explorer.remove_edge(edge)
    right(capsys, lab.lab5.true_circuit, explorer, model=gm, ds=gds)



# --- lab 6 -----------------------------------------------------------------------------------------

def spearman_here(a, b):
    """Spearman's rho written out: Pearson of average ranks (pandas ranks ties by their mean)."""
    import pandas as pd

    return float(np.corrcoef(pd.Series(a).rank().to_numpy(), pd.Series(b).rank().to_numpy())[0, 1])


def test_lab6_spearman_and_auroc_helpers():
    a, b = [3.0, 1.0, 2.0, 2.0, 5.0], [1.0, 0.0, 4.0, 4.0, 2.0]
    assert lab.lab6.spearman(a, b) == pytest.approx(spearman_here(a, b), abs=1e-12)
    assert lab.lab6.ranks([2.0, 1.0, 2.0]).tolist() == [2.5, 1.0, 2.5]
    truth = np.array([True, False, False, True])
    # pairs (true, other) by |score|: (4 vs 1) win, (4 vs 2) win, (2 vs 1) win, (2 vs 2) tie
    assert lab.lab6.mann_whitney([4.0, -1.0, 2.0, -2.0], truth) == pytest.approx(3.5 / 4)


def test_lab6_rank_correlation(capsys, ioi):
    c6, m, ds = lab.lab6, ioi["model"], ioi["ds"]
    eap = ioi["eap"]
    ig = pw.attribute(m, ds, method="eap-ig", steps=3, progress=False)
    ex = pw.exact_scores(m, ds, positional=False, evaluator=ioi["ev"], progress=False)
    rho = {"eap": spearman_here(eap.scores, ex.scores), "eap-ig": spearman_here(ig.scores, ex.scores)}
    kw = {"results": {"eap": eap, "eap-ig": ig}, "exact": ex, "model": m, "ds": ds}
    right(capsys, c6.rank_correlation, rho, **kw)
    pearson = {"eap": float(np.corrcoef(eap.scores, ex.scores)[0, 1]),
               "eap-ig": float(np.corrcoef(ig.scores, ex.scores)[0, 1])}
    assert max(abs(pearson[k] - rho[k]) for k in rho) > 0.01
    assert "Pearson" in wrong(capsys, c6.rank_correlation, pearson, **kw)
    wrong(capsys, c6.rank_correlation, {"eap": rho["eap"]}, **kw)
    # EAP scores passed off as exact ones are caught by the reference's patched runs
    assert "exact patching effects" in wrong(capsys, c6.rank_correlation, rho,
                                             **(kw | {"exact": eap}))
    blank(capsys, c6.rank_correlation, **kw)


def test_lab6_circuit_sizes(capsys, ioi):
    c6, m, ds, ev, peap = lab.lab6, ioi["model"], ioi["ds"], ioi["ev"], ioi["peap"]
    small = peap.circuit(n_edges=120, merge_qkv=False)       # stands in for an ACDC circuit
    f_small = ev.run(small).faithfulness
    grid = range(40, 1201, 40)
    n_peap = next(len(c.edges) for c in (peap.circuit(n_edges=n, merge_qkv=False) for n in grid)
                  if ev.run(c).faithfulness >= f_small)
    kw = {"acdc_circuit": small, "attribution": peap, "model": m, "ds": ds, "grid": grid}
    right(capsys, c6.circuit_sizes, {"acdc": len(small.edges), "peap": n_peap}, **kw)
    assert "ACDC circuit has" in wrong(capsys, c6.circuit_sizes,
                                       {"acdc": len(small.edges) + 1, "peap": n_peap}, **kw)
    assert "greedy PEAP" in wrong(capsys, c6.circuit_sizes,
                                  {"acdc": len(small.edges), "peap": n_peap + 40}, **kw)
    blank(capsys, c6.circuit_sizes, **kw)


def test_lab6_minimality_and_completeness(capsys, ioi):
    c6, m, ds, ev = lab.lab6, ioi["model"], ioi["ds"], ioi["ev"]
    circ = ioi["peap"].circuit(n_edges=20)
    mini = pw.minimality(ev, circ, progress=False)
    ans = {"n_below": int(mini.below.sum()), "weakest": float(mini.contribution.abs().min())}
    right(capsys, c6.minimality, ans, circuit=circ, model=m, ds=ds)
    assert "contribute less" in wrong(capsys, c6.minimality, ans | {"n_below": ans["n_below"] + 1},
                                      circuit=circ, model=m, ds=ds)
    assert "weakest" in wrong(capsys, c6.minimality, ans | {"weakest": ans["weakest"] + 0.5},
                              circuit=circ, model=m, ds=ds)
    blank(capsys, c6.minimality, circuit=circ, model=m, ds=ds)

    comp = pw.completeness(ev, circ, n_samples=4, seed=3, progress=False)
    assert comp.worst_gap > 0.1
    kw = {"circuit": circ, "model": m, "ds": ds, "n_samples": 4, "seed": 3}
    right(capsys, c6.completeness, comp.worst_gap, **kw)
    wrong(capsys, c6.completeness, comp.worst_gap * 1.5, **kw)
    other_seed = pw.completeness(ev, circ, n_samples=4, seed=4, progress=False).worst_gap
    if abs(other_seed - comp.worst_gap) > 0.01:
        wrong(capsys, c6.completeness, other_seed, **kw)
    blank(capsys, c6.completeness, **kw)


def test_lab6_auroc(capsys, induction):
    c6, res = lab.lab6, induction["res"]
    results = {"PEAP": res}
    assert pw.roc_curve(res, gt.true_edge_mask(res.edges)).auroc == 1.0
    right(capsys, c6.auroc, {"PEAP": 1.0}, results=results, truth_edges=gt.TRUE_EDGES)
    wrong(capsys, c6.auroc, {"PEAP": 0.9}, results=results, truth_edges=gt.TRUE_EDGES)
    mechanism = gt.TRUE_EDGES + gt.POSITIONAL_EDGES     # positional edges score ~0: AUROC < 1
    want = pw.roc_curve(res, gt.true_edge_mask(res.edges, mechanism)).auroc
    assert want < 0.95
    right(capsys, c6.auroc, {"PEAP": want}, results=results, truth_edges=mechanism)
    assert "chance that a true edge" in wrong(capsys, c6.auroc, {"PEAP": 1.0}, results=results,
                                              truth_edges=mechanism)
    blank(capsys, c6.auroc, results=results, truth_edges=gt.TRUE_EDGES)

# --- %load_ext peap_widget ---------------------------------------------------------------------

@pytest.fixture
def shell():
    from IPython.core.interactiveshell import InteractiveShell

    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "peap_widget")
    yield sh
    InteractiveShell.clear_instance()


def test_magics_open_widgets_on_notebook_variables(shell, tiny_results):
    model, ds, res, _ = tiny_results
    shell.user_ns.update(model=model, ds=ds, res=res, records=ds.to_records())
    assert {"peap_lab", "peap_explore", "peap_schema", "peap_curves", "peap_check"} <= \
        set(shell.magics_manager.magics["line"])
    ex = shell.run_line_magic("peap_explore", "res")
    assert isinstance(ex, pw.CircuitExplorer) and ex.result is res and ex.model is None
    ex = shell.run_line_magic("peap_explore", "res model ds --n-edges 7 --curves []")
    assert ex.model is model and ex.evaluation["n_edges"] <= 7
    ed = shell.run_line_magic("peap_schema", "ds")
    assert isinstance(ed, pw.SchemaEditor) and ed.dataset.to_records() == ds.to_records()
    ed = shell.run_line_magic("peap_schema", "records model")
    assert isinstance(ed, pw.SchemaEditor) and len(ed.tokens) == len(ds)
    lab_widget = shell.run_line_magic("peap_lab", "model ds")
    assert isinstance(lab_widget, pw.CircuitLab)
    curve = pw.faithfulness_curve(model, ds, res, sizes=[5, 50], progress=False)
    shell.user_ns["curve"] = curve
    cw = shell.run_line_magic("peap_curves", "curve --x n_real_edges")
    assert isinstance(cw, pw.FaithfulnessCurves) and cw.x == "n_real_edges"
    shell.user_ns["box"] = type("Box", (), {"res": res})()
    assert shell.run_line_magic("peap_explore", "box.res").result is res    # dotted names


def test_magics_say_what_is_wrong(shell, tiny_results):
    from IPython.core.error import UsageError

    model, ds, res, _ = tiny_results
    shell.user_ns.update(model=model, res=res, n=3)
    with pytest.raises(UsageError, match="no variable named 'ds'.*task.dataset"):
        shell.run_line_magic("peap_lab", "model ds")
    shell.user_ns["ds2"] = ds
    with pytest.raises(UsageError, match="no variable named 'ds'.*ds2"):
        shell.run_line_magic("peap_lab", "model ds")          # suggests the datasets it has
    with pytest.raises(UsageError, match="n is of type int, not a model"):
        shell.run_line_magic("peap_lab", "n ds2")
    with pytest.raises(UsageError, match="usage: %peap_lab"):
        shell.run_line_magic("peap_lab", "model")
    with pytest.raises(UsageError, match="both a model and a dataset"):
        shell.run_line_magic("peap_explore", "res model")
    with pytest.raises(UsageError, match=r"(?s)usage: %peap_explore.*--n-edges.*unrecognized arguments: --colour"):
        shell.run_line_magic("peap_explore", "res --colour red")
    with pytest.raises(UsageError, match="not key=variable"):
        shell.run_line_magic("peap_check", "lab1.n_edges n model")
    with pytest.raises(UsageError, match="has no attribute 'nope'"):
        shell.run_line_magic("peap_explore", "res.nope")
    shell.user_ns["records"] = ds.to_records()
    with pytest.raises(UsageError, match="records need a model"):
        shell.run_line_magic("peap_schema", "records")
    with pytest.raises(UsageError, match="no lab named"):
        shell.run_line_magic("peap_check", "lab9")
    with pytest.raises(UsageError, match="no check named"):
        shell.run_line_magic("peap_check", "lab1.nope n")
    # through run_cell a UsageError is a one-line message, not a traceback
    result = shell.run_cell("%peap_schema nothing_here")
    assert isinstance(result.error_in_exec, UsageError)


def test_magic_check_runs_checks_and_summaries(shell, capsys, tiny_results):
    model, _, _, _ = tiny_results
    shell.user_ns.update(model=model, answer=model.graph.n_edges, blank=...)
    shell.run_line_magic("peap_check", "lab1.n_edges answer model=model")
    assert "Correct:" in capsys.readouterr().out
    shell.run_line_magic("peap_check", "lab1.n_edges blank model=model")
    assert "Not answered yet:" in capsys.readouterr().out
    s = shell.run_line_magic("peap_check", "lab1")              # the latest attempt counts
    assert s.passed == 0 and s.to_dict()["checks"][0]["status"] == "blank"
    shell.run_line_magic("peap_check", "lab1.n_edges answer model=model")
    s = shell.run_line_magic("peap_check", "lab1")
    assert s.passed == 1 and "lab1.clean_logit_diff" in s.missing()
    assert shell.run_line_magic("peap_check", "").passed == 1
    # the usage comes from IPython's magic_arguments: %peap_explore? shows it
    assert "--n-edges" in shell.find_line_magic("peap_explore").__doc__
