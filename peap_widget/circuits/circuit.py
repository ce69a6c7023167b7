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

import json
from ..util.lazy import cached_property
from pathlib import Path

import numpy as np

from ..errors import PeapError
from ..graph.space import QKV, EdgeSpace, Graph, GraphConfig
from .greedy import GreedyOrder
from ..util.jsonio import dump_json

FORMAT = "peap_widget.circuit"
SEARCH_METHODS = ("greedy", "topn", "threshold")


class Units:
    """The search graph's units over an `EdgeSpace`: rows grouped (q/k/v merged or not).

    Units are numbered like rows: residual rows are their own units (same index); crossing rows
    follow, one unit each, or (``merge_qkv``) one per (head, query span, key span) group, whose
    q, k and v rows are the group's index plus 0, 1 and 2 times the rows per kind. So every map
    between rows and units is arithmetic and nothing here holds per-row Python objects.
    """

    def __init__(self, space: EdgeSpace, merge_qkv: bool):
        self.space, self.merge_qkv = space, merge_qkv
        #: whether crossing rows are grouped (q/k/v merged and there are crossing rows)
        self.merged = bool(merge_qkv and space.crossing)
        self.per_kind = space.n_cross // 3
        self.n = space.n_resid + (self.per_kind if self.merged else space.n_cross)

    @cached_property
    def of_row(self) -> np.ndarray:
        """[rows] the unit of every row."""
        sp = self.space
        of = np.arange(len(sp), dtype=np.int64 if len(sp) >= 2**31 else np.int32)
        if self.merged:
            of[sp.n_resid:] = sp.n_resid + np.tile(np.arange(self.per_kind), 3)
        return of

    def rows_mask(self, unit_mask: np.ndarray) -> np.ndarray:
        """[rows] bool: the rows of the units in ``unit_mask``."""
        unit_mask = np.asarray(unit_mask, dtype=bool)
        if not self.merged:
            return unit_mask.copy()
        sp = self.space
        return np.concatenate([unit_mask[: sp.n_resid], np.tile(unit_mask[sp.n_resid:], 3)])

    def rows_of(self, units: np.ndarray) -> np.ndarray:
        """Sorted rows of ``units`` (a merged group's q, k and v rows), by arithmetic."""
        units = np.asarray(units, dtype=np.int64)
        if not self.merged:
            return np.sort(units)
        cross = units >= self.space.n_resid
        grouped = units[cross][:, None] + self.per_kind * np.arange(3)
        return np.sort(np.concatenate([units[~cross], grouped.ravel()]))

    def unit_mask(self, row_mask: np.ndarray) -> np.ndarray:
        """[units] bool: units with at least one row in ``row_mask``."""
        row_mask = np.asarray(row_mask, dtype=bool)
        if not self.merged:
            return row_mask.copy()
        sp = self.space
        return np.concatenate([row_mask[: sp.n_resid],
                               row_mask[sp.n_resid:].reshape(3, -1).any(0)])

    def count(self, row_mask: np.ndarray) -> int:
        """How many units have a row in ``row_mask`` (a merged group counts once)."""
        row_mask = np.asarray(row_mask, dtype=bool)
        if not self.merged:
            return int(np.count_nonzero(row_mask))
        sp = self.space
        return int(np.count_nonzero(row_mask[: sp.n_resid])
                   + np.count_nonzero(row_mask[sp.n_resid:].reshape(3, -1).any(0)))

    def _values(self, scores, absolute: bool, rows=None) -> np.ndarray:
        s = np.asarray(scores, dtype=np.float64)
        vals = s if rows is None else s[rows]
        vals = np.abs(vals) if absolute else vals
        return np.where(np.isnan(vals), -np.inf, vals)

    def keys(self, scores: np.ndarray, absolute: bool) -> np.ndarray:
        """[units] ranking key: |score| (merged: max |q|,|k|,|v|) or the signed score (merged:
        the largest); NaN scores rank as -inf."""
        vals = self._values(scores, absolute)
        if not self.merged:
            return vals
        n_resid = self.space.n_resid
        return np.concatenate([vals[:n_resid], vals[n_resid:].reshape(3, -1).max(0)])

    def keys_of(self, scores: np.ndarray, absolute: bool, units: np.ndarray) -> np.ndarray:
        """`keys` of just ``units`` (no array over all units)."""
        units = np.asarray(units, dtype=np.int64)
        n_resid = self.space.n_resid
        if not self.merged or not len(units) or units.max() < n_resid:
            return self._values(scores, absolute, units)
        cross = units >= n_resid
        rows = np.where(cross[:, None], units[:, None] + self.per_kind * np.arange(3),
                        units[:, None])
        return self._values(scores, absolute, rows).max(1)

    def into(self, node: int) -> tuple[np.ndarray, np.ndarray]:
        """(units whose child is ``node``, their parent nodes): parents [m] for single rows,
        [m, 3] (q, k, v) for merged q/k/v groups. Units come in increasing order."""
        rows, parents = self.space.incoming(node)
        if not self.merged or not len(rows) or rows[0] < self.space.n_resid:
            return rows, parents
        # a head's incoming crossing rows: q rows, k rows, v rows, one of each per group
        m = len(rows) // 3
        return rows[:m], parents.reshape(3, m).T

    def parents_of(self, units: np.ndarray) -> np.ndarray:
        """[len(units), 1 or 3] parent nodes of ``units`` (merged: 3 per unit, -1 padded for
        residual units)."""
        units = np.asarray(units, dtype=np.int64)
        sp = self.space
        if not self.merged:
            return self.space.parents_of(units)[:, None]
        out = np.full((len(units), 3), -1, dtype=np.int64)
        cross = units >= sp.n_resid
        out[~cross, 0] = self.space.parents_of(units[~cross])
        rows = units[cross][:, None] + self.per_kind * np.arange(3)
        out[cross] = self.space.parents_of(rows.ravel()).reshape(-1, 3)
        return out

    @property
    def child(self) -> np.ndarray:
        """[units] child node of every unit (all rows of a unit share it)."""
        sp = self.space
        return sp.child[: self.n] if not self.merged else np.concatenate(
            [sp.child[: sp.n_resid], sp.child[sp.n_resid: sp.n_resid + self.per_kind]])

    @property
    def parents(self) -> np.ndarray:
        """[units, 1 or 3] parent nodes of every unit (-1 padded)."""
        return self.parents_of(np.arange(self.n))

    @cached_property
    def n_reachable(self) -> int:
        """How many units the full greedy order has: those whose child has a path to the root
        (greedy takes each of them sooner or later; the scores only decide when)."""
        sp = self.space
        return self.count(sp.root_reachable[sp.child])

    def greedy_order(self, key: np.ndarray) -> np.ndarray:
        """Units in the order greedy search adds them, until none is reachable."""
        key = np.asarray(key, dtype=np.float64)
        return GreedyOrder(self, key.__getitem__, lambda: key).prefix()

    def on_paths(self, unit_mask: np.ndarray) -> np.ndarray:
        """Units of ``unit_mask`` lying on some path from an input node to the root (a merged
        unit when any of its rows is)."""
        return self.unit_mask(self.space.on_paths(self.rows_mask(unit_mask)))


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
        """The rows of the edge table in the circuit (q/k/v rows apart), with scores, indexed by
        row number."""
        rows = np.nonzero(self.in_rows)[0]
        t = self.space.frame(rows)
        t["score"] = self.scores[rows]
        return t

    @property
    def n_edges(self) -> int:
        """Edges in the circuit, counting a merged q/k/v group once when ``merge_qkv``."""
        return self.units.count(self.in_rows)

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
        return self.space.real_total(self.in_rows, self.span_lengths)

    @property
    def real_fraction(self) -> float | None:
        if self.span_lengths is None:
            return None
        total = self.space.real_total(np.ones(len(self.space), dtype=bool), self.span_lengths)
        return self.space.real_total(self.in_rows, self.span_lengths) / total

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
        return self.space.group_rows(row) if merged else np.asarray([row])

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
        hit = np.zeros(sp.n_nodes, dtype=bool)
        hit[ids] = True
        return np.nonzero(hit[sp.child] | hit[sp.parent])[0]

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
        t = self.space.frame(rows).astype(object)
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
            spans = d["spans"]
            if not isinstance(spans, list) or not all(isinstance(x, str) for x in spans):
                raise ValueError(f"'spans' must be a list of names, got {spans!r}")
            cfg = GraphConfig.from_dict(d["graph"], len(spans), bool(d["crossing"]))
            space = _space(cfg, tuple(spans), bool(d["crossing"]))
            in_rows = np.zeros(len(space), dtype=bool)
            scores = np.full(len(space), np.nan)
            edges = d["edges"]
            if edges:
                if any(len(e) != 6 for e in edges):
                    raise ValueError("every edge needs kind, src, dst, src_span, dst_span, score")
                rows = space.rows_of_keys(*zip(*(e[:5] for e in edges)))
                if (rows < 0).any():
                    raise KeyError(f"no edge {tuple(edges[int(np.argmin(rows))][:5])!r} "
                                   "(kind, src, dst, src_span, dst_span)")
                in_rows[rows] = True
                scores[rows] = [np.nan if e[5] is None else e[5] for e in edges]
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
        kinds = ("resid", *QKV)
        for row in np.nonzero(self.in_rows)[0]:
            kind = kinds[0] if row < sp.n_resid else kinds[1 + sp.kind[row - sp.n_resid]]
            G.add_edge(sp.node_names[sp.parent[row]], sp.node_names[sp.child[row]], key=int(row),
                       kind=kind, score=float(self.scores[row]), row=int(row))
        return G

    def to_mib(self) -> dict:
        """The EAP-IG / MIB graph JSON with positions collapsed: an edge is in the graph when it
        is in the circuit at any span, its score is the sum over spans. Crossing edges have no
        MIB counterpart and are left out."""
        sp = self.space
        g = sp.graph
        resid_in, _ = sp.dense(self.in_rows, False)
        resid_score, _ = sp.dense(np.nan_to_num(self.scores), 0.0)
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
            names, edges = list(d["edges"]), list(d["edges"].values())
            ends = [name.split("->") for name in names]
            if any(len(e) != 2 for e in ends):
                raise ValueError("MIB edge names look like 'm0->a1.h2<q>'")
            n = len(names)
            rows = space.rows_of_keys(["resid"] * n, [a for a, _ in ends], [b for _, b in ends],
                                      ["all"] * n, ["all"] * n)
            if (rows < 0).any():
                raise KeyError(f"no edge {names[int(np.argmin(rows))]!r} in this graph")
            in_rows[rows] = [bool(e["in_graph"]) for e in edges]
            given = [e.get("score") is not None for e in edges]
            scores[rows[given]] = [float(e["score"]) for e, g in zip(edges, given) if g]
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
    if method == "threshold":
        if threshold is None:
            raise PeapError("method='threshold' needs threshold=...")
        unit_mask = units.keys(scores, absolute) >= threshold
    else:
        if n_edges is None or int(n_edges) != n_edges or n_edges < 0:
            raise PeapError(f"n_edges must be a non-negative integer, got {n_edges!r}")
        unit_mask = np.zeros(units.n, dtype=bool)
        if method == "greedy":
            unit_mask = _greedy_set(space, scores, int(n_edges), merge_qkv, absolute, order_cache)
        else:
            unit_mask[top_indices(units.keys(scores, absolute), int(n_edges))] = True
    rows = units.rows_mask(unit_mask)
    return _on_paths(space, rows) if prune else rows


def top_indices(key: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` largest entries of ``key``, largest first, ties to the smaller index
    (a stable sort's order) without sorting everything."""
    n = min(max(int(n), 0), len(key))
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if n < len(key):
        kth = -np.partition(-key, n - 1)[n - 1]   # the n-th largest value
        cand = np.nonzero(key >= kth)[0]          # every index tied with it comes along
    else:
        cand = np.arange(len(key))
    return cand[np.argsort(-key[cand], kind="stable")][:n]


def _greedy_set(space, scores, n: int, merge_qkv: bool, absolute: bool, cache) -> np.ndarray:
    """[units] bool: the first ``n`` units of the greedy order. When ``n`` covers every unit
    greedy can reach, that is the reachable set, found without ordering it."""
    units = _units(space, merge_qkv)
    mask = np.zeros(units.n, dtype=bool)
    g = _greedy(space, scores, merge_qkv, absolute, cache)
    if not g._done and n >= units.n // 2 and n >= units.n_reachable:
        mask[:] = units.unit_mask(space.root_reachable[space.child])
        return mask
    mask[g.prefix(n)] = True
    return mask


def _greedy(space, scores, merge_qkv: bool, absolute: bool, cache: dict | None) -> GreedyOrder:
    """The (lazily extended) greedy order, kept in ``cache`` by (merge_qkv, absolute)."""
    ck = (bool(merge_qkv), bool(absolute))
    g = None if cache is None else cache.get(ck)
    if g is None:
        units = _units(space, merge_qkv)
        g = GreedyOrder(units, lambda u: units.keys_of(scores, absolute, u),
                        lambda: units.keys(scores, absolute))
        if cache is not None:
            cache[ck] = g
    return g


def greedy_order(space: EdgeSpace, scores: np.ndarray, merge_qkv: bool = True,
                 absolute: bool = True, cache: dict | None = None,
                 n: int | None = None) -> np.ndarray:
    """The first ``n`` units (all when None) in the order greedy search adds them; computed only
    as far as needed and kept in ``cache`` (by (merge_qkv, absolute)) to extend later."""
    return _greedy(space, scores, merge_qkv, absolute, cache).prefix(n)


def _on_paths(space: EdgeSpace, rows: np.ndarray) -> np.ndarray:
    """Rows of ``rows`` on some path from an input node to the root, row by row (so a merged
    q/k/v group loses the rows whose own input is cut off)."""
    return space.on_paths(rows)
