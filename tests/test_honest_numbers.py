"""A constant metric (corrupted = clean) or a task the model cannot do: normalized faithfulness is
refused with a reason (never 3.0, 8.54 or NaN in silence), summaries stay strict JSON."""

import json
import math

import numpy as np
import pytest

import peap_widget as pw
from peap_widget.app.cli import main
from peap_widget.analysis.curves import MIB_FRACTIONS
from peap_widget.engine.evaluate import normalisation_refusal, task_warning
from peap_widget.errors import NormalisationError
from tiny import tiny_records


@pytest.fixture(scope="module")
def constant(tiny_results):
    """The tiny model on records whose corrupted prompt is the clean one."""
    model, _, _, _ = tiny_results
    recs = tiny_records()
    for r in recs:
        r["corrupted"] = r["clean"]
    ds = pw.Dataset.from_records(recs, model)
    return model, ds, pw.attribute(model, ds, progress=False)


def test_tolerance_rule():
    assert normalisation_refusal(1.0, 0.5) is None
    assert normalisation_refusal(-3.0, 2.0) is None
    assert "refused" in normalisation_refusal(2.0, 2.0)
    assert "refused" in normalisation_refusal(15.8, 15.8 + 1e-7)     # float noise
    assert normalisation_refusal(15.8, 15.8 + 1e-3) is None
    assert normalisation_refusal(1e-9, 0.0) is not None              # both at noise level
    assert "not finite" in normalisation_refusal(float("nan"), 0.0)
    assert normalisation_refusal(1.0, 1.0 + 5e-5, rtol=1e-4) is not None
    assert normalisation_refusal(1.0, 1.0 + 5e-5, rtol=1e-6) is None


def test_constant_metric_refuses_to_normalise(constant):
    model, ds, res = constant
    ev = pw.Evaluator(model, ds)
    assert ev.refusal and "corrupted" in ev.refusal
    out = ev.run(res.circuit(n_edges=10))
    assert out.faithfulness is None and out.refusal == ev.refusal
    assert "refused" in repr(out)
    curve = pw.faithfulness_curve(model, ds, res, sizes=[0.1, 0.5, 1.0], progress=False)
    assert curve.refusal == ev.refusal
    assert curve.table.faithfulness.isna().all()
    assert curve.edges_needed(0.8) is None and curve.point(0.8) is None
    with pytest.raises(NormalisationError, match="refused"):
        curve.area()
    with pytest.raises(pw.PeapError, match="refused"):
        pw.mib_scores(model, ds, res)
    assert curve.table.hard.notna().all()             # the other measures are still there
    fig = curve.plot()
    assert "refused" in " ".join(t.get_text() for t in fig.axes[0].texts)


def test_a_task_the_model_cannot_do_is_flagged(tiny_results):
    model, _, _, _ = tiny_results
    recs = tiny_records()
    for r in recs:  # swapped: the clean metric below the ablated one
        r["clean"], r["corrupted"] = r["corrupted"], r["clean"]
    ev = pw.Evaluator(model, pw.Dataset.from_records(recs, model))
    assert ev.clean_metric < ev.empty_metric
    assert "does not do this task" in ev.warning and "below the ablated" in ev.warning
    assert "accuracy 0" in task_warning(-1.0, -2.0, accuracy=0.0)
    assert task_warning(2.0, 0.0, accuracy=0.9) is None
    assert task_warning(-0.0697866, -0.0697866 + 1e-16, accuracy=0.5) is None   # float noise


def test_evaluator_reports_progress_per_batch(tiny_results):
    model, ds, peap, _ = tiny_results
    ev = pw.Evaluator(model, ds, batch_size=2)
    calls = []
    ev.run(peap.circuit(n_edges=10), progress=lambda d, t: calls.append((d, t)))
    n = len(ds)   # the first run also runs the empty circuit
    assert calls == [(2, 2 * n), (4, 2 * n), (5, 2 * n), (7, 2 * n), (9, 2 * n), (10, 2 * n)]
    calls.clear()
    ev.run(peap.circuit(n_edges=20), progress=lambda d, t: calls.append((d, t)))
    assert calls == [(2, n), (4, n), (5, n)]


def _strict(text):
    def bad(c):
        raise ValueError(f"bare {c} in JSON")
    return json.loads(text, parse_constant=bad)


def test_discover_with_a_constant_metric(tmp_path, capsys):
    from test_cli import model_dir as make  # the random IOI model the CLI tests use

    factory = type("F", (), {"mktemp": lambda self, name: (tmp_path / name).mkdir() or tmp_path / name})()
    model_dir = make.__wrapped__(factory)
    task = pw.tasks.get("ioi", n=8, seed=5)
    path = task.to_jsonl(tmp_path / "same.jsonl")
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    for r in lines:
        r["corrupted"] = r["clean"]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    out = tmp_path / "run"
    assert main(["discover", "--model", str(model_dir), "--task", str(path), "--method", "both",
                 "--sizes", "0.1,0.5,1.0", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    summary = _strict((out / "summary.json").read_text())
    assert "refused" in summary["faithfulness_refused"]
    for m in ("peap", "eap"):
        assert summary[f"{m}_edges_for_0.8"] is None and summary[f"{m}_cpr"] is None
        assert summary[f"{m}_cmd"] is None and summary[f"{m}_circuit_faithfulness"] is None
    assert "f>=0.8" not in captured.out and "refused" in captured.out
    assert "CPR/CMD" not in captured.err      # refused before any CPR/CMD evaluation
    page = (out / "report.html").read_text()
    assert "normalized faithfulness refused" in page and "Not computed:" in page
    assert not any(isinstance(v, float) and not math.isfinite(v) for v in summary.values())


def test_discover_shows_progress_over_the_cpr_cmd_curves(tmp_path, capsys):
    from test_cli import model_dir as make

    factory = type("F", (), {"mktemp": lambda self, name: (tmp_path / name).mkdir() or tmp_path / name})()
    model_dir = make.__wrapped__(factory)
    out = tmp_path / "run"
    assert main(["discover", "--model", str(model_dir), "--task", "ioi", "--n", "4",
                 "--sizes", "0.5,1.0", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "PEAP CPR/CMD (signed, CPR)" in err and "PEAP CPR/CMD (|score|, CMD)" in err
    assert f"{len(MIB_FRACTIONS)}/{len(MIB_FRACTIONS)}" in err
    summary = _strict((out / "summary.json").read_text())
    # the explorers' "metric (clean ...)" are both on the evaluation examples
    import re

    page = (out / "report.html").read_text()
    cleans = [float(x) for x in re.findall(r'"clean_metric":\s*(-?[\d.e+-]+)', page)]
    disc = pw.AttributionResult.load(out / "result_peap.json.gz").clean_mean
    assert abs(disc - summary["clean_metric"]) > 1e-6     # the two sets do differ
    assert len(cleans) == 2 and all(c == pytest.approx(summary["clean_metric"]) for c in cleans)


def test_curves_widget_shows_the_reason_instead_of_curves(constant, chromium, tmp_path):
    from browser import open_standalone, screenshot, serve

    model, ds, res = constant
    curve = pw.faithfulness_curve(model, ds, {"PEAP": res}, sizes=[0.1, 0.5, 1.0], progress=False)
    w = pw.FaithfulnessCurves(curve)
    assert w.refusal == curve.refusal and "refused" in w.refusal
    assert all(p["faithfulness"] is None for s in w.series for p in s["points"])
    w.to_html(tmp_path / "c.html")
    with serve(tmp_path) as url:
        p = open_standalone(chromium, f"{url}/c.html")
        try:
            assert "refused" in p.locator(".pc-refusal").text_content()
            assert p.locator(".pc-line").count() == 0
            notice = p.locator(".pcw-notice")   # the chart says it: not repeated above
            assert notice.is_hidden() or "refused" not in notice.inner_text()
            screenshot(p.locator(".peap-curves"), "faithfulness_curves_refused")
            p.locator(".pcw-seg[data-measure='hard']").click()   # the other measures still draw
            assert p.locator(".pc-line").count() == 1 and p.locator(".pc-refusal").count() == 0
            assert "refused" in p.locator(".pcw-notice").inner_text()
            assert not p.errors
        finally:
            p.close()


@pytest.mark.parametrize("ablation", ["counterfactual", "mean"])
def test_evaluator_subsample(tiny_results, ablation):
    """Quick evaluations on a subsample: its examples' numbers are the full evaluation's."""
    model, ds, peap, _ = tiny_results
    full = pw.Evaluator(model, ds, ablation, batch_size=2)
    sub = full.subsample(3, seed=1)
    assert sub.sample_of == 5 and len(sub.indices) == 3 and sub.indices == sorted(sub.indices)
    assert len(sub.ds) == 3
    circ = peap.circuit(n_edges=15)
    a, b = full.run(circ), sub.run(circ)
    np.testing.assert_allclose(b.per_example, a.per_example[sub.indices], rtol=0, atol=1e-12)
    assert full.subsample(5) is full and full.subsample(50) is full
    with pytest.raises(pw.PeapError, match="at least one"):
        full.subsample(0)


def test_discover_flags_a_task_the_model_cannot_do(tmp_path, capsys):
    """toy-ioi on IOI with the answers swapped: it gets no example right and its metric is far
    below the ablated one; the summary, the printout and the report say so."""
    task = pw.tasks.get("ioi", n=16, seed=5)
    path = task.to_jsonl(tmp_path / "swapped.jsonl")
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    for r in lines:
        r["correct"], r["incorrect"] = r["incorrect"], r["correct"]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    out = tmp_path / "run"
    assert main(["discover", "--model", "toy-ioi", "--task", str(path), "--sizes", "0.1,1.0",
                 "--out", str(out), "--quiet"]) == 0
    summary = _strict((out / "summary.json").read_text())
    assert summary["clean_metric"] < summary["ablated_metric"] and summary["clean_accuracy"] == 0
    assert "does not do this task" in summary["task_warning"]
    assert "accuracy 0" in summary["task_warning"] and "below the ablated" in summary["task_warning"]
    assert "WARNING: the model does not do this task" in capsys.readouterr().out
    assert "Warning:</b> the model does not do this task" in (out / "report.html").read_text()
