"""The shipped toy-ioi-llama model (peap_widget/models/toy-ioi-llama/): a Llama model (grouped-query
attention, rotary positions) that loads through plain transformers and does IOI on names and
templates it was not trained on. The prompts come from the training script's own generators and
splits (`training/train_toy_models.py`, outside the package), with seeds it does not use; the figures are computed here
with plain HF forward passes, not with the training script's evaluation code."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

import peap_widget as pw
from peap_widget.data.tasks.ioi import NAMES
from test_toy_models import last_logits


def _training_script():
    """The training script is not in the import path (it is not part of the package)."""
    path = Path(__file__).resolve().parents[1] / "training" / "train_toy_models.py"
    spec = importlib.util.spec_from_file_location("train_toy_models", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train = _training_script()

NAME = "toy-ioi-llama"
# Not a seed the training script uses (data 1000 * seed + k, evaluation 10001-10005, + 7919 * chunk).
SEED = 31337
N = 300


@pytest.fixture(scope="module")
def hf():
    """(plain HF model, tokenizer, training log), straight from the directory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = pw.models.path(NAME)
    model = AutoModelForCausalLM.from_pretrained(str(d)).eval()
    tok = AutoTokenizer.from_pretrained(str(d))
    return model, tok, json.loads((d / "training_log.json").read_text())


def test_registered_small_and_complete():
    assert pw.models.REGISTRY[NAME] == ("dir", NAME)
    d = pw.models.path(NAME)
    files = {f.name: f.stat().st_size for f in d.iterdir()}
    for f in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
              "training_log.json", "README.md"):
        assert f in files
    assert sum(files.values()) < 2e6
    log = json.loads((d / "training_log.json").read_text())
    assert log["model"] == NAME and log["hyperparameters"]["arch"] == "llama"
    for split in ("heldout_names", "heldout_templates", "heldout_names_and_templates"):
        assert log["eval"][split]["accuracy_argmax_names"] >= 0.95
        assert log["eval"][split]["accuracy"] >= 0.95


def test_is_a_llama_with_gqa_and_rotary_positions(hf):
    from transformers import LlamaForCausalLM

    model, _, _ = hf
    cfg = model.config
    assert type(model) is LlamaForCausalLM and cfg.model_type == "llama"
    assert cfg.num_key_value_heads < cfg.num_attention_heads
    attn = model.model.layers[0].self_attn
    assert attn.k_proj.out_features == cfg.num_key_value_heads * cfg.head_dim
    assert attn.q_proj.out_features == cfg.num_attention_heads * cfg.head_dim
    # rotary: no learned position embedding; the only embedding is the (tied) token embedding
    assert hasattr(model.model, "rotary_emb")
    assert cfg.rope_parameters["rope_type"] == "default"
    embeddings = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Embedding)]
    assert embeddings == ["model.embed_tokens"]
    assert not any("position" in n or "wpe" in n for n, _ in model.named_parameters())
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert not any(n.endswith(".bias") for n, _ in model.named_parameters())


def test_loaded_weights_match_the_frozen_name_rows(hf):
    """The 60 name rows are the fixed random draw the log records (std name_norm / sqrt(d))."""
    model, tok, log = hf
    ids = log["frozen_name_rows"]["ids"]
    assert sorted(tok.convert_ids_to_tokens(ids)) == sorted(log["train_names"] + log["heldout_names"])
    rows = model.model.embed_tokens.weight[ids]
    std = rows.std().item()
    assert abs(std - log["frozen_name_rows"]["std_per_dim"]) < 0.1 * std


@pytest.mark.parametrize("split", ["heldout_names", "heldout_templates"])
def test_ioi_held_out(hf, split):
    model, tok, log = hf
    train_names, held = train.ioi_name_split()
    assert held == log["heldout_names"] and train_names == log["train_names"]
    if split == "heldout_names":  # held-out names, all templates
        recs = train.ioi_records(N, SEED, held, "all")
    else:  # training names, held-out templates only
        recs = train.ioi_records(N, SEED, train_names, "heldout")
        assert all(train.ioi_template_heldout(r["clean"], train_names + held) for r in recs)
    assert len(recs) == N
    texts = [r["clean"] for r in recs]
    io = torch.tensor(tok.convert_tokens_to_ids([r["correct"] for r in recs]))
    s = torch.tensor(tok.convert_tokens_to_ids([r["incorrect"] for r in recs]))
    logits = last_logits(model, tok, texts)
    ar = torch.arange(N)
    assert (logits.argmax(-1) == io).float().mean() >= 0.95  # argmax over the whole vocabulary
    diff = logits[ar, io] - logits[ar, s]
    assert (diff > 0).float().mean() >= 0.95
    assert diff.mean() > 2.0
    for order in ("ABBA", "BABA"):
        sel = torch.tensor([r["template"] == order for r in recs])
        assert sel.sum() > N // 4 and (diff[sel] > 0).float().mean() >= 0.9
    # counterfactual (ABC) prompts, no name repeated: the clean answer has no edge left
    cf = last_logits(model, tok, [r["corrupted"] for r in recs])
    assert abs((cf[ar, io] - cf[ar, s]).mean()) < 0.25 * diff.mean()


def test_right_padding_changes_nothing(hf):
    """A batch of prompts of different lengths gives each prompt's own last-token logits."""
    model, tok, _ = hf
    texts = [r["clean"] for r in train.ioi_records(6, SEED + 1, NAMES, "all")]
    assert len({len(tok(t)["input_ids"]) for t in texts}) > 1
    batch = last_logits(model, tok, texts)
    for i, t in enumerate(texts):
        assert torch.allclose(batch[i], last_logits(model, tok, [t])[0], atol=1e-4)
