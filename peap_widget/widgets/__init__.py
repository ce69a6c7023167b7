"""Notebook widgets (anywidget): the span schema editor, the circuit explorer, faithfulness
curves, and CircuitLab, which puts them together. Each has ``to_html(path)`` for an offline page.

Example:
    >>> editor = pw.SchemaEditor(ds, path="annotations.json")     # doctest: +SKIP
    >>> explorer = pw.CircuitExplorer(res, model, ds)            # doctest: +SKIP
    >>> pw.to_html("circuit.html", explorer)                     # doctest: +SKIP
"""

from .circuit_explorer import CircuitExplorer
from .curves import FaithfulnessCurves
from .export import to_html
from .lab import CircuitLab
from .schema_editor import SchemaEditor

__all__ = ["CircuitExplorer", "CircuitLab", "FaithfulnessCurves", "SchemaEditor", "to_html"]
