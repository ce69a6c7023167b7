"""What every schema suggester returns, and the call every suggester answers.

A *suggester* proposes span annotations for examples that are not annotated yet (or checks
annotations that are): rules (`peap_widget.suggest.rules`), input saliency
(`peap_widget.suggest.saliency`) or an LLM (`peap_widget.suggest.llm`). Each is a callable

    suggester(examples, tokens, *, progress=None) -> Suggestion

- ``examples``: records as the SchemaEditor holds them (``clean``, ``correct``, ``incorrect``,
  optional ``corrupted`` and other fields);
- ``tokens``: the token strings of each example's clean prompt, as the model's tokenizer splits
  it (what the spans index);
- ``progress``: an optional ``progress(done, total, info)`` callback (``info`` a dict such as
  ``{"tokens": 1234, "cost": 0.01}``) for progress bars and running counts.

and carries a ``name`` attribute (shown in the SchemaEditor's Suggest panel).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Callable, Protocol

from ..data.schema import Schema

Progress = Callable[[int, int, dict], None]


@dataclass
class Suggestion:
    """Per-example span annotations proposed by one suggester.

    - ``span_names``: the schema the suggestion is written in, in order;
    - ``spans``: one entry per example: ``{name: (start, end)}`` token ranges (end-exclusive,
      the ranges `Schema.validate` checks), or ``None`` where the suggester has nothing for
      that example;
    - ``failed``: example index -> why no valid annotation was found (LLM answers that never
      validated, a rule that did not match...); those examples have ``spans[i] is None``;
    - ``source``: which suggester made it (``"rules"``, ``"saliency"``, ``"llm:<backend>"``);
    - ``info``: counts worth reporting (tokens used, cost, requests, retries...).
    """

    span_names: list[str]
    spans: list[dict[str, tuple[int, int]] | None]
    source: str = ""
    failed: dict[int, str] = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    @property
    def schema(self) -> Schema:
        return Schema(self.span_names)

    def __len__(self) -> int:
        return len(self.spans)

    def annotated(self) -> list[int]:
        """Indices of the examples with a proposed annotation."""
        return [i for i, s in enumerate(self.spans) if s is not None]

    def agreement(self, reference: Sequence[Mapping[str, Sequence[int]] | None]) -> float:
        """Fraction of examples whose proposed spans equal ``reference``'s exactly (every span
        name of this suggestion, same token range); unannotated examples count as disagreeing."""
        if len(reference) != len(self.spans):
            raise ValueError(f"{len(reference)} reference annotations for {len(self.spans)} examples")
        same = sum(1 for mine, ref in zip(self.spans, reference)
                   if mine is not None and ref is not None
                   and all(tuple(mine[n]) == tuple(ref.get(n, (None, None))) for n in self.span_names))
        return same / max(1, len(self.spans))


class Suggester(Protocol):
    name: str

    def __call__(self, examples: Sequence[Mapping], tokens: Sequence[Sequence[str]], *,
                 progress: Progress | None = None) -> Suggestion: ...
