"""The real thing: JupyterLab started on loopback, a notebook opened and run in Chromium, the
CircuitExplorer rendered by anywidget's own front end, an edge pruned in the page, and the
kernel's circuit checked afterwards (the kernel writes it to a file)."""

import json
import time

import nbformat
import pytest
from browser import jupyterlab, open_notebook, require_chromium, screenshot

SETUP = """\
import json
import peap_widget as pw
model = pw.models.load("toy-ioi")
ds = pw.tasks.ioi(n=30, seed=1).dataset(model)
res = pw.attribute(model, ds, progress=False)
explorer = pw.CircuitExplorer(res, model, ds, n_edges=40, curve_sizes=[10, 40, 1.0])
explorer"""

CHECK = """\
circ = explorer.circuit
json.dump({"selection": explorer.selection, "rows": circ.in_rows.nonzero()[0].tolist(),
           "n_edges": circ.n_edges, "evaluation": {k: v for k, v in explorer.evaluation.items()
                                                   if k != "selection"},
           "fresh": pw.evaluate(model, ds, circ).faithfulness},
          open("kernel_state.json", "w"))"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    require_chromium()
    root = tmp_path_factory.mktemp("lab")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(SETUP), nbformat.v4.new_code_cell(CHECK)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "explore.ipynb")
    try:
        with jupyterlab(root) as (url, token):
            yield url, token, root
    except RuntimeError as err:      # it did not start: say why, with its log
        pytest.fail(str(err))


def open_and_run_first_cell(chromium, url: str, token: str, notebook: str):
    """Open ``notebook`` in JupyterLab, wait for its kernel, run the first cell (a widget) and
    wait for the widget: (page, page errors)."""
    errors = []
    page = open_notebook(chromium, url, token, notebook, {"width": 1500, "height": 1100}, errors)
    page.click(".jp-Cell:nth-child(1) .jp-InputArea-editor")
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-cell-and-select-next')")
    page.wait_for_selector(".pe-root", timeout=120000)
    return page, errors


def test_prune_in_jupyterlab_and_read_the_kernel(lab, chromium):
    url, token, root = lab
    page, errors = open_and_run_first_cell(chromium, url, token, "explore.ipynb")
    page.wait_for_function(
        "document.querySelector('[data-role=status-text]')?.textContent.startsWith('evaluated')",
        timeout=60000)
    widget = page.locator(".pe-root").first
    widget.scroll_into_view_if_needed()
    screenshot(widget, "jupyterlab_circuit_explorer")

    # prune one edge by clicking it in the page; the kernel re-evaluates it
    row = int(page.locator("path[data-row]").first.get_attribute("data-row"))
    x, y = page.evaluate("""(row) => {
        const p = document.querySelector(`path[data-row="${row}"]`);
        const pt = p.getPointAtLength(p.getTotalLength() * 0.5), m = p.getScreenCTM();
        return [pt.x * m.a + m.e, pt.y * m.d + m.f];
    }""", row)
    page.mouse.click(x, y)
    page.wait_for_function(
        "document.querySelector('[data-role=evaluation]')?.dataset.fresh === 'true' && "
        "document.querySelector('[data-role=status-text]').textContent.startsWith('evaluated')",
        timeout=60000)
    assert page.locator(f"path[data-ghost='{row}']").count() == 1
    shown = float(page.inner_text("[data-field=faithfulness]"))
    screenshot(widget, "jupyterlab_circuit_explorer_pruned")

    # run the second cell: the kernel writes what it sees
    page.evaluate("""() => {
        window.jupyterapp.shell.currentWidget.content.activeCellIndex = 1;
        return window.jupyterapp.commands.execute("notebook:run-cell");
    }""")
    state_file = root / "kernel_state.json"
    deadline = time.time() + 60
    while not state_file.exists() and time.time() < deadline:
        time.sleep(0.3)
    assert state_file.exists(), "the kernel did not write its state"
    time.sleep(0.3)
    state = json.loads(state_file.read_text())
    assert len(state["selection"]["removed"]) == 1        # the click reached the kernel
    assert row not in state["rows"]
    assert state["evaluation"]["faithfulness"] == pytest.approx(state["fresh"], abs=1e-9)
    assert shown == pytest.approx(state["fresh"], abs=5e-4)  # the page shows the kernel's number
    assert not errors, errors
