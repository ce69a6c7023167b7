"""Make the widget screenshots of docs/widgets.md (not run by the test suite).

    .venv/bin/python docs/make_screenshots.py          # writes docs/img/*.png

SchemaEditor, CircuitExplorer and FaithfulnessCurves are written as offline pages with
``to_html`` and photographed in Debian's Chromium (``/usr/bin/chromium``, driven by Playwright;
no browser is ever downloaded). CircuitLab is made of ipywidgets tabs, so it is photographed
inside a real JupyterLab started on loopback. Everything runs on the shipped toy-ioi model, on
the CPU, in about two minutes. PNGs are reduced to a 256-colour palette to stay small.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMG = ROOT / "docs" / "img"
sys.path.insert(0, str(ROOT / "tests"))

from browser import jupyterlab, launch, open_notebook, open_standalone, serve  # noqa: E402  (tests/browser.py)

import nbformat  # noqa: E402
import peap_widget as pw  # noqa: E402
from PIL import Image  # noqa: E402


def shrink(path: Path) -> None:
    """Palette PNG (256 colours): the widgets are flat colours, so this is visually lossless."""
    img = Image.open(path).convert("RGB")
    img.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    print(f"{path.relative_to(ROOT)}: {img.size[0]}x{img.size[1]}, {path.stat().st_size // 1024} kB")


def standalone(browser, base: str, page_name: str, selector: str, out: str,
               viewport=(1100, 760), before=None) -> None:
    page = open_standalone(browser, f"{base}/{page_name}")
    page.set_viewport_size({"width": viewport[0], "height": viewport[1]})
    page.wait_for_timeout(500)
    if before:
        before(page)
        page.wait_for_timeout(300)
    target = page.locator(selector).first
    path = IMG / out
    target.screenshot(path=str(path))
    assert not page.errors, page.errors
    page.close()
    shrink(path)


def standalone_pages(tmp: Path) -> None:
    model = pw.models.load("toy-ioi")
    ds = pw.tasks.get("ioi", n=40, seed=0).dataset(model)
    res = pw.attribute(model, ds, method="peap", progress=False)
    eap = pw.attribute(model, ds, method="eap", progress=False)
    pw.SchemaEditor(ds).to_html(tmp / "schema.html")
    explorer = pw.CircuitExplorer(res, model, ds, n_edges=60)
    explorer.to_html(tmp / "explorer.html")
    curve = pw.faithfulness_curve(model, ds, {"PEAP": res, "EAP": eap}, progress=False)
    curves = pw.FaithfulnessCurves(curve)
    curves.set_current(explorer.circuit, pw.evaluate(model, ds, explorer.circuit))
    curves.to_html(tmp / "curves.html")

    with launch() as browser, serve(tmp) as base:
        standalone(browser, base, "schema.html", "body > *:first-child", "schema_editor.png",
                   viewport=(1100, 600))
        standalone(browser, base, "explorer.html", ".pe-root", "circuit_explorer.png",
                   viewport=(1200, 900))
        standalone(browser, base, "curves.html", "body > *:first-child", "faithfulness_curves.png",
                   viewport=(1000, 640))


LAB_CELL = """\
import peap_widget as pw
model = pw.models.load("toy-ioi")
ds = pw.tasks.get("ioi", n=40, seed=0).dataset(model)
lab = pw.CircuitLab(model, ds)
lab.run()
lab.tabs.selected_index = 2
lab"""


def circuit_lab(tmp: Path) -> None:
    """CircuitLab in a real JupyterLab (its tabs are ipywidgets, which need a kernel)."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(LAB_CELL)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp / "lab.ipynb")
    with jupyterlab(tmp) as (url, token), launch() as browser:
        page = open_notebook(browser, url, token, "lab.ipynb", {"width": 1300, "height": 1500})
        # a clean view: no file browser, no side bars
        page.evaluate("window.jupyterapp.commands.execute('application:toggle-left-area')")
        page.click(".jp-Cell:nth-child(1) .jp-InputArea-editor")
        page.evaluate("window.jupyterapp.commands.execute('notebook:run-cell')")
        page.wait_for_selector(".jp-OutputArea-output .pe-root", timeout=240000)
        page.wait_for_function(
            "document.querySelector('[data-role=status-text]')?.textContent.startsWith('evaluated')",
            timeout=120000)
        page.wait_for_timeout(1000)
        out = page.locator(".jp-OutputArea-output").last
        out.scroll_into_view_if_needed()
        path = IMG / "circuit_lab.png"
        out.screenshot(path=str(path))
        shrink(path)


def main() -> None:
    IMG.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        standalone_pages(Path(tmp))
    with tempfile.TemporaryDirectory() as tmp:
        circuit_lab(Path(tmp))


if __name__ == "__main__":
    main()
