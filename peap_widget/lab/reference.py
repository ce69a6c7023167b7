"""An independent reference for the lab checks: GPT-2 written out node by node in plain PyTorch.

The checks must not recompute an answer with the code path the student called, so this module
rebuilds what the labs measure from the model's weights alone, one example at a time, with
nothing from the attribution or evaluation engine:

* every component's output z_u[t] (``input``, each head ``a{L}.h{H}`` after its slice of W_O,
  each MLP ``m{L}``) and every slot's own input (each head's q, k and v input, each MLP's input,
  the logits' input) as explicit sums of upstream outputs plus the attention biases;
* removing residual edges (u -> v) at chosen positions (a weight per position: 1 replaces z_u[t]
  by the counterfactual z*_u[t] in v's input only, 0.5 goes half way);
* EAP scores, sum_t (z*_u[t] - z_u[t]) . d m / d(v's input at t), with autograd on this forward.

Only GPT-2 (``GPT2LMHeadModel``) is written out; crossing (q/k/v) edges are not.

Example:
    >>> model = pw.models.load("toy-ioi")                # GPT-2's architecture, trained on IOI
    >>> ds = pw.tasks.get("ioi", n=4, seed=0).dataset(model)
    >>> ref = Reference(model)
    >>> patched = ref.metric(ds, remove={("a3.h2", "logits"): 1.0})   # patched mean logit diff
    >>> ref.eap_scores(ds, [("a3.h2", "logits"), ("m0", "a3.h2<k>")]).shape
    (2,)
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import PeapError
from ..graph.names import QKV, head_name, mlp_name, parse_component, slot_name, split_node


def _gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


_ACT = {"gelu_new": _gelu_new, "gelu": torch.nn.functional.gelu, "relu": torch.relu,
        "gelu_pytorch_tanh": _gelu_new}


class Reference:
    """GPT-2 as an explicit graph of components and slots (see the module docstring)."""

    def __init__(self, model):
        hf = getattr(model, "hf", model)
        if type(hf).__name__ != "GPT2LMHeadModel":
            raise TypeError(f"the lab reference writes out GPT-2 only, not {type(hf).__name__}")
        c = hf.config
        self.L, self.H, self.D = c.n_layer, c.n_head, c.n_embd
        self.dh = self.D // self.H
        self.eps = c.layer_norm_epsilon
        self.scale = (1 / math.sqrt(self.dh)) if c.scale_attn_weights else 1.0
        self.inv_layer = bool(c.scale_attn_by_inverse_layer_idx)
        self.act = _ACT[c.activation_function]
        p = {k: v.detach().to(torch.float64) for k, v in hf.state_dict().items()}
        self.p = p
        self.W_U = p["lm_head.weight"] if "lm_head.weight" in p else p["transformer.wte.weight"]
        self._plain: dict = {}

    # --- names -----------------------------------------------------------------------------

    def upstream(self, slot: str) -> list[str]:
        """Components feeding ``slot`` (docs/numbers.md, sequential GPT-2 blocks)."""
        try:
            kind, layer, _ = parse_component(slot)
        except PeapError:
            kind = layer = None
        if kind == "logits":
            layers, with_heads_of = self.L, None
        elif kind in QKV:
            layers, with_heads_of = layer, None
        elif kind == "mlp":
            layers, with_heads_of = layer, layer
        else:
            raise KeyError(f"unknown slot {slot!r}")
        names = ["input"]
        for layer in range(layers):
            names += [head_name(layer, h) for h in range(self.H)] + [mlp_name(layer)]
        if with_heads_of is not None:
            names += [head_name(with_heads_of, h) for h in range(self.H)]
        return names

    def edges(self) -> list[tuple[str, str]]:
        """Every residual edge (component, slot) of the graph, without positions."""
        slots = []
        for layer in range(self.L):
            slots += [slot_name(layer, h, c) for c in QKV for h in range(self.H)] + [mlp_name(layer)]
        slots.append("logits")
        return [(u, v) for v in slots for u in self.upstream(v)]

    # --- the forward pass --------------------------------------------------------------------

    def _ln(self, x, prefix):
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        return (x - mu) / torch.sqrt(var + self.eps) * self.p[prefix + ".weight"] + self.p[prefix + ".bias"]

    def plain(self, ids) -> dict:
        """`forward` without patches, cached per prompt (no gradients)."""
        key = tuple(int(i) for i in torch.as_tensor(ids).reshape(-1).tolist())
        if key not in self._plain:
            with torch.no_grad():
                self._plain[key] = self.forward(key)
        return self._plain[key]

    def forward(self, ids, remove=None, source=None, probes=None) -> dict:
        """One example's run. ``remove``: {(u, v): weight [T] or float}, each replacing
        weight * (z*_u - z_u) into slot v (needs ``source``, the counterfactual run's ``z``).
        ``probes``: {slot: zero tensor [T, D] requiring grad} added to that slot's input.
        Returns ``{"z": {node: [T, D]}, "logits": [T, V]}``.

        Slot v's input is written as the sum of its upstream outputs: ``acc`` below is that sum
        (plus the attention output biases, which are no node) for the slots of one layer; each
        slot then adds its own corrections. Each head's q, k and v come from their own slot."""
        p, D, H, dh = self.p, self.D, self.H, self.dh
        ids = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
        T = ids.shape[0]
        probes = probes or {}
        corrections: dict[str, list] = {}
        for (u, v), w in (remove or {}).items():
            w = torch.as_tensor(w, dtype=torch.float64)
            corrections.setdefault(v, []).append((u, w[:, None] if w.ndim == 1 else w))
        z: dict[str, torch.Tensor] = {"input": p["transformer.wte.weight"][ids] + p["transformer.wpe.weight"][:T]}

        def own(slot, x):
            """Slot ``slot``'s own input: the shared sum ``x`` plus its corrections and probe."""
            for u, w in corrections.get(slot, ()):
                if u not in z:
                    raise KeyError(f"{u} is not upstream of {slot}")
                x = x + w * (source[u] - z[u])
            return x + probes[slot] if slot in probes else x

        acc = z["input"]                                    # sum of every output so far
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        for layer in range(self.L):
            pre = f"transformer.h.{layer}."
            W = p[pre + "attn.c_attn.weight"].reshape(D, 3, H, dh)
            b = p[pre + "attn.c_attn.bias"].reshape(3, H, dh)
            slots = torch.stack([torch.stack([own(slot_name(layer, h, c), acc) for h in range(H)])
                                 for c in QKV])             # [3, H, T, D]
            normed = self._ln(slots, pre + "ln_1")
            qkv = torch.einsum("chtD,Dchd->chtd", normed, W) + b[:, :, None, :]
            q, k, v = qkv                                   # [H, T, dh] each
            scores = (q @ k.transpose(-1, -2)) * self.scale / (layer + 1 if self.inv_layer else 1)
            A = torch.softmax(scores.masked_fill(~causal, float("-inf")), -1)
            Wo = p[pre + "attn.c_proj.weight"].reshape(H, dh, D)
            heads = torch.einsum("htd,hdD->htD", A @ v, Wo)  # each head's output z
            for h in range(H):
                z[head_name(layer, h)] = heads[h]
            acc = acc + heads.sum(0) + p[pre + "attn.c_proj.bias"]
            x = self._ln(own(mlp_name(layer), acc), pre + "ln_2")
            hid = self.act(x @ p[pre + "mlp.c_fc.weight"] + p[pre + "mlp.c_fc.bias"])
            z[mlp_name(layer)] = hid @ p[pre + "mlp.c_proj.weight"] + p[pre + "mlp.c_proj.bias"]
            acc = acc + z[mlp_name(layer)]
        x = self._ln(own("logits", acc), "transformer.ln_f")
        return {"z": z, "logits": x @ self.W_U.T}

    # --- measurements over a dataset -----------------------------------------------------------

    @staticmethod
    def _weights(ex, spans, where):
        """Per-position removal weights of one example: ``where`` is a float (every position)
        or ``{span name: weight}``."""
        T = len(ex.clean_ids)
        if not isinstance(where, dict):
            return torch.full((T,), float(where), dtype=torch.float64)
        w = torch.zeros(T, dtype=torch.float64)
        for name, value in where.items():
            s, e = ex.spans[spans.index(name)]
            w[s:e] = float(value)
        return w

    def per_example(self, ds, remove=None) -> np.ndarray:
        """logit[correct] - logit[incorrect] at the last token, per example, with ``remove``:
        {(u, v): weight or {span: weight}} (weights of the counterfactual replacing z_u in v)."""
        spans = list(ds.schema.spans)
        out = []
        with torch.no_grad():
            for ex in ds.examples:
                rm, src = None, None
                if remove:
                    src = self.plain(ex.corrupted_ids)["z"]
                    rm = {e: self._weights(ex, spans, w) for e, w in remove.items()}
                    logits = self.forward(ex.clean_ids, rm, src)["logits"][-1]
                else:
                    logits = self.plain(ex.clean_ids)["logits"][-1]
                out.append(float(logits[ex.correct_id] - logits[ex.incorrect_id]))
        return np.asarray(out)

    def metric(self, ds, remove=None, corrupted: bool = False) -> float:
        """Mean logit difference (of the corrupted prompts with ``corrupted``)."""
        if corrupted:
            with torch.no_grad():
                vals = []
                for ex in ds.examples:
                    logits = self.plain(ex.corrupted_ids)["logits"][-1]
                    vals.append(float(logits[ex.correct_id] - logits[ex.incorrect_id]))
            return float(np.mean(vals))
        return float(self.per_example(ds, remove).mean())

    def eap_scores(self, ds, edges, span: str | None = None) -> np.ndarray:
        """EAP scores of residual ``edges`` [(u, v)], mean over examples (within ``span`` only,
        or over every position when None): sum_t (z*_u[t] - z_u[t]) . g_v[t]."""
        spans = list(ds.schema.spans)
        slots = sorted({v for _, v in edges})
        total = np.zeros(len(edges))
        for ex in ds.examples:
            T = len(ex.clean_ids)
            src = self.plain(ex.corrupted_ids)["z"]
            probes = {s: torch.zeros(T, self.D, dtype=torch.float64, requires_grad=True) for s in slots}
            run = self.forward(ex.clean_ids, probes=probes)
            logits = run["logits"][-1]
            m = logits[ex.correct_id] - logits[ex.incorrect_id]
            grads = dict(zip(slots, torch.autograd.grad(m, [probes[s] for s in slots])))
            w = self._weights(ex, spans, 1.0 if span is None else {span: 1.0})
            for i, (u, v) in enumerate(edges):
                d = (src[u] - run["z"][u].detach()) * w[:, None]
                total[i] += float((d * grads[v]).sum())
        return total / len(ds)

    def attention(self, ids, layer: int, head: int) -> np.ndarray:
        """[T, T] attention pattern of one head on a clean run."""
        p, D, dh = self.p, self.D, self.dh
        with torch.no_grad():
            ids = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
            T = ids.shape[0]
            x = p["transformer.wte.weight"][ids] + p["transformer.wpe.weight"][:T]
            causal = torch.ones(T, T, dtype=torch.bool).tril()
            for layer_i in range(layer + 1):
                pre = f"transformer.h.{layer_i}."
                n = self._ln(x, pre + "ln_1")
                qkv = n @ p[pre + "attn.c_attn.weight"] + p[pre + "attn.c_attn.bias"]
                q, k, v = (qkv[:, c * D:(c + 1) * D].reshape(T, self.H, dh).transpose(0, 1) for c in range(3))
                scores = (q @ k.transpose(-1, -2)) * self.scale / (layer_i + 1 if self.inv_layer else 1)
                A = torch.softmax(scores.masked_fill(~causal, float("-inf")), -1)
                if layer_i == layer:
                    return A[head].numpy()
                o = (A @ v).transpose(0, 1).reshape(T, D)
                x = x + o @ p[pre + "attn.c_proj.weight"] + p[pre + "attn.c_proj.bias"]
                n2 = self._ln(x, pre + "ln_2")
                x = x + self.act(n2 @ p[pre + "mlp.c_fc.weight"] + p[pre + "mlp.c_fc.bias"]) \
                    @ p[pre + "mlp.c_proj.weight"] + p[pre + "mlp.c_proj.bias"]
        raise AssertionError("unreachable")


def parse_edge(name: str) -> tuple[str, str, str | None]:
    """``"a3.h2->logits@to"`` -> ("a3.h2", "logits", "to"); position-free names (``@all`` or no
    ``@``) give span None. Crossing-edge names raise ValueError."""
    text = str(name).strip()
    edge, span = split_node(text)
    if "->" not in edge and "->" in (span or ""):  # a1.h2<k>@S1->a1.h2@S2: the source has a span
        raise ValueError(f"{name!r} is a crossing edge; the reference handles residual edges only")
    if "->" not in edge or "[" in text:
        raise ValueError(f"{name!r} is not a residual edge name like 'a3.h2->logits' or "
                         "'m0->a1.h2<q>@S2'")
    u, v = (s.strip() for s in edge.split("->", 1))
    return u, v, (None if span in (None, "all") else span)
