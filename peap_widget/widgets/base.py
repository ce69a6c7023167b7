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


def bundle(name: str) -> str:
    """The built ES module ``peap_widget/static/<name>.js`` (a readable error module when the
    front end has not been built, so importing the package never fails)."""
    path = STATIC / f"{name}.js"
    if path.is_file():
        return path.read_text(encoding="utf-8")
    return _MISSING % f"static/{name}.js"


class PeapWidget(anywidget.AnyWidget):
    """Base class: state lives in synced traits; ``to_html`` writes an offline page."""

    _bundle_name = ""

    def __init_subclass__(cls, **kwargs):
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
