"""CircuitLab end to end in Python (no browser): schema -> attribution with progress ->
explorer and curves; a bad annotation stops it with a message and loses nothing."""

import pytest
from browser import open_standalone, serve

import peap_widget as pw


def test_lab_runs_the_whole_path(tiny_results, tmp_path, chromium):
    model, ds, peap, eap = tiny_results
    lab = pw.CircuitLab(model, ds, path=tmp_path / "spans.json", curve_sizes=[5, 30, 1.0])
    assert lab.run() is True
    assert set(lab.results) == {"PEAP", "EAP"}
    assert lab.progress.value == lab.progress.max == len(ds)    # every example, reported
    # the same scores as a direct call
    assert (lab.results["PEAP"].scores == peap.scores).all()
    assert [s["name"] for s in lab.curves.series] == ["PEAP", "EAP"]
    # an edit in the explorer moves the current point on the curves
    head = next(n for n in lab.explorer.circuit.nodes() if n.startswith("a") and "<" not in n)
    lab.explorer.remove_node(head)
    assert lab.curves.current["faithfulness"] == pytest.approx(lab.explorer.evaluation["faithfulness"])
    assert lab.curves.current["n_edges"] == lab.explorer.circuit.n_edges
    assert "Done" in lab.status.value and lab.tabs.selected_index == 2
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
