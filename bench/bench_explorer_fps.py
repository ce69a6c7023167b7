"""Frames per second while panning the CircuitExplorer with 5,000 drawn edges (canvas mode), in
Chromium (Debian's, through Playwright), counted with requestAnimationFrame.

GPT-2 small's graph (12 layers x 12 heads, 7 spans; random scores), the greedy size whose circuit
draws about 5,000 edges, written with `to_html` and opened from loopback. Each frame of the
measurement pans the view by 4 px (as a drag does) at the fitted zoom and at 2.8x; the page
counts the frames it managed in 3 s, and how many canvas repaints happened.

Usage: python bench/bench_explorer_fps.py      writes bench/out/explorer_fps.json. Not a test.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

PAN = """async ([seconds, zoom]) => {
    const ex = window.peapWidgets[0].el.explorer, el = window.peapWidgets[0].el;
    ex.view.fit();
    if (zoom !== 1) ex.view.zoomAt(zoom);
    await new Promise((r) => requestAnimationFrame(r));
    const paints0 = Number(el.dataset.paints ?? 0);
    let frames = 0, dir = 1, worst = 0, last = performance.now();
    const t0 = performance.now();
    await new Promise((done) => {
        function step(now) {
            frames++; worst = Math.max(worst, now - last); last = now;
            if (frames % 60 === 0) dir = -dir;
            ex.view.panBy(4 * dir, 1 * dir);
            if (now - t0 < seconds * 1000) requestAnimationFrame(step); else done();
        }
        requestAnimationFrame(step);
    });
    const secs = (performance.now() - t0) / 1000;
    return { fps: frames / secs, repaints_per_s: (Number(el.dataset.paints) - paints0) / secs,
             worst_frame_ms: worst, zoom: ex.view.k };
}"""


def main():
    import numpy as np

    from browser import launch, open_standalone, serve
    from test_circuit_explorer_browser import _big_result
    from test_circuit_explorer_views import explorer_drawing

    ex, drawn = explorer_drawing(_big_result(), 5000)
    out = {"drawn_edges": drawn}
    with tempfile.TemporaryDirectory() as d, launch() as browser, serve(d) as url:
        ex.to_html(Path(d) / "big.html")
        page = open_standalone(browser, f"{url}/big.html")
        assert page.locator(".peap-widget").first.get_attribute("data-mode") == "canvas"
        for zoom in (1, 2.8):
            out[f"pan_zoom_{zoom}"] = r = page.evaluate(PAN, [3, zoom])
            print(f"zoom {r['zoom']:.2f}: {r['fps']:.1f} frames/s, {r['repaints_per_s']:.1f} repaints/s, "
                  f"worst frame {r['worst_frame_ms']:.0f} ms")
    out["note"] = "headless Chromium, software rendering (--disable-gpu); one core per page"
    (ROOT / "bench" / "out").mkdir(exist_ok=True)
    (ROOT / "bench" / "out" / "explorer_fps.json").write_text(json.dumps(out, indent=1))
    return np.nan


if __name__ == "__main__":
    main()
