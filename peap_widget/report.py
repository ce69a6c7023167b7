"""A standalone HTML report: summary, faithfulness curves, circuit diagrams and top edges.

Everything is inline (CSS, SVG diagrams, the curve as a base64 PNG), so the page works offline
and can be mailed or put on a course page as one file.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

from .graph import QKV


def circuit_svg(circuit, width: int = 900, max_edges: int = 400) -> str:
    """A static diagram of a circuit: spans left to right, layers bottom to top (input at the
    bottom, logits on top), heads and MLPs as nodes; residual edges solid, crossing edges dashed
    arcs; blue positive, red negative score, width by |score|. Shows the ``max_edges`` strongest."""
    sp = circuit.space
    g = sp.graph
    S, L, H = sp.n_spans, g.L, g.H
    col = width / S
    row_h = 46
    height = int(row_h * (2 * L + 3))

    def y_of(level):  # level 0: input, 2l+1: heads of layer l, 2l+2: mlp l, 2L+1: logits
        return height - row_h * (level + 1) + row_h / 2

    def node_xy(name, span):
        s = sp.spans.index(span)
        base = name.split("<")[0]
        if base == "input":
            return col * (s + 0.5), y_of(0)
        if base == "logits":
            return col * (s + 0.5), y_of(2 * L + 1)
        if base.startswith("m"):
            return col * (s + 0.5), y_of(2 * int(base[1:]) + 2)
        layer, head = (int(p[1:]) for p in base.split("."))
        return col * s + col * (head + 1) / (H + 1), y_of(2 * layer + 1)

    e = circuit.edges
    if len(e) > max_edges:
        e = e.reindex(e["score"].abs().sort_values(ascending=False).index[:max_edges])
    top = float(np.nanmax(np.abs(e["score"]))) if len(e) else 1.0
    top = top if top > 0 else 1.0
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="10">']
    for s, name in enumerate(sp.spans):
        parts.append(f'<rect x="{col * s + 1}" y="0" width="{col - 2}" height="{height}" '
                     f'fill="{"#f7f7f7" if s % 2 else "#ffffff"}"/>')
        parts.append(f'<text x="{col * (s + 0.5)}" y="{height - 4}" text-anchor="middle">'
                     f'{html.escape(name)}</text>')
    for level, label in [(0, "input"), (2 * L + 1, "logits")] + [
            (2 * layer + 1, f"L{layer} heads") for layer in range(L)] + [
            (2 * layer + 2, f"m{layer}") for layer in range(L)]:
        parts.append(f'<text x="2" y="{y_of(level) - 8}" fill="#888">{label}</text>')
    used = set()
    for r in e.itertuples():
        score = 0.0 if np.isnan(r.score) else r.score
        w = 0.5 + 3.5 * abs(score) / top
        color = "#2166ac" if score >= 0 else "#b2182b"
        if r.kind == "resid":
            x1, y1 = node_xy(r.src, r.src_span)
            x2, y2 = node_xy(r.dst, r.dst_span)
            used.update({(r.src, r.src_span), (r.dst.split("<")[0], r.dst_span)})
            parts.append(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
                         f'stroke="{color}" stroke-width="{w:.2f}" stroke-opacity="0.7">'
                         f'<title>{html.escape(r.src)} -&gt; {html.escape(r.dst)} @{html.escape(r.src_span)}: '
                         f'{score:.4g}</title></line>')
        else:
            x1, y1 = node_xy(r.src, r.src_span)
            x2, y2 = node_xy(r.dst, r.dst_span)
            used.update({(r.src, r.src_span), (r.dst, r.dst_span)})
            bend = 18 + 6 * QKV.index(r.kind)
            parts.append(f'<path d="M{x1:.1f},{y1:.1f} Q{(x1 + x2) / 2:.1f},{min(y1, y2) - bend:.1f} '
                         f'{x2:.1f},{y2:.1f}" fill="none" stroke="{color}" stroke-width="{w:.2f}" '
                         f'stroke-dasharray="4 2" stroke-opacity="0.7"><title>{html.escape(r.src)} '
                         f'{r.kind}: key {html.escape(r.src_span)} -&gt; query {html.escape(r.dst_span)}: '
                         f'{score:.4g}</title></path>')
    for name, span in sorted(used):
        x, y = node_xy(name, span)
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="#333"><title>'
                     f'{html.escape(name)}@{html.escape(span)}</title></circle>')
    parts.append("</svg>")
    return "".join(parts)


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return base64.b64encode(buf.getvalue()).decode()


def write_report(path: str | Path, title: str, summary: dict, circuits: dict, curve=None,
                 results: dict | None = None, top: int = 25) -> Path:
    """Write the report. ``circuits``: {label: Circuit}; ``results``: {label: AttributionResult}
    for top-edge tables; ``summary``: flat {key: value} shown first."""
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>"
                   for k, v in summary.items())
    body = [f"<h1>{html.escape(title)}</h1>", f"<table class='kv'>{rows}</table>"]
    if curve is not None:
        body.append("<h2>Faithfulness against circuit size</h2>")
        body.append(f"<img alt='faithfulness curves' src='data:image/png;base64,"
                    f"{_png(curve.overview())}'/>")
        body.append(curve.table.to_html(index=False, float_format=lambda v: f"{v:.4g}"))
    for label, circ in circuits.items():
        body.append(f"<h2>Circuit: {html.escape(label)}</h2><p>{html.escape(repr(circ))}. Solid: "
                    "residual edges within a span; dashed arcs: crossing q/k/v edges from a key "
                    "span to a query span. Blue positive, red negative; hover for scores.</p>")
        body.append(f"<div class='svg'>{circuit_svg(circ)}</div>")
    for label, res in (results or {}).items():
        body.append(f"<h2>Top {top} edges: {html.escape(label)}</h2>")
        body.append(res.top(top).to_html(index=False, float_format=lambda v: f"{v:.4g}"))
    page = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>" + html.escape(title)
            + "</title><style>body{font-family:sans-serif;max-width:1000px;margin:2em auto;}"
            "table{border-collapse:collapse;font-size:12px;margin:1em 0}td,th{border:1px solid #ddd;"
            "padding:2px 6px;text-align:right}table.kv th{text-align:left}.svg{overflow-x:auto}"
            "img{max-width:100%}</style></head><body>" + "".join(body) + "</body></html>")
    path = Path(path)
    path.write_text(page)
    return path


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
