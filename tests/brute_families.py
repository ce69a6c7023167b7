"""Independent brute-force reference for (P)EAP edge scores and circuit evaluation on every tiny
model family of ``peap_widget.models.examples.tiny_model``: GPT-2, Llama (also Llama-3 rope scaling),
Mistral, Qwen2, Qwen3, GPT-NeoX (parallel and sequential residual) and Gemma-2.

Written from the contract (DESIGN.md sections 3-5) only, in plain PyTorch, one example at a time
with explicit loops. Nothing here imports the engine: from ``peap_widget`` only the tiny models,
records and tokenizer (``examples``) are used by the tests. From the HF model we read the config
and the weights, and one buffer: the rotary ``inv_freq`` (Llama-3 scaling rewrites it).

Per-family description (:func:`describe`)
------------------------------------------
Read from the HF config and weights into a :class:`Spec`: the norm kind (LayerNorm, RMSNorm,
Gemma's RMSNorm with ``(1 + w)``), where the norms are (pre-norms; Gemma-2's post-attention and
post-feedforward norms; Qwen3's per-head q/k norms), parallel or sequential blocks, per query head
its q/k/v weights (k/v: the rows of its KV group ``h // (H / H_kv)``) and biases, its slice
W_O^h of the output projection, the attention output bias (GPT-NeoX; never a component), the
rotary dimension, the score scale, attention and final soft-capping, the sliding window of every
layer, the MLP (GPT-2 / GPT-NeoX two-matrix MLP with biases or the gated MLP) and the embedding
(GPT-2 adds learned positions, Gemma-2 scales by sqrt(d_model)).

Forward (:func:`run`)
---------------------
Every slot ``a{L}.h{H}<q|k|v>``, ``m{L}``, ``logits`` gets its own copy of the residual stream
plus a zero ``eps`` requiring grad, so one backward pass gives g_v (gradient of the metric
logit[correct] - logit[incorrect] at the last token, after final soft-capping, w.r.t. slot v's
own input) for every slot. Query head h's k and v are computed from ITS OWN copy through the norm
and the k/v rows of its KV group, so its k slot reaches only head h's key.

Rotary: cos/sin are computed as HF computes its table (angles and cos/sin in float32 from the
``inv_freq`` buffer, then cast to the model dtype): a constant table, part of the model as it
runs. ``rotate_half`` on the first ``rotary_dim`` dims (GPT-NeoX: half of the head).

Sliding window w: key t' is allowed for query t iff t - w < t' <= t (HF's sliding overlay).

Components: ``input`` (what enters block 0), ``a{L}.h{H}`` (head result), ``m{L}`` (the MLP's
output, its output bias included, as the GPT-2 reference and engine do; for Gemma-2 after the
post-feedforward norm). Head result without post-norm: z_h = o_h W_O^h (no bias). With a
post-attention norm (Gemma-2): r_h = o_h W_O^h, r = sum_j r_j and z_h = r_h * (1 + w) /
sqrt(mean(r^2) + eps), the factor of THAT run; the clean components therefore sum to the clean
sublayer output exactly (the source's to the source's). Biases belong to no component and are
always kept: the attention output bias (GPT-2 c_proj, GPT-NeoX dense).

Crossing edges: the linearisation point
---------------------------------------
A crossing value is ``(rhat_h[t, t'] - r_h[t]) . g_r[t]`` where r_h = o_h W_O^h is the head's
result BEFORE any post-norm, rhat_h is recomputed explicitly at query t with exactly one change
(v: v_t' -> v*_t'; k: k_t' -> k*_t'; q: the score (t, t') computed with q*_t; model's scale,
soft-capping and mask), and g_r[t] = d metric / d r_h[t], the total derivative, including the
path through the post-norm's rms of the summed heads. Since r_h = o_h W_O^h, this equals
``(ohat_h - o_h) . (d metric / d o_h)``: the engine's form (difference and gradient at the head's
attention output before W_O). Without post-norm r_h = z_h and this is exactly DESIGN.md's
``(zhat - z_h) . g_out``. (Holding the clean post-norm factor fixed and dotting with the gradient
at z_h would drop the rms path and is NOT what we use.)

Precision (``hf_rounding``)
---------------------------
HF's RMSNorm (Llama, Mistral, Qwen2/3, Gemma-2) computes in float32 even in a float64 model, and
Gemma-2's eager attention takes the softmax in float32. ``run(..., hf_rounding=True)`` reproduces
exactly those roundings, to check the reference's structure against HF logits to 1e-10;
the scores are computed with ``hf_rounding=False``, i.e. in float64 throughout (the exact value
the engine approximates; the difference is measured by the tests).

Aggregation (``mean`` of crossing edges)
----------------------------------------
A crossing span pair's real edges are the (t, t') pairs ALLOWED by the head's mask (causal and
sliding window); ``mean`` divides by their number, ``max_abs`` looks at them only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

KINDS = ("q", "k", "v")


# ----------------------------------------------------------------------------------------------
# Per-family description
# ----------------------------------------------------------------------------------------------


@dataclass
class Norm:
    kind: str                 # "ln" | "rms" | "gemma"
    weight: torch.Tensor
    bias: torch.Tensor | None
    eps: float


@dataclass
class Layer:
    ln_attn: Norm                 # pre-attention norm (slots q/k/v)
    ln_mlp: Norm                  # pre-MLP norm (slot m{L})
    post_attn: Norm | None        # Gemma-2 norms on the sublayer outputs
    post_mlp: Norm | None
    q_norm: Norm | None           # Qwen3 per-head norms over the head dim (before rotary)
    k_norm: Norm | None
    Wq: list                      # per QUERY head: (d_model, d_head)
    bq: list
    Wk: list                      # per query head: its KV group's rows, (d_model, d_head)
    bk: list
    Wv: list
    bv: list
    Wo: list                      # per query head: (d_head, d_model)
    bo: torch.Tensor | None       # attention output bias (never a component)
    scale: float
    window: int | None
    mlp: dict


@dataclass
class Spec:
    family: str
    n_layers: int
    n_heads: int
    n_kv: int
    d_model: int
    d_head: int
    parallel: bool
    rotary_dim: int
    inv_freq: torch.Tensor | None
    attn_softcap: float | None
    final_softcap: float | None
    eager_softmax32: bool         # HF computes this model's softmax in float32 (hf_rounding)
    embed: dict
    layers: list
    final_norm: Norm
    unembed: torch.Tensor         # (vocab, d_model)
    unembed_bias: torch.Tensor | None
    dtype: torch.dtype
    hf_rounding: bool = False     # reproduce HF's float32 steps (see the module docstring)

    @property
    def group(self):
        return self.n_heads // self.n_kv


def _lin(W):
    """nn.Linear weight (out, in) -> matrix for x @ M."""
    return W.T


def _act(name):
    if name in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        c = math.sqrt(2.0 / math.pi)
        return lambda x: 0.5 * x * (1.0 + torch.tanh(c * (x + 0.044715 * x ** 3)))
    if name == "gelu":
        return lambda x: 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))
    if name == "silu":
        return lambda x: x * torch.sigmoid(x)
    raise ValueError(f"activation {name!r}")


def _windows(cfg, n_layers, model_type):
    win = getattr(cfg, "sliding_window", None)
    types = getattr(cfg, "layer_types", None)
    if types is not None:
        return [win if t == "sliding_attention" else None for t in types]
    if model_type == "mistral" and win is not None:
        return [win] * n_layers
    return [None] * n_layers


def describe(hf, hf_rounding=False) -> Spec:
    """The :class:`Spec` of an HF causal LM of one of the tiny families (config + weights).
    ``hf_rounding``: every forward of this spec reproduces HF's float32 steps."""
    cfg = hf.config
    mt = cfg.model_type
    with torch.no_grad():
        if mt == "gpt2":
            spec = _describe_gpt2(hf)
        elif mt == "gpt_neox":
            spec = _describe_neox(hf)
        elif mt in ("llama", "mistral", "qwen2", "qwen3", "gemma2"):
            spec = _describe_llama_like(hf)
        else:
            raise ValueError(f"no description for model_type {mt!r}")
    spec.hf_rounding = hf_rounding
    return spec


def _describe_gpt2(hf):
    cfg = hf.config
    tr = hf.transformer
    d, H = cfg.n_embd, cfg.n_head
    dh = d // H
    act = _act(cfg.activation_function)
    layers = []
    for L, blk in enumerate(tr.h):
        W, b = blk.attn.c_attn.weight, blk.attn.c_attn.bias       # Conv1D: x @ W + b
        cols = [slice(h * dh, (h + 1) * dh) for h in range(H)]
        s = 1.0
        if getattr(cfg, "scale_attn_weights", True):
            s = dh ** -0.5
        if getattr(cfg, "scale_attn_by_inverse_layer_idx", False):
            s = s / float(L + 1)
        eps = cfg.layer_norm_epsilon
        layers.append(Layer(
            ln_attn=Norm("ln", blk.ln_1.weight, blk.ln_1.bias, eps),
            ln_mlp=Norm("ln", blk.ln_2.weight, blk.ln_2.bias, eps),
            post_attn=None, post_mlp=None, q_norm=None, k_norm=None,
            Wq=[W[:, :d][:, c] for c in cols], bq=[b[:d][c] for c in cols],
            Wk=[W[:, d:2 * d][:, c] for c in cols], bk=[b[d:2 * d][c] for c in cols],
            Wv=[W[:, 2 * d:][:, c] for c in cols], bv=[b[2 * d:][c] for c in cols],
            Wo=[blk.attn.c_proj.weight[c, :] for c in cols], bo=blk.attn.c_proj.bias,
            scale=s, window=None,
            mlp=dict(kind="plain", W1=blk.mlp.c_fc.weight, b1=blk.mlp.c_fc.bias,
                     W2=blk.mlp.c_proj.weight, b2=blk.mlp.c_proj.bias, act=act)))
    return Spec(family="gpt2", n_layers=cfg.n_layer, n_heads=H, n_kv=H, d_model=d, d_head=dh,
                parallel=False, rotary_dim=0, inv_freq=None, attn_softcap=None,
                final_softcap=None, eager_softmax32=False,
                embed=dict(wte=tr.wte.weight, wpe=tr.wpe.weight, scale=None), layers=layers,
                final_norm=Norm("ln", tr.ln_f.weight, tr.ln_f.bias, cfg.layer_norm_epsilon),
                unembed=hf.lm_head.weight, unembed_bias=getattr(hf.lm_head, "bias", None),
                dtype=tr.wte.weight.dtype)


def _describe_neox(hf):
    cfg = hf.config
    m = hf.gpt_neox
    d, H = cfg.hidden_size, cfg.num_attention_heads
    dh = d // H
    inv_freq = m.rotary_emb.inv_freq.detach().clone()
    assert float(m.rotary_emb.attention_scaling) == 1.0
    rot = 2 * inv_freq.shape[0]
    assert rot == int(dh * cfg.rope_parameters.get("partial_rotary_factor", 1.0))
    act = _act(cfg.hidden_act)
    eps = cfg.layer_norm_eps
    layers = []
    for L, blk in enumerate(m.layers):
        att = blk.attention
        Wqkv, bqkv = att.query_key_value.weight, att.query_key_value.bias   # (3d, d): per head [q|k|v]
        rows = lambda h, j: slice(h * 3 * dh + j * dh, h * 3 * dh + (j + 1) * dh)  # noqa: E731
        bsel = (lambda h, j: bqkv[rows(h, j)]) if bqkv is not None else (lambda h, j: None)
        layers.append(Layer(
            ln_attn=Norm("ln", blk.input_layernorm.weight, blk.input_layernorm.bias, eps),
            ln_mlp=Norm("ln", blk.post_attention_layernorm.weight,
                        blk.post_attention_layernorm.bias, eps),
            post_attn=None, post_mlp=None, q_norm=None, k_norm=None,
            Wq=[_lin(Wqkv[rows(h, 0)]) for h in range(H)], bq=[bsel(h, 0) for h in range(H)],
            Wk=[_lin(Wqkv[rows(h, 1)]) for h in range(H)], bk=[bsel(h, 1) for h in range(H)],
            Wv=[_lin(Wqkv[rows(h, 2)]) for h in range(H)], bv=[bsel(h, 2) for h in range(H)],
            Wo=[att.dense.weight[:, h * dh:(h + 1) * dh].T for h in range(H)], bo=att.dense.bias,
            scale=dh ** -0.5, window=None,
            mlp=dict(kind="plain", W1=_lin(blk.mlp.dense_h_to_4h.weight),
                     b1=blk.mlp.dense_h_to_4h.bias, W2=_lin(blk.mlp.dense_4h_to_h.weight),
                     b2=blk.mlp.dense_4h_to_h.bias, act=act)))
    return Spec(family="gpt_neox", n_layers=cfg.num_hidden_layers, n_heads=H, n_kv=H, d_model=d,
                d_head=dh, parallel=bool(cfg.use_parallel_residual), rotary_dim=rot,
                inv_freq=inv_freq, attn_softcap=None, final_softcap=None, eager_softmax32=False,
                embed=dict(wte=m.embed_in.weight, wpe=None, scale=None), layers=layers,
                final_norm=Norm("ln", m.final_layer_norm.weight, m.final_layer_norm.bias, eps),
                unembed=hf.lm_head.weight, unembed_bias=getattr(hf.lm_head, "bias", None),
                dtype=m.embed_in.weight.dtype)


def _describe_llama_like(hf):
    cfg = hf.config
    mt = cfg.model_type
    m = hf.model
    d, H = cfg.hidden_size, cfg.num_attention_heads
    Hkv = cfg.num_key_value_heads
    dh = getattr(cfg, "head_dim", None) or d // H
    rep = H // Hkv
    gemma = mt == "gemma2"
    nk = "gemma" if gemma else "rms"
    eps = cfg.rms_norm_eps
    inv_freq = m.rotary_emb.inv_freq.detach().clone()
    assert float(m.rotary_emb.attention_scaling) == 1.0
    rot = 2 * inv_freq.shape[0]
    assert rot == dh
    act = _act(cfg.hidden_activation if gemma else cfg.hidden_act)
    windows = _windows(cfg, cfg.num_hidden_layers, mt)
    scale = cfg.query_pre_attn_scalar ** -0.5 if gemma else dh ** -0.5
    layers = []
    for L, blk in enumerate(m.layers):
        att = blk.self_attn
        Wq, Wk, Wv, Wo = att.q_proj.weight, att.k_proj.weight, att.v_proj.weight, att.o_proj.weight
        sl = lambda i: slice(i * dh, (i + 1) * dh)  # noqa: E731
        b = lambda lin, i: None if lin.bias is None else lin.bias[sl(i)]  # noqa: E731
        assert att.o_proj.bias is None or not gemma
        layers.append(Layer(
            ln_attn=Norm(nk, blk.input_layernorm.weight, None, eps),
            ln_mlp=Norm(nk, (blk.pre_feedforward_layernorm if gemma
                             else blk.post_attention_layernorm).weight, None, eps),
            post_attn=Norm(nk, blk.post_attention_layernorm.weight, None, eps) if gemma else None,
            post_mlp=Norm(nk, blk.post_feedforward_layernorm.weight, None, eps) if gemma else None,
            q_norm=Norm(nk, att.q_norm.weight, None, eps) if hasattr(att, "q_norm") else None,
            k_norm=Norm(nk, att.k_norm.weight, None, eps) if hasattr(att, "k_norm") else None,
            Wq=[_lin(Wq[sl(h)]) for h in range(H)], bq=[b(att.q_proj, h) for h in range(H)],
            Wk=[_lin(Wk[sl(h // rep)]) for h in range(H)],
            bk=[b(att.k_proj, h // rep) for h in range(H)],
            Wv=[_lin(Wv[sl(h // rep)]) for h in range(H)],
            bv=[b(att.v_proj, h // rep) for h in range(H)],
            Wo=[Wo[:, sl(h)].T for h in range(H)], bo=att.o_proj.bias,
            scale=scale, window=windows[L],
            mlp=dict(kind="gated", Wg=_lin(blk.mlp.gate_proj.weight),
                     Wu=_lin(blk.mlp.up_proj.weight), Wd=_lin(blk.mlp.down_proj.weight),
                     bg=blk.mlp.gate_proj.bias, bu=blk.mlp.up_proj.bias,
                     bd=blk.mlp.down_proj.bias, act=act)))
    dtype = m.embed_tokens.weight.dtype
    # HF keeps sqrt(d_model) in a float32 buffer (then moved to the model dtype)
    escale = torch.tensor(d ** 0.5, dtype=torch.float32).to(dtype) if gemma else None
    return Spec(family=mt, n_layers=cfg.num_hidden_layers, n_heads=H, n_kv=Hkv, d_model=d,
                d_head=dh, parallel=False, rotary_dim=rot, inv_freq=inv_freq,
                attn_softcap=getattr(cfg, "attn_logit_softcapping", None) if gemma else None,
                final_softcap=getattr(cfg, "final_logit_softcapping", None) if gemma else None,
                eager_softmax32=cfg._attn_implementation == "eager",
                embed=dict(wte=m.embed_tokens.weight, wpe=None, scale=escale), layers=layers,
                final_norm=Norm(nk, m.norm.weight, None, eps), unembed=hf.lm_head.weight,
                unembed_bias=getattr(hf.lm_head, "bias", None), dtype=dtype)


# ----------------------------------------------------------------------------------------------
# Graph names
# ----------------------------------------------------------------------------------------------


def head_name(layer, head):
    return f"a{layer}.h{head}"


def components(spec):
    out = ["input"]
    for L in range(spec.n_layers):
        out += [head_name(L, h) for h in range(spec.n_heads)] + [f"m{L}"]
    return out


def heads(spec):
    return [(L, h) for L in range(spec.n_layers) for h in range(spec.n_heads)]


def slots(spec):
    out = []
    for L in range(spec.n_layers):
        for h in range(spec.n_heads):
            out += [f"{head_name(L, h)}<{k}>" for k in KINDS]
        out.append(f"m{L}")
    return out + ["logits"]


def slot_layer(slot):
    if slot == "logits":
        return None
    if slot.startswith("m"):
        return int(slot[1:])
    return int(slot[1:slot.index(".")])


def upstream(spec, slot):
    """Components reaching ``slot`` through the residual stream (DESIGN.md section 3)."""
    if slot == "logits":
        return components(spec)
    L = slot_layer(slot)
    ups = ["input"]
    for l in range(L):
        ups += [head_name(l, h) for h in range(spec.n_heads)] + [f"m{l}"]
    if slot.startswith("m") and not spec.parallel:
        ups += [head_name(L, h) for h in range(spec.n_heads)]
    return ups


def residual_edges(spec):
    return [(u, v) for v in slots(spec) for u in upstream(spec, v)]


def kept_bias(spec, slot):
    """Sum of the attention output biases (never components) in ``slot``'s residual input."""
    if slot == "logits":
        n = spec.n_layers
    else:
        L = slot_layer(slot)
        n = L + 1 if (slot.startswith("m") and not spec.parallel) else L
    b = torch.zeros(spec.d_model, dtype=spec.dtype)
    for l in range(n):
        if spec.layers[l].bo is not None:
            b = b + spec.layers[l].bo
    return b


def allowed_mask(T, window):
    """[T, T] bool, True where key t' is visible from query t: t - window < t' <= t."""
    t = torch.arange(T)[:, None]
    tp = torch.arange(T)[None, :]
    ok = tp <= t
    if window is not None:
        ok = ok & (tp > t - window)
    return ok


# ----------------------------------------------------------------------------------------------
# Primitive maths
# ----------------------------------------------------------------------------------------------


def apply_norm(n: Norm, x, hf_rounding=False):
    if n.kind == "ln":
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        y = (x - mu) / torch.sqrt(var + n.eps) * n.weight
        return y + n.bias if n.bias is not None else y
    if hf_rounding:   # HF: normalise in float32, multiply by the weight as HF does
        x32 = x.to(torch.float32)
        y = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + n.eps)
        if n.kind == "gemma":
            return (y * (1.0 + n.weight.float())).to(x.dtype)
        return n.weight * y.to(x.dtype)
    y = x / torch.sqrt((x * x).mean(-1, keepdim=True) + n.eps)
    return y * (1.0 + n.weight) if n.kind == "gemma" else y * n.weight


def norm_factor(n: Norm, x):
    """Post-norm (RMS kind) as a per-position, per-dim factor: norm(x) == x * factor(x)."""
    assert n.kind in ("rms", "gemma") and n.bias is None
    w = (1.0 + n.weight) if n.kind == "gemma" else n.weight
    return w / torch.sqrt((x * x).mean(-1, keepdim=True) + n.eps)


def rotary_table(spec, T):
    """(cos, sin) [T, rotary_dim], computed as HF computes them (float32, then model dtype)."""
    pos = torch.arange(T)
    freqs = pos[:, None].float() * spec.inv_freq.to(torch.float32)[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(spec.dtype), emb.sin().to(spec.dtype)


def rotate(spec, x, cos, sin):
    if spec.rotary_dim == 0:
        return x
    r = spec.rotary_dim
    xr, xp = x[..., :r], x[..., r:]
    half = r // 2
    rh = torch.cat([-xr[..., half:], xr[..., :half]], dim=-1)
    return torch.cat([xr * cos + rh * sin, xp], dim=-1)


def softcap(x, cap):
    return x if cap is None else torch.tanh(x / cap) * cap


def pair_score(spec, layer, q, k, _break=None):
    """Attention score of one query vector and one key vector (scale, soft-capping)."""
    s = torch.dot(q, k) * spec.layers[layer].scale
    return s if _break == "no_softcap" else softcap(s, spec.attn_softcap)


def score_matrix(spec, layer, q, k, _break=None):
    s = (q @ k.T) * spec.layers[layer].scale
    return s if _break == "no_softcap" else softcap(s, spec.attn_softcap)


def mlp_forward(spec, layer, x):
    p = spec.layers[layer].mlp
    if p["kind"] == "plain":
        return p["act"](x @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]
    g = x @ p["Wg"]
    u = x @ p["Wu"]
    if p["bg"] is not None:
        g, u = g + p["bg"], u + p["bu"]
    out = (p["act"](g) * u) @ p["Wd"]
    return out + p["bd"] if p["bd"] is not None else out


def embed(spec, ids):
    e = spec.embed
    x = e["wte"][ids]
    if e["wpe"] is not None:
        x = x + e["wpe"][torch.arange(ids.shape[0])]
    if e["scale"] is not None:
        x = x * e["scale"]
    return x


def qkv_from(spec, L, h, kind, x_normed, cos, sin, hf_rounding=False):
    """Head h's q (k, v) from its own normed slot input; rotary on q/k; Qwen3 q/k norms."""
    lw = spec.layers[L]
    W, b = {"q": (lw.Wq, lw.bq), "k": (lw.Wk, lw.bk), "v": (lw.Wv, lw.bv)}[kind]
    y = x_normed @ W[h]
    if b[h] is not None:
        y = y + b[h]
    if kind == "v":
        return y
    n = lw.q_norm if kind == "q" else lw.k_norm
    if n is not None:
        y = apply_norm(n, y, hf_rounding)
    return rotate(spec, y, cos, sin)


# ----------------------------------------------------------------------------------------------
# Forward
# ----------------------------------------------------------------------------------------------


@dataclass
class Trace:
    ids: torch.Tensor
    logits: torch.Tensor = None                 # (T, vocab)
    z: dict = field(default_factory=dict)       # component -> (T, d_model)
    r: dict = field(default_factory=dict)       # (L, h) -> (T, d_model): o_h W_O^h before post-norm
    q: dict = field(default_factory=dict)       # (L, h) -> (T, d_head), after rotary / q_norm
    k: dict = field(default_factory=dict)
    v: dict = field(default_factory=dict)
    attn: dict = field(default_factory=dict)    # (L, h) -> (T, T)
    metric: float | None = None
    g: dict = field(default_factory=dict)       # slot -> (T, d_model)
    g_out: dict = field(default_factory=dict)   # (L, h) -> (T, d_model): d metric / d r_h


class _SlotCopies:
    """Each slot's own copy of the residual stream: plus a zero ``eps`` requiring grad (its
    gradient is g_v) and any ``slot_delta``; ``heads`` likewise for each head's r_h."""

    def __init__(self, T, d, dtype, want_grad, slot_delta, head_delta):
        self.T, self.d, self.dtype, self.want_grad = T, d, dtype, want_grad
        self.slot_delta, self.head_delta = slot_delta or {}, head_delta or {}
        self.eps, self.out_eps = {}, {}

    def _zero(self):
        return torch.zeros(self.T, self.d, dtype=self.dtype, requires_grad=self.want_grad)

    def slot(self, resid, slot):
        e = self.eps[slot] = self._zero()
        x = resid + e
        if slot in self.slot_delta:
            x = x + self.slot_delta[slot]
        return x

    def head(self, r, key):
        e = self.out_eps[key] = self._zero()
        r = r + e
        if key in self.head_delta:
            r = r + self.head_delta[key]
        return r


def _head_qkv(spec, L, h, resid, copies, shared, cos, sin, hf_rounding, _break):
    """Head h's q, k, v, each from its own slot copy (``"gqa_shared"``: k/v from one copy per
    KV group, kept in ``shared``)."""
    lw, name = spec.layers[L], head_name(L, h)
    qkv = {}
    for kind in KINDS:
        if _break == "gqa_shared" and kind != "q":
            gkey = (kind, h // spec.group)
            if gkey not in shared:
                xn = apply_norm(lw.ln_attn, copies.slot(resid, f"{name}<{kind}>"), hf_rounding)
                shared[gkey] = qkv_from(spec, L, h, kind, xn, cos, sin, hf_rounding)
            qkv[kind] = shared[gkey]
            continue
        xn = apply_norm(lw.ln_attn, copies.slot(resid, f"{name}<{kind}>"), hf_rounding)
        qkv[kind] = qkv_from(spec, L, h, kind, xn, cos, sin, hf_rounding)
    return qkv["q"], qkv["k"], qkv["v"]


def _attention_layer(spec, L, resid, copies, tr, cos, sin, hf_rounding, _break):
    """Layer L's attention: every head's r_h = softmax(scores) v W_O^h (recorded in ``tr``),
    then the components z_h and the sublayer's output (post-norm, output bias)."""
    lw, T, dtype = spec.layers[L], resid.shape[0], spec.dtype
    allowed = allowed_mask(T, None if _break == "no_window" else lw.window)
    rs, shared = [], {}
    for h in range(spec.n_heads):
        q, k, v = _head_qkv(spec, L, h, resid, copies, shared, cos, sin, hf_rounding, _break)
        scores = score_matrix(spec, L, q, k, _break).masked_fill(~allowed, float("-inf"))
        if hf_rounding and spec.eager_softmax32:
            A = torch.softmax(scores, dim=-1, dtype=torch.float32).to(dtype)
        else:
            A = torch.softmax(scores, dim=-1)
        r = copies.head((A @ v) @ lw.Wo[h], (L, h))
        tr.q[(L, h)], tr.k[(L, h)], tr.v[(L, h)] = q.detach(), k.detach(), v.detach()
        tr.attn[(L, h)] = A.detach()
        tr.r[(L, h)] = r.detach()
        rs.append(r)
    if lw.post_attn is not None:
        r_sum = sum(rs)
        f = norm_factor(lw.post_attn, r_sum)
        zs = [r * f for r in rs]
        attn_out = apply_norm(lw.post_attn, r_sum, True) if hf_rounding else sum(zs)
    else:
        zs = rs
        attn_out = sum(zs)
    for h in range(spec.n_heads):
        tr.z[head_name(L, h)] = zs[h].detach()
    return attn_out if lw.bo is None else attn_out + lw.bo


def _backward(spec, tr, metric, copies, _break):
    """``g`` per slot and ``g_out`` per head: one backward pass of ``metric``."""
    names = list(copies.eps)
    grads = torch.autograd.grad(metric, [copies.eps[s] for s in names]
                                + list(copies.out_eps.values()))
    tr.g = dict(zip(names, grads[:len(names)]))
    if _break == "gqa_shared":   # the group's shared copy stands for each of its heads
        for L in range(spec.n_layers):
            for h in range(spec.n_heads):
                lead = (h // spec.group) * spec.group
                for kind in ("k", "v"):
                    tr.g[f"{head_name(L, h)}<{kind}>"] = tr.g[f"{head_name(L, lead)}<{kind}>"]
    tr.g_out = dict(zip(copies.out_eps, grads[len(names):]))
    tr.metric = metric.item()


def run(spec, ids, correct=None, incorrect=None, slot_delta=None, head_delta=None,
        hf_rounding=None, _break=None, grad=True):
    """Forward of one prompt ``ids`` (1-D LongTensor). With ``correct``/``incorrect`` the metric
    is back-propagated (``g``, ``g_out`` filled; ``grad=False``: the metric only, no backward).
    ``slot_delta``: {slot: (T, d)} added to that
    slot's own input copy; ``head_delta``: {(L, h): (T, d)} added to r_h.

    ``hf_rounding``: None takes ``spec.hf_rounding``. With it, a post-norm's output joins the
    residual stream as HF rounds it, while the components z_h stay r_h times the exact factor.

    ``_break`` (only to show the checks can fail): ``"gqa_shared"`` (one k/v residual copy per KV
    group, shared by its heads), ``"no_window"``, ``"no_softcap"``."""
    if hf_rounding is None:
        hf_rounding = spec.hf_rounding
    T = ids.shape[0]
    want_grad = correct is not None and grad
    copies = _SlotCopies(T, spec.d_model, spec.dtype, want_grad, slot_delta, head_delta)
    tr = Trace(ids=ids)
    cos, sin = rotary_table(spec, T) if spec.rotary_dim else (None, None)
    with torch.set_grad_enabled(want_grad):
        x0 = embed(spec, ids)
        tr.z["input"] = x0.detach()
        resid = x0
        for L in range(spec.n_layers):
            lw = spec.layers[L]
            attn_out = _attention_layer(spec, L, resid, copies, tr, cos, sin, hf_rounding, _break)
            mlp_base = resid if spec.parallel else resid + attn_out
            mlp_in = apply_norm(lw.ln_mlp, copies.slot(mlp_base, f"m{L}"), hf_rounding)
            m = mlp_forward(spec, L, mlp_in)
            if lw.post_mlp is not None:
                m = apply_norm(lw.post_mlp, m, hf_rounding)
            tr.z[f"m{L}"] = m.detach()
            resid = resid + attn_out + m
        final = apply_norm(spec.final_norm, copies.slot(resid, "logits"), hf_rounding)
        logits = final @ spec.unembed.T
        if spec.unembed_bias is not None:
            logits = logits + spec.unembed_bias
        if _break != "no_softcap":
            logits = softcap(logits, spec.final_softcap)
        tr.logits = logits.detach()
        if correct is not None and not want_grad:
            tr.metric = (logits[-1, correct] - logits[-1, incorrect]).item()
        if want_grad:
            _backward(spec, tr, logits[-1, correct] - logits[-1, incorrect], copies, _break)
    return tr


# ----------------------------------------------------------------------------------------------
# Records, examples, ablation sources
# ----------------------------------------------------------------------------------------------


def encode(tok, text):
    """Token ids exactly as the tokenizer encodes the prompt (the word-level tiny tokenizer adds
    no special tokens)."""
    return torch.tensor(tok(text)["input_ids"], dtype=torch.long)


def answer_id(tok, word):
    ids = tok(word, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1, (word, ids)
    return ids[0]


def span_of_positions(record, T, schema):
    out = [None] * T
    for s in schema:
        a, b = record["spans"][s]
        for t in range(a, b):
            assert out[t] is None, "overlapping spans"
            out[t] = s
    assert all(x is not None for x in out), "spans must cover the prompt"
    return out


@dataclass
class Example:
    record: dict
    clean: Trace
    corrupted_ids: torch.Tensor
    span_at: list
    correct: int
    incorrect: int


def prepare(spec, tok, records, schema, _break=None):
    exs = []
    for r in records:
        ids, cids = encode(tok, r["clean"]), encode(tok, r["corrupted"])
        assert ids.shape == cids.shape
        c, i = answer_id(tok, r["correct"]), answer_id(tok, r["incorrect"])
        tr = run(spec, ids, c, i, _break=_break)
        exs.append(Example(r, tr, cids, span_of_positions(r, ids.shape[0], schema), c, i))
    return exs


@dataclass
class Source:
    """Per example: z*_u (component -> (T, d)), r* ((L, h) -> (T, d)) and q*/k*/v* per head."""
    z: dict
    q: dict
    k: dict
    v: dict


def ablation_sources(spec, examples, ablation, schema, _break=None):
    if ablation == "counterfactual":
        out = []
        for ex in examples:
            c = run(spec, ex.corrupted_ids, _break=_break)
            out.append(Source(c.z, c.q, c.k, c.v))
        return out
    if ablation == "zero":
        zero = lambda dct: {k: torch.zeros_like(x) for k, x in dct.items()}  # noqa: E731
        return [Source(zero(ex.clean.z), zero(ex.clean.q), zero(ex.clean.k), zero(ex.clean.v))
                for ex in examples]
    if ablation == "mean":
        def span_means(get):
            means = {}
            for key in get(examples[0].clean):
                means[key] = {}
                for s in schema:
                    total, count = None, 0
                    for ex in examples:
                        x = get(ex.clean)[key]
                        for t in range(x.shape[0]):
                            if ex.span_at[t] == s:
                                total = x[t].clone() if total is None else total + x[t]
                                count += 1
                    means[key][s] = None if count == 0 else total / count
            return means

        mz, mq, mk, mv = (span_means(lambda tr: tr.z), span_means(lambda tr: tr.q),
                          span_means(lambda tr: tr.k), span_means(lambda tr: tr.v))

        def per_pos(means, ex):
            return {key: torch.stack([means[key][ex.span_at[t]] for t in range(len(ex.span_at))])
                    for key in means}

        return [Source(per_pos(mz, ex), per_pos(mq, ex), per_pos(mk, ex), per_pos(mv, ex))
                for ex in examples]
    raise ValueError(ablation)


# ----------------------------------------------------------------------------------------------
# Per-example edge values
# ----------------------------------------------------------------------------------------------


def residual_values(spec, ex, src):
    """(u, v) -> (T,) tensor: (z*_u[t] - z_u[t]) . g_v[t]."""
    c = ex.clean
    out = {}
    for u, v in residual_edges(spec):
        # one dot product per position t (over d_model)
        out[(u, v)] = ((src.z[u] - c.z[u]) * c.g[v]).sum(-1).to(torch.float64)
    return out


def head_rows(spec, L, h, scores, values):
    """r_h at one query from a batch of variants: ``scores`` [n, K] (the visible keys' scores),
    ``values`` [n, K, d_head]; returns [n, d_model], one recomputed result per variant."""
    a = torch.softmax(scores, dim=-1)
    o = (a[:, :, None] * values).sum(1)
    return o @ spec.layers[L].Wo[h]


def crossing_values(spec, ex, src, _break=None):
    """((L, h), kind) -> (T, T), entry [t, t'] = (rhat[t, t'] - r_h[t]) . g_out[t] for every
    visible pair (causal and window); NaN elsewhere. rhat is recomputed explicitly: for each
    visible key t' one copy of query t's score row / value list with exactly one entry changed,
    then softmax, weighted sum and W_O^h (the copies for all t' of one query in one batch)."""
    c = ex.clean
    T = c.ids.shape[0]
    out = {}
    for (L, h) in heads(spec):
        window = None if _break == "no_window" else spec.layers[L].window
        allowed = allowed_mask(T, window)
        q, k, v = c.q[(L, h)], c.k[(L, h)], c.v[(L, h)]
        qs, ks, vs = src.q[(L, h)], src.k[(L, h)], src.v[(L, h)]
        g = c.g_out[(L, h)]
        vals = {kind: torch.full((T, T), float("nan"), dtype=torch.float64) for kind in KINDS}
        for t in range(T):
            keys = [j for j in range(T) if allowed[t, j]]
            n = len(keys)
            base = torch.stack([pair_score(spec, L, q[t], k[j], _break) for j in keys])   # [n]
            base_v = torch.stack([v[j] for j in keys])                                     # [n, dh]
            # the unchanged row by the same code path (equals r_h[t] up to rounding; under
            # hf_rounding HF's softmax may be float32, and the difference must not carry that)
            r_t = head_rows(spec, L, h, base[None], base_v[None])[0]
            # variant i: key keys[i] changed, everything else as in the clean row
            s_k, s_q = base.repeat(n, 1), base.repeat(n, 1)
            v_mod = base_v.repeat(n, 1, 1)
            for i, tp in enumerate(keys):
                s_k[i, i] = pair_score(spec, L, q[t], ks[tp], _break)
                s_q[i, i] = pair_score(spec, L, qs[t], k[tp], _break)
                v_mod[i, i] = vs[tp]
            rhat = {"q": head_rows(spec, L, h, s_q, base_v.expand(n, n, -1)),
                    "k": head_rows(spec, L, h, s_k, base_v.expand(n, n, -1)),
                    "v": head_rows(spec, L, h, base.expand(n, n), v_mod)}
            for kind in KINDS:
                d = ((rhat[kind] - r_t) * g[t]).sum(-1)            # one dot product per t'
                vals[kind][t, keys] = d
        for kind in KINDS:
            out[((L, h), kind)] = vals[kind]
    return out


# ----------------------------------------------------------------------------------------------
# Aggregation
# ----------------------------------------------------------------------------------------------


def aggregate(values, aggregation):
    if len(values) == 0:
        return 0.0
    if aggregation == "sum":
        return float(sum(values))
    if aggregation == "mean":
        return float(sum(values)) / len(values)
    if aggregation == "max_abs":
        best = values[0]
        for x in values[1:]:
            if abs(x) > abs(best):
                best = x
        return float(best)
    raise ValueError(aggregation)


def schema_pairs(schema):
    """(key span, query span), key span not after the query span."""
    return [(schema[i], schema[j]) for j in range(len(schema)) for i in range(j + 1)]


def brute_force_scores(spec, tok, records, schema, ablation="counterfactual",
                       aggregations=("sum",), method="peap", examples=None, sources=None,
                       _break=None):
    """{aggregation: {(kind, src, dst, src_span, dst_span): score}} averaged over examples.
    ``method="eap"``: residual edges over one span "all" (same ablation source as PEAP).
    ``_break``: as for `run`, or ``"causal_pair_counts"`` (crossing ``mean`` divided by the
    causal pair count, ignoring the window; only to show that the difference is visible)."""
    fwd_break = None if _break == "causal_pair_counts" else _break
    if examples is None:
        examples = prepare(spec, tok, records, schema, _break=fwd_break)
    if sources is None:
        sources = ablation_sources(spec, examples, ablation, schema, _break=fwd_break)
    if method == "eap":
        examples = [Example(dict(ex.record, spans={"all": [0, len(ex.span_at)]}), ex.clean,
                            ex.corrupted_ids, ["all"] * len(ex.span_at), ex.correct,
                            ex.incorrect) for ex in examples]
        schema = ["all"]
    n = len(examples)
    results = {agg: {} for agg in aggregations}

    def add(agg, key, value):
        results[agg][key] = results[agg].get(key, 0.0) + value / n

    for ex, src in zip(examples, sources):
        for (u, v), vals in residual_values(spec, ex, src).items():
            for s in schema:
                a, b = ex.record["spans"][s]
                reals = [vals[t].item() for t in range(a, b)]
                for agg in aggregations:
                    add(agg, ("resid", u, v, s, s), aggregate(reals, agg))
        if method == "eap":
            continue
        for ((L, h), kind), mat in crossing_values(spec, ex, src, fwd_break).items():
            name = head_name(L, h)
            for sk, sq in schema_pairs(schema):
                ka, kb = ex.record["spans"][sk]
                qa, qb = ex.record["spans"][sq]
                reals = [mat[t, tp].item() for t in range(qa, qb) for tp in range(ka, kb)
                         if not math.isnan(mat[t, tp].item())]
                if _break == "causal_pair_counts":   # window-excluded pairs counted as zeros
                    reals += [0.0 for t in range(qa, qb) for tp in range(ka, kb)
                              if tp <= t and math.isnan(mat[t, tp].item())]
                for agg in aggregations:
                    add(agg, (kind, name, name, sk, sq), aggregate(reals, agg))
    return results


def row_count(spec, n_spans, method="peap"):
    n_resid = len(residual_edges(spec))
    if method == "eap":
        return n_resid
    return n_resid * n_spans + spec.n_layers * spec.n_heads * 3 * (n_spans * (n_spans + 1) // 2)


# ----------------------------------------------------------------------------------------------
# Circuit evaluation (DESIGN.md section 5)
# ----------------------------------------------------------------------------------------------


def all_keys(spec, schema):
    keys = [("resid", u, v, s, s) for u, v in residual_edges(spec) for s in schema]
    for (L, h) in heads(spec):
        name = head_name(L, h)
        keys += [(kind, name, name, sk, sq) for kind in KINDS for sk, sq in schema_pairs(schema)]
    return keys


def _circuit_slot_input(spec, slot, z, src, span_at, circuit, _break):
    """Slot ``slot``'s rebuilt input: the kept biases plus, per position t and upstream u, this
    run's z_u[t] if (u -> slot, span(t)) is in the circuit, else z*_u[t]."""
    T, d = len(span_at), spec.d_model
    bias = kept_bias(spec, slot)
    if _break == "drop_bias":
        bias = torch.zeros_like(bias)
    x = bias.expand(T, d).clone()
    for u in upstream(spec, slot):
        inside_t = torch.tensor([("resid", u, slot, s, s) in circuit for s in span_at])
        x = x + torch.where(inside_t[:, None], z[u], src.z[u])
    return x


def _crossing_in(circuit, span_at, kind, name, t, tp, _break):
    """Whether head ``name`` at query t uses this run's ``kind`` for key t' (the crossing row
    (kind, span(t'), span(t)) is in the circuit)."""
    if _break == "crossing_all_in":
        return True
    if _break == "qk_swapped":
        kind = {"q": "k", "k": "q"}.get(kind, kind)
    key_span, query_span = span_at[tp], span_at[t]
    if _break == "crossing_swapped":
        key_span, query_span = query_span, key_span
    return (kind, name, name, key_span, query_span) in circuit


def _circuit_head(spec, L, h, q, k, v, src, span_at, circuit, allowed, _break):
    """(T, d) head h's r_h: at each query t, attention over the visible keys with this run's or
    the source's q_t / k_t' / v_t' per crossing row."""
    lw, name, T = spec.layers[L], head_name(L, h), len(span_at)
    qs, ks, vs = src.q[(L, h)], src.k[(L, h)], src.v[(L, h)]
    r = torch.zeros(T, spec.d_model, dtype=spec.dtype)
    for t in range(T):
        keys = [tp for tp in range(T) if allowed[t, tp]]
        # per visible key t': this run's q_t / k_t' / v_t' if that crossing row is in
        use = {kind: torch.tensor([_crossing_in(circuit, span_at, kind, name, t, tp, _break)
                                   for tp in keys])[:, None]
               for kind in KINDS}
        qq = torch.where(use["q"], q[t], qs[t])                  # [n, dh]
        kk = torch.where(use["k"], k[keys], ks[keys])
        vv = torch.where(use["v"], v[keys], vs[keys])
        scores = (qq * kk).sum(-1) * lw.scale                    # one dot per pair
        a = torch.softmax(softcap(scores, spec.attn_softcap), dim=0)
        r[t] = (a[:, None] * vv).sum(0) @ lw.Wo[h]
    return r


@torch.no_grad()
def run_circuit(spec, ids, span_at, circuit, src, _break=None):
    """(T, vocab) logits of the circuit run of one example.

    Slot v at t receives z_u[t] of THIS run for every (u -> v, span(t)) in the circuit and
    z*_u[t] otherwise, plus the always-kept attention output biases. Head h at query t and
    visible key t' uses this run's q_t / k_t' / v_t' (each from its own rebuilt slot input) when
    the crossing row of that kind (span(t'), span(t)) is in the circuit, else q*_t / k*_t' / v*_t'.
    Post-norms: every head's z_h = r_h times the post-norm factor of THIS run's summed r.

    ``_break``: ``"crossing_all_in"`` (crossing rows ignored), ``"crossing_swapped"`` (crossing
    rows looked up with (query span, key span) swapped), ``"qk_swapped"`` (the k rows used for q
    and the q rows for k), ``"drop_bias"`` (attention output biases forgotten), ``"no_window"``."""
    T = ids.shape[0]
    hf = spec.hf_rounding
    circuit = set(circuit)
    cos, sin = rotary_table(spec, T) if spec.rotary_dim else (None, None)
    z = {"input": embed(spec, ids)}

    def slot_input(slot):
        return _circuit_slot_input(spec, slot, z, src, span_at, circuit, _break)

    for L in range(spec.n_layers):
        lw = spec.layers[L]
        allowed = allowed_mask(T, None if _break == "no_window" else lw.window)
        rs = []
        for h in range(spec.n_heads):
            name = head_name(L, h)
            q, k, v = (qkv_from(spec, L, h, kind,
                                apply_norm(lw.ln_attn, slot_input(f"{name}<{kind}>"), hf),
                                cos, sin, hf)
                       for kind in KINDS)
            rs.append(_circuit_head(spec, L, h, q, k, v, src, span_at, circuit, allowed, _break))
        f = None if lw.post_attn is None else norm_factor(lw.post_attn, sum(rs))
        for h in range(spec.n_heads):
            z[head_name(L, h)] = rs[h] if f is None else rs[h] * f
        m = mlp_forward(spec, L, apply_norm(lw.ln_mlp, slot_input(f"m{L}"), hf))
        if lw.post_mlp is not None:
            m = apply_norm(lw.post_mlp, m, hf)
        z[f"m{L}"] = m
    final = apply_norm(spec.final_norm, slot_input("logits"), hf)
    logits = final @ spec.unembed.T
    if spec.unembed_bias is not None:
        logits = logits + spec.unembed_bias
    return softcap(logits, spec.final_softcap)


def run_dataset(spec, examples, sources, circuit, _break=None):
    """(per-example metric [N], last-token logits [N, vocab]) of the circuit run."""
    metrics, lasts = [], []
    for ex, src in zip(examples, sources):
        logits = run_circuit(spec, ex.clean.ids, ex.span_at, circuit, src, _break=_break)
        metrics.append((logits[-1, ex.correct] - logits[-1, ex.incorrect]).item())
        lasts.append(logits[-1])
    return torch.tensor(metrics, dtype=torch.float64), torch.stack(lasts)
