"""The adapter interface: per-architecture access to a model's graph through nnsight.

An adapter knows where one model family keeps its residual stream, norms, attention and MLPs,
and nothing about spans or scores. The attribution engine calls it inside an nnsight trace, in
forward order for values and in reverse order for gradients:

    inp = adapter.read_input(nn)                 # the `input` node (residual entering block 0)
    for layer in range(n_layers):
        att = adapter.read_attention(nn, layer)  # AttentionRead: norm input, q/k/v, head outputs
        mlp = adapter.read_mlp(nn, layer)        # MlpRead: norm input, MLP input and output
    fin = adapter.read_final(nn)                 # FinalRead: final norm input, logits
    with metric.backward():
        adapter.read_final_grad(fin); for layer reversed: read_mlp_grad, read_attention_grads

and, after the backward pass, maps gradients to each slot's **own** input through the model's own
norm module (`slot_grads_through_norm`), so LayerNorm and RMSNorm need no hand-written Jacobian.

Shapes: B batch, T positions, D d_model, H heads, dh head size. q/k/v are ``[B, H, T, dh]`` after
any rotary embedding; ``o`` is ``[B, T, H * dh]``, the heads' outputs before W_O.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..graph import GraphConfig


@dataclass
class AttentionRead:
    x: torch.Tensor          # [B, T, D] residual entering the attention's norm (the q/k/v slots' input)
    q: torch.Tensor          # [B, H, T, dh]
    k: torch.Tensor
    v: torch.Tensor
    o: torch.Tensor          # [B, T, H*dh] live tensor: heads' outputs before W_O
    live: tuple = ()         # adapter-private live tensors whose gradients it reads


@dataclass
class MlpRead:
    x: torch.Tensor          # [B, T, D] residual entering the MLP's norm (the m{L} slot's input)
    normed: torch.Tensor     # live tensor: the norm's output (the MLP's input)
    out: torch.Tensor        # [B, T, D] the MLP's output (forward node m{L})


@dataclass
class FinalRead:
    x: torch.Tensor          # [B, T, D] residual entering the final norm (the logits slot's input)
    normed: torch.Tensor     # live tensor: the final norm's output
    logits: torch.Tensor     # [B, T, vocab]


class Adapter:
    """Base class; subclasses set `family` and `hf_classes` and implement the reads."""

    family: str = ""
    hf_classes: tuple[str, ...] = ()

    def __init__(self, hf_model):
        self.hf = hf_model
        self.config = self.graph_config()
        self.d_head = self.config.d_model // self.config.n_heads

    # --- static description ---------------------------------------------------------------

    def graph_config(self) -> GraphConfig:
        raise NotImplementedError

    def W_O(self, layer: int) -> torch.Tensor:
        """[H, dh, D]: each head's slice of the output projection (no bias)."""
        raise NotImplementedError

    def attention_logits(self, q: torch.Tensor, k: torch.Tensor, layer: int) -> torch.Tensor:
        """[B, H, Tq, Tk] attention scores before the mask, with the model's own scale and any
        soft-capping. Called with mixed clean/ablated q and k for the crossing closed forms."""
        raise NotImplementedError

    def attention_pattern(self, q: torch.Tensor, k: torch.Tensor, layer: int) -> torch.Tensor:
        """[B, H, T, T] softmax of the causally masked scores (right padding needs no other mask)."""
        return self.pattern_from_logits(self.attention_logits(q, k, layer), layer)

    def attention_mask(self, T: int, layer: int, device=None) -> torch.Tensor:
        """[T, T] bool: which (query, key) pairs attend (causal; a sliding window removes more)."""
        return torch.ones(T, T, dtype=torch.bool, device=device).tril()

    def pattern_from_logits(self, scores: torch.Tensor, layer: int) -> torch.Tensor:
        allowed = self.attention_mask(scores.shape[-1], layer, scores.device)
        return torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)

    # --- reads inside a trace (forward order) ------------------------------------------------

    def read_input(self, nn) -> torch.Tensor:
        raise NotImplementedError

    def read_attention(self, nn, layer: int) -> AttentionRead:
        raise NotImplementedError

    def read_mlp(self, nn, layer: int) -> MlpRead:
        raise NotImplementedError

    def read_final(self, nn) -> FinalRead:
        raise NotImplementedError

    # --- gradients inside ``with metric.backward()`` (reverse order) -------------------------

    def read_final_grad(self, fin: FinalRead) -> torch.Tensor:
        return fin.normed.grad

    def read_mlp_grad(self, mlp: MlpRead) -> torch.Tensor:
        return mlp.normed.grad

    def read_attention_grads(self, att: AttentionRead) -> tuple[torch.Tensor, torch.Tensor]:
        """(grad at ``o`` [B, T, H*dh], grads at each head's q/k/v projections [B, T, 3, H, dh])."""
        raise NotImplementedError

    def qkv_grads_to_norm_space(self, layer: int, g: torch.Tensor) -> torch.Tensor:
        """[B, T, 3, H, dh] grads at the q/k/v projections -> [B, T, 3, H, D] grads at the
        attention norm's output, one per head and kind (each head's own copy)."""
        raise NotImplementedError

    # --- patched runs (circuit evaluation), in forward order -------------------------------

    def read_residual(self, nn, layer: int | None, which: str) -> torch.Tensor:
        """The residual stream entering the norm in front of ``which`` (``"attn"``, ``"mlp"``
        of ``layer``, or ``"final"``)."""
        return self.norm(nn, layer, which).input

    def set_norm_input(self, nn, layer: int | None, which: str, value: torch.Tensor) -> None:
        """Feed the norm in front of ``which`` (and so only that sublayer) ``value`` instead."""
        self.norm(nn, layer, which).input = value

    def qkv_from_normed(self, layer: int, normed: torch.Tensor):
        """[B, T, 3, H, D] per-head normed q/k/v inputs -> q, k, v [B, H, T, dh] (with biases,
        after any rotary embedding)."""
        raise NotImplementedError

    def replace_attention(self, nn, layer: int, o: torch.Tensor) -> None:
        """Skip the attention module of ``layer``, using heads' outputs ``o`` [B, T, H*dh]
        (before W_O) through the model's own output projection instead."""
        raise NotImplementedError

    def read_mlp_output(self, nn, layer: int) -> torch.Tensor:
        raise NotImplementedError

    def read_logits(self, nn) -> torch.Tensor:
        raise NotImplementedError

    # --- slot gradients through the model's own norms (after the backward pass) -------------

    def norm(self, nn, layer: int | None, which: str):
        """The envoy of the norm in front of ``which`` in ``"attn"``, ``"mlp"`` (``layer``) or
        ``"final"`` (layer None)."""
        raise NotImplementedError

    def slot_grads_through_norm(self, nn, layer, which, x, cotangents):
        """Gradient w.r.t. each slot's own copy of the residual ``x`` [B, T, D], given the
        gradients at the norm's output for each slot, ``cotangents`` [B, T, K, D] -> [B, T, K, D].

        Runs the model's own norm module (ad hoc through nnsight) on K copies of ``x``."""
        B, T, K, D = cotangents.shape
        model_dtype = next(self.hf.parameters()).dtype  # the norm's own dtype (bf16 models: bf16)
        with torch.enable_grad():
            copies = x.detach().to(model_dtype).unsqueeze(2).expand(B, T, K, D).contiguous()
            copies.requires_grad_(True)
            out = self.norm(nn, layer, which)(copies)
            (grad,) = torch.autograd.grad(out, copies, cotangents.to(out.dtype))
        return grad.detach().to(cotangents.dtype)
