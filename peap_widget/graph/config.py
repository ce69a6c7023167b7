"""A model's graph without positions: `GraphConfig` (its shape) and `Graph` (the names and
indices of its nodes and slots, as arithmetic over two dense axes).

Like EAP-IG's graph, a whole graph is two axes: *forward nodes* (what writes to the residual
stream: ``input``, ``a{L}.h{H}``, ``m{L}``) and *backward slots* (what reads from it:
``a{L}.h{H}<q|k|v>``, ``m{L}``, ``logits``). A residual edge is a (forward node, backward slot)
pair with the node upstream of the slot; scores live in dense ``[..., n_forward, n_backward]``
arrays with `Graph.edge_mask` marking the real edges.

Upstream of a slot in layer L: ``input``, every head and MLP of layers < L, and (sequential
blocks) the heads of layer L for ``m{L}``. Forward nodes are ordered so that the upstream set of
every slot is a prefix of the forward axis (`Graph.n_upstream`).

Example:
    >>> g = Graph(GraphConfig(n_layers=2, n_heads=3, d_model=8))
    >>> g.head_node(1, 2), g.forward_names[g.head_node(1, 2)]
    (7, 'a1.h2')
    >>> g.forward_coord(g.mlp_node(1))
    (2, 1, 3)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..errors import PeapError
from ..util.lazy import cached_property
from .names import QKV, head_name, mlp_name, slot_name

#: the edge table's key columns (docs/numbers.md), before ``score``
KEY_COLUMNS = ("kind", "src", "dst", "src_span", "dst_span")
#: forward node kinds (`Graph.forward_coords`); the circuit explorer's node types start the same
INPUT, HEAD, MLP = 0, 1, 2


@dataclass(frozen=True)
class GraphConfig:
    n_layers: int
    n_heads: int
    d_model: int
    parallel_attn_mlp: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, spans: int = 1, crossing: bool = True) -> GraphConfig:
        """A config read from a file, checked before anything is built from it: positive whole
        numbers, and a positional graph of ``spans`` spans of at most `MAX_ROWS` rows (a tiny
        file cannot make us allocate terabytes). Raises `PeapError`."""
        if not isinstance(d, dict) or set(d) - {"n_layers", "n_heads", "d_model",
                                                 "parallel_attn_mlp"}:
            raise PeapError(f"a graph is {{n_layers, n_heads, d_model, parallel_attn_mlp}}, got {d!r}")
        for k in ("n_layers", "n_heads", "d_model"):
            v = d.get(k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise PeapError(f"graph {k} must be a positive whole number, got {v!r}")
        cfg = cls(d["n_layers"], d["n_heads"], d["d_model"], bool(d.get("parallel_attn_mlp", False)))
        g = Graph(cfg)
        rows = spans * g.n_forward * g.n_backward + (3 * cfg.n_layers * cfg.n_heads * spans * spans
                                                      if crossing else 0)
        if rows > MAX_ROWS:
            raise PeapError(f"a graph of {cfg.n_layers} layers x {cfg.n_heads} heads over {spans} "
                            f"spans has {rows:,} rows, more than the {MAX_ROWS:,} supported (at most "
                            "a few hundred layers and heads); is the file corrupted?")
        return cfg


#: the largest positional graph a file may describe (a Llama-3-405B graph over 8 spans has
#: 6.3e9 rows; 2^33 leaves room for it and refuses what cannot be real)
MAX_ROWS = 2 ** 33


class Graph:
    """Names and indices of one architecture's graph (no positions; see `edge_table`)."""

    def __init__(self, cfg: GraphConfig):
        self.cfg = cfg
        self.L, self.H = cfg.n_layers, cfg.n_heads

    def __reduce__(self):
        # Rebuilt from its shape: the cached index arrays (hundreds of MB for a 70B model)
        # never travel with a remote request.
        return (type(self), (self.cfg,))

    # forward axis: input, then per layer its heads, then its MLP
    @property
    def n_forward(self) -> int:
        return 1 + self.L * (self.H + 1)

    def head_node(self, layer: int, head: int) -> int:
        return 1 + layer * (self.H + 1) + head

    def mlp_node(self, layer: int) -> int:
        return 1 + layer * (self.H + 1) + self.H

    def forward_coord(self, node: int) -> tuple[int, int, int]:
        """(kind, layer, index) of one forward node, in plain ints (see `forward_coords`)."""
        if node == 0:
            return INPUT, -1, 0
        layer, index = divmod(node - 1, self.H + 1)
        return (MLP if index == self.H else HEAD), layer, index

    def forward_coords(self, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(kind, layer, index) of forward nodes (an array; the inverse of `head_node` and
        `mlp_node`): kind `INPUT`, `HEAD` or `MLP`; layer -1 for ``input``; index the head,
        ``H`` for the MLP (its place in its layer's block), 0 for ``input``.

        >>> g = Graph(GraphConfig(2, 3, 8))
        >>> [a.tolist() for a in g.forward_coords(np.arange(g.n_forward))]
        [[0, 1, 1, 1, 2, 1, 1, 1, 2], [-1, 0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 1, 2, 3, 0, 1, 2, 3]]
        """
        u = np.asarray(nodes, dtype=np.int64)
        layer, index = np.divmod(u - 1, self.H + 1)
        kind = np.where(u == 0, INPUT, np.where(index == self.H, MLP, HEAD))
        return kind, np.where(u == 0, -1, layer), np.where(u == 0, 0, index)

    # backward axis: per layer q of all heads, k of all heads, v of all heads, MLP; then logits
    @property
    def n_backward(self) -> int:
        return self.L * (3 * self.H + 1) + 1

    def qkv_slot(self, layer: int, kind: int, head: int) -> int:
        return layer * (3 * self.H + 1) + kind * self.H + head

    def mlp_slot(self, layer: int) -> int:
        return layer * (3 * self.H + 1) + 3 * self.H

    @property
    def logits_slot(self) -> int:
        return self.n_backward - 1

    def attn_upstream(self, layer: int) -> int:
        """How many forward nodes (a prefix) feed the q/k/v slots of ``layer``."""
        return 1 + layer * (self.H + 1)

    def mlp_upstream(self, layer: int) -> int:
        return self.attn_upstream(layer) + (0 if self.cfg.parallel_attn_mlp else self.H)

    @cached_property
    def forward_names(self) -> list[str]:
        names = ["input"]
        for layer in range(self.L):
            names += [head_name(layer, h) for h in range(self.H)] + [mlp_name(layer)]
        return names

    @cached_property
    def backward_names(self) -> list[str]:
        names = []
        for layer in range(self.L):
            for kind in QKV:
                names += [slot_name(layer, h, kind) for h in range(self.H)]
            names.append(mlp_name(layer))
        return names + ["logits"]

    @cached_property
    def head_names(self) -> list[str]:
        """Head names in (layer, head) order, matching ``[L, H]`` arrays flattened."""
        return [head_name(layer, h) for layer in range(self.L) for h in range(self.H)]

    @cached_property
    def n_upstream(self) -> np.ndarray:
        """[n_backward] length of the forward prefix upstream of each slot."""
        n = np.empty(self.n_backward, dtype=np.int64)
        for layer in range(self.L):
            base = self.qkv_slot(layer, 0, 0)
            n[base: base + 3 * self.H] = self.attn_upstream(layer)
            n[self.mlp_slot(layer)] = self.mlp_upstream(layer)
        n[-1] = self.n_forward
        return n

    @cached_property
    def edge_mask(self) -> np.ndarray:
        """[n_forward, n_backward] bool: True where (node -> slot) is a real edge."""
        return np.arange(self.n_forward)[:, None] < self.n_upstream[None, :]

    @property
    def n_edges(self) -> int:
        """Residual edges of the graph without positions (EAP-IG's count; 32,491 for GPT-2 small)."""
        return int(self.edge_mask.sum())
