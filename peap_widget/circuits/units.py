"""Units: what a circuit size counts as one edge, over an `EdgeSpace`.

Every residual row is a unit; crossing rows are units of their own, or (``merge_qkv=True``, the
PEAP paper's default) the q, k and v rows of one (head, query span, key span) form one unit
scored max(|q|, |k|, |v|). `units_of` shares one `Units` per (space, merge_qkv).

Example:
    >>> from peap_widget.graph import GraphConfig, edge_space
    >>> space = edge_space(GraphConfig(2, 2, 8), ["A", "B"], True)
    >>> units_of(space, True).n, units_of(space, False).n == len(space)
    (104, True)
"""

from __future__ import annotations

import numpy as np

from ..graph.space import EdgeSpace
from ..util.lazy import cached_property
from .greedy import GreedyOrder


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


_UNITS: dict = {}


def units_of(space: EdgeSpace, merge_qkv: bool) -> Units:
    """The `Units` of ``space`` (q/k/v merged or not), one shared object per (space, merge_qkv)."""
    key = (id(space), merge_qkv)
    if key not in _UNITS or _UNITS[key].space is not space:
        _UNITS[key] = Units(space, merge_qkv)
    return _UNITS[key]
