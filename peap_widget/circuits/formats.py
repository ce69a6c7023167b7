"""A circuit's file formats: its own JSON document (``peap_widget.circuit``, version 1), the
EAP-IG / MIB graph JSON, and a networkx graph. `Circuit`'s ``to_*`` / ``from_*`` methods call
these; the readers take the class to build (``cls``), so this module needs no `Circuit`.

Example:
    >>> from peap_widget.circuits.circuit import Circuit
    >>> from peap_widget.models.examples import random_result
    >>> res = random_result(layers=2, heads=2, spans=2)
    >>> circ = res.circuit(n_edges=10)
    >>> again = circuit_from_dict(Circuit, circuit_to_dict(circ))
    >>> bool((again.in_rows == circ.in_rows).all()), circuit_to_dict(circ)["format"]
    (True, 'peap_widget.circuit')
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import PeapError
from ..graph.config import GraphConfig
from ..graph.names import QKV, component_of
from ..graph.space import edge_space

if TYPE_CHECKING:
    from .circuit import Circuit

FORMAT = "peap_widget.circuit"


# --- peap_widget's circuit JSON ----------------------------------------------------------------

def circuit_to_dict(circ: Circuit) -> dict:
    """The JSON document of ``circ``: graph, spans, settings and its rows as edge-table keys
    with their scores."""
    rows = np.nonzero(circ.in_rows)[0]
    t = circ.space.frame(rows).astype(object)
    return {
        "format": FORMAT, "version": 1, "name": circ.name,
        "graph": circ.space.graph.cfg.to_dict(), "spans": circ.space.spans,
        "crossing": circ.space.crossing, "merge_qkv": circ.merge_qkv,
        "settings": circ.settings,
        "span_lengths": None if circ.span_lengths is None else circ.span_lengths.tolist(),
        "edges": [[*key, None if np.isnan(s) else float(s)]
                  for key, s in zip(t.itertuples(index=False, name=None), circ.scores[rows])],
    }


def circuit_from_dict(cls: type[Circuit], d: dict) -> Circuit:
    """A ``cls`` from `circuit_to_dict`'s document; `PeapError` for anything malformed."""
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise PeapError(f"not a {FORMAT} document (missing or wrong 'format' field)")
    try:
        spans = d["spans"]
        if not isinstance(spans, list) or not all(isinstance(x, str) for x in spans):
            raise ValueError(f"'spans' must be a list of names, got {spans!r}")
        cfg = GraphConfig.from_dict(d["graph"], len(spans), bool(d["crossing"]))
        space = edge_space(cfg, tuple(spans), bool(d["crossing"]))
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


def circuit_from_json(cls: type[Circuit], text_or_path: str | Path) -> Circuit:
    """A ``cls`` from JSON text or a file holding it."""
    text = str(text_or_path)
    if not text.lstrip().startswith("{"):
        try:
            text = Path(text_or_path).read_text()
        except OSError as err:
            raise PeapError(f"cannot read a circuit from {text_or_path}: {err}") from None
    try:
        return circuit_from_dict(cls, json.loads(text))
    except json.JSONDecodeError as err:
        raise PeapError(f"circuit JSON is not valid JSON: {err}") from None


# --- networkx ----------------------------------------------------------------------------------

def to_networkx(circ: Circuit):
    """A ``networkx.MultiDiGraph`` of positional nodes with one edge per circuit row, keyed by
    row (attributes ``kind``, ``score``, ``row``; q edges of one head and query span to
    different key spans share their end nodes)."""
    try:
        import networkx as nx
    except ImportError:
        raise PeapError("to_networkx needs networkx: pip install networkx") from None
    sp = circ.space
    G = nx.MultiDiGraph(spans=sp.spans)
    kinds = ("resid", *QKV)
    for row in np.nonzero(circ.in_rows)[0]:
        kind = kinds[0] if row < sp.n_resid else kinds[1 + sp.kind[row - sp.n_resid]]
        G.add_edge(sp.node_names[sp.parent[row]], sp.node_names[sp.child[row]], key=int(row),
                   kind=kind, score=float(circ.scores[row]), row=int(row))
    return G


# --- EAP-IG / MIB graph JSON -------------------------------------------------------------------

def to_mib(circ: Circuit) -> dict:
    """The EAP-IG / MIB graph JSON with positions collapsed: an edge is in the graph when it is
    in the circuit at any span, its score is the sum over spans. Crossing edges have no MIB
    counterpart and are left out."""
    sp = circ.space
    g = sp.graph
    resid_in, _ = sp.dense(circ.in_rows, False)
    resid_score, _ = sp.dense(np.nan_to_num(circ.scores), 0.0)
    in_any = resid_in.any(0)
    score_sum = resid_score.sum(0)
    fwd, bwd = np.nonzero(g.edge_mask)
    edges = {}
    touched = set()
    for u, v in zip(fwd, bwd):
        parent, child = g.forward_names[u], g.backward_names[v]
        edges[f"{parent}->{child}"] = {"score": float(score_sum[u, v]), "in_graph": bool(in_any[u, v])}
        if in_any[u, v]:
            touched.update((parent, component_of(child)))
    nodes = {n: {"in_graph": n in touched} for n in [*g.forward_names, "logits"]}
    cfg = g.cfg
    return {"cfg": {"n_layers": cfg.n_layers, "n_heads": cfg.n_heads,
                    "parallel_attn_mlp": cfg.parallel_attn_mlp, "d_model": cfg.d_model},
            "nodes": nodes, "edges": edges}


def circuit_from_mib(cls: type[Circuit], d: dict | str | Path, merge_qkv: bool = True) -> Circuit:
    """A position-free ``cls`` (one span ``all``, no crossing edges) from MIB graph JSON (a
    dict, JSON text or a path). Edge scores come along."""
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
        space = edge_space(cfg, ("all",), False)
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
