"""MAPS head functions (`peap_widget.analysis.head_functions`) against an explicit per-token, per-head
computation written here with the model's own modules, on tiny float64 models of several
families; the hand-built induction model's copying head; the dry run; bad relations."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

import peap_widget as pw
from peap_widget.models.examples import NAMES, tiny_model
from peap_widget.analysis.head_functions import (HeadFunctions, RelationError, head_function_ranks,
                                        head_functions, head_functions_figure, relations)


def _model(family):
    hf, tok = tiny_model(family, n_layers=2, n_heads=4, n_kv_heads=2, d_model=16)
    return pw.load_model(hf, tokenizer=tok)


def _relations():
    return [relations.copying(NAMES), relations.suppression(NAMES),
            relations.from_pairs("lowers", [("Mary", "John"), ("Mary", "Tom"), ("Anna", "Anna"),
                                            ("store", "book")], sign=-1),
            relations.from_pairs("mixed", [("Mary", "John"), ("Mary", "Anna"), ("When", "store"),
                                           ("book", "ball"), ("gave", "gave"), (9, 12)])]


# --- the explicit reference: one head, one token at a time ----------------------------------------

def _parts(hf, family, layer):
    cfg = hf.config
    H, D = cfg.num_attention_heads, cfg.hidden_size
    dh = getattr(cfg, "head_dim", None) or D // H
    Hkv = getattr(cfg, "num_key_value_heads", None) or H
    return H, D, dh, Hkv


def _embed_normed(hf, family, layer, s):
    """The token's embedding alone through layer ``layer``'s attention-input norm."""
    if family == "gpt2":
        return hf.transformer.h[layer].ln_1(hf.transformer.wte.weight[s])
    e = hf.model.embed_tokens.weight[s]
    if family == "gemma2":
        e = e * math.sqrt(hf.config.hidden_size)    # Gemma scales its embeddings by sqrt(d)
    return hf.model.layers[layer].input_layernorm(e)


def _qkv_of_head(hf, family, layer, h, x):
    """(q, k, v) of query head ``h`` from the normed input ``x`` [D] (k, v of its KV group)."""
    H, D, dh, Hkv = _parts(hf, family, layer)
    if family == "gpt2":
        out = hf.transformer.h[layer].attn.c_attn(x)                  # q | k | v, bias included
        return tuple(out[i * D + h * dh: i * D + (h + 1) * dh] for i in range(3))
    attn = hf.model.layers[layer].self_attn
    g = h // (H // Hkv)
    q = attn.q_proj(x).view(H, dh)[h]
    k = attn.k_proj(x).view(Hkv, dh)[g]
    v = attn.v_proj(x).view(Hkv, dh)[g]
    if family == "qwen3":
        q, k = attn.q_norm(q), attn.k_norm(k)
    return q, k, v


def _ov_row(hf, family, layer, h, s, final_norm=True):
    """M_h[s, :]: the head's output for token s alone, unembedded."""
    H, D, dh, Hkv = _parts(hf, family, layer)
    _, _, v = _qkv_of_head(hf, family, layer, h, _embed_normed(hf, family, layer, s))
    if family == "gpt2":
        z = v @ hf.transformer.h[layer].attn.c_proj.weight[h * dh:(h + 1) * dh]   # Conv1D [in, out]
        z = hf.transformer.ln_f(z) if final_norm else z
    else:
        blk = hf.model.layers[layer]
        z = blk.self_attn.o_proj.weight[:, h * dh:(h + 1) * dh] @ v
        if family == "gemma2":
            z = blk.post_attention_layernorm(z)
        z = hf.model.norm(z) if final_norm else z
    logits = hf.lm_head(z)
    cap = getattr(hf.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


def _qk_row(hf, family, layer, h, s):
    """Query token s against every key token t (no positions)."""
    H, D, dh, Hkv = _parts(hf, family, layer)
    q, _, _ = _qkv_of_head(hf, family, layer, h, _embed_normed(hf, family, layer, s))
    V = hf.lm_head.weight.shape[0]
    keys = torch.stack([_qkv_of_head(hf, family, layer, h, _embed_normed(hf, family, layer, t))[1]
                        for t in range(V)])
    scale = hf.config.query_pre_attn_scalar ** -0.5 if family == "gemma2" else dh ** -0.5
    s = keys @ q * scale
    cap = getattr(hf.config, "attn_logit_softcapping", None)
    return torch.tanh(s / cap) * cap if cap else s


def _explicit_scores(model, family, rels, k, among, circuit="ov"):
    hf, tok = model.hf, model.tokenizer
    L, H = hf.config.num_hidden_layers, hf.config.num_attention_heads
    V = hf.lm_head.weight.shape[0]
    vocab = tok.get_vocab()

    def tid(t):
        return t if isinstance(t, int) else vocab[t]

    out = {}
    with torch.no_grad():
        for rel in rels:
            pairs = {(tid(s), tid(t)) for s, t in rel.pairs}
            sources = sorted({s for s, _ in pairs})
            cand = range(V) if among == "vocab" else sorted({i for p in pairs for i in p})
            col = []
            for layer in range(L):
                for h in range(H):
                    hits = 0
                    for s in sources:
                        row = (_ov_row(hf, family, layer, h, s) if circuit == "ov"
                               else _qk_row(hf, family, layer, h, s)) * rel.sign
                        targets = {t for a, t in pairs if a == s}
                        best = max(float(row[t]) for t in targets)
                        rank = sum(1 for c in cand if c not in targets and float(row[c]) >= best)
                        hits += rank < k
                    col.append(hits / len(sources))
            out[rel.name] = col
    return out


@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma2", "qwen3"])
@pytest.mark.parametrize("among,k", [("relation", 1), ("vocab", 3)])
def test_ov_scores_equal_explicit_per_token(family, among, k):
    model = _model(family)
    rels = _relations()
    res = head_functions(model, rels, k=k, among=among)
    want = _explicit_scores(model, family, rels, k, among)
    L, H = model.hf.config.num_hidden_layers, model.hf.config.num_attention_heads
    assert list(res.scores.index) == [f"a{l}.h{h}" for l in range(L) for h in range(H)]
    assert list(res.scores.columns) == [r.name for r in rels]
    for name, col in want.items():
        np.testing.assert_array_equal(res.scores[name].to_numpy(), np.array(col), err_msg=name)
    # the scores are not degenerate: heads differ
    assert res.scores["copying"].nunique() > 1


@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma2", "qwen3"])
def test_qk_scores_equal_explicit_per_token(family):
    model = _model(family)
    rels = [relations.copying(NAMES[:4]),
            relations.from_pairs("pairs", [("Mary", "store"), ("John", "book"), ("to", "Mary")])]
    res = head_functions(model, rels, k=2, among="vocab", circuit="qk")
    want = _explicit_scores(model, family, rels, 2, "vocab", circuit="qk")
    for name, col in want.items():
        np.testing.assert_array_equal(res.scores[name].to_numpy(), np.array(col), err_msg=name)


def test_chunking_does_not_change_anything():
    """A block of 7 scores forces one vocabulary column per chunk: same ranks and mappings."""
    model = _model("llama")
    rels = _relations()
    whole = head_functions(model, rels, k=2, among="vocab")
    tiny = head_functions(model, rels, k=2, among="vocab", block=7)
    assert whole.scores.equals(tiny.scores)
    for name in whole.ranks:
        np.testing.assert_array_equal(whole.ranks[name], tiny.ranks[name])
    cols = ["kind", "source", "target"]
    assert whole.top[cols].equals(tiny.top[cols])     # the row means sum in another order:
    np.testing.assert_allclose(whole.top.score, tiny.top.score, rtol=1e-12)


def test_ranks_give_any_k():
    model = _model("gpt2")
    rels = _relations()
    res = head_functions(model, rels, k=1)
    assert res.score_at(3).equals(head_functions(model, rels, k=3).scores)
    assert (res.score_at(3).to_numpy() >= res.scores.to_numpy()).all()


def test_top_mappings_are_the_rows_best_tokens():
    """Each listed mapping is the source row's best (worst) token over the vocabulary, with the
    row-centred logit, checked against the explicit row."""
    model = _model("llama")
    res = head_functions(model, [relations.copying(NAMES)], top=3)
    tok, hf = model.tokenizer, model.hf
    assert set(res.top.index) == set(res.scores.index)
    with torch.no_grad():
        for head in ["a0.h1", "a1.h3"]:
            layer, h = (int(x) for x in head[1:].split(".h"))
            rows = res.top.loc[head]
            assert list(rows.kind) == ["promotes"] * 3 + ["suppresses"] * 3
            centred = {}
            for name in NAMES:
                row = _ov_row(hf, "llama", layer, h, tok.get_vocab()[name])
                hi, lo = (tok.convert_ids_to_tokens(int(i)) for i in (row.argmax(), row.argmin()))
                centred[name] = (row.max() - row.mean(), hi, row.min() - row.mean(), lo)
            best = sorted(NAMES, key=lambda n: -float(centred[n][0]))[:3]
            assert list(rows.source[:3]) == best
            assert list(rows.target[:3]) == [centred[n][1] for n in best]
            np.testing.assert_allclose(rows.score[:3], [float(centred[n][0]) for n in best],
                                       rtol=1e-9)
            worst = sorted(NAMES, key=lambda n: float(centred[n][2]))[:3]
            assert list(rows.source[3:]) == worst
            assert list(rows.target[3:]) == [centred[n][3] for n in worst]


def test_groundtruth_copying_head_scores_highest():
    """In the hand-built induction model only a1.h0 writes the token it reads into the space the
    unembedding reads: it copies every word (score 1); the other heads map to 0 (score 0)."""
    from peap_widget.models import groundtruth as gt

    model = pw.models.load("induction-groundtruth", dtype=torch.float64)
    words = gt.FILLERS + gt.CONTENT
    res = head_functions(model, [relations.copying(words), relations.suppression(words)],
                         k=1, among="vocab")
    copy = res.scores["copying"]
    assert copy.idxmax() == "a1.h0" and copy["a1.h0"] == 1.0
    assert (copy.drop("a1.h0") == 0).all()
    assert (res.scores["suppression"] == 0).all()
    top = res.top.loc["a1.h0"]
    promoted = top[top.kind == "promotes"]
    assert (promoted.source == promoted.target).all()


def test_dry_run_equals_local():
    model = _model("llama")
    rels = _relations()
    want = head_functions(model, rels, k=2, among="vocab")
    model.remote = "local"
    got = head_functions(model, rels, k=2, among="vocab")
    assert got.scores.equals(want.scores) and got.top.equals(want.top)
    for name in want.ranks:
        np.testing.assert_array_equal(got.ranks[name], want.ranks[name])
    log = [e for e in model.remote_log if e["job"] == head_function_ranks.__name__]
    assert log and log[-1]["bytes_back"] < 64 * 1024     # reduced scores only


def test_from_task_and_dataset():
    model = pw.models.load("toy-ioi")
    task = pw.tasks.get("ioi", n=30)
    rels = relations.from_task(task, model)
    assert [r.name for r in rels] == ["copying", "suppression"]
    answers = {r[f] for r in task.records for f in ("correct", "incorrect")}
    assert {s for s, _ in rels[0].pairs} == answers and rels[1].sign == -1
    ds_rels = relations.from_task(task.dataset(model))
    vocab = model.tokenizer.get_vocab()
    assert {s for s, _ in ds_rels[0].pairs} == {vocab[a] for a in answers}
    # a task passed straight to head_functions builds the same relations
    assert head_functions(model, task).scores.equals(head_functions(model, rels).scores)
    gt = relations.from_task(pw.tasks.get("greater-than", n=5), pw.models.load("toy-greater-than"))
    assert [r.name for r in gt] == ["greater-than"] and ("41", "87") in gt[0].pairs
    assert ("87", "41") not in gt[0].pairs and len(gt[0]) == 100 * 99 // 2


def test_figure():
    model = _model("gpt2")
    res = head_functions(model, _relations())
    fig = head_functions_figure(res.scores)
    assert len([a for a in fig.axes if a.get_title()]) == 4
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue()[:4] == b"\x89PNG"
    fig2 = res.plot(layout="table")
    assert [t.get_text() for t in fig2.axes[0].get_xticklabels()] == list(res.scores.columns)
    import matplotlib.pyplot as plt

    plt.close("all")


@pytest.mark.parametrize("pairs,match", [
    ([("Mary", "Zorro")], r"'Zorro' is not in the tokenizer's vocabulary"),
    ([("Mary John", "Mary")], r"'Mary John' is 2 tokens"),
    ([("Mary", 10_000)], r"token id 10000 is outside the vocabulary"),
    ([("Mary", "")], r"non-empty string"),
    ([], r"has no pairs"),
])
def test_bad_relations_name_the_token(pairs, match):
    model = _model("gpt2")
    with pytest.raises(RelationError, match=match) as err:
        head_functions(model, [relations.from_pairs("capital", pairs)])
    assert "relation 'capital'" in str(err.value)
    assert isinstance(err.value, pw.PeapError)


def test_bad_arguments():
    model = _model("gpt2")
    rel = relations.copying(NAMES)
    for kwargs, match in [({"k": 0}, "k must be"), ({"among": "all"}, "among must be"),
                          ({"circuit": "vo"}, "circuit must be")]:
        with pytest.raises(pw.PeapError, match=match):
            head_functions(model, rel, **kwargs)
    with pytest.raises(RelationError, match="names must differ"):
        head_functions(model, [rel, rel])
    with pytest.raises(RelationError, match="sign must be"):
        relations.Relation("x", [("Mary", "Mary")], sign=0)
    assert isinstance(head_functions(model, {"mine": [("Mary", "John")]}), HeadFunctions)
