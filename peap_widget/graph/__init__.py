"""Layer 2, graph: a model's computation graph as index arithmetic. `GraphConfig` / `Graph`
name the nodes and slots, `EdgeSpace` numbers every (positional) edge and turns rows into names
and back; nothing here touches a model.

Example:
    >>> g = Graph(GraphConfig(n_layers=2, n_heads=2, d_model=8))
    >>> g.n_forward, g.forward_names[:4]
    (7, ['input', 'a0.h0', 'a0.h1', 'm0'])
    >>> g.head_node(1, 0), g.forward_names[g.head_node(1, 0)]
    (4, 'a1.h0')
"""

from .space import KEY_COLUMNS, MAX_ROWS, QKV, EdgeSpace, Graph, GraphConfig, edge_table

__all__ = ["KEY_COLUMNS", "MAX_ROWS", "QKV", "EdgeSpace", "Graph", "GraphConfig", "edge_table"]
