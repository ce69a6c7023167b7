"""graph.names: the one place node and component names are written and parsed, and
Graph.forward_coords, the inverse of the forward-node index arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

from peap_widget.errors import PeapError
from peap_widget.graph import EdgeSpace, Graph, GraphConfig
from peap_widget.graph.config import HEAD, INPUT, MLP
from peap_widget.graph.names import (KINDS, QKV, Component, component_name, component_of,
                                     head_name, mlp_name, node_name, parse_component, slot_name,
                                     split_node, split_slot)

CONFIGS = [GraphConfig(1, 1, 4), GraphConfig(2, 3, 8), GraphConfig(3, 2, 8, parallel_attn_mlp=True),
           GraphConfig(12, 12, 16)]


def test_writers():
    assert head_name(3, 4) == "a3.h4"
    assert mlp_name(0) == "m0"
    assert slot_name(3, 4, "k") == "a3.h4<k>"
    assert node_name("a3.h4", "S2") == "a3.h4@S2"


@pytest.mark.parametrize("name, want", [
    ("a3.h4@S2", ("a3.h4", "S2")),
    ("a3.h4<k>@S1", ("a3.h4<k>", "S1")),
    ("logits@END", ("logits", "END")),
    ("m0", ("m0", None)),
    ("m0@", ("m0", None)),                     # an empty span is no span
    ("m0@a@b->c", ("m0", "a@b->c")),           # span names may hold anything: the first @ splits
])
def test_split_node(name, want):
    assert split_node(name) == want


def test_split_node_checks_spans():
    assert split_node("a1.h0@B", ["A", "B"]) == ("a1.h0", "B")
    assert split_node("a1.h0", ["A", "B"]) == ("a1.h0", None)
    with pytest.raises(PeapError, match=r"no span 'C' in 'a1.h0@C'; the spans are \['A', 'B'\]"):
        split_node("a1.h0@C", ["A", "B"])
    with pytest.raises(PeapError, match="string"):
        split_node(3)


@pytest.mark.parametrize("name, want", [
    ("input", Component("input", None, None)),
    ("logits", Component("logits", None, None)),
    ("a3.h4", Component("head", 3, 4)),
    ("m12", Component("mlp", 12, None)),
    ("a0.h1<q>", Component("q", 0, 1)),
    ("a0.h1<k>", Component("k", 0, 1)),
    ("a10.h11<v>", Component("v", 10, 11)),
])
def test_parse_component(name, want):
    got = parse_component(name)
    assert got == want and got.kind in KINDS
    kind, layer, head = got                    # a plain tuple too
    assert component_name(kind, layer, head) == name


@pytest.mark.parametrize("bad", ["", "a3", "a3.h", "h4", "a3.h4.q", "a3.h4<x>", "a3.h4<q", "m",
                                 "mx", "M0", " a3.h4", "a3.h4 ", "Input", "a-1.h0", "a3.h4<q>x"])
def test_parse_component_refuses_bad_names(bad):
    with pytest.raises(PeapError, match="is not a component name: names look like 'input'"):
        parse_component(bad)


def test_parse_component_refuses_positional_and_non_strings():
    with pytest.raises(PeapError, match="positional node name; split its span off first"):
        parse_component("a3.h4@S2")
    with pytest.raises(PeapError, match="is a string"):
        parse_component(("a", 3))
    with pytest.raises(PeapError, match="unknown component kind"):
        component_name("attn", 0, 0)


def test_split_slot_and_component_of():
    assert split_slot("a1.h2<q>") == ("a1.h2", "q")
    assert split_slot("m1") == ("m1", None)
    assert component_of("a1.h2<v>") == "a1.h2"
    assert component_of("logits") == "logits"


@pytest.mark.parametrize("cfg", CONFIGS)
def test_round_trips_with_the_graph(cfg):
    g = Graph(cfg)
    for i, name in enumerate(g.forward_names):
        kind, layer, head = parse_component(name)
        assert component_name(kind, layer, head) == name
        if kind == "head":
            assert g.head_node(layer, head) == i and name in g.head_names
        elif kind == "mlp":
            assert g.mlp_node(layer) == i
        else:
            assert (kind, i) == ("input", 0)
    for b, name in enumerate(g.backward_names):
        kind, layer, head = parse_component(name)
        assert component_name(kind, layer, head) == name
        if kind in QKV:
            assert g.qkv_slot(layer, QKV.index(kind), head) == b
            assert component_of(name) == head_name(layer, head)
        elif kind == "mlp":
            assert g.mlp_slot(layer) == b
        else:
            assert kind == "logits" and b == g.logits_slot
    for hf, name in enumerate(g.head_names):
        assert parse_component(name) == ("head", hf // g.H, hf % g.H)


@pytest.mark.parametrize("cfg", CONFIGS[:3])
def test_round_trips_with_positional_nodes(cfg):
    spans = ["S1", "a@b", "END"]
    space = EdgeSpace(Graph(cfg), spans, crossing=True)
    for i, name in enumerate(space.node_names):
        base, span = split_node(name)
        assert span in spans and node_name(base, span) == name
        assert component_name(*parse_component(base)) == base
        assert space.node_index[name] == i


@pytest.mark.parametrize("cfg", CONFIGS)
def test_forward_coords_invert_the_index_arithmetic(cfg):
    g = Graph(cfg)
    kind, layer, index = g.forward_coords(np.arange(g.n_forward))
    assert (kind[0], layer[0], index[0]) == (INPUT, -1, 0)
    for L in range(g.L):
        for h in range(g.H):
            u = g.head_node(L, h)
            assert (kind[u], layer[u], index[u]) == (HEAD, L, h) == g.forward_coord(u)
        u = g.mlp_node(L)
        assert (kind[u], layer[u], index[u]) == (MLP, L, g.H) == g.forward_coord(u)
    assert g.forward_coord(0) == (INPUT, -1, 0)
    # the kinds agree with the names
    names = {INPUT: "input", HEAD: "head", MLP: "mlp"}
    assert [names[k] for k in kind] == [parse_component(n).kind for n in g.forward_names]
