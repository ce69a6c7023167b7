"""Circuit search, editing, sizes and file formats (DESIGN.md section 6)."""

import json

import networkx as nx
import numpy as np
import pytest

import peap_widget as pw
from peap_widget import PeapError


def path_checked(circ):
    """Independent check with networkx: every circuit edge lies on a path input -> root logits."""
    G = circ.to_networkx()
    root = f"logits@{circ.space.spans[-1]}"
    inputs = [n for n in G if n.startswith("input@")]
    for a, b, _ in G.edges:
        assert nx.has_path(G, b, root), f"{a}->{b} does not reach {root}"
        assert any(nx.has_path(G, i, a) for i in inputs), f"{a} is not reached from any input"
    return G


@pytest.mark.parametrize("merge", [True, False])
def test_greedy_edges_reach_logits_and_input(tiny_results, merge):
    _, _, peap, eap = tiny_results
    for res in (peap, eap):
        for n in (10, 40, 150):
            circ = res.circuit(n_edges=n, merge_qkv=merge)
            assert circ.n_edges <= n
            G = path_checked(circ)
            assert G.number_of_edges() == circ.n_rows


def test_greedy_sizes_are_monotone_and_nested(tiny_results):
    _, _, peap, _ = tiny_results
    prev = None
    sizes = []
    for n in range(0, 400, 25):
        c = peap.circuit(n_edges=n)
        sizes.append(c.n_edges)
        if prev is not None:
            assert not (prev.in_rows & ~c.in_rows).any()  # nested
        prev = c
    assert sizes == sorted(sizes) and sizes[-1] > 100


def test_greedy_follows_the_definition(tiny_results):
    """Without pruning, the greedy circuit of n edges is built by always taking the best edge
    whose child is already in: check each step against a slow independent search."""
    _, _, peap, _ = tiny_results
    sp = peap.space
    t = peap.edges
    score = t["score"].abs().to_numpy()

    def child(i):
        k, src, dst, s_src, s_dst = t.iloc[i][["kind", "src", "dst", "src_span", "dst_span"]]
        if k == "resid":
            return f"{dst}@{s_src}" if dst != "logits" else f"logits@{s_src}"
        return f"{dst}@{s_dst}"

    def parents(i):
        k, src, dst, s_src, s_dst = t.iloc[i][["kind", "src", "dst", "src_span", "dst_span"]]
        if k == "resid":
            return [f"{src}@{s_src}"]
        return [f"{src}<{k}>@{s_dst if k == 'q' else s_src}"]

    active, chosen = {f"logits@{sp.spans[-1]}"}, []
    children = [child(i) for i in range(len(t))]
    for _ in range(30):
        cand = [i for i in range(len(t)) if i not in chosen and children[i] in active]
        best = max(cand, key=lambda i: (score[i], -i))
        chosen.append(best)
        active.update(parents(best))
    circ = peap.circuit(n_edges=30, merge_qkv=False, prune=False)
    assert sorted(np.nonzero(circ.in_rows)[0]) == sorted(chosen)


def test_topn_and_threshold(tiny_results):
    _, _, peap, _ = tiny_results
    key = peap.edges["score"].abs().to_numpy()
    c = peap.circuit(n_edges=50, method="topn", merge_qkv=False, prune=False)
    assert c.n_rows == 50 and key[c.in_rows].min() >= key[~c.in_rows].max()
    thr = np.sort(key)[-80]
    c = peap.circuit(method="threshold", threshold=thr, merge_qkv=False, prune=False)
    assert c.n_rows == (key >= thr).sum()
    signed = peap.circuit(n_edges=50, method="topn", merge_qkv=False, prune=False, absolute=False)
    s = peap.edges["score"].to_numpy()
    assert s[signed.in_rows].min() >= s[~signed.in_rows].max()
    with pytest.raises(PeapError, match="threshold"):
        peap.circuit(method="threshold")
    with pytest.raises(PeapError, match="unknown circuit search"):
        peap.circuit(n_edges=3, method="acdc")
    with pytest.raises(PeapError, match="n_edges"):
        peap.circuit(n_edges=-1)


def test_merged_crossing_edges_move_together(tiny_results):
    _, _, peap, _ = tiny_results
    c = peap.circuit(n_edges=60, merge_qkv=True, prune=False)
    cross = c.edges[c.edges.kind != "resid"]
    groups = cross.groupby(["src", "src_span", "dst_span"]).kind.apply(lambda k: "".join(sorted(k)))
    assert len(groups) > 0 and (groups == "kqv").all()
    # n_edges counts a q/k/v group once
    assert c.n_edges == (c.edges.kind == "resid").sum() + len(groups)
    # merged ranking key = max(|q|, |k|, |v|)
    e = peap.edges
    key = c.units.keys(peap.scores, absolute=True)
    row = int(np.nonzero((e.kind == "k").to_numpy())[0][7])
    grp = np.nonzero(c.space.crossing_group == c.space.crossing_group[row])[0]
    assert key[c.units.of_row[row]] == np.abs(e.score.to_numpy()[grp]).max()
    # pruning works row by row: a pruned merged circuit is a subset of the unpruned one
    pruned = peap.circuit(n_edges=60, merge_qkv=True)
    assert not (pruned.in_rows & ~c.in_rows).any() and pruned.n_rows < c.n_rows
    # editing a merged circuit toggles the whole group; merged=False only the row
    row = int(cross.index[0])
    c.remove_edge(row)
    assert not c.in_rows[grp_of(c, row)].any()
    c.add_edge(row, merged=False)
    assert c.in_rows[grp_of(c, row)].sum() == 1


def grp_of(c, row):
    return np.nonzero(c.space.crossing_group == c.space.crossing_group[row])[0]


def test_editing_and_undo(tiny_results):
    _, _, peap, _ = tiny_results
    c = peap.circuit(n_edges=40)
    before = c.in_rows.copy()
    some = c.edges.index[0]
    assert some in c
    assert c.remove_edge(int(some)) >= 1 and int(some) not in c
    c.undo()
    assert (c.in_rows == before).all()
    # by key and by name
    out_row = int(np.nonzero(~c.in_rows)[0][0])
    key = tuple(peap.edges.iloc[out_row][["kind", "src", "dst", "src_span", "dst_span"]])
    c.add_edge(key)
    assert out_row in c
    name = c.space.edge_name(out_row)
    c.remove_edge(name)
    assert out_row not in c
    # a node with all its edges, then restored
    head = next(n for n in c.nodes() if n.startswith("a") and "<" not in n)
    n_before = c.n_rows
    removed = c.remove_node(head)
    assert removed > 0 and head not in c.nodes() and c.n_rows == n_before - removed
    c.restore_node(head)
    assert c.n_rows == n_before
    # whole component at every span
    c.remove_node("m0")
    assert not any(n.startswith("m0@") for n in c.nodes())
    with pytest.raises(KeyError):
        c.remove_node("a9.h9")
    with pytest.raises(KeyError):
        c.restore_node("m1")
    while c.undo():
        pass
    assert (c.in_rows == before).all()


def test_circuit_from_rows(tiny_results):
    _, _, peap, _ = tiny_results
    e = peap.edges
    mask = (e.kind == "v").to_numpy()
    a = peap.circuit_from(mask)
    b = peap.circuit_from(np.nonzero(mask)[0])
    c = peap.circuit_from(e[e.kind == "v"])
    assert (a.in_rows == b.in_rows).all() and (a.in_rows == c.in_rows).all()
    assert a.edges.equals(e[e.kind == "v"])
    with pytest.raises(PeapError, match="boolean row mask"):
        peap.circuit_from(mask[:-1])


def test_sizes_in_real_edges(tiny_results):
    _, ds, peap, eap = tiny_results
    c = peap.circuit(n_edges=80)
    total = 0.0
    for ex in ds.examples:  # independent count per example
        L = {name: e - s for name, (s, e) in zip(ds.schema.spans, ex.spans)}
        starts = {name: s for name, (s, _) in zip(ds.schema.spans, ex.spans)}
        for r in c.edges.itertuples():
            if r.kind == "resid":
                total += L[r.src_span]
            else:
                q = range(starts[r.dst_span], starts[r.dst_span] + L[r.dst_span])
                k = range(starts[r.src_span], starts[r.src_span] + L[r.src_span])
                total += sum(1 for t in q for tp in k if tp <= t)
    assert c.n_real_edges == pytest.approx(total / len(ds), rel=1e-12)
    assert 0 < c.real_fraction < 1 and c.fraction == pytest.approx(c.n_edges / c.units.n)
    full = eap.full_circuit()
    lengths = [ex.length for ex in ds.examples]
    assert full.n_real_edges == pytest.approx(np.mean(lengths) * full.n_rows)


def test_json_round_trip_is_exact(tiny_results, tmp_path):
    _, _, peap, eap = tiny_results
    for res in (peap, eap):
        c = res.circuit(n_edges=50)
        c.remove_edge(int(c.edges.index[0]), merged=False)
        path = tmp_path / "c.json"
        c.save(path)
        back = pw.Circuit.load(path)
        assert (back.in_rows == c.in_rows).all() and back.space.same_as(c.space)
        assert back.edges.equals(c.edges)
        assert back.merge_qkv == c.merge_qkv and back.settings == c.settings
        assert back.n_real_edges == c.n_real_edges
        assert back.to_json() == c.to_json()


def test_bad_circuit_json(tmp_path):
    with pytest.raises(PeapError, match="not valid JSON"):
        pw.Circuit.from_json("{oops")
    with pytest.raises(PeapError, match="not a peap_widget.circuit"):
        pw.Circuit.from_json(json.dumps({"format": "x"}))
    with pytest.raises(PeapError, match="cannot read"):
        pw.Circuit.load(tmp_path / "missing.json")
    good = {"format": "peap_widget.circuit", "graph": {"n_layers": 1, "n_heads": 1, "d_model": 4},
            "spans": ["all"], "crossing": False, "merge_qkv": True,
            "edges": [["resid", "input", "nowhere", "all", "all", 1.0]]}
    with pytest.raises(PeapError, match="malformed"):
        pw.Circuit.from_dict(good)


def test_mib_round_trip(tiny_results, tmp_path):
    _, _, peap, eap = tiny_results
    c = eap.circuit(n_edges=30)
    mib = json.loads(c.to_mib_json(tmp_path / "mib.json"))
    assert mib["cfg"] == {"n_layers": 2, "n_heads": 4, "parallel_attn_mlp": False, "d_model": 16}
    assert len(mib["edges"]) == peap.graph.n_edges
    assert sum(e["in_graph"] for e in mib["edges"].values()) == c.n_rows
    assert "input->a0.h1<q>" in mib["edges"] and "m1->logits" in mib["edges"]
    back = pw.Circuit.from_mib(tmp_path / "mib.json")
    assert (back.in_rows == c.in_rows).all()
    np.testing.assert_array_equal(back.scores, c.scores)
    assert back.to_mib() == c.to_mib()
    # positions collapse: PEAP resid edges -> any span in, scores summed over spans
    p = peap.circuit(n_edges=60)
    pm = p.to_mib()
    e = peap.edges
    r = e[(e.kind == "resid") & (e.src == "m0") & (e.dst == "logits")]
    assert pm["edges"]["m0->logits"]["score"] == pytest.approx(r.score.sum(), rel=1e-12)
    in_any = (p.edges.kind == "resid") & (p.edges.src == "m0") & (p.edges.dst == "logits")
    assert pm["edges"]["m0->logits"]["in_graph"] == bool(in_any.any())
    with pytest.raises(PeapError, match="malformed MIB"):
        pw.Circuit.from_mib({"cfg": {}})
