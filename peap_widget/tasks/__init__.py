"""Built-in tasks and the loader for your own files.

    >>> task = pw.tasks.get("ioi", n=100)          # or "greater-than"
    >>> ds = task.dataset(model)                   # spans mapped to the model's tokens
    >>> task = pw.tasks.from_file("mine.jsonl")    # or a PEAP CSV
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import DatasetError
from ..schema import Schema
from .base import Task, char_spans, token_spans
from .greater_than import YearProbDiff, greater_than
from .ioi import ioi

BUILTIN = {"ioi": ioi, "greater-than": greater_than}


def names() -> list[str]:
    return sorted(BUILTIN)


def get(name: str, **kwargs) -> Task:
    """A built-in task by name (``"ioi"``, ``"greater-than"``); kwargs go to its generator."""
    if name not in BUILTIN:
        raise DatasetError(f"unknown task {name!r}; built-in tasks: {names()} (or a .jsonl / "
                           ".csv file of your own)")
    return BUILTIN[name](**kwargs)


class FileTask(Task):
    """A task read from a file whose spans are already in tokens (PEAP CSV, or JSONL records
    with ``spans``): `dataset` uses them as they are."""

    def token_records(self, tokenizer):
        return [{k: v for k, v in r.items() if k != "char_spans"} if "spans" in r
                else super(FileTask, self).token_records(tokenizer)[i]
                for i, r in enumerate(self.records)]


def from_file(path: str | Path, schema=None) -> Task:
    """Your own data: ``.jsonl`` (one record per line with ``clean``, ``corrupted``, ``correct``,
    ``incorrect`` and ``spans`` in tokens or ``char_spans`` in characters) or ``.csv`` (PEAP's
    form: ``prompt``, ``corrupted``, ``correct``, ``incorrect``, one column per span with its first
    token index, ``length``). The schema is the first record's span order unless given."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"no such file: {path}")
    if path.suffix == ".jsonl":
        records = []
        for i, line in enumerate(path.read_text().splitlines()):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DatasetError(f"{path} line {i + 1} is not JSON: {err}") from None
        if not records:
            raise DatasetError(f"{path} holds no records")
        first = records[0].get("spans") or records[0].get("char_spans")
        if not isinstance(first, dict):
            raise DatasetError("each record needs 'spans' (tokens) or 'char_spans' (characters)",
                               example=0, field="spans")
        return FileTask(path.stem, Schema(schema or list(first)), records)
    if path.suffix == ".csv":
        import pandas as pd

        df = pd.read_csv(path, keep_default_na=False, dtype=str)
        fixed = ("prompt", "corrupted", "correct", "incorrect", "length")
        missing = [c for c in ("prompt", "correct", "incorrect", "length") if c not in df.columns]
        if missing:
            raise DatasetError(f"{path} lacks the column(s) {missing}; a PEAP CSV has prompt, "
                               "corrupted, correct, incorrect, one column per span, length")
        span_cols = list(schema) if schema else [c for c in df.columns if c not in fixed]
        records = []
        for i, row in enumerate(df.to_dict("records")):
            try:
                starts = [int(row[c]) for c in span_cols] + [int(row["length"])]
            except (KeyError, ValueError) as err:
                raise DatasetError(f"span starts and length must be integers ({err})", example=i) from None
            rec = {"clean": row["prompt"], "correct": row["correct"], "incorrect": row["incorrect"],
                   "spans": {c: [starts[j], starts[j + 1]] for j, c in enumerate(span_cols)},
                   "_length": starts[-1]}
            if row.get("corrupted"):
                rec["corrupted"] = row["corrupted"]
            records.append(rec)
        return FileTask(path.stem, Schema(span_cols), records)
    raise DatasetError(f"unknown file type {path.suffix!r}: use .jsonl or .csv")


__all__ = ["Task", "FileTask", "get", "names", "from_file", "ioi", "greater_than", "YearProbDiff",
           "char_spans", "token_spans"]
