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

With a model and dataset, each edit is re-evaluated here (the front end asks with a message and
sends the next request only when the last answer arrived, so fast edits are coalesced).
"""

from __future__ import annotations

import time

import numpy as np
import traitlets as t

from ..circuit import Circuit, _units
from ..errors import PeapError
from ..evaluate import Evaluator
from .base import PeapWidget
from .curves import curve_series, json_number

# node types shared with the front end
INPUT, HEAD, MLP, Q, K, V, LOGITS = range(7)
HISTORY = 200


def default_selection(n_edges: int = 0) -> dict:
    return {"mode": "edges", "n_edges": int(n_edges), "threshold": 0.0, "added": [], "removed": [],
            "removed_nodes": [], "prune": True}


def selection_rows(space, merge_qkv: bool, order: np.ndarray, scores: np.ndarray,
                   selection: dict) -> np.ndarray:
    """[rows] bool: the circuit a selection stands for (see the module docstring)."""
    units = _units(space, merge_qkv)
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
        rows &= _units(space, False).on_paths(rows)
    return rows


def node_table(space) -> dict[str, np.ndarray]:
    """Per positional node: type (INPUT...LOGITS), layer (-1 input, L logits), head, span."""
    g, S = space.graph, space.n_spans
    L, H, F = g.L, g.H, g.n_forward
    u = np.arange(F)
    f_type = np.where(u == 0, INPUT, np.where((u - 1) % (H + 1) == H, MLP, HEAD))
    f_layer = np.where(u == 0, -1, (u - 1) // (H + 1))
    f_head = np.where(u == 0, 0, (u - 1) % (H + 1))
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
        model, dataset: to re-evaluate edits and to describe heads (optional).
        n_edges: the starting size (default: the smallest evaluated size with faithfulness
            >= 0.8 when a curve is computed, else 50 edges).
        merge_qkv: count a head's q/k/v crossing edges of one span pair as one edge.
        curves: a `pw.FaithfulnessCurve` to draw next to the diagram; with a model and dataset
            and ``curves=None`` one is computed at ``curve_sizes``.
        evaluator: a `pw.Evaluator` on ``model`` and ``dataset`` to reuse (its clean and
            ablation runs are cached); default one with the result's ablation and metric.

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
    row_parent = t.Bytes().tag(sync=True)     # Int32 per edge-table row
    row_child = t.Bytes().tag(sync=True)      # Int32
    row_unit = t.Bytes().tag(sync=True)       # Int32
    row_kind = t.Bytes().tag(sync=True)       # Int8: 0 resid, 1 q, 2 k, 3 v
    row_score = t.Bytes().tag(sync=True)      # Float64
    row_src = t.Bytes().tag(sync=True)        # Int16: forward component (crossing: the head)
    row_dst = t.Bytes().tag(sync=True)        # Int16: backward slot (crossing: -1, the head)
    row_src_span = t.Bytes().tag(sync=True)   # Int16 (edge-table columns, for JSON export)
    row_dst_span = t.Bytes().tag(sync=True)   # Int16
    unit_order = t.Bytes().tag(sync=True)     # Int32: greedy order of units
    head_info = t.Dict().tag(sync=True)       # {"a1.h2": {"promotes": ..., "copying": ..., "attends": [[...]]}}
    curves = t.List().tag(sync=True)          # [{name, points: [...]}] as FaithfulnessCurves.series
    # the user's circuit
    selection = t.Dict().tag(sync=True)
    history = t.List().tag(sync=True)         # earlier selections (undo), newest last
    evaluation = t.Dict().tag(sync=True)      # {version, faithfulness, soft, hard, kl, metric, ...}
    status = t.Unicode("").tag(sync=True)

    def __init__(self, result, model=None, dataset=None, n_edges: int | None = None,
                 merge_qkv: bool = True, curves=None, curve_sizes=None, head_details: bool = True,
                 evaluator: Evaluator | None = None, **kwargs):
        if (model is None) != (dataset is None):
            raise PeapError("give both model and dataset (to re-evaluate edits) or neither")
        self.result, self.model, self.dataset = result, model, dataset
        self.merge_qkv = merge_qkv
        space = result.space
        self._scores = result.scores
        units = _units(space, merge_qkv)
        self._order = result.greedy_order(merge_qkv)
        self._evaluator = evaluator
        if model is not None and evaluator is None:
            self._evaluator = Evaluator(model, dataset, result.settings.get("ablation", "counterfactual"),
                                        result.settings.get("metric", "logit_diff"))
        super().__init__(**kwargs)
        nodes = node_table(space)
        g = space.graph
        self.info = {"layers": g.L, "heads": g.H, "spans": list(space.spans),
                     "crossing": bool(space.crossing), "merge_qkv": merge_qkv,
                     "n_rows": len(space), "n_units": int(units.n), "n_nodes": int(space.n_nodes),
                     "n_order": int(len(self._order)), "method": result.method,
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
        self.row_parent = _bytes(space.parent, np.int32)
        self.row_child = _bytes(space.child, np.int32)
        self.row_unit = _bytes(units.of_row, np.int32)
        kind = np.concatenate([np.zeros(space.n_resid), 1 + space.kind])
        self.row_kind = _bytes(kind, np.int8)
        self.row_score = _bytes(np.nan_to_num(self._scores, nan=0.0), np.float64)
        self.unit_order = _bytes(self._order, np.int32)
        head_fwd = 1 + space.layer * (g.H + 1) + space.head
        self.row_src = _bytes(np.concatenate([space.fwd, head_fwd]), np.int16)
        self.row_dst = _bytes(np.concatenate([space.bwd, np.full(space.n_cross, -1)]), np.int16)
        self.row_src_span = _bytes(np.concatenate([space.span, space.kspan]), np.int16)
        self.row_dst_span = _bytes(np.concatenate([space.span, space.qspan]), np.int16)
        if model is not None and head_details:
            self.head_info = head_details_for(model, dataset)
        curve_obj = curves
        if curve_obj is None and model is not None:
            from ..curves import faithfulness_curve

            sizes = curve_sizes or (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
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
        self.selection = default_selection(min(int(n_edges), len(self._order)))
        self.on_msg(self._on_message)
        if self._evaluator is not None:
            self.evaluate()

    # --- the circuit -------------------------------------------------------------------------

    @property
    def circuit(self) -> Circuit:
        """The circuit now shown (a new `pw.Circuit` each time; edit it freely)."""
        rows = selection_rows(self.result.space, self.merge_qkv, self._order, self._scores,
                              self.selection)
        circ = self.result.circuit_from(rows, merge_qkv=self.merge_qkv)
        circ.name = "explorer"
        return circ

    def _edit(self, **changes):
        sel = {**self.selection, **changes}
        if sel != self.selection:
            self.history = (list(self.history) + [self.selection])[-HISTORY:]
            self.selection = sel
            if self._evaluator is not None:  # edits from Python are evaluated at once
                self.evaluate()

    def set_size(self, n_edges: int | None = None, threshold: float | None = None):
        """Show the first ``n_edges`` edges of the greedy order, or every edge scoring at least
        ``threshold`` (manual edits are kept)."""
        if threshold is not None:
            self._edit(mode="threshold", threshold=float(threshold))
        elif n_edges is not None:
            if n_edges < 0:
                raise PeapError(f"n_edges must be >= 0, got {n_edges}")
            self._edit(mode="edges", n_edges=int(min(n_edges, len(self._order))))
        else:
            raise PeapError("set_size needs n_edges or threshold")

    def _unit_of(self, edge) -> int:
        row = self.result.space.row(edge)
        return int(_units(self.result.space, self.merge_qkv).of_row[row])

    def remove_edge(self, edge):
        """Prune an edge (row index, key tuple or name as in `pw.Circuit`)."""
        u = self._unit_of(edge)
        self._edit(removed=sorted(set(self.selection["removed"]) | {u}),
                   added=[a for a in self.selection["added"] if a != u])

    def add_edge(self, edge):
        u = self._unit_of(edge)
        self._edit(added=sorted(set(self.selection["added"]) | {u}),
                   removed=[a for a in self.selection["removed"] if a != u])

    def _node_ids(self, node: str) -> list[int]:
        """A node name -> node ids: ``a1.h2@S2`` (a head takes its q/k/v inputs there along),
        or ``a1.h2`` / ``m0`` for that component at every span."""
        sp = self.result.space
        idx = sp.node_index
        base, _, span = node.partition("@")
        names = [f"{base}@{s}" for s in ([span] if span else sp.spans)]
        if not all(n in idx for n in names):
            raise KeyError(f"no node {node!r} (nodes look like 'a1.h2@S2', 'm0@IO', 'input@END', "
                           "or 'a1.h2' for every span)")
        slots = [f"{n.split('@')[0]}<{c}>@{n.split('@')[1]}" for n in names for c in "qkv"]
        return [idx[n] for n in names] + [idx[n] for n in slots if n in idx]

    def remove_node(self, node: str):
        """Prune a node with every edge touching it: ``"a2.h1@END"`` (one span) or ``"a2.h1"``
        (every span)."""
        ids = self._node_ids(node)
        self._edit(removed_nodes=sorted(set(self.selection["removed_nodes"]) | set(ids)))

    def restore_node(self, node: str):
        ids = set(self._node_ids(node))
        self._edit(removed_nodes=[n for n in self.selection["removed_nodes"] if n not in ids])

    def reset(self):
        """Drop every manual edit (the size stays)."""
        self._edit(added=[], removed=[], removed_nodes=[])

    def undo(self) -> bool:
        if not self.history:
            return False
        *rest, last = self.history
        self.history = rest
        self.selection = last
        if self._evaluator is not None:
            self.evaluate()
        return True

    # --- evaluation ----------------------------------------------------------------------------

    def evaluate(self, version: int | None = None) -> dict:
        """Evaluate the circuit now shown; the answer also goes to the front end."""
        if self._evaluator is None:
            raise PeapError("this explorer has no model and dataset to evaluate with")
        self.status = "evaluating"
        started = time.perf_counter()
        circ = self.circuit
        ev = self._evaluator.run(circ)
        self.show_evaluation(ev, circ, version, seconds=time.perf_counter() - started)
        self.status = ""
        return self.evaluation

    def show_evaluation(self, ev, circuit=None, version: int | None = None,
                        seconds: float | None = None):
        """Show an `EvalResult` of the circuit now shown (``circuit``: that circuit, if at hand)
        as the explorer's numbers; pages without a kernel show what was set here."""
        circ = self.circuit if circuit is None else circuit
        self.evaluation = {
            "version": version, "faithfulness": json_number(ev.faithfulness),
            "soft": json_number(ev.soft), "hard": json_number(ev.hard), "kl": json_number(ev.kl),
            "metric": json_number(ev.metric),
            "n_edges": circ.n_edges, "n_rows": circ.n_rows, "fraction": circ.fraction,
            "n_real_edges": json_number(circ.n_real_edges),
            "real_fraction": json_number(circ.real_fraction),
            "seconds": None if seconds is None else round(seconds, 4), "selection": self.selection,
        }

    def _on_message(self, _widget, content, _buffers):
        if isinstance(content, dict) and content.get("type") == "evaluate" and self._evaluator:
            try:
                self.evaluate(content.get("version"))
            except Exception as e:  # shown in the widget; the kernel keeps going
                self.status = ""
                self.evaluation = {"version": content.get("version"), "error": str(e)}


def _mean_lengths(result):
    lengths = getattr(result, "span_lengths", None)
    return None if lengths is None else np.asarray(lengths, dtype=float).mean(0).round(3).tolist()


def head_details_for(model, dataset, k: int = 5) -> dict:
    """Hover cards for heads: OV logit lens and mean attention per span pair."""
    from ..heads import ov_promotions, span_attention

    att = span_attention(model, dataset)
    info = ov_promotions(model, dataset, k=k)
    for layer in range(att.shape[0]):
        for h in range(att.shape[1]):
            info[f"a{layer}.h{h}"]["attends"] = att[layer, h].round(4).tolist()
    return info
