"""CircuitLab (being built)."""

from .base import PeapWidget


class CircuitLab(PeapWidget):
    _bundle_name = ""
