"""Tasks: prompts, counterfactuals, answers and spans in *characters*, for any tokenizer.

A task keeps every span as a character range of the clean prompt, so the same task works with
a word-level toy tokenizer and with GPT-2's BPE: `Task.dataset` maps characters to tokens with
the tokenizer's offsets (a token belongs to the span holding its first non-space character;
special tokens the tokenizer adds at the start belong to the first span).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..dataset import Dataset
from ...errors import DatasetError
from ..schema import Schema


def char_spans(parts: list[tuple[str, str]]) -> tuple[str, dict[str, list[int]]]:
    """Join ``(span, text)`` parts into a prompt; each span's range covers its text and the
    separator before it, so the spans cover every character in order."""
    text, spans = "", {}
    for name, piece in parts:
        start = len(text)
        if piece:
            text += piece if not text else " " + piece
        spans[name] = [start, len(text)]
    return text, spans


@dataclass
class Task:
    """A named task: records with ``clean``, ``corrupted``, ``correct``, ``incorrect`` and
    ``char_spans`` ``{span: [first_char, end_char)}``, a `Schema`, and its metric."""

    name: str
    schema: Schema
    records: list[dict]
    metric: object = "logit_diff"
    description: str = ""
    meta: dict = field(default_factory=dict)
    #: the answer follows a space in running text ("... gave a drink to Mary"), so BPE
    #: tokenizers that fold the space into the word get " Mary"
    answer_space: bool = False

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return f"Task({self.name!r}, {len(self)} records, schema={list(self.schema)})"

    def texts(self) -> list[str]:
        out = []
        for r in self.records:
            out += [r["clean"], r["corrupted"], r["correct"], r["incorrect"]]
        return out

    def split(self, n: int) -> tuple[Task, Task]:
        """The first ``n`` records and the rest, as two tasks."""
        from dataclasses import replace

        return replace(self, records=self.records[:n]), replace(self, records=self.records[n:])

    def metric_for(self, model):
        """The metric to attribute with (a name, or a callable built for the model's tokenizer)."""
        return self.metric(model.tokenizer) if callable(self.metric) else self.metric

    def token_records(self, tokenizer) -> list[dict]:
        """Records with token spans for ``tokenizer``; with `answer_space`, answers take a
        leading space where the tokenizer makes one token of it (GPT-2 style BPE: " Mary")."""
        from tqdm.auto import tqdm

        out = []
        many = len(self.records) >= 2000          # a bar only where tokenizing takes a while
        for i, r in enumerate(tqdm(self.records, desc=f"tokenizing {self.name}", unit="rec",
                                   disable=not many, leave=False)):
            for f in ("clean", "correct", "incorrect"):
                if not isinstance(r.get(f), str):
                    raise DatasetError(f"must be a string, got {type(r.get(f)).__name__}",
                                       example=i, field=f)
            rec = {k: v for k, v in r.items() if k != "char_spans"}
            rec["spans"] = token_spans(tokenizer, r["clean"], r["char_spans"], i)
            for f in ("correct", "incorrect"):
                rec[f] = answer_form(tokenizer, r[f], self.answer_space)
            out.append(rec)
        return out

    def dataset(self, model) -> Dataset:
        """Tokenize for ``model`` (or a tokenizer) and validate: a `Dataset`."""
        tok = getattr(model, "tokenizer", model)
        return Dataset.from_records(self.token_records(tok), tok, schema=self.schema)

    def to_jsonl(self, path: str | Path) -> Path:
        path = Path(path)
        with path.open("w") as f:
            for r in self.records:
                f.write(json.dumps(r) + "\n")
        return path


def answer_form(tokenizer, answer: str, spaced: bool) -> str:
    """``" " + answer`` when ``spaced`` and that is one token other than ``answer``'s own, else
    ``answer`` (the dataset then says what is wrong if it is not one token either)."""
    if spaced and not answer.startswith(" "):
        spaced_ids = tokenizer(" " + answer, add_special_tokens=False)["input_ids"]
        if len(spaced_ids) == 1 and spaced_ids != tokenizer(answer, add_special_tokens=False)["input_ids"]:
            return " " + answer
    return answer


def token_spans(tokenizer, text: str, spans: dict, example: int | None = None) -> dict:
    """Character spans of ``text`` -> token spans under ``tokenizer`` (see the module docs)."""
    try:
        enc = tokenizer(text, return_offsets_mapping=True)
    except (NotImplementedError, TypeError, ValueError):
        raise DatasetError("character spans need a fast tokenizer with offsets "
                           "(return_offsets_mapping)", example=example) from None
    if not isinstance(spans, dict) or not spans:
        raise DatasetError("char_spans must be an object {span: [start, end)}", example=example,
                           field="char_spans")
    for n, b in spans.items():
        ok = (isinstance(b, (list, tuple)) and len(b) == 2
              and all(isinstance(x, int) and not isinstance(x, bool) for x in b)
              and 0 <= b[0] <= b[1] <= len(text))
        if not ok:
            raise DatasetError(f"span {n!r}: a character span is [start, end) with 0 <= start <= "
                               f"end <= {len(text)} (the prompt's length), got {b!r}",
                               example=example, field="char_spans")
    # Spans in text order whatever the order of the keys (a file written with sort_keys=True
    # lists them alphabetically); each must start where the previous one ends or later.
    names = sorted(spans, key=lambda n: (spans[n][0], spans[n][1]))
    bounds = [spans[n] for n in names]
    for (n1, (s1, e1)), (n2, (s2, e2)) in zip(zip(names, bounds), zip(names[1:], bounds[1:])):
        if s2 < e1:
            raise DatasetError(f"character spans {n1!r} [{s1}, {e1}) and {n2!r} [{s2}, {e2}) "
                               "overlap", example=example, field="char_spans")
    owner = []
    for a, b in enc["offset_mapping"]:
        if a == b:  # a special token the tokenizer added
            owner.append(owner[-1] if owner else 0)
            continue
        c = a
        while c < b - 1 and text[c].isspace():
            c += 1
        k = next((j for j, (s, e) in enumerate(bounds) if s <= c < e), None)
        if k is None:
            raise DatasetError(f"character {c} ({text[c]!r}) of {text!r} lies in no span",
                               example=example, field="char_spans")
        owner.append(k)
    out, pos = {}, 0
    for k, n in enumerate(names):
        count = sum(1 for o in owner if o == k)
        out[n] = [pos, pos + count]
        pos += count
    return out
