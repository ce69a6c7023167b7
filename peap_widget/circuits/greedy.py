"""Greedy circuit search (PEAP App. C), computed lazily: only as far as asked.

Greedy starts with the root (the logits at the last span) active and repeatedly takes the
best-keyed unit whose child node is active, then activates the unit's parents. Every unit has
exactly one child, so a unit becomes a candidate exactly when its child is activated and stays one
until taken. Two ways to produce that order, both exact:

- **merge** (short prefixes): a k-way merge of one *stream* per active node (its incoming units,
  best first), a stream joining when its node is activated. A heap holds one head per stream;
  nothing is pushed twice, nothing needs a 'taken' check, and a stream is sorted only when its
  head is taken (the heads of all single-slot residual streams come from one vectorised pass
  once a request is long).
- **walk** (long requests, e.g. a curve at half the graph): sort every unit once and walk that
  list in windows, taking the units whose child is active, vectorised, up to the next unit that
  activates a node. A node activated after the walk passed some of its units makes those
  *overdue*: they beat everything still ahead, so they go to a small heap that is emptied (in
  order, with its own activations) before the walk goes on.

Ties on the key go to the smaller unit index (keys are compared as ``(-key, unit)``), NaN keys
count as -inf: the same order as a heap over all candidate units.

Example:
    >>> import numpy as np
    >>> from peap_widget.graph import GraphConfig, edge_space
    >>> from peap_widget.circuits.units import units_of
    >>> units = units_of(edge_space(GraphConfig(2, 2, 8), ["A", "B"], True), True)
    >>> keys = np.linspace(0, 1, units.n)
    >>> g = GreedyOrder(units, lambda u: keys[u])
    >>> first = g.prefix(5)                # the first 5 units, computed lazily
    >>> len(first), g.prefix(3).tolist() == first[:3].tolist()
    (5, True)
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .units import Units

#: requests reaching this far past the computed prefix switch from merging to walking
WALK = 400_000
#: requests reaching this far first find the best unit of every residual stream in one pass
HEADS = 20_000


def _neg_keys(keys) -> np.ndarray:
    """-key with NaN as +inf (so NaN keys rank last), as float64."""
    neg = -np.asarray(keys, dtype=np.float64)
    neg[np.isnan(neg)] = np.inf
    return neg


class GreedyOrder:
    """The greedy order of ``units`` (a `peap_widget.circuits.units.Units`) under ``key_of(units)``
    (float keys, higher first, NaN as -inf), computed on demand and kept. ``all_keys()``, when
    given, returns every unit's key at once (faster than ``key_of(np.arange(units.n))``).

    ``prefix(n)`` returns the first ``n`` units (all reachable ones when None), extending the
    computed prefix only when needed.
    """

    def __init__(self, units: Units, key_of: Callable[[np.ndarray], np.ndarray],
                 all_keys: Callable[[], np.ndarray] | None = None):
        self.units, self.key_of = units, key_of
        self.all_keys = all_keys or (lambda: key_of(np.arange(units.n)))
        space = units.space
        self._active = bytearray(space.n_nodes)
        self._heap: list = []                  # (neg key, unit, node, position or -1)
        self._streams: dict[int, tuple] = {}   # node -> (neg keys, units, parents, 3 each?)
        self._order: list[int] = []            # merge mode's output
        self._parts: list[np.ndarray] = []     # the order so far, as arrays
        self._length = 0
        self._array = np.zeros(0, dtype=np.int64)
        self._done = False                     # no unit left to take
        self._walk: _Walk | None = None
        self._head_unit = self._head_neg = None  # per node, once `_precompute_heads` ran
        self._activate(space.root)

    @property
    def done(self) -> bool:
        """Whether the whole order is known (no reachable unit is left to take)."""
        return self._done

    def prefix(self, n: int | None = None) -> np.ndarray:
        """The first ``n`` units of the greedy order (fewer if fewer are reachable)."""
        goal = np.inf if n is None else max(0, int(n))
        if not self._done and goal > self._length:
            self._extend(goal)
        if len(self._array) != self._length:
            self._flush()
            self._array = (np.concatenate(self._parts) if self._parts
                           else np.zeros(0, dtype=np.int64))
            self._parts = [self._array]
        return self._array if n is None else self._array[: max(0, int(n))]

    def _flush(self) -> None:
        """Move merge mode's Python list into the array parts."""
        if self._order:
            self._parts.append(np.asarray(self._order, dtype=np.int64))
            self._order = []

    def _extend(self, goal) -> None:
        if self._walk is None and goal - self._length >= WALK:
            self._flush()
            self._walk = _Walk(self)
            self._heap.clear()
            self._streams.clear()
        if self._walk is not None:
            self._walk.run(goal)
        else:
            self._merge(goal)

    # --- merge mode ---------------------------------------------------------------------------

    def _activate(self, node: int) -> None:
        """Mark ``node`` active and put its best incoming unit on the heap. The stream is
        sorted only when that head is taken (about half the streams never are)."""
        self._active[node] = 1
        if self._head_unit is not None and self._head_unit[node] >= 0:  # head known already
            heapq.heappush(self._heap, (self._head_neg[node], self._head_unit[node], node, -1))
            return
        stream = self._stream(node)
        if stream is not None:
            neg, units = stream[:2]
            best = int(neg.argmin())  # the first of equal keys: units come increasing
            heapq.heappush(self._heap, (neg.item(best), units.item(best), node, -1))

    def _stream(self, node: int) -> tuple | None:
        """``node``'s incoming units unsorted: (neg keys, units, parents, 3 parents each?)."""
        units, parents = self.units.into(node)
        if not len(units):
            return None
        stream = self._streams[node] = (_neg_keys(self.key_of(units)), units, parents,
                                        parents.ndim > 1)
        return stream

    def _sorted(self, node: int) -> tuple:
        """``node``'s stream sorted best first, ties to the smaller unit (its head comes first,
        as `_activate` chose it)."""
        neg, units, parents, wide = self._streams.get(node) or self._stream(node)
        order = np.argsort(neg, kind="stable")
        stream = self._streams[node] = (neg[order], units[order], parents[order], wide)
        return stream

    def _precompute_heads(self) -> None:
        """The best unit of every single-slot residual stream at once (see
        `EdgeSpace.resid_heads`), so activating such a node costs a heap push."""
        space = self.units.space
        nodes, rows, vals = space.resid_heads(_neg_keys(self.all_keys()[: space.n_resid]))
        unit = np.full(space.n_nodes, -1, dtype=np.int64)
        value = np.zeros(space.n_nodes)
        unit[nodes], value[nodes] = rows, vals
        self._head_unit, self._head_neg = unit.tolist(), value.tolist()

    def _merge(self, goal) -> None:
        heap, order, active, streams = self._heap, self._order, self._active, self._streams
        if self._head_unit is None and goal - self._length >= HEADS:
            self._precompute_heads()
        replace, pop, activate = heapq.heapreplace, heapq.heappop, self._activate
        start = len(order)
        todo = goal - self._length
        while heap and len(order) - start < todo:
            _, u, node, i = heap[0]
            order.append(u)
            if i < 0:  # the head of a stream not sorted yet
                i = 0
                neg, us, parents, wide = self._sorted(node)
            else:
                neg, us, parents, wide = streams[node]
            if i + 1 < len(us):  # the stream's next unit takes its place
                replace(heap, (neg.item(i + 1), us.item(i + 1), node, i + 1))
            else:
                pop(heap)
            for p in (parents[i].tolist() if wide else (parents.item(i),)):
                if p >= 0 and not active[p]:
                    activate(p)
        self._length += len(order) - start
        self._done = not heap


class _Walk:
    """Walk mode of a `GreedyOrder` (see the module docstring), started from its state."""

    def __init__(self, g: GreedyOrder):
        self.g = g
        units, sp = g.units, g.units.space
        self.neg = _neg_keys(g.all_keys())
        self.sorted = np.argsort(self.neg, kind="stable")  # ties: the smaller unit first
        self.pos = np.empty(units.n, dtype=np.int32 if units.n < 2**31 else np.int64)
        self.pos[self.sorted] = np.arange(units.n)  # where each unit sits in `sorted`
        self.child = units.child.astype(np.int32)
        # parents: every unit's first (for a merged q/k/v group its q input's); k and v apart
        n_resid, per = sp.n_resid, units.per_kind
        if units.merged:
            self.parent = sp.parent[: n_resid + per]
            self.extra = sp.parent[n_resid + per:].reshape(2, per).T.copy()
        else:
            self.parent, self.extra = np.asarray(sp.parent), None
        self.n_resid = n_resid
        self.active = np.frombuffer(g._active, dtype=bool)  # shares the merge mode's flags
        self.taken = np.zeros(units.n, dtype=bool)
        for part in g._parts:
            self.taken[part] = True
        self.p = 0                 # the walk's position in `sorted`
        self.window = 256
        self.overdue: list = []    # heap of (neg key, unit, stream id, position)
        self.streams: list[np.ndarray] = []

    def run(self, goal) -> None:
        g = self.g
        while g._length < goal:
            if self.overdue:
                self._take_overdue(goal)
            elif self.p < len(self.sorted):
                self._step(goal)
            else:
                g._done = True
                return

    def _emit(self, units: np.ndarray) -> None:
        self.g._parts.append(units)
        self.g._length += len(units)

    def _inactive_parents(self, units: np.ndarray) -> np.ndarray:
        """[len(units)] bool: some parent of the unit is not active."""
        out = ~self.active[self.parent[units]]
        if self.extra is not None:
            cross = units >= self.n_resid
            ex = self.extra[units[cross] - self.n_resid]
            out[cross] |= ~self.active[ex].all(1)
        return out

    def _step(self, goal) -> None:
        """Take the available units of the next window, up to and including the first that
        activates a node (then activate), or until the goal is reached."""
        W = self.sorted[self.p: self.p + self.window]
        idx = np.flatnonzero(self.active[self.child[W]] & ~self.taken[W])  # available
        events = idx[self._inactive_parents(W[idx])]
        take = idx if not len(events) else idx[: np.searchsorted(idx, events[0]) + 1]
        consumed = len(W) if not len(events) else events[0] + 1
        need = goal - self.g._length
        activate = len(events) > 0
        if len(take) > need:             # the goal comes first: stop after its last unit
            take = take[: int(need)]
            consumed, activate = take[-1] + 1, False
        self.p += int(consumed)
        self._emit(W[take])
        self.window = 256 if len(events) else min(self.window * 2, 1 << 20)
        if activate:
            self._activate_parents(int(W[events[0]]))

    def _activate_parents(self, unit: int) -> None:
        act = self.g._active  # the bytearray: fast scalar reads
        node = self.parent.item(unit)
        if not act[node]:
            self._activate(node)
        if self.extra is not None and unit >= self.n_resid:
            for node in self.extra[unit - self.n_resid].tolist():
                if not act[node]:
                    self._activate(node)

    def _activate(self, node: int) -> None:
        """Mark ``node`` active; its units the walk already passed are overdue."""
        self.g._active[node] = 1
        units = self.g.units.into(node)[0]
        late = units[self.pos[units] < self.p]
        if len(late):
            late = late[np.argsort(self.pos[late])]
            self.streams.append(late)
            heapq.heappush(self.overdue, (self.neg.item(late[0]), late.item(0),
                                          len(self.streams) - 1, 0))

    def _take_overdue(self, goal) -> None:
        """Empty the overdue heap in order (its units beat everything ahead of the walk),
        activating as it goes."""
        heap, taken, streams, neg = self.overdue, [], self.streams, self.neg
        room = goal - self.g._length
        replace, pop, activate = heapq.heapreplace, heapq.heappop, self._activate_parents
        while heap and len(taken) < room:
            _, u, sid, i = heap[0]
            taken.append(u)
            stream = streams[sid]
            if i + 1 < len(stream):
                nxt = stream.item(i + 1)
                replace(heap, (neg.item(nxt), nxt, sid, i + 1))
            else:
                pop(heap)
            activate(u)
        self._emit(np.asarray(taken, dtype=np.int64))
