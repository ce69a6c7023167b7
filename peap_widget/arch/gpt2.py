"""GPT-2 family adapter (HF ``GPT2LMHeadModel``): pre-LN sequential blocks, fused c_attn (Conv1D)."""

from __future__ import annotations

import torch

from ..graph import GraphConfig
from .base import Adapter, AttentionRead, FinalRead, MlpRead


class GPT2Adapter(Adapter):
    family = "gpt2"
    hf_classes = ("GPT2LMHeadModel",)

    def graph_config(self) -> GraphConfig:
        c = self.hf.config
        return GraphConfig(n_layers=c.n_layer, n_heads=c.n_head, d_model=c.n_embd,
                           parallel_attn_mlp=False)

    def _block(self, layer: int):
        return self.hf.transformer.h[layer]

    def W_O(self, layer: int) -> torch.Tensor:
        w = self._block(layer).attn.c_proj.weight  # Conv1D: [in = H*dh, out = D]
        return w.detach().reshape(self.config.n_heads, self.d_head, self.config.d_model)

    def _W_qkv(self, layer: int) -> torch.Tensor:
        w = self._block(layer).attn.c_attn.weight  # Conv1D: [D, 3*D] columns q | k | v, heads inside
        return w.detach().reshape(self.config.d_model, 3, self.config.n_heads, self.d_head)

    def attention_logits(self, q, k, layer):
        c = self.hf.config
        scores = q @ k.transpose(-1, -2)
        if c.scale_attn_weights:
            scores = scores / (self.d_head ** 0.5)
        if c.scale_attn_by_inverse_layer_idx:
            scores = scores / float(layer + 1)
        return scores

    # --- reads -------------------------------------------------------------------------------

    def read_input(self, nn):
        return nn.transformer.h[0].input

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        return x.reshape(B, T, self.config.n_heads, self.d_head).transpose(1, 2)

    def read_attention(self, nn, layer):
        blk = nn.transformer.h[layer]
        x = blk.ln_1.input
        qkv = blk.attn.c_attn.output
        o = blk.attn.c_proj.input
        q, k, v = qkv.detach().split(self.config.d_model, dim=-1)
        return AttentionRead(x=x.detach(), q=self._split_heads(q), k=self._split_heads(k),
                             v=self._split_heads(v), o=o, live=(qkv,))

    def read_mlp(self, nn, layer):
        blk = nn.transformer.h[layer]
        x = blk.ln_2.input
        normed = blk.ln_2.output
        out = blk.mlp.output
        return MlpRead(x=x.detach(), normed=normed, out=out)

    def read_final(self, nn):
        x = nn.transformer.ln_f.input
        normed = nn.transformer.ln_f.output
        logits = nn.lm_head.output
        return FinalRead(x=x.detach(), normed=normed, logits=logits)

    def read_attention_grads(self, att):
        g_o = att.o.grad
        (qkv,) = att.live
        g_qkv = qkv.grad  # [B, T, 3*D]
        B, T, _ = g_qkv.shape
        return g_o, g_qkv.reshape(B, T, 3, self.config.n_heads, self.d_head)

    def qkv_grads_to_norm_space(self, layer: int, g: torch.Tensor) -> torch.Tensor:
        """[B, T, 3, H, dh] grads at q/k/v -> [B, T, 3, H, D] grads at the norm's output: each
        head's q/k/v gradient pulled back through its own columns of c_attn."""
        w = self._W_qkv(layer).to(g.dtype)
        return torch.einsum("btchd,Dchd->btchD", g, w)

    def qkv_from_normed(self, layer, normed):
        attn = self._block(layer).attn.c_attn
        w = self._W_qkv(layer).to(normed.dtype)                         # [D, 3, H, dh]
        b = attn.bias.detach().to(normed.dtype).reshape(3, self.config.n_heads, self.d_head)
        qkv = torch.einsum("btchD,Dchd->cbhtd", normed, w) + b[:, None, :, None, :]
        return qkv[0], qkv[1], qkv[2]

    def replace_attention(self, nn, layer, o):
        attn = nn.transformer.h[layer].attn
        attn.skip((attn.c_proj(o), None))

    def read_mlp_output(self, nn, layer):
        return nn.transformer.h[layer].mlp.output

    def read_logits(self, nn):
        return nn.lm_head.output

    def norm(self, nn, layer, which):
        if which == "final":
            return nn.transformer.ln_f
        blk = nn.transformer.h[layer]
        return blk.ln_1 if which == "attn" else blk.ln_2
