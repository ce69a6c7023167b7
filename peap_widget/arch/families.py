"""The supported model families, each a `Family` declaration (see `peap_widget.arch.family`).

Everything not declared here is read from the HF config and modules by the shared adapter:
layer/head counts, head size, key/value heads, the attention scale (the module's ``scaling``),
soft-capping, per-layer sliding windows (the attention module's ``sliding_window``), biases,
partial rotary (the width of the model's own cos/sin).
"""

from __future__ import annotations

from .family import Family

GPT2 = Family(
    name="gpt2", model_types=("gpt2",), blocks="transformer.h", final_norm="transformer.ln_f",
    attn="attn", attn_norm="ln_1", mlp_norm="ln_2", out_proj="c_proj",
    qkv_layout="fused_columns", qkv_proj=("c_attn",), rotary=None, norm_kind="layer")

LLAMA = Family(name="llama", model_types=("llama",), blocks="model.layers",
               final_norm="model.norm")

MISTRAL = Family(name="mistral", model_types=("mistral",), blocks="model.layers",
                 final_norm="model.norm", window_from_config=True)

QWEN2 = Family(name="qwen2", model_types=("qwen2",), blocks="model.layers",
               final_norm="model.norm")

QWEN3 = Family(name="qwen3", model_types=("qwen3",), blocks="model.layers",
               final_norm="model.norm", qk_norms=("q_norm", "k_norm"))

GPT_NEOX = Family(
    name="gpt_neox", model_types=("gpt_neox",), blocks="gpt_neox.layers",
    final_norm="gpt_neox.final_layer_norm", attn="attention",
    out_proj="dense", qkv_layout="fused_per_head", qkv_proj=("query_key_value",),
    rotary="gpt_neox.rotary_emb", parallel="use_parallel_residual", norm_kind="layer")

GEMMA2 = Family(
    name="gemma2", model_types=("gemma2",), blocks="model.layers", final_norm="model.norm",
    mlp_norm="pre_feedforward_layernorm", post_attn_norm="post_attention_layernorm",
    post_mlp_norm="post_feedforward_layernorm", norm_offset=1.0)

FAMILIES: tuple[Family, ...] = (GPT2, LLAMA, MISTRAL, QWEN2, QWEN3, GPT_NEOX, GEMMA2)
