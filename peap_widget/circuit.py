"""Circuits: subsets of an `EdgeSpace`'s edges, found by search and edited by hand.

Search (DESIGN.md section 6) works on *units*: every residual row is a unit; crossing rows are
units of their own, or (``merge_qkv=True``, the PEAP paper's default) the q, k and v rows of one
(head, query span, key span) form one unit scored max(|q|, |k|, |v|). Greedy starts at the logits
of the last span and repeatedly adds the best unit whose child node is already in the circuit;
afterwards every edge-table row not on a path from an ``input`` node to that root is dropped
(row by row, so a merged group keeps only the kinds whose own input is connected).

Example:
    >>> circ = res.circuit(n_edges=200)              # greedy, q/k/v merged       # doctest: +SKIP
    >>> circ.remove_node("a1.h2@S2"); circ.undo()                                  # doctest: +SKIP
    >>> circ.edges                                   # rows of res.edges in the circuit
    >>> circ.save("ioi_circuit.json"); pw.Circuit.load("ioi_circuit.json")         # doctest: +SKIP
"""

from __future__ import annotations

import heapq
import json
from pathlib import Path

import numpy as np

from .errors import PeapError
from .graph import QKV, EdgeSpace, Graph, GraphConfig
from .jsonio import dump_json

FORMAT = "peap_widget.circuit"
SEARCH_METHODS = ("greedy", "topn", "threshold")


class Units:
    """The search graph's units over an `EdgeSpace`: rows grouped (q/k/v merged or not)."""

    def __init__(self, space: EdgeSpace, merge_qkv: bool):
        self.space, self.merge_qkv = space, merge_qkv
        n = len(space)
        if merge_qkv and space.crossing:
            grp = space.crossing_group
            # unit of a crossing row = n_resid + its group; residual rows keep their index
            self.of_row = np.where(grp < 0, np.arange(n), space.n_resid + grp)
        else:
            self.of_row = np.arange(n)
        self.n = int(self.of_row.max()) + 1 if n else 0
        # child: every row of a unit has the same child
        self.child = np.empty(self.n, dtype=np.int64)
        self.child[self.of_row] = space.child
        # parents: up to 3 per unit (-1 padded)
        width = 3 if (merge_qkv and space.crossing) else 1
        self.parents = np.full((self.n, width), -1, dtype=np.int64)
        slot = np.zeros(n, dtype=np.int64)
        if width == 3:
            slot[space.n_resid:] = space.kind
        self.parents[self.of_row, slot] = space.parent
        # units into each node (CSR)
        by_child = np.argsort(self.child, kind="stable")
        self.into_sorted = by_child
        self.into_start = np.searchsorted(self.child[by_child], np.arange(space.n_nodes + 1))

    def keys(self, scores: np.ndarray, absolute: bool) -> np.ndarray:
        """[units] ranking key: |score| (merged: max |q|,|k|,|v|) or the signed score (merged:
        the largest)."""
        vals = np.abs(scores) if absolute else np.asarray(scores, dtype=np.float64)
        vals = np.where(np.isnan(vals), -np.inf, vals)
        key = np.full(self.n, -np.inf)
        np.maximum.at(key, self.of_row, vals)
        return key

    def greedy_order(self, key: np.ndarray) -> np.ndarray:
        """Units in the order greedy search adds them, until none is reachable."""
        active = np.zeros(self.space.n_nodes, dtype=bool)
        taken = np.zeros(self.n, dtype=bool)
        heap: list = []

        def activate(node):  # its incoming units become candidates
            active[node] = True
            for v in self.into_sorted[self.into_start[node]: self.into_start[node + 1]]:
                if not taken[v]:
                    heapq.heappush(heap, (-key[v], int(v)))

        activate(self.space.root)
        order = []
        while heap:
            _, u = heapq.heappop(heap)
            if taken[u]:
                continue
            taken[u] = True
            order.append(u)
            for p in self.parents[u]:
                if p >= 0 and not active[p]:
                    activate(p)
        return np.asarray(order, dtype=np.int64)

    def on_paths(self, unit_mask: np.ndarray) -> np.ndarray:
        """Units of ``unit_mask`` lying on some path from an input node to the root."""
        space = self.space
        units = np.nonzero(unit_mask)[0]
        child, parents = self.child[units], self.parents[units]
        valid = parents >= 0
        from_input = np.zeros(space.n_nodes + 1, dtype=bool)  # last entry: the -1 padding
        from_input[space.input_nodes] = True
        while True:  # nodes with a path from an input node
            ok = (from_input[parents] & valid).any(1)
            new = from_input.copy()
            new[child[ok]] = True
            if (new == from_input).all():
                break
            from_input = new
        to_root = np.zeros(space.n_nodes + 1, dtype=bool)
        to_root[space.root] = True
        while True:  # nodes with a path to the root
            ok = to_root[child]
            new = to_root.copy()
            new[parents[ok][valid[ok]]] = True
            if (new == to_root).all():
                break
            to_root = new
        keep = to_root[child] & (from_input[parents] & valid).any(1)
        out = np.zeros(self.n, dtype=bool)
        out[units[keep]] = True
        return out


class Circuit:
    """A set of edges of an `EdgeSpace` (``in_rows``: bool per edge-table row), editable.

    Attributes:
        space: the edge space (graph, spans, whether there are crossing edges).
        scores: per-row scores from the attribution result (NaN where unknown).
        merge_qkv: whether sizes (and edits of crossing edges) treat q/k/v of one head and span
            pair as one edge.
        settings: the attribution settings the circuit came from (ablation, metric...).
        span_lengths: [N, S] span lengths of the data, for real per-example edge counts.
    """

    def __init__(self, space: EdgeSpace, in_rows, scores=None, merge_qkv: bool = True,
                 settings: dict | None = None, span_lengths=None, name: str = ""):
        self.space = space
        self.in_rows = np.array(in_rows, dtype=bool)
        if self.in_rows.shape != (len(space),):
            raise PeapError(f"in_rows has shape {self.in_rows.shape}, expected ({len(space)},)")
        self.scores = (np.full(len(space), np.nan) if scores is None
                       else np.asarray(scores, dtype=np.float64))
        self.merge_qkv = merge_qkv
        self.settings = dict(settings or {})
        self.span_lengths = None if span_lengths is None else np.asarray(span_lengths)
        self.name = name
        self._history: list[np.ndarray] = []
        self._removed_nodes: dict[str, np.ndarray] = {}

    # --- views ---------------------------------------------------------------------------------

    @property
    def units(self) -> Units:
        return _units(self.space, self.merge_qkv)

    @property
    def edges(self):
        """The rows of the edge table in the circuit (q/k/v rows apart), with scores."""
        t = self.space.table[self.in_rows].copy()
        t["score"] = self.scores[self.in_rows]
        return t

    @property
    def n_edges(self) -> int:
        """Edges in the circuit, counting a merged q/k/v group once when ``merge_qkv``."""
        return int(np.unique(self.units.of_row[self.in_rows]).size)

    @property
    def n_rows(self) -> int:
        return int(self.in_rows.sum())

    @property
    def fraction(self) -> float:
        """n_edges / edges of the whole graph (same counting)."""
        return self.n_edges / max(self.units.n, 1)

    @property
    def n_real_edges(self) -> float | None:
        """Mean per-example real edges (each abstract edge expanded by its span lengths)."""
        if self.span_lengths is None:
            return None
        return float(self.space.real_counts(self.span_lengths)[self.in_rows].sum())

    @property
    def real_fraction(self) -> float | None:
        if self.span_lengths is None:
            return None
        counts = self.space.real_counts(self.span_lengths)
        return float(counts[self.in_rows].sum() / counts.sum())

    def nodes(self) -> list[str]:
        """Positional nodes touched by the circuit's edges (``a1.h2@S2``, ``a1.h2<k>@S1``...)."""
        sp = self.space
        ids = np.union1d(sp.child[self.in_rows], sp.parent[self.in_rows])
        return [sp.node_names[i] for i in ids]

    def __contains__(self, edge) -> bool:
        return bool(self.in_rows[self.space.row(edge)])

    def __len__(self) -> int:
        return self.n_edges

    def __repr__(self) -> str:
        real = self.n_real_edges
        return (f"Circuit({self.n_edges} edges ({self.n_rows} rows), {self.fraction:.2%} of the graph"
                + ("" if real is None else f", {real:.0f} real edges per example")
                + f", spans={self.space.spans})")

    def copy(self) -> Circuit:
        c = Circuit(self.space, self.in_rows.copy(), self.scores, self.merge_qkv, self.settings,
                    self.span_lengths, self.name)
        return c

    # --- editing ---------------------------------------------------------------------------------

    def _rows_of_edge(self, edge, merged: bool | None) -> np.ndarray:
        row = self.space.row(edge)
        merged = self.merge_qkv if merged is None else merged
        if merged and self.space.crossing_group[row] >= 0:
            return np.nonzero(self.space.crossing_group == self.space.crossing_group[row])[0]
        return np.asarray([row])

    def _set(self, rows, value: bool) -> int:
        rows = np.asarray(rows, dtype=np.int64)
        changed = int((self.in_rows[rows] != value).sum())
        if changed:
            self._history.append(self.in_rows.copy())
            self.in_rows[rows] = value
        return changed

    def add_edge(self, edge, merged: bool | None = None) -> int:
        """Add an edge (row index, key tuple or name); with q/k/v merged, its whole group.
        Returns how many rows changed."""
        return self._set(self._rows_of_edge(edge, merged), True)

    def remove_edge(self, edge, merged: bool | None = None) -> int:
        return self._set(self._rows_of_edge(edge, merged), False)

    def _node_rows(self, node: str) -> np.ndarray:
        sp = self.space
        base, _, span = node.partition("@")
        spans = [span] if span else sp.spans
        names = [f"{base}@{s}" for s in spans]
        if base in sp.graph.head_names:  # a head takes its q/k/v inputs at those spans along
            names += [f"{base}<{c}>@{s}" for s in spans for c in QKV]
        ids = [sp.node_index[n] for n in names if n in sp.node_index]
        if not ids:
            raise KeyError(f"no node {node!r} (nodes look like 'a1.h2@S2', 'm0@IO', 'a1.h2', 'm0')")
        return np.nonzero(np.isin(sp.child, ids) | np.isin(sp.parent, ids))[0]

    def remove_node(self, node: str) -> int:
        """Remove a node with all its edges: ``"a1.h2@S2"`` (one span, with the head's q/k/v
        inputs there) or ``"a1.h2"`` / ``"m0"`` (every span). `restore_node` undoes it."""
        rows = self._node_rows(node)
        rows = rows[self.in_rows[rows]]
        self._removed_nodes[node] = rows
        return self._set(rows, False)

    def restore_node(self, node: str) -> int:
        """Put back the edges an earlier ``remove_node(node)`` took out."""
        if node not in self._removed_nodes:
            raise KeyError(f"node {node!r} was not removed from this circuit")
        return self._set(self._removed_nodes.pop(node), True)

    def undo(self) -> bool:
        """Revert the last edit that changed the circuit; False when there is none."""
        if not self._history:
            return False
        self.in_rows = self._history.pop()
        return True

    def prune(self) -> int:
        """Drop every edge not on a path from an ``input`` node to the root logits."""
        keep = _on_paths(self.space, self.in_rows)
        return self._set(np.nonzero(self.in_rows & ~keep)[0], False)

    # --- files -----------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        rows = np.nonzero(self.in_rows)[0]
        t = self.space.table.iloc[rows]
        return {
            "format": FORMAT, "version": 1, "name": self.name,
            "graph": self.space.graph.cfg.to_dict(), "spans": self.space.spans,
            "crossing": self.space.crossing, "merge_qkv": self.merge_qkv,
            "settings": self.settings,
            "span_lengths": None if self.span_lengths is None else self.span_lengths.tolist(),
            "edges": [[*key, None if np.isnan(s) else float(s)]
                      for key, s in zip(t.itertuples(index=False, name=None), self.scores[rows])],
        }

    def to_json(self, path: str | Path | None = None) -> str:
        return dump_json(self.to_dict(), path)

    save = to_json

    @classmethod
    def from_dict(cls, d) -> Circuit:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise PeapError(f"not a {FORMAT} document (missing or wrong 'format' field)")
        try:
            space = _space(GraphConfig(**d["graph"]), tuple(d["spans"]), bool(d["crossing"]))
            in_rows = np.zeros(len(space), dtype=bool)
            scores = np.full(len(space), np.nan)
            for *key, score in d["edges"]:
                row = space.row(tuple(key))
                in_rows[row] = True
                scores[row] = np.nan if score is None else score
            return cls(space, in_rows, scores, bool(d["merge_qkv"]), d.get("settings"),
                       d.get("span_lengths"), d.get("name", ""))
        except (KeyError, TypeError, ValueError) as err:
            raise PeapError(f"malformed {FORMAT} document: {err}") from None

    @classmethod
    def from_json(cls, text_or_path) -> Circuit:
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            try:
                text = Path(text_or_path).read_text()
            except OSError as err:
                raise PeapError(f"cannot read a circuit from {text_or_path}: {err}") from None
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as err:
            raise PeapError(f"circuit JSON is not valid JSON: {err}") from None

    load = from_json

    # --- other formats ---------------------------------------------------------------------------

    def to_networkx(self):
        """A ``networkx.MultiDiGraph`` of positional nodes with one edge per circuit row, keyed by
        row (attributes ``kind``, ``score``, ``row``; q edges of one head and query span to
        different key spans share their end nodes)."""
        try:
            import networkx as nx
        except ImportError:
            raise PeapError("to_networkx needs networkx: pip install networkx") from None
        sp = self.space
        G = nx.MultiDiGraph(spans=sp.spans)
        t = sp.table
        for row in np.nonzero(self.in_rows)[0]:
            G.add_edge(sp.node_names[sp.parent[row]], sp.node_names[sp.child[row]], key=int(row),
                       kind=t["kind"].iat[row], score=float(self.scores[row]), row=int(row))
        return G

    def to_mib(self) -> dict:
        """The EAP-IG / MIB graph JSON with positions collapsed: an edge is in the graph when it
        is in the circuit at any span, its score is the sum over spans. Crossing edges have no
        MIB counterpart and are left out."""
        sp = self.space
        g = sp.graph
        resid_in = np.zeros((sp.n_spans, g.n_forward, g.n_backward), dtype=bool)
        resid_in[sp.span, sp.fwd, sp.bwd] = self.in_rows[: sp.n_resid]
        resid_score = np.zeros(resid_in.shape)
        resid_score[sp.span, sp.fwd, sp.bwd] = np.nan_to_num(self.scores[: sp.n_resid])
        in_any = resid_in.any(0)
        score_sum = resid_score.sum(0)
        fwd, bwd = np.nonzero(g.edge_mask)
        edges = {}
        touched = set()
        for u, v in zip(fwd, bwd):
            parent, child = g.forward_names[u], g.backward_names[v]
            edges[f"{parent}->{child}"] = {"score": float(score_sum[u, v]), "in_graph": bool(in_any[u, v])}
            if in_any[u, v]:
                touched.update((parent, child.split("<")[0]))
        nodes = {n: {"in_graph": n in touched} for n in [*g.forward_names, "logits"]}
        cfg = g.cfg
        return {"cfg": {"n_layers": cfg.n_layers, "n_heads": cfg.n_heads,
                        "parallel_attn_mlp": cfg.parallel_attn_mlp, "d_model": cfg.d_model},
                "nodes": nodes, "edges": edges}

    def to_mib_json(self, path: str | Path | None = None) -> str:
        return dump_json(self.to_mib(), path)

    @classmethod
    def from_mib(cls, d, merge_qkv: bool = True) -> Circuit:
        """A position-free circuit (one span ``all``, no crossing edges) from MIB graph JSON
        (a dict, JSON text or a path). Edge scores come along."""
        if not isinstance(d, dict):
            text = str(d)
            if not text.lstrip().startswith("{"):
                text = Path(d).read_text()
            try:
                d = json.loads(text)
            except json.JSONDecodeError as err:
                raise PeapError(f"MIB graph JSON is not valid JSON: {err}") from None
        try:
            c = d["cfg"]
            cfg = GraphConfig(int(c["n_layers"]), int(c["n_heads"]), int(c["d_model"]),
                              bool(c.get("parallel_attn_mlp", False)))
            space = _space(cfg, ("all",), False)
            in_rows = np.zeros(len(space), dtype=bool)
            scores = np.full(len(space), np.nan)
            for name, e in d["edges"].items():
                parent, child = name.split("->")
                row = space.row(("resid", parent, child, "all", "all"))
                in_rows[row] = bool(e["in_graph"])
                if e.get("score") is not None:
                    scores[row] = float(e["score"])
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise PeapError(f"malformed MIB graph JSON: {err!r}") from None
        return cls(space, in_rows, scores, merge_qkv)


_SPACES: dict = {}
_UNITS: dict = {}


def _space(cfg: GraphConfig, spans: tuple, crossing: bool) -> EdgeSpace:
    key = (cfg, tuple(spans), crossing)
    if key not in _SPACES:
        _SPACES[key] = EdgeSpace(Graph(cfg), list(spans), crossing)
    return _SPACES[key]


def _units(space: EdgeSpace, merge_qkv: bool) -> Units:
    key = (id(space), merge_qkv)
    if key not in _UNITS or _UNITS[key].space is not space:
        _UNITS[key] = Units(space, merge_qkv)
    return _UNITS[key]


def search(space: EdgeSpace, scores: np.ndarray, n_edges: int | None = None, method: str = "greedy",
           merge_qkv: bool = True, absolute: bool = True, threshold: float | None = None,
           prune: bool = True, order_cache: dict | None = None) -> np.ndarray:
    """Rows (bool mask) of the circuit found by ``method`` (see `AttributionResult.circuit`)."""
    if method not in SEARCH_METHODS:
        raise PeapError(f"unknown circuit search method {method!r}; use one of {SEARCH_METHODS}")
    units = _units(space, merge_qkv)
    key = units.keys(scores, absolute)
    if method == "threshold":
        if threshold is None:
            raise PeapError("method='threshold' needs threshold=...")
        chosen = np.nonzero(key >= threshold)[0]
    else:
        if n_edges is None or int(n_edges) != n_edges or n_edges < 0:
            raise PeapError(f"n_edges must be a non-negative integer, got {n_edges!r}")
        if method == "greedy":
            chosen = greedy_order(space, scores, merge_qkv, absolute, order_cache)[: int(n_edges)]
        else:
            chosen = np.argsort(-key, kind="stable")[: int(n_edges)]
    unit_mask = np.zeros(units.n, dtype=bool)
    unit_mask[chosen] = True
    rows = unit_mask[units.of_row]
    return _on_paths(space, rows) if prune else rows


def greedy_order(space: EdgeSpace, scores: np.ndarray, merge_qkv: bool = True,
                 absolute: bool = True, cache: dict | None = None) -> np.ndarray:
    """Units in the order greedy search adds them (kept in ``cache`` by (merge_qkv, absolute))."""
    ck = (merge_qkv, absolute)
    order = None if cache is None else cache.get(ck)
    if order is None:
        units = _units(space, merge_qkv)
        order = units.greedy_order(units.keys(scores, absolute))
        if cache is not None:
            cache[ck] = order
    return order


def _on_paths(space: EdgeSpace, rows: np.ndarray) -> np.ndarray:
    """Rows of ``rows`` on some path from an input node to the root, row by row (so a merged
    q/k/v group loses the rows whose own input is cut off)."""
    return _units(space, False).on_paths(rows)
