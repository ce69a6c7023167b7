"""A model family as a declaration: where its modules are and which features it has.

One `Family` per architecture (see `peap_widget.arch.families`); the shared machinery in
`peap_widget.arch.base.Adapter` reads everything else from the HF config and modules.

Example:
    >>> from peap_widget.arch.families import LLAMA
    >>> LLAMA.blocks, LLAMA.attn_norm, LLAMA.qkv_layout
    ('model.layers', 'input_layernorm', 'separate')
"""

from __future__ import annotations

from dataclasses import dataclass

#: how a family's q/k/v projections are laid out
QKV_LAYOUTS = (
    "separate",       # q_proj / k_proj / v_proj nn.Linear (Llama, Mistral, Qwen, Gemma)
    "fused_per_head",  # one nn.Linear, output viewed [.., H, 3, dh] (GPT-NeoX / Pythia)
    "fused_columns",  # one Conv1D, output columns q | k | v, heads inside (GPT-2)
)


@dataclass(frozen=True)
class Family:
    """Module paths (dotted, from the HF ``*ForCausalLM`` module) and features of one family.

    Block-relative paths (``attn``, ``attn_norm``...) are inside ``blocks[i]``; ``q_proj`` etc.
    inside the attention module. ``None`` means the family has no such module.
    """

    name: str
    model_types: tuple[str, ...]       # HF ``config.model_type`` values this family serves
    blocks: str                        # the ModuleList of decoder blocks
    final_norm: str
    lm_head: str = "lm_head"
    attn: str = "self_attn"
    attn_norm: str = "input_layernorm"  # the norm in front of the attention
    mlp: str = "mlp"
    mlp_norm: str = "post_attention_layernorm"  # the norm in front of the MLP
    out_proj: str = "o_proj"
    qkv_layout: str = "separate"
    qkv_proj: tuple[str, ...] = ("q_proj", "k_proj", "v_proj")
    qk_norms: tuple[str, str] | None = None     # per-head norms before rotary (Qwen3)
    rotary: str | None = "model.rotary_emb"     # the model's rotary module (None: no rotary)
    post_attn_norm: str | None = None           # norms on a sublayer's output (Gemma-2)
    post_mlp_norm: str | None = None
    norm_kind: str = "rms"                      # "rms" or "layer": the closed-form norm backward
    norm_offset: float = 0.0                    # Gemma's RMSNorm multiplies by (1 + weight)
    parallel: str | None = None                 # config flag: attention and MLP in parallel
    window_from_config: bool = False            # every layer's window is config.sliding_window

    def __post_init__(self):
        if self.qkv_layout not in QKV_LAYOUTS:
            raise ValueError(f"unknown q/k/v layout {self.qkv_layout!r}")
        if self.norm_kind not in ("rms", "layer"):
            raise ValueError(f"unknown norm kind {self.norm_kind!r}")
