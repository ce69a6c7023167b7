"""Hot reload of the front end in development (docs/dev-frontend.md): every widget class's
``_esm`` is its bundle's Path, which anywidget turns into a file it reads (and, with
ANYWIDGET_HMR=1, watches); the standalone HTML export still carries the bundle's code."""

import base64
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import peap_widget.widgets.circuit_explorer  # noqa: F401  (registers the widget classes)
import peap_widget.widgets.curves  # noqa: F401
import peap_widget.widgets.schema_editor  # noqa: F401
from peap_widget.widgets.base import PeapWidget, bundle_path, esm_source
from peap_widget.widgets.curves import FaithfulnessCurves
from peap_widget.widgets.export import page

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not (ROOT / "js" / "build.mjs").is_file(),
                                reason="a development checkout (js/ next to the package)")


def widget_classes():
    out, todo = [], [PeapWidget]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.__dict__.get("_bundle_name"):
            out.append(cls)
    return out


def test_every_widget_esm_is_its_bundle_file():
    classes = widget_classes()
    assert {c._bundle_name for c in classes} >= {"curves", "circuit_explorer", "schema_editor"}
    for cls in classes:
        path = bundle_path(cls._bundle_name)
        assert path.is_file(), f"{path} is not built: npm run build"
        esm = cls.__dict__["_esm"]
        # a Path _esm is what anywidget turns into a FileContents (a string stays a string)
        assert type(esm).__name__ == "FileContents", (cls, type(esm))
        assert esm._path == path.resolve()
        assert esm_source(cls) == path.read_text(encoding="utf-8")


def test_the_exported_page_still_carries_the_bundle():
    w = FaithfulnessCurves()
    code = bundle_path("curves").read_text(encoding="utf-8")
    assert w._esm == code                     # the synced trait: the file's text
    html = page([w], "hot reload")
    assert base64.b64encode(code.encode()).decode("ascii") in html


def test_with_anywidget_hmr_a_rebuilt_bundle_reaches_the_live_widget(tmp_path):
    """A real rebuild seen by anywidget's watcher: a copy of the bundles in tmp_path (the real
    files are left alone), a widget class made through PeapWidget, the file rewritten."""
    if os.environ.get("CI") != "true":     # in CI (the test extra installs it) it must run
        pytest.importorskip("watchfiles")
    static = tmp_path / "static"
    static.mkdir()
    (static / "curves.js").write_text(bundle_path("curves").read_text(encoding="utf-8"))
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        import peap_widget.widgets.base as base
        base.STATIC = Path({str(static)!r})

        class Probe(base.PeapWidget):
            _bundle_name = "curves"

        assert Probe.__dict__["_esm"]._background_thread is not None, "anywidget is not watching"
        w = Probe()
        time.sleep(0.5)                         # the watcher is up
        (base.STATIC / "curves.js").write_text("export default {{ render() {{}} }}; // v2")
        for _ in range(100):
            if w._esm.endswith("// v2"):
                break
            time.sleep(0.1)
        assert w._esm.endswith("// v2"), w._esm[-80:]
        print("reloaded")
    """)
    env = {**os.environ, "ANYWIDGET_HMR": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "reloaded" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-4000:]
