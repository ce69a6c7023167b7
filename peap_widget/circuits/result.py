"""The result of an attribution run: the edge table plus everything needed to reuse it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from ..data.schema import Schema
from ..errors import PeapError
from ..graph.config import KEY_COLUMNS, Graph, GraphConfig
from ..graph.names import QKV
from ..graph.space import EdgeSpace, edge_space
from . import result_files
from .circuit import Circuit
from .result_files import FORMAT, NPZ_VERSION
from .search import greedy_order, search, top_indices
from .units import units_of

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["FORMAT", "NPZ_VERSION", "AttributionResult"]


class AttributionResult:
    """Scores of every edge (`edges`), the spans and settings used, and the metric baselines.

    Attributes:
        edges: the edge table (``kind, src, dst, src_span, dst_span, score``; docs/numbers.md),
            a pandas DataFrame built on first access (categorical key columns, spans ordered as
            in the schema). Everything else here works from `scores` and `space` without it.
        scores: [rows] float64 score of every edge-table row (read-only).
        space: the `EdgeSpace` the rows index (graph, spans, crossing edges or not).
        spans: span names the scores are indexed by (``["all"]`` for EAP).
        schema: the dataset's `Schema`.
        settings: method, ablation, aggregation, metric, batch size, example count, model name.
        clean_metric / counterfactual_metric: per-example metric arrays (the latter only with
            counterfactual ablation); `clean_mean` / `counterfactual_mean` their means.
        graph_config: layers, heads, d_model, parallel blocks.
        span_lengths: [N, S] token count of every span of every example (for real edge counts).

    Example:
        >>> from peap_widget.models.examples import random_result
        >>> res = random_result(layers=2, heads=2, spans=2)
        >>> len(res.top(5))                # the five edges of largest |score|
        5
        >>> again = AttributionResult.load(res.save("result.npz"))
        >>> bool((again.scores == res.scores).all())
        True
    """

    def __init__(self, scores: ArrayLike | pd.DataFrame, spans: list[str], settings: dict,
                 clean_metric: ArrayLike, counterfactual_metric: ArrayLike | None,
                 schema: Schema | None, graph_config: GraphConfig,
                 span_lengths: ArrayLike | None = None):
        """``scores``: one float per row of the edge space (with or without crossing rows, told
        apart by the count), or an edge-table DataFrame whose keys are checked against the
        space's (the JSON format)."""
        self.spans = list(spans)
        self.settings = dict(settings)
        self.clean_metric = np.asarray(clean_metric, dtype=np.float64)
        self.counterfactual_metric = (None if counterfactual_metric is None
                                      else np.asarray(counterfactual_metric, dtype=np.float64))
        self.schema = schema
        self.graph_config = graph_config
        self.span_lengths = None if span_lengths is None else np.asarray(span_lengths)
        self._greedy_orders: dict = {}
        self._finite: tuple | None = None     # (how many scores are not finite, the first)
        self._edges = None
        if hasattr(scores, "columns"):  # an edge table
            scores = self._scores_of_table(scores)
        scores = np.array(scores, dtype=np.float64)  # our own copy, frozen below
        #: the edge space the rows index (graph, spans, crossing edges or not)
        self.space: EdgeSpace = self._space_for(len(scores))
        scores.flags.writeable = False
        self._scores = scores

    def _space_for(self, n_rows: int) -> EdgeSpace:
        """The space with ``n_rows`` rows: residual rows only, or with crossing rows."""
        resid = edge_space(self.graph_config, tuple(self.spans), False)
        if n_rows == len(resid):
            return resid
        full = edge_space(self.graph_config, tuple(self.spans), True)
        if n_rows != len(full):
            raise PeapError(f"{n_rows} scores do not match the graph: it has {len(resid)} "
                            f"residual edges over spans {self.spans}, {len(full)} with crossing "
                            "edges")
        return full

    def _scores_of_table(self, edges) -> np.ndarray:
        """Scores of an edge table after checking it lists the space's edges in order."""
        cols = list(KEY_COLUMNS)
        if list(edges.columns[:5]) != cols or "score" not in edges.columns:
            raise PeapError(f"an edge table needs the columns {cols + ['score']}")
        crossing = bool((np.asarray(edges["kind"], dtype=object) != "resid").any())
        space = edge_space(self.graph_config, tuple(self.spans), crossing)
        if len(edges) != len(space):
            raise PeapError("the edge table does not list the graph's edges in the expected order")
        rows = space.rows_of_keys(*(np.asarray(edges[c], dtype=object) for c in cols))
        if not np.array_equal(rows, np.arange(len(space))):
            raise PeapError("the edge table does not list the graph's edges in the expected order")
        return edges["score"].to_numpy(dtype=np.float64)

    @classmethod
    def from_arrays(cls, graph: Graph, spans: list[str], resid: np.ndarray,
                    cross: np.ndarray | None, settings: dict, clean: ArrayLike,
                    source: ArrayLike | None, schema: Schema | None,
                    span_lengths: ArrayLike | None = None) -> AttributionResult:
        """From dense score arrays: ``resid`` [S, n_forward, n_backward] and ``cross``
        [3, L, H, S, S] (None: no crossing edges), as `EdgeSpace.rows` lists them."""
        space = edge_space(graph.cfg, tuple(spans), cross is not None)
        return cls(space.rows(resid, cross), spans, settings, clean, source, schema, graph.cfg,
                   span_lengths)

    @property
    def scores(self) -> np.ndarray:
        """[rows] float64 scores in edge-table row order (read-only; no DataFrame involved)."""
        return self._scores

    @property
    def edges(self) -> pd.DataFrame:
        """The edge table (a pandas DataFrame), built on first access and kept."""
        if self._edges is None:
            table = self.space.frame()
            table["score"] = self._scores
            self._edges = table
        return self._edges

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
            >>> from peap_widget.models.examples import random_result
            >>> res = random_result(layers=2, heads=2, spans=2)
            >>> res.circuit(n_edges=10).n_edges <= 10
            True
            >>> circ = res.circuit(method="threshold", threshold=0.5)
        """
        self._require_finite_scores()
        rows = search(self.space, self.scores, n_edges, method, merge_qkv, absolute, threshold,
                      prune, order_cache=self._greedy_orders)
        return self._circuit(rows, merge_qkv, f"{method} {n_edges if threshold is None else threshold}")

    def greedy_order(self, merge_qkv: bool = True, absolute: bool = True,
                     n: int | None = None) -> np.ndarray:
        """The first ``n`` units (edges as sizes count them; all reachable ones when None) in
        the order greedy search adds them, as int64 unit indices (`Circuit.units` numbers them).

        Computed only as far as asked and kept: a later call for more extends the same order.
        Shared by `circuit` and the circuit explorer.

        Example:
            >>> from peap_widget.models.examples import random_result
            >>> res = random_result(layers=2, heads=2, spans=2)
            >>> order = res.greedy_order(True, absolute=True, n=5)
            >>> order.dtype, len(order)
            (dtype('int64'), 5)
        """
        self._require_finite_scores()
        return greedy_order(self.space, self._scores, merge_qkv, absolute, self._greedy_orders, n)

    def _require_finite_scores(self) -> None:
        """Ranking NaN scores gives an arbitrary 'circuit': refuse, naming the first bad edge."""
        if self._finite is None:
            bad = np.flatnonzero(~np.isfinite(self._scores))
            self._finite = (len(bad), None if not len(bad) else int(bad[0]))
        n_bad, first = self._finite
        if n_bad:
            name = " -> ".join(str(x) for x in self.edges.iloc[first][list(KEY_COLUMNS)])
            raise PeapError(f"{n_bad:,} edge scores are NaN or infinite (the first: {name}), so "
                            "no circuit can be ranked from them; the run that made them saw a "
                            "broken model or input (attribute now refuses such runs: re-run it)")

    def greedy_order_length(self, merge_qkv: bool = True) -> int:
        """How many units the whole greedy order has (every unit whose child node has a path
        to the root), found without running the search: ``len(greedy_order(merge_qkv))``."""
        return units_of(self.space, merge_qkv).n_reachable

    def circuit_from(self, edge_rows: ArrayLike, merge_qkv: bool = True) -> Circuit:
        """A circuit of exactly the given rows of `edges`: a boolean mask, row positions, or a
        DataFrame whose index is a subset of ``edges.index``."""
        import pandas as pd

        n = len(self.space)
        if isinstance(edge_rows, pd.DataFrame):
            index = np.asarray(edge_rows.index)
            if not np.issubdtype(index.dtype, np.integer) or (len(index) and (
                    index.min() < 0 or index.max() >= n)):
                raise PeapError("a DataFrame of edges must be indexed by edge-table rows "
                                f"(0..{n - 1}), as res.edges and circuit.edges are")
            rows = np.zeros(n, dtype=bool)
            rows[index] = True
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
        return self._circuit(np.ones(len(self.space), dtype=bool), True, "full")

    def empty_circuit(self) -> Circuit:
        return self._circuit(np.zeros(len(self.space), dtype=bool), True, "empty")

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

    def top(self, n: int = 20, kind: str | None = None) -> pd.DataFrame:
        """The ``n`` edges of largest |score| (optionally of one kind), as a DataFrame indexed
        by row (ties in row order, NaN scores last)."""
        sp = self.space
        lo, hi = 0, len(sp)
        if kind is not None:
            if kind not in ("resid", *QKV):
                raise PeapError(f"unknown edge kind {kind!r}; use 'resid', 'q', 'k' or 'v'")
            per = sp.n_cross // 3
            c = QKV.index(kind) if kind != "resid" else 0
            lo, hi = ((0, sp.n_resid) if kind == "resid" else
                      (sp.n_resid + c * per, sp.n_resid + (c + 1) * per))
        key = np.abs(self._scores[lo:hi])
        rows = lo + top_indices(np.where(np.isnan(key), -np.inf, key), n)
        table = sp.frame(rows)
        table["score"] = self._scores[rows]
        return table

    def __repr__(self) -> str:
        s, sp = self.settings, self.space
        kinds = {"resid": sp.n_resid, **({c: sp.n_cross // 3 for c in QKV} if sp.crossing else {})}
        return (f"AttributionResult(method={s['method']}, ablation={s['ablation']}, "
                f"aggregation={s['aggregation']}, metric={s['metric']}, examples={s['n_examples']}, "
                f"edges={len(sp)} {kinds}, clean_metric={self.clean_mean:.4g}"
                + ("" if self.counterfactual_metric is None
                   else f", counterfactual_metric={self.counterfactual_mean:.4g}") + ")")

    # --- persistence (peap_widget.circuits.result_files) -------------------------------------------

    def to_dict(self) -> dict:
        """The JSON document (version 1): metadata plus the edge table column by column."""
        return result_files.result_to_dict(self)

    @classmethod
    def from_dict(cls, d: dict) -> AttributionResult:
        return result_files.result_from_dict(cls, d)

    def save(self, path: str | Path) -> Path:
        """Write the result; the format follows the file name (`result_files.save_result`):
        ``.npz`` (NumPy arrays plus JSON metadata; use this for big graphs), ``.json`` /
        ``.json.gz`` (the whole edge table as JSON columns). Any other name is written as
        JSON, written next to ``path`` and moved in place when complete."""
        return result_files.save_result(self, path)

    @classmethod
    def load(cls, path: str | Path) -> AttributionResult:
        """Read a file written by `save`, whichever format (told apart by its first bytes, so a
        renamed file still loads). Anything else raises `PeapError` naming the file."""
        return result_files.load_result(cls, path)

