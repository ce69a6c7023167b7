"""CircuitExplorer in real Chromium, issue 12: the circuit in view (fit, zoom, pan, minimap,
collapse), canvas mode with span shading under the edges, ghosts that restore, node highlight,
the size control's explanations, keyboard access, and a colour-blind check of the edge colours.
Screenshots of each state go to test-artifacts/."""

import json

import numpy as np
import pytest
from browser import ARTIFACTS, open_standalone, screenshot, serve
from test_circuit_explorer_browser import SEL, _big_result, toy_page  # noqa: F401 (fixture)

import peap_widget as pw
from peap_widget.widgets.circuit_explorer import selection_rows

EX = "window.peapWidgets[0].el.explorer"


def _box(page):
    return page.locator("[data-role=diagram-box]").bounding_box()


def _all_inside(page):
    """Every node of the layout is inside the diagram box (page coordinates)."""
    return page.evaluate(f"""() => {{
        const ex = {EX}, pos = ex.pos(), r = document.querySelector("[data-role=diagram-box]").getBoundingClientRect();
        let out = 0;
        for (let n = 0; n < pos.x.length; n++) {{
            const [x, y] = ex.pagePoint(pos.x[n], pos.y[n]);
            if (x < r.left - 0.5 || x > r.right + 0.5 || y < r.top - 0.5 || y > r.bottom + 0.5) out++;
        }}
        return out;
    }}""") == 0


def explorer_drawing(res, n_drawn: int):
    """(explorer of ``res`` set to the smallest size that draws at least ``n_drawn`` edges,
    the edges it draws), found by bisection over the size."""
    ex = pw.CircuitExplorer(res)
    drawn_at = lambda n: int(selection_rows(res.space, True, ex._order, res.scores, {"n_edges": n}).sum())  # noqa: E731
    lo, hi = 0, len(ex._order)
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if drawn_at(mid) < n_drawn else (lo, mid)
    ex.set_size(lo)
    return ex, drawn_at(lo)


@pytest.fixture(scope="module")
def big_page(tmp_path_factory):
    """GPT-2 small's graph, 7 spans, a circuit drawing about 5,000 edges (canvas mode)."""
    res = _big_result()
    ex, _ = explorer_drawing(res, 5000)
    d = tmp_path_factory.mktemp("big")
    ex.to_html(d / "big.html")
    return ex, res, d


def test_the_whole_circuit_fits_and_zooms_pans_with_an_overview(big_page, chromium):
    ex, res, d = big_page
    with serve(d) as url:
        page = open_standalone(chromium, f"{url}/big.html")
        w = page.locator(".peap-widget").first
        assert w.get_attribute("data-mode") == "canvas"
        assert _all_inside(page), "fit on load: every span and layer in the box"
        assert page.locator("[data-role=minimap]").is_hidden()
        screenshot(page, "circuit_explorer_fit_gpt2_small")
        k0 = page.evaluate(f"{EX}.view.k")
        box = _box(page)

        # buttons zoom in at the centre; the overview appears
        page.click("[data-role=zoom-in]")
        page.click("[data-role=zoom-in]")
        assert page.evaluate(f"{EX}.view.k") == pytest.approx(k0 * 1.96, rel=1e-3)
        assert page.locator("[data-role=minimap]").is_visible()
        # wheel zooms at the pointer (the point under it stays put)
        cx, cy = box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.4
        before = page.evaluate(f"([x, y]) => {EX}.view.toDiagram(x - {box['x']}, y - {box['y']})", [cx, cy])
        page.mouse.move(cx, cy)
        page.mouse.wheel(0, -200)
        page.wait_for_timeout(50)
        k1 = page.evaluate(f"{EX}.view.k")
        assert k1 > k0 * 1.96
        after = page.evaluate(f"([x, y]) => {EX}.view.toDiagram(x - {box['x']}, y - {box['y']})", [cx, cy])
        assert after == pytest.approx(before, abs=0.5)
        # drag pans, and is not a click (nothing pruned)
        sel = page.evaluate(SEL)
        x0 = page.evaluate(f"{EX}.view.x")
        page.mouse.move(cx, cy)
        page.mouse.down()
        for i in range(1, 6):
            page.mouse.move(cx + 30 * i, cy + 10 * i)
        page.mouse.up()
        assert page.evaluate(f"{EX}.view.x") == pytest.approx(x0 + 150, abs=2)
        assert page.evaluate(SEL) == sel
        screenshot(page, "circuit_explorer_zoomed_minimap")
        # keys: 0 fits, + zooms, arrows pan
        page.focus("[data-role=diagram-box]")
        page.keyboard.press("0")
        assert page.evaluate(f"{EX}.view.k") == pytest.approx(k0)
        assert _all_inside(page)
        page.keyboard.press("+")
        assert page.evaluate(f"{EX}.view.k") == pytest.approx(k0 * 1.4, rel=1e-3)
        x1 = page.evaluate(f"{EX}.view.x")
        page.keyboard.press("ArrowLeft")
        assert page.evaluate(f"{EX}.view.x") == pytest.approx(x1 + 60)
        page.keyboard.press("-")
        page.click("[data-role=zoom-fit]")
        assert _all_inside(page)
        assert not page.errors, page.errors


def test_canvas_mode_draws_span_shading_under_the_edges(big_page, chromium):
    """Issue 12, 2: above 1,500 edges the shaded span columns covered the edges."""
    from PIL import Image

    ex, res, d = big_page
    with serve(d) as url:
        page = open_standalone(chromium, f"{url}/big.html")
        assert page.locator(".peap-widget").first.get_attribute("data-mode") == "canvas"
        assert page.locator("svg [data-role=span-shade]").count() == 0   # shading: on the canvas
        # the strongest residual edges in shaded (odd) spans: their colour shows on the page
        points = page.evaluate(f"""() => {{
            const ex = {EX}, d = ex.data, r = ex.rows(), out = [];
            for (let i = 0; i < d.nRows; i++)
                if (r[i] && d.kind[i] === 0 && d.srcSpan[i] % 2 === 1) out.push(i);
            out.sort((a, b) => Math.abs(d.score[b]) - Math.abs(d.score[a]));
            return out.slice(0, 12).map((i) => ex.pagePoint(...ex.edgeMid(i)));
        }}""")
        path = screenshot(page, "circuit_explorer_canvas_spans_under_edges")
        img = np.asarray(Image.open(path).convert("RGB")).astype(int)
        shade = np.array([241, 245, 249])
        seen = 0
        for x, y in points:
            patch = img[int(y) - 1:int(y) + 2, int(x) - 1:int(x) + 2].reshape(-1, 3)
            seen += int(np.abs(patch - shade).sum(1).max() > 60)
        assert seen >= 10, f"only {seen} of {len(points)} strong edges visible in shaded spans"
        assert not page.errors, page.errors


def test_clicking_a_ghost_restores_it(toy_page, chromium):  # noqa: F811
    """Issue 12, 4: a ghost under the pointer wins the hit test (before: a drawn neighbour did,
    and the click pruned it)."""
    ex, res, d = toy_page
    with serve(d) as url:
        page = open_standalone(chromium, f"{url}/explorer.html")
        page.evaluate(f"{EX}.edit({{ ...window.peapWidgets[0].model.get('selection'), n_edges: 400 }})")
        rows = page.evaluate("""() => [...document.querySelectorAll("path[data-row]")]
            .map((p) => Number(p.dataset.local))""")
        rng = np.random.default_rng(3)
        restored = 0
        for local in rng.choice(rows, 10, replace=False).tolist():
            row = page.evaluate(f"(r) => {EX}.data.rowId[r]", local)
            unit = int(ex.circuit.units.of_row[row])
            # prune it (as a click on it would), then click its ghost where it lies
            page.evaluate(f"""(u) => {EX}.edit({{ ...window.peapWidgets[0].model.get('selection'),
                removed: [u] }})""", unit)
            assert page.locator(f"path[data-ghost='{row}']").count() == 1
            x, y = page.evaluate(f"(r) => {EX}.pagePoint(...{EX}.edgeMid(r))", local)
            if restored == 0:
                screenshot(page, "circuit_explorer_ghost_before_restore")
            page.mouse.click(x, y)
            sel = page.evaluate(SEL)
            restored += int(sel["removed"] == [])
            if sel["removed"]:
                page.evaluate(f"{EX}.edit({{ ...window.peapWidgets[0].model.get('selection'), removed: [] }})")
            else:
                assert page.locator(f"path[data-row='{row}']").count() == 1
        assert restored == 10
        screenshot(page, "circuit_explorer_ghost_restored")
        assert not page.errors, page.errors


def test_hover_highlights_a_nodes_own_edges_and_empty_parts_collapse(toy_page, chromium):  # noqa: F811
    ex, res, d = toy_page
    with serve(d) as url:
        page = open_standalone(chromium, f"{url}/explorer.html")
        head = page.locator("circle.pe-node.on").nth(2)
        name = head.get_attribute("data-name")
        b = head.bounding_box()
        page.mouse.move(b["x"] + b["width"] / 2, b["y"] + b["height"] / 2)
        page.wait_for_function(f"document.querySelector('[data-role=diagram-box]').dataset.highlight === {json.dumps(name)}")
        own = page.evaluate(f"""(name) => {{
            const ex = {EX}, d = ex.data, n = d.nodeNames.indexOf(name);
            return [...document.querySelectorAll("path[data-row]")].map((p) => [p.classList.contains("hl"),
                Number(p.getAttribute("stroke-opacity"))]);
        }}""", name)
        hl = [o for h, o in own if h]
        dim = [o for h, o in own if not h]
        assert hl and dim and min(hl) > 0.9 and max(dim) < 0.1
        # the card stays in the box
        tip = page.locator("[data-role=tooltip]").bounding_box()
        box = _box(page)
        assert tip["x"] >= box["x"] and tip["x"] + tip["width"] <= box["x"] + box["width"] + 1
        screenshot(page, "circuit_explorer_highlight_node")
        # a hover card near the right edge flips left and keeps its width
        right = page.evaluate(f"""() => {{
            const ex = {EX}, pos = ex.pos(), d = ex.data; let best = -1;
            for (let n = 0; n < d.nNodes; n++) if (d.nodeType[n] === 1 && (best < 0 || pos.x[n] > pos.x[best])) best = n;
            return ex.pagePoint(pos.x[best], pos.y[best]);
        }}""")
        page.mouse.move(*right)
        page.wait_for_timeout(80)
        tip = page.locator("[data-role=tooltip]").bounding_box()
        assert tip["width"] >= 170 and tip["x"] + tip["width"] <= box["x"] + box["width"] + 1
        screenshot(page, "circuit_explorer_hover_card_right_edge")
        page.mouse.move(box["x"] + 3, box["y"] + box["height"] - 3)

        # collapse: spans and layers with no circuit node go narrow; the circuit is unchanged
        drawn = page.locator(".peap-widget").first.get_attribute("data-drawn")
        width = page.evaluate(f"{EX}.pos().width")
        page.check("[data-role=collapse]")
        assert page.evaluate(f"{EX}.pos().width") < width
        assert page.locator(".peap-widget").first.get_attribute("data-drawn") == drawn
        assert _all_inside(page)
        screenshot(page, "circuit_explorer_collapsed")
        assert not page.errors, page.errors


def test_size_control_log_slider_explained_counts_threshold_keeps_size(big_page, chromium):
    ex, res, d = big_page
    with serve(d) as url:
        page = open_standalone(chromium, f"{url}/big.html")
        n_order = ex.info["n_order"]
        # log scale: the slider's first half covers small circuits
        page.evaluate("""() => { const s = document.querySelector("[data-role=size-slider]");
            s.value = String(s.max / 2); s.dispatchEvent(new Event("input", { bubbles: true })); }""")
        assert page.evaluate(SEL)["n_edges"] < n_order ** 0.5 * 1.1
        # a count asked that differs from the circuit's: said, and explained
        page.fill("[data-role=size-input]", "479")
        page.press("[data-role=size-input]", "Enter")
        asked = page.evaluate(SEL)["n_edges"]
        assert asked == 479
        shown = selection_rows(res.space, True, ex._order, res.scores, page.evaluate(SEL))
        circ = res.circuit_from(shown)
        label = page.inner_text("[data-role=size-label]")
        assert label.startswith(f"{circ.n_edges} edges")
        if circ.n_edges != 479:
            page.hover("[data-role=size-why]")
            text = page.inner_text("[data-role=size-why] .pe-why-text")
            assert "479" in text and str(circ.n_edges) in text and "q, k and v" in text
            screenshot(page, "circuit_explorer_size_tooltip")
        # threshold mode at 4,000 edges keeps the size (before: the threshold went to 0)
        page.fill("[data-role=size-input]", "4000")
        page.press("[data-role=size-input]", "Enter")
        page.select_option("[data-role=mode]", "threshold")
        sel = page.evaluate(SEL)
        assert sel["mode"] == "threshold" and sel["threshold"] > 0
        assert int((ex._ship.keys >= sel["threshold"]).sum()) == 4000
        assert not page.errors, page.errors


def test_nodes_and_edges_by_keyboard(toy_page, chromium):  # noqa: F811
    ex, res, d = toy_page
    with serve(d) as url:
        page = open_standalone(chromium, f"{url}/explorer.html")
        page.focus("[data-role=diagram-box]")
        page.keyboard.press("Tab")                      # the roving node
        active = lambda: page.evaluate("""() => { const a = document.activeElement;
            return { node: a?.dataset?.node ?? null, label: a?.getAttribute("aria-label"), role: a?.dataset?.role ?? null,
                     edge: a?.dataset?.edge ?? null }; }""")
        a = active()
        assert a["node"] is not None and "in the circuit" in a["label"]
        first = a["node"]
        page.keyboard.press("ArrowUp")
        a = active()
        assert a["node"] not in (None, first)
        name = page.evaluate("(n) => window.peapWidgets[0].el.explorer.data.nodeNames[n]", int(a["node"]))
        assert a["label"].startswith(name)
        screenshot(page, "circuit_explorer_keyboard_focus")
        page.keyboard.press("Enter")                    # prune the node
        assert int(a["node"]) in page.evaluate(SEL)["removed_nodes"]
        assert active()["node"] == a["node"]            # focus stays on it
        page.keyboard.press("Enter")                    # restore
        assert page.evaluate(SEL)["removed_nodes"] == []
        page.keyboard.press("e")                        # its edges
        e = active()
        assert e["role"] == "focus-edge" and e["label"].startswith("edge ")
        page.keyboard.press("ArrowRight")
        e2 = active()
        page.keyboard.press("Enter")                    # prune that edge's unit
        unit = int(ex.circuit.units.of_row[int(e2["edge"])])
        assert unit in page.evaluate(SEL)["removed"]
        screenshot(page, "circuit_explorer_keyboard_edge")
        page.keyboard.press("Escape")
        assert active()["node"] == a["node"]
        assert not page.errors, page.errors


# --- colour-blind check -----------------------------------------------------------------------

# Machado, Oliveira & Fernandes (2009), severity 1.0, on linear RGB
CVD = {"deuteranopia": np.array([[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413],
                                 [-0.011820, 0.042940, 0.968881]]),
       "protanopia": np.array([[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216],
                               [-0.003882, -0.048116, 1.051998]])}


def _simulate(rgb, m):
    c = rgb / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    out = np.clip(lin @ m.T, 0, 1)
    srgb = np.where(out <= 0.0031308, 12.92 * out, 1.055 * out ** (1 / 2.4) - 0.055)
    return (srgb * 255).round()


def _lab(rgb):
    c = np.asarray(rgb, float) / 255
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = lin @ np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]).T
    xyz = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def test_edge_colours_stay_apart_under_colour_blindness(toy_page, chromium):  # noqa: F811
    from PIL import Image

    ex, res, d = toy_page
    with serve(d) as url:
        page = open_standalone(chromium, f"{url}/explorer.html")
        colours = page.evaluate("""() => [...document.querySelectorAll("[data-role=legend] i")]
            .slice(0, 2).map((i) => getComputedStyle(i).borderTopColor)""")
        legend = page.inner_text("[data-role=legend]")
        # the sign the scores have: a score is m(edge ablated) - m(clean)
        assert "positive score: ablating the edge raises the metric" in legend
        assert "negative score: ablating it lowers the metric (the edge helps the task)" in legend
        path = screenshot(page.locator(".pe-main"), "circuit_explorer_colours")
    pos, neg = (np.array([int(v) for v in c[c.index("(") + 1:-1].split(",")[:3]]) for c in colours)
    img = np.asarray(Image.open(path).convert("RGB")).astype(float)
    report = {}
    for name, m in CVD.items():
        sim = _simulate(img, m).astype(np.uint8)
        Image.fromarray(sim).save(ARTIFACTS / f"circuit_explorer_colours_{name}.png")
        p, n = _simulate(pos[None].astype(float), m)[0], _simulate(neg[None].astype(float), m)[0]
        delta = float(np.linalg.norm(_lab(p) - _lab(n)))
        report[name] = {"positive": p.tolist(), "negative": n.tolist(), "delta_e": round(delta, 1)}
        assert delta > 40, (name, delta)
        # both colours are in the simulated picture of the diagram
        for c in (p, n):
            assert (np.abs(sim.astype(float) - c).sum(-1) < 40).sum() > 50
    report["normal"] = {"delta_e": round(float(np.linalg.norm(_lab(pos) - _lab(neg))), 1)}
    (ARTIFACTS / "explorer_colour_blind.json").write_text(json.dumps(report, indent=1))
