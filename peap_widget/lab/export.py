"""Export lab notebooks to standalone HTML pages with live widgets, for course web pages.

    python -m peap_widget.lab.export notebooks/solutions/lab4_peap.ipynb out/
    python -m peap_widget.lab.export notebooks/solutions/*.ipynb out/

Each notebook is executed top to bottom in a fresh kernel of this Python (see
`peap_widget.lab.execute`). While the kernel is still up, every widget it created that can write
an offline page (``to_html``: the peap widgets, and `CircuitLab` once run) writes one; each widget
output of the notebook is then replaced by that page inside an ``<iframe srcdoc>``, so the
widgets are live (filter, prune, hover, annotate) without a kernel, a CDN or a network. The
notebook itself is rendered with nbconvert's HTML exporter and a template without the scripts
nbconvert would fetch from the web (require.js, MathJax, the widget manager).

Widgets show their state at the end of the run (e.g. the explorer after every pruning step of the
solution). Widgets that cannot write a page (plain ipywidgets, progress bars) keep their text form.
"""

from __future__ import annotations

import argparse
import html
import json
import sys
import tempfile
from pathlib import Path

from .execute import execute, run_code

TEMPLATES = Path(__file__).resolve().parent / "templates"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

_COLLECT = """
def _peap_collect(path):
    import json, os, tempfile
    from ipywidgets.widgets.widget import _instances
    pages = {}
    for model_id, widget in list(_instances.items()):
        to_html = getattr(widget, "to_html", None)
        if to_html is None:
            continue
        try:
            with tempfile.TemporaryDirectory() as d:
                target = os.path.join(d, "widget.html")
                to_html(target)
                with open(target, encoding="utf-8") as f:
                    pages[model_id] = {"html": f.read(), "type": type(widget).__name__}
        except Exception as err:
            pages[model_id] = {"error": f"{type(err).__name__}: {err}", "type": type(widget).__name__}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(pages, f)
_peap_collect(%r)
del _peap_collect
"""

# Posts the page's height to the notebook page, which sizes the iframe (see the template).
_RESIZER = """<script>
(function () {
  var id = %s;
  function post() {  // the content's height (not the viewport's, which follows the frame)
    var h = document.body.getBoundingClientRect().bottom + 24;
    parent.postMessage({peapFrame: id, height: h}, "*");
  }
  if (window.ResizeObserver) new ResizeObserver(post).observe(document.body);
  window.addEventListener("load", post);
  setTimeout(post, 300);
})();
</script>"""


def _frame(page: str, frame_id: str, title: str) -> str:
    inner = page.replace("</body>", _RESIZER % json.dumps(frame_id) + "\n</body>", 1)
    return (f'<iframe class="peap-widget-frame" id="{frame_id}" name="{frame_id}" title="{html.escape(title)}" '
            f'style="height:480px" srcdoc="{html.escape(inner, quote=True)}"></iframe>')


def embed_widgets(nb, pages: dict) -> dict:
    """Replace widget outputs of ``nb`` (in place) by iframes of ``pages`` ({model_id: {"html"}
    or {"error"}}). Returns counts ``{"embedded": n, "text": n}``."""
    counts = {"embedded": 0, "text": 0}
    n = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            view = data.get(WIDGET_VIEW)
            if view is None:
                continue
            page = pages.get(view.get("model_id"), {})
            if "html" in page:
                n += 1
                data["text/html"] = _frame(page["html"], f"peap-frame-{n}", page.get("type", "widget"))
                counts["embedded"] += 1
            else:
                why = page.get("error", "this widget has no offline page")
                text = data.get("text/plain", "")
                data["text/html"] = (f'<p class="peap-widget-missing">[{html.escape(text or "widget")}: '
                                     f'{html.escape(why)}]</p>')
                counts["text"] += 1
            del data[WIDGET_VIEW]
    nb.metadata.pop("widgets", None)
    return counts


def to_html(nb, title: str | None = None) -> str:
    """The notebook node as one offline HTML page (nbconvert, this package's template)."""
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="peap_lab", extra_template_basedirs=[str(TEMPLATES)])
    resources = {"metadata": {"name": title or nb.metadata.get("peap_lab", {}).get("name", "lab")}}
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    return body


def export(notebook, out_dir, timeout: int = 600) -> Path:
    """Execute ``notebook`` and write ``out_dir/<name>.html`` with its widgets embedded live.
    Returns the path written."""
    notebook = Path(notebook)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="peap-export-") as tmp:
        state = Path(tmp) / "pages.json"
        nb, _ = execute(notebook, cwd=notebook.resolve().parent, timeout=timeout,
                        on_done=lambda client: run_code(client, _COLLECT % str(state)))
        pages = json.loads(state.read_text(encoding="utf-8")) if state.exists() else {}
    embed_widgets(nb, pages)
    target = out_dir / f"{notebook.stem}.html"
    target.write_text(to_html(nb, title=notebook.stem), encoding="utf-8")
    return target


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m peap_widget.lab.export",
                                 description="Run lab notebooks and write offline HTML pages with "
                                             "their widgets live.")
    ap.add_argument("notebooks", nargs="+", type=Path, help="notebooks to export")
    ap.add_argument("out_dir", type=Path, help="folder for the .html pages")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per cell (default 600)")
    args = ap.parse_args(argv)
    for nb in args.notebooks:
        if not nb.is_file():
            print(f"no such notebook: {nb}", file=sys.stderr)
            return 2
    for nb in args.notebooks:
        path = export(nb, args.out_dir, timeout=args.timeout)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
