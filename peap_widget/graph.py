"""The computation graph's nodes, slots and edges, as index arithmetic over two dense axes.

Like EAP-IG's graph, a whole graph is two axes: *forward nodes* (what writes to the residual
stream: ``input``, ``a{L}.h{H}``, ``m{L}``) and *backward slots* (what reads from it:
``a{L}.h{H}<q|k|v>``, ``m{L}``, ``logits``). A residual edge is a (forward node, backward slot)
pair with the node upstream of the slot; scores live in dense ``[..., n_forward, n_backward]``
arrays with `Graph.edge_mask` marking the real edges.

Upstream of a slot in layer L: ``input``, every head and MLP of layers < L, and (sequential
blocks) the heads of layer L for ``m{L}``. Forward nodes are ordered so that the upstream set of
every slot is a prefix of the forward axis (`Graph.n_upstream`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cached_property

import numpy as np

QKV = ("q", "k", "v")


@dataclass(frozen=True)
class GraphConfig:
    n_layers: int
    n_heads: int
    d_model: int
    parallel_attn_mlp: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


class Graph:
    """Names and indices of one architecture's graph (no positions; see `edge_table`)."""

    def __init__(self, cfg: GraphConfig):
        self.cfg = cfg
        self.L, self.H = cfg.n_layers, cfg.n_heads

    # forward axis: input, then per layer its heads, then its MLP
    @property
    def n_forward(self) -> int:
        return 1 + self.L * (self.H + 1)

    def head_node(self, layer: int, head: int) -> int:
        return 1 + layer * (self.H + 1) + head

    def mlp_node(self, layer: int) -> int:
        return 1 + layer * (self.H + 1) + self.H

    # backward axis: per layer q of all heads, k of all heads, v of all heads, MLP; then logits
    @property
    def n_backward(self) -> int:
        return self.L * (3 * self.H + 1) + 1

    def qkv_slot(self, layer: int, kind: int, head: int) -> int:
        return layer * (3 * self.H + 1) + kind * self.H + head

    def mlp_slot(self, layer: int) -> int:
        return layer * (3 * self.H + 1) + 3 * self.H

    @property
    def logits_slot(self) -> int:
        return self.n_backward - 1

    def attn_upstream(self, layer: int) -> int:
        """How many forward nodes (a prefix) feed the q/k/v slots of ``layer``."""
        return 1 + layer * (self.H + 1)

    def mlp_upstream(self, layer: int) -> int:
        return self.attn_upstream(layer) + (0 if self.cfg.parallel_attn_mlp else self.H)

    @cached_property
    def forward_names(self) -> list[str]:
        names = ["input"]
        for layer in range(self.L):
            names += [f"a{layer}.h{h}" for h in range(self.H)] + [f"m{layer}"]
        return names

    @cached_property
    def backward_names(self) -> list[str]:
        names = []
        for layer in range(self.L):
            for kind in QKV:
                names += [f"a{layer}.h{h}<{kind}>" for h in range(self.H)]
            names.append(f"m{layer}")
        return names + ["logits"]

    @cached_property
    def head_names(self) -> list[str]:
        """Head names in (layer, head) order, matching ``[L, H]`` arrays flattened."""
        return [f"a{layer}.h{h}" for layer in range(self.L) for h in range(self.H)]

    @cached_property
    def n_upstream(self) -> np.ndarray:
        """[n_backward] length of the forward prefix upstream of each slot."""
        n = np.empty(self.n_backward, dtype=np.int64)
        for layer in range(self.L):
            base = layer * (3 * self.H + 1)
            n[base: base + 3 * self.H] = self.attn_upstream(layer)
            n[self.mlp_slot(layer)] = self.mlp_upstream(layer)
        n[-1] = self.n_forward
        return n

    @cached_property
    def edge_mask(self) -> np.ndarray:
        """[n_forward, n_backward] bool: True where (node -> slot) is a real edge."""
        return np.arange(self.n_forward)[:, None] < self.n_upstream[None, :]

    @property
    def n_edges(self) -> int:
        """Residual edges of the graph without positions (EAP-IG's count; 32,491 for GPT-2 small)."""
        return int(self.edge_mask.sum())


def edge_table(graph: Graph, spans: list[str], resid: np.ndarray | None, cross: np.ndarray | None):
    """The edge table of DESIGN.md section 3 from dense score arrays.

    ``resid``: [S, n_forward, n_backward] (entries off `Graph.edge_mask` ignored).
    ``cross``: [3, L, H, S_query, S_key] for kinds q, k, v (only key span <= query span used).
    """
    import pandas as pd

    parts = []
    if resid is not None:
        src_i, dst_i = np.nonzero(graph.edge_mask)
        S = len(spans)
        fwd = np.asarray(graph.forward_names, dtype=object)
        bwd = np.asarray(graph.backward_names, dtype=object)
        span_col = np.repeat(np.asarray(spans, dtype=object), len(src_i))
        parts.append(pd.DataFrame({
            "kind": "resid",
            "src": np.tile(fwd[src_i], S),
            "dst": np.tile(bwd[dst_i], S),
            "src_span": span_col,
            "dst_span": span_col,
            "score": np.asarray(resid)[:, src_i, dst_i].reshape(-1),
        }))
    if cross is not None:
        S = len(spans)
        qs, ks = np.tril_indices(S)  # key span never after the query span
        heads = np.asarray(graph.head_names, dtype=object)
        n_pairs, n_heads = len(qs), len(heads)
        c = np.asarray(cross).reshape(3, n_heads, S, S)[:, :, qs, ks]  # [3, LH, pairs]
        span_arr = np.asarray(spans, dtype=object)
        head_col = np.repeat(heads, n_pairs)
        parts.append(pd.DataFrame({
            "kind": np.repeat(np.asarray(QKV, dtype=object), n_heads * n_pairs),
            "src": np.tile(head_col, 3),
            "dst": np.tile(head_col, 3),
            "src_span": np.tile(span_arr[ks], 3 * n_heads),
            "dst_span": np.tile(span_arr[qs], 3 * n_heads),
            "score": c.reshape(-1),
        }))
    cols = ["kind", "src", "dst", "src_span", "dst_span", "score"]
    if not parts:
        return pd.DataFrame({c: [] for c in cols})
    return pd.concat(parts, ignore_index=True)[cols]
