"""CircuitExplorer: the live circuit diagram (layers x spans), pruned by hand.

State lives in traits, so a saved notebook or a `to_html` page still shows and filters the
circuit. The data traits are fixed per result (row -> parent/child node, scores, the greedy
order); the user's circuit is ``selection``:

    {"mode": "edges" | "threshold", "n_edges": int, "threshold": float,
     "added": [unit], "removed": [unit], "removed_nodes": [node], "prune": bool}

A *unit* is what a size counts as one edge: a residual row, or (q/k/v merged, the default) the
q, k and v crossing rows of one head and span pair. The circuit's rows are the first ``n_edges``
units of the greedy order (or every unit scoring at least ``threshold``), plus ``added``, minus
``removed``, minus every row touching a ``removed_nodes`` node; then (``prune``) every row not on
a path from an ``input`` node to the logits is dropped. The front end computes the same thing
(js/circuit_explorer/logic.js; a test checks they agree) so filtering needs no kernel.

With a model and dataset, each edit is re-evaluated here. The page asks with a message
``{"type": "evaluate", "version", "selection", "full"}`` that carries the selection itself (a
trait sync may arrive after the message); the kernel evaluates exactly that selection and
answers (the ``evaluation`` trait) with it and the version. The page shows numbers only when the
answered selection is the one shown, else "pending", and asks again; it sends the next request
only when the last answer arrived, so fast edits are coalesced. Where an evaluation is slow
(more than ``sample_after`` seconds on the whole dataset), edits are evaluated on a subsample of
``sample_size`` examples (the page says so) and the full evaluation is one button away.

Big graphs (an 8B model's has 13 million rows) do not go to the page whole. The page gets the
node table and the rows of the units it *holds*: S(a, b) = the first ``a`` units of the greedy
order together with the ``b`` units of largest key (max |score|; ties by unit id), plus units
named by id (``added`` / ``removed`` outside that set). At first a = b, as large as ``max_units``
allows; graphs that fit are shipped whole. Threshold t is exact on the page when t >
``key_floor`` (the largest key of a unit outside S(a, b)), size n when n <= a. Past that the page
asks for more with a message ``{"type": "more", "req", "have": {"order": a, "top": b, "units":
held}, "order": n | null, "threshold": t | null, "units": [unit ids]}`` and draws nothing until
the answer ``{"type": "chunk", "req", "from": {order, top}, "to": {order, top}, "key_floor",
"limited", "arrays": [names]}`` (buffers: the new units' ids, the greedy order from a to the
new a, and the per-row arrays of the new units' rows) has arrived; answers are at most
``chunk_units`` units, so a large step comes in several. Every request says what the page holds
(a, b), so the kernel keeps no state per page. Pages without a kernel (``to_html``) hold what was
shipped (plus what the saved circuit needs) and cap their size control there.

Circuit quality on demand: the side panel's "Completeness & minimality" button sends
``{"type": "quality", "selection", "n_samples", "seed"}``; the kernel computes
`pw.completeness` and `pw.minimality` of exactly that selection through the explorer's
`Evaluator` (all examples) and answers in the ``quality`` trait ``{selection, running, done,
total, completeness: {...}, minimality: {...}, seconds, error}`` (progress while it runs). The
page shows the numbers only while the selection they answer is the one shown, else "pending".

Head functions: ``head_functions=`` (or `CircuitExplorer.show_head_functions`) takes a DataFrame
indexed by head (``"a1.h0"``) with one numeric column per relation (`pw.head_functions`); the
hover card of a head lists its scores (trait ``head_functions``: ``{"relations": [...],
"heads": {"a1.h0": [score, ...]}}``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Union

import numpy as np
import traitlets as t

from ..circuits.circuit import Circuit
from ..circuits.search import top_indices
from ..circuits.units import units_of
from ..errors import PeapError
from ..engine.evaluate import Evaluator
from ..graph.config import HEAD, INPUT, MLP  # noqa: F401 (node types 0-2, with Q...LOGITS)
from ..graph.names import QKV, node_name, split_node
from .base import PeapWidget
from .curves import Curves, curve_series, json_number

if TYPE_CHECKING:
    import pandas as pd

    from ..circuits.result import AttributionResult
    from ..data.dataset import Dataset
    from ..engine.evaluate import EvalResult
    from ..runtime.model import Model

#: an edge as `pw.Circuit` takes it: a row index, a key tuple or a name
Edge = Union[int, tuple, str]

# node types shared with the front end: the graph's forward node kinds (INPUT, HEAD, MLP = 0, 1,
# 2), then a head's q/k/v inputs and the logits
Q, K, V, LOGITS = range(MLP + 1, MLP + 5)
HISTORY = 200


def default_selection(n_edges: int = 0) -> dict:
    return {"mode": "edges", "n_edges": int(n_edges), "threshold": 0.0, "added": [], "removed": [],
            "removed_nodes": [], "prune": True}


def selection_rows(space, merge_qkv: bool, order: np.ndarray, scores: np.ndarray,
                   selection: dict) -> np.ndarray:
    """[rows] bool: the circuit a selection stands for (see the module docstring)."""
    units = units_of(space, merge_qkv)
    chosen = np.zeros(units.n, dtype=bool)
    if selection.get("mode", "edges") == "threshold":
        chosen[units.keys(scores, True) >= float(selection.get("threshold", 0.0))] = True
    else:
        chosen[order[: max(0, int(selection.get("n_edges", 0)))]] = True
    chosen[np.asarray(selection.get("added", []), dtype=np.int64)] = True
    chosen[np.asarray(selection.get("removed", []), dtype=np.int64)] = False
    rows = chosen[units.of_row]
    gone = np.asarray(selection.get("removed_nodes", []), dtype=np.int64)
    if gone.size:
        rows &= ~(np.isin(space.child, gone) | np.isin(space.parent, gone))
    if selection.get("prune", True):
        rows &= units_of(space, False).on_paths(rows)
    return rows


def node_table(space) -> dict[str, np.ndarray]:
    """Per positional node: type (INPUT...LOGITS), layer (-1 input, L logits), head, span."""
    g, S = space.graph, space.n_spans
    L, H, F = g.L, g.H, g.n_forward
    f_type, f_layer, f_head = g.forward_coords(np.arange(F))   # an MLP's head is H
    hf = np.arange(L * H)
    s_type = (Q + np.arange(3))[None, :].repeat(L * H, 0).ravel()
    s_layer = np.repeat(hf // H, 3)
    s_head = np.repeat(hf % H, 3)
    node_type = np.concatenate([np.tile(f_type, S), np.tile(s_type, S), np.full(S, LOGITS)])
    layer = np.concatenate([np.tile(f_layer, S), np.tile(s_layer, S), np.full(S, L)])
    head = np.concatenate([np.tile(f_head, S), np.tile(s_head, S), np.zeros(S, dtype=np.int64)])
    span = np.concatenate([np.repeat(np.arange(S), F), np.repeat(np.arange(S), 3 * L * H),
                           np.arange(S)])
    assert len(node_type) == space.n_nodes
    return {"type": node_type, "layer": layer, "head": head, "span": span}


def _bytes(a, dtype) -> bytes:
    return np.ascontiguousarray(a, dtype=dtype).tobytes()


MAX_UNITS = 600_000         # units shipped with the widget: ~41 bytes each, so about 25 MB
CHUNK_UNITS = 250_000       # units per answer to a "more" request (about 10 MB)
MAX_PAGE_UNITS = 4_000_000  # the most units one page asks the kernel for
# per-row arrays sent to the page, in this order (names of the bytes traits)
ROW_ARRAYS = (("row_id", np.int32), ("row_parent", np.int32), ("row_child", np.int32),
              ("row_unit", np.int32), ("row_kind", np.int8), ("row_score", np.float64),
              ("row_src", np.int16), ("row_dst", np.int16), ("row_src_span", np.int16),
              ("row_dst_span", np.int16))


def _greedy_prefix(result, merge_qkv: bool, n: int) -> np.ndarray:
    """The first ``n`` units of the result's greedy order (computed no further than needed where
    the result can)."""
    return np.asarray(result.greedy_order(merge_qkv, absolute=True, n=int(n)), dtype=np.int64)


class _Shipping:
    """What a page may hold of one result's rows: the greedy order, the units ranked by key, and
    the per-row arrays of any set of units (see the module docstring)."""

    def __init__(self, result, merge_qkv: bool):
        self.result, self.merge_qkv = result, merge_qkv
        self.space = space = result.space
        self.units = units = units_of(space, merge_qkv)
        self.scores = np.asarray(result.scores, dtype=np.float64)
        self.keys = units.keys(self.scores, True)
        self.n_units = int(units.n)
        self.n_order = int(result.greedy_order_length(merge_qkv))
        self._top = np.zeros(0, dtype=np.int64)
        self._greedy = np.zeros(0, dtype=np.int64)

    def greedy(self, n: int) -> np.ndarray:
        n = max(0, min(int(n), self.n_order))
        if n > len(self._greedy):
            self._greedy = _greedy_prefix(self.result, self.merge_qkv, n)
        return self._greedy[:n]

    def top(self, n: int) -> np.ndarray:
        n = max(0, min(int(n), self.n_units))
        if n > len(self._top):
            self._top = top_indices(self.keys, max(n, min(self.n_units, 2 * len(self._top))))
        return self._top[:n]

    def held(self, a: int, b: int) -> np.ndarray:
        """[units] bool: S(a, b)."""
        mask = np.zeros(self.n_units, dtype=bool)
        mask[self.greedy(a)] = True
        mask[self.top(b)] = True
        return mask

    def key_floor(self, held: np.ndarray) -> float:
        """The largest key outside ``held`` (-inf when it holds every unit): thresholds above
        it select only held units."""
        rest = self.keys[~held]
        return float(rest.max()) if rest.size else float("-inf")

    def initial(self, max_units: int) -> tuple[int, int]:
        """(a, b), a = b as large as possible with |S(a, b)| <= max_units."""
        m = max(1, min(int(max_units), self.n_units))
        g, top = self.greedy(m), self.top(m)
        ids = np.concatenate([g, top])
        rank = np.concatenate([np.arange(len(g)), np.arange(len(top))])
        o = np.lexsort((rank, ids))
        ids, rank = ids[o], rank[o]
        first = np.ones(len(ids), dtype=bool)
        first[1:] = ids[1:] != ids[:-1]
        least = np.sort(rank[first])      # per unit held: the smallest k with it in S(k, k)
        k = m if len(least) <= max_units else int(least[max_units])
        return min(k, len(g)), min(k, len(top))

    def row_arrays(self, rows: np.ndarray) -> list[bytes]:
        """The `ROW_ARRAYS` of ``rows``, as bytes."""
        sp = self.space
        rows = np.asarray(rows, dtype=np.int64)
        codes = sp.codes(rows)            # src: forward node (a crossing row's: its head)
        res = rows < sp.n_resid
        dst = np.full(len(rows), -1)      # backward slot; crossing rows: -1 (the head)
        dst[res] = sp.resid_coords(rows[res])[2]
        values = {
            "row_id": rows, "row_parent": sp.parents_of(rows),
            "row_child": np.asarray(sp.child)[rows], "row_unit": self.units.of_row[rows],
            "row_kind": codes["kind"], "row_score": np.nan_to_num(self.scores[rows], nan=0.0),
            "row_src": codes["src"], "row_dst": dst,
            "row_src_span": codes["src_span"], "row_dst_span": codes["dst_span"],
        }
        return [_bytes(values[name], dtype) for name, dtype in ROW_ARRAYS]

    def payload(self, a: int, b: int, extra=()) -> dict:
        """Trait values of a page holding S(a, b) plus the units ``extra``."""
        held = self.held(a, b)
        floor = self.key_floor(held)
        extra = np.asarray(sorted({int(u) for u in extra if 0 <= int(u) < self.n_units}),
                           dtype=np.int64)
        held[extra] = True
        units = np.flatnonzero(held)
        out = dict(zip((name for name, _ in ROW_ARRAYS), self.row_arrays(self.units.rows_of(units))))
        out["unit_ids"] = _bytes(units, np.int32)
        out["unit_order"] = _bytes(self.greedy(a), np.int32)
        out["shipped"] = {"order": int(min(a, self.n_order)), "top": int(min(b, self.n_units)),
                          "key_floor": json_number(floor), "units": int(len(units))}
        return out

    def chunk(self, have_order: int, have_top: int, held_units: int, want_order=None,
              threshold=None, want_units=(), chunk_units: int = CHUNK_UNITS,
              page_units: int = MAX_PAGE_UNITS):
        """The answer to a "more" request from a page holding S(have_order, have_top) and
        ``held_units`` units in all: (content, buffers)."""
        a = max(0, min(int(have_order), self.n_order))
        b = max(0, min(int(have_top), self.n_units))
        held = self.held(a, b)
        room = max(0, int(page_units) - int(held_units))
        budget = min(int(chunk_units), room)
        a1, b1, new, reached = a, b, [], True
        if want_order is not None and int(want_order) > a:
            target = min(int(want_order), self.n_order)
            a1, fresh = _advance(self.greedy(target), a, held, budget)
            new.append(fresh)
            budget -= len(fresh)
            reached &= a1 >= target
        if threshold is not None and not float(threshold) > self.key_floor(held):
            target = int((self.keys >= float(threshold)).sum())
            b1, fresh = _advance(self.top(target), b, held, budget)
            new.append(fresh)
            reached &= b1 >= target
        n_new = sum(map(len, new))
        floor = self.key_floor(held)          # held is S(a1, b1) now
        asked = np.asarray([int(u) for u in want_units if 0 <= int(u) < self.n_units],
                           dtype=np.int64)
        new.append(asked[~held[asked]])       # units named by id come regardless of limits
        units = np.unique(np.concatenate(new))
        rows = self.units.rows_of(units)
        names = ["unit_ids", "order"] + [name for name, _ in ROW_ARRAYS]
        buffers = [_bytes(units, np.int32), _bytes(self.greedy(a1)[a:], np.int32),
                   *self.row_arrays(rows)]
        content = {"type": "chunk", "from": {"order": a, "top": b}, "to": {"order": a1, "top": b1},
                   "key_floor": json_number(floor), "limited": bool(not reached and n_new >= room),
                   "n_units": int(len(units)), "n_rows": int(len(rows)), "arrays": names}
        return content, buffers


def _advance(seq: np.ndarray, start: int, held: np.ndarray, budget: int):
    """Walk ``seq`` from ``start``, taking at most ``budget`` units not yet ``held`` (marked
    held as taken): (where the walk stopped, the units taken)."""
    part = seq[start:]
    if not part.size:
        return start, np.zeros(0, dtype=np.int64)
    fresh = ~held[part]
    taken = np.cumsum(fresh)
    end = int(np.searchsorted(taken, budget, side="right"))
    new = part[:end][fresh[:end]]
    held[new] = True
    return start + end, new


class CircuitExplorer(PeapWidget):
    """The circuit as a diagram: x = the schema's spans, y = layers (input at the bottom, logits
    at the top); heads and MLPs are nodes, residual edges run within a span, crossing q/k/v edges
    (dashed) between spans; colour = sign, width = |score|.

    Move the size control (edges or threshold), click an edge or a node to prune or restore it,
    undo, search a component, hover for scores (and, for a head, its OV logit lens and where it
    attends). With ``model`` and ``dataset`` every edit is re-evaluated (faithfulness shown next
    to the curves).

    Args:
        result: a `pw.AttributionResult`.
        model: to re-evaluate edits and to describe heads (optional, with ``dataset``).
        dataset: the examples for that (optional, with ``model``).
        n_edges: the starting size (default: the smallest evaluated size with
            faithfulness >= 0.8 when a curve is computed, else 50 edges).
        merge_qkv: count a head's q/k/v crossing edges of one span pair as one edge.
        curves: a `pw.FaithfulnessCurve` to draw next to the diagram; with a model and dataset
            and ``curves=None`` one is computed at ``curve_sizes``.
        evaluator: a `pw.Evaluator` on ``model`` and ``dataset`` to reuse (its clean and
            ablation runs are cached); default one with the result's ablation and metric.
        max_units: how many edges (units) go to the page with the widget: the first of the
            greedy order and the largest |scores| (about 41 bytes each; the default keeps an
            8B model's graph near 25 MB). Larger sizes are fetched from the kernel on demand;
            graphs that fit go whole.
        chunk_units: units per fetched chunk.
        max_page_units: the most a page asks for.
        sample_size: see ``sample_after``.
        sample_after: when one evaluation on the whole dataset takes longer than
            ``sample_after`` seconds (None: never), edits are evaluated on ``sample_size``
            examples spread over the dataset (the page shows "on k of n prompts" and offers the
            full evaluation); ``evaluate(full=True)`` always uses every example.

    Example:
        >>> explorer = pw.CircuitExplorer(res, model, ds)                  # doctest: +SKIP
        >>> explorer.set_size(120); explorer.remove_node("a2.h1@END")       # doctest: +SKIP
        >>> explorer.circuit, explorer.evaluation["faithfulness"]          # doctest: +SKIP
        >>> explorer.to_html("circuit.html")                               # doctest: +SKIP
    """

    _bundle_name = "circuit_explorer"

    # fixed per result
    info = t.Dict().tag(sync=True)
    node_names = t.List().tag(sync=True)
    node_type = t.Bytes().tag(sync=True)      # Int8 per node
    node_layer = t.Bytes().tag(sync=True)     # Int16
    node_head = t.Bytes().tag(sync=True)      # Int16
    node_span = t.Bytes().tag(sync=True)      # Int16
    # rows of the units the page holds (see the module docstring), sorted by row
    row_id = t.Bytes().tag(sync=True)         # Int32: edge-table row
    row_parent = t.Bytes().tag(sync=True)     # Int32
    row_child = t.Bytes().tag(sync=True)      # Int32
    row_unit = t.Bytes().tag(sync=True)       # Int32: unit id
    row_kind = t.Bytes().tag(sync=True)       # Int8: 0 resid, 1 q, 2 k, 3 v
    row_score = t.Bytes().tag(sync=True)      # Float64
    row_src = t.Bytes().tag(sync=True)        # Int16: forward component (crossing: the head)
    row_dst = t.Bytes().tag(sync=True)        # Int16: backward slot (crossing: -1, the head)
    row_src_span = t.Bytes().tag(sync=True)   # Int16 (edge-table columns, for JSON export)
    row_dst_span = t.Bytes().tag(sync=True)   # Int16
    unit_ids = t.Bytes().tag(sync=True)       # Int32: the units held, sorted
    unit_order = t.Bytes().tag(sync=True)     # Int32: the first `shipped.order` units of the greedy order
    shipped = t.Dict().tag(sync=True)         # {order: a, top: b, key_floor, units}
    head_info = t.Dict().tag(sync=True)       # {"a1.h2": {"promotes": ..., "copying": ..., "attends": [[...]]}}
    curves = t.List().tag(sync=True)          # [{name, points: [...]}] as FaithfulnessCurves.series
    # the user's circuit
    selection = t.Dict().tag(sync=True)
    history = t.List().tag(sync=True)         # earlier selections (undo), newest last
    evaluation = t.Dict().tag(sync=True)      # {version, faithfulness, soft, hard, kl, metric, ...}
    status = t.Unicode("").tag(sync=True)
    quality = t.Dict().tag(sync=True)         # {selection, running, done, total, completeness, minimality, ...}
    head_functions = t.Dict().tag(sync=True)  # {relations: [...], heads: {"a1.h0": [score per relation]}}

    def __init__(self, result: AttributionResult, model: Model | None = None,
                 dataset: Dataset | None = None, n_edges: int | None = None,
                 merge_qkv: bool = True, curves: Curves = None,
                 curve_sizes: Sequence[float] | None = None, head_details: bool = True,
                 evaluator: Evaluator | None = None, max_units: int = MAX_UNITS,
                 chunk_units: int = CHUNK_UNITS, max_page_units: int = MAX_PAGE_UNITS,
                 sample_size: int = 32, sample_after: float | None = 1.0,
                 head_functions: pd.DataFrame | None = None,
                 **kwargs):
        if (model is None) != (dataset is None):
            raise PeapError("give both model and dataset (to re-evaluate edits) or neither")
        self.result, self.model, self.dataset = result, model, dataset
        self.merge_qkv = merge_qkv
        space = result.space
        self._ship = ship = _Shipping(result, merge_qkv)
        self._scores = ship.scores
        self._chunk_units, self._max_page_units = int(chunk_units), int(max_page_units)
        self._evaluator = evaluator
        self._sample_size, self._sample_after = int(sample_size), sample_after
        self._sample_evaluator: Evaluator | None = None
        if model is not None and evaluator is None:
            self._evaluator = Evaluator(model, dataset, result.settings.get("ablation", "counterfactual"),
                                        result.settings.get("metric", "logit_diff"))
        super().__init__(**kwargs)
        nodes = node_table(space)
        g = space.graph
        self.info = {"layers": g.L, "heads": g.H, "spans": list(space.spans),
                     "crossing": bool(space.crossing), "merge_qkv": merge_qkv,
                     "n_rows": len(space), "n_units": ship.n_units, "n_nodes": int(space.n_nodes),
                     "n_order": ship.n_order, "method": result.method,
                     "settings": {k: v for k, v in result.settings.items()
                                  if isinstance(v, (str, int, float, bool, type(None)))},
                     "root": int(space.root), "live": model is not None,
                     "graph": g.cfg.to_dict(), "forward_names": list(g.forward_names),
                     "backward_names": list(g.backward_names),
                     "clean_metric": json_number(result.clean_mean),
                     "span_lengths": _mean_lengths(result)}
        self.node_names = list(space.node_names)
        self.node_type = _bytes(nodes["type"], np.int8)
        self.node_layer = _bytes(nodes["layer"], np.int16)
        self.node_head = _bytes(nodes["head"], np.int16)
        self.node_span = _bytes(nodes["span"], np.int16)
        for name, value in ship.payload(*ship.initial(max_units)).items():
            setattr(self, name, value)
        if model is not None and head_details:
            self.head_info = head_details_for(model, dataset)
        curve_obj = curves
        if curve_obj is None and model is not None:
            from ..analysis.curves import MIB_FRACTIONS, faithfulness_curve

            sizes = curve_sizes or MIB_FRACTIONS
            curve_obj = faithfulness_curve(model, dataset, {result.method.upper(): result},
                                           sizes=sizes, merge_qkv=merge_qkv,
                                           evaluator=self._evaluator, progress=False)
        if curve_obj is not None:
            self.curves = curve_series(curve_obj)
        if n_edges is None:
            n_edges = 50
            if curve_obj is not None:
                hit = curve_obj.table[curve_obj.table["faithfulness"] >= 0.8]
                if len(hit):
                    n_edges = int(hit["requested"].min())
        self.selection = default_selection(min(int(n_edges), ship.n_order))
        if head_functions is not None:
            self.show_head_functions(head_functions)
        self.on_msg(self._on_message)
        if self._evaluator is not None:
            self.evaluate()

    # --- the circuit -------------------------------------------------------------------------

    @property
    def _order(self) -> np.ndarray:
        """The whole greedy order (every unit greedy search ever adds)."""
        return self._ship.greedy(self._ship.n_order)

    def _order_for(self, selection: dict) -> np.ndarray:
        """As much of the greedy order as ``selection`` uses."""
        n = int(selection.get("n_edges", 0)) if selection.get("mode", "edges") == "edges" else 0
        return self._ship.greedy(max(0, n))

    @property
    def circuit(self) -> Circuit:
        """The circuit now shown (a new `pw.Circuit` each time; edit it freely)."""
        return self._circuit_of(self.selection)

    def _edit(self, **changes):
        sel = {**self.selection, **changes}
        if sel != self.selection:
            self.history = (list(self.history) + [self.selection])[-HISTORY:]
            self.selection = sel
            if self._evaluator is not None:  # edits from Python are evaluated at once
                self.evaluate()

    def set_size(self, n_edges: int | None = None, threshold: float | None = None) -> None:
        """Show the first ``n_edges`` edges of the greedy order, or every edge scoring at least
        ``threshold`` (manual edits are kept)."""
        if threshold is not None:
            self._edit(mode="threshold", threshold=float(threshold))
        elif n_edges is not None:
            if n_edges < 0:
                raise PeapError(f"n_edges must be >= 0, got {n_edges}")
            self._edit(mode="edges", n_edges=int(min(n_edges, self._ship.n_order)))
        else:
            raise PeapError("set_size needs n_edges or threshold")

    def _unit_of(self, edge) -> int:
        row = self.result.space.row(edge)
        return int(units_of(self.result.space, self.merge_qkv).of_row[row])

    def remove_edge(self, edge: Edge) -> None:
        """Prune an edge (row index, key tuple or name as in `pw.Circuit`)."""
        u = self._unit_of(edge)
        self._edit(removed=sorted(set(self.selection["removed"]) | {u}),
                   added=[a for a in self.selection["added"] if a != u])

    def add_edge(self, edge: Edge) -> None:
        """Restore or add an edge (row index, key tuple or name as in `pw.Circuit`)."""
        u = self._unit_of(edge)
        self._edit(added=sorted(set(self.selection["added"]) | {u}),
                   removed=[a for a in self.selection["removed"] if a != u])

    def _node_ids(self, node: str) -> list[int]:
        """A node name -> node ids: ``a1.h2@S2`` (a head takes its q/k/v inputs there along),
        or ``a1.h2`` / ``m0`` for that component at every span."""
        sp = self.result.space
        idx = sp.node_index
        base, span = split_node(node)
        spans = [span] if span else sp.spans
        names = [node_name(base, s) for s in spans]
        if not all(n in idx for n in names):
            raise KeyError(f"no node {node!r} (nodes look like 'a1.h2@S2', 'm0@IO', 'input@END', "
                           "or 'a1.h2' for every span)")
        slots = [node_name(f"{base}<{c}>", s) for s in spans for c in QKV]
        return [idx[n] for n in names] + [idx[n] for n in slots if n in idx]

    def remove_node(self, node: str) -> None:
        """Prune a node with every edge touching it: ``"a2.h1@END"`` (one span) or ``"a2.h1"``
        (every span)."""
        ids = self._node_ids(node)
        self._edit(removed_nodes=sorted(set(self.selection["removed_nodes"]) | set(ids)))

    def restore_node(self, node: str) -> None:
        ids = set(self._node_ids(node))
        self._edit(removed_nodes=[n for n in self.selection["removed_nodes"] if n not in ids])

    def reset(self) -> None:
        """Drop every manual edit (the size stays)."""
        self._edit(added=[], removed=[], removed_nodes=[])

    def undo(self) -> bool:
        """Undo the last edit; False when there is none."""
        if not self.history:
            return False
        *rest, last = self.history
        self.history = rest
        self.selection = last
        if self._evaluator is not None:
            self.evaluate()
        return True

    # --- evaluation ----------------------------------------------------------------------------

    def _circuit_of(self, selection: dict) -> Circuit:
        rows = selection_rows(self.result.space, self.merge_qkv, self._order_for(selection),
                              self._scores, selection)
        circ = self.result.circuit_from(rows, merge_qkv=self.merge_qkv)
        circ.name = "explorer"
        return circ

    def _sampler(self) -> Evaluator | None:
        """The subsample evaluator, built once the full evaluation proved slow (the same
        ablation, metric and mean-ablation reference: `Evaluator.subsample`)."""
        if self._sample_evaluator is None and self.dataset is not None \
                and len(self.dataset) > self._sample_size and hasattr(self._evaluator, "subsample"):
            self._sample_evaluator = self._evaluator.subsample(self._sample_size)
        return self._sample_evaluator

    def evaluate(self, version: int | None = None, selection: dict | None = None,
                 full: bool | None = None) -> dict:
        """Evaluate ``selection`` (default: the circuit now shown); the answer, with the
        selection it is for, also goes to the front end. ``full``: on every example even where
        edits are evaluated on a subsample (None: as the explorer chose)."""
        if self._evaluator is None:
            raise PeapError("this explorer has no model and dataset to evaluate with")
        sel = dict(self.selection) if selection is None else {**default_selection(), **selection}
        use_sample = (not full) and self._sample_evaluator is not None
        evaluator = self._sample_evaluator if use_sample else self._evaluator
        self.status = "evaluating"
        started = time.perf_counter()
        try:
            circ = self._circuit_of(sel)
            ev = evaluator.run(circ)
        finally:
            self.status = ""
        seconds = time.perf_counter() - started
        self.show_evaluation(ev, circ, version, seconds=seconds, selection=sel,
                             examples=len(evaluator.ds) if hasattr(evaluator, "ds") else None)
        if (not use_sample and self._sample_after is not None and seconds > self._sample_after
                and self._sample_evaluator is None):
            self._sampler()          # later edits: on a subsample
        return self.evaluation

    def show_evaluation(self, ev: EvalResult, circuit: Circuit | None = None,
                        version: int | None = None,
                        seconds: float | None = None, selection: dict | None = None,
                        examples: int | None = None) -> None:
        """Show an `EvalResult` of ``selection`` (default: the circuit now shown; ``circuit``:
        its circuit, if at hand) as the explorer's numbers; pages without a kernel show what was
        set here."""
        sel = dict(self.selection) if selection is None else selection
        circ = (self.circuit if selection is None else self._circuit_of(sel)) if circuit is None \
            else circuit
        total = None if self.dataset is None else len(self.dataset)
        refusal = getattr(ev, "refusal", None)
        self.evaluation = {
            "version": version, "faithfulness": json_number(ev.faithfulness),
            "soft": json_number(ev.soft), "hard": json_number(ev.hard), "kl": json_number(ev.kl),
            "metric": json_number(ev.metric), "clean_metric": json_number(getattr(ev, "clean_metric", None)),
            "refusal": str(refusal) if refusal else None,
            "n_edges": circ.n_edges, "n_rows": circ.n_rows, "fraction": circ.fraction,
            "n_real_edges": json_number(circ.n_real_edges),
            "real_fraction": json_number(circ.real_fraction),
            "seconds": None if seconds is None else round(seconds, 4), "selection": sel,
            "examples": examples if examples is not None else total, "total_examples": total,
        }

    # --- circuit quality and head functions -----------------------------------------------------

    def compute_quality(self, selection: dict | None = None, n_samples: int = 10, seed: int = 0,
                        threshold: float | None = None) -> dict:
        """Completeness (`pw.completeness`, ``n_samples`` random node subsets with ``seed``) and
        minimality (`pw.minimality`) of ``selection`` (default: the circuit shown), through the
        explorer's `Evaluator` on every example; the answer goes to the page (``quality``
        trait, with the selection it is for) and is returned.

        Example:
            >>> explorer.compute_quality()["completeness"]["worst_gap"]     # doctest: +SKIP
        """
        from ..analysis.quality import completeness, minimality

        if self._evaluator is None:
            raise PeapError("this explorer has no model and dataset to evaluate with")
        sel = dict(self.selection) if selection is None else {**default_selection(), **selection}
        circ = self._circuit_of(sel)
        n_units = circ.n_edges
        total = 2 + 2 * int(n_samples) + 1 + n_units
        started = time.perf_counter()
        base = {"selection": sel, "n_edges": circ.n_edges, "running": True, "total": total}
        self.quality = {**base, "done": 0}
        done = [0]

        def tick(offset):
            def report(d, _t):
                done[0] = offset + d
                self.quality = {**base, "done": done[0]}
            return report

        try:
            comp = completeness(self._evaluator, circ, n_samples=n_samples, seed=seed,
                                progress=tick(0))
            mini = minimality(self._evaluator, circ, threshold=threshold,
                              progress=tick(2 + 2 * int(n_samples)))
        except Exception as e:
            self.quality = {"selection": sel, "n_edges": circ.n_edges, "running": False,
                            "error": f"{type(e).__name__}: {e}"}
            raise
        weakest = mini.iloc[np.argsort(mini["contribution"].abs().to_numpy(), kind="stable")[:3]]
        names = [f"{r.src}@{r.src_span} → {r.dst}@{r.dst_span}"
                 + ("" if r.kind == "resid" else f" ({r.kind})") for r in weakest.itertuples()]
        self.quality = {
            "selection": sel, "n_edges": circ.n_edges, "running": False, "done": total,
            "total": total, "seconds": round(time.perf_counter() - started, 3),
            "examples": len(self._evaluator.ds),
            "completeness": {"worst_gap": json_number(comp.worst_gap),
                             "mean_gap": json_number(comp.mean_gap),
                             "f_circuit": json_number(comp.f_circuit),
                             "f_model": json_number(comp.f_model),
                             "n_samples": len(comp.samples), "seed": int(seed),
                             "n_nodes": len(comp.nodes),
                             "worst_nodes": list(comp.worst_nodes)},
            "minimality": {"n_edges": len(mini), "n_below": int(mini["below"].sum()),
                           "threshold": json_number(mini.attrs["threshold"]),
                           "min_contribution": json_number(mini["contribution"].abs().min())
                           if len(mini) else None,
                           "weakest": [[n, json_number(c)] for n, c in
                                       zip(names, weakest["contribution"])]},
        }
        return self.quality

    def show_head_functions(self, df: pd.DataFrame | None) -> CircuitExplorer:
        """Show per-head function scores in the hover cards: a DataFrame indexed by head name
        (``"a1.h0"``), one numeric column per relation (e.g. from `pw.head_functions`; other
        columns are left out). Returns self.

        Example:
            >>> explorer.show_head_functions(pw.head_functions(model, relations=rels))  # doctest: +SKIP
        """
        self.head_functions = head_function_table(df, self.result.space.graph.head_names)
        return self

    def _on_message(self, _widget, content, _buffers):
        if isinstance(content, dict) and content.get("type") == "more":
            self._send_more(content)
        if isinstance(content, dict) and content.get("type") == "quality" and self._evaluator:
            sel = content.get("selection")
            try:
                self.compute_quality(sel if isinstance(sel, dict) else None,
                                     n_samples=int(content.get("n_samples") or 10),
                                     seed=int(content.get("seed") or 0))
            except Exception:  # shown in the widget (quality.error); the kernel keeps going
                pass
        if isinstance(content, dict) and content.get("type") == "evaluate" and self._evaluator:
            sel = content.get("selection")
            try:
                self.evaluate(content.get("version"), sel if isinstance(sel, dict) else None,
                              full=bool(content.get("full")))
            except Exception as e:  # shown in the widget; the kernel keeps going
                self.status = ""
                self.evaluation = {"version": content.get("version"), "error": str(e),
                                   "selection": sel if isinstance(sel, dict) else self.selection}

    # --- what the page holds ------------------------------------------------------------------

    def _send_more(self, content: dict):
        """Answer a page's "more" request (see the module docstring) with one chunk."""
        try:
            have = content.get("have") or {}
            order = content.get("order")
            threshold = content.get("threshold")
            reply, buffers = self._ship.chunk(
                int(have.get("order", 0)), int(have.get("top", 0)), int(have.get("units", 0)),
                None if order is None else int(order),
                None if threshold is None else float(threshold),
                [int(u) for u in content.get("units") or []],
                self._chunk_units, self._max_page_units)
        except Exception as e:  # shown in the widget; the kernel keeps going
            reply, buffers = {"type": "chunk", "error": f"{type(e).__name__}: {e}"}, []
        reply["req"] = content.get("req")
        self.send(reply, buffers)

    def _selection_units(self) -> set[int]:
        """Units named by id in the selection and the undo history."""
        return {int(u) for sel in [self.selection, *self.history]
                for key in ("added", "removed") for u in sel.get(key, [])}

    def page_state(self) -> dict:
        """Trait values for a page without a kernel (`to_html`): what was shipped, grown where
        the circuit shown needs more (so the page shows it exactly), plus every unit the
        selection and the undo history name."""
        ship, sel, sh = self._ship, self.selection, self.shipped
        a, b = sh["order"], sh["top"]
        if sel.get("mode", "edges") == "threshold":
            thr = float(sel.get("threshold", 0.0))
            floor = sh["key_floor"]
            if floor is not None and not thr > floor:
                b = max(b, int((ship.keys >= thr).sum()))
        else:
            a = max(a, min(int(sel.get("n_edges", 0)), ship.n_order))
        mask = ship.held(a, b)              # the shipped units are S(a, b) for smaller a, b
        extra = {u for u in self._selection_units() if 0 <= u < ship.n_units and not mask[u]}
        if (a, b) == (sh["order"], sh["top"]) and not extra:
            return {}
        return ship.payload(a, b, extra)


def head_function_table(df, heads) -> dict:
    """The ``head_functions`` trait from a DataFrame (index: head names, numeric columns:
    relations). Heads not in the model are refused, naming them."""
    if not (hasattr(df, "index") and hasattr(df, "columns")):
        raise PeapError("head_functions takes a DataFrame indexed by head name ('a1.h0') with "
                        f"one column per relation; got {type(df).__name__}")
    num = df.select_dtypes("number")
    if num.shape[1] == 0:
        raise PeapError("head_functions: the DataFrame has no numeric (relation score) columns; "
                        f"columns: {list(df.columns)}")
    names = [str(i) for i in num.index]
    unknown = [n for n in names if n not in set(heads)]
    if unknown:
        raise PeapError(f"head_functions: index entries {unknown[:3]} are not heads of this "
                        f"model (heads look like {heads[:2]})")
    return {"relations": [str(c) for c in num.columns],
            "heads": {n: [json_number(v) for v in row]
                      for n, row in zip(names, num.to_numpy(dtype=float).tolist())}}


def _mean_lengths(result):
    lengths = getattr(result, "span_lengths", None)
    return None if lengths is None else np.asarray(lengths, dtype=float).mean(0).round(3).tolist()


def head_details_for(model, dataset, k: int = 5) -> dict:
    """Hover cards for heads: OV logit lens and mean attention per span pair."""
    from ..analysis.heads import ov_promotions, span_attention

    att = span_attention(model, dataset)
    info = ov_promotions(model, dataset, k=k)
    for layer in range(att.shape[0]):
        for h in range(att.shape[1]):
            info[f"a{layer}.h{h}"]["attends"] = att[layer, h].round(4).tolist()
    return info
