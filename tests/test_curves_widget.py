"""FaithfulnessCurves: its traits from real faithfulness curves, and its chart in real Chromium."""

import json
import math
import re

import numpy as np
import pytest
from browser import ARTIFACTS, open_standalone, screenshot, serve

import peap_widget as pw
from peap_widget.widgets.curves import POINT_KEYS, curve_series
from peap_widget.widgets.export import widget_state

# 0 (the empty circuit) checks the log axes' handling of zero sizes
SIZES = [0, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]


@pytest.fixture(scope="module")
def curve(tiny_results):
    model, ds, peap, eap = tiny_results
    return pw.faithfulness_curve(model, ds, {"PEAP": peap, "EAP": eap}, sizes=SIZES, progress=False)


@pytest.fixture(scope="module")
def current(tiny_results):
    model, ds, peap, _ = tiny_results
    circ = peap.circuit(n_edges=30)
    return circ, pw.evaluate(model, ds, circ)


def rows_of(curve, name):
    t = curve.table
    return t[t["result"] == name].sort_values(["fraction", "n_edges"], kind="stable")


def same(a, b):
    if b is None or (isinstance(b, float) and math.isnan(b)):
        return a is None
    return a == pytest.approx(float(b), rel=1e-12, abs=1e-15)


# --- Python ----------------------------------------------------------------------------------------

def test_series_equal_the_curve_table(curve):
    w = pw.FaithfulnessCurves(curve)
    assert [s["name"] for s in w.series] == ["PEAP", "EAP"]
    for s in w.series:
        rows = rows_of(curve, s["name"])
        assert len(s["points"]) == len(rows) == len(SIZES)
        for p, (_, row) in zip(s["points"], rows.iterrows()):
            assert set(p) == set(POINT_KEYS)
            for k in POINT_KEYS:
                assert same(p[k], row[k]), (s["name"], k, p[k], row[k])
            assert type(p["n_edges"]) is int
            assert all(v is None or type(v) in (int, float) for v in p.values())
    # what goes to the browser is plain JSON (no NaN)
    json.dumps(widget_state(w), allow_nan=False)


def test_nan_and_missing_values_become_none(curve):
    table = curve.table.copy()
    table.loc[0, "faithfulness"] = np.nan
    table.loc[1, "kl"] = np.inf
    table["n_real_edges"] = table["n_real_edges"].astype(object)
    table.loc[2, "n_real_edges"] = None
    table = table.drop(columns=["real_fraction"])
    series = curve_series(table)
    by_key = {(s["name"], i): p for s in series for i, p in enumerate(s["points"])}
    assert sum(p["faithfulness"] is None for p in by_key.values()) == 1
    assert sum(p["kl"] is None for p in by_key.values()) == 1
    assert sum(p["n_real_edges"] is None for p in by_key.values()) == 1
    assert all(p["real_fraction"] is None for p in by_key.values())
    w = pw.FaithfulnessCurves(table)
    json.dumps(widget_state(w), allow_nan=False)
    # series set directly are cleaned the same way
    w.series = [{"name": "x", "points": [{"n_edges": 3, "fraction": float("nan"), "faithfulness": 0.5}]}]
    assert w.series == [{"name": "x", "points": [{**dict.fromkeys(POINT_KEYS), "n_edges": 3,
                                                  "faithfulness": 0.5}]}]


def test_inputs_lists_dicts_and_add(curve):
    w = pw.FaithfulnessCurves([curve, curve.table])
    assert [s["name"] for s in w.series] == ["PEAP", "EAP", "PEAP (2)", "EAP (2)"]
    w = pw.FaithfulnessCurves({"ioi": curve})
    assert [s["name"] for s in w.series] == ["ioi: PEAP", "ioi: EAP"]
    w = pw.FaithfulnessCurves()
    assert w.series == [] and w.current is None
    assert w.add(curve) is w
    w.add(curve)
    assert [s["name"] for s in w.series] == ["PEAP", "EAP", "PEAP (2)", "EAP (2)"]
    with pytest.raises(pw.PeapError, match="FaithfulnessCurve"):
        pw.FaithfulnessCurves(42)
    with pytest.raises(pw.PeapError, match="columns"):
        pw.FaithfulnessCurves(curve.table.drop(columns=["faithfulness"]))
    with pytest.raises(pw.PeapError, match="series"):
        w.series = [{"name": "no points"}]


def test_set_current_from_a_circuit_and_its_evaluation(curve, current):
    circ, ev = current
    w = pw.FaithfulnessCurves(curve)
    assert w.set_current(circ, ev) is w
    c = w.current
    assert c["label"] == circ.name
    assert c["n_edges"] == circ.n_edges and type(c["n_edges"]) is int
    assert c["fraction"] == pytest.approx(circ.fraction)
    assert c["n_real_edges"] == pytest.approx(circ.n_real_edges)
    assert c["real_fraction"] == pytest.approx(circ.real_fraction)
    for k in ("faithfulness", "soft", "hard", "kl"):
        assert c[k] == pytest.approx(getattr(ev, k))
    w.set_current(circ, ev, label="top 30")
    assert w.current["label"] == "top 30"
    # sizes from the evaluation alone (it carries n_edges, fraction, n_real_edges)
    w.set_current(None, ev)
    assert w.current["n_edges"] == circ.n_edges and w.current["real_fraction"] is None
    with pytest.raises(pw.PeapError, match="set_current"):
        w.set_current()
    # a dict works too, cleaned like the series
    w.current = {"label": "mine", "n_edges": np.int64(12), "fraction": 0.1, "faithfulness": np.nan}
    assert w.current == {**dict.fromkeys(POINT_KEYS), "label": "mine", "n_edges": 12, "fraction": 0.1}
    with pytest.raises(pw.PeapError, match="unknown keys"):
        w.current = {"edges": 3}
    w.current = None
    assert w.current is None


def test_measure_and_x_are_checked(curve):
    w = pw.FaithfulnessCurves(curve, measure="hard", x="n_real_edges", title="t")
    assert (w.measure, w.x, w.title) == ("hard", "n_real_edges", "t")
    for m in ("faithfulness", "soft", "hard", "kl"):
        w.measure = m
    for x in ("fraction", "n_edges", "n_real_edges", "real_fraction", "fraction_linear"):
        w.x = x
    with pytest.raises(pw.PeapError, match="measure must be one of"):
        pw.FaithfulnessCurves(curve, measure="normalized")
    with pytest.raises(pw.PeapError, match="x must be one of"):
        w.x = "log"
    assert w.x == "fraction_linear"
    assert "PEAP" in repr(w)


# --- real browser ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def page_dir(curve, current, tmp_path_factory):
    circ, ev = current
    d = tmp_path_factory.mktemp("curves")
    w = pw.FaithfulnessCurves(curve, title="Tiny GPT-2: PEAP vs EAP").set_current(circ, ev, "my circuit")
    w.to_html(d / "curves.html")
    return d


@pytest.fixture
def page(page_dir, chromium):
    with serve(page_dir) as url:
        p = open_standalone(chromium, f"{url}/curves.html")
        yield p
        assert not p.errors
        p.close()


def marker_centres(page):
    """{(series, index): (x, y)} of the drawn markers (page coordinates)."""
    out = {}
    for m in page.locator(".pc-marker").all():
        b = m.bounding_box()
        out[(m.get_attribute("data-series"), int(m.get_attribute("data-index")))] = (
            b["x"] + b["width"] / 2, b["y"] + b["height"] / 2)
    return out


def number(text):
    text = text.replace(",", "").replace("−", "-")
    return float(re.match(r"-?[\d.]+(e-?\d+)?", text).group(0))


def test_browser_draws_one_line_per_result_and_every_point(page, curve, current):
    assert page.locator(".pc-line").count() == 2
    assert [l.get_attribute("data-series") for l in page.locator(".pc-line").all()] == ["PEAP", "EAP"]
    # default axis: fraction of edges, log: the empty circuits (fraction 0) are left out, and said so
    table = curve.table
    zero = int((table["fraction"] == 0).sum())   # requested 0, or pruned to nothing
    assert zero >= 2
    assert page.locator(".pc-marker").count() == len(table) - zero
    assert f"{zero} points with size 0" in page.locator(".pc-note").inner_text()
    # the linear fraction axis shows every point
    page.select_option(".pcw-x", "fraction_linear")
    assert page.locator(".pc-marker").count() == len(table) == 14
    assert page.locator(".pc-note").inner_text() == ""
    assert page.evaluate("window.peapWidgets[0].model.get('x')") == "fraction_linear"
    # markers sit where the table says, per series
    for name in ("PEAP", "EAP"):
        rows = rows_of(curve, name)
        ys = [float(m.get_attribute("data-y"))
              for m in page.locator(f".pc-marker[data-series='{name}']").all()]
        assert sorted(ys) == pytest.approx(sorted(rows["faithfulness"]))
    # the current circuit is drawn, with its label, in the legend too
    circ, ev = current
    cur = page.locator(".pc-current")
    assert cur.count() == 1
    assert float(cur.get_attribute("data-x")) == pytest.approx(circ.fraction)
    assert float(cur.get_attribute("data-y")) == pytest.approx(ev.faithfulness)
    assert page.locator(".pc-current-label").text_content() == "my circuit"
    legend = page.locator(".pc-legend").text_content()
    assert "PEAP" in legend and "EAP" in legend and "my circuit" in legend
    assert page.locator(".pc-reference").count() == 1  # dashed y = 1
    assert page.locator(".pc-title").text_content() == "Tiny GPT-2: PEAP vs EAP"
    page.select_option(".pcw-x", "fraction")
    screenshot(page.locator(".peap-curves"), "faithfulness_curves_plain")


def test_browser_tooltip_shows_the_table_values(page, curve):
    centres = marker_centres(page)
    tip = page.locator(".pc-tooltip")
    assert tip.is_hidden()
    checked = 0
    for name in ("PEAP", "EAP"):
        rows = rows_of(curve, name).reset_index(drop=True)
        for i in (2, 4, 6):  # fractions 0.05, 0.2, 1.0
            page.mouse.move(*centres[(name, i)])
            assert tip.is_visible()
            row = rows.iloc[i]
            def cell(key, name=name):
                return tip.locator(f"tr[data-key='{key}'] td[data-series='{name}']").inner_text()

            assert number(cell("n_edges")) == row["n_edges"]
            assert number(cell("fraction")) == pytest.approx(row["fraction"], rel=1e-3)
            assert number(cell("n_real_edges")) == pytest.approx(row["n_real_edges"], rel=1e-3)
            for k in ("faithfulness", "soft", "hard"):
                assert number(cell(k)) == pytest.approx(row[k], rel=2e-3, abs=1e-12), (name, i, k)
            kl = number(cell("kl"))
            assert kl == pytest.approx(row["kl"], rel=2e-3, abs=1e-12)
            checked += 1
    assert checked == 6
    # the tooltip names the series and stresses the shown measure
    page.mouse.move(*centres[("PEAP", 4)])
    assert "PEAP" in tip.inner_text()
    assert tip.locator("tr.pc-on").get_attribute("data-key") == "faithfulness"
    assert page.locator(".pc-hover-ring").get_attribute("visibility") == "visible"
    screenshot(page.locator(".peap-curves"), "faithfulness_curves")
    page.mouse.move(5, 5)
    assert tip.is_hidden()
    # the current circuit has a tooltip too
    b = page.locator(".pc-current-marker").bounding_box()
    page.mouse.move(b["x"] + b["width"] / 2, b["y"] + b["height"] / 2)
    assert "my circuit" in tip.inner_text()


def test_browser_measure_switch_moves_the_points(page, curve):
    before = marker_centres(page)
    page.locator(".pcw-seg[data-measure='soft']").click()
    assert page.evaluate("window.peapWidgets[0].model.get('measure')") == "soft"
    assert page.locator(".pcw-seg[data-measure='soft']").get_attribute("aria-pressed") == "true"
    assert page.locator(".pc-y-label").text_content().startswith("soft faithfulness")
    after = marker_centres(page)
    assert before.keys() == after.keys()
    assert [before[k][0] for k in before] == pytest.approx([after[k][0] for k in before])  # same x
    assert sum(abs(before[k][1] - after[k][1]) > 1 for k in before) >= 8  # y moved
    for name in ("PEAP", "EAP"):
        ys = sorted(float(m.get_attribute("data-y"))
                    for m in page.locator(f".pc-marker[data-series='{name}']").all())
        rows = rows_of(curve, name)
        assert ys == pytest.approx(sorted(rows.loc[rows["fraction"] > 0, "soft"]))
    # a higher value is drawn higher
    soft = {(s, int(i)): v for s, i, v in
            [(m.get_attribute("data-series"), m.get_attribute("data-index"),
              float(m.get_attribute("data-y"))) for m in page.locator(".pc-marker").all()]}
    lo, hi = min(soft, key=soft.get), max(soft, key=soft.get)
    assert after[hi][1] < after[lo][1]
    # edges axis: the empty circuits (0 edges) are dropped
    page.select_option(".pcw-x", "n_edges")
    assert page.locator(".pc-marker").count() == int((curve.table["n_edges"] > 0).sum())
    assert "edges" in page.locator(".pc-x-label").text_content()
    page.select_option(".pcw-x", "n_real_edges")
    screenshot(page.locator(".peap-curves"), "faithfulness_curves_soft_real_edges")
    # hard: no series leaves the plot
    page.locator(".pcw-seg[data-measure='hard']").click()
    assert page.locator(".pc-line").count() == 2


def test_browser_follows_trait_changes_and_legend_toggles(page):
    model = "window.peapWidgets[0].model"
    page.evaluate(f"{model}.set('current', null)")
    assert page.locator(".pc-current").count() == 0
    page.evaluate(f"{model}.set('measure', 'kl')")
    assert page.locator(".pc-reference").count() == 0  # no y = 1 line for KL
    assert page.locator(".pcw-seg[data-measure='kl']").get_attribute("aria-pressed") == "true"
    page.evaluate(f"{model}.set('series', {model}.get('series').slice(0, 1))")
    assert page.locator(".pc-line").count() == 1
    page.evaluate(f"{model}.set('series', [])")
    assert page.locator(".pc-empty").text_content() == "no curves yet"
    page.reload()
    page.wait_for_selector("body[data-peap-ready='true']")
    page.locator(".pc-legend-item[data-series='EAP']").click()
    assert page.locator(".pc-line").count() == 1
    page.locator(".pc-legend-item[data-series='EAP']").click()
    assert page.locator(".pc-line").count() == 2


def test_browser_exports_svg_and_png(page, tmp_path):
    with page.expect_download() as d:
        page.locator(".pcw-export[data-format='svg']").click()
    download = d.value
    assert download.suggested_filename == "tiny_gpt_2_peap_vs_eap_faithfulness.svg"
    path = tmp_path / "chart.svg"
    download.save_as(path)
    svg = path.read_text()
    assert svg.startswith("<?xml") and "<svg" in svg and "http://www.w3.org/2000/svg" in svg
    assert svg.count('class="pc-line"') == 2
    assert svg.count('class="pc-marker"') == page.locator(".pc-marker").count() >= 10
    assert "pc-hover-ring" not in svg
    from xml.dom import minidom
    minidom.parseString(svg.encode())  # well-formed XML
    with page.expect_download() as d:
        page.locator(".pcw-export[data-format='png']").click()
    download = d.value
    assert download.suggested_filename.endswith(".png")
    download.save_as(tmp_path / "chart.png")
    png = (tmp_path / "chart.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    svg_w = float(page.locator(".pc-svg").get_attribute("width"))
    assert width == round(2 * svg_w) and height > 500
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "faithfulness_curves_export.png").write_bytes(png)  # for people to look at


def test_browser_current_ring_sits_on_its_curve_point(tiny_results, curve, chromium, tmp_path):
    """The explorer's circuit at a curve point's size is that point: the ring is centred on the
    marker (x: the circuit's own fraction after pruning, in the table and in `current`), and
    one tooltip shows both."""
    model, ds, peap, _ = tiny_results
    rows = rows_of(curve, "PEAP").reset_index(drop=True)
    row = rows.iloc[4]
    circ = peap.circuit(n_edges=int(row["requested"]))
    assert circ.fraction == pytest.approx(row["fraction"], rel=1e-12)
    w = pw.FaithfulnessCurves(curve).set_current(circ, pw.evaluate(model, ds, circ), "explorer")
    w.to_html(tmp_path / "ring.html")
    with serve(tmp_path) as url:
        p = open_standalone(chromium, f"{url}/ring.html")
        try:
            for axis in ("fraction", "n_edges", "fraction_linear"):
                p.select_option(".pcw-x", axis)
                m = p.locator(".pc-marker[data-series='PEAP'][data-index='4']").bounding_box()
                r = p.locator(".pc-current-marker").bounding_box()
                assert abs((m["x"] + m["width"] / 2) - (r["x"] + r["width"] / 2)) < 0.6, axis
                assert abs((m["y"] + m["height"] / 2) - (r["y"] + r["height"] / 2)) < 0.6, axis
            p.select_option(".pcw-x", "fraction")
            r = p.locator(".pc-current-marker").bounding_box()
            p.mouse.move(r["x"] + r["width"] / 2, r["y"] + r["height"] / 2)
            assert "2 points here" in p.locator(".pc-tooltip").inner_text()
            screenshot(p.locator(".peap-curves"), "faithfulness_curves_current_on_point")
            assert not p.errors
        finally:
            p.close()
