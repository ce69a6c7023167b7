"""Layer 2, graph: a model's computation graph as index arithmetic. `GraphConfig` / `Graph`
name the nodes and slots (`config`), `names` writes and parses every name, `EdgeSpace` numbers
every (positional) edge (`index`: the arithmetic) and turns rows into names and back (`space`);
nothing here touches a model.

Example:
    >>> g = Graph(GraphConfig(n_layers=2, n_heads=2, d_model=8))
    >>> g.n_forward, g.forward_names[:4]
    (7, ['input', 'a0.h0', 'a0.h1', 'm0'])
    >>> g.head_node(1, 0), g.forward_names[g.head_node(1, 0)]
    (4, 'a1.h0')
"""

from .config import KEY_COLUMNS, MAX_ROWS, Graph, GraphConfig
from .names import (QKV, Component, component_name, component_of, head_name, mlp_name, node_name,
                    parse_component, slot_name, split_node, split_slot)
from .space import EdgeSpace, edge_space, edge_table

__all__ = ["KEY_COLUMNS", "MAX_ROWS", "QKV", "Component", "EdgeSpace", "Graph", "GraphConfig",
           "component_name", "component_of", "edge_space", "edge_table", "head_name", "mlp_name",
           "node_name", "parse_component", "slot_name", "split_node", "split_slot"]
