"""Span schemas: ordered named token spans that map examples of any length onto one graph.

A schema is an ordered list of span types. Every example's spans cover all its tokens in order,
contiguously; a span may be empty (unless the schema marks it ``required``), and the last token
sits alone in the last span (docs/numbers.md).

Example:
    >>> s = Schema(["IO", "S1", "S2", "END"])
    >>> s.validate({"IO": [0, 2], "S1": [2, 2], "S2": [2, 5], "END": [5, 6]}, length=6)
    [(0, 2), (2, 2), (2, 5), (5, 6)]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from ..errors import SchemaError
from ..util.jsonio import dump_json, load_json, read_text

Ranges = list[tuple[int, int]]

#: the PEAP CSV's own columns: a span of one of these names could not be told apart from them
RESERVED_NAMES = ("prompt", "corrupted", "correct", "incorrect", "length")


class Schema:
    """An ordered list of span names; ``required`` names may not be empty.

    The last span always holds exactly the last token, so it is always required.
    """

    def __init__(self, spans: Sequence[str], required: Iterable[str] = ()):
        names = list(spans)
        if not names:
            raise SchemaError("a schema needs at least one span", rule="nonempty_schema")
        for n in names:
            if not isinstance(n, str) or not n.strip():
                raise SchemaError(f"span names must be non-empty strings, got {n!r}", rule="name")
        clash = [n for n in names if n in RESERVED_NAMES]
        if clash:
            raise SchemaError(f"span names {clash} are reserved: they are columns of the PEAP CSV "
                              f"form ({', '.join(RESERVED_NAMES)}); rename the span(s)",
                              rule="reserved_name")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise SchemaError(f"span names must be unique; repeated: {dup}", rule="unique_names")
        req = set(required)
        unknown = req - set(names)
        if unknown:
            raise SchemaError(f"required spans {sorted(unknown)} are not in the schema {names}",
                              rule="unknown_span")
        self.spans: tuple[str, ...] = tuple(names)
        self.required: frozenset[str] = frozenset(req | {names[-1]})

    def __len__(self) -> int:
        return len(self.spans)

    def __iter__(self):
        return iter(self.spans)

    def __eq__(self, other) -> bool:
        return isinstance(other, Schema) and (self.spans, self.required) == (other.spans, other.required)

    def __repr__(self) -> str:
        return f"Schema({list(self.spans)!r})"

    def index(self, name: str) -> int:
        return self.spans.index(name)

    # --- validation -----------------------------------------------------------------------

    def validate(self, spans: Mapping[str, Sequence[int]], length: int,
                 example: int | None = None) -> Ranges:
        """Check one example's ``{name: [start, end)}`` against the rules; return the ranges
        in schema order. Raises `SchemaError` naming the example, the span and the rule."""
        if length < 1:
            raise SchemaError("the prompt has no tokens", example=example, rule="empty_prompt")
        if not isinstance(spans, Mapping):
            raise SchemaError(f"spans must be a mapping {{name: [start, end)}}, got "
                              f"{type(spans).__name__}", example=example, rule="format")
        for name in spans:
            if name not in self.spans:
                raise SchemaError(f"span {name!r} is not in the schema {list(self.spans)}",
                                  example=example, span=name, rule="unknown_span")
        ranges: Ranges = []
        expected_start = 0
        for name in self.spans:
            if name not in spans:
                raise SchemaError("span is missing (give an empty range [k, k] for an empty span)",
                                  example=example, span=name, rule="missing_span")
            start, end = _as_range(spans[name], example, name)
            if start < 0 or end > length:
                raise SchemaError(f"range [{start}, {end}) lies outside the prompt's {length} tokens",
                                  example=example, span=name, rule="out_of_range")
            if start > end:
                raise SchemaError(f"range [{start}, {end}) ends before it starts",
                                  example=example, span=name, rule="reversed")
            if start != expected_start:
                what = "a gap before it" if start > expected_start else "an overlap with the span before"
                raise SchemaError(
                    f"range [{start}, {end}) must start at token {expected_start}, where the previous "
                    f"span ends ({what}; spans cover every token in schema order)",
                    example=example, span=name, rule="contiguous")
            if start == end and name in self.required:
                raise SchemaError("span is empty but the schema requires it",
                                  example=example, span=name, rule="nonempty")
            ranges.append((start, end))
            expected_start = end
        last = self.spans[-1]
        if ranges[-1] != (length - 1, length):
            raise SchemaError(
                f"the last span must hold exactly the last token [{length - 1}, {length}), "
                f"got [{ranges[-1][0]}, {ranges[-1][1]})",
                example=example, span=last, rule="last_token_alone")
        return ranges

    # --- JSON -------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {"spans": list(self.spans),
                "required": [n for n in self.spans if n in self.required and n != self.spans[-1]]}

    @classmethod
    def from_dict(cls, d: Mapping) -> Schema:
        if isinstance(d, (list, tuple)):
            return cls(d)
        if not isinstance(d, Mapping) or not isinstance(d.get("spans"), (list, tuple)):
            raise SchemaError("a schema is a list of span names or an object with a 'spans' list, "
                              f"got {type(d).__name__}", rule="format")
        required = d.get("required", ())
        if not isinstance(required, (list, tuple)):
            raise SchemaError("'required' must be a list of span names", rule="format")
        return cls(d["spans"], required)

    def to_json(self, path: str | Path | None = None) -> str:
        return dump_json(self.to_dict(), path, indent=1)

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> Schema:
        """A schema from JSON text or a file holding it."""
        raw = str(text_or_path)
        if isinstance(text_or_path, Path) or not raw.lstrip().startswith(("{", "[")):
            where = str(text_or_path)
            text = read_text(text_or_path, "schema JSON", SchemaError)
        else:
            where, text = "the schema JSON", raw
        try:
            return cls.from_dict(load_json(text, where, SchemaError))
        except SchemaError as err:
            if where in str(err):
                raise
            raise SchemaError(f"{where}: {err}", rule=err.rule) from None


def _as_range(value, example, name) -> tuple[int, int]:
    try:
        start, end = value
        if isinstance(start, bool) or isinstance(end, bool):
            raise TypeError
        if int(start) != start or int(end) != end:
            raise TypeError
        return int(start), int(end)
    except (TypeError, ValueError, OverflowError):   # OverflowError: int(inf)
        raise SchemaError(f"a span is a [start, end) pair of token indices, got {value!r}",
                          example=example, span=name, rule="format") from None


def ranges_from_starts(starts: Sequence[int], length: int) -> Ranges:
    """PEAP CSV form -> ranges: span i runs from its first token to the next span's first token."""
    bounds = list(starts) + [length]
    return [(bounds[i], bounds[i + 1]) for i in range(len(starts))]
