"""The arithmetic half of `EdgeSpace`: every edge of a graph over spans as integer coordinates,
the positional nodes as integers, each row's child and parent, and the structure search walks.
Names and the edge table are `peap_widget.graph.space`'s (`EdgeSpace` adds them); nothing here
is a per-row Python object.
"""

from __future__ import annotations

import numpy as np

from ..util.lazy import cached_property
from .config import INPUT, MLP, Graph


class EdgeIndex:
    """Rows, positional nodes and paths of a graph over ``spans`` by index arithmetic; see
    `EdgeSpace` (this class without names) for the row and node layout."""

    def __init__(self, graph: Graph, spans: list[str], crossing: bool):
        self.graph, self.spans, self.crossing = graph, list(spans), crossing
        S = self.n_spans = len(spans)
        up = graph.n_upstream
        #: per forward node: its first backward slot, and where its run starts within a span
        self.first_slot = np.searchsorted(up, np.arange(graph.n_forward), side="right")
        per_fwd = graph.n_backward - self.first_slot
        self.resid_start = np.concatenate([[0], np.cumsum(per_fwd)[:-1]]).astype(np.int64)
        self.n_per_span = int(per_fwd.sum())  # = graph.n_edges
        self.n_resid = S * self.n_per_span
        self.n_pairs = S * (S + 1) // 2
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

    def same_as(self, other: EdgeIndex) -> bool:
        return (self.graph.cfg == other.graph.cfg and self.spans == other.spans
                and self.crossing == other.crossing)

    # --- per-row coordinates (built on first use) -----------------------------------------------

    @cached_property
    def _span_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(fwd, bwd) of one span's residual rows, in row order."""
        fwd, bwd = np.nonzero(self.graph.edge_mask)
        return fwd.astype(np.int32), bwd.astype(np.int32)

    @cached_property
    def span(self) -> np.ndarray:
        """[n_resid] span of every residual row."""
        return np.repeat(np.arange(self.n_spans, dtype=np.int32), self.n_per_span)

    @cached_property
    def fwd(self) -> np.ndarray:
        """[n_resid] forward node of every residual row."""
        return np.tile(self._span_pairs[0], self.n_spans)

    @cached_property
    def bwd(self) -> np.ndarray:
        """[n_resid] backward slot of every residual row."""
        return np.tile(self._span_pairs[1], self.n_spans)

    # --- dense <-> rows -------------------------------------------------------------------------

    def dense(self, values: np.ndarray, fill=0) -> tuple[np.ndarray, np.ndarray | None]:
        """Row values -> (resid [S, n_forward, n_backward], cross [3, L, H, S, S] or None)."""
        g, S = self.graph, self.n_spans
        values = np.asarray(values)
        resid = np.full((S, g.n_forward, g.n_backward), fill, dtype=values.dtype)
        resid[:, g.edge_mask] = values[: self.n_resid].reshape(S, self.n_per_span)
        cross = None
        if self.crossing:
            cross = np.full((3, g.L, g.H, S, S), fill, dtype=values.dtype)
            cross[self.kind, self.layer, self.head, self.qspan, self.kspan] = values[self.n_resid:]
        return resid, cross

    def rows(self, resid: np.ndarray, cross: np.ndarray | None) -> np.ndarray:
        """Dense arrays -> row values (the inverse of `dense`)."""
        # a boolean mask over the last two axes lists them in row-major order: one span's rows
        parts = [np.asarray(resid)[:, self.graph.edge_mask].reshape(-1)]
        if self.crossing:
            parts.append(np.asarray(cross)[self.kind, self.layer, self.head, self.qspan, self.kspan])
        return np.concatenate(parts)

    # --- row <-> coordinates by arithmetic ------------------------------------------------------

    def resid_row(self, s, u, b) -> np.ndarray:
        """Row of residual edge (forward node u -> backward slot b) at span s (arrays allowed);
        -1 where that is no edge."""
        s, u, b = (np.asarray(x, dtype=np.int64) for x in (s, u, b))
        ok = ((0 <= s) & (s < self.n_spans) & (0 <= u) & (u < self.graph.n_forward)
              & (b < self.graph.n_backward))
        uc = np.where(ok, u, 0)
        ok &= b >= self.first_slot[uc]
        row = s * self.n_per_span + self.resid_start[uc] + b - self.first_slot[uc]
        return np.where(ok, row, -1)

    def cross_row(self, c, head_flat, qs, ks) -> np.ndarray:
        """Row of crossing edge of kind c (0 q, 1 k, 2 v) of head ``layer * H + head``, query
        span qs, key span ks (arrays allowed); -1 where there is none."""
        c, h, qs, ks = (np.asarray(x, dtype=np.int64) for x in (c, head_flat, qs, ks))
        n_heads = self.graph.L * self.graph.H
        ok = (self.crossing & (0 <= c) & (c < 3) & (0 <= h) & (h < n_heads) & (0 <= ks) & (ks <= qs)
              & (qs < self.n_spans))
        row = self.n_resid + (c * n_heads + h) * self.n_pairs + qs * (qs + 1) // 2 + ks
        return np.where(ok, row, -1)

    def resid_coords(self, rows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(span, forward node, backward slot) of residual rows (the inverse of `resid_row`)."""
        rows = np.asarray(rows, dtype=np.int64)
        s, o = np.divmod(rows, self.n_per_span)
        u = np.searchsorted(self.resid_start, o, side="right") - 1
        return s, u, self.first_slot[u] + o - self.resid_start[u]

    # --- positional nodes -----------------------------------------------------------------------

    @property
    def n_nodes(self) -> int:
        g, S = self.graph, self.n_spans
        return S * g.n_forward + S * g.L * g.H * 3 + S

    def F(self, u, s):
        """Node id of forward node u at span s (arrays allowed)."""
        return s * self.graph.n_forward + u

    def SLOT(self, head_flat, c, s):
        """Node id of head ``layer * H + head``'s q/k/v (c = 0, 1, 2) input at span s."""
        g = self.graph
        return self.n_spans * g.n_forward + (s * g.L * g.H + head_flat) * 3 + c

    def LOGITS(self, s):
        """Node id of the logits at span s."""
        return self.n_nodes - self.n_spans + s

    @property
    def root(self) -> int:
        return self.LOGITS(self.n_spans - 1)

    @cached_property
    def input_nodes(self) -> np.ndarray:
        return self.F(0, np.arange(self.n_spans))


    @cached_property
    def _slot_child(self) -> tuple[np.ndarray, np.ndarray]:
        """Per backward slot b: (base, stride) with b's node at span s = base + s * stride."""
        g, S = self.graph, self.n_spans
        base = np.empty(g.n_backward, dtype=np.int64)
        stride = np.empty(g.n_backward, dtype=np.int64)
        for layer in range(g.L):
            for c in range(3):
                for h in range(g.H):
                    b = g.qkv_slot(layer, c, h)
                    # Without crossing edges (EAP) nothing routes a head's inputs across
                    # positions, so an edge into a head's q/k/v input goes straight to the head.
                    if self.crossing:
                        base[b] = S * g.n_forward + (layer * g.H + h) * 3 + c
                        stride[b] = 3 * g.L * g.H
                    else:
                        base[b], stride[b] = g.head_node(layer, h), g.n_forward
            base[g.mlp_slot(layer)], stride[g.mlp_slot(layer)] = g.mlp_node(layer), g.n_forward
        base[g.logits_slot], stride[g.logits_slot] = self.n_nodes - S, 1
        return base, stride

    def _per_span(self, fn) -> np.ndarray:
        """[rows] int32 node ids: ``fn(s)`` for each span's residual rows, then crossing rows'."""
        out = np.empty(len(self), dtype=np.int32)
        E = self.n_per_span
        for s in range(self.n_spans):  # one span at a time keeps the int64 temporaries small
            out[s * E:(s + 1) * E] = fn(s)
        return out

    @cached_property
    def child(self) -> np.ndarray:
        """[rows] child node of every row (int32)."""
        g = self.graph
        base, stride = self._slot_child
        fb, sb = base[self._span_pairs[1]], stride[self._span_pairs[1]]
        out = self._per_span(lambda s: fb + s * sb)
        out[self.n_resid:] = self.F(g.head_node(self.layer, self.head), self.qspan)
        return out

    @cached_property
    def parent(self) -> np.ndarray:
        """[rows] parent node of every row (int32)."""
        fwd = self._span_pairs[0].astype(np.int64)
        out = self._per_span(lambda s: self.F(fwd, s))
        out[self.n_resid:] = self.parents_of(np.arange(self.n_resid, len(self)))
        return out

    def parents_of(self, rows) -> np.ndarray:
        """Parent nodes of ``rows`` by arithmetic (no per-row array needed): F(u, s) for a
        residual row, the head's q/k/v input at the span it reads for a crossing row."""
        rows = np.asarray(rows, dtype=np.int64)
        res = rows < self.n_resid
        out = np.empty(len(rows), dtype=np.int64)
        s, u, _ = self.resid_coords(rows[res])
        out[res] = self.F(u, s)
        c = rows[~res] - self.n_resid
        read = np.where(self.kind[c] == 0, self.qspan[c], self.kspan[c])
        out[~res] = self.SLOT(self.layer[c] * self.graph.H + self.head[c], self.kind[c], read)
        return out

    @cached_property
    def crossing_group(self) -> np.ndarray:
        """[rows] for crossing rows the index of their (head, query span, key span) group
        shared by q, k and v; -1 for residual rows (int32)."""
        out = np.full(len(self), -1, dtype=np.int32)
        out[self.n_resid:] = np.arange(self.n_cross) % max(self.n_cross // 3, 1)
        return out

    def group_rows(self, row: int) -> np.ndarray:
        """The q, k and v rows of a crossing row's group (just ``[row]`` for a residual row)."""
        if row < self.n_resid:
            return np.asarray([row])
        per_kind = self.n_cross // 3
        return self.n_resid + (row - self.n_resid) % per_kind + per_kind * np.arange(3)

    # --- structure for search -------------------------------------------------------------------

    @cached_property
    def node_level(self) -> np.ndarray:
        """[nodes] a topological level: every row's parent sits at a lower level than its child
        (input 0; layer l: q/k/v inputs 3l+1, heads 3l+2, MLP 3l+3; logits 3L+1)."""
        g, S = self.graph, self.n_spans
        kind, layer, _ = g.forward_coords(np.arange(g.n_forward))
        f = np.where(kind == INPUT, 0, np.where(kind == MLP, 3 * layer + 3, 3 * layer + 2))
        slot = np.repeat(3 * (np.arange(g.L * g.H) // g.H) + 1, 3)
        return np.concatenate([np.tile(f, S), np.tile(slot, S),
                               np.full(S, 3 * g.L + 1)]).astype(np.int16)

    def rows_into(self, node: int) -> np.ndarray:
        """Rows whose child is ``node`` (by arithmetic, not a search over all rows)."""
        return self.incoming(node)[0]

    def incoming(self, node: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows whose child is ``node`` in increasing order, each row's parent node), by
        arithmetic."""
        g, S = self.graph, self.n_spans
        node = int(node)
        empty = np.zeros(0, dtype=np.int64)
        if node >= self.n_nodes - S:                       # logits
            return self._resid_into(node - (self.n_nodes - S), g.logits_slot)
        if node >= S * g.n_forward:                        # a head's q/k/v input
            t, c = divmod(node - S * g.n_forward, 3)
            s, hf = divmod(t, g.L * g.H)
            return (self._resid_into(s, g.qkv_slot(hf // g.H, c, hf % g.H)) if self.crossing
                    else (empty, empty))
        s, u = divmod(node, g.n_forward)
        kind, layer, h = g.forward_coord(u)
        if kind == INPUT:
            return empty, empty
        if kind == MLP:
            return self._resid_into(s, g.mlp_slot(layer))
        if self.crossing:                                  # head: its crossing rows at query s
            qkv, ks = np.repeat(np.arange(3), s + 1), np.tile(np.arange(s + 1), 3)
            hf = layer * g.H + h
            return (self.cross_row(qkv, hf, s, ks),
                    self.SLOT(hf, qkv, np.where(qkv == 0, s, ks)))
        parts = [self._resid_into(s, g.qkv_slot(layer, c, h)) for c in range(3)]
        rows, parents = (np.concatenate(x) for x in zip(*parts))
        order = np.argsort(rows)
        return rows[order], parents[order]

    def _resid_into(self, s: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        """Residual rows into slot b at span s (one per upstream forward node, in forward
        order), their parents."""
        offsets = self._slot_offsets.get(b)
        if offsets is None:  # row of (u -> b) within a span, for every upstream u
            n_up = int(self.graph.n_upstream[b])
            offsets = self._slot_offsets[b] = self.resid_start[:n_up] + b - self.first_slot[:n_up]
        parents = s * self.graph.n_forward + self._arange[: len(offsets)]
        return s * self.n_per_span + offsets, parents

    @cached_property
    def _slot_offsets(self) -> dict:
        return {}

    @cached_property
    def _arange(self) -> np.ndarray:
        return np.arange(self.graph.n_forward)

    def resid_heads(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For every node whose incoming rows are one slot's residual rows at one span (q/k/v
        inputs with crossing edges, MLPs, logits): (node, its row of smallest ``values``, that
        value), the first such row on ties. ``values``: [n_resid], no NaN. A few passes over
        the rows grouped by slot instead of one small search per node."""
        g, S, E = self.graph, self.n_spans, self.n_per_span
        perm, starts = self._by_slot
        values = np.asarray(values)
        best_rows, best_vals = np.empty((S, g.n_backward), np.int64), np.empty((S, g.n_backward))
        for s in range(S):
            v = values[s * E + perm]                        # span s's rows, slot by slot
            low = np.minimum.reduceat(v, starts[:-1])
            hit = np.flatnonzero(v == np.repeat(low, np.diff(starts)))
            first = hit[np.searchsorted(hit, starts[:-1])]  # the first smallest of each slot
            best_rows[s], best_vals[s] = s * E + perm[first], low
        b = np.arange(g.n_backward)
        base, stride = self._slot_child
        nodes = base[None, :] + np.arange(S)[:, None] * stride[None, :]
        single = np.ones(g.n_backward, dtype=bool)
        if not self.crossing:  # a head's q, k and v rows all go to the head
            single[:] = False
            single[[g.mlp_slot(layer) for layer in range(g.L)] + [g.logits_slot]] = True
        keep = single[b]
        return nodes[:, keep].ravel(), best_rows[:, keep].ravel(), best_vals[:, keep].ravel()

    @cached_property
    def _by_slot(self) -> tuple[np.ndarray, np.ndarray]:
        """(one span's residual rows grouped by backward slot, forward order within a slot;
        where each slot's group starts, plus the end)."""
        g = self.graph
        perm = np.concatenate([self._resid_into(0, b)[0] for b in range(g.n_backward)])
        starts = np.concatenate([[0], np.cumsum(g.n_upstream)])
        return perm, starts

    def on_paths(self, row_mask: np.ndarray) -> np.ndarray:
        """[rows] bool: rows of ``row_mask`` on some path (through ``row_mask``'s rows) from an
        input node to the root.

        One sweep up the topological levels marks nodes reached from an input, one sweep down
        marks nodes reaching the root; no fixpoint iteration, no search over other rows.
        """
        rows = np.nonzero(row_mask)[0]
        out = np.zeros(len(self), dtype=bool)
        if len(rows):
            parent, child = self.parent[rows], self.child[rows]
            keep = (self.reaching_root(parent, child)[child]
                    & self._from_input(parent, child)[parent])
            out[rows[keep]] = True
        return out

    def _from_input(self, parent: np.ndarray, child: np.ndarray) -> np.ndarray:
        """[nodes] reached from an input node through the rows (parent, child)."""
        reached = np.zeros(self.n_nodes, dtype=bool)
        reached[self.input_nodes] = True
        for sel in _by_level(self.node_level[parent]):  # a level's status is final when swept
            reached[child[sel[reached[parent[sel]]]]] = True
        return reached

    def reaching_root(self, parent: np.ndarray, child: np.ndarray) -> np.ndarray:
        """[nodes] with a path to the root through the rows (parent, child)."""
        reached = np.zeros(self.n_nodes, dtype=bool)
        reached[self.root] = True
        for sel in reversed(_by_level(self.node_level[child])):
            reached[parent[sel[reached[child[sel]]]]] = True
        return reached


    @cached_property
    def root_reachable(self) -> np.ndarray:
        """[nodes] bool: nodes with a path (through any rows) to the root."""
        return self.reaching_root(self.parent, self.child)

    # --- sizes ----------------------------------------------------------------------------------

    def real_counts(self, span_lengths: np.ndarray) -> np.ndarray:
        """[rows] mean number of real per-example edges each row stands for, given
        [N, S] span lengths: |s| for residual rows, #{(t, t'): t in s_q, t' in s_k, t' <= t}
        for crossing rows."""
        resid = np.repeat(self._mean_lengths(span_lengths), self.n_per_span)
        if not self.crossing:
            return resid
        return np.concatenate([resid, np.tile(self._mean_pairs(span_lengths),
                                              3 * self.graph.L * self.graph.H)])

    def real_total(self, row_mask: np.ndarray, span_lengths: np.ndarray) -> float:
        """``real_counts(span_lengths)[row_mask].sum()`` without a per-row array: rows in the
        mask are counted per span (per span pair) first."""
        m = np.asarray(row_mask, dtype=bool)
        per_span = m[: self.n_resid].reshape(self.n_spans, self.n_per_span).sum(1)
        total = float(per_span @ self._mean_lengths(span_lengths))
        if self.crossing:
            per_pair = m[self.n_resid:].reshape(-1, self.n_pairs).sum(0)
            total += float(per_pair @ self._mean_pairs(span_lengths))
        return total

    def _mean_lengths(self, span_lengths) -> np.ndarray:
        return np.asarray(span_lengths, dtype=np.float64).mean(0)

    def _mean_pairs(self, span_lengths) -> np.ndarray:
        """[pairs] mean (query, key) pairs with key <= query of each span pair, tril order."""
        lengths = np.asarray(span_lengths, dtype=np.float64)
        qs, ks = np.tril_indices(self.n_spans)
        lq, lk = lengths[:, qs], lengths[:, ks]
        return np.where((qs == ks)[None], lq * (lq + 1) / 2, lq * lk).mean(0)


def _by_level(levels: np.ndarray) -> list[np.ndarray]:
    """Indices into ``levels`` grouped by level, lowest level first (a radix sort)."""
    order = np.argsort(levels, kind="stable")
    counts = np.bincount(levels)
    return [g for g in np.split(order, np.cumsum(counts)[:-1]) if len(g)]
