"""CircuitExplorer without a browser: selections, edits, messages, and the JS logic agreeing
with Python's (node runs js/circuit_explorer/logic.js on the same data)."""

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

import peap_widget as pw
from peap_widget.models.examples import random_result
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


# node runs the page's logic (js/circuit_explorer/logic.js) on the explorer's traits; where a
# selection needs rows the page lacks it prints the page's "more" request and reads the answer,
# which comes from the explorer's own message handler (so the whole protocol runs).
_NODE_PAGE = """
import { createInterface } from "node:readline";
import { prepare, circuitRows, missing, appendChunk } from "./js/circuit_explorer/logic.js";
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const next = async () => JSON.parse((await lines.next()).value);
const say = (obj) => process.stdout.write(JSON.stringify(obj) + "\\n");
const T = { Int8Array, Int16Array, Int32Array, Float64Array };
const bytes = (b64) => { const b = Buffer.from(b64, "base64"); return new DataView(b.buffer, b.byteOffset, b.length); };
const inp = await next();
const d = { info: inp.info, shipped: inp.shipped };
for (const [k, [type, b64]] of Object.entries(inp.arrays)) {
  const v = bytes(b64);
  d[k] = new T[type](v.buffer.slice(v.byteOffset, v.byteOffset + v.byteLength));
}
prepare(d);
const out = [];
for (const s of inp.selections) {
  let need, asked = 0;
  while ((need = missing(d, s)) && !(d.limited && (need.order != null || need.threshold != null)) && asked++ < 200) {
    say({ request: { type: "more", req: String(asked), have: { order: d.order.length, top: d.top, units: d.nUnits },
      order: need.order ?? null, threshold: need.threshold ?? null, units: need.units ?? [] } });
    const ans = await next();
    const arrays = Object.fromEntries(Object.entries(ans.buffers).map(([k, b]) => [k, bytes(b)]));
    if (!appendChunk(d, ans.msg, arrays)) throw new Error("chunk not applied");
  }
  const rows = circuitRows(d, s);
  const ids = [];
  for (let r = 0; r < d.nRows; r++) if (rows[r]) ids.push(d.rowId[r]);
  out.push({ need, rows: ids.sort((a, b) => a - b), requests: asked, held: d.nUnits });
}
say({ result: out });
"""


def _js_page(ex, selections: list) -> list:
    """What the page logic draws for each selection (global row ids), fetching as a page does."""
    import base64

    def b64(b):
        return base64.b64encode(bytes(b)).decode("ascii")

    arrays = {"nodeType": ("Int8Array", ex.node_type), "nodeLayer": ("Int16Array", ex.node_layer),
              "nodeHead": ("Int16Array", ex.node_head), "nodeSpan": ("Int16Array", ex.node_span),
              "unitIds": ("Int32Array", ex.unit_ids), "order": ("Int32Array", ex.unit_order),
              "rowId": ("Int32Array", ex.row_id), "parent": ("Int32Array", ex.row_parent),
              "child": ("Int32Array", ex.row_child), "unit": ("Int32Array", ex.row_unit),
              "kind": ("Int8Array", ex.row_kind), "score": ("Float64Array", ex.row_score),
              "src": ("Int16Array", ex.row_src), "dst": ("Int16Array", ex.row_dst),
              "srcSpan": ("Int16Array", ex.row_src_span), "dstSpan": ("Int16Array", ex.row_dst_span)}
    first = {"info": ex.info, "shipped": ex.shipped, "selections": selections,
             "arrays": {k: [t, b64(v)] for k, (t, v) in arrays.items()}}
    sent = []
    ex.send = lambda content, buffers=None: sent.append((content, buffers or []))
    proc = subprocess.Popen(["node", "--input-type=module", "-e", _NODE_PAGE], cwd=ROOT, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        proc.stdin.write(json.dumps(first) + "\n")
        proc.stdin.flush()
        while True:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            msg = json.loads(line)
            if "result" in msg:
                return msg["result"]
            ex._on_message(ex, msg["request"], [])          # the kernel's side
            content, buffers = sent.pop()
            assert content["req"] == msg["request"]["req"]
            proc.stdin.write(json.dumps({"msg": content, "buffers": {
                name: b64(b) for name, b in zip(content["arrays"], buffers)}}) + "\n")
            proc.stdin.flush()
    finally:
        del ex.send
        proc.kill()
        proc.wait()


def _random_selections(ex, res, rng, n=14) -> list:
    n_units, n_nodes = ex.info["n_units"], ex.info["n_nodes"]
    order = ex._order
    sels = [default_selection(n) for n in (0, 1, 5, 40, len(order))]
    sels.append({**default_selection(0), "mode": "threshold",
                 "threshold": float(np.quantile(np.abs(res.scores), 0.9))})
    for _ in range(n):
        sels.append({"mode": "edges", "n_edges": int(rng.integers(0, len(order) + 1)),
                     "threshold": 0.0,
                     "added": sorted(set(rng.integers(0, n_units, 6).tolist())),
                     "removed": sorted(set(order[rng.integers(0, len(order), 6)].tolist())),
                     "removed_nodes": sorted(set(rng.integers(0, n_nodes, 3).tolist())),
                     "prune": bool(rng.integers(0, 4))})
    return sels


def _check_page_equals_python(ex, res, sels):
    got = _js_page(ex, sels)
    for sel, page in zip(sels, got):
        assert page["need"] is None, (sel, page["need"])
        want = selection_rows(res.space, ex.merge_qkv, ex._order, res.scores, sel)
        assert page["rows"] == np.flatnonzero(want).tolist(), sel
    assert sum(len(p["rows"]) for p in got) > 0
    return got


@pytest.mark.parametrize("which", ["peap", "eap"])
def test_js_selection_logic_equals_python(tiny_results, which):
    model, ds, peap, eap = tiny_results
    res = peap if which == "peap" else eap
    ex = pw.CircuitExplorer(res)                         # no model: no evaluation, no curve
    assert ex.info["n_order"] == len(res.greedy_order(True))
    assert ex.shipped["order"] == ex.info["n_order"] and ex.shipped["key_floor"] is None
    assert len(ex.row_id) == 4 * len(res.space)          # a small graph goes whole
    got = _check_page_equals_python(ex, res, _random_selections(ex, res, np.random.default_rng(0)))
    assert not any(p["requests"] for p in got)           # ... and never asks for more


@pytest.mark.parametrize("merge_qkv", [True, False])
def test_js_logic_equals_python_when_the_page_holds_a_part(tiny_results, merge_qkv):
    """A tiny ``max_units``: the page holds 40 of over a thousand units, fetches (in chunks of 25
    units) what each selection needs, and still draws exactly Python's circuit."""
    _, _, res, _ = tiny_results
    ex = pw.CircuitExplorer(res, merge_qkv=merge_qkv, max_units=40, chunk_units=25)
    assert ex.shipped["units"] <= 40 and ex.shipped["key_floor"] is not None
    # the greedy order's length, known without running it all
    assert ex.info["n_order"] == len(res.greedy_order(merge_qkv)) < ex.info["n_units"]
    assert len(ex.row_id) // 4 < len(res.space) // 10
    rng = np.random.default_rng(1)
    sels = _random_selections(ex, res, rng)
    keys = np.sort(ex._ship.keys)[::-1]
    for q in (3, 39, 41, 120, 700):                      # thresholds above and below the floor
        sels.append({**default_selection(0), "mode": "threshold", "threshold": float(keys[q]),
                     "added": sorted(set(rng.integers(0, ex.info["n_units"], 3).tolist()))})
    sels.append({**default_selection(0), "mode": "threshold", "threshold": 0.0})
    got = _check_page_equals_python(ex, res, sels)
    assert any(p["requests"] > 1 for p in got)           # several chunks for a big step
    assert got[-1]["held"] == ex.info["n_units"]         # threshold 0 takes every unit


def test_bad_more_requests_get_an_error_answer(tiny_results):
    _, _, res, _ = tiny_results
    ex = pw.CircuitExplorer(res, max_units=40)
    sent = []
    ex.send = lambda content, buffers=None: sent.append((content, buffers))
    ex._on_message(ex, {"type": "more", "req": 7, "have": {"order": "x"}}, [])
    assert sent[0][0]["req"] == 7 and "error" in sent[0][0] and sent[0][1] == []
    # unknown unit ids are left out (the page then stops asking for them)
    sh = ex.shipped
    ex._on_message(ex, {"type": "more", "req": 8, "units": [10**9, -1],
                        "have": {"order": sh["order"], "top": sh["top"], "units": sh["units"]}}, [])
    content = sent[1][0]
    assert content["n_units"] == 0 and content["to"] == content["from"] and not content["limited"]


def test_a_page_asks_no_more_than_max_page_units(tiny_results):
    _, _, res, _ = tiny_results
    ex = pw.CircuitExplorer(res, max_units=40, chunk_units=30, max_page_units=100)
    big = default_selection(ex.info["n_order"])
    small = default_selection(30)
    got = _js_page(ex, [big, small])
    assert got[0]["need"] == {"order": ex.info["n_order"]} and got[0]["held"] == 100
    assert got[1]["need"] is None
    want = selection_rows(res.space, True, ex._order, res.scores, small)
    assert got[1]["rows"] == np.flatnonzero(want).tolist()


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


def test_an_8b_models_graph_sends_at_most_40_mb():
    """Llama-3-8B's positional graph (32 layers x 32 heads, 8 spans: 12.9 million rows; about
    420 MB when every row went to the page) sends its first part and the rest on request."""
    res = random_result(32, 32, 8)
    assert len(res.space) > 12_000_000
    ex = pw.CircuitExplorer(res)
    state = ex.get_state()
    binary = sum(len(v) for v in state.values() if isinstance(v, (bytes, memoryview)))
    other = json.dumps({k: v for k, v in state.items() if not isinstance(v, (bytes, memoryview))})
    assert binary + len(other) <= 40_000_000
    sh = ex.shipped
    assert sh["units"] <= 600_000 and sh["order"] > 100_000 and sh["key_floor"] is not None
    assert len(ex.row_id) // 4 <= 3 * sh["units"]
    # the starting circuit's rows are all on the page
    held = np.frombuffer(ex.row_id, dtype=np.int32)
    assert np.isin(np.flatnonzero(ex.circuit.in_rows), held).all()
    # a "more" request past the greedy order's shipped part: one chunk, the next 1,000 units
    sent = []
    ex.send = lambda content, buffers=None: sent.append((content, buffers))
    ex._on_message(ex, {"type": "more", "req": "r1", "order": sh["order"] + 1000, "threshold": None,
                        "have": {"order": sh["order"], "top": sh["top"], "units": sh["units"]},
                        "units": []}, [])
    content, buffers = sent.pop()
    assert content["req"] == "r1" and content["to"] == {"order": sh["order"] + 1000, "top": sh["top"]}
    arrays = dict(zip(content["arrays"], buffers))
    order = np.frombuffer(arrays["order"], dtype=np.int32)
    assert np.array_equal(order, res.greedy_order(True, n=sh["order"] + 1000)[sh["order"]:])
    new = np.frombuffer(arrays["unit_ids"], dtype=np.int32)
    assert 0 < len(new) <= 1000 and not np.isin(new, np.frombuffer(ex.unit_ids, np.int32)).any()
    assert np.isin(order, np.concatenate([new, np.frombuffer(ex.unit_ids, np.int32)])).all()
    assert len(arrays["row_id"]) // 4 == content["n_rows"] >= len(new)


# --- issue 12: the evaluation message carries the selection ------------------------------------

def test_the_kernel_evaluates_the_selection_in_the_message_not_the_trait(explorer, tiny_results):
    """The "evaluate" message can overtake the selection's trait sync: the kernel must evaluate
    the selection the message names and answer with it (before: it evaluated its trait)."""
    model, ds, peap, _ = tiny_results
    lagging = default_selection(5)
    explorer.selection = lagging                       # the trait sync has not arrived yet
    shown = {**default_selection(25), "removed": [int(explorer._order[1])]}
    explorer._on_message(explorer, {"type": "evaluate", "version": 7, "selection": shown}, [])
    ev = explorer.evaluation
    assert ev["version"] == 7 and ev["selection"] == shown
    circ = peap.circuit_from(selection_rows(peap.space, True, explorer._order, peap.scores, shown))
    assert ev["n_edges"] == circ.n_edges
    assert ev["faithfulness"] == pytest.approx(pw.evaluate(model, ds, circ).faithfulness, abs=1e-9)
    assert explorer.selection == lagging               # the message does not edit the trait
    assert ev["examples"] == ev["total_examples"] == len(ds)
    explorer.set_size(30)


def test_slow_evaluations_go_to_a_subsample_with_the_full_one_on_request(tiny_results):
    model, ds, peap, _ = tiny_results
    many = pw.Dataset(ds.schema, list(ds.examples) * 4, ds.tokenizer)     # 20 examples
    ex = pw.CircuitExplorer(peap, model, many, n_edges=20, curves=[], head_details=False,
                            sample_size=6, sample_after=0.0)             # "slow": any time
    assert ex.evaluation["examples"] == 20                                # the first: in full
    ex.set_size(25)
    ev = ex.evaluation
    assert ev["examples"] == 6 and ev["total_examples"] == 20
    sub = ex._sample_evaluator.ds
    assert ev["faithfulness"] == pytest.approx(
        pw.evaluate(model, sub, ex.circuit).faithfulness, abs=1e-9)
    ex._on_message(ex, {"type": "evaluate", "version": 3, "selection": ex.selection, "full": True}, [])
    assert ex.evaluation["examples"] == 20 and ex.evaluation["version"] == 3
    assert ex.evaluation["faithfulness"] == pytest.approx(
        pw.evaluate(model, many, ex.circuit).faithfulness, abs=1e-9)


def test_a_refused_faithfulness_is_shown_as_its_reason(explorer):
    class Refused:
        faithfulness, soft, hard, kl, metric, clean_metric = None, 0.1, 0.5, 0.2, 0.01, 0.011
        refusal = "m(full) - m(empty) is too close to 0 to normalise"
    explorer.show_evaluation(Refused())
    ev = explorer.evaluation
    assert ev["faithfulness"] is None and ev["refusal"].startswith("m(full)")
    explorer.evaluate()
