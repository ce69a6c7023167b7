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


class EdgeSpace:
    """Every edge of a graph over ``spans``, as integer coordinates of edge-table rows.

    Residual rows come first, span by span, each span listing `Graph.edge_mask`'s edges in
    row-major (forward node, backward slot) order: ``span``, ``fwd``, ``bwd``. Crossing rows
    follow (when ``crossing``), kind by kind (q, k, v), head by head in (layer, head) order, then
    (query span, key span) pairs with key <= query in `numpy.tril_indices` order: ``kind``,
    ``layer``, ``head``, ``qspan``, ``kspan``.

    It also names the positional nodes and gives each row its child and parent nodes:

    - ``F(u, s)``: forward node u at span s (``a3.h4@S2``, ``m0@IO``, ``input@END``);
    - ``SLOT(h, c, s)``: head h's q/k/v input at span s (``a3.h4<k>@S1``);
    - ``LOGITS(s)``: the logits at span s; the circuit's root is the one at the last span.

    A residual row (u -> v, s) goes from F(u, s) to v's node at s (``SLOT`` for a q/k/v slot, F of
    the MLP, or LOGITS; without crossing edges a q/k/v slot's row goes to F of the head). A crossing row of head h (kind c, key span s_k, query span s_q) goes from
    SLOT(h, c, s_k) (for k, v) or SLOT(h, q, s_q) (for q) to F(h, s_q).
    """

    def __init__(self, graph: Graph, spans: list[str], crossing: bool):
        self.graph, self.spans, self.crossing = graph, list(spans), crossing
        S = self.n_spans = len(spans)
        fwd, bwd = np.nonzero(graph.edge_mask)
        self.span = np.repeat(np.arange(S), len(fwd))
        self.fwd = np.tile(fwd, S)
        self.bwd = np.tile(bwd, S)
        self.n_resid = len(self.fwd)
        if crossing:
            qs, ks = np.tril_indices(S)
            n_heads, n_pairs = graph.L * graph.H, len(qs)
            head = np.tile(np.repeat(np.arange(n_heads), n_pairs), 3)
            self.kind = np.repeat(np.arange(3), n_heads * n_pairs)
            self.layer, self.head = head // graph.H, head % graph.H
            self.qspan = np.tile(qs, 3 * n_heads)
            self.kspan = np.tile(ks, 3 * n_heads)
        else:
            self.kind = self.layer = self.head = self.qspan = self.kspan = np.zeros(0, dtype=np.int64)
        self.n_cross = len(self.kind)

    def __len__(self) -> int:
        return self.n_resid + self.n_cross

    def same_as(self, other: EdgeSpace) -> bool:
        return (self.graph.cfg == other.graph.cfg and self.spans == other.spans
                and self.crossing == other.crossing)

    # --- dense <-> rows -------------------------------------------------------------------------

    def dense(self, values: np.ndarray, fill=0):
        """Row values -> (resid [S, n_forward, n_backward], cross [3, L, H, S, S] or None)."""
        g, S = self.graph, self.n_spans
        values = np.asarray(values)
        resid = np.full((S, g.n_forward, g.n_backward), fill, dtype=values.dtype)
        resid[self.span, self.fwd, self.bwd] = values[: self.n_resid]
        cross = None
        if self.crossing:
            cross = np.full((3, g.L, g.H, S, S), fill, dtype=values.dtype)
            cross[self.kind, self.layer, self.head, self.qspan, self.kspan] = values[self.n_resid:]
        return resid, cross

    def rows(self, resid: np.ndarray, cross: np.ndarray | None) -> np.ndarray:
        """Dense arrays -> row values (the inverse of `dense`)."""
        parts = [np.asarray(resid)[self.span, self.fwd, self.bwd]]
        if self.crossing:
            parts.append(np.asarray(cross)[self.kind, self.layer, self.head, self.qspan, self.kspan])
        return np.concatenate(parts)

    # --- names ------------------------------------------------------------------------------

    @cached_property
    def table(self):
        """The edge table's key columns (no scores), one row per edge."""
        import pandas as pd

        g = self.graph
        span_names = np.asarray(self.spans, dtype=object)
        fwd = np.asarray(g.forward_names, dtype=object)
        bwd = np.asarray(g.backward_names, dtype=object)
        head_col = np.asarray(g.head_names, dtype=object)[self.layer * g.H + self.head]
        return pd.DataFrame({
            "kind": np.concatenate([np.full(self.n_resid, "resid", dtype=object),
                                    np.asarray(QKV, dtype=object)[self.kind]]),
            "src": np.concatenate([fwd[self.fwd], head_col]),
            "dst": np.concatenate([bwd[self.bwd], head_col]),
            "src_span": np.concatenate([span_names[self.span], span_names[self.kspan]]),
            "dst_span": np.concatenate([span_names[self.span], span_names[self.qspan]]),
        })

    @cached_property
    def row_of_key(self) -> dict:
        """(kind, src, dst, src_span, dst_span) -> row index."""
        t = self.table
        return {key: i for i, key in enumerate(zip(t["kind"], t["src"], t["dst"], t["src_span"],
                                                    t["dst_span"]))}

    def edge_name(self, row: int) -> str:
        """``m0->a1.h2<q>@S2`` (residual) or ``a1.h2<k>@S1->a1.h2@S2`` (crossing)."""
        kind, src, dst, s_src, s_dst = self.table.iloc[row]
        if kind == "resid":
            return f"{src}->{dst}@{s_src}"
        read_span = s_dst if kind == "q" else s_src
        return f"{src}<{kind}>@{read_span}->{dst}@{s_dst}" + (f"[{s_src}]" if kind == "q" else "")

    @cached_property
    def row_of_name(self) -> dict:
        return {self.edge_name(i): i for i in range(len(self))}

    def row(self, edge) -> int:
        """Row index of an edge given as an index, a key tuple or an `edge_name` string."""
        if isinstance(edge, (int, np.integer)):
            if not 0 <= edge < len(self):
                raise IndexError(f"edge row {edge} out of range (0..{len(self) - 1})")
            return int(edge)
        if isinstance(edge, str):
            if edge not in self.row_of_name:
                raise KeyError(f"no edge named {edge!r} (names look like 'm0->a1.h2<q>@S2' or "
                               "'a1.h2<k>@S1->a1.h2@S2')")
            return self.row_of_name[edge]
        key = tuple(edge)
        if key not in self.row_of_key:
            raise KeyError(f"no edge {key!r} (kind, src, dst, src_span, dst_span)")
        return self.row_of_key[key]

    # --- positional nodes -----------------------------------------------------------------------

    @property
    def n_nodes(self) -> int:
        g, S = self.graph, self.n_spans
        return S * g.n_forward + S * g.L * g.H * 3 + S

    def F(self, u, s):
        return s * self.graph.n_forward + u

    def SLOT(self, head_flat, c, s):
        g = self.graph
        return self.n_spans * g.n_forward + (s * g.L * g.H + head_flat) * 3 + c

    def LOGITS(self, s):
        return self.n_nodes - self.n_spans + s

    @property
    def root(self) -> int:
        return self.LOGITS(self.n_spans - 1)

    @cached_property
    def input_nodes(self) -> np.ndarray:
        return self.F(0, np.arange(self.n_spans))

    @cached_property
    def node_names(self) -> list[str]:
        g = self.graph
        names = [f"{u}@{s}" for s in self.spans for u in g.forward_names]
        names += [f"{h}<{c}>@{s}" for s in self.spans for h in g.head_names for c in QKV]
        return names + [f"logits@{s}" for s in self.spans]

    @cached_property
    def node_index(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.node_names)}

    @cached_property
    def child(self) -> np.ndarray:
        """[rows] child node of every row."""
        g = self.graph
        b, s = self.bwd, self.span
        per_layer = 3 * g.H + 1
        layer, pos = b // per_layer, b % per_layer
        kind, head = pos // g.H, pos % g.H
        # Without crossing edges (EAP) nothing routes a head's inputs across positions, so an
        # edge into a head's q/k/v input goes straight to the head.
        head_in = (self.SLOT(layer * g.H + head, np.minimum(kind, 2), s) if self.crossing
                   else self.F(1 + layer * (g.H + 1) + head, s))
        resid_child = np.where(
            b == g.logits_slot, self.LOGITS(s),
            np.where(pos == 3 * g.H, self.F(1 + layer * (g.H + 1) + g.H, s), head_in))
        cross_child = self.F(1 + self.layer * (g.H + 1) + self.head, self.qspan)
        return np.concatenate([resid_child, cross_child]).astype(np.int64)

    @cached_property
    def parent(self) -> np.ndarray:
        """[rows] parent node of every row."""
        read_span = np.where(self.kind == 0, self.qspan, self.kspan)
        cross_parent = self.SLOT(self.layer * self.graph.H + self.head, self.kind, read_span)
        return np.concatenate([self.F(self.fwd, self.span), cross_parent]).astype(np.int64)

    @cached_property
    def crossing_group(self) -> np.ndarray:
        """[rows] for crossing rows the index of their (head, query span, key span) group
        shared by q, k and v; -1 for residual rows."""
        n_per_kind = self.n_cross // 3 if self.crossing else 0
        grp = np.arange(self.n_cross) % max(n_per_kind, 1)
        return np.concatenate([np.full(self.n_resid, -1), grp]).astype(np.int64)

    def real_counts(self, span_lengths: np.ndarray) -> np.ndarray:
        """[rows] mean number of real per-example edges each row stands for, given
        [N, S] span lengths: |s| for residual rows, #{(t, t'): t in s_q, t' in s_k, t' <= t}
        for crossing rows."""
        lengths = np.asarray(span_lengths, dtype=np.float64)
        resid = lengths.mean(0)[self.span]
        if not self.crossing:
            return resid
        lq, lk = lengths[:, self.qspan], lengths[:, self.kspan]
        same = self.qspan == self.kspan
        pairs = np.where(same[None], lq * (lq + 1) / 2, lq * lk).mean(0)
        return np.concatenate([resid, pairs])


def edge_table(graph: Graph, spans: list[str], resid: np.ndarray | None, cross: np.ndarray | None):
    """The edge table of DESIGN.md section 3 from dense score arrays, rows in `EdgeSpace` order.

    ``resid``: [S, n_forward, n_backward] (entries off `Graph.edge_mask` ignored).
    ``cross``: [3, L, H, S_query, S_key] for kinds q, k, v, or None (no crossing edges).
    """
    space = EdgeSpace(graph, list(spans), crossing=cross is not None)
    table = space.table.copy()
    table["score"] = space.rows(resid, cross).astype(np.float64)
    return table
