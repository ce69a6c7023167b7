"""SchemaEditor (being built)."""

from .base import PeapWidget


class SchemaEditor(PeapWidget):
    _bundle_name = "schema_editor"
