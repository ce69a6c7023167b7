"""Every supported model family through the real loading code, the widgets' head cards and the
command line (the scores themselves are judged in tests/test_families_oracle.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import peap_widget as pw
from peap_widget.arch import supported_families
from peap_widget.app.cli import main
from peap_widget.models.examples import TINY_FAMILIES, tiny_model, tiny_records
from peap_widget.data.tokenizer import pieces, word_level_tokenizer

FAMILY_OF = {"gpt2": "gpt2", "llama": "llama", "llama3": "llama", "mistral": "mistral",
             "qwen2": "qwen2", "qwen3": "qwen3", "gpt_neox": "gpt_neox",
             "gpt_neox_sequential": "gpt_neox", "gemma2": "gemma2"}


def _ioi_tokenizer():
    words = [p for tx in pw.tasks.get("ioi", n=300, order="both").texts() for p in pieces(tx)]
    return word_level_tokenizer(words + pw.tasks.ioi.__globals__["NAMES"], text_mode=True)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Each tiny family over the IOI vocabulary, saved with save_pretrained (float32)."""
    tok = _ioi_tokenizer()
    out = {}
    for fam in TINY_FAMILIES:
        hf, _ = tiny_model(fam, dtype=torch.float32, tokenizer=tok)
        d = tmp_path_factory.mktemp(fam)
        hf.save_pretrained(d)
        tok.save_pretrained(d)
        out[fam] = d
    return out


def test_tiny_families_cover_every_supported_family():
    assert set(FAMILY_OF.values()) == set(supported_families())
    assert set(FAMILY_OF) == set(TINY_FAMILIES)


@pytest.mark.parametrize("fam", TINY_FAMILIES)
def test_loads_from_a_directory_and_discovers(fam, saved, tmp_path):
    """`load_model(dir)` (the real from_pretrained) picks the family's adapter, and `peap
    discover --model DIR` runs the main job end to end on it."""
    model = pw.load_model(str(saved[fam]))
    assert model.adapter.family == FAMILY_OF[fam]
    hf = model.hf
    assert model.adapter.n_kv_heads == getattr(hf.config, "num_key_value_heads",
                                               hf.config.num_attention_heads)
    out = tmp_path / "run"
    assert main(["discover", "--model", str(saved[fam]), "--task", "ioi", "--n", "4",
                 "--sizes", "0.5,1.0", "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["evaluation_examples"] == 4
    assert (out / "report.html").stat().st_size > 0


def test_family_is_matched_by_model_type_not_class_name():
    from transformers import LlamaForCausalLM

    class MyLabsLlamaForCausalLM(LlamaForCausalLM):   # a checkpoint's own class name
        pass

    hf, tok = tiny_model("llama")
    renamed = MyLabsLlamaForCausalLM(hf.config).to(torch.float64).eval()
    renamed.load_state_dict(hf.state_dict())
    model = pw.load_model(renamed, tokenizer=tok)
    assert model.adapter.family == "llama"
    ds = pw.Dataset.from_records(tiny_records(), model)
    ref = pw.attribute(pw.load_model(hf, tokenizer=tok), ds, batch_size=5, progress=False)
    got = pw.attribute(model, ds, batch_size=5, progress=False)
    np.testing.assert_array_equal(got.edges.score.to_numpy(), ref.edges.score.to_numpy())


def test_unknown_architecture_names_it_and_the_supported_families():
    from transformers import OPTConfig, OPTForCausalLM

    hf = OPTForCausalLM(OPTConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1,
                                  num_attention_heads=2, ffn_dim=32, word_embed_proj_dim=16))
    with pytest.raises(pw.UnsupportedArchitectureError) as info:
        pw.load_model(hf, tokenizer=object())
    msg = str(info.value)
    assert "OPTForCausalLM" in msg and "'opt'" in msg
    for fam in ("gpt2", "llama", "mistral", "qwen2", "qwen3", "gpt_neox", "gemma2"):
        assert fam in msg


def test_a_headless_model_of_a_known_family_is_refused_clearly():
    from transformers import LlamaModel

    hf, _ = tiny_model("llama")
    with pytest.raises(pw.UnsupportedArchitectureError, match="AutoModelForCausalLM"):
        pw.load_model(LlamaModel(hf.config), tokenizer=object())


@pytest.mark.parametrize("fam", ["llama", "qwen2", "gemma2"])
def test_gqa_scores_do_not_depend_on_the_attention_implementation(fam):
    """The q/k/v slot gradients come from our own per-query-head attention backward, so eager
    and sdpa models give the same scores (sliding windows included)."""
    tables = {}
    for impl in ("eager", "sdpa"):
        hf, tok = tiny_model(fam)
        if fam == "gemma2" and impl == "sdpa":
            impl = "eager"     # HF runs Gemma-2 eagerly (soft-capping); nothing to compare
        hf.config._attn_implementation = impl
        model = pw.load_model(hf, tokenizer=tok)
        ds = pw.Dataset.from_records(tiny_records(), model)
        tables[impl] = pw.attribute(model, ds, batch_size=5, progress=False).edges
        logits = hf(torch.tensor([ds.examples[0].clean_ids])).logits
        tables[impl + "_logits"] = logits
    if "sdpa" in tables:
        a, b = tables["eager"].score.to_numpy(), tables["sdpa"].score.to_numpy()
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6 * np.abs(a).max())
        assert np.abs(a).max() > 0


def test_rotary_models_have_no_position_node():
    """``input`` is what enters block 0: the token embeddings (Gemma: times sqrt(d)), no
    position embedding."""
    for fam, scale in (("llama", 1.0), ("gemma2", 16 ** 0.5)):
        hf, tok = tiny_model(fam)
        model = pw.load_model(hf, tokenizer=tok)
        ids = torch.tensor([tok("Mary and John")["input_ids"]])
        with model.nn.trace(ids):
            x = model.adapter.read_input(model.nn).save()
        expected = hf.get_input_embeddings().weight[ids] * scale
        torch.testing.assert_close(x, expected.to(x.dtype), rtol=1e-6, atol=1e-9)
        assert model.graph.forward_names[0] == "input"


@pytest.mark.parametrize("fam", TINY_FAMILIES)
def test_head_cards_for_every_family(fam):
    """The explorer's hover cards: each query head's OV logit lens and its attention per span
    pair (rows a distribution over key spans), for GQA heads, windows and soft-capped logits."""
    from peap_widget.widgets.circuit_explorer import head_details_for

    hf, tok = tiny_model(fam)
    model = pw.load_model(hf, tokenizer=tok)
    ds = pw.Dataset.from_records(tiny_records(), model)
    cards = head_details_for(model, ds, k=3)
    L, H = model.adapter.config.n_layers, model.adapter.config.n_heads
    assert sorted(cards) == sorted(f"a{layer}.h{h}" for layer in range(L) for h in range(H))
    for card in cards.values():
        att = np.asarray(card["attends"])
        assert att.shape == (len(ds.schema), len(ds.schema))
        present = att.sum(1) > 0
        np.testing.assert_allclose(att.sum(1)[present], 1, atol=1e-3)   # rounded to 4 places
        assert len(card["promotes"]) == 3 and 0 <= card["copying"] <= 1
    # heads of one KV group share k/v weights but not queries: their patterns differ
    if getattr(hf.config, "num_key_value_heads", H) < H:
        a0, a1 = (np.asarray(cards[f"a0.h{h}"]["attends"]) for h in (0, 1))
        assert np.abs(a0 - a1).max() > 1e-3


@pytest.mark.parametrize("fam", TINY_FAMILIES)
def test_closed_form_norm_backward_matches_the_models_own_norm(fam):
    """The norm's backward in closed form (LayerNorm / RMSNorm, Gemma's 1 + w) equals autograd
    through the model's own norm modules, for many slots at once."""
    hf, tok = tiny_model(fam)
    ad = pw.load_model(hf, tokenizer=tok).adapter
    assert ad.closed_form_norms
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, ad.config.d_model, generator=g, dtype=torch.float64) * 3
    cot = torch.randn(2, 5, 7, ad.config.d_model, generator=g, dtype=torch.float64)
    # HF's RMSNorm computes in float32 even in float64 models: compare at that precision there
    tol = 1e-12 if ad.decl.norm_kind == "layer" else 1e-6
    for layer, which in ((0, "attn"), (1, "mlp"), (None, "final")):
        got = ad.norm_backward(hf, layer, which, x, cot)
        want = ad._norm_backward_autograd(hf, layer, which, x, cot)
        torch.testing.assert_close(got, want, rtol=tol, atol=tol * want.abs().max().item())


def test_a_norm_that_is_not_the_familys_falls_back_to_autograd():
    """A checkpoint whose norm differs from its family's (here a LayerNorm in a Llama) is not
    given the RMSNorm closed form: its gradients go through the module, and scores stay right
    (the same as with the closed form switched off by hand)."""
    hf, tok = tiny_model("llama")
    hf.model.norm = torch.nn.LayerNorm(hf.config.hidden_size).to(torch.float64)
    model = pw.load_model(hf, tokenizer=tok)
    assert not model.adapter.closed_form_norms
    ds = pw.Dataset.from_records(tiny_records(), model)
    got = pw.attribute(model, ds, batch_size=5, progress=False).edges.score.to_numpy()
    hf2, _ = tiny_model("llama")
    hf2.model.norm = torch.nn.LayerNorm(hf2.config.hidden_size).to(torch.float64)
    model2 = pw.load_model(hf2, tokenizer=tok)
    model2.adapter.closed_form_norms = True          # the wrong closed form: must differ
    wrong = pw.attribute(model2, ds, batch_size=5, progress=False).edges.score.to_numpy()
    model2.adapter.closed_form_norms = False
    right = pw.attribute(model2, ds, batch_size=5, progress=False).edges.score.to_numpy()
    np.testing.assert_allclose(got, right, rtol=0, atol=1e-12)
    assert np.abs(wrong - right).max() > 1e-3 * np.abs(right).max()


def test_toy_ioi_llama_runs_the_demo(tmp_path):
    """The shipped Llama-architecture model through the library and `peap demo --model`."""
    model = pw.models.load("toy-ioi-llama")
    assert model.adapter.family == "llama" and model.adapter.n_kv_heads == 2
    assert model.adapter.config.n_heads == 4
    out = tmp_path / "demo"
    assert main(["demo", "--model", "toy-ioi-llama", "--n", "8", "--out", str(out),
                 "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "toy-ioi-llama" and summary["clean_accuracy"] >= 0.95
