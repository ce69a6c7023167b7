"""Token saliency: values against an independent autograd computation, the sign identity with the
`input` node's attribution-patching scores, what it finds on the trained toy-ioi model, and the
saliency suggester built on it."""

import pytest
import torch

import peap_widget as pw
from peap_widget.models.examples import tiny_model, tiny_records
from peap_widget.suggest import Suggestion
from peap_widget.suggest.saliency import (SaliencySuggester, saliency_schema, spans_from_positions,
                                          suggest_from_saliency, token_saliency)


@pytest.fixture(scope="module")
def tiny_llama():
    hf, tok = tiny_model("llama", dtype=torch.float64)
    model = pw.load_model(hf, tokenizer=tok)
    return hf, model, pw.Dataset.from_records(tiny_records(), model)


@pytest.fixture(scope="module")
def toy_ioi():
    return pw.models.load("toy-ioi")


def reference_scores(hf, ids, cf_ids, correct, incorrect):
    """Plain transformers + autograd, one example, no nnsight and no padding: residual streams
    entering each decoder layer and the final norm (hooks), logit difference at the last token."""
    def run(tokens, keep_grad):
        seen = []

        def grab(module, args, kwargs):
            h = args[0] if args else kwargs["hidden_states"]
            if keep_grad:
                h.retain_grad()
            seen.append(h)

        hooks = [layer.register_forward_pre_hook(grab, with_kwargs=True)
                 for layer in hf.model.layers]
        hooks.append(hf.model.norm.register_forward_pre_hook(grab, with_kwargs=True))
        emb = hf.model.embed_tokens(torch.tensor([tokens])).detach().requires_grad_(keep_grad)
        try:
            logits = hf(inputs_embeds=emb).logits[0, -1]
        finally:
            for h in hooks:
                h.remove()
        return seen, logits[correct] - logits[incorrect]

    with torch.no_grad():
        source, _ = run(cf_ids, False)
    clean, m = run(ids, True)
    m.backward()
    x, g = clean[0][0], clean[0].grad[0]
    per_layer = [((c[0] - s[0]) * c.grad[0]).sum(-1) for c, s in zip(clean, source)]
    return {"grad_x_delta": per_layer[0].detach(), "input_x_grad": (x * g).norm(dim=-1).detach(),
            "resid_atp": torch.stack(per_layer).abs().sum(0).detach()}, m.detach()


def test_scores_equal_plain_autograd_in_float64(tiny_llama):
    hf, model, ds = tiny_llama
    for p in hf.parameters():
        p.requires_grad_(True)
    table = token_saliency(model, ds, k=2, batch_size=2).table   # padded batches of 2
    assert all(p.requires_grad for p in hf.parameters())          # frozen only inside
    for i, ex in enumerate(ds.examples):
        want, _ = reference_scores(hf, ex.clean_ids, ex.corrupted_ids, ex.correct_id,
                                   ex.incorrect_id)
        got = table[table.example == i].sort_values("position")
        assert len(got) == ex.length and got["token"].tolist() == ds.tokens(i)
        for name, ref in want.items():
            assert torch.allclose(torch.tensor(got[name].to_numpy()), ref, rtol=0, atol=1e-8), name
        assert float(want["resid_atp"].abs().max()) > 1e-3      # not a vacuous comparison


def test_grad_x_delta_is_a_directional_derivative():
    """Finite differences on a float64 GPT-2 (Llama's RMSNorm computes in float32, too noisy
    for a difference quotient): moving position t's embedding along (x - x*) changes the metric
    at the rate grad_x_delta[t]."""
    hf, tok = tiny_model("gpt2", dtype=torch.float64, scale=1.0)
    model = pw.load_model(hf, tokenizer=tok)
    ds = pw.Dataset.from_records(tiny_records(), model)
    ex = ds.examples[0]
    table = token_saliency(model, ds[:1], k=1).table
    emb = hf.transformer.wte       # position embeddings are the same in both runs
    x = emb(torch.tensor([ex.clean_ids])).detach()
    d = x - emb(torch.tensor([ex.corrupted_ids])).detach()

    def m(e):
        with torch.no_grad():
            logits = hf(inputs_embeds=e).logits[0, -1]
        return float(logits[ex.correct_id] - logits[ex.incorrect_id])

    h = 1e-4
    changed = [t for t in range(ex.length) if d[0, t].abs().max() > 0]
    assert len(changed) == 3
    for t in changed:
        step = torch.zeros_like(x)
        step[0, t] = d[0, t] * h
        fd = (m(x + step) - m(x - step)) / (2 * h)
        assert abs(fd - table.grad_x_delta[t]) < 1e-7 * max(1.0, abs(fd)), (t, fd)
        assert abs(fd) > 1e-4


@pytest.mark.parametrize("family", ["gpt2", "llama", "gpt_neox", "gemma2"])
def test_grad_x_delta_is_minus_the_input_nodes_attribution_patching_score(family):
    """The docstring's identity: per span, the input node's PEAP residual edge scores summed
    over every downstream slot equal minus grad_x_delta summed over the span's positions (both
    averaged over examples); parallel blocks (GPT-NeoX) and post-norms (Gemma-2) too."""
    hf, tok = tiny_model(family, dtype=torch.float64)
    model = pw.load_model(hf, tokenizer=tok)
    ds = pw.Dataset.from_records(tiny_records(), model)
    res = pw.attribute(model, ds, method="peap", progress=False)
    e = res.edges
    inp = (e[(e.src == "input") & (e.kind == "resid")]
           .groupby("src_span", observed=True)["score"].sum())
    t = token_saliency(model, ds).table
    mine = t.groupby("span", observed=True)["grad_x_delta"].sum() / len(ds)
    # HF's Llama / Gemma RMSNorms compute in float32 even in a float64 model, and the two sides
    # take different paths through them (autograd vs the attribution's closed-form norm backward)
    tol = 1e-8 if family in ("gpt2", "gpt_neox") else 1e-6
    for span in ds.schema.spans:
        assert abs(inp.get(span, 0.0) + mine.get(span, 0.0)) < tol, span
    assert mine.abs().max() > 1e-3


def ioi_positions(ds, i):
    ex = ds.examples[i]
    sp = dict(zip(ds.schema.spans, ex.spans))
    return sp["IO"][0], sp["S1"][0], sp["S2"][0], ex.length - 1


def test_toy_ioi_ranks_io_s2_and_end_above_the_rest(toy_ioi):
    """On >= 90% of 200 prompts (ABBA and BABA) the IO, S2 and final positions outrank every
    position that is not a name; S1 (duplicate-token / S-inhibition input) is the fourth."""
    counts = {"io_s2_end_above_non_names": 0, "top4_is_names_and_end": 0, "io_s2_end_top3": 0}
    n = 0
    for order in ("ABBA", "BABA"):
        ds = pw.tasks.get("ioi", n=100, order=order, seed=5).dataset(toy_ioi)
        sal = token_saliency(toy_ioi, ds, k=4, batch_size=32)
        t = sal.table
        for i in range(len(ds)):
            io, s1, s2, end = ioi_positions(ds, i)
            rank = t[t.example == i]["rank"].to_numpy()
            others = [p for p in range(len(rank)) if p not in (io, s1, s2, end)]
            worst_key = max(rank[io], rank[s2], rank[end])
            counts["io_s2_end_above_non_names"] += worst_key < min(rank[others])
            counts["top4_is_names_and_end"] += sal.positions(i) == sorted([io, s1, s2, end])
            counts["io_s2_end_top3"] += worst_key <= 3
            # the input embedding alone cannot see the final token: the counterfactual keeps it
            assert t[(t.example == i) & (t.position == end)].grad_x_delta.item() == 0.0
            n += 1
    frac = {k: v / n for k, v in counts.items()}
    print("toy-ioi saliency (resid_atp), 200 prompts:", frac)
    assert frac["io_s2_end_above_non_names"] >= 0.9
    assert frac["top4_is_names_and_end"] >= 0.9


def test_saliency_suggester_on_toy_ioi(toy_ioi):
    ds = pw.tasks.get("ioi", n=30, order="ABBA", seed=2).dataset(toy_ioi)
    records = [{k: v for k, v in r.items() if k != "spans"} for r in ds.to_records()]
    records.append(dict(records[0], correct="Mary Anne"))             # two-token answer
    records.append({"clean": "Mary to", "correct": "Mary", "incorrect": "John",
                    "corrupted": "Anna to"})                          # too short for 3 keys
    tokens = [toy_ioi.tokenizer.convert_ids_to_tokens(toy_ioi.tokenizer(r["clean"])["input_ids"])
              for r in records]
    seen = []
    sug = SaliencySuggester(toy_ioi, k=3)(records, tokens,
                                          progress=lambda d, t, info: seen.append((d, t)))
    assert isinstance(sug, Suggestion) and sug.span_names == saliency_schema(3)
    assert seen[-1] == (31, 31)
    assert set(sug.failed) == {30, 31}
    assert "2 tokens" in sug.failed[30] and "field 'correct'" in sug.failed[30]
    assert "only 1 positions" in sug.failed[31]
    for i in sug.annotated():
        sug.schema.validate(sug.spans[i], len(tokens[i]), example=i)
    # keys in text order land on IO, S1, S2; END on "to": compare with the human schema
    rename = {"key1": "IO", "key2": "S1", "key3": "S2", "END": "to"}
    mapped = Suggestion(list(rename.values()), [None if s is None else
                                                {rename[k]: s[k] for k in rename}
                                                for s in sug.spans])
    human = [r["spans"] for r in ds.to_records()] + [None, None]
    assert mapped.agreement(human) >= 0.9 * 30 / 32


def test_spans_from_positions_and_suggest_from_table():
    assert spans_from_positions([4, 0], 6) == {"gap0": (0, 0), "key1": (0, 1), "gap1": (1, 4),
                                               "key2": (4, 5), "gap2": (5, 5), "END": (5, 6)}
    with pytest.raises(pw.PeapError, match="before the last token"):
        spans_from_positions([5], 6)
    with pytest.raises(pw.PeapError, match="distinct"):
        spans_from_positions([1, 1], 6)


def test_bad_arguments(tiny_llama, toy_ioi):
    _, model, ds = tiny_llama
    with pytest.raises(pw.PeapError, match="unknown saliency score 'nope'"):
        token_saliency(model, ds, rank_by="nope")
    with pytest.raises(pw.PeapError, match="k must be a positive integer"):
        token_saliency(model, ds, k=0)
    recs = [{k: v for k, v in r.items() if k != "corrupted"} for r in tiny_records()]
    no_cf = pw.Dataset.from_records(recs, model)
    with pytest.raises(pw.DatasetError, match="example 0, field 'corrupted'"):
        token_saliency(model, no_cf, rank_by="resid_atp")
    sal = token_saliency(model, no_cf, k=None)     # the paper's softmax rule, no counterfactual
    assert sal.table.attrs["rank_by"] == "input_x_grad" and sal.table.resid_atp.isna().all()
    for i, on in enumerate(sal.mask):
        s = torch.tensor(sal.table[sal.table.example == i].input_x_grad.to_numpy())
        assert on == (s.softmax(0) > 1 / len(s)).tolist()
    with pytest.raises(pw.DatasetError, match="another tokenizer"):
        token_saliency(toy_ioi, ds)
    assert suggest_from_saliency(sal, 2).span_names == saliency_schema(2)
