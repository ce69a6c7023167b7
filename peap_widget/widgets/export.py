"""Standalone HTML pages for widgets: no kernel, no CDN, no network.

The page holds each widget's bundled module and its synced trait values; a small loader
(``static/standalone.js``) gives each widget a kernel-less model with anywidget's interface.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from pathlib import Path

from ..errors import PeapError
from ..util.jsonio import finite_or_none
from .base import STATIC, PeapWidget, esm_source

_LOADER = """<script type="module">
const b64 = document.getElementById("peap-standalone").textContent.trim();
const bin = atob(b64), bytes = new Uint8Array(bin.length);
for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
const url = URL.createObjectURL(new Blob([bytes], { type: "text/javascript" }));
import(url).then((m) => m.mountAll()).catch((e) => {
  document.body.insertAdjacentHTML("afterbegin", "<pre style='color:#b00'>" + String(e) + "</pre>");
  throw e;
});
</script>"""


def widget_state(widget) -> dict:
    """The widget's synced trait values as JSON, bytes as ``{"$b64": ...}`` (anywidget's own
    bookkeeping traits left out). A widget may put other values on the page for some traits:
    its ``page_state()`` returns them (the circuit explorer ships what its circuit needs)."""
    page_values = widget.page_state() if hasattr(widget, "page_state") else {}
    out = {}
    for name in widget.keys:
        if name.startswith("_") or name in ("layout", "comm", "log", "tabbable", "tooltip"):
            continue
        value = page_values[name] if name in page_values else getattr(widget, name)
        out[name] = _jsonable(value)
    return out


def _jsonable(value):
    """Trait values as JSON values: bytes as base64, numpy values as numbers and lists, NaN and
    infinities as null (JSON has none; the front ends show null as missing)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$b64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return finite_or_none(value)


def _script_json(obj) -> str:
    # Every "<" escaped: "</script>" would end the script early and "<!--" (then "<script")
    # switches the HTML parser into a state where the real "</script>" no longer ends it.
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")


def page(widgets, title: str = "peap_widget") -> str:
    """The standalone page's HTML for ``widgets`` (shown top to bottom); a string among them is
    inserted as (trusted) HTML, e.g. headings between widgets."""
    loader = STATIC / "standalone.js"
    if not loader.is_file():
        raise PeapError("the front end is not built (peap_widget/static/standalone.js is missing); "
                        "reinstall the package or run: npm install && npm run build")
    modules: dict[str, str] = {}
    parts = []
    for i, w in enumerate(widgets):
        if isinstance(w, str):
            parts.append(w)
            continue
        code = esm_source(w)
        key = "peap-esm-" + hashlib.sha1(code.encode()).hexdigest()[:12]
        modules.setdefault(key, base64.b64encode(code.encode()).decode("ascii"))
        parts.append(f'<div class="peap-widget" id="peap-{i}" data-esm="{key}" '
                     f'data-state="peap-state-{i}"></div>\n'
                     f'<script type="application/json" id="peap-state-{i}">'
                     f'{_script_json(widget_state(w))}</script>')
    scripts = "\n".join(f'<script type="text/plain" id="{k}">{v}</script>' for k, v in modules.items())
    standalone = base64.b64encode(loader.read_bytes()).decode("ascii")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:16px;color:#222}}
.peap-widget{{margin-bottom:24px}}
table.peap-table{{border-collapse:collapse;font-size:12px;margin:.5em 0 1.5em}}
table.peap-table td,table.peap-table th{{border:1px solid #e5e7eb;padding:2px 8px;text-align:right}}
table.peap-table th{{text-align:left;font-weight:500;color:#4b5563}}
h1{{font-size:22px}} h2{{font-size:17px;margin-top:28px}}</style>
</head><body>
{chr(10).join(parts)}
{scripts}
<script type="text/plain" id="peap-standalone">{standalone}</script>
{_LOADER}
</body></html>
"""


def write_html(path, widgets, title: str = "peap_widget") -> Path:
    """Write `page` to ``path`` (parent folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page(list(widgets), title), encoding="utf-8")
    return path


def to_html(path: str | Path, *widgets: PeapWidget, title: str = "peap_widget") -> Path:
    """Write several widgets to one standalone page.

    Example:
        >>> pw.to_html("lab.html", explorer, curves)     # doctest: +SKIP
    """
    if not widgets:
        raise PeapError("to_html needs at least one widget")
    if isinstance(path, str) is False and hasattr(path, "keys") and hasattr(path, "_esm"):
        raise PeapError("to_html(path, *widgets): the path comes first")
    flat = [part for w in widgets for part in _exportable(w)]
    return write_html(path, flat, title)


def _exportable(w) -> list:
    """A widget (or HTML string) as the parts of a page: a container (CircuitLab, a VBox) gives
    the peap_widget widgets inside it."""
    if isinstance(w, str) or _is_page_widget(w):
        return [w]
    if hasattr(w, "children"):
        inner = _inside(w)
        if inner:
            return inner
        raise PeapError(f"the {type(w).__name__} holds no peap_widget widget to export yet "
                        "(run it first)")
    raise PeapError(f"to_html(path, *widgets) takes peap_widget widgets (or HTML strings), got "
                    f"{type(w).__name__}; did you swap the path and the widget?")


def _is_page_widget(w) -> bool:
    return hasattr(w, "_esm") and hasattr(w, "keys")


def _inside(container) -> list:
    out = []
    for child in getattr(container, "children", ()):
        out += [child] if _is_page_widget(child) else _inside(child)
    return out
