"""The result of an attribution run: the edge table plus everything needed to reuse it."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np

from .errors import PeapError
from .circuit import Circuit, _space, greedy_order, search
from .graph import EdgeSpace, Graph, GraphConfig, edge_table
from .schema import Schema

FORMAT = "peap_widget.attribution"


class AttributionResult:
    """Scores of every edge (`edges`), the spans and settings used, and the metric baselines.

    Attributes:
        edges: the edge table (``kind, src, dst, src_span, dst_span, score``; DESIGN.md section 3).
        spans: span names the scores are indexed by (``["all"]`` for EAP).
        schema: the dataset's `Schema`.
        settings: method, ablation, aggregation, metric, batch size, example count, model name.
        clean_metric / counterfactual_metric: per-example metric arrays (the latter only with
            counterfactual ablation); `clean_mean` / `counterfactual_mean` their means.
        graph_config: layers, heads, d_model, parallel blocks.
        span_lengths: [N, S] token count of every span of every example (for real edge counts).

    Example:
        >>> res.top(5)                     # the five edges of largest |score|   # doctest: +SKIP
        >>> res.save("ioi_peap.json.gz"); AttributionResult.load("ioi_peap.json.gz")  # doctest: +SKIP
    """

    def __init__(self, edges, spans, settings, clean_metric, counterfactual_metric, schema,
                 graph_config: GraphConfig, span_lengths=None):
        self.edges = edges
        self.spans = list(spans)
        self.settings = dict(settings)
        self.clean_metric = np.asarray(clean_metric, dtype=np.float64)
        self.counterfactual_metric = (None if counterfactual_metric is None
                                      else np.asarray(counterfactual_metric, dtype=np.float64))
        self.schema = schema
        self.graph_config = graph_config
        self.span_lengths = None if span_lengths is None else np.asarray(span_lengths)
        self._greedy_orders: dict = {}
        #: the edge space the table's rows index (graph, spans, crossing edges or not)
        self.space: EdgeSpace = _space(graph_config, tuple(self.spans),
                                       bool((edges["kind"] != "resid").any()))
        space = self.space
        if len(edges) != len(space) or not edges[["kind", "src", "dst", "src_span",
                                                  "dst_span"]].equals(space.table):
            raise PeapError("the edge table does not list the graph's edges in the expected order")

    @classmethod
    def from_arrays(cls, graph: Graph, spans, resid, cross, settings, clean, source, schema,
                    span_lengths=None):
        return cls(edge_table(graph, list(spans), resid, cross), spans, settings, clean, source,
                   schema, graph.cfg, span_lengths)

    @property
    def scores(self) -> np.ndarray:
        return self.edges["score"].to_numpy(dtype=np.float64)

    # --- circuits --------------------------------------------------------------------------------

    def circuit(self, n_edges: int | None = None, method: str = "greedy", merge_qkv: bool = True,
                absolute: bool = True, threshold: float | None = None, prune: bool = True) -> Circuit:
        """Find a circuit from these scores.

        Args:
            n_edges: how many edges to add (greedy) or take (topn); a merged q/k/v group counts
                as one edge when ``merge_qkv``.
            method: ``"greedy"`` (from the logits at the last span, PEAP App. C: repeatedly add
                the best edge whose child is already in the circuit), ``"topn"`` (the n best
                edges) or ``"threshold"`` (every edge scoring at least ``threshold``).
            merge_qkv: rank a head's q, k and v crossing edges of one span pair as one edge
                scored max(|q|, |k|, |v|) (PEAP's default); False keeps them apart.
            absolute: rank by |score| (default) or by signed score (MIB's CPR).
            prune: drop edges not on a path from an ``input`` node to the root logits.

        Example:
            >>> circ = res.circuit(n_edges=100)                       # doctest: +SKIP
            >>> res.circuit(method="threshold", threshold=0.05)       # doctest: +SKIP
        """
        rows = search(self.space, self.scores, n_edges, method, merge_qkv, absolute, threshold,
                      prune, order_cache=self._greedy_orders)
        return self._circuit(rows, merge_qkv, f"{method} {n_edges if threshold is None else threshold}")

    def greedy_order(self, merge_qkv: bool = True, absolute: bool = True) -> np.ndarray:
        """Units (edges as sizes count them) in the order greedy search adds them; computed once
        and shared by `circuit` and the circuit explorer."""
        return greedy_order(self.space, self.scores, merge_qkv, absolute, self._greedy_orders)

    def circuit_from(self, edge_rows, merge_qkv: bool = True) -> Circuit:
        """A circuit of exactly the given rows of `edges`: a boolean mask, row positions, or a
        DataFrame whose index is a subset of ``edges.index``."""
        import pandas as pd

        n = len(self.edges)
        if isinstance(edge_rows, pd.DataFrame):
            rows = np.zeros(n, dtype=bool)
            rows[self.edges.index.get_indexer(edge_rows.index)] = True
        else:
            arr = np.asarray(edge_rows)
            if arr.dtype == bool:
                if arr.shape != (n,):
                    raise PeapError(f"a boolean row mask needs {n} entries, got {arr.shape}")
                rows = arr.copy()
            else:
                rows = np.zeros(n, dtype=bool)
                rows[arr.astype(np.int64)] = True
        return self._circuit(rows, merge_qkv, "manual")

    def full_circuit(self) -> Circuit:
        return self._circuit(np.ones(len(self.edges), dtype=bool), True, "full")

    def empty_circuit(self) -> Circuit:
        return self._circuit(np.zeros(len(self.edges), dtype=bool), True, "empty")

    def _circuit(self, rows, merge_qkv, name) -> Circuit:
        return Circuit(self.space, rows, self.scores, merge_qkv, self.settings, self.span_lengths,
                       name=f"{self.method} {name}")

    @property
    def method(self) -> str:
        return self.settings["method"]

    @property
    def graph(self) -> Graph:
        return Graph(self.graph_config)

    @property
    def clean_mean(self) -> float:
        return float(self.clean_metric.mean())

    @property
    def counterfactual_mean(self) -> float | None:
        return None if self.counterfactual_metric is None else float(self.counterfactual_metric.mean())

    def top(self, n: int = 20, kind: str | None = None):
        """The ``n`` edges of largest |score| (optionally of one kind), as a DataFrame."""
        df = self.edges if kind is None else self.edges[self.edges["kind"] == kind]
        return df.reindex(df["score"].abs().sort_values(ascending=False).index).head(n)

    def __repr__(self) -> str:
        s = self.settings
        kinds = self.edges["kind"].value_counts().to_dict()
        return (f"AttributionResult(method={s['method']}, ablation={s['ablation']}, "
                f"aggregation={s['aggregation']}, metric={s['metric']}, examples={s['n_examples']}, "
                f"edges={len(self.edges)} {kinds}, clean_metric={self.clean_mean:.4g}"
                + ("" if self.counterfactual_metric is None
                   else f", counterfactual_metric={self.counterfactual_mean:.4g}") + ")")

    # --- persistence ---------------------------------------------------------------------------

    def to_dict(self) -> dict:
        cols = {c: self.edges[c].tolist() for c in self.edges.columns}
        return {
            "format": FORMAT, "version": 1,
            "settings": self.settings, "spans": self.spans,
            "schema": None if self.schema is None else self.schema.to_dict(),
            "graph": self.graph_config.to_dict(),
            "clean_metric": self.clean_metric.tolist(),
            "counterfactual_metric": (None if self.counterfactual_metric is None
                                      else self.counterfactual_metric.tolist()),
            "span_lengths": None if self.span_lengths is None else self.span_lengths.tolist(),
            "edges": cols,
        }

    @classmethod
    def from_dict(cls, d) -> AttributionResult:
        import pandas as pd

        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise PeapError(f"not a {FORMAT} document (missing or wrong 'format' field)")
        try:
            edges = pd.DataFrame(d["edges"])[["kind", "src", "dst", "src_span", "dst_span", "score"]]
            edges["score"] = edges["score"].astype(np.float64)
            schema = None if d.get("schema") is None else Schema.from_dict(d["schema"])
            return cls(edges, d["spans"], d["settings"], d["clean_metric"],
                       d.get("counterfactual_metric"), schema, GraphConfig(**d["graph"]),
                       d.get("span_lengths"))
        except (KeyError, TypeError) as err:
            raise PeapError(f"malformed {FORMAT} document: {err!r}") from None

    def save(self, path: str | Path) -> Path:
        """Write JSON (gzip-compressed when the name ends in ``.gz``); floats round-trip exactly."""
        path = Path(path)
        text = json.dumps(self.to_dict())
        if path.suffix == ".gz":
            with gzip.open(path, "wt") as f:
                f.write(text)
        else:
            path.write_text(text)
        return path

    @classmethod
    def load(cls, path: str | Path) -> AttributionResult:
        path = Path(path)
        try:
            if path.suffix == ".gz":
                with gzip.open(path, "rt") as f:
                    d = json.load(f)
            else:
                d = json.loads(path.read_text())
        except (json.JSONDecodeError, OSError, EOFError) as err:
            raise PeapError(f"cannot read an attribution result from {path}: {err}") from None
        return cls.from_dict(d)
