"""CircuitExplorer (being built)."""

from .base import PeapWidget


class CircuitExplorer(PeapWidget):
    _bundle_name = "circuit_explorer"
