"""The errors peap_widget raises, each saying what is wrong and where."""


class PeapError(ValueError):
    """Base class of peap_widget's input errors."""


class SchemaError(PeapError):
    """A span annotation breaks a rule of the schema (DESIGN.md section 7).

    Carries ``example`` (index in the dataset), ``span`` (span name or None) and ``rule``
    (a short machine-readable name such as ``"contiguous"``) next to the message.
    """

    def __init__(self, message: str, *, example: int | None = None, span: str | None = None,
                 rule: str = "schema"):
        where = []
        if example is not None:
            where.append(f"example {example}")
        if span is not None:
            where.append(f"span {span!r}")
        prefix = (", ".join(where) + ": ") if where else ""
        super().__init__(f"{prefix}{message} [rule: {rule}]")
        self.example = example
        self.span = span
        self.rule = rule


class DatasetError(PeapError):
    """A record cannot be used (missing field, answer not one token, length mismatch...)."""

    def __init__(self, message: str, *, example: int | None = None, field: str | None = None):
        where = []
        if example is not None:
            where.append(f"example {example}")
        if field is not None:
            where.append(f"field {field!r}")
        prefix = (", ".join(where) + ": ") if where else ""
        super().__init__(prefix + message)
        self.example = example
        self.field = field


class UnsupportedArchitectureError(PeapError):
    """The model's architecture has no adapter."""
