"""Circuits: subsets of an `EdgeSpace`'s edges, found by search and edited by hand.

A `Circuit` is a mask over the space's rows (``in_rows``) with the scores it came from; sizes
count `Units` (q/k/v of one head and span pair as one edge when ``merge_qkv``). Edits (edges,
nodes) can be undone. Search lives in `peap_widget.circuits.search`, the file formats in
`peap_widget.circuits.formats` (the ``to_*`` / ``from_*`` methods here call them).

Example:
    >>> from peap_widget.models.examples import random_result
    >>> res = random_result(layers=2, heads=2, spans=2)
    >>> circ = res.circuit(n_edges=50)               # greedy, q/k/v merged
    >>> circ.nodes()
    ['input@S1', 'a1.h0@S1', 'a1.h0<q>@S1', 'logits@S1']
    >>> circ.remove_node("a1.h0@S1"), circ.n_edges, circ.undo(), circ.n_edges
    (4, 0, True, 4)
    >>> len(circ.edges) == circ.n_rows               # rows of res.edges in the circuit
    True
    >>> text = circ.save("circuit.json")
    >>> pw.Circuit.load("circuit.json").n_rows == circ.n_rows
    True
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from ..errors import PeapError
from ..graph.names import QKV, node_name, split_node
from ..graph.space import EdgeSpace, edge_space
from ..util.jsonio import dump_json
from . import formats
from .formats import FORMAT
from .search import SEARCH_METHODS, greedy_order, search, top_indices
from .units import Units, units_of

if TYPE_CHECKING:
    import networkx

__all__ = ["FORMAT", "SEARCH_METHODS", "Circuit", "Units", "edge_space", "greedy_order", "search",
           "top_indices", "units_of"]


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

    def __init__(self, space: EdgeSpace, in_rows: ArrayLike, scores: ArrayLike | None = None,
                 merge_qkv: bool = True, settings: dict | None = None,
                 span_lengths: ArrayLike | None = None, name: str = ""):
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
        return units_of(self.space, self.merge_qkv)

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

    def _rows_of_edge(self, edge: int | str | tuple, merged: bool | None) -> np.ndarray:
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

    def add_edge(self, edge: int | str | tuple, merged: bool | None = None) -> int:
        """Add an edge (row index, key tuple or name); with q/k/v merged, its whole group.
        Returns how many rows changed."""
        return self._set(self._rows_of_edge(edge, merged), True)

    def remove_edge(self, edge: int | str | tuple, merged: bool | None = None) -> int:
        """Remove an edge (as `add_edge` takes it). Returns how many rows changed."""
        return self._set(self._rows_of_edge(edge, merged), False)

    def _node_rows(self, node: str) -> np.ndarray:
        sp = self.space
        base, span = split_node(node)
        spans = [span] if span else sp.spans
        names = [node_name(base, s) for s in spans]
        if base in sp.graph.head_names:  # a head takes its q/k/v inputs at those spans along
            names += [node_name(f"{base}<{c}>", s) for s in spans for c in QKV]
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
        keep = self.space.on_paths(self.in_rows)
        return self._set(np.nonzero(self.in_rows & ~keep)[0], False)

    def forget_history(self) -> None:
        """Drop the undo history (the current edges stay)."""
        self._history.clear()

    # --- files (peap_widget.circuits.formats) ------------------------------------------------------

    def to_dict(self) -> dict:
        """The ``peap_widget.circuit`` JSON document (`formats.circuit_to_dict`)."""
        return formats.circuit_to_dict(self)

    def to_json(self, path: str | Path | None = None) -> str:
        return dump_json(self.to_dict(), path)

    save = to_json

    @classmethod
    def from_dict(cls, d: dict) -> Circuit:
        return formats.circuit_from_dict(cls, d)

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> Circuit:
        return formats.circuit_from_json(cls, text_or_path)

    load = from_json

    def to_networkx(self) -> networkx.MultiDiGraph:
        """A ``networkx.MultiDiGraph`` of positional nodes (`formats.to_networkx`)."""
        return formats.to_networkx(self)

    def to_mib(self) -> dict:
        """The EAP-IG / MIB graph JSON, positions collapsed (`formats.to_mib`)."""
        return formats.to_mib(self)

    def to_mib_json(self, path: str | Path | None = None) -> str:
        return dump_json(self.to_mib(), path)

    @classmethod
    def from_mib(cls, d: dict | str | Path, merge_qkv: bool = True) -> Circuit:
        """A position-free circuit from MIB graph JSON (`formats.circuit_from_mib`)."""
        return formats.circuit_from_mib(cls, d, merge_qkv)

