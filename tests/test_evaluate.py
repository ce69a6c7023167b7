"""Ablated evaluation baselines, faithfulness measures and curves (DESIGN.md section 5)."""

import numpy as np
import pytest
import torch

import peap_widget as pw
from peap_widget.analysis.curves import helping_first
from peap_widget import PeapError
from tiny import tiny_gpt2, tiny_records


def hf_last_logits(hf, ds, which="clean"):
    out = []
    with torch.no_grad():
        for ex in ds.examples:
            ids = torch.tensor([ex.clean_ids if which == "clean" else ex.corrupted_ids])
            out.append(hf(ids).logits[0, -1])
    return torch.stack(out)


def logit_diff(logits, ds):
    c = torch.tensor([e.correct_id for e in ds.examples])
    i = torch.tensor([e.incorrect_id for e in ds.examples])
    return (logits.gather(1, c[:, None]) - logits.gather(1, i[:, None]))[:, 0].numpy()


def test_full_is_clean_and_empty_is_counterfactual(tiny_results):
    model, ds, peap, eap = tiny_results
    clean = logit_diff(hf_last_logits(model.hf, ds), ds)
    corrupt = logit_diff(hf_last_logits(model.hf, ds, "corrupted"), ds)
    assert np.abs(clean - corrupt).max() > 0.1  # the check can fail
    ev = pw.Evaluator(model, ds, batch_size=2)
    for res in (peap, eap):
        full, empty = ev.run(res.full_circuit()), ev.run(res.empty_circuit())
        np.testing.assert_allclose(full.per_example, clean, atol=1e-5)
        np.testing.assert_allclose(empty.per_example, corrupt, atol=1e-5)
        np.testing.assert_allclose(full.last_logits, hf_last_logits(model.hf, ds).numpy(), atol=1e-5)
        assert full.faithfulness == pytest.approx(1, abs=1e-9) and full.hard == 1 and abs(full.kl) < 1e-12
        assert empty.faithfulness == pytest.approx(0, abs=1e-9)
    np.testing.assert_allclose(ev.empty_per_example, corrupt, atol=1e-5)


def test_zero_ablation_empty_circuit(tiny_results):
    """All edges out, zero ablation: the logits see only the attention output biases."""
    model, ds, peap, _ = tiny_results
    hf = model.hf
    with torch.no_grad():
        x = sum(blk.attn.c_proj.bias for blk in hf.transformer.h)
        logits = hf.lm_head(hf.transformer.ln_f(x))
    expect = logit_diff(logits.expand(len(ds), -1), ds)
    ev = pw.evaluate(model, ds, peap.empty_circuit(), ablation="zero")
    np.testing.assert_allclose(ev.per_example, expect, atol=1e-9)
    full = pw.evaluate(model, ds, peap.full_circuit(), ablation="zero")
    np.testing.assert_allclose(full.per_example, logit_diff(hf_last_logits(hf, ds), ds), atol=1e-9)


def test_mean_ablation_empty_circuit(tiny_results):
    """All edges out, mean ablation: the last token's logits slot gets the sum of every
    component's mean output over the last span (pooled over examples) plus the biases,
    computed here with plain HF hooks."""
    model, ds, peap, _ = tiny_results
    hf = model.hf
    acts = {}

    def keep(name):
        def hook(mod, args, out):
            acts.setdefault(name, []).append((args[0] if name.startswith("o") else out)[0, -1])
        return hook

    handles = []
    for i, blk in enumerate(hf.transformer.h):
        handles.append(blk.attn.c_proj.register_forward_hook(keep(f"o{i}")))
        handles.append(blk.mlp.register_forward_hook(keep(f"m{i}")))
    inputs = []
    with torch.no_grad():
        for ex in ds.examples:  # the last span is the last token alone
            ids = torch.tensor([ex.clean_ids])
            out = hf(ids, output_hidden_states=True)
            inputs.append(out.hidden_states[0][0, -1])
    for h in handles:
        h.remove()
    with torch.no_grad():
        x = torch.stack(inputs).mean(0)
        for i, blk in enumerate(hf.transformer.h):
            x = x + torch.stack(acts[f"o{i}"]).mean(0) @ blk.attn.c_proj.weight + blk.attn.c_proj.bias
            x = x + torch.stack(acts[f"m{i}"]).mean(0)
        logits = hf.lm_head(hf.transformer.ln_f(x))
    expect = logit_diff(logits.expand(len(ds), -1), ds)
    ev = pw.evaluate(model, ds, peap.empty_circuit(), ablation="mean")
    np.testing.assert_allclose(ev.per_example, expect, atol=1e-9)
    assert np.abs(expect - logit_diff(hf_last_logits(hf, ds), ds)).max() > 0.1


def test_measures_follow_their_definitions(tiny_results):
    model, ds, peap, _ = tiny_results
    ev = pw.evaluate(model, ds, peap.circuit(n_edges=30))
    ref = pw.Evaluator(model, ds)
    clean = ref.clean_per_example
    assert ev.metric == pytest.approx(ev.per_example.mean())
    assert ev.faithfulness == pytest.approx((ev.metric - ev.empty_metric) / (clean.mean() - ev.empty_metric))
    assert ev.soft == pytest.approx(ev.metric / clean.mean())
    full = hf_last_logits(model.hf, ds).double()
    p = torch.softmax(full, -1)
    q = torch.log_softmax(torch.tensor(ev.last_logits), -1)
    kl = (p * (p.log() - q)).sum(-1).mean().item()
    assert ev.kl == pytest.approx(kl, rel=1e-9)
    hard = (full.argmax(-1).numpy() == ev.last_logits.argmax(-1)).mean()
    assert ev.hard == hard
    assert 0 < ev.n_edges <= 30 and ev.seconds > 0


def test_evaluate_defaults_and_errors(tiny_results):
    model, ds, peap, _ = tiny_results
    circ = peap.circuit(n_edges=20)
    a = pw.evaluate(model, ds, circ)
    b = pw.evaluate(model, ds, circ, ablation="counterfactual", metric="logit_diff")
    assert a.metric == b.metric
    with pytest.raises(PeapError, match="unknown ablation"):
        pw.evaluate(model, ds, circ, ablation="resample")
    recs = tiny_records()
    for r in recs:  # same prompts, a coarser schema
        sp = r["spans"]
        r["spans"] = {"head": [0, sp["S2"][0]], "tail": [sp["S2"][0], sp["to"][0]], "end": sp["to"]}
    coarse = pw.Dataset.from_records(recs, model)
    with pytest.raises(PeapError, match="do not match the dataset's schema"):
        pw.evaluate(model, coarse, circ)
    hf2, tok2 = tiny_gpt2(n_layer=1)
    m2 = pw.load_model(hf2, tokenizer=tok2)
    with pytest.raises(PeapError, match="not this model's"):
        pw.evaluate(m2, pw.Dataset.from_records(tiny_records(), m2), circ)


def test_curves_and_mib_scores(tiny_results):
    model, ds, peap, eap = tiny_results
    curve = pw.faithfulness_curve(model, ds, {"PEAP": peap, "EAP": eap}, progress=False)
    t = curve.table
    assert list(t.result.unique()) == ["PEAP", "EAP"] and len(t) == 2 * len(pw.MIB_FRACTIONS)
    for name in ("PEAP", "EAP"):
        rows = t[t.result == name]
        assert rows.requested_fraction.tolist() == list(pw.MIB_FRACTIONS)
        # the circuit's own fraction (after path pruning), as Circuit.fraction
        n_units = peap.full_circuit().units.n if name == "PEAP" else eap.full_circuit().units.n
        np.testing.assert_allclose(rows.fraction, rows.n_edges / n_units, rtol=1e-12)
        assert (rows.fraction <= rows.requested_fraction + 1e-12).all()
        assert rows.faithfulness.iloc[-1] == pytest.approx(1.0, abs=1e-9)
        x, y = rows.requested_fraction.to_numpy(), rows.faithfulness.to_numpy()
        manual = sum((y[i] + y[i + 1]) / 2 * (x[i + 1] - x[i]) for i in range(len(x) - 1))
        assert curve.area(result=name) == pytest.approx(manual, rel=1e-12)
        need = curve.edges_needed(0.8, name)
        assert need is not None and rows[rows.n_edges == need].faithfulness.iloc[0] >= 0.8
    fig = curve.plot(["faithfulness", "soft", "hard"])
    assert len(fig.axes) == 3 and len(fig.axes[0].lines) == 3  # two results + the 1.0 line
    scores = pw.mib_scores(model, ds, peap)
    assert set(scores) == {"cpr", "cmd"} and 0 <= scores["cmd"] <= 2
    # explicit edge counts work too
    c2 = pw.faithfulness_curve(model, ds, peap, sizes=[0, 10, 1000], progress=False)
    assert c2.table.requested.tolist() == [0, 10, 1000]
    with pytest.raises(PeapError, match="sizes"):
        pw.faithfulness_curve(model, ds, peap, sizes=[1.5], progress=False)


def test_cpr_ranks_the_edges_that_help_the_task_first(one_thread):
    """MIB's CPR ranks by signed score with the helpful edges first. A score here is
    m(edge ablated) - m(clean), so those are the most negative ones: on the trained toy-ioi
    model the CPR circuits must be faithful at small sizes, while the opposite ranking (the
    edges whose removal raises the logit difference) drives faithfulness below zero."""
    model = pw.models.load("toy-ioi")
    ds = pw.tasks.get("ioi", n=24).dataset(model)
    res = pw.attribute(model, ds, method="peap", progress=False)
    scores = pw.mib_scores(model, ds, res)
    opposite = pw.faithfulness_curve(model, ds, {"r": res}, sizes=pw.MIB_FRACTIONS,
                                     absolute=False, progress=False)
    assert scores["cpr"] > 0.4
    assert opposite.area("faithfulness") < 0.2
    small = opposite.table[opposite.table.requested_fraction.between(0.01, 0.5)]
    assert (small.faithfulness < 0).all()
    # the first edge of the CPR ranking is the edge with the most negative score
    first = helping_first(res).circuit(n_edges=1, absolute=False, method="topn",
                                       merge_qkv=False, prune=False)
    assert first.edges.score.iloc[0] == -float(np.min(res.scores))
