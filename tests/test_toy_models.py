"""The shipped toy models (peap_widget/models/toy-*/): they load through the package and through
plain transformers alike, and do their tasks on prompts they were not trained on. The figures
are computed here with plain HF forward passes, not with the training script's code."""

import json

import numpy as np

import pytest
import torch

import peap_widget as pw

MODELS = ["toy-ioi", "toy-greater-than"]
# Not a seed the training script uses (data 1000 * seed + k, evaluation 10001-10005, + 7919 * chunk).
SEED = 31337


@pytest.fixture(scope="module")
def hf_models():
    """name -> (plain HF model, tokenizer, training log), straight from the directory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = {}
    for name in MODELS:
        d = pw.models.path(name)
        model = AutoModelForCausalLM.from_pretrained(str(d)).eval()
        tok = AutoTokenizer.from_pretrained(str(d))
        out[name] = (model, tok, json.loads((d / "training_log.json").read_text()))
    return out


@pytest.fixture(scope="module")
def pw_models():
    return {name: pw.models.load(name) for name in MODELS}


def last_logits(model, tok, texts):
    """Logits at each text's last token, from one right-padded batch."""
    enc = tok(texts, padding=True, return_tensors="pt")
    assert tok.unk_token_id not in enc["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
    last = enc["attention_mask"].sum(1) - 1
    return logits[torch.arange(len(texts)), last]


def sample_texts():
    return {"toy-ioi": pw.tasks.get("ioi", n=8, order="both", seed=SEED).texts()[::4],
            "toy-greater-than": pw.tasks.get("greater-than", n=8, seed=SEED).texts()[::4]}


@pytest.mark.parametrize("name", MODELS)
def test_directory_is_small_and_complete(name):
    d = pw.models.path(name)
    files = {f.name: f.stat().st_size for f in d.iterdir()}
    for f in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
              "training_log.json", "README.md"):
        assert f in files
    assert sum(files.values()) < 5e6
    log = json.loads((d / "training_log.json").read_text())
    assert log["model"] == name


@pytest.mark.parametrize("name", MODELS)
def test_package_and_plain_hf_give_the_same_logits(name, hf_models, pw_models):
    hf, tok, _ = hf_models[name]
    m = pw_models[name]
    assert type(m.hf).__name__ == "GPT2LMHeadModel"
    assert tok.get_vocab() == m.tokenizer.get_vocab()
    for text in sample_texts()[name]:
        ids = tok(text, return_tensors="pt")["input_ids"]
        assert torch.equal(ids, m.tokenizer(text, return_tensors="pt")["input_ids"])
        with torch.no_grad():
            a, b = hf(ids).logits, m.hf(ids).logits
        assert torch.allclose(a, b, atol=1e-6, rtol=0)
    sd_a, sd_b = hf.state_dict(), m.hf.state_dict()
    assert sd_a.keys() == sd_b.keys()
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)


def test_ioi_on_held_out_names(hf_models):
    model, tok, log = hf_models["toy-ioi"]
    held = log["heldout_names"]
    assert len(held) >= 10 and not set(held) & set(log["train_names"])
    task = pw.tasks.get("ioi", n=200, order="both", seed=SEED, names=held)
    texts = [r["clean"] for r in task.records]
    io = torch.tensor(tok.convert_tokens_to_ids([r["correct"] for r in task.records]))
    s = torch.tensor(tok.convert_tokens_to_ids([r["incorrect"] for r in task.records]))
    names = torch.tensor(tok.convert_tokens_to_ids(log["train_names"] + held))
    logits = last_logits(model, tok, texts)
    ar = torch.arange(len(texts))
    diff = logits[ar, io] - logits[ar, s]
    assert (diff > 0).float().mean() >= 0.95
    assert diff.mean() > 2.0
    assert (names[logits[:, names].argmax(-1)] == io).float().mean() >= 0.95
    for order in ("ABBA", "BABA"):
        sel = torch.tensor([r["template"] == order for r in task.records])
        assert (diff[sel] > 0).float().mean() >= 0.9
    # counterfactual (ABC) prompts, no name repeated: the clean answer has no edge left
    cf = last_logits(model, tok, [r["corrupted"] for r in task.records])
    assert abs((cf[ar, io] - cf[ar, s]).mean()) < 0.25 * diff.mean()


def test_greater_than_prob_diff(hf_models):
    model, tok, _ = hf_models["toy-greater-than"]
    task = pw.tasks.get("greater-than", n=200, seed=SEED)
    years = torch.tensor(tok.convert_tokens_to_ids([f"{y:02d}" for y in range(100)]))
    yy = torch.tensor([int(r["incorrect"]) for r in task.records])
    above = torch.arange(100)[None, :] > yy[:, None]

    def prob_diff(texts):
        p = last_logits(model, tok, texts).softmax(-1)[:, years]
        return (p * above).sum(-1) - (p * ~above).sum(-1)

    pd = prob_diff([r["clean"] for r in task.records])
    assert pd.mean() > 0.8
    assert (pd > 0).float().mean() >= 0.95
    # counterfactual prompts (start year 01): much less preference for years above the clean YY
    assert prob_diff([r["corrupted"] for r in task.records]).mean() < pd.mean() - 0.5


def test_tasks_validate_for_the_shipped_models(pw_models, hf_models):
    held = hf_models["toy-ioi"][2]["heldout_names"]
    for task, name in [(pw.tasks.get("ioi", n=20, order="both", seed=SEED), "toy-ioi"),
                       (pw.tasks.get("ioi", n=20, order="ABBA", seed=SEED, names=held), "toy-ioi"),
                       (pw.tasks.get("greater-than", n=20, seed=SEED), "toy-greater-than")]:
        model = pw_models[name]
        ds = task.dataset(model)
        assert len(ds) == len(task) and ds.has_counterfactuals
        for i, rec in enumerate(task.records):
            ex = ds[i]
            assert model.tokenizer.convert_ids_to_tokens(ex.correct_id) == rec["correct"]
            assert model.tokenizer.unk_token_id not in ex.clean_ids
        metric = task.metric_for(model)
        assert metric is not None


def test_float32_crossing_scores_match_float64_on_saturated_heads():
    """toy-ioi's name movers attend almost one-hot: the q/k closed form cancels to noise in
    float32 (scores of 1e11 before it ran in float64). Now float32 agrees with float64."""
    import torch

    m32 = pw.models.load("toy-ioi")
    m64 = pw.models.load("toy-ioi", dtype=torch.float64)
    task = pw.tasks.ioi(n=32, order="ABBA", seed=1)
    s32 = pw.attribute(m32, task.dataset(m32), progress=False).scores
    s64 = pw.attribute(m64, task.dataset(m64), progress=False).scores
    assert np.abs(s32 - s64).max() < 1e-4 * np.abs(s64).max()
