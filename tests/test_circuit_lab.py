"""CircuitLab end to end in Python (no browser): schema -> attribution with progress ->
explorer and curves; a bad annotation stops it with a message and loses nothing."""

import pytest
from browser import open_standalone, serve

import peap_widget as pw


def test_lab_runs_the_whole_path(tiny_results, tmp_path, chromium):
    model, ds, peap, eap = tiny_results
    lab = pw.CircuitLab(model, ds, path=tmp_path / "spans.json", curve_sizes=[5, 30, 1.0])
    seen = []   # (fraction of the bar, stage) at every move of the bar
    lab.progress.observe(lambda c: seen.append((c["new"] / lab.progress.max, lab.stage.value)),
                         names="value")
    assert lab.run() is True
    assert set(lab.results) == {"PEAP", "EAP"}
    assert lab.progress.value == lab.progress.max and lab.stage.value == "done"
    # one bar over the whole run: monotone, attribution only part of it, the curves move it on
    fracs = [f for f, _ in seen]
    assert fracs == sorted(fracs) and fracs[-1] == 1
    attr = [f for f, st in seen if "attribution" in st]
    curves = [f for f, st in seen if "circuits" in st]
    assert attr and max(attr) < 0.6
    assert len(curves) >= 2 * 3 and min(curves) < max(curves) < 1   # per circuit, below 100%
    assert any("EAP attribution: examples 5/5" == st for _, st in seen)
    # the same scores as a direct call
    assert (lab.results["PEAP"].scores == peap.scores).all()
    assert [s["name"] for s in lab.curves.series] == ["PEAP", "EAP"]
    # an edit in the explorer moves the current point on the curves
    head = next(n for n in lab.explorer.circuit.nodes() if n.startswith("a") and "<" not in n)
    lab.explorer.remove_node(head)
    assert lab.curves.current["faithfulness"] == pytest.approx(lab.explorer.evaluation["faithfulness"])
    assert lab.curves.current["n_edges"] == lab.explorer.circuit.n_edges
    assert "Done" in lab.status.value and lab.tabs.selected_index == 2
    assert "f≥0.8" in lab.status.value and "None edges" not in lab.status.value
    # the panel's clean metric is the evaluator's, on the data the numbers are for
    assert lab.explorer.info["clean_metric"] == pytest.approx(lab.explorer._evaluator.clean_metric)
    page_path = lab.to_html(tmp_path / "lab.html")
    with serve(tmp_path) as url:
        page = open_standalone(chromium, f"{url}/lab.html")
        assert page.locator(".pe-root").count() == 1
        assert page.locator(".pc-chart").count() >= 2     # the explorer's chart and the curves
        assert not page.errors
    assert page_path.exists()


def test_lab_refuses_invalid_annotations_and_keeps_them(tiny_results, tmp_path):
    model, ds, _, _ = tiny_results
    lab = pw.CircuitLab(model, ds, path=tmp_path / "spans.json")
    before = [list(map(list, a)) for a in lab.schema_editor.annotations]
    bad = [list(a) for a in lab.schema_editor.annotations]
    bad[1] = [None] * len(bad[1])
    lab.schema_editor.annotations = bad
    assert lab.run() is False
    assert "Fix the schema" in lab.status.value and lab.tabs.selected_index == 0
    assert lab.schema_editor.annotations[1] == [None] * len(bad[1])  # nothing was reset
    assert lab.results == {}
    with pytest.raises(pw.PeapError, match="run the attribution first"):
        lab.to_html(tmp_path / "x.html")
    assert before[0] == lab.schema_editor.annotations[0]


def test_lab_says_why_faithfulness_is_not_computed(tiny_results, tmp_path):
    """Corrupted = clean: no "f>=0.8 at ... edges", the reason in the status and on the curves."""
    from tiny import tiny_records

    model = tiny_results[0]
    recs = tiny_records()
    for r in recs:
        r["corrupted"] = r["clean"]
    lab = pw.CircuitLab(model, pw.Dataset.from_records(recs, model), curve_sizes=[5, 1.0],
                        methods=("peap",))
    assert lab.run() is True
    assert "not computed" in lab.status.value and "refused" in lab.status.value
    assert "f≥0.8 at" not in lab.status.value
    assert "refused" in lab.curves.refusal
    assert lab.explorer.evaluation["faithfulness"] is None
    # the current circuit is still placed for the measures that exist (soft, hard, KL)
    assert lab.curves.current["faithfulness"] is None
    assert lab.curves.current["hard"] == pytest.approx(lab.explorer.evaluation["hard"])
