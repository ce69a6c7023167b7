"""CircuitExplorer in real Chromium (the built bundle on a to_html page served from loopback):
size control, click to prune and restore, node pruning, undo, search, hover, exports, coalesced
evaluation requests, and timings with 5,000 drawn edges."""

import json

import numpy as np
import pytest
from browser import ARTIFACTS, open_standalone, screenshot, serve

import peap_widget as pw
from peap_widget.graph import Graph, GraphConfig
from peap_widget.widgets.circuit_explorer import selection_rows

SEL = "window.peapWidgets[0].model.get('selection')"


@pytest.fixture(scope="module")
def toy_page(tmp_path_factory):
    model = pw.models.load("toy-ioi")
    ds = pw.tasks.ioi(n=40, seed=5).dataset(model)
    res = pw.attribute(model, ds, progress=False)
    ex = pw.CircuitExplorer(res, model, ds, n_edges=60, curve_sizes=[10, 60, 300, 1.0])
    d = tmp_path_factory.mktemp("explorer")
    ex.to_html(d / "explorer.html")
    return ex, res, d


def _edge_point(page, row):
    """A point on the drawn path of ``row`` in page coordinates."""
    return page.evaluate("""(row) => {
        const p = document.querySelector(`path[data-row="${row}"], path[data-ghost="${row}"]`);
        const pt = p.getPointAtLength(p.getTotalLength() * 0.5);
        const m = p.getScreenCTM();
        return [pt.x * m.a + m.e, pt.y * m.d + m.f];
    }""", row)


def test_prune_restore_undo_size_search_hover(toy_page, chromium):
    ex, res, d = toy_page
    with serve(d) as url:
        page = open_standalone(chromium, f"{url}/explorer.html")
        w = page.locator(".peap-widget").first
        want = selection_rows(res.space, True, ex._order, res.scores, ex.selection)
        assert int(w.get_attribute("data-drawn")) == int(want.sum())
        assert page.locator("path[data-row]").count() == int(want.sum())
        screenshot(page, "circuit_explorer")

        # size control: type a size, then drag the slider with the keyboard
        page.fill("[data-role=size-input]", "25")
        page.press("[data-role=size-input]", "Enter")
        assert page.evaluate(SEL)["n_edges"] == 25
        want = selection_rows(res.space, True, ex._order, res.scores, page.evaluate(SEL))
        assert page.locator("path[data-row]").count() == int(want.sum())
        page.focus("[data-role=size-slider]")
        for _ in range(5):
            page.keyboard.press("ArrowRight")
        assert page.evaluate(SEL)["n_edges"] == 30

        # hover an edge: the tooltip names it and shows its score
        row = int(page.locator("path[data-row]").first.get_attribute("data-row"))
        x, y = _edge_point(page, row)
        page.mouse.move(x, y)
        page.wait_for_selector("[data-role=tooltip]:not([hidden])")
        tip = page.inner_text("[data-role=tooltip]")
        assert res.space.edge_name(row) in tip
        assert f"{res.scores[row]:.4g}"[:5] in tip

        # click it: pruned (its whole unit), drawn as a ghost; click the ghost: restored
        unit = int(ex.circuit.units.of_row[row])
        page.mouse.click(x, y)
        sel = page.evaluate(SEL)
        assert unit in sel["removed"]
        assert page.locator(f"path[data-row='{row}']").count() == 0
        assert page.locator(f"path[data-ghost='{row}']").count() == 1
        rows_py = selection_rows(res.space, True, ex._order, res.scores, sel)
        assert page.locator("path[data-row]").count() == int(rows_py.sum())
        screenshot(page, "circuit_explorer_pruned")
        x, y = _edge_point(page, row)
        page.mouse.click(x, y)
        assert unit not in page.evaluate(SEL)["removed"]
        assert page.locator(f"path[data-row='{row}']").count() == 1

        # click a head node: it and its q/k/v inputs at that span are pruned; undo restores
        head = page.locator("circle.pe-node.on").first
        name = head.get_attribute("data-name")
        box = head.bounding_box()
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        sel = page.evaluate(SEL)
        assert ex.result.space.node_index[name] in sel["removed_nodes"]
        ex2_rows = selection_rows(res.space, True, ex._order, res.scores, sel)
        assert page.locator("path[data-row]").count() == int(ex2_rows.sum())
        assert page.locator(f"[data-name='{name}'].removed").count() == 1
        page.click("[data-role=undo]")
        assert page.evaluate(SEL)["removed_nodes"] == []

        # hover a head: OV logit lens and attention summary
        head = page.locator("circle.pe-node.on").first
        box = head.bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.wait_for_timeout(100)
        tip = page.inner_text("[data-role=tooltip]")
        assert head.get_attribute("data-name") in tip and "OV promotes" in tip and "attends" in tip
        screenshot(page, "circuit_explorer_hover")

        # search
        page.fill("[data-role=search]", "a2.h1@")
        assert page.locator("circle.match").count() == len(res.space.spans)

        # threshold mode keeps about the same circuit and filters by |score|
        page.select_option("[data-role=mode]", "threshold")
        sel = page.evaluate(SEL)
        assert sel["mode"] == "threshold" and sel["threshold"] > 0
        rows_py = selection_rows(res.space, True, ex._order, res.scores, sel)
        assert page.locator("path[data-row]").count() == int(rows_py.sum())
        assert not page.errors


def test_exports_load_in_python(toy_page, chromium):
    ex, res, d = toy_page
    with serve(d) as url:
        page = open_standalone(chromium, f"{url}/explorer.html")
        with page.expect_download() as dl:
            page.click("[data-role=export-json]")
        circ = pw.Circuit.from_json(dl.value.path().read_text())
        want = selection_rows(res.space, True, ex._order, res.scores, page.evaluate(SEL))
        assert (circ.in_rows == want).all()
        with page.expect_download() as dl:
            page.click("[data-role=export-svg]")
        svg = dl.value.path().read_text()
        assert svg.startswith("<svg") and svg.count("data-row=") == int(want.sum())
        with page.expect_download() as dl:
            page.click("[data-role=export-png]")
        png = dl.value.path().read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10000


def test_edits_faster_than_evaluation_are_coalesced(toy_page, chromium):
    """A page standing in for the kernel answers each request after 300 ms; 15 quick slider
    moves must give at most 2 requests, the last for the final selection."""
    ex, res, d = toy_page
    page = chromium.new_page()
    page.add_init_script("window.peapStandalone = { kernel: true };")
    with serve(d) as url:
        page.goto(f"{url}/explorer.html")
        page.wait_for_selector("body[data-peap-ready='true']")
        page.evaluate("""() => {
            const { model, el } = window.peapWidgets[0];
            window.requests = [];
            el.addEventListener("peap-send", (e) => {
                window.requests.push({ msg: e.detail, sel: model.get("selection") });
                setTimeout(() => model.set("evaluation", { version: e.detail.version,
                    faithfulness: 0.5, selection: model.get("selection"), seconds: 0.3 }), 300);
            });
        }""")
        page.evaluate("""() => {
            const s = document.querySelector("[data-role=size-slider]");
            for (let i = 0; i < 15; i++) {
                s.value = String(40 + i); s.dispatchEvent(new Event("input", { bubbles: true }));
            }
        }""")
        assert page.evaluate("window.requests.length") == 1
        page.wait_for_timeout(900)
        reqs = page.evaluate("window.requests")
        assert len(reqs) == 2
        assert reqs[-1]["sel"]["n_edges"] == 54
        assert page.get_attribute("[data-role=evaluation]", "data-fresh") == "true"
        assert "evaluated" in page.inner_text("[data-role=status]")


def _big_result(n_spans=7):
    """A result on GPT-2 small's graph (12 layers x 12 heads, 7 spans: 240k rows) with random
    scores: the size of real use, no weights needed."""
    cfg = GraphConfig(n_layers=12, n_heads=12, d_model=768)
    g = Graph(cfg)
    rng = np.random.default_rng(0)
    spans = [f"S{i}" for i in range(n_spans)]
    resid = rng.standard_normal((n_spans, g.n_forward, g.n_backward)) * rng.random((1, g.n_forward, 1)) ** 3
    cross = rng.standard_normal((3, 12, 12, n_spans, n_spans)) * 0.3
    settings = {"method": "peap", "ablation": "counterfactual", "aggregation": "sum",
                "metric": "logit_diff"}
    return pw.AttributionResult.from_arrays(g, spans, resid, cross, settings, np.ones(3),
                                            np.zeros(3), pw.Schema(spans).to_dict())


def test_five_thousand_edges_render_and_update_times(tmp_path, chromium):
    res = _big_result()
    ex = pw.CircuitExplorer(res)
    # the greedy size whose pruned circuit draws 5,000 edges
    drawn_at = lambda n: int(selection_rows(res.space, True, ex._order, res.scores,
                                            {"n_edges": n}).sum())
    lo, hi = 0, len(ex._order)
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if drawn_at(mid) < 5000 else (lo, mid)
    ex.set_size(lo)
    ex.to_html(tmp_path / "big.html")
    with serve(tmp_path) as url:
        page = open_standalone(chromium, f"{url}/big.html")
        w = page.locator(".peap-widget").first
        drawn = int(w.get_attribute("data-drawn"))
        assert 5000 <= drawn < 5100 and w.get_attribute("data-mode") == "canvas"
        first = float(w.get_attribute("data-render-ms"))
        times = []
        for n in (lo - 10, lo, lo - 1000, lo, lo - 5):
            ms = page.evaluate("""(n) => {
                const s = document.querySelector("[data-role=size-slider]");
                const t0 = performance.now();
                s.value = String(n); s.dispatchEvent(new Event("input", { bubbles: true }));
                return performance.now() - t0;
            }""", int(n))
            times.append(ms)
        screenshot(page, "circuit_explorer_5000_edges")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        report = {"rows": len(res.space), "drawn_edges": drawn, "first_render_ms": first,
                  "size_update_ms": times, "median_update_ms": float(np.median(times))}
        (ARTIFACTS / "explorer_timings.json").write_text(json.dumps(report, indent=1))
        print(report)
        assert not page.errors
