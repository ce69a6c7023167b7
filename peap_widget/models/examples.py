"""A small built-in example: an IOI-shaped dataset over a word-level vocabulary, and a tiny
GPT-2 with random weights for it. Used by ``peap demo`` and the tests; everything is built in
memory, offline.

Example:
    >>> hf, tok = tiny_gpt2(n_layer=2, n_head=4, d_model=16)
    >>> records = tiny_records()          # 5 records, lengths 10-17, one empty 'prefix' span
"""

from __future__ import annotations

import torch

from ..data.tokenizer import word_level_tokenizer

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
    config.setdefault("vocab_size", len(tok))
    cfg = GPT2Config(
        n_positions=64, n_embd=d_model, n_layer=n_layer, n_head=n_head,
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

    from ..graph.space import Graph, GraphConfig
    from ..circuits.result import AttributionResult
    from ..data.schema import Schema

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


#: the families `tiny_model` builds (the real transformers classes, random weights)
TINY_FAMILIES = ("gpt2", "llama", "llama3", "mistral", "qwen2", "qwen3", "gpt_neox",
                 "gpt_neox_sequential", "gemma2")


def tiny_model(family: str = "llama", n_layers: int = 2, n_heads: int = 4, n_kv_heads: int = 2,
               d_model: int = 16, dtype=torch.float64, seed: int = 0, scale: float = 4.0,
               tokenizer=None, **config):
    """A randomly initialised tiny causal LM of ``family`` (see `TINY_FAMILIES`) over the tiny
    vocabulary, in eval mode: the real transformers class, with what makes the family itself
    switched on (grouped-query attention, rotary, sliding windows shorter than the prompts,
    biases, per-head q/k norms, partial rotary, post-norms and soft-capping). Weights are
    ``scale`` x the HF init, and biases and norm weights are random too, so every path matters.
    ``tokenizer``: another vocabulary (default: the tiny one of `tiny_records`).

    Example:
        >>> hf, tok = tiny_model("llama")
        >>> type(hf).__name__, hf.config.num_key_value_heads
        ('LlamaForCausalLM', 2)
    """
    import transformers as tf

    if family not in TINY_FAMILIES:
        raise ValueError(f"unknown family {family!r}; use one of {TINY_FAMILIES}")
    tok = tokenizer or tiny_tokenizer()
    if family == "gpt2":
        hf, _ = tiny_gpt2(n_layer=n_layers, n_head=n_heads, d_model=d_model, dtype=dtype,
                          seed=seed, vocab_size=len(tok), **config)
        return hf, tok
    common = dict(vocab_size=len(tok), hidden_size=d_model, num_hidden_layers=n_layers,
                  num_attention_heads=n_heads, intermediate_size=d_model * 3 // 2,
                  max_position_embeddings=64, bos_token_id=tok.bos_token_id,
                  eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                  tie_word_embeddings=False)
    gqa = dict(num_key_value_heads=n_kv_heads)
    window = dict(sliding_window=4)   # the tiny prompts are 10-17 tokens: windows bite
    kinds = {
        "llama": (tf.LlamaConfig, tf.LlamaForCausalLM, gqa),
        "llama3": (tf.LlamaConfig, tf.LlamaForCausalLM, {
            **gqa, "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0,
                                       "factor": 8.0, "low_freq_factor": 1.0,
                                       "high_freq_factor": 4.0,
                                       "original_max_position_embeddings": 16}}),
        "mistral": (tf.MistralConfig, tf.MistralForCausalLM, {**gqa, **window}),
        "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM, {
            **gqa, **window, "use_sliding_window": True, "max_window_layers": 1}),
        "qwen3": (tf.Qwen3Config, tf.Qwen3ForCausalLM, {**gqa, "head_dim": 6}),
        "gpt_neox": (tf.GPTNeoXConfig, tf.GPTNeoXForCausalLM, {
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                                "partial_rotary_factor": 0.5}, "use_parallel_residual": True}),
        "gpt_neox_sequential": (tf.GPTNeoXConfig, tf.GPTNeoXForCausalLM, {
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                                "partial_rotary_factor": 0.5}, "use_parallel_residual": False}),
        "gemma2": (tf.Gemma2Config, tf.Gemma2ForCausalLM, {
            **gqa, **window, "head_dim": 8, "query_pre_attn_scalar": 6,
            "attn_logit_softcapping": 3.0, "final_logit_softcapping": 5.0,
            "tie_word_embeddings": True}),
    }
    config_cls, model_cls, extra = kinds[family]
    torch.manual_seed(seed)
    cfg = config_cls(**{**common, **extra, **config})
    if family == "gemma2":
        cfg._attn_implementation = "eager"   # soft-capping: HF's own choice for Gemma-2
    model = model_cls(cfg).to(dtype).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = 0.3 * torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype)
            if "norm" in name:            # LayerNorm / RMSNorm weights and biases: not 1 and 0
                p.add_(noise)
            elif name.endswith("bias"):
                p.add_(noise)
            else:
                p.mul_(scale)
    return model, tok
