"""Circuit quality in the widgets, in real Chromium (built bundles on `to_html` pages served from
loopback): the FaithfulnessCurves ROC view, and the CircuitExplorer's completeness / minimality
button answered by the explorer's own kernel handler, with numbers checked against the Python
API (`peap_widget.analysis.quality`) called separately; the hover card's head-function scores."""

import json

import numpy as np
import pandas as pd
import pytest
from browser import open_standalone, screenshot, serve

import peap_widget as pw
from peap_widget.analysis import quality as q
from peap_widget.models import groundtruth as gt

SEL = "window.peapWidgets[0].model.get('selection')"


@pytest.fixture(scope="module")
def induction():
    import torch

    torch.set_num_threads(1)
    model = pw.models.load("induction-groundtruth")
    ds = pw.Dataset.from_records(gt.make_records(24), model)
    peap = pw.attribute(model, ds, method="peap", progress=False)
    peap_mean = pw.attribute(model, ds, method="peap", ablation="mean", progress=False)
    truth = gt.true_edge_mask(peap.edges)
    return model, ds, peap, peap_mean, truth


def test_roc_view_draws_one_curve_per_method_with_auroc(induction, tmp_path, chromium):
    model, ds, peap, peap_mean, truth = induction
    rng = np.random.default_rng(0)
    rocs = q.roc_curves({"PEAP": peap, "PEAP, mean ablation": peap_mean}, truth)
    rocs["random scores"] = q.roc_curve(rng.normal(size=len(truth)), truth, name="random")
    curve = pw.faithfulness_curve(model, ds, {"PEAP": peap}, sizes=[2, 5, 9, 40, 1.0],
                                  progress=False)
    w = pw.FaithfulnessCurves(curve, roc=rocs, title="induction-groundtruth")
    assert w.view == "faithfulness" and len(w.roc_series) == 3
    only = pw.FaithfulnessCurves.roc({"PEAP": peap}, truth)
    assert only.view == "roc" and only.series == []
    w.to_html(tmp_path / "roc.html")
    only.to_html(tmp_path / "only.html")
    with serve(tmp_path) as url:
        page = open_standalone(chromium, f"{url}/roc.html")
        assert page.locator(".pc-line").count() == 1            # the faithfulness view first
        assert page.locator("[data-role=roc]").is_hidden()
        page.click("button[data-view=roc]")
        assert page.evaluate("window.peapWidgets[0].model.get('view')") == "roc"
        assert page.locator(".pcw-faith-controls").is_hidden()
        lines = page.locator(".pr-line")
        assert lines.count() == 3
        assert [l.get_attribute("data-series") for l in lines.all()] == list(rocs)
        labels = [t.text_content() for t in page.locator(".pr-label").all()]
        assert labels == [f"{n} · AUROC {c.auroc:.3f}" for n, c in rocs.items()]
        assert rocs["PEAP"].auroc == 1.0 and labels[0].endswith("AUROC 1.000")
        # the perfect ranking's line runs up the left edge: its path goes (0,0) -> (0,1) first
        d = lines.first.get_attribute("d")
        start, up = d.split("L")[0][1:], d.split("L")[1]
        assert start.split(",")[0] == up.split(",")[0]          # same x: fpr 0
        page.mouse.move(*_inside(page, ".pr-chance", 0.3, 0.7))       # inside the plot
        assert "finds" in page.inner_text("[data-role=roc]")
        screenshot(page.locator(".peap-curves"), "quality_roc_view")
        page.click("button[data-view=faithfulness]")
        assert page.locator(".pc-line").count() == 1 and page.locator("[data-role=roc]").is_hidden()
        assert not page.errors

        page = open_standalone(chromium, f"{url}/only.html")
        assert page.locator(".pcw-views").is_hidden()            # one view: no tabs
        assert page.locator(".pr-line").count() == 1
        assert not page.errors


def _inside(page, selector, fx, fy):
    box = page.locator(selector).bounding_box()
    return box["x"] + fx * box["width"], box["y"] + fy * box["height"]


def test_explorer_quality_button_shows_the_python_numbers(induction, tmp_path, chromium):
    model, ds, peap, _, truth = induction
    funcs = pd.DataFrame({"copying": [0.1, -0.2, 0.93, 0.05], "previous token": [0.9, 0.0, 0.1, 0.2],
                          "note": ["a", "b", "c", "d"]},
                         index=["a0.h0", "a0.h1", "a1.h0", "a1.h1"])
    ex = pw.CircuitExplorer(peap, model, ds, n_edges=7, curve_sizes=[2, 7, 1.0],
                            head_functions=funcs)
    assert ex.head_functions["relations"] == ["copying", "previous token"]
    ex.to_html(tmp_path / "explorer.html")
    # the Python API, called apart from the explorer (its own Evaluator)
    circ = ex.circuit
    ev = pw.Evaluator(model, ds)
    want_c = q.completeness(ev, circ, n_samples=10, seed=0, progress=False)
    want_m = q.minimality(ev, circ, progress=False)
    with serve(tmp_path) as url:
        page = open_standalone(chromium, f"{url}/explorer.html")   # no kernel: no button
        assert page.locator("[data-role=quality-panel]").is_hidden()
        page = chromium.new_page(viewport={"width": 1400, "height": 1000})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.add_init_script("window.peapStandalone = { kernel: true };")
        page.goto(f"{url}/explorer.html")
        page.wait_for_selector("body[data-peap-ready='true']")
        page.evaluate("""() => { const { el } = window.peapWidgets[0]; window.sent = [];
            el.addEventListener("peap-send", (e) => {
                if (e.detail.type === "quality") window.sent.push(e.detail); }); }""")
        assert "not computed" in page.inner_text("[data-role=quality-which]")
        page.click("[data-role=quality-button]")
        msgs = page.evaluate("window.sent")
        assert len(msgs) == 1 and msgs[0]["selection"]["n_edges"] == 7
        assert "computing" in page.inner_text("[data-role=quality-which]")
        assert page.locator("[data-role=quality-button]").is_disabled()
        ex._on_message(ex, msgs[0], [])                  # the kernel's own handler answers
        page.evaluate("(v) => window.peapWidgets[0].model.set('quality', v)",
                      json.loads(json.dumps(ex.quality)))
        box = page.locator("[data-role=quality]")
        assert box.get_attribute("data-fresh") == "true"
        value = lambda f: float(box.locator(f"dd[data-field={f}]").get_attribute("data-value"))
        assert value("worst_gap") == pytest.approx(want_c.worst_gap, abs=1e-9)
        assert value("mean_gap") == pytest.approx(want_c.mean_gap, abs=1e-9)
        assert value("n_below") == int(want_m["below"].sum())
        assert value("min_contribution") == pytest.approx(want_m["contribution"].abs().min(), abs=1e-9)
        assert "current" in page.inner_text("[data-role=quality-which]")
        print(f"\nexplorer quality, 7-edge PEAP circuit: completeness gap {want_c.worst_gap:.4g}, "
              f"{int(want_m['below'].sum())} of {len(want_m)} edges below "
              f"{want_m.attrs['threshold']:.3g}")
        # hover the induction head at A2: its function scores, highest first
        node = page.locator('[data-name="a1.h0@A2"]').first.bounding_box()
        page.mouse.move(node["x"] + node["width"] / 2, node["y"] + node["height"] / 2)
        page.wait_for_selector("[data-role=tooltip]:not([hidden])")
        tip = page.inner_text("[data-role=head-functions]")
        assert tip.index("copying 0.93") < tip.index("previous token 0.10")
        screenshot(page.locator(".pe-root"), "quality_explorer_panel")
        page.mouse.move(5, 5)
        # a different circuit: the numbers go, the box says pending
        page.fill("[data-role=size-input]", "5")
        page.press("[data-role=size-input]", "Enter")
        assert box.get_attribute("data-fresh") == "false"
        assert box.locator("dd").count() == 0
        assert "pending" in page.inner_text("[data-role=quality-which]")
        screenshot(page.locator(".pe-side"), "quality_explorer_pending")
        assert not errors
