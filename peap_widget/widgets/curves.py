"""FaithfulnessCurves (being built)."""

from .base import PeapWidget


class FaithfulnessCurves(PeapWidget):
    _bundle_name = "curves"
