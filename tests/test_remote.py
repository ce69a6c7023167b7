"""Remote runs (issue 14): every job through nnsight's serialization, and against a real NDIF.

Two layers:
- ``remote="local"`` (always run, no server): each job is serialized as a remote request would
  be and deserialized with the package's modules hidden, then run; results equal the plain local
  run exactly. A raw session calling a package function without registering the package fails
  there, so the dry run really hides it.
- a real NDIF server (the ``ndif`` package, run on loopback by ../shared/ndif-local from the
  ``ndif_server`` fixture in conftest.py) serving a tiny GPT-2 and a tiny Llama from directories:
  attribution, evaluation, curves and ``peap discover`` equal the local runs to 1e-6; only
  aggregates come back; a server that is down or a model it cannot serve gives a `RemoteError`
  naming the host and what to do.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import peap_widget as pw
from peap_widget.analysis import heads
from peap_widget.runtime import remote
from peap_widget.models.examples import tiny_model, tiny_records


def _local_pair(family: str):
    hf, tok = tiny_model(family, dtype=torch.float64)
    model = pw.load_model(hf, tokenizer=tok)
    return model, pw.Dataset.from_records(tiny_records(), model)


def _results(model, ds, method, ablation):
    res = pw.attribute(model, ds, method=method, ablation=ablation, batch_size=2, progress=False)
    circ = res.circuit(n_edges=25)
    ev = pw.Evaluator(model, ds, ablation=ablation, batch_size=2).run(circ)
    return res.edges.score.to_numpy(), ev.last_logits, ev.faithfulness


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("method,ablation", [("peap", "counterfactual"), ("peap", "mean"),
                                             ("eap", "zero")])
def test_dry_run_equals_local(family, method, ablation):
    model, ds = _local_pair(family)
    want = _results(model, ds, method, ablation)
    model.remote = "local"
    got = _results(model, ds, method, ablation)
    assert np.array_equal(got[0], want[0])
    assert np.array_equal(got[1], want[1])
    assert got[2] == want[2]
    jobs = {entry["job"] for entry in model.remote_log}
    assert {"attribute_batches", "clean_logits", "circuit_batch"} <= jobs
    if ablation == "mean":
        assert "span_sums" in jobs


def test_dry_run_heads_equal_local():
    model, ds = _local_pair("llama")
    want_att, want_ov = heads.span_attention(model, ds, 2), heads.ov_promotions(model, ds, k=3)
    model.remote = "local"
    assert np.array_equal(heads.span_attention(model, ds, 2), want_att)
    assert heads.ov_promotions(model, ds, k=3) == want_ov


def test_dry_run_hides_the_package_unless_registered():
    """Without `nnsight.register`, a session calling package code fails in the dry run, as it
    would on a server without peap_widget: the dry run is a real check."""
    from cloudpickle import unregister_pickle_by_value

    from peap_widget.engine.evaluate import clean_logits

    model, ds = _local_pair("gpt2")
    batch = ds.batch([0, 1])
    remote.prepare(model)
    unregister_pickle_by_value(pw)
    try:
        with pytest.raises(Exception, match="peap_widget"):
            with model.nn.session(remote="local"):
                out = clean_logits(model, batch)
                out.save()
    finally:
        import nnsight

        nnsight.register(pw)
    model.remote = "local"
    got = remote.run(model, clean_logits, model, batch)
    model.remote = False
    assert torch.equal(got, clean_logits(model, batch))


def test_model_travels_without_lock_or_weights():
    """What a request carries for the model: no lock, remote=False on the far side, the graph
    rebuilt from its shape, every module a persistent reference (not its weights)."""
    from nnsight.intervention.serialization import dumps

    hf, tok = tiny_model("gpt2", d_model=64, dtype=torch.float64)
    model = pw.load_model(hf, tokenizer=tok)
    model.graph.edge_mask   # a cached array that must not travel
    remote.prepare(model)
    blob = dumps(model)
    weights = sum(p.numel() * p.element_size() for p in hf.parameters())
    assert len(blob) < weights / 4, (len(blob), weights)
    from nnsight.intervention.serialization import loads

    objects = model.nn._remoteable_persistent_objects()
    with remote._as_a_fresh_process():   # as a server would (see that function)
        back = loads(blob, objects)
    assert back.remote is False and back.hf is hf and back.lock is not model.lock
    assert "edge_mask" not in vars(back.graph)


# --- a real NDIF server on loopback ------------------------------------------------------------


@pytest.fixture(scope="module")
def served(ndif_server):
    """(local model, remote model, dataset) for each served tiny family."""
    import nnsight

    nnsight.CONFIG.APP.REMOTE_LOGGING = False
    out = {}
    for family, path in ndif_server.models.items():
        local = pw.load_model(path)
        ds = pw.Dataset.from_records(tiny_records(), local)
        out[family] = (local, pw.load_model(path, remote=True), ds)
    return out


@pytest.mark.ndif
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_ndif_attribution_equals_local(served, family):
    local, far, ds = served[family]
    for method, ablation in (("peap", "counterfactual"), ("eap", "mean")):
        want = pw.attribute(local, ds, method=method, ablation=ablation, batch_size=3,
                            progress=False)
        before = len(far.remote_log)
        got = pw.attribute(far, ds, method=method, ablation=ablation, batch_size=3,
                           progress=False)
        scale = np.abs(want.edges.score).max()
        assert np.abs(got.edges.score.to_numpy() - want.edges.score.to_numpy()).max() <= 1e-6 * max(1, scale)
        assert np.allclose(got.clean_metric, want.clean_metric, atol=1e-6)
        log = far.remote_log[before:]
        assert [e["job"] for e in log].count("attribute_batches") == 2   # 5 examples, batches of 3
        # Only span aggregates come back: the residual scores [S, edges] (the edge mask's
        # entries) and crossing table [3, L, H, S, S] in the compute dtype (float32 here), plus
        # per-example metrics and finiteness flags (under 1 kB), never per-position values.
        g, cfg = far.graph, far.adapter.config
        S = len(ds.schema) if method == "peap" else 1
        aggregates = 4 * (S * int(g.edge_mask.sum())
                          + (3 * cfg.n_layers * cfg.n_heads * S * S if method == "peap" else 0))
        for entry in log:
            if entry["job"] == "attribute_batches":
                assert 0 <= entry["bytes_back"] - aggregates < 1000, (entry, aggregates)


@pytest.mark.ndif
def test_ndif_batches_per_request(served):
    """Several batches in one request: their aggregates are summed on the server; the result
    is the same, in fewer requests."""
    local, far, ds = served["llama"]
    want = pw.attribute(local, ds, batch_size=2, progress=False)
    before = len(far.remote_log)
    got = pw.attribute(far, ds, batch_size=2, batches_per_request=2, progress=False)
    assert [e["job"] for e in far.remote_log[before:]] == ["attribute_batches"] * 2  # 4 + 1
    assert np.abs(got.edges.score.to_numpy() - want.edges.score.to_numpy()).max() <= 1e-6
    assert np.allclose(got.counterfactual_metric, want.counterfactual_metric, atol=1e-6)


@pytest.mark.ndif
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_ndif_evaluation_and_curve_equal_local(served, family):
    local, far, ds = served[family]
    res = pw.attribute(local, ds, method="peap", batch_size=5, progress=False)
    circ = res.circuit(n_edges=40)
    want = pw.Evaluator(local, ds, batch_size=3).run(circ)
    got = pw.Evaluator(far, ds, batch_size=3).run(circ)
    assert np.abs(got.last_logits - want.last_logits).max() <= 1e-5
    assert abs(got.faithfulness - want.faithfulness) <= 1e-5
    sizes = [0.05, 0.5]
    want_curve = pw.faithfulness_curve(local, ds, res, sizes=sizes, batch_size=5)
    got_curve = pw.faithfulness_curve(far, ds, res, sizes=sizes, batch_size=5)
    assert np.allclose(got_curve.table.faithfulness, want_curve.table.faithfulness, atol=1e-5)
    assert (got_curve.table.n_edges == want_curve.table.n_edges).all()


@pytest.mark.ndif
def test_ndif_discover_cli(served, tmp_path):
    from peap_widget.app.cli import main

    local, far, ds = served["gpt2"]
    data = tmp_path / "task.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in tiny_records()) + "\n")
    args = ["discover", "--model", far.name, "--task", str(data), "--sizes", "0.1,1.0",
            "--batch-size", "5", "--quiet"]
    assert main(args + ["--out", str(tmp_path / "far"), "--remote"]) == 0
    assert main(args + ["--out", str(tmp_path / "near")]) == 0
    for name in ("edges_peap.csv",):
        import pandas as pd

        a = pd.read_csv(tmp_path / "far" / name)
        b = pd.read_csv(tmp_path / "near" / name)
        assert np.abs(a.score.to_numpy() - b.score.to_numpy()).max() <= 1e-6
    far_sum = json.loads((tmp_path / "far" / "summary.json").read_text())
    near_sum = json.loads((tmp_path / "near" / "summary.json").read_text())
    assert far_sum["model"] == near_sum["model"]


@pytest.mark.ndif
def test_ndif_server_down_names_host(served, ndif_server):
    import nnsight

    local, far, ds = served["gpt2"]
    old = nnsight.CONFIG.API.HOST
    nnsight.CONFIG.API.HOST = "http://127.0.0.1:8009"
    try:
        with pytest.raises(remote.RemoteError) as err:
            pw.attribute(far, ds, batch_size=5, progress=False)
    finally:
        nnsight.CONFIG.API.HOST = old
    assert "127.0.0.1:8009" in str(err.value) and "does not answer" in str(err.value)


@pytest.mark.ndif
def test_ndif_unserved_model_is_named(ndif_server, tmp_path):
    hf, tok = tiny_model("gpt2", n_layers=1, dtype=torch.float32, seed=5)
    hf.save_pretrained(tmp_path / "unserved")
    tok.save_pretrained(tmp_path / "unserved")
    path = ndif_server.register(tmp_path / "unserved")
    with pytest.raises(remote.RemoteError) as err:
        pw.load_model(path, remote=True)
    text = str(err.value)
    assert "127.0.0.1:8001" in text and "unserved" in text and "does not serve this model" in text


# --- a model split over devices (device_map) ---------------------------------------------------


def test_split_model_equals_unsplit(tmp_path):
    """Layers split between the CPU and disk offload (accelerate; the offloaded modules keep
    meta placeholders and their weights are read from the offload map): every number equals
    the unsplit model's."""
    hf, tok = tiny_model("llama", n_layers=3, dtype=torch.float32)
    hf.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    whole = pw.load_model(tmp_path / "m")
    device_map = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu",
                  "model.layers.1": "disk", "model.layers.2": "disk", "model.norm": "cpu",
                  "lm_head": "cpu"}
    split = pw.load_model(tmp_path / "m", device_map=device_map)
    assert split.hf.model.layers[1].self_attn.o_proj.weight.device.type == "meta"
    assert split.adapter.closed_form_norms
    ds = pw.Dataset.from_records(tiny_records(), whole)

    def numbers(model):
        res = pw.attribute(model, ds, ablation="mean", batch_size=2, progress=False)
        ev = pw.Evaluator(model, ds, batch_size=2).run(res.circuit(n_edges=30))
        return (res.edges.score.to_numpy(), ev.last_logits, heads.span_attention(model, ds, 2),
                heads.ov_promotions(model, ds, k=2))

    want, got = numbers(whole), numbers(split)
    for a, b in zip(want[:3], got[:3]):
        assert np.abs(a - b).max() <= 1e-5 * max(1.0, np.abs(a).max())
    assert got[3] == want[3]


def test_dry_run_saliency_equals_local():
    from peap_widget.suggest.saliency import token_saliency

    model, ds = _local_pair("llama")
    want = token_saliency(model, ds, k=2, batch_size=2).table
    model.remote = "local"
    got = token_saliency(model, ds, k=2, batch_size=2).table
    assert got.equals(want)
    assert "batch_scores" in {e["job"] for e in model.remote_log}


@pytest.mark.ndif
def test_ndif_wrong_key_is_refused(served, ndif_server):
    """The server checks keys against its user database (tests/ndif_local.py): a key it does
    not know is refused, and the error says to set NDIF_API_KEY."""
    import os
    import uuid

    import nnsight

    if ndif_server.api_key is None:
        reason = "this machine cannot run NDIF's key database (PostgreSQL as root)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    local, far, ds = served["gpt2"]
    nnsight.CONFIG.API.APIKEY = str(uuid.uuid4())
    try:
        with pytest.raises(remote.RemoteError) as err:
            pw.attribute(far, ds, batch_size=5, progress=False)
    finally:
        nnsight.CONFIG.API.APIKEY = ndif_server.api_key
    text = str(err.value)
    assert "127.0.0.1:8001" in text and "refused the API key" in text and "NDIF_API_KEY" in text
    assert pw.attribute(far, ds, batch_size=5, progress=False).edges.score.notna().all()


def test_dry_run_leaves_the_package_classes_alone():
    """Unpickling in the process that pickled would rebind the real classes' methods to the
    shipped copies (cloudpickle tracks by-value classes by id): after a dry run every class
    still has its own methods, and a method that imports relatively still works."""
    from peap_widget.arch.base import Adapter
    from peap_widget.graph.space import Graph, GraphConfig

    model, ds = _local_pair("gpt2")
    methods = {cls: dict(vars(cls)) for cls in (Adapter, Graph, GraphConfig, type(model))}
    model.remote = "local"
    pw.attribute(model, ds, batch_size=5, progress=False)
    pw.Evaluator(model, ds, batch_size=5)
    for cls, before in methods.items():
        assert {k: v for k, v in vars(cls).items() if k in before} == before, cls
    assert GraphConfig.from_dict(model.adapter.config.to_dict()) == model.adapter.config
