"""The edge space, units, greedy search and result files at scale, checked against plain
references on small graphs: the object-string edge table, a dict of every edge name, a heap over
every candidate unit, fixpoint path pruning (the implementations before the 8B-graph rework)."""

import heapq

import numpy as np
import pandas as pd
import pytest

import peap_widget as pw
from peap_widget import PeapError
from peap_widget.circuits.search import top_indices
from peap_widget.circuits.units import Units, units_of
from peap_widget.graph.space import QKV, EdgeSpace, Graph, GraphConfig

SPACES = [  # (layers, heads, parallel, spans, crossing)
    (2, 3, False, ["A", "B", "C"], True),
    (3, 2, True, ["x", "y"], True),
    (2, 2, False, ["all"], False),
    (1, 1, False, ["only"], True),
    (2, 2, False, ["a@b", "->", "c[d]", "a"], True),  # span names that look like separators
]


def make_space(L, H, parallel, spans, crossing):
    return EdgeSpace(Graph(GraphConfig(L, H, 8, parallel)), spans, crossing)


def reference_coords(space):
    """Per-row coordinates as they were built before: repeat/tile of the edge mask's nonzeros."""
    g, S = space.graph, space.n_spans
    fwd, bwd = np.nonzero(g.edge_mask)
    return np.repeat(np.arange(S), len(fwd)), np.tile(fwd, S), np.tile(bwd, S)


def reference_table(space):
    """The edge table's key columns as object-dtype strings, built row by row."""
    g = space.graph
    span, fwd, bwd = reference_coords(space)
    rows = [("resid", g.forward_names[u], g.backward_names[b], space.spans[s], space.spans[s])
            for s, u, b in zip(span, fwd, bwd)]
    for c, layer, head, qs, ks in zip(space.kind, space.layer, space.head, space.qspan, space.kspan):
        name = f"a{layer}.h{head}"
        rows.append((QKV[c], name, name, space.spans[ks], space.spans[qs]))
    return pd.DataFrame(rows, columns=["kind", "src", "dst", "src_span", "dst_span"], dtype=object)


def reference_name(key):
    kind, src, dst, s_src, s_dst = key
    if kind == "resid":
        return f"{src}->{dst}@{s_src}"
    read = s_dst if kind == "q" else s_src
    return f"{src}<{kind}>@{read}->{dst}@{s_dst}" + (f"[{s_src}]" if kind == "q" else "")


def reference_nodes(space):
    """Child and parent node of every row from the node names (independent of the arithmetic)."""
    idx = space.node_index
    t = reference_table(space)
    child, parent = [], []
    for kind, src, dst, s_src, s_dst in t.itertuples(index=False, name=None):
        if kind == "resid":
            parent.append(idx[f"{src}@{s_src}"])
            if dst == "logits":
                child.append(idx[f"logits@{s_src}"])
            elif "<" in dst and space.crossing:
                child.append(idx[f"{dst}@{s_src}"])
            else:
                child.append(idx[f"{dst.split('<')[0]}@{s_src}"])
        else:
            parent.append(idx[f"{src}<{kind}>@{s_dst if kind == 'q' else s_src}"])
            child.append(idx[f"{dst}@{s_dst}"])
    return np.asarray(child), np.asarray(parent)


@pytest.mark.parametrize("spec", SPACES)
def test_lazy_table_equals_the_object_string_table(spec):
    space = make_space(*spec)
    ref = reference_table(space)
    table = space.table
    assert list(table.columns) == list(ref.columns) and len(table) == len(ref)
    assert all(isinstance(table[c].dtype, pd.CategoricalDtype) for c in table.columns)
    assert table.astype(object).equals(ref)               # cell by cell
    rows = np.asarray([len(space) - 1, 0, 3])
    assert space.frame(rows).astype(object).equals(ref.iloc[rows].set_axis(rows))
    span, fwd, bwd = reference_coords(space)
    for got, want in ((space.span, span), (space.fwd, fwd), (space.bwd, bwd)):
        np.testing.assert_array_equal(got, want)
    child, parent = reference_nodes(space)
    np.testing.assert_array_equal(space.child, child)
    np.testing.assert_array_equal(space.parent, parent)
    for node in range(space.n_nodes):  # incoming rows by arithmetic = a search over all rows
        np.testing.assert_array_equal(np.sort(space.rows_into(node)), np.nonzero(child == node)[0])


@pytest.mark.parametrize("spec", SPACES)
def test_row_lookup_by_arithmetic_equals_the_table(spec):
    space = make_space(*spec)
    ref = reference_table(space)
    by_name = {}
    for i, key in enumerate(ref.itertuples(index=False, name=None)):
        name = reference_name(key)
        by_name[name] = i
        assert space.key(i) == key
        assert space.edge_name(i) == name
        assert space.row(key) == i and space.row(name) == i
    assert len(by_name) == len(space)  # names are unique
    assert space.row_of_name == by_name
    assert space.row_of_key == {k: i for i, k in enumerate(ref.itertuples(index=False, name=None))}
    rows = space.rows_of_keys(*(ref[c] for c in ref.columns))
    np.testing.assert_array_equal(rows, np.arange(len(space)))


def test_row_lookup_rejects_what_is_no_edge():
    space = make_space(2, 3, False, ["A", "B", "C"], True)
    bad_names = ["a1.h0->a0.h0<q>@A",        # downstream -> upstream
                 "m1->a1.h0<q>@A",           # the MLP is after the heads of its layer
                 "m0->a0.h1<q>@Z",           # no such span
                 "a1.h0<k>@C->a1.h0@A",      # key span after query span
                 "a1.h0<q>@B->a1.h0@B",      # q needs its key span
                 "a1.h0<q>@B->a1.h0@B[C]",   # key span after query span
                 "a1.h0<k>@A->a1.h1@B",      # different heads
                 "a1.h0<z>@A->a1.h0@B", "m0", "", "m0->", "->logits@A", "input->logits@A@B"]
    for name in bad_names:
        with pytest.raises(KeyError, match="no edge named"):
            space.row(name)
    for key in [("resid", "m0", "a0.h1<q>", "A", "A"), ("resid", "input", "logits", "A", "B"),
                ("k", "a1.h0", "a1.h0", "C", "A"), ("x", "m0", "logits", "A", "A"), ("resid",)]:
        with pytest.raises(KeyError, match="no edge"):
            space.row(key)
    with pytest.raises(IndexError):
        space.row(len(space))
    assert (space.rows_of_keys(["q"], ["a0.h0"], ["a0.h1"], ["A"], ["A"]) == -1).all()


# --- units and greedy -------------------------------------------------------------------------


def reference_units(space, merge):
    """(unit of every row, number of units) as np.maximum.at-era code grouped them."""
    n = len(space)
    if merge and space.crossing:
        grp = np.concatenate([np.full(space.n_resid, -1),
                              np.arange(space.n_cross) % (space.n_cross // 3)])
        of_row = np.where(grp < 0, np.arange(n), space.n_resid + grp)
    else:
        of_row = np.arange(n)
    return of_row, int(of_row.max()) + 1


def reference_keys(space, scores, merge, absolute):
    of_row, n = reference_units(space, merge)
    vals = np.abs(scores) if absolute else np.asarray(scores, dtype=np.float64)
    vals = np.where(np.isnan(vals), -np.inf, vals)
    key = np.full(n, -np.inf)
    np.maximum.at(key, of_row, vals)
    return key


def reference_greedy(space, scores, merge, absolute):
    """A heap over every candidate unit, ties to the smaller unit, until none is reachable."""
    of_row, n = reference_units(space, merge)
    key = reference_keys(space, scores, merge, absolute)
    child = np.empty(n, dtype=np.int64)
    child[of_row] = space.child
    parents = [set() for _ in range(n)]
    for row, u in enumerate(of_row):
        parents[u].add(int(space.parent[row]))
    into = {}
    for u in range(n):
        into.setdefault(int(child[u]), []).append(u)
    active, heap, order = set(), [], []

    def activate(node):
        active.add(node)
        for u in into.get(node, []):
            heapq.heappush(heap, (-key[u], u))

    activate(space.root)
    while heap:
        _, u = heapq.heappop(heap)
        order.append(u)
        for p in sorted(parents[u]):
            if p not in active:
                activate(p)
    return np.asarray(order)


def score_variants(scores):
    rng = np.random.default_rng(0)
    tied = np.round(scores * 3) / 3                      # many exact ties, some of them 0
    nan = scores.copy()
    nan[rng.choice(len(nan), len(nan) // 5, replace=False)] = np.nan
    allnan = scores.copy()
    allnan[: len(allnan) // 2] = np.nan                  # merged groups entirely NaN too
    signed_zero = np.where(rng.random(len(scores)) < 0.3, -0.0, tied)
    return {"raw": scores, "tied": tied, "nan": nan, "halfnan": allnan,
            "signed_zero": signed_zero, "constant": np.ones_like(scores)}


@pytest.mark.parametrize("merge", [True, False])
@pytest.mark.parametrize("absolute", [True, False])
def test_greedy_equals_the_reference(tiny_results, merge, absolute):
    _, _, peap, eap = tiny_results
    for res in (peap, eap):
        space = res.space
        for label, scores in score_variants(res.scores).items():
            want = reference_greedy(space, scores, merge, absolute)
            cache = {}
            from peap_widget.circuits.search import greedy_order
            got = greedy_order(space, scores, merge, absolute, cache)
            np.testing.assert_array_equal(got, want, err_msg=f"{res.method} {label}")
            # a lazily extended prefix is the same order
            cache = {}
            parts = [greedy_order(space, scores, merge, absolute, cache, n=k)
                     for k in (0, 1, 7, 60)]
            for k, part in zip((0, 1, 7, 60), parts):
                np.testing.assert_array_equal(part, want[:k])
            np.testing.assert_array_equal(greedy_order(space, scores, merge, absolute, cache), want)
            np.testing.assert_array_equal(
                Units(space, merge).greedy_order(reference_keys(space, scores, merge, absolute)),
                want)
            units = units_of(space, merge)
            np.testing.assert_array_equal(units.keys(scores, absolute),
                                          reference_keys(space, scores, merge, absolute))


@pytest.mark.parametrize("walk, heads", [(1, 10**9), (50, 10**9), (10**9, 1), (50, 1)])
def test_greedy_modes_equal_the_reference(tiny_results, monkeypatch, walk, heads):
    """Thresholds low: the order is walked (from the start, or after a merged prefix), and/or
    residual streams' heads come from one vectorised pass: still the same order."""
    import peap_widget.circuits.greedy as greedy

    monkeypatch.setattr(greedy, "WALK", walk)
    monkeypatch.setattr(greedy, "HEADS", heads)
    _, _, peap, eap = tiny_results
    for res in (peap, eap):
        for merge in (True, False):
            for absolute in (True, False):
                for scores in score_variants(res.scores).values():
                    want = reference_greedy(res.space, scores, merge, absolute)
                    units = units_of(res.space, merge)
                    g = greedy.GreedyOrder(units, lambda u, s=scores: units.keys_of(s, absolute, u))
                    np.testing.assert_array_equal(g.prefix(5), want[:5])
                    assert (g._walk is not None) == (walk == 1)
                    assert (g._head_unit is not None) == (heads == 1 and walk > 1)
                    np.testing.assert_array_equal(g.prefix(len(want) // 2), want[: len(want) // 2])
                    np.testing.assert_array_equal(g.prefix(), want)
                    assert g._done and g._walk is not None   # the whole order: walked


def test_result_greedy_order_api(tiny_results):
    _, _, peap, _ = tiny_results
    full = peap.greedy_order(True, absolute=True)
    assert full.dtype == np.int64
    np.testing.assert_array_equal(peap.greedy_order(True, absolute=True, n=10), full[:10])
    np.testing.assert_array_equal(peap.greedy_order(True, absolute=True, n=10**9), full)
    assert len(peap.greedy_order(False, n=0)) == 0
    np.testing.assert_array_equal(full, reference_greedy(peap.space, peap.scores, True, True))
    for res in tiny_results[2:]:
        for merge in (True, False):
            order = reference_greedy(res.space, res.scores, merge, True)
            assert res.greedy_order_length(merge) == len(res.greedy_order(merge)) == len(order)
            # a size covering every reachable unit takes the reachable set without ordering it
            fresh = pw.AttributionResult(res.scores, res.spans, res.settings, res.clean_metric,
                                         None, None, res.graph_config)
            units = units_of(res.space, merge)
            for n in (len(order), 10**9):
                want = np.zeros(units.n, dtype=bool)
                want[order[:n]] = True
                got = fresh.circuit(n, merge_qkv=merge, prune=False)
                np.testing.assert_array_equal(got.in_rows, units.rows_mask(want))
            assert not fresh._greedy_orders[(merge, True)]._order   # nothing was ordered


def reference_on_paths(space, rows):
    """Fixpoint iteration over the rows, as path pruning was done before."""
    idx = np.nonzero(rows)[0]
    parent, child = space.parent[idx], space.child[idx]
    from_input = np.zeros(space.n_nodes, dtype=bool)
    from_input[space.input_nodes] = True
    to_root = np.zeros(space.n_nodes, dtype=bool)
    to_root[space.root] = True
    for _ in range(space.n_nodes):
        before = from_input.sum() + to_root.sum()
        from_input[child[from_input[parent]]] = True
        to_root[parent[to_root[child]]] = True
        if from_input.sum() + to_root.sum() == before:
            break
    out = np.zeros(len(space), dtype=bool)
    out[idx[from_input[parent] & to_root[child]]] = True
    return out


@pytest.mark.parametrize("spec", SPACES)
def test_on_paths_and_sizes_equal_the_references(spec):
    space = make_space(*spec)
    rng = np.random.default_rng(1)
    lengths = rng.integers(0, 5, (3, space.n_spans))
    for density in (0.0, 0.1, 0.5, 0.9, 1.0):
        rows = rng.random(len(space)) < density
        np.testing.assert_array_equal(space.on_paths(rows), reference_on_paths(space, rows))
        assert space.real_total(rows, lengths) == pytest.approx(
            space.real_counts(lengths)[rows].sum(), rel=1e-12)
        for merge in (True, False):
            units = Units(space, merge)
            of_row, n = reference_units(space, merge)
            assert units.n == n
            np.testing.assert_array_equal(units.of_row, of_row)
            assert units.count(rows) == np.unique(of_row[rows]).size
            umask = np.zeros(n, dtype=bool)
            umask[of_row[rows]] = True
            np.testing.assert_array_equal(units.unit_mask(rows), umask)
            np.testing.assert_array_equal(units.rows_mask(umask), umask[of_row])
    # real counts row by row, as before: |s| per residual row, key <= query pairs per crossing row
    mean = lengths.mean(0)
    want = [mean[s] for s in reference_coords(space)[0]]
    for qs, ks in zip(space.qspan, space.kspan):
        lq, lk = lengths[:, qs], lengths[:, ks]
        want.append((lq * (lq + 1) / 2 if qs == ks else lq * lk).mean())
    np.testing.assert_allclose(space.real_counts(lengths), want, rtol=1e-12)


def test_topn_picks_like_a_stable_sort():
    rng = np.random.default_rng(2)
    key = np.round(rng.standard_normal(500), 1)
    key[::7] = -np.inf
    for n in (0, 1, 5, 37, 499, 500, 600):
        np.testing.assert_array_equal(top_indices(key, n), np.argsort(-key, kind="stable")[:n])


def test_top_and_repr_need_no_table(tiny_results):
    _, _, peap, eap = tiny_results
    for res in (peap, eap):
        e = reference_table(res.space).assign(score=res.scores)
        for kind in (None, "resid", "q", "v"):
            if kind in QKV and not res.space.crossing:
                continue
            sub = e if kind is None else e[e.kind == kind]
            order = np.argsort(-np.abs(sub.score.to_numpy()), kind="stable")[:9]
            got = res.top(9, kind=kind)
            assert got.astype({c: object for c in e.columns[:5]}).equals(sub.iloc[order])
    assert "q': " in repr(peap) and "q'" not in repr(eap)
    with pytest.raises(PeapError, match="unknown edge kind"):
        peap.top(3, kind="x")


# --- the result's table and files ---------------------------------------------------------------


def assert_same_result(a, b):
    assert a.scores.dtype == b.scores.dtype == np.float64
    assert a.scores.tobytes() == b.scores.tobytes()          # bit for bit, NaN included
    assert a.settings == b.settings and a.spans == b.spans and a.schema == b.schema
    assert a.graph_config == b.graph_config and a.space is b.space
    for name in ("clean_metric", "counterfactual_metric", "span_lengths"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None)
        if x is not None:
            assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()


def test_binary_round_trip_is_exact(tiny_results, tmp_path):
    _, _, peap, eap = tiny_results
    odd = pw.AttributionResult(np.where(np.arange(len(peap.scores)) % 5 == 0, np.nan,
                                        peap.scores * 1e-300), peap.spans,
                               {**peap.settings, "note": "ünïcode"}, peap.clean_metric, None,
                               None, peap.graph_config, None)
    for res in (peap, eap, odd):
        for name in ("r.npz", "r.json", "r.json.gz"):
            path = res.save(tmp_path / name)
            back = pw.AttributionResult.load(path)
            assert_same_result(res, back)
            assert back.edges.equals(res.edges)
        assert not list(tmp_path.glob(".*tmp"))              # no temporary left behind
    assert (tmp_path / "r.npz").stat().st_size < len(peap.scores) * 8 + 10_000


def test_edges_table_is_lazy_and_matches(tiny_results):
    _, _, peap, _ = tiny_results
    res = pw.AttributionResult(peap.scores, peap.spans, peap.settings, peap.clean_metric,
                               peap.counterfactual_metric, peap.schema, peap.graph_config,
                               peap.span_lengths)
    res.circuit(20), res.top(3), repr(res), res.full_circuit().n_real_edges
    assert res._edges is None                                 # nothing above built the table
    e = res.edges
    assert res.edges is e
    ref = reference_table(res.space).assign(score=res.scores)
    assert e.astype({c: object for c in ref.columns[:5]}).equals(ref)
    with pytest.raises(ValueError):
        res.scores[0] = 1.0                                   # read-only: caches stay valid
    # a table in the wrong order or of another graph is refused
    with pytest.raises(PeapError, match="expected order"):
        pw.AttributionResult(ref.iloc[::-1], res.spans, res.settings, res.clean_metric, None,
                             None, res.graph_config)
    with pytest.raises(PeapError, match="do not match the graph"):
        pw.AttributionResult(res.scores[:-1], res.spans, res.settings, res.clean_metric, None,
                             None, res.graph_config)


def test_loading_other_files_names_them(tiny_results, tmp_path):
    _, _, peap, _ = tiny_results
    good = peap.save(tmp_path / "good.npz")
    cases = {
        "empty.npz": b"",
        "text.npz": b"hello",
        "truncated.npz": good.read_bytes()[:2000],
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    np.savez(tmp_path / "other.npz", x=np.arange(3))
    np.savez(tmp_path / "pickled.npz", meta=np.asarray([{"a": 1}], dtype=object))
    meta = b'{"format": "peap_widget.attribution", "version": 2, "spans": ["all"], ' \
           b'"settings": {}, "schema": null, "graph": {"n_layers": 1, "n_heads": 1, "d_model": 4}}'
    np.savez(tmp_path / "short.npz", meta=np.frombuffer(meta, np.uint8), scores=np.ones(3),
             clean_metric=np.ones(1))
    np.savez(tmp_path / "wrongfmt.npz", meta=np.frombuffer(b'{"format": "x"}', np.uint8))
    np.savez(tmp_path / "future.npz", meta=np.frombuffer(meta.replace(b'"version": 2',
                                                                        b'"version": 9'), np.uint8))
    (tmp_path / "npz.json").write_bytes(good.read_bytes())   # renamed: still loads
    assert_same_result(pw.AttributionResult.load(tmp_path / "npz.json"), peap)
    for name in [*cases, "other.npz", "pickled.npz", "short.npz", "wrongfmt.npz", "future.npz"]:
        with pytest.raises(PeapError, match=name.replace(".", r"\.")):
            pw.AttributionResult.load(tmp_path / name)
    with pytest.raises(PeapError, match="missing.npz"):
        pw.AttributionResult.load(tmp_path / "missing.npz")
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    with pytest.raises(PeapError, match=r"bad\.json.*not a peap_widget.attribution document"):
        pw.AttributionResult.load(tmp_path / "bad.json")


def test_circuits_from_files_and_frames(tiny_results, tmp_path):
    _, _, peap, _ = tiny_results
    c = peap.circuit(40)
    back = pw.Circuit.from_json(c.to_json())
    np.testing.assert_array_equal(back.in_rows, c.in_rows)
    assert back.edges.equals(c.edges)
    assert peap.circuit_from(c.edges).in_rows.tolist() == c.in_rows.tolist()
    with pytest.raises(PeapError, match="indexed by edge-table rows"):
        peap.circuit_from(c.edges.set_axis(c.edges.index + len(peap.scores)))
    d = c.to_dict()
    d["edges"][0][1] = "nonsense"
    with pytest.raises(PeapError, match="no edge"):
        pw.Circuit.from_dict(d)
