"""Widget evaluations and notebook cells run in different threads on one model: every nnsight
trace holds the model's re-entrant lock (``model.lock``), so they never interleave inside it."""

import threading

import numpy as np
import pytest

import peap_widget as pw
from peap_widget.analysis.heads import span_attention


def _run_threads(jobs, repeats=1):
    errors, out = [], {}

    def wrap(name, fn):
        def go():
            try:
                out[name] = [fn() for _ in range(repeats)]
            except BaseException as e:  # noqa: BLE001 (reported below)
                errors.append((name, e))
        return go

    threads = [threading.Thread(target=wrap(n, f)) for n, f in jobs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors, errors
    return out


def test_model_has_a_reentrant_lock(tiny_results):
    model = tiny_results[0]
    assert model.lock.acquire(blocking=False)
    try:
        assert model.lock.acquire(blocking=False)   # re-entrant
        model.lock.release()
    finally:
        model.lock.release()


@pytest.mark.parametrize("trial", range(3))
def test_two_threads_on_one_model_match_sequential_runs(tiny_results, trial):
    """Attribution, a fresh Evaluator, evaluations and span attention at once, batch size 1 (many
    traces each), several times: every thread finishes and gets the sequential numbers."""
    model, ds, peap, _ = tiny_results
    circ = peap.circuit(n_edges=10)
    flags = [p.requires_grad for p in model.hf.parameters()]
    want_scores = pw.attribute(model, ds, batch_size=1, progress=False).scores.copy()
    want_eval = pw.Evaluator(model, ds, batch_size=1).run(circ).per_example.copy()
    want_att = span_attention(model, ds, batch_size=1)
    shared = pw.Evaluator(model, ds, batch_size=1)

    got = _run_threads({
        "attribute": lambda: pw.attribute(model, ds, batch_size=1, progress=False).scores.copy(),
        "evaluator": lambda: pw.Evaluator(model, ds, batch_size=1).run(circ).per_example.copy(),
        "shared": lambda: shared.run(circ).per_example.copy(),
        "shared2": lambda: shared.run(peap.circuit(n_edges=10)).per_example.copy(),
        "heads": lambda: span_attention(model, ds, batch_size=1),
    }, repeats=3)
    for s in got["attribute"]:
        np.testing.assert_allclose(s, want_scores, rtol=0, atol=1e-12)
    for key in ("evaluator", "shared", "shared2"):
        for v in got[key]:
            np.testing.assert_allclose(v, want_eval, rtol=0, atol=1e-12)
    for a in got["heads"]:
        np.testing.assert_allclose(a, want_att, rtol=0, atol=1e-12)
    # parameters' requires_grad flags restored however the threads interleaved
    assert [p.requires_grad for p in model.hf.parameters()] == flags
