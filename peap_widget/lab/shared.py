"""Helpers the lab checks share: one cached `Reference` per model, cached reference runs, and
lenient parsing of edge and head names as students write them."""

from __future__ import annotations

import numpy as np

from ..errors import PeapError
from ..graph.names import parse_component, split_node
from ..graph.names import head_name as name_of_head
from .core import blank, wrong
from .reference import Reference

_REFS: dict = {}
_RUNS: dict = {}


def reference(model) -> Reference:
    hf = getattr(model, "hf", model)
    key = id(hf)
    if key not in _REFS or _REFS[key][0] is not hf:
        _REFS[key] = (hf, Reference(model))
    return _REFS[key][1]


def ds_key(ds) -> tuple:
    """A hashable key of a dataset's examples (ids, answers, spans), for the caches here."""
    return tuple((tuple(e.clean_ids), tuple(e.corrupted_ids or ()), e.correct_id, e.incorrect_id,
                  tuple(e.spans)) for e in ds.examples)



def per_example(model, ds, remove=None) -> np.ndarray:
    """Reference per-example logit differences, cached per (model, data, removal)."""
    rm = None if not remove else tuple(sorted(
        (e, tuple(sorted(w.items())) if isinstance(w, dict) else float(w)) for e, w in remove.items()))
    key = (id(getattr(model, "hf", model)), ds_key(ds), rm)
    if key not in _RUNS:
        _RUNS[key] = reference(model).per_example(ds, remove)
    return _RUNS[key]


def mean_metric(model, ds, remove=None) -> float:
    return float(per_example(model, ds, remove).mean())


def corrupted_metric(model, ds) -> float:
    key = (id(getattr(model, "hf", model)), ds_key(ds), "corrupted")
    if key not in _RUNS:
        _RUNS[key] = reference(model).metric(ds, corrupted=True)
    return _RUNS[key]


def residual_edge(name: str | tuple, what: str = "the edge") -> tuple[str, str, str | None]:
    """``"a3.h2->logits"``, ``"a3.h2->logits@all"``, ``"m0->a1.h2<q>@S2"`` or a tuple
    ``(src, dst)`` / an edge-table key -> (src, dst, span or None)."""
    if isinstance(name, tuple):
        if len(name) == 2:
            return str(name[0]), str(name[1]), None
        if len(name) == 5 and name[0] == "resid":
            span = None if name[3] == "all" else name[3]
            return str(name[1]), str(name[2]), span
    if not isinstance(name, str):
        wrong(f"{what} should be an edge name like 'a3.h2->logits', got {type(name).__name__}.")
    text = name.strip()
    edge, span = split_node(text)
    if "->" not in edge:
        wrong(f"{what} {name!r} is not an edge name: write it as 'source->slot', e.g. "
              "'a3.h2->logits' or 'm0->a3.h2<k>'.")
    u, v = (s.strip() for s in edge.split("->", 1))
    return u, v, (None if span in (None, "all") else span)


def head_name(value: str | tuple[int, int], what: str = "a head") -> str:
    """``"a3.h2"`` (also ``"a3.h2@to"``, ``(3, 2)``) -> ``"a3.h2"``."""
    if isinstance(value, (tuple, list)) and len(value) == 2:
        value = name_of_head(int(value[0]), int(value[1]))
    text = split_node(str(value).strip())[0]
    try:
        is_head = parse_component(text).kind == "head"
    except PeapError:
        is_head = False
    if not is_head:
        wrong(f"{what} should be named like 'a3.h2' (layer 3, head 2), got {value!r}.")
    return text


def edge_label(u: str, v: str, span: str | None = None) -> str:
    """``u->v`` or ``u->v@span``."""
    return f"{u}->{v}" + (f"@{span}" if span else "")


def circuit_of(obj, edited: bool = False):
    """A `Circuit` from a circuit, or a widget / object holding one in ``.circuit``. With
    ``edited``, an explorer nobody has pruned yet counts as a blank answer."""
    from ..circuits.circuit import Circuit

    if edited and isinstance(getattr(obj, "selection", None), dict):
        sel = obj.selection
        if not (sel.get("removed") or sel.get("removed_nodes") or sel.get("added")):
            blank("nothing is pruned yet: prune in the explorer above (click nodes or edges, or "
                  "call explorer.remove_node / remove_edge), then run this check again.")
    if isinstance(obj, Circuit):
        return obj
    inner = getattr(obj, "circuit", None)
    if isinstance(inner, Circuit):
        return inner
    wrong(f"expected a circuit (pw.Circuit) or a CircuitExplorer, got {type(obj).__name__}.")


def edge_keys(circuit) -> set:
    cols = ["kind", "src", "dst", "src_span", "dst_span"]
    return set(circuit.edges[cols].itertuples(index=False, name=None))
