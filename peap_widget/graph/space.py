"""`EdgeSpace`: every (positional) edge of a graph over spans, numbered, named and listed as the
edge table (docs/numbers.md); `edge_table` builds that table from dense score arrays and
`edge_space` shares one space per (graph, spans, crossing).

The index arithmetic lives in `peap_widget.graph.index.EdgeIndex`; this adds the names (of
edges and positional nodes) and the table's key columns.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..util.lazy import cached_property
from .config import KEY_COLUMNS, MAX_ROWS, Graph, GraphConfig
from .index import EdgeIndex
from .names import QKV, node_name, slot_name, split_node, split_slot

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["KEY_COLUMNS", "MAX_ROWS", "QKV", "EdgeSpace", "Graph", "GraphConfig", "edge_space",
           "edge_table"]


class EdgeSpace(EdgeIndex):
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

    def codes(self, rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
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
        head_fwd = g.head_node(self.layer[c], self.head[c])
        for col, r_val, c_val in (("kind", 0, 1 + self.kind[c]), ("src", u, head_fwd),
                                  ("dst", bwd_code[b], head_fwd), ("src_span", s, self.kspan[c]),
                                  ("dst_span", s, self.qspan[c])):
            out[col][res], out[col][~res] = r_val, c_val
        return out

    def _all_codes(self) -> dict[str, np.ndarray]:
        """`codes` of every row: one span's residual codes tiled, then the crossing rows'."""
        g, S = self.graph, self.n_spans
        fwd, bwd = self._span_pairs
        head_fwd = g.head_node(self.layer, self.head)
        span = np.repeat(np.arange(S, dtype=np.int8 if S < 128 else np.int32), self.n_per_span)
        parts = {"kind": (np.zeros(self.n_resid, dtype=np.int8), 1 + self.kind),
                 "src": (np.tile(fwd, S), head_fwd),
                 "dst": (np.tile(self._bwd_code[bwd], S), head_fwd),
                 "src_span": (span, self.kspan), "dst_span": (span, self.qspan)}
        return {c: np.concatenate([a, b.astype(a.dtype)]) for c, (a, b) in parts.items()}

    def frame(self, rows: np.ndarray | None = None) -> pd.DataFrame:
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
    def table(self) -> pd.DataFrame:
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
            dst, span = split_node(rest)
            return int(self.resid_row(n["span"].get(span, -1), n["fwd"].get(src, -1),
                                      n["bwd"].get(dst, -1)))
        # crossing: head<c>@read->head@qspan, q adds [kspan]
        head, kind = split_slot(split_node(src)[0])
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

    def row(self, edge: int | str | tuple) -> int:
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

    @cached_property
    def node_names(self) -> list[str]:
        g = self.graph
        slots = [slot_name(layer, h, c) for layer in range(g.L) for h in range(g.H) for c in QKV]
        names = [node_name(u, s) for s in self.spans for u in g.forward_names]
        names += [node_name(slot, s) for s in self.spans for slot in slots]
        return names + [node_name("logits", s) for s in self.spans]

    @cached_property
    def node_index(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.node_names)}



def edge_table(graph: Graph, spans: list[str], resid: np.ndarray | None,
               cross: np.ndarray | None) -> pd.DataFrame:
    """The edge table of docs/numbers.md from dense score arrays, rows in `EdgeSpace` order.

    ``resid``: [S, n_forward, n_backward] (entries off `Graph.edge_mask` ignored).
    ``cross``: [3, L, H, S_query, S_key] for kinds q, k, v, or None (no crossing edges).
    """
    space = EdgeSpace(graph, list(spans), crossing=cross is not None)
    table = space.frame()
    table["score"] = space.rows(resid, cross).astype(np.float64, copy=False)
    return table


_SPACES: dict = {}


def edge_space(cfg: GraphConfig, spans, crossing: bool) -> EdgeSpace:
    """The `EdgeSpace` of graph ``cfg`` over ``spans``, one shared object per (cfg, spans,
    crossing): its per-row arrays are built once however many results and circuits use it.

    >>> cfg = GraphConfig(2, 2, 8)
    >>> edge_space(cfg, ["A", "B"], True) is edge_space(cfg, ("A", "B"), True)
    True
    """
    key = (cfg, tuple(spans), crossing)
    if key not in _SPACES:
        _SPACES[key] = EdgeSpace(Graph(cfg), list(spans), crossing)
    return _SPACES[key]
