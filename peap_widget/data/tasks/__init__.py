"""Built-in tasks and the loader for your own files.

    >>> model = pw.models.load("toy-ioi")
    >>> task = pw.tasks.get("ioi", n=8)            # or "greater-than"
    >>> ds = task.dataset(model)                   # spans mapped to the model's tokens
    >>> len(ds), ds.schema.spans[:4]
    (8, ('prefix', 'IO', 'and', 'S1'))
    >>> task.to_jsonl("mine.jsonl")                # one record per line
    PosixPath('mine.jsonl')
    >>> pw.tasks.from_file("mine.jsonl")           # or a PEAP CSV
    Task('mine', 8 records, schema=['prefix', 'IO', 'and', 'S1', 'S1+1', 'action1', 'S2', 'action2', 'to'])
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..dataset import peap_csv_records, read_csv
from ...errors import DatasetError, PeapError, in_file
from ...util.jsonio import load_json, read_text
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
    with ``spans``): `dataset` uses them as they are; records with ``char_spans`` are mapped to
    tokens as any task's."""

    def token_records(self, tokenizer):
        mapped = iter(Task.token_records(replace(self, records=[r for r in self.records
                                                                if "spans" not in r]), tokenizer))
        return [{k: v for k, v in r.items() if k != "char_spans"} if "spans" in r else next(mapped)
                for r in self.records]

    def dataset(self, model):
        """Tokenize for ``model`` and validate; problems name the file and the example."""
        try:
            return super().dataset(model)
        except PeapError as err:
            where = self.meta.get("path")
            raise (in_file(err, where) if where else err) from None


def from_file(path: str | Path, schema=None) -> Task:
    """Your own data: ``.jsonl`` (one record per line with ``clean``, ``corrupted``, ``correct``,
    ``incorrect`` and ``spans`` in tokens or ``char_spans`` in characters) or ``.csv`` (PEAP's
    form: ``prompt``, ``corrupted``, ``correct``, ``incorrect``, one column per span with its first
    token index, ``length``). The schema is the first record's spans in text order (by their
    start, whatever the order of the keys) unless given. Every problem raises a `PeapError`
    naming the file and the line or example."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"no such file: {path}")
    meta = {"path": str(path)}
    if path.suffix == ".jsonl":
        records = []
        for i, line in enumerate(read_text(path, "records", DatasetError).splitlines()):
            if not line.strip():
                continue
            rec = load_json(line, f"{path} line {i + 1}", DatasetError)
            if not isinstance(rec, dict):
                raise DatasetError(f"{path} line {i + 1}: a record is a JSON object with clean, "
                                   f"correct, incorrect and spans, got {type(rec).__name__}")
            spans = rec.get("spans", rec.get("char_spans"))
            if not isinstance(spans, dict):
                raise DatasetError(f"{path} line {i + 1}: each record needs 'spans' (tokens) or "
                                   "'char_spans' (characters), an object {span: [start, end]}",
                                   example=len(records), field="spans")
            records.append(rec)
        if not records:
            raise DatasetError(f"{path} holds no records")
        first = records[0].get("spans") or records[0].get("char_spans")
        return FileTask(path.stem, Schema(schema or text_order(first)), records, meta=meta)
    if path.suffix == ".csv":
        try:
            span_cols, records = peap_csv_records(read_csv(path), schema)
        except PeapError as err:
            raise in_file(err, path) from None
        return FileTask(path.stem, Schema(span_cols), records, meta=meta)
    raise DatasetError(f"unknown file type {path.suffix!r}: use .jsonl or .csv")


def text_order(spans: dict) -> list[str]:
    """Span names ordered by where they start (then end) in the text, ties in the given order."""
    def key(item):
        _, bounds = item
        try:
            return (float(bounds[0]), float(bounds[1]))
        except (TypeError, ValueError, IndexError, KeyError):
            return (float("inf"), float("inf"))   # malformed: validation names it later
    return [name for name, _ in sorted(spans.items(), key=key)]


__all__ = ["Task", "FileTask", "get", "names", "from_file", "ioi", "greater_than", "YearProbDiff",
           "char_spans", "token_spans"]
