"""Circuit search (docs/numbers.md): which rows of an `EdgeSpace` a search method keeps.

Greedy starts at the logits of the last span and repeatedly adds the best unit (see `Units`)
whose child node is already in the circuit (`GreedyOrder`, computed lazily and kept in a cache
per result); ``topn`` takes the n best units, ``threshold`` every unit scoring at least the
threshold. Afterwards (``prune``) every row not on a path from an ``input`` node to that root is
dropped, row by row, so a merged group keeps only the kinds whose own input is connected.

Example:
    >>> import numpy as np
    >>> from peap_widget.graph import GraphConfig, edge_space
    >>> space = edge_space(GraphConfig(2, 2, 8), ["A", "B"], True)
    >>> scores = np.linspace(-1, 1, len(space))
    >>> rows = search(space, scores, n_edges=10)
    >>> rows.shape == (len(space),), int(rows.sum()) >= 1
    (True, True)
    >>> top_indices(np.array([0.5, 2.0, 2.0, -1.0]), 2)
    array([1, 2])
"""

from __future__ import annotations

import numpy as np

from ..errors import PeapError
from ..graph.space import EdgeSpace
from .greedy import GreedyOrder
from .units import units_of

SEARCH_METHODS = ("greedy", "topn", "threshold")


def search(space: EdgeSpace, scores: np.ndarray, n_edges: int | None = None, method: str = "greedy",
           merge_qkv: bool = True, absolute: bool = True, threshold: float | None = None,
           prune: bool = True, order_cache: dict | None = None) -> np.ndarray:
    """Rows (bool mask) of the circuit found by ``method`` (see `AttributionResult.circuit`)."""
    if method not in SEARCH_METHODS:
        raise PeapError(f"unknown circuit search method {method!r}; use one of {SEARCH_METHODS}")
    units = units_of(space, merge_qkv)
    if method == "threshold":
        if threshold is None:
            raise PeapError("method='threshold' needs threshold=...")
        unit_mask = units.keys(scores, absolute) >= threshold
    else:
        if n_edges is None or int(n_edges) != n_edges or n_edges < 0:
            raise PeapError(f"n_edges must be a non-negative integer, got {n_edges!r}")
        unit_mask = np.zeros(units.n, dtype=bool)
        if method == "greedy":
            unit_mask = greedy_set(space, scores, int(n_edges), merge_qkv, absolute, order_cache)
        else:
            unit_mask[top_indices(units.keys(scores, absolute), int(n_edges))] = True
    rows = units.rows_mask(unit_mask)
    return space.on_paths(rows) if prune else rows


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


def greedy_set(space: EdgeSpace, scores: np.ndarray, n: int, merge_qkv: bool, absolute: bool,
               cache: dict | None) -> np.ndarray:
    """[units] bool: the first ``n`` units of the greedy order. When ``n`` covers every unit
    greedy can reach, that is the reachable set, found without ordering it."""
    units = units_of(space, merge_qkv)
    mask = np.zeros(units.n, dtype=bool)
    g = cached_greedy(space, scores, merge_qkv, absolute, cache)
    if not g.done and n >= units.n // 2 and n >= units.n_reachable:
        mask[:] = units.unit_mask(space.root_reachable[space.child])
        return mask
    mask[g.prefix(n)] = True
    return mask


def cached_greedy(space: EdgeSpace, scores: np.ndarray, merge_qkv: bool, absolute: bool,
                  cache: dict | None) -> GreedyOrder:
    """The (lazily extended) greedy order, kept in ``cache`` by (merge_qkv, absolute)."""
    ck = (bool(merge_qkv), bool(absolute))
    g = None if cache is None else cache.get(ck)
    if g is None:
        units = units_of(space, merge_qkv)
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
    return cached_greedy(space, scores, merge_qkv, absolute, cache).prefix(n)

