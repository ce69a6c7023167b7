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
from ..util.lazy import cached_property

import numpy as np

QKV = ("q", "k", "v")
#: the edge table's key columns (DESIGN.md section 3), before ``score``
KEY_COLUMNS = ("kind", "src", "dst", "src_span", "dst_span")


@dataclass(frozen=True)
class GraphConfig:
    n_layers: int
    n_heads: int
    d_model: int
    parallel_attn_mlp: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d, spans: int = 1, crossing: bool = True) -> GraphConfig:
        """A config read from a file, checked before anything is built from it: positive whole
        numbers, and a positional graph of ``spans`` spans of at most `MAX_ROWS` rows (a tiny
        file cannot make us allocate terabytes). Raises `PeapError`."""
        from ..errors import PeapError

        if not isinstance(d, dict) or set(d) - {"n_layers", "n_heads", "d_model",
                                                 "parallel_attn_mlp"}:
            raise PeapError(f"a graph is {{n_layers, n_heads, d_model, parallel_attn_mlp}}, got {d!r}")
        for k in ("n_layers", "n_heads", "d_model"):
            v = d.get(k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise PeapError(f"graph {k} must be a positive whole number, got {v!r}")
        cfg = cls(d["n_layers"], d["n_heads"], d["d_model"], bool(d.get("parallel_attn_mlp", False)))
        g = Graph(cfg)
        rows = spans * g.n_forward * g.n_backward + (3 * cfg.n_layers * cfg.n_heads * spans * spans
                                                      if crossing else 0)
        if rows > MAX_ROWS:
            raise PeapError(f"a graph of {cfg.n_layers} layers x {cfg.n_heads} heads over {spans} "
                            f"spans has {rows:,} rows, more than the {MAX_ROWS:,} supported (at most "
                            "a few hundred layers and heads); is the file corrupted?")
        return cfg


#: the largest positional graph a file may describe (a Llama-3-405B graph over 8 spans has
#: 6.3e9 rows; 2^33 leaves room for it and refuses what cannot be real)
MAX_ROWS = 2 ** 33


class Graph:
    """Names and indices of one architecture's graph (no positions; see `edge_table`)."""

    def __init__(self, cfg: GraphConfig):
        self.cfg = cfg
        self.L, self.H = cfg.n_layers, cfg.n_heads

    def __reduce__(self):
        # Rebuilt from its shape: the cached index arrays (hundreds of MB for a 70B model)
        # never travel with a remote request.
        return (type(self), (self.cfg,))

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

    Rows are index arithmetic, so nothing here is a per-row Python object: an 8B model's graph
    (32 x 32 heads, 8 spans) has 13 million rows. Forward node u feeds a suffix of the backward
    axis (`Graph.n_upstream` never decreases), so within a span the rows of u are one run starting
    at ``resid_start[u]``, slot ``first_slot[u]`` first. The per-row arrays (``span``, ``fwd``,
    ``bwd``, ``child``, ``parent``) are built on first use, as int32.

    It also names the positional nodes and gives each row its child and parent nodes:

    - ``F(u, s)``: forward node u at span s (``a3.h4@S2``, ``m0@IO``, ``input@END``);
    - ``SLOT(h, c, s)``: head h's q/k/v input at span s (``a3.h4<k>@S1``);
    - ``LOGITS(s)``: the logits at span s; the circuit's root is the one at the last span.

    A residual row (u -> v, s) goes from F(u, s) to v's node at s (``SLOT`` for a q/k/v slot, F of
    the MLP, or LOGITS; without crossing edges a q/k/v slot's row goes to F of the head). A crossing row of head h (kind c, key span s_k, query span s_q) goes from
    SLOT(h, c, s_k) (for k, v) or SLOT(h, q, s_q) (for q) to F(h, s_q).

    Example:
        >>> sp = EdgeSpace(Graph(GraphConfig(2, 4, 16)), ["A", "B"], crossing=True)
        >>> sp.row("m0->a1.h2<q>@B") == sp.row(("resid", "m0", "a1.h2<q>", "B", "B"))
        True
        >>> sp.edge_name(sp.row(("k", "a1.h2", "a1.h2", "A", "B")))
        'a1.h2<k>@A->a1.h2@B'
    """

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

    def same_as(self, other: EdgeSpace) -> bool:
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

    def dense(self, values: np.ndarray, fill=0):
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

    def resid_row(self, s, u, b):
        """Row of residual edge (forward node u -> backward slot b) at span s (arrays allowed);
        -1 where that is no edge."""
        s, u, b = (np.asarray(x, dtype=np.int64) for x in (s, u, b))
        ok = ((0 <= s) & (s < self.n_spans) & (0 <= u) & (u < self.graph.n_forward)
              & (b < self.graph.n_backward))
        uc = np.where(ok, u, 0)
        ok &= b >= self.first_slot[uc]
        row = s * self.n_per_span + self.resid_start[uc] + b - self.first_slot[uc]
        return np.where(ok, row, -1)

    def cross_row(self, c, head_flat, qs, ks):
        """Row of crossing edge of kind c (0 q, 1 k, 2 v) of head ``layer * H + head``, query
        span qs, key span ks (arrays allowed); -1 where there is none."""
        c, h, qs, ks = (np.asarray(x, dtype=np.int64) for x in (c, head_flat, qs, ks))
        n_heads = self.graph.L * self.graph.H
        ok = (self.crossing & (0 <= c) & (c < 3) & (0 <= h) & (h < n_heads) & (0 <= ks) & (ks <= qs)
              & (qs < self.n_spans))
        row = self.n_resid + (c * n_heads + h) * self.n_pairs + qs * (qs + 1) // 2 + ks
        return np.where(ok, row, -1)

    def resid_coords(self, rows):
        """(span, forward node, backward slot) of residual rows (the inverse of `resid_row`)."""
        rows = np.asarray(rows, dtype=np.int64)
        s, o = np.divmod(rows, self.n_per_span)
        u = np.searchsorted(self.resid_start, o, side="right") - 1
        return s, u, self.first_slot[u] + o - self.resid_start[u]

    # --- names ------------------------------------------------------------------------------

    @cached_property
    def _names(self) -> dict:
        """Name -> index maps for parsing edge keys and names."""
        g = self.graph
        return {"fwd": {n: i for i, n in enumerate(g.forward_names)},
                "bwd": {n: i for i, n in enumerate(g.backward_names)},
                "head": {n: i for i, n in enumerate(g.head_names)},
                "span": {n: i for i, n in enumerate(self.spans)}}

    @cached_property
    def component_names(self) -> list[str]:
        """Categories of the ``src`` / ``dst`` columns: forward nodes, then the other slots."""
        g = self.graph
        fwd = set(g.forward_names)
        return list(g.forward_names) + [b for b in g.backward_names if b not in fwd]

    @cached_property
    def _bwd_code(self) -> np.ndarray:
        index = {c: i for i, c in enumerate(self.component_names)}
        return np.asarray([index[b] for b in self.graph.backward_names], dtype=np.int32)

    def codes(self, rows=None) -> dict[str, np.ndarray]:
        """Integer codes of the key columns for ``rows`` (all when None): ``kind`` into
        ("resid", "q", "k", "v"), ``src`` / ``dst`` into `component_names`, spans into `spans`."""
        g = self.graph
        if rows is None:
            return self._all_codes()
        rows = np.asarray(rows, dtype=np.int64)
        out = {c: np.empty(len(rows), dtype=np.int32) for c in KEY_COLUMNS}
        res = rows < self.n_resid
        s, u, b = self.resid_coords(rows[res])
        bwd_code = self._bwd_code
        c = rows[~res] - self.n_resid
        head_fwd = 1 + self.layer[c] * (g.H + 1) + self.head[c]
        for col, r_val, c_val in (("kind", 0, 1 + self.kind[c]), ("src", u, head_fwd),
                                  ("dst", bwd_code[b], head_fwd), ("src_span", s, self.kspan[c]),
                                  ("dst_span", s, self.qspan[c])):
            out[col][res], out[col][~res] = r_val, c_val
        return out

    def _all_codes(self) -> dict[str, np.ndarray]:
        """`codes` of every row: one span's residual codes tiled, then the crossing rows'."""
        g, S = self.graph, self.n_spans
        fwd, bwd = self._span_pairs
        head_fwd = 1 + self.layer * (g.H + 1) + self.head
        span = np.repeat(np.arange(S, dtype=np.int8 if S < 128 else np.int32), self.n_per_span)
        parts = {"kind": (np.zeros(self.n_resid, dtype=np.int8), 1 + self.kind),
                 "src": (np.tile(fwd, S), head_fwd),
                 "dst": (np.tile(self._bwd_code[bwd], S), head_fwd),
                 "src_span": (span, self.kspan), "dst_span": (span, self.qspan)}
        return {c: np.concatenate([a, b.astype(a.dtype)]) for c, (a, b) in parts.items()}

    def frame(self, rows=None):
        """The edge table's key columns for ``rows`` (all when None) as a DataFrame indexed by
        row number: categorical columns (spans ordered as in the schema), no Python strings per
        row."""
        import pandas as pd

        codes, cats = self.codes(rows), self._categories
        cols = {c: pd.Categorical.from_codes(codes[c], categories=cats[c],
                                             ordered=c.endswith("span"), validate=False)
                for c in KEY_COLUMNS}
        index = (pd.RangeIndex(len(self)) if rows is None
                 else pd.Index(np.asarray(rows, dtype=np.int64)))
        return pd.DataFrame(cols, index=index)

    @cached_property
    def table(self):
        """The edge table's key columns (no scores), one row per edge (see `frame`)."""
        return self.frame()

    def key(self, row: int) -> tuple[str, str, str, str, str]:
        """``(kind, src, dst, src_span, dst_span)`` of one row."""
        codes, cats = self.codes([self.row(row)]), self._categories
        return tuple(cats[c][int(codes[c][0])] for c in KEY_COLUMNS)

    @cached_property
    def _categories(self) -> dict[str, list[str]]:
        """What the key columns' codes index."""
        return {"kind": ["resid", *QKV], "src": self.component_names,
                "dst": self.component_names, "src_span": self.spans, "dst_span": self.spans}

    def rows_of_keys(self, kind, src, dst, src_span, dst_span) -> np.ndarray:
        """Rows of edges given column-wise by their keys (sequences of strings); -1 for a key
        that is no edge of this space."""
        n = self._names

        def idx(names, table):
            if len(names) < 1000:
                return np.asarray([table.get(x, -1) for x in names], dtype=np.int64)
            import pandas as pd  # hashing in C for whole tables

            pos = pd.Index(list(table)).get_indexer(pd.Index(np.asarray(names, dtype=object)))
            return np.where(pos < 0, -1, np.fromiter(table.values(), np.int64, len(table))[pos])

        kind = np.asarray(kind, dtype=object)
        k = idx(kind, {"resid": -1, "q": 0, "k": 1, "v": 2})
        known_kind = np.isin(kind, ["resid", *QKV])
        ss, ds = idx(src_span, n["span"]), idx(dst_span, n["span"])
        u, b = idx(src, n["fwd"]), idx(dst, n["bwd"])
        h_src, h_dst = idx(src, n["head"]), idx(dst, n["head"])
        resid = self.resid_row(ss, u, b)
        resid = np.where((ss == ds) & (ss >= 0) & (u >= 0) & (b >= 0), resid, -1)
        cross = self.cross_row(k, h_src, ds, ss)
        cross = np.where((h_src == h_dst) & (h_src >= 0) & (ss >= 0) & (ds >= 0), cross, -1)
        return np.where(~known_kind, -1, np.where(k < 0, resid, cross))

    @property
    def row_of_key(self) -> dict:
        """(kind, src, dst, src_span, dst_span) -> row index, as a dict (small graphs; `row`
        does the same by arithmetic)."""
        t = self.table.astype(object)
        return {key: i for i, key in enumerate(zip(t["kind"], t["src"], t["dst"], t["src_span"],
                                                    t["dst_span"]))}

    def edge_name(self, row: int) -> str:
        """``m0->a1.h2<q>@S2`` (residual) or ``a1.h2<k>@S1->a1.h2@S2`` (crossing)."""
        kind, src, dst, s_src, s_dst = self.key(row)
        if kind == "resid":
            return f"{src}->{dst}@{s_src}"
        read_span = s_dst if kind == "q" else s_src
        return f"{src}<{kind}>@{read_span}->{dst}@{s_dst}" + (f"[{s_src}]" if kind == "q" else "")

    @property
    def row_of_name(self) -> dict:
        """`edge_name` -> row index, as a dict (small graphs; `row` parses names instead)."""
        return {self.edge_name(i): i for i in range(len(self))}

    def _row_of_name(self, name: str) -> int:
        """Parse an `edge_name`; -1 when it names no edge. Component names hold no ``->``,
        ``@`` or ``<``, so the first of each splits them off; span names may hold anything, so
        for a crossing name every place the head's name recurs is tried."""
        n = self._names
        src, sep, rest = name.partition("->")
        if not sep:
            return -1
        if "<" not in src:  # residual: src->dst@span
            dst, _, span = rest.partition("@")
            return int(self.resid_row(n["span"].get(span, -1), n["fwd"].get(src, -1),
                                      n["bwd"].get(dst, -1)))
        head, _, tail = src.partition("<")  # crossing: head<c>@read->head@qspan, q adds [kspan]
        kind = tail[:1]
        prefix = f"{head}<{kind}>@"
        if kind not in QKV or head not in n["head"] or not name.startswith(prefix):
            return -1
        body, marker = name[len(prefix):], f"->{head}@"
        at = body.find(marker)
        while at >= 0:
            left, right = body[:at], body[at + len(marker):]
            qs, ks = right, left                       # k, v: read at the key span
            if kind == "q":                            # q: read at the query span, key in [...]
                qs, ks = left, (right[len(left) + 1:-1]
                                if right.startswith(left + "[") and right.endswith("]") else None)
            row = int(self.cross_row(QKV.index(kind), n["head"][head], n["span"].get(qs, -1),
                                     n["span"].get(ks, -1)))
            if row >= 0:
                return row
            at = body.find(marker, at + 1)
        return -1

    def row(self, edge) -> int:
        """Row index of an edge given as an index, a key tuple or an `edge_name` string."""
        if isinstance(edge, (int, np.integer)):
            if not 0 <= edge < len(self):
                raise IndexError(f"edge row {edge} out of range (0..{len(self) - 1})")
            return int(edge)
        if isinstance(edge, str):
            row = self._row_of_name(edge)
            if row < 0:
                raise KeyError(f"no edge named {edge!r} (names look like 'm0->a1.h2<q>@S2' or "
                               "'a1.h2<k>@S1->a1.h2@S2')")
            return row
        key = tuple(edge)
        row = int(self.rows_of_keys(*([x] for x in key))[0]) if len(key) == 5 else -1
        if row < 0:
            raise KeyError(f"no edge {key!r} (kind, src, dst, src_span, dst_span)")
        return row

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
        out[self.n_resid:] = self.F(1 + self.layer * (g.H + 1) + self.head, self.qspan)
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
        u = np.arange(g.n_forward)
        layer = (u - 1) // (g.H + 1)
        f = np.where(u == 0, 0, np.where((u - 1) % (g.H + 1) == g.H, 3 * layer + 3, 3 * layer + 2))
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
        if u == 0:
            return empty, empty
        layer, h = divmod(u - 1, g.H + 1)
        if h == g.H:                                       # MLP
            return self._resid_into(s, g.mlp_slot(layer))
        if self.crossing:                                  # head: its crossing rows at query s
            kind, ks = np.repeat(np.arange(3), s + 1), np.tile(np.arange(s + 1), 3)
            hf = layer * g.H + h
            return (self.cross_row(kind, hf, s, ks),
                    self.SLOT(hf, kind, np.where(kind == 0, s, ks)))
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
            keep = (self._reaching_root(parent, child)[child]
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

    def _reaching_root(self, parent: np.ndarray, child: np.ndarray) -> np.ndarray:
        """[nodes] with a path to the root through the rows (parent, child)."""
        reached = np.zeros(self.n_nodes, dtype=bool)
        reached[self.root] = True
        for sel in reversed(_by_level(self.node_level[child])):
            reached[parent[sel[reached[child[sel]]]]] = True
        return reached

    @cached_property
    def root_reachable(self) -> np.ndarray:
        """[nodes] bool: nodes with a path (through any rows) to the root."""
        return self._reaching_root(self.parent, self.child)

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


def edge_table(graph: Graph, spans: list[str], resid: np.ndarray | None, cross: np.ndarray | None):
    """The edge table of DESIGN.md section 3 from dense score arrays, rows in `EdgeSpace` order.

    ``resid``: [S, n_forward, n_backward] (entries off `Graph.edge_mask` ignored).
    ``cross``: [3, L, H, S_query, S_key] for kinds q, k, v, or None (no crossing edges).
    """
    space = EdgeSpace(graph, list(spans), crossing=cross is not None)
    table = space.frame()
    table["score"] = space.rows(resid, cross).astype(np.float64, copy=False)
    return table
