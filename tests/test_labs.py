"""The course labs in notebooks/: executed top to bottom in a fresh kernel (nbclient).

* every solution notebook runs without an error and every check of its lab passes;
* every exercise notebook runs without an error, its checks all saying "Not answered yet";
* the committed notebooks are exactly what notebooks/build_labs.py makes from notebooks/src/;
* the HTML export (python -m peap_widget.lab.export) is offline and its widgets render.

Each lab's run time is printed and written to test-artifacts/lab_times.json (a measurement, not
an assertion: a loaded machine is not a failing lab).
"""

import json
import os
import re
import sys
import time
from pathlib import Path

import pytest

import peap_widget as pw
import peap_widget.lab
from peap_widget.lab.execute import cell_text, execute

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
sys.path.insert(0, str(NOTEBOOKS))
import build_labs

LABS = [p.stem for p in build_labs.sources()]
ARTIFACTS = Path(os.environ.get("PEAP_TEST_ARTIFACTS", ROOT / "test-artifacts"))
TIMES = ARTIFACTS / "lab_times.json"
RECORDS = "import json, peap_widget.lab as _lab; print('PEAP_LAB_RECORDS=' + json.dumps(_lab.records()))"

#: what a lab needs of each widget it lists in its metadata (notebooks/src: "# lab: requires_widgets=")
WIDGET_API = {
    "SchemaEditor": ("set_spans", "validation", "dataset", "to_html"),
    "CircuitExplorer": ("remove_node", "remove_edge", "set_size", "undo", "circuit", "to_html"),
    "FaithfulnessCurves": ("set_current", "to_html"),
    "CircuitLab": ("run", "to_html"),
}


def test_lab_sources_exist():
    assert [name.split("_")[0] for name in LABS] == [f"lab{i}" for i in range(1, 7)]


def notebook_meta(path: Path) -> dict:
    return json.loads(path.read_text())["metadata"]["peap_lab"]


def missing_widgets(path: Path) -> list[str]:
    """Widgets the lab needs that do not offer their API yet (the lab is skipped until they do)."""
    out = []
    for name in notebook_meta(path)["requires_widgets"]:
        cls = getattr(pw.widgets, name, None)
        lacking = [a for a in WIDGET_API.get(name, ()) if cls is None or not hasattr(cls, a)]
        if cls is None or lacking:
            out.append(f"{name} (lacks {', '.join(lacking)})")
    return out


def run(path: Path, tmp_path: Path):
    """Execute a lab notebook; (notebook, seconds, check records)."""
    if missing := missing_widgets(path):
        pytest.skip(f"{path.name} needs widgets that are not there yet: {'; '.join(missing)}")
    nb, seconds = execute(path, cwd=tmp_path, timeout=600, extra_cells=[RECORDS])
    line = next(ln for ln in cell_text(nb.cells[-1]).splitlines() if ln.startswith("PEAP_LAB_RECORDS="))
    return nb, seconds, json.loads(line.split("=", 1)[1])


def record_time(name: str, version: str, seconds: float) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    times = json.loads(TIMES.read_text()) if TIMES.exists() else {}
    times.setdefault(name, {})[version] = round(seconds, 1)
    times[name]["measured"] = time.strftime("%Y-%m-%d %H:%M:%S")
    TIMES.write_text(json.dumps(times, indent=1, sort_keys=True) + "\n")
    print(f"\n{name} ({version}): {seconds:.1f} s")


def check_outputs(nb) -> str:
    return "\n".join(cell_text(c) for c in nb.cells if c.cell_type == "code")


@pytest.mark.parametrize("name", LABS)
def test_solution_notebook_passes_every_check(name, tmp_path):
    nb, seconds, records = run(NOTEBOOKS / "solutions" / f"{name}.ipynb", tmp_path)
    record_time(name, "solution", seconds)
    lab = name.split("_")[0]
    by_name = {r["name"]: r for r in records}
    assert set(by_name) == set(pw.lab.checks(lab)), "the notebook must run every check of its lab"
    failed = {n: r["message"] for n, r in by_name.items() if not r["passed"]}
    assert not failed, failed
    text = check_outputs(nb)
    assert "Not yet:" not in text and "Could not check:" not in text and "Not answered yet:" not in text
    assert re.search(r"(\d+) of \1 checks passed - all done!", cell_text(nb.cells[-2]))


@pytest.mark.parametrize("name", LABS)
def test_exercise_notebook_runs_with_blanks(name, tmp_path):
    nb, seconds, records = run(NOTEBOOKS / f"{name}.ipynb", tmp_path)
    record_time(name, "exercise", seconds)
    lab = name.split("_")[0]
    assert {r["name"] for r in records} == set(pw.lab.checks(lab))
    not_blank = {r["name"]: r["message"] for r in records if r["status"] != "blank"}
    assert not not_blank, "with every blank left, each check says 'Not answered yet'"
    text = check_outputs(nb)
    assert "Could not check:" not in text and "Traceback" not in text
    assert text.count("Not answered yet:") >= len(records)


def test_notebooks_match_their_sources():
    stale = build_labs.stale()
    assert not stale, f"run python notebooks/build_labs.py (out of date: {[str(p) for p in stale]})"


def test_exercise_and_solution_versions():
    for name in LABS:
        ex = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())
        sol = json.loads((NOTEBOOKS / "solutions" / f"{name}.ipynb").read_text())
        ex_code = "\n".join("".join(c["source"]) for c in ex["cells"] if c["cell_type"] == "code")
        sol_code = "\n".join("".join(c["source"]) for c in sol["cells"] if c["cell_type"] == "code")
        for text in (ex_code, sol_code):
            assert "# SOLUTION" not in text and "# EXERCISE" not in text
        assert "YOUR CODE" in ex_code and "YOUR CODE" not in sol_code
        assert ex["metadata"]["peap_lab"]["version"] == "exercise"
        assert sol["metadata"]["peap_lab"]["version"] == "solution"
        assert all(not c.get("outputs") for c in ex["cells"] + sol["cells"] if c["cell_type"] == "code")
        first = "".join(ex["cells"][0]["source"])
        assert first.startswith("# Lab ") and "**Goals.**" in first
        last_md = "".join([c for c in ex["cells"] if c["cell_type"] == "markdown"][-1]["source"])
        assert "## Summary" in last_md


def test_builder_markers():
    lines = ["x = 1  # SOLUTION", "    # EXERCISE: x = ...  # YOUR CODE", "# BEGIN SOLUTION",
             "y = 2", "# END SOLUTION", "z = 3"]
    assert build_labs.render_code(lines, "solution") == ["x = 1", "y = 2", "z = 3"]
    assert build_labs.render_code(lines, "exercise") == ["    x = ...  # YOUR CODE", "z = 3"]
    with pytest.raises(ValueError):
        build_labs.render_code(["# BEGIN SOLUTION", "a"], "solution")
    assert build_labs.render_markdown(["# # Title", "#", "# text"]) == ["# Title", "", "text"]


# --- the HTML export -------------------------------------------------------------------------------

PROBE_NOTEBOOK = [
    ("import traitlets, ipywidgets\n"
     "from peap_widget.widgets.base import PeapWidget\n"
     "class Probe(PeapWidget):\n"
     "    _esm = 'export default { render({ model, el }) { el.innerHTML = `<b id=v>${model.get(\"n\")}</b>`; } };'\n"
     "    n = traitlets.Int(3).tag(sync=True)\n"
     "probe = Probe()\n"
     "probe"),
    "probe.n = 41\nipywidgets.IntSlider(5)",
    "import matplotlib.pyplot as plt\nplt.plot([1, 2]); plt.show()",
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    import nbformat

    from peap_widget.lab.export import export

    d = tmp_path_factory.mktemp("export")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell("# Probe lab\nSome *text*.")]
    nb.cells += [nbformat.v4.new_code_cell(src) for src in PROBE_NOTEBOOK]
    path = d / "probe_lab.ipynb"
    nbformat.write(nb, str(path))
    return export(path, d / "out")


def test_export_is_offline_with_the_widget_embedded(exported):
    html = exported.read_text()
    assert exported.name == "probe_lab.html"
    assert html.count('<iframe class="peap-widget-frame"') == 1          # the probe, live
    assert "IntSlider" in html and "peap-widget-missing" in html          # the slider: text only
    assert not re.search(r"<script[^>]*\bsrc=[\"']?https?:", html)
    assert not re.search(r"<link[^>]*\bhref=[\"']?https?:", html)
    assert "application/vnd.jupyter.widget-state+json" not in html
    assert "data:image/png;base64" in html                                 # figures inline
    assert "Probe lab" in html


def test_export_widget_renders_in_chromium(exported, chromium):
    page = chromium.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(exported.as_uri())                                          # from disk: no server
    frame = page.frame(name="peap-frame-1") or page.frames[1]
    frame.wait_for_selector("body[data-peap-ready='true']", timeout=20000)
    assert frame.locator("#v").inner_text() == "41"                      # its state at the end
    assert not errors


def test_export_command_line_errors(tmp_path, capsys):
    from peap_widget.lab.export import main

    assert main([str(tmp_path / "missing.ipynb"), str(tmp_path / "out")]) == 2
    assert "no such notebook" in capsys.readouterr().err
