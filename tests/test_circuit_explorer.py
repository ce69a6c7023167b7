"""CircuitExplorer without a browser: selections, edits, messages, and the JS logic agreeing
with Python's (node runs js/circuit_explorer/logic.js on the same data)."""

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

import peap_widget as pw
from peap_widget.widgets.circuit_explorer import default_selection, selection_rows

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def explorer(tiny_results):
    model, ds, peap, _ = tiny_results
    return pw.CircuitExplorer(peap, model, ds, n_edges=30, curve_sizes=[5, 30, 100, 1.0])


def test_greedy_size_is_the_search_circuit(explorer, tiny_results):
    _, _, peap, _ = tiny_results
    for n in (0, 7, 30, 200):
        explorer.set_size(n)
        assert (explorer.circuit.in_rows == peap.circuit(n_edges=n).in_rows).all()


def test_threshold_size_is_the_threshold_circuit(explorer, tiny_results):
    _, _, peap, _ = tiny_results
    thr = float(np.quantile(np.abs(peap.scores), 0.97))
    explorer.set_size(threshold=thr)
    ref = peap.circuit(method="threshold", threshold=thr)
    assert (explorer.circuit.in_rows == ref.in_rows).all()
    explorer.set_size(30)


def test_edits_match_circuit_editing_and_evaluation(explorer, tiny_results):
    model, ds, peap, _ = tiny_results
    explorer.set_size(30)
    base = explorer.circuit
    head = next(n for n in base.nodes() if n.startswith("a") and "<" not in n)
    explorer.remove_node(head)
    ref = peap.circuit(n_edges=30)
    ref.remove_node(head)
    ref.prune()
    assert (explorer.circuit.in_rows == ref.in_rows).all()
    # the evaluation shown equals an independent evaluate() of the same circuit
    want = pw.evaluate(model, ds, ref)
    assert explorer.evaluation["faithfulness"] == pytest.approx(want.faithfulness, abs=1e-9)
    assert explorer.undo()
    assert (explorer.circuit.in_rows == base.in_rows).all()
    edge = int(np.nonzero(base.in_rows)[0][0])
    explorer.remove_edge(edge)
    assert not explorer.circuit.in_rows[edge]
    explorer.add_edge(edge)
    assert explorer.circuit.in_rows[edge]
    explorer.reset()
    assert (explorer.circuit.in_rows == base.in_rows).all()


def test_messages_round_trip_without_a_kernel(explorer, tiny_results):
    model, ds, peap, _ = tiny_results
    # what the front end does: set the selection trait, then ask for an evaluation
    sel = {**default_selection(12), "removed": [int(explorer._order[0])]}
    explorer.selection = sel
    explorer._on_message(explorer, {"type": "evaluate", "version": 41}, [])
    ev = explorer.evaluation
    assert ev["version"] == 41 and ev["selection"] == sel
    circ = peap.circuit_from(selection_rows(peap.space, True, explorer._order, peap.scores, sel))
    assert ev["faithfulness"] == pytest.approx(pw.evaluate(model, ds, circ).faithfulness, abs=1e-9)
    assert ev["n_edges"] == circ.n_edges
    # the synced state survives JSON (what the comm and the static page carry)
    state = explorer.get_state()
    json.dumps({k: v for k, v in state.items() if not isinstance(v, (bytes, memoryview))})


def test_head_cards(explorer, tiny_results):
    model, ds, _, _ = tiny_results
    info = explorer.head_info
    assert set(info) == {f"a{l}.h{h}" for l in range(2) for h in range(4)}
    att = np.array(info["a1.h2"]["attends"])
    S = len(ds.schema)
    assert att.shape == (S, S)
    np.testing.assert_allclose(att.sum(1), 1.0, atol=1e-3)      # a query's attention sums to 1
    assert np.allclose(np.triu(att, 1), 0)                       # causal: no later spans
    # independent check of one entry with plain HF attentions
    import torch

    hf = model.hf
    before, hf.config._attn_implementation = hf.config._attn_implementation, "eager"
    tot, cnt = 0.0, 0
    try:
        with torch.no_grad():
            for e in ds.examples:
                out = hf(torch.tensor([e.clean_ids]), output_attentions=True)
                a = out.attentions[1][0, 2].double()
                (q0, q1), (k0, k1) = e.spans[-1], e.spans[0]
                tot += float(a[q0:q1, k0:k1].sum())
                cnt += q1 - q0
    finally:
        hf.config._attn_implementation = before
    assert att[-1, 0] == pytest.approx(tot / cnt, abs=1e-4)
    assert len(info["a0.h0"]["promotes"]) == 5


def _run_js(data: dict, selections: list) -> list:
    script = """
import { readFileSync } from "node:fs";
import { prepare, circuitRows } from "./js/circuit_explorer/logic.js";
const inp = JSON.parse(readFileSync(0, "utf8"));
const T = { Int8Array, Int16Array, Int32Array, Float64Array };
const d = { info: inp.info };
for (const [k, [type, values]] of Object.entries(inp.arrays)) d[k] = T[type].from(values);
prepare(d);
const out = inp.selections.map((s) => Array.from(circuitRows(d, s)));
process.stdout.write(JSON.stringify(out));
"""
    proc = subprocess.run(["node", "--input-type=module", "-e", script], cwd=ROOT, text=True,
                          input=json.dumps({**data, "selections": selections}),
                          capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _js_data(ex) -> dict:
    def arr(name, dtype, js):
        return [js, np.frombuffer(getattr(ex, name), dtype=dtype).tolist()]

    return {"info": ex.info, "arrays": {
        "nodeType": arr("node_type", np.int8, "Int8Array"),
        "nodeLayer": arr("node_layer", np.int16, "Int16Array"),
        "nodeHead": arr("node_head", np.int16, "Int16Array"),
        "nodeSpan": arr("node_span", np.int16, "Int16Array"),
        "parent": arr("row_parent", np.int32, "Int32Array"),
        "child": arr("row_child", np.int32, "Int32Array"),
        "unit": arr("row_unit", np.int32, "Int32Array"),
        "kind": arr("row_kind", np.int8, "Int8Array"),
        "score": arr("row_score", np.float64, "Float64Array"),
        "order": arr("unit_order", np.int32, "Int32Array"),
    }}


@pytest.mark.parametrize("which", ["peap", "eap"])
def test_js_selection_logic_equals_python(tiny_results, which):
    model, ds, peap, eap = tiny_results
    res = peap if which == "peap" else eap
    ex = pw.CircuitExplorer(res)                         # no model: no evaluation, no curve
    rng = np.random.default_rng(0)
    n_units, n_nodes = ex.info["n_units"], ex.info["n_nodes"]
    order = ex._order
    sels = [default_selection(n) for n in (0, 1, 5, 40, len(order))]
    sels.append({**default_selection(0), "mode": "threshold",
                 "threshold": float(np.quantile(np.abs(res.scores), 0.9))})
    for _ in range(14):
        sels.append({"mode": "edges", "n_edges": int(rng.integers(0, len(order) + 1)),
                     "threshold": 0.0,
                     "added": sorted(set(rng.integers(0, n_units, 6).tolist())),
                     "removed": sorted(set(order[rng.integers(0, len(order), 6)].tolist())),
                     "removed_nodes": sorted(set(rng.integers(0, n_nodes, 3).tolist())),
                     "prune": bool(rng.integers(0, 4))})
    got = _run_js(_js_data(ex), sels)
    for sel, js_rows in zip(sels, got):
        want = selection_rows(res.space, True, order, res.scores, sel)
        assert np.array_equal(np.array(js_rows, dtype=bool), want), sel
    assert sum(map(sum, got)) > 0


def test_remove_a_component_at_every_span(explorer, tiny_results):
    _, _, peap, _ = tiny_results
    explorer.set_size(60)
    explorer.reset()
    explorer.remove_node("a1.h0")
    ref = peap.circuit(n_edges=60)
    ref.remove_node("a1.h0")
    ref.prune()
    assert (explorer.circuit.in_rows == ref.in_rows).all()
    explorer.restore_node("a1.h0")
    assert (explorer.circuit.in_rows == peap.circuit(n_edges=60).in_rows).all()
    with pytest.raises(KeyError, match="no node"):
        explorer.remove_node("a9.h9")
