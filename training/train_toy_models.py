"""Train the small models that ship with the package, reproducibly, on a CPU in minutes.

    python training/train_toy_models.py toy-ioi                 # -> peap_widget/models/toy-ioi/
    python training/train_toy_models.py toy-ioi-llama           # -> peap_widget/models/toy-ioi-llama/
    python training/train_toy_models.py toy-greater-than        # -> peap_widget/models/toy-greater-than/
    python training/train_toy_models.py toy-ioi --out /tmp/ioi --steps 500 --seed 1

Each model is a small causal LM over a word-level tokenizer (`word_level_tokenizer`,
``text_mode=True``) whose vocabulary is the task's words, trained on prompts from the package's
own task generators (`peap_widget.data.tasks`) with a cross-entropy loss at the answer position only.
The architecture is the spec's ``"arch"``: ``"gpt2"`` (the default; ``GPT2LMHeadModel``) or
``"llama"`` (``LlamaForCausalLM``); both tie the embedding and the unembedding.
The directory gets the weights (safetensors), the config, the tokenizer, ``training_log.json``
(configuration, seeds, wall time, losses, held-out figures) and a ``README.md``.

toy-ioi
    IOI prompts of both orders (ABBA and BABA) with the generator's prefixes, shapes, places and
    objects; target: the IO name. The 60 names are split into 48 training names and 12 held-out
    names (a fixed split, independent of ``--seed``) and 20% of the 2048 templates (prefix x
    shape x place x object, both orders) are held out; training prompts use only training names
    and training templates. The name rows of the (tied) embedding / unembedding are never
    trained: their gradient is zeroed, and before every step they are redrawn as fresh random
    Gaussian vectors; the shipped model has one fixed draw (``name_vectors="resample"``). The
    model thus cannot learn anything about particular names or name directions and has to copy
    whatever name vector is in the prompt, so it works on names it has never seen. (With one
    draw kept fixed through training, ``name_vectors="fixed"``, a trial model with
    ``name_norm=1`` learned directions specific to the 48 training vectors: 100% on training
    names but 86% IO > S and 5% IO argmax on held-out names.) Name vectors of norm 5 (rather
    than 1 or 3) make the model leave its loss plateau after about 2000 steps, not 5000+.

toy-ioi-llama
    The same task, data, splits, name vectors (``"resample"``, norm 5), evaluation and optimiser
    as toy-ioi, in a ``LlamaForCausalLM``: 4 layers, d_model 64, grouped-query attention with 4
    query heads and 2 key/value heads (head_dim 16), rotary positions (no position embedding),
    RMSNorm, SwiGLU MLP of width 172, no biases, tied ``model.embed_tokens`` / ``lm_head`` (so the
    redrawn, zero-gradient name rows are the names' unembedding too), max_position_embeddings 64.
    It leaves the loss plateau sooner than the GPT-2 model and is trained for 3000 steps, not
    6000 (its README says what was tried); >= 99% on held-out names and templates.

toy-greater-than
    Greater-than prompts ("The war lasted from the year 1732 to the year 17"); target: the
    uniform distribution over the two-digit years above YY. 20% of the (century, YY) pairs are
    held out (all nouns); training prompts use the others. The counterfactual prompts (start year
    "01") are not trained on.

Determinism: every random choice comes from ``--seed`` (model init, data, batch order) or from
fixed constants (the held-out splits, the evaluation seeds); ``torch.use_deterministic_algorithms``
is on and the thread count is fixed (``--threads``, default 2), so a rerun on the same machine
gives the same weights (checked: bit-identical safetensors). Subnormal floats are flushed to zero
(``torch.set_flush_denormal``): without it some CPU steps early in training are 20x slower.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import platform
import random
import re
import time
from functools import lru_cache
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parents[1] / "peap_widget" / "models"   # where the shipped models live

#: fixed seeds (not --seed): the held-out name split and the evaluation prompts
SPLIT_SEED = 0
EVAL_SEEDS = {"train_dist": 10_001, "heldout_names": 10_002, "heldout_templates": 10_003,
              "heldout_both": 10_004, "heldout_pairs": 10_005}
N_HELDOUT_NAMES = 12
HELDOUT_FRACTION = 5  # one template / (century, year) pair in 5 is held out

SPECS = {
    # name_norm: the norm of the random name vectors (about); name_vectors: "resample" (a fresh
    # draw every step) or "fixed" (one draw throughout)
    "toy-ioi": {"task": "ioi", "n_layer": 4, "n_head": 4, "n_embd": 64, "n_positions": 64,
                "steps": 6000, "batch_size": 64, "lr": 1e-3, "warmup": 200, "weight_decay": 0.01,
                "pool": 120_000, "name_norm": 5.0, "name_vectors": "resample", "n_eval": 1000},
    # the same task, data, splits, name vectors and evaluation as toy-ioi, in a Llama model
    "toy-ioi-llama": {"arch": "llama", "task": "ioi", "n_layer": 4, "n_head": 4, "n_kv_head": 2,
                      "n_embd": 64, "n_inner": 172, "n_positions": 64, "steps": 3000, "batch_size": 64,
                      "lr": 1e-3, "warmup": 200, "weight_decay": 0.01, "pool": 120_000,
                      "name_norm": 5.0, "name_vectors": "resample", "n_eval": 1000},
    "toy-greater-than": {"task": "greater-than", "n_layer": 2, "n_head": 4, "n_embd": 128,
                         "n_positions": 64, "steps": 2000, "batch_size": 64, "lr": 1e-3,
                         "warmup": 100, "weight_decay": 0.01, "pool": 60_000, "n_eval": 1000},
}


#: what the README of a model adds at its end (how its hyperparameters were found)
README_NOTES = {
    "toy-ioi-llama": """
## How the hyperparameters were found

The architecture follows Llama's proportions at toy-ioi's size: 4 layers, d_model 64, 4 query heads
of 16 dimensions sharing 2 key/value heads, SwiGLU width 172 (2/3 x 4 x 64, rounded to a multiple of
4, which gives about the parameter count of toy-ioi's GPT-2 MLP), max_position_embeddings 64 (the
prompts have 13 to 27 tokens), `rms_norm_eps` 1e-5, the default rotary base. The input embedding and
the `lm_head` are tied (`tie_word_embeddings`), so the 60 name rows of `model.embed_tokens` that are
redrawn before every step and whose gradient is zeroed are also the unembedding of the names, as in
toy-ioi.

The training recipe is toy-ioi's unchanged (batch 64, AdamW lr 1e-3, betas 0.9/0.98, 200 warmup
steps then cosine decay to 0.1 x lr, weight decay 0.01 on the matrices, gradient clipping at 1,
name_norm 5, `name_vectors="resample"`). Tried:

1. 6000 steps (toy-ioi's schedule). The Llama model leaves the loss plateau sooner than the GPT-2
   one (train loss 0.07 at step 2000 where toy-ioi had 0.27; 0.024 at step 2400), so the run was
   stopped at step 2400 and the schedule halved.
2. 3000 steps: every held-out figure >= 0.99 at the first try (the table above). This is the
   shipped model; lr, warmup and name_norm needed no change.

Speed: about 20 steps a second on 2 otherwise idle CPU cores (3000 steps in 2.5 minutes); the wall
time in `training_log.json` is whatever the machine allowed on the day (other jobs running at the
same time make the two torch threads wait for each other, up to 10x slower). Reproducible: a second
run of the same command (to another `--out`, on the same machine) gave a bit-identical
`model.safetensors`.
""",
}


# --- splits and vocabularies -----------------------------------------------------------------

def _md5_bucket(key: str) -> int:
    return int(hashlib.md5(key.encode()).hexdigest(), 16) % HELDOUT_FRACTION


def ioi_name_split(names=None) -> tuple[list[str], list[str]]:
    """(training names, held-out names): a fixed random split of the generator's 60 names."""
    from peap_widget.data.tasks.ioi import NAMES

    names = list(NAMES if names is None else names)
    held = set(random.Random(SPLIT_SEED).sample(names, N_HELDOUT_NAMES))
    return [n for n in names if n not in held], [n for n in names if n in held]


def ioi_template(text: str, names) -> str:
    """The template of an IOI prompt: the prompt with every name replaced by ``N`` (the same
    string for both orders, so a held-out template is unseen in either order)."""
    return _names_re(tuple(names)).sub("N", text)


@lru_cache(maxsize=8)
def _names_re(names: tuple[str, ...]):
    return re.compile(r"\b(?:" + "|".join(map(re.escape, names)) + r")\b")


def ioi_template_heldout(text: str, names) -> bool:
    return _md5_bucket("ioi:" + ioi_template(text, names)) == 0


def gt_parse(text: str) -> tuple[str, int, int]:
    """(noun, century XX, year YY) of a greater-than prompt."""
    m = re.fullmatch(r"The (\w+) lasted from the year (\d\d)(\d\d) to the year \d\d", text)
    return m.group(1), int(m.group(2)), int(m.group(3))


def gt_pair_heldout(xx: int, yy: int) -> bool:
    return _md5_bucket(f"gt:{xx:02d}{yy:02d}") == 0


def ioi_words() -> list[str]:
    from peap_widget.data.tasks.ioi import NAMES, OBJECTS, PLACES, PREFIXES, SHAPES
    from peap_widget.data.tokenizer import pieces

    words = list(NAMES)  # names first: ids 4..63
    for text in [*PREFIXES, *(w for s in SHAPES for w in s), *PLACES, *OBJECTS, "and", "to"]:
        words += pieces(text)
    return list(dict.fromkeys(words))


def gt_words() -> list[str]:
    from peap_widget.data.tasks.greater_than import NOUNS
    from peap_widget.data.tokenizer import pieces

    words = [f"{y:02d}" for y in range(100)]  # all two-digit years first: ids 4..103
    for noun in NOUNS:
        words += pieces(f"The {noun} lasted from the year to the year")
    return list(dict.fromkeys(words))


def build_tokenizer(task: str):
    from peap_widget.data.tokenizer import word_level_tokenizer

    return word_level_tokenizer(ioi_words() if task == "ioi" else gt_words(), text_mode=True)


# --- data -------------------------------------------------------------------------------------

def encode(tok, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids [N, T] and lengths [N]; fails on any unknown word."""
    ids = tok(texts, add_special_tokens=False)["input_ids"]
    unk = tok.unk_token_id
    for t, row in zip(texts, ids):
        if unk in row:
            raise ValueError(f"unknown word in {t!r}")
    lengths = torch.tensor([len(r) for r in ids])
    out = torch.full((len(ids), int(lengths.max())), tok.pad_token_id, dtype=torch.long)
    for i, r in enumerate(ids):
        out[i, :len(r)] = torch.tensor(r)
    return out, lengths


def ioi_records(n: int, seed: int, names, templates: str) -> list[dict]:
    """``n`` IOI records (order "both") over ``names``; ``templates`` "train" / "heldout" / "all"
    keeps prompts of the training templates, the held-out ones, or all."""
    import peap_widget as pw
    from peap_widget.data.tasks.ioi import NAMES

    out, s = [], seed
    while len(out) < n:
        recs = pw.tasks.get("ioi", n=5000, order="both", seed=s, names=names).records
        for r in recs:
            if templates == "all" or ioi_template_heldout(r["clean"], NAMES) == (templates == "heldout"):
                out.append(r)
        s += 7919  # the next chunk
    return out[:n]


def gt_records(n: int, seed: int, pairs: str) -> list[dict]:
    """``n`` greater-than records; ``pairs`` "train" / "heldout" / "all" (century, year) pairs."""
    import peap_widget as pw

    out, s = [], seed
    while len(out) < n:
        for r in pw.tasks.get("greater-than", n=5000, seed=s).records:
            _, xx, yy = gt_parse(r["clean"])
            if pairs == "all" or gt_pair_heldout(xx, yy) == (pairs == "heldout"):
                out.append(r)
        s += 7919  # the next chunk
    return out[:n]


def to_ids(tok, words: list[str]) -> list[int]:
    vocab = tok.get_vocab()
    return [vocab[w] for w in words]


def ioi_train_data(tok, spec, seed):
    train_names, _ = ioi_name_split()
    recs = ioi_records(spec["pool"], seed * 1000 + 1, train_names, "train")
    ids, lengths = encode(tok, [r["clean"] for r in recs])
    target = torch.tensor(to_ids(tok, [r["correct"] for r in recs]))
    return ids, lengths, target


def gt_train_data(tok, spec, seed):
    recs = gt_records(spec["pool"], seed * 1000 + 2, "train")
    ids, lengths = encode(tok, [r["clean"] for r in recs])
    year_ids = torch.tensor(to_ids(tok, [f"{y:02d}" for y in range(100)]))
    target = torch.zeros(len(recs), len(tok))
    for i, r in enumerate(recs):
        yy = gt_parse(r["clean"])[2]
        target[i, year_ids[yy + 1:]] = 1.0 / (99 - yy)  # uniform over the years > YY
    return ids, lengths, target


# --- model ------------------------------------------------------------------------------------

def build_model(tok, spec, seed):
    """A fresh model of the spec's architecture (``spec["arch"]``, default ``"gpt2"``)."""
    torch.manual_seed(seed)
    if spec.get("arch", "gpt2") == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        # grouped-query attention (n_kv_head < n_head), rotary positions (no position
        # embedding), RMSNorm, SwiGLU MLP of width n_inner, no biases, tied embeddings
        cfg = LlamaConfig(
            vocab_size=len(tok), hidden_size=spec["n_embd"], intermediate_size=spec["n_inner"],
            num_hidden_layers=spec["n_layer"], num_attention_heads=spec["n_head"],
            num_key_value_heads=spec["n_kv_head"], head_dim=spec["n_embd"] // spec["n_head"],
            max_position_embeddings=spec["n_positions"], rms_norm_eps=1e-5,
            attention_bias=False, mlp_bias=False, attention_dropout=0.0,
            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id, tie_word_embeddings=True,
        )
        return LlamaForCausalLM(cfg)
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(
        vocab_size=len(tok), n_positions=spec["n_positions"], n_embd=spec["n_embd"],
        n_layer=spec["n_layer"], n_head=spec["n_head"], resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, tie_word_embeddings=True,
    )
    return GPT2LMHeadModel(cfg)


def answer_logits(model, ids, lengths):
    """Logits at each prompt's last token: [N, vocab] (right padding: the mask changes nothing
    for real tokens under causal attention, but keeps transformers from warning)."""
    mask = (torch.arange(ids.shape[1])[None, :] < lengths[:, None]).long()
    h = model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state  # GPT-2: .transformer
    return model.lm_head(h[torch.arange(len(ids)), lengths - 1])


@torch.no_grad()
def last_logits(model, tok, texts: list[str], batch: int = 500) -> torch.Tensor:
    """Plain HF forward passes, one padded batch at a time: logits at the last token."""
    out = []
    for i in range(0, len(texts), batch):
        ids, lengths = encode(tok, texts[i:i + batch])
        mask = (torch.arange(ids.shape[1])[None, :] < lengths[:, None]).long()
        logits = model(input_ids=ids, attention_mask=mask).logits
        out.append(logits[torch.arange(len(ids)), lengths - 1].float())
    return torch.cat(out)


def train(name: str, out: Path, steps: int | None = None, seed: int = 0, threads: int = 2,
          log_every: int = 100, overrides: dict | None = None) -> dict:
    spec = {**SPECS[name], **(overrides or {})}
    if steps is not None:
        spec["steps"] = steps
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    torch.set_flush_denormal(True)  # subnormal floats early in training make CPU steps 20x slower
    task = spec["task"]
    tok = build_tokenizer(task)
    t0 = time.time()
    ids, lengths, target = (ioi_train_data if task == "ioi" else gt_train_data)(tok, spec, seed)
    data_s = time.time() - t0
    model = build_model(tok, spec, seed)
    wte = model.get_input_embeddings().weight  # GPT-2: transformer.wte, Llama: model.embed_tokens
    assert wte is model.get_output_embeddings().weight  # tied: the name rows are also the unembedding

    frozen = None
    if task == "ioi":
        # The name rows are random vectors, never trained: all names look alike to the model.
        # Per-dimension std name_norm / sqrt(d), so each vector has a norm of about name_norm;
        # ``fixed`` is the draw that ships (and the only one used with name_vectors="fixed").
        from peap_widget.data.tasks.ioi import NAMES

        frozen = torch.tensor(to_ids(tok, NAMES))
        name_std = spec["name_norm"] / math.sqrt(spec["n_embd"])
        fixed = torch.randn(len(frozen), spec["n_embd"],
                            generator=torch.Generator().manual_seed(seed * 1000 + 3)) * name_std
        gen = torch.Generator().manual_seed(seed * 1000 + 5)
        with torch.no_grad():
            wte[frozen] = fixed
        mask = torch.ones(len(tok), 1)
        mask[frozen] = 0.0
        wte.register_hook(lambda g: g * mask)

    def decays(n, p):  # matrices, not embeddings (nor biases, LayerNorm / RMSNorm weights)
        return p.dim() >= 2 and not any(e in n for e in ("wte", "wpe", "embed_tokens"))

    decay = [p for n, p in model.named_parameters() if decays(n, p)]
    other = [p for n, p in model.named_parameters() if not decays(n, p)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": spec["weight_decay"]},
                             {"params": other, "weight_decay": 0.0}], lr=spec["lr"], betas=(0.9, 0.98))

    def lr_at(step):
        if step < spec["warmup"]:
            return (step + 1) / spec["warmup"]
        frac = (step - spec["warmup"]) / max(1, spec["steps"] - spec["warmup"])
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    order_gen = torch.Generator().manual_seed(seed * 1000 + 4)
    losses, curve = [], []
    model.train()
    t1 = time.time()
    for step in range(spec["steps"]):
        idx = torch.randint(len(ids), (spec["batch_size"],), generator=order_gen)
        if frozen is not None and spec["name_vectors"] == "resample":
            with torch.no_grad():
                wte[frozen] = torch.randn(fixed.shape, generator=gen) * name_std
        L = lengths[idx]
        x = ids[idx, :int(L.max())]
        logits = answer_logits(model, x, L)
        if task == "ioi":
            loss = torch.nn.functional.cross_entropy(logits, target[idx])
        else:
            loss = -(target[idx] * logits.log_softmax(-1)).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if frozen is not None and spec["name_vectors"] == "fixed":
            with torch.no_grad():
                wte[frozen] = fixed
        losses.append(loss.item())
        if (step + 1) % log_every == 0 or step + 1 == spec["steps"]:
            mean = sum(losses[-log_every:]) / len(losses[-log_every:])
            curve.append([step + 1, round(mean, 5)])
            print(f"{name} step {step + 1}/{spec['steps']} loss {mean:.4f} "
                  f"({time.time() - t1:.0f}s)", flush=True)
    train_s = time.time() - t1
    model.eval()
    if frozen is not None:
        with torch.no_grad():
            wte[frozen] = fixed
        assert torch.equal(wte[frozen].detach(), fixed)

    t2 = time.time()
    figures = (evaluate_ioi if task == "ioi" else evaluate_gt)(model, tok, spec["n_eval"])
    eval_s = time.time() - t2

    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    _portable_tokenizer_config(out)
    final = losses[-min(100, len(losses)):]
    log = {
        "model": name, "task": task, "seed": seed, "steps": spec["steps"],
        "batch_size": spec["batch_size"], "threads": threads,
        "command": f"python training/train_toy_models.py {name} --steps {spec['steps']} --seed {seed}"
                   + "".join(f" --set {k}={json.dumps(v)}" for k, v in (overrides or {}).items()),
        "hyperparameters": spec,
        "config": {k: getattr(model.config, k) for k in CONFIG_KEYS[spec.get("arch", "gpt2")]},
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "wall_time_s": {"data": round(data_s, 1), "train": round(train_s, 1),
                        "eval": round(eval_s, 1), "total": round(time.time() - t0, 1)},
        "final_train_loss": round(sum(final) / len(final), 5),
        "loss_curve": curve,
        "n_train_pool": len(ids),
        "eval": figures,
        "versions": {"torch": torch.__version__, "transformers": _version("transformers"),
                     "tokenizers": _version("tokenizers"), "python": platform.python_version()},
    }
    if task == "greater-than":  # the lowest loss possible: the entropy of the target
        log["target_entropy"] = round(float(-(target * target.clamp_min(1e-30).log()).sum(-1).mean()), 5)
    if task == "ioi":
        train_names, held = ioi_name_split()
        log["train_names"], log["heldout_names"] = train_names, held
        log["frozen_name_rows"] = {"ids": frozen.tolist(), "std_per_dim": round(name_std, 5),
                                   "during_training": spec["name_vectors"]}
    (out / "training_log.json").write_text(json.dumps(log, indent=1) + "\n")
    (out / "README.md").write_text(readme(log))
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    print(f"saved {out} ({size / 1e6:.2f} MB) in {log['wall_time_s']['total']:.0f}s")
    print(json.dumps(figures, indent=1))
    return log


#: the config entries that go into training_log.json, per architecture
CONFIG_KEYS = {
    "gpt2": ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "n_inner",
             "activation_function", "tie_word_embeddings"),
    "llama": ("vocab_size", "max_position_embeddings", "hidden_size", "num_hidden_layers",
              "num_attention_heads", "num_key_value_heads", "head_dim", "intermediate_size",
              "hidden_act", "rms_norm_eps", "rope_parameters", "attention_bias", "mlp_bias",
              "tie_word_embeddings"),
}


def _portable_tokenizer_config(out: Path) -> None:
    """Name the tokenizer class ``PreTrainedTokenizerFast`` (what transformers 4 knows; 5 maps
    it to its own class) and its inputs ``input_ids, attention_mask`` (no ``token_type_ids``, which
    GPT-2 would add to its embeddings)."""
    path = out / "tokenizer_config.json"
    cfg = json.loads(path.read_text())
    cfg.update(tokenizer_class="PreTrainedTokenizerFast", model_input_names=["input_ids", "attention_mask"],
               padding_side="right")
    for key in ("is_local", "local_files_only"):
        cfg.pop(key, None)
    path.write_text(json.dumps(cfg, indent=2) + "\n")


def _version(mod):
    from importlib.metadata import version

    return version(mod)


# --- evaluation --------------------------------------------------------------------------------

def ioi_metrics(model, tok, recs) -> dict:
    from peap_widget.data.tasks.ioi import NAMES

    name_ids = torch.tensor(to_ids(tok, NAMES))
    io = torch.tensor(to_ids(tok, [r["correct"] for r in recs]))
    s = torch.tensor(to_ids(tok, [r["incorrect"] for r in recs]))
    ar = torch.arange(len(recs))
    logits = last_logits(model, tok, [r["clean"] for r in recs])
    diff = logits[ar, io] - logits[ar, s]
    top_name = name_ids[logits[:, name_ids].argmax(-1)]
    abba = torch.tensor([r["template"] == "ABBA" for r in recs])
    probs = logits.softmax(-1)
    m = {
        "n": len(recs),
        "accuracy": round((diff > 0).float().mean().item(), 4),
        "accuracy_argmax_names": round((top_name == io).float().mean().item(), 4),
        "accuracy_argmax_vocab": round((logits.argmax(-1) == io).float().mean().item(), 4),
        "mean_logit_diff": round(diff.mean().item(), 4),
        "mean_p_io": round(probs[ar, io].mean().item(), 4),
        "accuracy_ABBA": round((diff[abba] > 0).float().mean().item(), 4),
        "accuracy_BABA": round((diff[~abba] > 0).float().mean().item(), 4),
    }
    # counterfactual (ABC) prompts: no name repeats, so the clean answer should lose its edge
    cf = last_logits(model, tok, [r["corrupted"] for r in recs])
    cf_diff = cf[ar, io] - cf[ar, s]
    first_two = [set(_names_re(tuple(NAMES)).findall(r["corrupted"])[:2]) for r in recs]
    top_cf = [tok.convert_ids_to_tokens(int(t)) for t in name_ids[cf[:, name_ids].argmax(-1)]]
    m["counterfactual"] = {
        "mean_logit_diff_clean_answers": round(cf_diff.mean().item(), 4),
        "accuracy_clean_answers": round((cf_diff > 0).float().mean().item(), 4),
        "frac_top_name_is_N1_or_N2": round(sum(t in f for t, f in zip(top_cf, first_two)) / len(recs), 4),
    }
    return m


def evaluate_ioi(model, tok, n) -> dict:
    train_names, held = ioi_name_split()
    sets = {
        "train_dist": ioi_records(n, EVAL_SEEDS["train_dist"], train_names, "train"),
        "heldout_names": ioi_records(n, EVAL_SEEDS["heldout_names"], held, "all"),
        "heldout_templates": ioi_records(n, EVAL_SEEDS["heldout_templates"], train_names, "heldout"),
        "heldout_names_and_templates": ioi_records(n, EVAL_SEEDS["heldout_both"], held, "heldout"),
    }
    return {k: ioi_metrics(model, tok, v) for k, v in sets.items()}


def gt_prob_diff(logits, year_ids, yy):
    p = logits.softmax(-1)[:, year_ids]
    above = torch.arange(100)[None, :] > yy[:, None]
    return (p * above).sum(-1) - (p * ~above).sum(-1)


def gt_metrics(model, tok, recs) -> dict:
    year_ids = torch.tensor(to_ids(tok, [f"{y:02d}" for y in range(100)]))
    yy = torch.tensor([gt_parse(r["clean"])[2] for r in recs])
    ar = torch.arange(len(recs))
    logits = last_logits(model, tok, [r["clean"] for r in recs])
    pd = gt_prob_diff(logits, year_ids, yy)
    top_year = logits[:, year_ids].argmax(-1)
    cf = last_logits(model, tok, [r["corrupted"] for r in recs])
    cf_pd = gt_prob_diff(cf, year_ids, yy)
    cf_pd01 = gt_prob_diff(cf, year_ids, torch.ones_like(yy))
    return {
        "n": len(recs),
        "mean_prob_diff": round(pd.mean().item(), 4),
        "frac_prob_diff_positive": round((pd > 0).float().mean().item(), 4),
        "accuracy_top_year_above": round((top_year > yy).float().mean().item(), 4),
        "mean_logit_diff_YY+1_vs_YY": round((logits[ar, year_ids[yy + 1]] - logits[ar, year_ids[yy]]).mean().item(), 4),
        "mean_year_mass": round(logits.softmax(-1)[:, year_ids].sum(-1).mean().item(), 4),
        "counterfactual": {
            "mean_prob_diff_clean_YY": round(cf_pd.mean().item(), 4),
            "frac_prob_diff_clean_YY_positive": round((cf_pd > 0).float().mean().item(), 4),
            "mean_prob_diff_vs_01": round(cf_pd01.mean().item(), 4),
            "mean_logit_diff_YY+1_vs_YY": round((cf[ar, year_ids[yy + 1]] - cf[ar, year_ids[yy]]).mean().item(), 4),
        },
    }


def evaluate_gt(model, tok, n) -> dict:
    return {"train_dist": gt_metrics(model, tok, gt_records(n, EVAL_SEEDS["train_dist"], "train")),
            "heldout_pairs": gt_metrics(model, tok, gt_records(n, EVAL_SEEDS["heldout_pairs"], "heldout"))}


# --- README ------------------------------------------------------------------------------------

def readme(log: dict) -> str:
    c, e, h = log["config"], log["eval"], log["hyperparameters"]
    if h.get("arch", "gpt2") == "llama":
        arch = (f"`LlamaForCausalLM`, {c['num_hidden_layers']} layers, {c['num_attention_heads']} query heads "
                f"and {c['num_key_value_heads']} key/value heads (grouped-query attention, head_dim "
                f"{c['head_dim']}), d_model {c['hidden_size']}, SwiGLU MLP {c['intermediate_size']}, RMSNorm, "
                f"rotary position embeddings (theta {c['rope_parameters']['rope_theta']:g}; no learned position "
                f"embedding), no biases, max_position_embeddings {c['max_position_embeddings']}, "
                f"vocabulary {c['vocab_size']} words (tied embeddings), {log['n_parameters']:,} parameters; "
                "no dropout")
    else:
        arch = (f"`GPT2LMHeadModel`, {c['n_layer']} layers, {c['n_head']} heads, d_model {c['n_embd']}, "
                f"MLP {4 * c['n_embd']}, n_positions {c['n_positions']}, vocabulary {c['vocab_size']} words "
                f"(tied embeddings), {log['n_parameters']:,} parameters; no dropout")
    common = (f"Trained with `{log['command']}` ({log['steps']} steps of {log['batch_size']} prompts, "
              f"AdamW lr {h['lr']} with warmup and cosine decay, {log['threads']} CPU threads, "
              f"{log['wall_time_s']['total']:.0f} s in all); final train loss "
              f"{log['final_train_loss']:.4f}"
              + (f" (the target's entropy, the lowest possible, is {log['target_entropy']:.4f})"
                 if "target_entropy" in log else "")
              + ". Loss: cross-entropy at the last position only. "
              "`training_log.json` has the full configuration, loss curve and figures.\n")
    tokenizer = ("Tokenizer: `peap_widget.data.tokenizer.word_level_tokenizer(..., text_mode=True)`: words, "
                 "punctuation and two-digit groups are tokens; no special tokens are added.\n")
    if log["task"] == "ioi":
        resample = ("they are redrawn before every training step (the model ships with one fixed draw)."
                    if log["frozen_name_rows"]["during_training"] == "resample" else
                    "they are restored after every step (one draw throughout).")
        rows = "\n".join(
            f"| {k} | {v['n']} | {v['accuracy']:.3f} | {v['accuracy_argmax_names']:.3f} | "
            f"{v['mean_logit_diff']:.2f} | {v['counterfactual']['mean_logit_diff_clean_answers']:.2f} |"
            for k, v in e.items())
        return f"""# {log['model']}

A toy model for indirect object identification, made by `peap_widget/models/train.py`.
{arch}.

Trained on `pw.tasks.get("ioi", order="both", names=train_names)` prompts (ABBA and BABA,
all the generator's prefixes, sentence shapes, places and objects; `train_names` and
`heldout_names` are in `training_log.json`) to predict the IO name at the last position ("to").

Held out from training:
- names: {', '.join(log['heldout_names'])} ({len(log['heldout_names'])} of 60; a fixed split);
- one template in five (prefix x shape x place x object, with either order), chosen by a hash.

The embedding rows of all 60 names (ids {min(log['frozen_name_rows']['ids'])}-{max(log['frozen_name_rows']['ids'])}, tied with the unembedding) are random
Gaussian vectors (std {log['frozen_name_rows']['std_per_dim']:.4f} per dimension) that are never trained: their gradient
is zeroed and {resample} Nothing the model learns can be specific to a name, so it has to copy
whatever name vector is in the prompt, and it works on names it has never seen.

{common}
{tokenizer}
Figures (plain HF forward passes, {e['heldout_names']['n']} fresh prompts per row; accuracy = logit(IO) > logit(S);
argmax = IO has the largest logit among the 60 names; last column: logit(IO) - logit(S) of the clean
answers on the counterfactual ABC prompts, where no name repeats):

| prompts | n | accuracy | argmax among names | mean logit diff | counterfactual logit diff |
|---|---|---|---|---|---|
{rows}

`heldout_names`: IO, S and the counterfactual names drawn from the 12 held-out names, all templates.
""" + README_NOTES.get(log["model"], "")
    rows = "\n".join(
        f"| {k} | {v['n']} | {v['mean_prob_diff']:.3f} | {v['frac_prob_diff_positive']:.3f} | "
        f"{v['accuracy_top_year_above']:.3f} | {v['counterfactual']['mean_prob_diff_clean_YY']:.3f} | "
        f"{v['counterfactual']['mean_prob_diff_vs_01']:.3f} |" for k, v in e.items())
    return f"""# toy-greater-than

A toy model for the greater-than task ("The war lasted from the year 1732 to the year 17" ->
a year above 32), made by `peap_widget/models/train.py`. {arch}.

Trained on `pw.tasks.get("greater-than")` prompts (15 nouns, centuries 11-19, YY 02-98) with the
uniform distribution over the two-digit years above YY as the target. One (century, YY) pair in
five, chosen by a hash, is held out from training (with every noun). The counterfactual prompts
(start year "01") are not trained on.

{common}
{tokenizer}
Figures (plain HF forward passes; prob diff = sum p(year > YY) - sum p(year <= YY) over the 100
two-digit tokens, the paper's metric):

| prompts | n | mean prob diff | frac prob diff > 0 | top year > YY | counterfactual prob diff (clean YY) | counterfactual prob diff vs 01 |
|---|---|---|---|---|---|---|
{rows}
"""


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python training/train_toy_models.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="+", choices=sorted(SPECS), help="which model(s) to train")
    ap.add_argument("--out", help="output directory (default: the package's model directory; "
                                  "only with one model)")
    ap.add_argument("--steps", type=int, help="training steps (default: the model's own)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a hyperparameter of SPECS (for experiments), e.g. --set lr=2e-3")
    args = ap.parse_args(argv)
    if args.out and len(args.names) > 1:
        ap.error("--out takes one model name")
    for name in args.names:
        overrides = {}
        for item in args.set:
            key, _, value = item.partition("=")
            if key not in SPECS[name]:
                ap.error(f"unknown hyperparameter {key!r} of {name}: {sorted(SPECS[name])}")
            try:
                overrides[key] = json.loads(value)
            except json.JSONDecodeError:
                overrides[key] = value
        train(name, Path(args.out) if args.out else HERE / name, steps=args.steps, seed=args.seed,
              threads=args.threads, overrides=overrides)


if __name__ == "__main__":
    main()
