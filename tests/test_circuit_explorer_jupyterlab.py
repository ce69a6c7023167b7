"""The explorer's "more" messages through JupyterLab and anywidget for real: a graph larger than
what the page holds (GPT-2 small's shape, random scores, 2,000 units shipped), the size set
past it in the page, the rows fetched from the kernel in binary chunks, and the kernel's
circuit compared with what the page draws."""

import json
import time

from browser import screenshot
from test_jupyterlab import lab, open_and_run_first_cell  # noqa: F401  (lab: the server fixture)

SETUP = """\
import json
import numpy as np
import peap_widget as pw
from peap_widget.graph import Graph, GraphConfig
g = Graph(GraphConfig(n_layers=12, n_heads=12, d_model=768))
rng = np.random.default_rng(0)
spans = [f"S{i}" for i in range(7)]
resid = rng.standard_normal((7, g.n_forward, g.n_backward)) * rng.random((1, g.n_forward, 1)) ** 3
cross = rng.standard_normal((3, 12, 12, 7, 7)) * 0.3
res = pw.AttributionResult.from_arrays(g, spans, resid, cross, {"method": "peap"}, np.ones(3),
                                       np.zeros(3), pw.Schema(spans).to_dict())
explorer = pw.CircuitExplorer(res, n_edges=100, max_units=2000, chunk_units=1500)
json.dump(explorer.shipped, open("shipped.json", "w"))
explorer"""

CHECK = """\
json.dump({"selection": explorer.selection,
           "rows": explorer.circuit.in_rows.nonzero()[0].tolist()}, open("kernel_circuit.json", "w"))"""

DRAWN = """() => {
    const el = document.querySelector(".pe-root").parentElement;
    const { data, rows } = el.explorer;
    const r = rows(), out = [];
    for (let i = 0; i < data.nRows; i++) if (r[i]) out.push(data.rowId[i]);
    return { rows: out.sort((a, b) => a - b), state: el.dataset.state, held: data.nUnits };
}"""


def _wait_file(path, timeout=60):
    deadline = time.time() + timeout
    while not path.exists() and time.time() < deadline:
        time.sleep(0.3)
    assert path.exists(), f"the kernel did not write {path.name}"
    time.sleep(0.3)
    return json.loads(path.read_text())


def test_rows_past_the_shipped_part_come_from_the_kernel(lab, chromium):  # noqa: F811
    import nbformat

    url, token, root = lab
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(SETUP), nbformat.v4.new_code_cell(CHECK)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "fetch.ipynb")
    page, errors = open_and_run_first_cell(chromium, url, token, "fetch.ipynb")
    shipped = _wait_file(root / "shipped.json")
    assert page.evaluate(DRAWN)["state"] == "ready"

    # past what the page holds: it asks the kernel, which answers in binary chunks
    n = shipped["order"] + 2500
    page.fill("[data-role=size-input]", str(n))
    page.press("[data-role=size-input]", "Enter")
    page.wait_for_function(
        "document.querySelector('.pe-root').parentElement.dataset.state === 'ready'", timeout=60000)
    drawn = page.evaluate(DRAWN)
    assert drawn["held"] > shipped["units"]
    widget = page.locator(".pe-root").first
    widget.scroll_into_view_if_needed()
    screenshot(widget, "jupyterlab_circuit_explorer_fetched")

    page.evaluate("""() => {
        window.jupyterapp.shell.currentWidget.content.activeCellIndex = 1;
        return window.jupyterapp.commands.execute("notebook:run-cell");
    }""")
    kernel = _wait_file(root / "kernel_circuit.json")
    assert kernel["selection"]["n_edges"] == n
    assert drawn["rows"] == kernel["rows"] and len(drawn["rows"]) > 0
    assert not errors, errors
