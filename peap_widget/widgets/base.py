"""What every peap_widget widget shares: its bundled ES module and a standalone HTML export."""

from __future__ import annotations

from pathlib import Path

import anywidget

STATIC = Path(__file__).resolve().parent.parent / "static"

_MISSING = """
export default { render({ el }) {
  el.innerHTML = '<pre style="color:#b00">peap_widget: the front-end bundle %s is missing. ' +
    'Reinstall the package (pip install -e . builds it) or run: npm install && npm run build</pre>';
} };
"""


def bundle_path(name: str) -> Path:
    """Where the built ES module of widget ``name`` lives: ``peap_widget/static/<name>.js``."""
    return STATIC / f"{name}.js"


def bundle(name: str) -> str | Path:
    """What a widget class's ``_esm`` is set to: the built bundle's Path, or (front end not
    built) a module that says so, so importing the package never fails.

    A Path, not the file's text: anywidget then reads the file itself, and with
    ``ANYWIDGET_HMR=1`` in a development checkout (not under site-packages, watchfiles
    installed) watches it and pushes every rebuild (``npm run watch``) to the live widgets.
    Installed from a wheel, anywidget reads the same file once and watches nothing.
    """
    path = bundle_path(name)
    return path if path.is_file() else _MISSING % f"static/{name}.js"


def esm_source(widget) -> str:
    """The JavaScript of ``widget``'s (or widget class's) ES module as text, whatever form
    ``_esm`` takes: a string, a Path, or anywidget's FileContents (str() is the file's text)."""
    esm = widget._esm
    if isinstance(esm, Path):
        return esm.read_text(encoding="utf-8")
    return str(esm)


class PeapWidget(anywidget.AnyWidget):
    """Base class: state lives in synced traits; ``to_html`` writes an offline page."""

    _bundle_name = ""

    def __init_subclass__(cls, **kwargs):
        # set before anywidget's __init_subclass__, which turns a Path into a (watched) file
        if cls.__dict__.get("_bundle_name"):
            cls._esm = bundle(cls._bundle_name)
        super().__init_subclass__(**kwargs)

    def to_html(self, path, title: str | None = None):
        """Write a standalone page (works offline, no CDN) showing this widget as it is now.

        Without a kernel the page still filters, prunes and hovers; anything that needs Python
        (re-evaluation) says so. Returns the path.

        Example:
            >>> explorer.to_html("circuit.html")       # doctest: +SKIP
        """
        from .export import write_html

        return write_html(path, [self], title=title or type(self).__name__)
