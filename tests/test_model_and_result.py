"""Model loading (real from_pretrained on a directory we saved), argument errors, result files."""

import numpy as np
import pytest
import torch

import peap_widget as pw
from peap_widget import PeapError, UnsupportedArchitectureError
from tiny import tiny_gpt2, tiny_records


@pytest.fixture(scope="module")
def saved_dir(tmp_path_factory):
    hf, tok = tiny_gpt2(n_layer=2, n_head=4, d_model=16, dtype=torch.float32)
    d = tmp_path_factory.mktemp("tiny_gpt2")
    hf.save_pretrained(d)
    tok.save_pretrained(d)
    return d, hf, tok


@pytest.fixture(scope="module")
def tiny():
    hf, tok = tiny_gpt2()
    model = pw.load_model(hf, tokenizer=tok)
    return model, pw.Dataset.from_records(tiny_records(), model)


def test_load_model_from_directory(saved_dir):
    d, hf, tok = saved_dir
    model = pw.load_model(str(d), dtype="float64")
    assert model.dtype == torch.float64 and not model.hf.training
    assert model.adapter.family == "gpt2" and model.graph.n_edges > 0
    ids = torch.tensor([tok("When Mary and John went to the store , John gave a book to")["input_ids"]])
    with torch.no_grad():
        ours = model.hf(ids).logits
        theirs = hf.double()(ids).logits
    hf.float()
    assert torch.allclose(ours, theirs, atol=1e-10)
    # the tokenizer saved with the model came back
    assert model.tokenizer("Mary gave")["input_ids"] == tok("Mary gave")["input_ids"]


def test_load_model_checks_arguments(saved_dir):
    _, hf, tok = saved_dir
    with pytest.raises(PeapError, match="needs its tokenizer"):
        pw.load_model(hf)
    with pytest.raises(PeapError, match="unknown dtype"):
        pw.load_model(hf, tokenizer=tok, dtype="float13")
    with pytest.raises(PeapError, match="remote=True needs a model name"):
        pw.load_model(hf, tokenizer=tok, remote=True)
    with pytest.raises(PeapError, match="got int"):
        pw.load_model(3, tokenizer=tok)


def test_unsupported_architecture_names_it_and_supported_ones():
    from transformers import BloomConfig, BloomForCausalLM

    hf = BloomForCausalLM(BloomConfig(vocab_size=32, hidden_size=16, n_layer=1, n_head=2))
    with pytest.raises(UnsupportedArchitectureError) as info:
        pw.load_model(hf, tokenizer=object())
    assert "BloomForCausalLM" in str(info.value) and "gpt2" in str(info.value)


def test_graph_sizes_match_eap_ig_counts():
    # GPT-2 small: 32,491 edges, 157 forward nodes, 445 backward slots (EAP-IG / MIB)
    g = pw.Graph(pw.GraphConfig(n_layers=12, n_heads=12, d_model=768))
    assert (g.n_forward, g.n_backward, g.n_edges) == (157, 445, 32491)
    assert g.backward_names[g.qkv_slot(3, 2, 4)] == "a3.h4<v>"
    assert g.forward_names[g.head_node(3, 4)] == "a3.h4" and g.forward_names[g.mlp_node(0)] == "m0"
    # parallel blocks: m{L} does not read the heads of its own layer
    gp = pw.Graph(pw.GraphConfig(n_layers=12, n_heads=12, d_model=768, parallel_attn_mlp=True))
    assert gp.n_edges == 32491 - 12 * 12


def test_attribute_rejects_bad_arguments(tiny):
    model, ds = tiny
    for kwargs, msg in [({"method": "acdc"}, "unknown method"),
                        ({"ablation": "resample"}, "unknown ablation"),
                        ({"aggregation": "median"}, "unknown aggregation"),
                        ({"metric": "accuracy"}, "unknown metric"),
                        ({"batch_size": 0}, "batch_size")]:
        with pytest.raises(PeapError, match=msg):
            pw.attribute(model, ds, progress=False, **kwargs)


def test_edge_table_shape_and_names(tiny):
    model, ds = tiny
    res = pw.attribute(model, ds, progress=False)
    e = res.edges
    assert list(e.columns) == ["kind", "src", "dst", "src_span", "dst_span", "score"]
    S, g = len(ds.schema), model.graph
    n_pairs = S * (S + 1) // 2
    assert (e.kind == "resid").sum() == S * g.n_edges
    for kind in "qkv":
        assert (e.kind == kind).sum() == 2 * 4 * n_pairs
    cross = e[e.kind != "resid"]
    assert (cross.src == cross.dst).all()
    order = {s: i for i, s in enumerate(ds.schema.spans)}
    assert (cross.src_span.map(order) <= cross.dst_span.map(order)).all()
    resid = e[e.kind == "resid"]
    assert (resid.src_span == resid.dst_span).all()
    # empty span (example 1's prefix) still has rows; the metric baselines are recorded
    assert res.clean_metric.shape == (5,) and res.counterfactual_metric.shape == (5,)
    assert res.settings["method"] == "peap" and res.spans == list(ds.schema.spans)


def test_custom_metric_and_prob_diff(tiny):
    model, ds = tiny

    def doubled(logits, correct, incorrect):
        return 2 * (logits.gather(-1, correct[:, None]) - logits.gather(-1, incorrect[:, None]))[:, 0]

    a = pw.attribute(model, ds, metric="logit_diff", progress=False)
    b = pw.attribute(model, ds, metric=doubled, progress=False)
    np.testing.assert_allclose(b.edges.score, 2 * a.edges.score, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(b.clean_metric, 2 * a.clean_metric, rtol=1e-12)
    assert b.settings["metric"] == "doubled"
    p = pw.attribute(model, ds, metric="prob_diff", progress=False)
    assert np.all(np.abs(p.clean_metric) <= 1)


def test_result_save_load_round_trip(tiny, tmp_path):
    model, ds = tiny
    res = pw.attribute(model, ds, progress=False)
    for name in ("res.json", "res.json.gz"):
        back = pw.AttributionResult.load(res.save(tmp_path / name))
        assert back.edges.equals(res.edges)
        assert back.settings == res.settings and back.spans == res.spans
        assert back.schema == res.schema and back.graph_config == res.graph_config
        np.testing.assert_array_equal(back.clean_metric, res.clean_metric)
        np.testing.assert_array_equal(back.counterfactual_metric, res.counterfactual_metric)
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    with pytest.raises(PeapError, match="not a peap_widget.attribution document"):
        pw.AttributionResult.load(tmp_path / "bad.json")


def test_progress_bar_is_shown_and_can_be_silenced(tiny, capsys):
    model, ds = tiny
    pw.attribute(model, ds, method="eap", batch_size=2, progress=True)
    assert "EAP attribution" in capsys.readouterr().err
    pw.attribute(model, ds, method="eap", batch_size=2, progress=False)
    assert "EAP attribution" not in capsys.readouterr().err


def test_parameters_keep_their_requires_grad(tiny):
    model, ds = tiny
    flags = [p.requires_grad for p in model.hf.parameters()]
    pw.attribute(model, ds, progress=False)
    assert flags == [p.requires_grad for p in model.hf.parameters()]


def test_bfloat16_model_attributes_and_evaluates():
    """Half-precision models run (scores formed in float32) and agree with float32."""
    hf, tok = tiny_gpt2(dtype=torch.float32)
    ds32 = pw.Dataset.from_records(tiny_records(), tok)
    ref = pw.attribute(pw.load_model(hf, tokenizer=tok), ds32, progress=False).edges.score
    hf16, tok16 = tiny_gpt2(dtype=torch.float32)
    model = pw.load_model(hf16, tokenizer=tok16, dtype="bfloat16")
    assert model.dtype == torch.bfloat16
    ds = pw.Dataset.from_records(tiny_records(), model)
    res = pw.attribute(model, ds, progress=False)
    assert np.corrcoef(res.edges.score, ref)[0, 1] > 0.999
    full = pw.evaluate(model, ds, res.full_circuit())
    # the full circuit reproduces the clean run up to bf16 rounding of the rebuilt slot inputs
    spread = np.ptp(full.last_logits)
    clean = pw.Evaluator(model, ds).clean_last.double().numpy()
    assert np.abs(full.last_logits - clean).max() < 0.02 * spread and full.hard == 1.0
