"""The shared adapter: one model family's graph through nnsight, driven by its `Family`.

An adapter knows where a family keeps its residual stream, norms, attention and MLPs, and
nothing about spans or scores. The attribution engine calls it inside an nnsight trace, in
forward order for values and in reverse order for gradients:

    inp = adapter.read_input(nn)                 # the `input` node (residual entering block 0)
    for layer in range(n_layers):
        att = adapter.read_attention(nn, layer)  # AttentionRead: norm input, q/k/v, head outputs
        mlp = adapter.read_mlp(nn, layer)        # MlpRead: norm input, MLP input and output
    fin = adapter.read_final(nn)                 # FinalRead: final norm input, logits
    with metric.backward():
        adapter.read_final_grad(fin); for layer reversed: read_mlp_grad, read_attention_grad

and, after the backward pass, maps gradients to each slot's **own** input: `norm_backward` for
the MLP and logits slots, `attention_slot_grads` for every query head's q/k/v slots (the head's
own rows of the projections, any per-head q/k norm and the model's rotary module, the attention
recomputed per query head, then the rows and the norm back per slot). The attention's inner
backward is thus ours, per query head, whatever attention implementation (eager, sdpa) the model
runs, and under grouped-query attention each query head's k/v slot gets its own gradient. The
norm's backward is in closed form for LayerNorm and RMSNorm, once checked against the model's
own norm modules at load time; a norm that does not match goes through the module by autograd.

Shapes: B batch, T positions, D d_model, H query heads, H_kv key/value heads, dh head size.
q/k/v are ``[B, H, T, dh]`` per *query* head (a KV group's k/v repeated), after any rotary
embedding; ``o`` is ``[B, T, H * dh]``, the heads' outputs before the output projection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..errors import UnsupportedArchitectureError
from ..graph.space import GraphConfig
from .family import Family

#: where a module is looked up: the HF model itself, or (inside a trace) its nnsight envoy
Root = Any


@dataclass
class AttentionRead:
    x: torch.Tensor          # [B, T, D] residual entering the attention's norm (the q/k/v slots' input)
    q: torch.Tensor          # [B, H, T, dh] per query head, after rotary (compute dtype)
    k: torch.Tensor
    v: torch.Tensor
    o: torch.Tensor          # [B, T, H*dh] live tensor: heads' outputs before the output projection


@dataclass
class MlpRead:
    x: torch.Tensor          # [B, T, D] residual entering the MLP's norm (the m{L} slot's input)
    normed: torch.Tensor     # live tensor: the norm's output (the MLP's input)
    out: torch.Tensor        # [B, T, D] the MLP's output (after any post-norm: forward node m{L})


@dataclass
class FinalRead:
    x: torch.Tensor          # [B, T, D] residual entering the final norm (the logits slot's input)
    normed: torch.Tensor     # live tensor: the final norm's output
    logits: torch.Tensor     # [B, T, vocab] after any final soft-capping


def module_at(root: Root, path: str) -> Root:
    """``root.a.b.c`` for ``path`` "a.b.c" (root: the HF module or its nnsight envoy)."""
    for part in path.split("."):
        root = getattr(root, part)
    return root


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """The rotary embedding (HF's rotate-half convention) on the first ``cos.shape[-1]`` dims of
    each head; the rest pass through (partial rotary, GPT-NeoX). x [B, H, T, dh]; cos/sin
    [B, T, r] from the model's own rotary module."""
    r = cos.shape[-1]
    cos, sin = cos[:, None].to(x.dtype), sin[:, None].to(x.dtype)
    rot, rest = x[..., :r], x[..., r:]
    half = r // 2
    turned = torch.cat([-rot[..., half:], rot[..., :half]], dim=-1)
    return torch.cat([rot * cos + turned * sin, rest], dim=-1)


def tensor_of(module: torch.nn.Module, name: str) -> torch.Tensor | None:
    """``module``'s parameter or buffer ``name`` (detached), or None. Where accelerate offloaded
    it (``device_map`` with "cpu" or "disk" entries, the module keeps a meta placeholder), it is
    read from the module's offload map and put on the device the module computes on."""
    t = getattr(module, name, None)
    if t is None:
        return None
    if t.device.type == "meta":
        hook = getattr(module, "_hf_hook", None)
        offloaded = getattr(hook, "weights_map", None)
        if offloaded is not None and name in offloaded:
            t = offloaded[name]
            device = getattr(hook, "execution_device", None)
            if device is not None:
                t = t.to(device)
    return t.detach()


def _weight(module) -> torch.Tensor:
    """[out, in] weight of an nn.Linear or a GPT-2 Conv1D (stored [in, out])."""
    w = tensor_of(module, "weight")
    return w.t() if type(module).__name__ == "Conv1D" else w


def _bias(module):
    return tensor_of(module, "bias")


class Adapter:
    """Access to one model through its family's declaration (`peap_widget.arch.family`)."""

    def __init__(self, hf_model: torch.nn.Module, family: Family):
        self.hf, self.decl, self.family = hf_model, family, family.name
        c = hf_model.config
        H, D = c.num_attention_heads, c.hidden_size
        parallel = bool(getattr(c, family.parallel, False)) if family.parallel else False
        self.config = GraphConfig(n_layers=c.num_hidden_layers, n_heads=H, d_model=D,
                                  parallel_attn_mlp=parallel)
        self._check_modules()
        attn = self.attention_module(hf_model, 0)
        self.d_head = (getattr(attn, "head_dim", None) or getattr(attn, "head_size", None)
                       or D // H)
        self.n_kv_heads = getattr(c, "num_key_value_heads", None) or H
        if H % self.n_kv_heads:
            raise UnsupportedArchitectureError(
                f"{H} query heads do not split into {self.n_kv_heads} key/value groups")
        self.post_norms = family.post_attn_norm is not None
        if self.post_norms and _bias(module_at(attn, family.out_proj)) is not None:
            raise UnsupportedArchitectureError(
                "a norm after the attention with a bias on its output projection: the heads' "
                "outputs would not sum to the sublayer's (docs/numbers.md); not supported")
        self._rotary_cache: dict = {}
        self.closed_form_norms = self.closed_form_norms_match()

    def _check_modules(self) -> None:
        f, hf = self.decl, self.hf
        paths = [f.blocks, f.final_norm, f.lm_head] + ([f.rotary] if f.rotary else [])
        block = [f.attn, f.attn_norm, f.mlp, f.mlp_norm, f.post_attn_norm, f.post_mlp_norm]
        attn = [f.out_proj, *f.qkv_proj, *(f.qk_norms or ())]
        try:
            for p in paths:
                module_at(hf, p)
            blk = module_at(hf, f.blocks)[0]
            for p in filter(None, block):
                module_at(blk, p)
            for p in attn:
                module_at(module_at(blk, f.attn), p)
        except (AttributeError, IndexError, TypeError) as err:
            raise UnsupportedArchitectureError(
                f"{type(hf).__name__} (model_type {hf.config.model_type!r}) lacks a module the "
                f"{f.name} family has ({err}); load the causal-LM class "
                "(AutoModelForCausalLM)") from None

    # --- modules -------------------------------------------------------------------------------

    def block(self, root: Root, layer: int) -> Root:
        """Transformer block ``layer``."""
        return module_at(root, self.decl.blocks)[layer]

    def attention_module(self, root: Root, layer: int) -> Root:
        """The attention module of ``layer`` (root: the HF model or its nnsight envoy)."""
        return module_at(self.block(root, layer), self.decl.attn)

    def post_attention_norm(self, root: Root, layer: int) -> Root | None:
        """The norm after the attention of ``layer`` (Gemma-2), or None where the family has
        none."""
        name = self.decl.post_attn_norm
        return None if name is None else module_at(self.block(root, layer), name)

    def qk_norm_modules(self, root: Root, layer: int) -> list | None:
        """The per-head q and k norm modules of ``layer`` (Qwen3), or None."""
        if not self.decl.qk_norms:
            return None
        attn = self.attention_module(root, layer)
        return [module_at(attn, n) for n in self.decl.qk_norms]

    def norm(self, root: Root, layer: int | None, which: str) -> Root:
        """The norm in front of ``which``: ``"attn"``, ``"mlp"`` (of ``layer``) or ``"final"``."""
        if which == "final":
            return module_at(root, self.decl.final_norm)
        return module_at(self.block(root, layer),
                         self.decl.attn_norm if which == "attn" else self.decl.mlp_norm)

    @property
    def model_dtype(self) -> torch.dtype:
        return next(self.hf.parameters()).dtype

    # --- static description ---------------------------------------------------------------------

    def W_O(self, layer: int) -> torch.Tensor:
        """[H, dh, D]: each query head's slice of the output projection (no bias)."""
        attn = self.attention_module(self.hf, layer)
        w = _weight(module_at(attn, self.decl.out_proj))                          # [D, H*dh]
        return w.t().reshape(self.config.n_heads, self.d_head, self.config.d_model)

    def qkv_weights(self, layer: int,
                    dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per *query* head: W [3, H, dh, D] (q, k, v rows; k/v those of the head's KV group)
        and biases [3, H, dh] (or None)."""
        H, Hkv, dh, D = self.config.n_heads, self.n_kv_heads, self.d_head, self.config.d_model
        attn = self.attention_module(self.hf, layer)
        projs = [module_at(attn, p) for p in self.decl.qkv_proj]
        layout = self.decl.qkv_layout
        if layout == "separate":
            group = torch.arange(H) // (H // Hkv)
            W = torch.stack([_weight(projs[0]).reshape(H, dh, D)]
                            + [_weight(p).reshape(Hkv, dh, D)[group] for p in projs[1:]])
            bs = [_bias(p) for p in projs]
            b = None if all(x is None for x in bs) else torch.stack(
                [torch.zeros(H * dh, dtype=W.dtype, device=W.device).reshape(H, dh)
                 if x is None else x.reshape(-1, dh)[group if i else slice(None)]
                 for i, x in enumerate(bs)])
        elif layout == "fused_per_head":       # output viewed [.., H, 3 * dh]
            W = _weight(projs[0]).reshape(H, 3, dh, D).transpose(0, 1)
            b = _bias(projs[0])
            b = None if b is None else b.reshape(H, 3, dh).transpose(0, 1)
        else:                                   # "fused_columns": q | k | v, heads inside
            W = _weight(projs[0]).reshape(3, H, dh, D)
            b = _bias(projs[0])
            b = None if b is None else b.reshape(3, H, dh)
        return W.to(dtype), None if b is None else b.to(dtype)

    def window(self, layer: int) -> int | None:
        """The layer's sliding window (a key t' is seen from query t iff t - window < t' <= t)."""
        if self.decl.window_from_config:
            return getattr(self.hf.config, "sliding_window", None)
        return getattr(self.attention_module(self.hf, layer), "sliding_window", None)

    def attention_logits(self, q: torch.Tensor, k: torch.Tensor, layer: int) -> torch.Tensor:
        """[B, H, Tq, Tk] attention scores before the mask, with the model's own scale and any
        soft-capping. Called with mixed clean/ablated q and k for the crossing closed forms."""
        attn = self.attention_module(self.hf, layer)
        scores = (q @ k.transpose(-1, -2)) * attn.scaling
        cap = getattr(self.hf.config, "attn_logit_softcapping", None)
        if cap:
            scores = torch.tanh(scores / cap) * cap
        return scores

    def attention_mask(self, T: int, layer: int,
                       device: torch.device | str | None = None) -> torch.Tensor:
        """[T, T] bool: which (query, key) pairs attend (causal; a sliding window removes more)."""
        allowed = torch.ones(T, T, dtype=torch.bool, device=device).tril()
        window = self.window(layer)
        if window is not None and window < T:
            allowed &= torch.ones_like(allowed).triu(-(window - 1))
        return allowed

    def pattern_from_logits(self, scores: torch.Tensor, layer: int) -> torch.Tensor:
        allowed = self.attention_mask(scores.shape[-1], layer, scores.device)
        return torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)

    def attention_pattern(self, q: torch.Tensor, k: torch.Tensor, layer: int) -> torch.Tensor:
        """[B, H, T, T] the masked softmax of the scores (right padding needs no other mask)."""
        return self.pattern_from_logits(self.attention_logits(q, k, layer), layer)

    def head_outputs(self, layer: int, o: torch.Tensor, W_O: torch.Tensor) -> torch.Tensor:
        """[B, T, H, D] each head's output z_h from the heads' outputs ``o`` [B, T, H*dh]
        through its slice of the output projection, and, where a norm follows the attention
        (Gemma-2), scaled by this run's own post-norm factor (docs/numbers.md)."""
        B, T, _ = o.shape
        z = torch.einsum("bthd,hdD->bthD", o.reshape(B, T, self.config.n_heads, self.d_head), W_O)
        if self.post_norms:
            z = z * self.post_norm_scale(layer, "attn", z.sum(2))[:, :, None]
        return z

    def post_norm_scale(self, layer: int, which: str, r: torch.Tensor) -> torch.Tensor:
        """[B, T, D]: the factor the RMS norm after sublayer ``which`` multiplies its input ``r``
        by (gain / rms(r)), computed as the model does, in at least float32."""
        name = self.decl.post_attn_norm if which == "attn" else self.decl.post_mlp_norm
        norm = module_at(self.block(self.hf, layer), name)
        dt = torch.promote_types(r.dtype, torch.float32)
        x = r.to(dt)
        inv = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps)
        gain = tensor_of(norm, "weight").to(device=r.device, dtype=dt)
        return (inv * (self.decl.norm_offset + gain)).to(r.dtype)

    # --- q/k/v ---------------------------------------------------------------------------------

    def _rotary(self, root, T: int, dtype, device):
        """(cos, sin) [1, T, r] for positions 0..T-1 from the model's own rotary module."""
        key = (T, dtype, str(device))
        if key not in self._rotary_cache:
            positions = torch.arange(T, device=device)[None]
            probe = torch.zeros(1, T, 1, dtype=dtype, device=device)
            cos, sin = module_at(root, self.decl.rotary)(probe, positions)
            if len(self._rotary_cache) > 8:
                self._rotary_cache.clear()
            self._rotary_cache[key] = (cos.detach(), sin.detach())
        return self._rotary_cache[key]

    def _finish_qk(self, root, layer: int, q: torch.Tensor, k: torch.Tensor):
        """Per-head q/k norms (Qwen3) and the rotary embedding, on [B, heads, T, dh]."""
        norms = self.qk_norm_modules(root, layer)
        if norms:
            qn, kn, md = *norms, self.model_dtype
            q, k = qn(q.to(md)).to(q.dtype), kn(k.to(md)).to(k.dtype)
        if self.decl.rotary:
            cos, sin = self._rotary(root, q.shape[2], q.dtype, q.device)
            q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        return q, k

    def qkv_from_slots(self, root: Root, layer: int,
                       normed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[B, T, 3, H, D] per-slot normed inputs (each query head's own q, k, v copy) ->
        q, k, v [B, H, T, dh] (biases, q/k norms and rotary applied), in normed's dtype."""
        W, b = self.qkv_weights(layer, normed.dtype)
        qkv = torch.einsum("btchD,chdD->cbhtd", normed, W)
        if b is not None:
            qkv = qkv + b[:, None, :, None, :]
        q, k = self._finish_qk(root, layer, qkv[0], qkv[1])
        return q, k, qkv[2]

    def _split_projections(self, outs: list, dtype):
        """The q/k/v projections' outputs -> q [B, H, T, dh], k and v [B, H_kv, T, dh]."""
        H, Hkv, dh = self.config.n_heads, self.n_kv_heads, self.d_head
        outs = [x.detach().to(dtype) for x in outs]
        B, T = outs[0].shape[:2]
        layout = self.decl.qkv_layout
        if layout == "separate":
            return tuple(x.reshape(B, T, n, dh).transpose(1, 2) for x, n in zip(outs, (H, Hkv, Hkv)))
        if layout == "fused_per_head":
            return outs[0].reshape(B, T, H, 3 * dh).transpose(1, 2).chunk(3, dim=-1)
        return tuple(x.reshape(B, T, H, dh).transpose(1, 2) for x in outs[0].chunk(3, dim=-1))

    def _expand_kv(self, x: torch.Tensor) -> torch.Tensor:
        """[B, H_kv, T, dh] -> [B, H, T, dh]: each query head gets its group's k or v."""
        rep = self.config.n_heads // self.n_kv_heads
        return x if rep == 1 else x.repeat_interleave(rep, dim=1)

    # --- reads inside a trace (forward order) -----------------------------------------------------

    def compute_dtype(self) -> torch.dtype:
        md = self.model_dtype
        return torch.float32 if md in (torch.float16, torch.bfloat16) else md

    def read_input(self, nn: Root) -> torch.Tensor:
        """The residual stream entering block 0 (embeddings, scaled / with positions)."""
        return self.block(nn, 0).input

    def read_attention(self, nn: Root, layer: int) -> AttentionRead:
        f = self.decl
        x = self.norm(nn, layer, "attn").input
        attn = self.attention_module(nn, layer)
        outs = [module_at(attn, p).output for p in f.qkv_proj]
        o = module_at(attn, f.out_proj).input
        q, k, v = self._split_projections(outs, self.compute_dtype())
        q, k = self._finish_qk(nn, layer, q, k)
        return AttentionRead(x=x.detach(), q=q, k=self._expand_kv(k), v=self._expand_kv(v), o=o)

    def read_mlp(self, nn: Root, layer: int) -> MlpRead:
        x = self.norm(nn, layer, "mlp").input
        normed = self.norm(nn, layer, "mlp").output
        out = self.read_mlp_output(nn, layer)
        return MlpRead(x=x.detach(), normed=normed, out=out)

    def read_final(self, nn: Root) -> FinalRead:
        x = self.norm(nn, None, "final").input
        normed = self.norm(nn, None, "final").output
        return FinalRead(x=x.detach(), normed=normed, logits=self.read_logits(nn))

    def read_mlp_output(self, nn: Root, layer: int) -> torch.Tensor:
        """The MLP node's output: the MLP's, or its post-norm's where one follows (Gemma-2)."""
        blk = self.block(nn, layer)
        return module_at(blk, self.decl.post_mlp_norm or self.decl.mlp).output

    def read_logits(self, nn: Root) -> torch.Tensor:
        """[B, T, vocab] the model's logits, final soft-capping included (Gemma-2)."""
        logits = module_at(nn, self.decl.lm_head).output
        cap = getattr(self.hf.config, "final_logit_softcapping", None)
        return torch.tanh(logits / cap) * cap if cap else logits

    # --- gradients inside ``with metric.backward()`` (reverse order) ----------------------------

    def read_final_grad(self, fin: FinalRead) -> torch.Tensor:
        return fin.normed.grad

    def read_mlp_grad(self, mlp: MlpRead) -> torch.Tensor:
        return mlp.normed.grad

    def read_attention_grad(self, att: AttentionRead) -> torch.Tensor:
        """[B, T, H*dh] the gradient at the heads' outputs."""
        return att.o.grad

    # --- patched runs (circuit evaluation), in forward order ------------------------------------

    def read_residual(self, nn: Root, layer: int | None, which: str) -> torch.Tensor:
        """The residual stream entering the norm in front of ``which`` (``"attn"``, ``"mlp"``
        of ``layer``, or ``"final"``)."""
        return self.norm(nn, layer, which).input

    def set_norm_input(self, nn: Root, layer: int | None, which: str, value: torch.Tensor) -> None:
        """Feed the norm in front of ``which`` (and so only that sublayer) ``value`` instead."""
        self.norm(nn, layer, which).input = value

    def set_heads_output(self, nn: Root, layer: int, o: torch.Tensor) -> None:
        """Feed the output projection of ``layer`` the heads' outputs ``o`` [B, T, H*dh]
        instead of the attention's own (gradients still flow through what ``o`` is built of)."""
        module_at(self.attention_module(nn, layer), self.decl.out_proj).input = o

    def set_mlp_output(self, nn: Root, layer: int, value: torch.Tensor) -> None:
        """Replace the MLP node's output of ``layer`` (the MLP's, or its post-norm's) by
        ``value``."""
        module_at(self.block(nn, layer), self.decl.post_mlp_norm or self.decl.mlp).output = value

    def replace_attention(self, nn: Root, layer: int, o: torch.Tensor) -> None:
        """Skip the attention module of ``layer``, using heads' outputs ``o`` [B, T, H*dh]
        (before the output projection) through the model's own output projection instead."""
        attn = self.attention_module(nn, layer)
        attn.skip((module_at(attn, self.decl.out_proj)(o), None))

    # --- slot gradients through the model's own modules (after the backward pass) ----------------

    def _norm_params(self, layer: int | None, which: str, dtype):
        """(weight or None, bias or None, eps) of the norm in front of ``which``, as used."""
        m = self.norm(self.hf, layer, which)
        w, b = tensor_of(m, "weight"), tensor_of(m, "bias")
        eps = next(getattr(m, n) for n in ("eps", "variance_epsilon") if hasattr(m, n))
        w = None if w is None else w.detach().to(dtype) + self.decl.norm_offset
        return w, None if b is None else b.detach().to(dtype), float(eps)

    def _norm_forward(self, layer, which, x: torch.Tensor) -> torch.Tensor:
        """The family's norm written out (only to check it against the module at load time)."""
        w, b, eps = self._norm_params(layer, which, x.dtype)
        if self.decl.norm_kind == "layer":
            y = (x - x.mean(-1, keepdim=True)) * torch.rsqrt(x.var(-1, unbiased=False, keepdim=True) + eps)
        else:
            y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        y = y if w is None else y * w
        return y if b is None else y + b

    def closed_form_norms_match(self) -> bool:
        """Whether the family's closed-form norm backward applies to this model: its written-out
        norm must reproduce the model's own norm modules (else the autograd path is used)."""
        D = self.config.d_model
        try:
            x = torch.randn(3, D, generator=torch.Generator().manual_seed(0),
                            dtype=torch.float64).to(self.model_dtype).float()
            for layer, which in ((0, "attn"), (0, "mlp"), (None, "final")):
                module = self.norm(self.hf, layer, which)
                x_dev = x.to(tensor_of(module, "weight").device)
                got = module(x_dev.to(self.model_dtype)).float()
                want = self._norm_forward(layer, which, x_dev)
                tol = 1e-5 if self.model_dtype in (torch.float32, torch.float64) else 3e-2
                if not torch.allclose(got, want, rtol=tol, atol=tol * want.abs().max().item()):
                    return False
        except (StopIteration, TypeError, RuntimeError, AttributeError, NotImplementedError):
            return False   # (a remote model's meta copy: checked on the server instead)
        return True

    def norm_backward(self, nn: Root, layer: int | None, which: str, x: torch.Tensor,
                      cotangents: torch.Tensor) -> torch.Tensor:
        """Gradient w.r.t. each slot's own copy of the residual ``x`` [B, T, D], given the
        gradients at the norm's output for each slot, ``cotangents`` [B, T, K, D] -> [B, T, K, D].

        In closed form for LayerNorm and RMSNorm (checked against the model's own modules when
        it loads); otherwise through the model's own norm module (ad hoc through nnsight) run
        on K copies of ``x``."""
        if not self.closed_form_norms:
            return self._norm_backward_autograd(nn, layer, which, x, cotangents)
        cd = cotangents.dtype
        x = x.detach().to(cd)
        w, _, eps = self._norm_params(layer, which, cd)
        D = x.shape[-1]
        wc = cotangents if w is None else cotangents * w
        if self.decl.norm_kind == "rms":
            # y = w x r, r = (mean x^2 + eps)^-1/2:  dx = r w c - x r^3 / D (x . w c)
            r = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)                 # [B, T, 1]
            dot = torch.einsum("btkd,btd->btk", wc, x)[..., None]
            return wc * r[:, :, None] - (x * (r.pow(3) / D))[:, :, None] * dot
        # y = w xhat + b, xhat = (x - mean) rstd:  dx = rstd (wc - mean(wc) - xhat mean(wc xhat))
        xc = x - x.mean(-1, keepdim=True)
        rstd = torch.rsqrt(xc.pow(2).mean(-1, keepdim=True) + eps)
        xhat = xc * rstd
        m1 = wc.mean(-1, keepdim=True)
        m2 = torch.einsum("btkd,btd->btk", wc, xhat)[..., None] / D
        return rstd[:, :, None] * (wc - m1 - xhat[:, :, None] * m2)

    def _norm_backward_autograd(self, nn, layer, which, x, cotangents):
        B, T, K, D = cotangents.shape
        with torch.enable_grad():
            copies = x.detach().to(self.model_dtype).unsqueeze(2).expand(B, T, K, D).contiguous()
            copies.requires_grad_(True)
            out = self.norm(nn, layer, which)(copies)
            (grad,) = torch.autograd.grad(out, copies, cotangents.to(out.dtype))
        return grad.detach().to(cotangents.dtype)

    def attention_slot_grads(self, nn: Root, layer: int, x: torch.Tensor,
                             g_o: torch.Tensor) -> torch.Tensor:
        """[B, T, 3H, D] gradients w.r.t. every query head's own q, k and v copy of the residual
        ``x`` [B, T, D] (slot order: q of all heads, k of all heads, v of all heads), given the
        gradient ``g_o`` [B, H, T, dh] at each head's output.

        Each query head's q, k and v are formed from the norm's output through its own rows of
        the projections (a KV group's k/v rows for each of its query heads), any q/k norm and
        the model's rotary embedding, and its attention is recomputed: autograd gives the
        gradient at each head's own projections (the attention's exact backward whatever
        implementation the model runs), which goes back through the rows and the norm per slot."""
        B, T, D = x.shape
        H, cd = self.config.n_heads, x.dtype
        normed = self.norm(nn, layer, "attn")(x.detach().to(self.model_dtype)).to(cd)
        W, b = self.qkv_weights(layer, cd)                                   # [3, H, dh, D]
        with torch.enable_grad():
            raw = torch.einsum("btD,chdD->cbhtd", normed, W)
            if b is not None:
                raw = raw + b[:, None, :, None, :]
            raw.requires_grad_(True)
            q, k = self._finish_qk(nn, layer, raw[0], raw[1])
            o = self.attention_pattern(q, k, layer) @ raw[2]
            (g_raw,) = torch.autograd.grad(o, raw, g_o.to(o.dtype))
        g_normed = torch.einsum("cbhtd,chdD->btchD", g_raw, W).reshape(B, T, 3 * H, D)
        return self.norm_backward(nn, layer, "attn", x, g_normed)
