"""The errors peap_widget raises, each saying what is wrong and where."""


class PeapError(ValueError):
    """Base class of peap_widget's input errors."""


def where_prefix(example, label, name) -> str:
    """``"example 3, span 'S2': "``-style prefix naming where a problem is."""
    parts = ([] if example is None else [f"example {example}"]) + \
            ([] if name is None else [f"{label} {name!r}"])
    return (", ".join(parts) + ": ") if parts else ""


def in_file(err: PeapError, path) -> PeapError:
    """``err`` with the file ``path`` named in front of its message (same class, same fields),
    unless the message already names it."""
    msg = err.args[0] if err.args else str(err)
    if str(path) not in str(msg):
        err.args = (f"{path}: {msg}",) + tuple(err.args[1:])
    return err


class SchemaError(PeapError):
    """A span annotation breaks a rule of the schema (docs/numbers.md).

    Carries ``example`` (index in the dataset), ``span`` (span name or None) and ``rule``
    (a short machine-readable name such as ``"contiguous"``) next to the message.
    """

    def __init__(self, message: str, *, example: int | None = None, span: str | None = None,
                 rule: str = "schema"):
        super().__init__(f"{where_prefix(example, 'span', span)}{message} [rule: {rule}]")
        self.example = example
        self.span = span
        self.rule = rule


class DatasetError(PeapError):
    """A record cannot be used (missing field, answer not one token, length mismatch...)."""

    def __init__(self, message: str, *, example: int | None = None, field: str | None = None):
        super().__init__(where_prefix(example, "field", field) + message)
        self.example = example
        self.field = field


class NonFiniteError(PeapError):
    """A NaN or inf in a model's activations, gradients, logits or scores (often a broken
    weight, an overflow in float16, or inputs the model cannot handle)."""


class UnsupportedArchitectureError(PeapError):
    """The model's architecture has no adapter."""


class NormalisationError(PeapError):
    """Normalized faithfulness (and what is built on it: CPR, CMD, "edges for f >= 0.8") cannot
    be computed because the metric of the full model and of the empty circuit are equal within
    the tolerance (`peap_widget.engine.evaluate.NORMALISE_RTOL`); ``reason`` says so with the numbers."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason
