"""The hand-built induction model (`peap_widget.models.groundtruth`, DESIGN.md section 9: "a
hand-built model with a known circuit: discovery recovers it").

It solves its task, its attention does what the module docstring says, PEAP ranks its known
positional circuit (`TRUE_EDGES`) above every other edge-table row, circuits found from those
scores are faithful, and plain EAP (positions summed) provably cannot localise the same edges.
"""

import numpy as np
import pytest
import torch

import peap_widget as pw
from peap_widget.models import groundtruth as gt

N_EXAMPLES = 64


def auroc(scores, positive, ties=0.5):
    """Mann-Whitney AUROC of ``scores`` with ``positive`` rows as positives: the fraction of
    (positive, negative) pairs ordered correctly, a tie counting ``ties`` (0.5: the usual
    statistic, what an order that cannot tell tied rows apart gets on average; 1.0: the upper
    bound, every tie broken in favour of the positive)."""
    s = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    p, n = s[positive][:, None], s[~positive][None, :]
    return float(((p > n).sum() + ties * (p == n).sum()) / (p.size * n.size))


def test_auroc_helper():
    assert auroc([3, 2, 1], [True, False, False]) == 1.0
    assert auroc([1, 2, 3], [True, False, False]) == 0.0
    assert auroc([1, 1, 0], [True, False, False]) == 0.75
    assert auroc([1, 1, 0], [True, False, False], ties=1.0) == 1.0


pytestmark = pytest.mark.usefixtures("one_thread")   # tiny ops: threads only contend


@pytest.fixture(scope="module")
def setup(one_thread):
    model = pw.models.load("induction-groundtruth")        # float32, through the registry
    ds = pw.Dataset.from_records(gt.make_records(N_EXAMPLES), model)
    peap = pw.attribute(model, ds, method="peap", ablation="counterfactual", progress=False)
    eap = pw.attribute(model, ds, method="eap", ablation="counterfactual", progress=False)
    return model, ds, peap, eap


# --- the model and its data ----------------------------------------------------------------------

def test_registry_model_and_records(setup):
    model, ds, _, _ = setup
    assert isinstance(model, pw.Model) and type(model.hf).__name__ == "GPT2LMHeadModel"
    cfg = model.adapter.config
    assert (cfg.n_layers, cfg.n_heads, cfg.d_model) == (2, gt.N_HEAD, gt.D_MODEL)
    assert list(ds.schema.spans) == gt.SCHEMA
    lengths = {ex.length for ex in ds.examples}
    assert min(lengths) == 3 and max(lengths) == 3 + 2 * gt.MAX_FILLER   # both fillers empty .. full
    spans = np.array([[e - s for s, e in ex.spans] for ex in ds.examples])
    assert (spans[:, [1, 2, 4]] == 1).all()                               # A1, B, A2: one token
    assert (spans[:, 0] == 0).any() and (spans[:, 3] == 0).any()          # empty pre / mid occur
    for ex in ds.examples:
        assert len(ex.corrupted_ids) == ex.length
        a1, b, a2 = (ex.spans[i][0] for i in (1, 2, 4))
        assert ex.clean_ids[a1] == ex.clean_ids[a2] and ex.clean_ids[b] == ex.correct_id
        assert ex.corrupted_ids[b] == ex.incorrect_id
        assert len({ex.clean_ids[a1], ex.correct_id, ex.corrupted_ids[a1], ex.incorrect_id}) == 4


def _last_logits(hf, tok, texts):
    """Last-token logits of ``texts`` in one right-padded batch (the causal mask keeps pads
    out of every real token's view)."""
    ids = [tok(t)["input_ids"] for t in texts]
    T = max(map(len, ids))
    batch = torch.tensor([x + [tok.pad_token_id] * (T - len(x)) for x in ids])
    with torch.no_grad():
        logits = hf(batch).logits
    return logits[torch.arange(len(ids)), torch.tensor([len(x) - 1 for x in ids])]


def test_model_solves_the_task():
    hf, tok = gt.build_hf()
    records = gt.make_records(200, seed=1)
    correct = torch.tensor(tok.convert_tokens_to_ids([r["correct"] for r in records]))
    incorrect = torch.tensor(tok.convert_tokens_to_ids([r["incorrect"] for r in records]))
    clean = _last_logits(hf, tok, [r["clean"] for r in records])
    corrupted = _last_logits(hf, tok, [r["corrupted"] for r in records])
    assert (clean.argmax(-1) == correct).all()           # predicts B: accuracy 100%
    assert (corrupted.argmax(-1) == incorrect).all()     # the counterfactual predicts B'
    rows = torch.arange(len(records))
    diff = clean[rows, correct] - clean[rows, incorrect]
    assert diff.min() > 8 and diff.max() < gt.LOGIT_SCALE     # 10 x attention on B: 0.83-0.98
    # one-by-one runs agree with the batch (right padding changes nothing)
    for r, row in zip(records[:3], clean[:3]):
        assert torch.allclose(_last_logits(hf, tok, [r["clean"]])[0], row, atol=1e-5)


def test_attention_does_what_the_docstring_says():
    hf, tok = gt.build_hf()
    hf.set_attn_implementation("eager")              # to get attention patterns back
    for r in gt.make_records(36, seed=2):            # every (len(pre), len(mid)) once
        ids = torch.tensor([tok(r["clean"])["input_ids"]])
        with torch.no_grad():
            att = hf(ids, output_attentions=True).attentions
        T = ids.shape[1]
        prev = att[0][0, 0]                          # a0.h0: query t -> key t-1
        assert prev[0, 0] > 0.999
        assert (prev[torch.arange(1, T), torch.arange(T - 1)] > 0.999).all()
        ind = att[1][0, 0, -1]                       # a1.h0 at the last position
        b = r["spans"]["B"][0]
        assert 0.8 < ind[b] < 0.99 and ind.argmax().item() == b
        assert ind[0] < 1e-9                         # key 0 is suppressed (it matches if pre is empty)


# --- PEAP recovers the circuit -------------------------------------------------------------------

def test_peap_ranks_the_true_edges_first(setup):
    _, _, peap, _ = setup
    E = peap.edges
    true = gt.true_edge_mask(E)
    a = E["score"].abs().to_numpy()
    assert auroc(a, true) >= 0.99
    assert auroc(a, true) == 1.0                     # in fact: every true row beats every other row
    assert a[true].min() > 1000 * a[~true].max()     # by three orders of magnitude (3.5 vs 5e-4)
    top = peap.top(len(gt.TRUE_EDGES))
    assert set(top[gt.KEY_COLUMNS].itertuples(index=False, name=None)) == set(gt.TRUE_EDGES)
    # the positional machinery is used but invariant under this counterfactual: scores ~ 0
    pos = gt.true_edge_mask(E, gt.POSITIONAL_EDGES)
    assert pos.sum() == len(gt.POSITIONAL_EDGES) and a[pos].max() < 1e-3


def test_true_edge_scores_match_the_mechanism(setup):
    _, _, peap, _ = setup
    s = {row[:-1]: row[-1]
         for row in peap.edges[gt.KEY_COLUMNS + ["score"]].itertuples(index=False, name=None)}
    total = peap.counterfactual_mean - peap.clean_mean          # m(x*) - m(x) ~ -18
    # the v path is linear (the attention pattern does not change), so its first-order scores
    # are the whole effect: B -> B' flips the logit difference
    for e in [("resid", "input", "a1.h0<v>", "B", "B"), ("v", "a1.h0", "a1.h0", "B", "A2"),
              ("resid", "a1.h0", "logits", "A2", "A2")]:
        assert s[e] == pytest.approx(total, rel=1e-3)
    # q and k crossing edges are exact recomputations of the same change (the match is lost)
    assert s[("q", "a1.h0", "a1.h0", "B", "A2")] == pytest.approx(s[("k", "a1.h0", "a1.h0", "B", "A2")],
                                                                  rel=1e-4)
    # every true edge pushes the metric the same way as the counterfactual does
    assert all(s[tuple(e)] < -1.0 for e in gt.TRUE_EDGES)


def test_circuits_are_faithful(setup):
    model, ds, peap, _ = setup
    true = gt.true_edge_mask(peap.edges)
    lab = pw.Evaluator(model, ds)
    circ_true = peap.circuit_from(true)
    ev = lab.run(circ_true)
    assert ev.faithfulness > 0.999 and ev.hard == 1.0
    # greedy with as many (merged q/k/v) edges as the true circuit has finds exactly it
    greedy = peap.circuit(n_edges=circ_true.n_edges)
    assert (greedy.in_rows == true).all()
    # with len(TRUE_EDGES) edges it has two extra near-zero ones, and the same faithfulness
    greedy = peap.circuit(n_edges=len(gt.TRUE_EDGES))
    assert (greedy.in_rows & true).sum() == true.sum()
    ev = pw.evaluate(model, ds, greedy)
    assert ev.faithfulness > 0.999 and ev.hard == 1.0
    # every true edge is needed: without the v path the metric is the counterfactual's, without
    # the q or k path the match is lost and the attention on B falls to ~1/length
    for i in np.nonzero(true)[0]:
        rows = true.copy()
        rows[i] = False
        assert lab.run(peap.circuit_from(rows)).faithfulness < 0.7, peap.edges.iloc[i].tolist()


# --- EAP cannot localise it ----------------------------------------------------------------------

def test_eap_cannot_tell_the_true_spans_apart(setup):
    _, _, peap, eap = setup
    E, X = peap.edges, eap.edges
    true = gt.true_edge_mask(E)
    assert set(X["src_span"]) == {"all"} and set(X["kind"]) == {"resid"}   # no positions, no crossing

    # Concretely: a0.h0 -> a1.h0<k> matters only at span B, EAP has one number for all positions
    k_rows = E[(E["kind"] == "resid") & (E["src"] == "a0.h0") & (E["dst"] == "a1.h0<k>")]
    by_span = dict(zip(k_rows["src_span"], k_rows["score"]))
    assert abs(by_span["B"]) > 3
    assert all(abs(v) < 1e-3 * abs(by_span["B"]) for sp, v in by_span.items() if sp != "B")
    (eap_k,) = X[(X["src"] == "a0.h0") & (X["dst"] == "a1.h0<k>")]["score"]
    assert eap_k == pytest.approx(sum(by_span.values()), rel=1e-6)          # EAP = sum over spans

    # Broadcast every EAP score to the rows of its component edge at every span
    resid = (E["kind"] == "resid").to_numpy()
    eap_of = {(s, d): abs(v) for s, d, v in X[["src", "dst", "score"]].itertuples(index=False)}
    bcast = np.array([eap_of[(s, d)] for s, d in E.loc[resid, ["src", "dst"]].itertuples(index=False)])
    t = true[resid]
    # within each true component edge the true span ties with its 4 false spans: AUROC 0.5
    comp = E.loc[resid, ["src", "dst"]].agg("|".join, axis=1).to_numpy()
    for c in np.unique(comp[t]):
        g = comp == c
        assert g.sum() == len(gt.SCHEMA) and t[g].sum() == 1
        assert auroc(bcast[g], t[g]) == 0.5
    # to cover the 5 true residual rows EAP's order must take 25 rows (their 20 false siblings)
    assert (bcast >= bcast[t].min()).sum() == len(gt.SCHEMA) * t.sum()
    assert (np.abs(E.loc[resid, "score"].to_numpy()) >= np.abs(E.loc[resid, "score"].to_numpy())[t].min()
            ).sum() == t.sum()                                             # PEAP: exactly 5

    # Over the residual rows (the only rows EAP scores at all): PEAP 1.0; EAP broadcast 0.956,
    # and even breaking every tie in favour of the true span (knowledge EAP lacks) 0.964: the
    # false spans of the strong v-path edges still outrank the true rows of the q/k paths.
    peap_resid = auroc(np.abs(E.loc[resid, "score"].to_numpy()), t)
    eap_resid, eap_resid_best = auroc(bcast, t), auroc(bcast, t, ties=1.0)
    assert peap_resid == 1.0
    assert eap_resid < 0.96 and eap_resid_best < 0.97
    # Over all rows, giving each crossing row (which EAP lacks) the largest EAP score into that
    # head's q/k/v slot: 0.911, best 0.931; PEAP 1.0.
    slot_of = {}
    for (s, d), v in eap_of.items():
        slot_of[d] = max(slot_of.get(d, 0.0), v)
    all_b = np.array([eap_of[(s, d)] if k == "resid" else slot_of[f"{s}<{k}>"]
                      for k, s, d in E[["kind", "src", "dst"]].itertuples(index=False)])
    assert auroc(all_b, true) < 0.93 and auroc(all_b, true, ties=1.0) < 0.95
    assert auroc(np.abs(E["score"].to_numpy()), true) - auroc(all_b, true, ties=1.0) > 0.05
