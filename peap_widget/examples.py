"""A small built-in example: an IOI-shaped dataset over a word-level vocabulary, and a tiny
GPT-2 with random weights for it. Used by ``peap demo`` and the tests; everything is built in
memory, offline.

Example:
    >>> hf, tok = tiny_gpt2(n_layer=2, n_head=4, d_model=16)
    >>> records = tiny_records()          # 5 records, lengths 10-17, one empty 'prefix' span
"""

from __future__ import annotations

import torch

from .tokenizer import word_level_tokenizer

NAMES = ["Mary", "John", "Anna", "Tom", "Kate", "Bob"]
WORDS = NAMES + "When Then later that day and went to the store shop , gave a book ball".split()

SCHEMA = ["prefix", "IO", "and", "S1", "action1", "S2", "action2", "to"]


def tiny_tokenizer():
    return word_level_tokenizer(WORDS)


def tiny_gpt2(n_layer=2, n_head=4, d_model=16, dtype=torch.float64, seed=0, **config):
    """A randomly initialised GPT2LMHeadModel over the tiny vocabulary, in eval mode."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = tiny_tokenizer()
    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=len(tok), n_positions=64, n_embd=d_model, n_layer=n_layer, n_head=n_head,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        **config,
    )
    model = GPT2LMHeadModel(cfg).to(dtype).eval()
    # Larger than default init so that attention patterns are far from uniform and every edge
    # kind has scores well away from zero; biases and norm parameters random too (HF starts
    # them at 0 and 1), so that code paths handling them are exercised.
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.mul_(4.0)
            if name.endswith("bias") or ".ln_" in name or name.startswith("transformer.ln_f"):
                p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype))
    return model, tok


def _ioi(prefix, io, s, action1, action2, corrupt_names):
    """One IOI-shaped record with its spans, computed from word counts."""
    parts = [
        ("prefix", prefix), ("IO", [io]), ("and", ["and"]), ("S1", [s]), ("action1", action1),
        ("S2", [s]), ("action2", action2), ("to", ["to"]),
    ]
    words, spans, i = [], {}, 0
    for name, ws in parts:
        spans[name] = [i, i + len(ws)]
        words += ws
        i += len(ws)
    a, b, c = corrupt_names
    swap = {io: a, s: b}
    corrupted = [swap.get(w, w) for w in words]
    # The corrupted prompt repeats a third name for S2 so that the task signal changes.
    corrupted[spans["S2"][0]] = c
    return {
        "clean": " ".join(words),
        "corrupted": " ".join(corrupted),
        "correct": io,
        "incorrect": s,
        "spans": spans,
    }


def tiny_records():
    """Five IOI-like records of different lengths (one with an empty prefix)."""
    return [
        _ioi(["When"], "Mary", "John", ["went", "to", "the", "store", ","], ["gave", "a", "book"],
             ("Anna", "Tom", "Kate")),
        _ioi([], "Tom", "Anna", ["went", "to", "the", "shop", ","], ["gave", "a", "ball"],
             ("Bob", "Kate", "Mary")),
        _ioi(["Then", "later", "that", "day"], "Kate", "Bob", ["went", "to", "the", "store", ","],
             ["gave", "a", "book"], ("John", "Mary", "Anna")),
        _ioi(["When"], "John", "Mary", [","], ["gave", "a", "ball"], ("Tom", "Bob", "Kate")),
        _ioi(["Then"], "Anna", "Kate", ["went", "to", "the", "shop", ","], ["gave", "a", "book"],
             ("Mary", "John", "Tom")),
    ]


def random_result(layers: int, heads: int, spans: int, seed: int = 0):
    """A PEAP `AttributionResult` over a ``layers`` x ``heads`` graph with ``spans`` spans
    (``S0``...), from random dense scores and no model: big graphs for benchmarks and widget
    tests (32 x 32 x 8 is Llama-3-8B's graph, 12.85 million rows) without running anything.

    Example:
        >>> res = random_result(2, 4, 3)
        >>> len(res.scores)
        474
    """
    import numpy as np

    from .graph import Graph, GraphConfig
    from .result import AttributionResult
    from .schema import Schema

    g = Graph(GraphConfig(n_layers=layers, n_heads=heads, d_model=64))
    rng = np.random.default_rng(seed)
    names = [f"S{i}" for i in range(spans)]
    # heavy-tailed per-node scale, so a few edges stand out as in real results
    resid = (rng.standard_normal((spans, g.n_forward, g.n_backward), dtype=np.float32)
             * rng.random((1, g.n_forward, 1), dtype=np.float32) ** 3)
    cross = rng.standard_normal((3, layers, heads, spans, spans)) * 0.3
    settings = {"method": "peap", "ablation": "counterfactual", "aggregation": "sum",
                "metric": "logit_diff"}
    return AttributionResult.from_arrays(g, names, resid, cross, settings, np.ones(3),
                                         np.zeros(3), Schema(names))
