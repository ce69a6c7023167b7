"""Schemas by an LLM, the PEAP paper's way: propose span types from a sample, then tag every
example, rejecting annotations that break the schema's rules.

1. `propose_schema` shows the LLM a sample of tokenized examples (tokens numbered by position,
   salient ones marked with ``*`` when a saliency mask is given) and asks for span types as JSON:
   ``{"spans": [{"title": ..., "description": ...}, ...]}``.
2. `LLMSuggester` (a suggester, see `peap_widget.suggest.base`) asks, for each example, for
   ``{"spans": {title: [start, end], ...}}`` (token ranges, end-exclusive; the paper's
   first-token-index form ``{title: start}`` is accepted too), checks the answer with
   `Schema.validate`, and on an invalid answer asks again with the error message, up to
   ``max_retries`` times. Examples that never validate stay unannotated and are listed in
   ``Suggestion.failed`` with the last error.

Requests, prompt and completion tokens (from the backend's ``usage``) and the cost (only when
you give per-token prices) are counted in ``Suggestion.info`` and shown on a tqdm bar.

Example:
    >>> backend = OpenAIBackend("gpt-4o-mini")                        # doctest: +SKIP
    >>> proposal = propose_schema(backend, examples, tokens, saliency=mask)   # doctest: +SKIP
    >>> proposal.titles, proposal.descriptions                        # doctest: +SKIP
    >>> tagger = LLMSuggester(backend, proposal, saliency=mask,
    ...                       price_per_prompt_token=0.15e-6, price_per_completion_token=0.6e-6)
    ...                                                               # doctest: +SKIP
    >>> suggestion = tagger(examples, tokens)                         # doctest: +SKIP
    >>> suggestion.failed, suggestion.info["cost"]                    # doctest: +SKIP
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..errors import PeapError, SchemaError
from ..data.schema import Schema, ranges_from_starts
from .base import Progress, Suggestion
from .llm_backends import (Backend, CallableBackend, OpenAIBackend, Reply, TransformersBackend,
                           as_backend)

__all__ = ["LLMSuggester", "ProposedSchema", "Usage", "propose_schema", "parse_json_answer",
           "CallableBackend", "OpenAIBackend", "TransformersBackend", "Reply"]

SYSTEM = ("You annotate tokenized prompts for mechanistic-interpretability research. You split "
          "each prompt into named spans of consecutive tokens. Answer with JSON only.")


# --- counting ------------------------------------------------------------------------------

@dataclass
class Usage:
    """Running counts over requests. ``cost`` is ``None`` unless both per-token prices are
    given and every reply reported its token counts (no number is guessed)."""

    price_per_prompt_token: float | None = None
    price_per_completion_token: float | None = None
    requests: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests_without_usage: int = 0

    def add(self, reply: Reply) -> None:
        self.requests += 1
        u = reply.usage
        if not u or "prompt_tokens" not in u or "completion_tokens" not in u:
            self.requests_without_usage += 1
            return
        self.prompt_tokens += int(u["prompt_tokens"])
        self.completion_tokens += int(u["completion_tokens"])

    @property
    def cost(self) -> float | None:
        if (self.price_per_prompt_token is None or self.price_per_completion_token is None
                or self.requests_without_usage):
            return None
        return (self.prompt_tokens * self.price_per_prompt_token
                + self.completion_tokens * self.price_per_completion_token)

    def as_dict(self) -> dict:
        return {"requests": self.requests, "retries": self.retries,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "tokens": self.prompt_tokens + self.completion_tokens,
                "requests_without_usage": self.requests_without_usage, "cost": self.cost}


# --- rendering examples ----------------------------------------------------------------------

def render_tokens(tokens: Sequence[str], salient: Sequence[int] | None = None) -> str:
    """One line per token: ``index: 'token'``, with ``*`` after salient positions.

    >>> print(render_tokens(["When", " Mary"], salient=[1]))
    0: 'When'
    1: ' Mary' *
    """
    marks = set(int(p) for p in salient) if salient is not None else set()
    return "\n".join(f"{i}: {str(t)!r}" + (" *" if i in marks else "")
                     for i, t in enumerate(tokens))


def _check_inputs(examples, tokens, saliency):
    if len(examples) != len(tokens):
        raise PeapError(f"{len(examples)} examples but {len(tokens)} token lists; give one token "
                        "list per example")
    if saliency is not None and len(saliency) != len(tokens):
        raise PeapError(f"{len(saliency)} saliency masks for {len(tokens)} examples; give one "
                        "list of salient positions per example (or saliency=None)")
    for i, t in enumerate(tokens):
        if len(t) < 1:
            raise PeapError(f"example {i} has no tokens")
        if saliency is not None and saliency[i] is not None:
            bad = [p for p in saliency[i] if not 0 <= int(p) < len(t)]
            if bad:
                raise PeapError(f"example {i}: salient positions {bad} lie outside its "
                                f"{len(t)} tokens")


def _example_block(i, example, toks, salient) -> str:
    head = f"Example {i}"
    clean = example.get("clean") if isinstance(example, Mapping) else None
    lines = [head] + ([f"Prompt: {clean}"] if isinstance(clean, str) else [])
    if isinstance(example, Mapping) and isinstance(example.get("correct"), str):
        lines.append(f"Expected next token: {example['correct']!r}")
    lines.append(f"Tokens ({len(toks)}, numbered from 0):")
    lines.append(render_tokens(toks, salient))
    return "\n".join(lines)


# --- answers --------------------------------------------------------------------------------

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)


def parse_json_answer(text: str):
    """The JSON value in an LLM answer (bare, or inside a ```json fence, or the outermost
    ``{...}``). Raises `PeapError` saying why it is not JSON."""
    if not isinstance(text, str) or not text.strip():
        raise PeapError("the answer is empty; answer with a JSON object")
    candidates = [text.strip()]
    candidates += [m.strip() for m in _FENCE.findall(text)]
    lo, hi = text.find("{"), text.rfind("}")
    if 0 <= lo < hi:
        candidates.append(text[lo:hi + 1])
    last = None
    for c in candidates:
        try:
            return json.loads(c)
        except json.JSONDecodeError as err:
            last = err
    snippet = text.strip()[:80]
    raise PeapError(f"the answer is not JSON ({last.msg} at line {last.lineno} column "
                    f"{last.colno} of {snippet!r}...); answer with one JSON object only")


def spans_from_answer(value, schema: Schema, length: int) -> dict:
    """``{"spans": {...}}`` or ``{...}`` -> ``{name: [start, end)}``; a name mapped to one
    integer is a first-token index (the paper's form), turned into a range as the CSV form does."""
    spans = value.get("spans", value) if isinstance(value, dict) else value
    if not isinstance(spans, dict):
        raise SchemaError('the answer must be a JSON object {"spans": {"<span>": [start, end], ...}}, '
                          f"got {type(spans).__name__}", rule="format")
    if spans and all(isinstance(v, int) and not isinstance(v, bool) for v in spans.values()):
        missing = [n for n in schema.spans if n not in spans]
        if missing:
            raise SchemaError("span is missing (give every span's first token index)",
                              span=missing[0], rule="missing_span")
        starts = [spans[n] for n in schema.spans]
        return dict(zip(schema.spans, map(list, ranges_from_starts(starts, length))))
    return spans


# --- step 1: propose a schema ----------------------------------------------------------------

@dataclass
class ProposedSchema:
    """Span types proposed by the LLM: ``titles`` in order with their ``descriptions``."""

    titles: list[str]
    descriptions: dict[str, str]
    info: dict = field(default_factory=dict)
    sample: list[int] = field(default_factory=list)

    @property
    def schema(self) -> Schema:
        return Schema(self.titles)

    def to_dict(self) -> dict:
        return {"spans": [{"title": t, "description": self.descriptions.get(t, "")}
                          for t in self.titles]}


def _proposal_prompt(blocks, task, n_total, masked: bool) -> str:
    mask = ("Tokens marked with * are salient: they matter most to the model's prediction; "
            "give them their own spans where that makes sense.\n") if masked else ""
    return (
        f"{task}\n" if task else "") + (
        f"Here are {len(blocks)} of {n_total} prompts a language model completes, each split into "
        "tokens.\n" + mask +
        "Propose a schema: an ordered list of span types such that every prompt can be split into "
        "consecutive spans, one per type and in this order (a span may be empty in some prompts). "
        "The last span type must hold exactly the last token. Give each span a short title "
        "(letters, digits, _ or +; not 'prompt', 'corrupted', 'correct', 'incorrect' or 'length') "
        "and a description precise enough to find it in any prompt.\n"
        'Answer with JSON only: {"spans": [{"title": "...", "description": "..."}, ...]}\n\n'
        + "\n\n".join(blocks))


def _parse_proposal(text) -> tuple[list[str], dict[str, str]]:
    value = parse_json_answer(text)
    items = value.get("spans") if isinstance(value, dict) else value
    if not isinstance(items, list) or not items:
        raise PeapError('the answer needs a non-empty list {"spans": [{"title": ..., '
                        '"description": ...}, ...]}')
    titles, desc = [], {}
    for k, it in enumerate(items):
        if not isinstance(it, dict) or not isinstance(it.get("title"), str):
            raise PeapError(f"span {k} must be an object with a string 'title' (and 'description')")
        t = it["title"].strip()
        titles.append(t)
        desc[t] = str(it.get("description", "")).strip()
    Schema(titles)          # unique, non-empty, not reserved: the schema rules, same messages
    return titles, desc


def propose_schema(backend: Backend, examples: Sequence[Mapping], tokens: Sequence[Sequence[str]], *,
                   saliency: Sequence[Sequence[int] | None] | None = None, n_sample: int = 10,
                   seed: int = 0, task: str = "", max_retries: int = 2,
                   price_per_prompt_token: float | None = None,
                   price_per_completion_token: float | None = None) -> ProposedSchema:
    """Ask the LLM for span types (titles + descriptions) from ``n_sample`` random examples.

    ``saliency``: per example, the salient token positions (marked ``*`` in the prompt), e.g.
    the top positions of `pw.token_saliency`; ``task``: a sentence on what the prompts test.
    An answer that is not valid JSON or breaks the naming rules is sent back with the error,
    up to ``max_retries`` times; then `PeapError` is raised with the last error.

    >>> p = propose_schema(lambda m: '{"spans": [{"title": "body", "description": "all but '
    ...                    'the last token"}, {"title": "end", "description": "the last token"}]}',
    ...                    [{"clean": "a b"}], [["a", " b"]])
    >>> p.titles
    ['body', 'end']
    """
    backend = as_backend(backend)
    _check_inputs(examples, tokens, saliency)
    if not tokens:
        raise PeapError("no examples to propose a schema from")
    rng = random.Random(seed)
    sample = sorted(rng.sample(range(len(tokens)), min(n_sample, len(tokens))))
    blocks = [_example_block(i, examples[i], tokens[i], None if saliency is None else saliency[i])
              for i in sample]
    usage = Usage(price_per_prompt_token, price_per_completion_token)
    messages = [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": _proposal_prompt(blocks, task, len(tokens),
                                                                 saliency is not None)}]
    error = None
    for attempt in range(max_retries + 1):
        reply = backend(messages)
        usage.add(reply)
        try:
            titles, desc = _parse_proposal(reply.text)
            return ProposedSchema(titles, desc, {**usage.as_dict(), "backend": backend.name}, sample)
        except PeapError as err:
            error = str(err)
            if attempt < max_retries:
                usage.retries += 1
                messages = messages + [{"role": "assistant", "content": reply.text},
                                       {"role": "user", "content": _retry_text(error)}]
    raise PeapError(f"the LLM ({backend.name}) gave no valid schema in {max_retries + 1} "
                    f"attempts; last error: {error}")


def _retry_text(error: str) -> str:
    return (f"That answer is invalid: {error}\n"
            "Fix it and answer again with the JSON object only.")


# --- step 2: tag every example ---------------------------------------------------------------

def _schema_of(schema) -> tuple[Schema, dict[str, str]]:
    if isinstance(schema, ProposedSchema):
        return schema.schema, dict(schema.descriptions)
    if isinstance(schema, Schema):
        return schema, {}
    if isinstance(schema, Mapping):
        return Schema(list(schema)), {k: str(v) for k, v in schema.items()}
    return Schema(list(schema)), {}


class LLMSuggester:
    """A suggester that asks an LLM to tag each example with the spans of ``schema``.

    - ``backend``: a `CallableBackend`, `OpenAIBackend`, `TransformersBackend`, or any callable
      ``messages -> text`` (see `peap_widget.suggest.llm_backends`);
    - ``schema``: a `ProposedSchema`, a `Schema`, a list of span names, or ``{name: description}``;
    - ``saliency``: per example, salient token positions to mark with ``*`` (or ``None``); it
      must have one entry per example the suggester is later called with. Without it, an
      example record's own ``"salient"`` list (if any) is used, so a caller that passes a
      subset of the examples keeps their marks;
    - ``max_retries``: how often an invalid answer is sent back with the error message;
    - ``price_per_prompt_token`` / ``price_per_completion_token``: for ``info["cost"]``
      (``None``, the default, leaves the cost unknown: ``None``);
    - ``task``: a sentence on what the prompts test, put in every request.

    ``suggester(examples, tokens, progress=None)`` returns a `Suggestion` whose ``info`` has
    ``requests``, ``retries``, ``prompt_tokens``, ``completion_tokens``, ``tokens``, ``cost``,
    ``requests_without_usage`` and ``attempts`` (per example).
    """

    def __init__(self, backend: Backend,
                 schema: Schema | Sequence[str] | Mapping[str, str] | ProposedSchema, *,
                 saliency: Sequence[Sequence[int] | None] | None = None, max_retries: int = 2,
                 price_per_prompt_token: float | None = None,
                 price_per_completion_token: float | None = None, task: str = "",
                 show_progress: bool = True, name: str | None = None):
        if not isinstance(max_retries, int) or max_retries < 0:
            raise PeapError(f"max_retries must be an integer >= 0, got {max_retries!r}")
        self.backend = as_backend(backend)
        self.schema, self.descriptions = _schema_of(schema)
        self.saliency = saliency
        self.max_retries = max_retries
        self.prices = (price_per_prompt_token, price_per_completion_token)
        self.task = task
        self.show_progress = show_progress
        self.name = name or f"LLM ({self.backend.name})"

    def prompt(self, i: int, example: Mapping, toks: Sequence[str],
               salient: Sequence[int] | None = None) -> str:
        """The first user message for example ``i`` (``salient``: its marked positions)."""
        spans = "\n".join(f"- {n}: {self.descriptions.get(n) or '(no description)'}"
                          + (" [may not be empty]" if n in self.schema.required else "")
                          for n in self.schema.spans)
        mask = ("Tokens marked with * are salient (they matter most to the model).\n"
                if salient else "")
        last = self.schema.spans[-1]
        names = ", ".join(f'"{n}": [s, e]' for n in self.schema.spans)
        return ((f"{self.task}\n" if self.task else "") +
                f"Split this prompt's {len(toks)} tokens into these spans, in this order:\n"
                f"{spans}\n"
                "Rules: every token belongs to exactly one span; spans are consecutive ranges "
                "[start, end) of token indices (end exclusive) in the order above; the first "
                f"starts at 0, each next one starts where the previous ends; an empty span is "
                f"[k, k]; '{last}' is exactly the last token [{len(toks) - 1}, {len(toks)}].\n"
                f"{mask}"
                f'Answer with JSON only: {{"spans": {{{names}}}}}\n\n'
                + _example_block(i, example, toks, salient))

    def __call__(self, examples: Sequence[Mapping], tokens: Sequence[Sequence[str]], *,
                 progress: Progress | None = None) -> Suggestion:
        from tqdm.auto import tqdm

        saliency = self.saliency
        if saliency is None:
            own = [e.get("salient") if isinstance(e, Mapping) else None for e in examples]
            saliency = own if any(m is not None for m in own) else None
        _check_inputs(examples, tokens, saliency)
        usage = Usage(*self.prices)
        spans: list[dict | None] = []
        failed: dict[int, str] = {}
        attempts: list[int] = []
        n = len(tokens)
        bar = tqdm(total=n, desc=self.name, unit="ex", disable=not self.show_progress, leave=False)
        try:
            for i in range(n):
                salient = None if saliency is None else saliency[i]
                got, error, k = self._tag(i, examples[i], tokens[i], salient, usage)
                spans.append(got)
                attempts.append(k)
                if got is None:
                    failed[i] = error
                info = usage.as_dict()
                bar.update(1)
                bar.set_postfix(tokens=info["tokens"], cost=_money(info["cost"]),
                                failed=len(failed), refresh=False)
                if progress is not None:
                    progress(i + 1, n, {**info, "failed": len(failed)})
        finally:
            bar.close()
        info = {**usage.as_dict(), "attempts": attempts, "backend": self.backend.name,
                "failed": len(failed)}
        if isinstance(self.backend, TransformersBackend):
            info["truncated_prompts"] = self.backend.truncated
        return Suggestion(list(self.schema.spans), spans, f"llm:{self.backend.name}", failed, info)

    def _tag(self, i, example, toks, salient, usage: Usage):
        """(spans or None, last error, attempts) for one example."""
        messages = [{"role": "system", "content": SYSTEM},
                    {"role": "user", "content": self.prompt(i, example, toks, salient)}]
        error = ""
        for attempt in range(self.max_retries + 1):
            reply = self.backend(messages)
            usage.add(reply)
            try:
                value = parse_json_answer(reply.text)
                raw = spans_from_answer(value, self.schema, len(toks))
                ranges = self.schema.validate(raw, len(toks))
                return dict(zip(self.schema.spans, ranges)), "", attempt + 1
            except PeapError as err:      # SchemaError is one: the schema's own message
                error = str(err)
            if attempt < self.max_retries:
                usage.retries += 1
                messages = messages + [{"role": "assistant", "content": reply.text},
                                       {"role": "user", "content": _retry_text(error)}]
        return None, error, self.max_retries + 1


def _money(cost):
    return "?" if cost is None else f"{cost:.4f}"
