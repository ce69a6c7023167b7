"""The result of an attribution run: the edge table plus everything needed to reuse it."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np

from .errors import PeapError
from .graph import Graph, GraphConfig, edge_table
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

    Example:
        >>> res.top(5)                     # the five edges of largest |score|   # doctest: +SKIP
        >>> res.save("ioi_peap.json.gz"); AttributionResult.load("ioi_peap.json.gz")  # doctest: +SKIP
    """

    def __init__(self, edges, spans, settings, clean_metric, counterfactual_metric, schema,
                 graph_config: GraphConfig):
        self.edges = edges
        self.spans = list(spans)
        self.settings = dict(settings)
        self.clean_metric = np.asarray(clean_metric, dtype=np.float64)
        self.counterfactual_metric = (None if counterfactual_metric is None
                                      else np.asarray(counterfactual_metric, dtype=np.float64))
        self.schema = schema
        self.graph_config = graph_config

    @classmethod
    def from_arrays(cls, graph: Graph, spans, resid, cross, settings, clean, source, schema):
        return cls(edge_table(graph, list(spans), resid, cross), spans, settings, clean, source,
                   schema, graph.cfg)

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
                       d.get("counterfactual_metric"), schema, GraphConfig(**d["graph"]))
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
