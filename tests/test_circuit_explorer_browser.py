"""CircuitExplorer in real Chromium (the built bundle on a to_html page served from loopback):
size control, click to prune and restore, node pruning, undo, search, hover, exports, coalesced
evaluation requests, and timings with 5,000 drawn edges."""

import json

import numpy as np
import pytest
from browser import ARTIFACTS, open_standalone, screenshot, serve

import peap_widget as pw
from peap_widget.graph.space import Graph, GraphConfig
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
    """A page standing in for the kernel holds its answers until the test releases them (no
    timing involved): 15 quick slider moves while one request is unanswered give one request;
    answering it brings exactly one more, for the final selection, and then the panel is
    current."""
    ex, res, d = toy_page
    page = chromium.new_page()
    page.add_init_script("window.peapStandalone = { kernel: true };")
    with serve(d) as url:
        page.goto(f"{url}/explorer.html")
        page.wait_for_selector("body[data-peap-ready='true']")
        page.evaluate("""() => {
            const { model, el } = window.peapWidgets[0];
            window.requests = [];
            // the message carries the selection; the answer is for exactly that one
            window.answer = (i) => { const m = window.requests[i].msg;
                model.set("evaluation", { version: m.version, faithfulness: 0.5,
                                          selection: m.selection, seconds: 0.3 }); };
            el.addEventListener("peap-send", (e) => {
                if (e.detail.type !== "evaluate") return;
                window.requests.push({ msg: e.detail, sel: e.detail.selection });
            });
        }""")
        page.evaluate("""() => {
            const s = document.querySelector("[data-role=size-slider]");
            const ex = window.peapWidgets[0].el.explorer;
            for (let i = 0; i < 15; i++) {
                s.value = String(ex.sliderFor(40 + i)); s.dispatchEvent(new Event("input", { bubbles: true }));
            }
        }""")
        assert page.evaluate("window.requests.length") == 1, page.evaluate("window.requests.map((r) => r.msg)")
        assert page.get_attribute("[data-role=evaluation]", "data-fresh") != "true"
        page.evaluate("window.answer(0)")          # the answer to the first, now stale, state
        page.wait_for_function("window.requests.length === 2")
        reqs = page.evaluate("window.requests")
        assert reqs[-1]["sel"]["n_edges"] == page.evaluate(SEL)["n_edges"] >= 50
        assert page.get_attribute("[data-role=evaluation]", "data-fresh") != "true"
        page.evaluate("window.answer(1)")
        page.wait_for_function("document.querySelector('[data-role=evaluation]')"
                               ".dataset.fresh === 'true'")
        assert page.evaluate("window.requests.length") == 2
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
                const s = document.querySelector("[data-role=size-input]");
                const t0 = performance.now();
                s.value = String(n); s.dispatchEvent(new Event("change", { bubbles: true }));
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


# --- a graph larger than what the page holds -------------------------------------------------

KERNEL_BRIDGE = """() => {
    // the test stands in for the kernel: requests wait in window.pending until it answers
    const { el } = window.peapWidgets[0];
    window.pending = [];
    el.addEventListener("peap-send", (e) => { if (e.detail.type === "more") window.pending.push(e.detail); });
}"""

DELIVER = """(answers) => {
    const { model } = window.peapWidgets[0];
    const view = (b64) => {
        const bin = atob(b64), bytes = new Uint8Array(bin.length);
        for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
        return new DataView(bytes.buffer);
    };
    for (const [msg, buffers] of answers) model.receive(msg, buffers.map(view));
}"""

DRAWN = """() => {
    const { data, rows } = window.peapWidgets[0].el.explorer;
    const r = rows(), out = [];
    for (let i = 0; i < data.nRows; i++) if (r[i]) out.push(data.rowId[i]);
    return out.sort((a, b) => a - b);
}"""


def _answer_pending(page, ex) -> int:
    """Answer the page's "more" requests with the explorer's own handler; returns how many."""
    import base64

    pending = page.evaluate("window.pending.splice(0)")
    sent = []
    ex.send = lambda content, buffers=None: sent.append((content, buffers or []))
    try:
        for msg in pending:
            ex._on_message(ex, msg, [])
    finally:
        del ex.send
    page.evaluate(DELIVER, [[c, [base64.b64encode(bytes(b)).decode() for b in bufs]]
                            for c, bufs in sent])
    return len(pending)


def _open(chromium, url, kernel: bool):
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    if kernel:
        page.add_init_script("window.peapStandalone = { kernel: true };")
    page.goto(url)
    page.wait_for_selector("body[data-peap-ready='true']", timeout=20000)
    return page


@pytest.fixture(scope="module")
def partial_page(tmp_path_factory):
    """GPT-2 small's graph (240k rows, random scores) with a page holding 2,000 units."""
    res = _big_result()
    ex = pw.CircuitExplorer(res, n_edges=300, max_units=2000, chunk_units=1500)
    d = tmp_path_factory.mktemp("partial")
    ex.to_html(d / "partial.html")
    return ex, res, d


def test_sizes_past_the_shipped_rows_are_fetched(partial_page, chromium):
    ex, res, d = partial_page
    held = ex.shipped
    assert held["units"] <= 2000 and held["order"] < 2000 < ex.info["n_order"]
    with serve(d) as url:
        page = _open(chromium, f"{url}/partial.html", kernel=True)
        page.evaluate(KERNEL_BRIDGE)
        w = page.locator(".peap-widget").first
        assert w.get_attribute("data-state") == "ready"
        assert page.inner_text("[data-role=cap-note]") == ""      # a kernel: nothing capped

        # past the shipped part of the greedy order: the page asks, says it is loading, and
        # draws nothing until every chunk is there
        n = held["order"] + 2500
        page.fill("[data-role=size-input]", str(n))
        page.press("[data-role=size-input]", "Enter")
        assert page.evaluate(SEL)["n_edges"] == n
        assert w.get_attribute("data-state") == "loading"
        assert "Loading" in page.inner_text("[data-role=waiting]")
        assert "pending" in page.inner_text("[data-role=size-label]")
        assert page.evaluate(DRAWN) == []
        screenshot(page, "circuit_explorer_loading")
        requests = 0
        while w.get_attribute("data-state") == "loading":
            got = _answer_pending(page, ex)
            assert got == 1, "one request at a time"
            requests += got
        assert requests >= 2                                      # 2,500 units in 1,500-unit chunks
        assert w.get_attribute("data-state") == "ready"
        sel = page.evaluate(SEL)
        ex.selection = sel                                        # what the comm syncs
        want = np.flatnonzero(ex.circuit.in_rows)
        assert page.evaluate(DRAWN) == want.tolist()
        assert int(w.get_attribute("data-drawn")) == len(want)
        assert f"{ex.circuit.n_edges} edges" in page.inner_text("[data-role=size-label]")
        screenshot(page, "circuit_explorer_fetched")

        # threshold mode below the smallest key the page holds: fetched the same way
        thr = float(np.quantile(ex._ship.keys, 1 - 6000 / ex.info["n_units"]))
        assert thr < (held["key_floor"] or 0)
        page.select_option("[data-role=mode]", "threshold")
        page.fill("[data-role=size-input]", f"{thr:.6g}")
        page.press("[data-role=size-input]", "Enter")
        for _ in range(20):
            if w.get_attribute("data-state") != "loading":
                break
            _answer_pending(page, ex)
        assert w.get_attribute("data-state") == "ready"
        ex.selection = page.evaluate(SEL)
        assert ex.selection["mode"] == "threshold"
        assert page.evaluate(DRAWN) == np.flatnonzero(ex.circuit.in_rows).tolist()

        # pruning an edge fetched later works like any other
        page.select_option("[data-role=mode]", "edges")
        page.evaluate("(n) => window.peapWidgets[0].el.explorer.edit({ ...window.peapWidgets[0].model.get('selection'), n_edges: n })", held["order"] + 300)
        assert w.get_attribute("data-state") == "ready"
        held_rows = set(np.frombuffer(ex.row_id, dtype=np.int32).tolist())
        rows = [int(r) for r in page.locator("path[data-row]").evaluate_all(
            "(ps) => ps.map((p) => p.dataset.row)")]
        row = next(r for r in rows if r not in held_rows)         # a row that came in a chunk
        page.evaluate("""(row) => document.querySelector(`path[data-row="${row}"]`)
            .scrollIntoView({ block: "center", inline: "center" })""", row)
        x, y = _edge_point(page, row)
        page.mouse.click(x, y)
        ex.selection = page.evaluate(SEL)
        assert len(ex.selection["removed"]) == 1                  # the edge under the pointer
        assert page.evaluate(DRAWN) == np.flatnonzero(ex.circuit.in_rows).tolist()
        assert not page.errors, page.errors


def test_without_a_kernel_the_size_control_stops_at_what_was_shipped(partial_page, chromium):
    ex, res, d = partial_page
    held = ex.shipped
    with serve(d) as url:
        page = _open(chromium, f"{url}/partial.html", kernel=False)
        w = page.locator(".peap-widget").first
        note = page.inner_text("[data-role=cap-note]")
        assert f"first {held['order']:,} of {ex.info['n_order']:,} edges" in note
        assert int(page.get_attribute("[data-role=size-input]", "max")) == held["order"]
        page.evaluate("""() => { const s = document.querySelector("[data-role=size-slider]");
            s.value = s.max; s.dispatchEvent(new Event("input", { bubbles: true })); }""")
        assert page.evaluate(SEL)["n_edges"] == held["order"]     # the log slider's end
        page.fill("[data-role=size-input]", str(held["order"] + 5000))
        page.press("[data-role=size-input]", "Enter")
        assert page.evaluate(SEL)["n_edges"] == held["order"]     # capped, drawn exactly
        assert w.get_attribute("data-state") == "ready"
        sel = page.evaluate(SEL)
        want = selection_rows(res.space, True, ex._order, res.scores, sel)
        assert page.evaluate(DRAWN) == np.flatnonzero(want).tolist()
        # a threshold below what the page holds stops at the smallest one it can show
        page.select_option("[data-role=mode]", "threshold")
        page.fill("[data-role=size-input]", "0")
        page.press("[data-role=size-input]", "Enter")
        sel = page.evaluate(SEL)
        assert sel["threshold"] > held["key_floor"]
        assert float(page.input_value("[data-role=size-input]")) == pytest.approx(sel["threshold"], rel=1e-3)
        want = selection_rows(res.space, True, ex._order, res.scores, sel)
        assert page.evaluate(DRAWN) == np.flatnonzero(want).tolist()
        screenshot(page, "circuit_explorer_capped")
        assert not page.errors, page.errors


def test_an_exported_page_holds_the_circuit_it_shows(partial_page, chromium, tmp_path):
    """Exported at a size past what the widget shipped: the page gets those rows too."""
    ex, res, _ = partial_page
    before = dict(ex.selection)
    try:
        ex.set_size(ex.shipped["order"] + 700)
        ex.add_edge(int(np.flatnonzero(ex._ship.units.of_row == ex._order[-1])[0]))
        ex.to_html(tmp_path / "grown.html")
        with serve(tmp_path) as url:
            page = _open(chromium, f"{url}/grown.html", kernel=False)
            w = page.locator(".peap-widget").first
            assert w.get_attribute("data-state") == "ready"
            assert page.evaluate(SEL) == ex.selection
            assert page.evaluate(DRAWN) == np.flatnonzero(ex.circuit.in_rows).tolist()
            assert not page.errors, page.errors
    finally:
        ex.selection, ex.history = before, []
