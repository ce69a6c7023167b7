"""What the SchemaEditor keeps per example, and its annotation file: span ranges as rows (one
``[start, end]`` or None per span type), the state built from a Dataset or records, and reading
a saved file back (checked against the data it claims to annotate)."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..data.dataset import Dataset, encode_text, tokenizer_of
from ..data.schema import Schema
from ..errors import DatasetError, PeapError, SchemaError, where_prefix

#: Span type colours, in the order new span types get them (Tableau 10).
PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2", "#edc948",
           "#ff9da7", "#9c755f", "#bab0ac"]
#: The span type an editor starts with when neither the data nor ``schema=`` names any.
DEFAULT_SPAN = "END"

HEX_COLOR = re.compile(r"^#(?:[0-9a-fA-F]{3}){1,2}$")


def load_source(dataset, schema, model) -> dict:
    """Tokens, record fields, starting span types and annotations from a Dataset or records."""
    if isinstance(dataset, Dataset):
        names, required = schema_names(schema) if schema is not None else schema_names(dataset.schema)
        tokens = [[str(x) for x in dataset.tokens(i)] for i in range(len(dataset))]
        records = dataset.to_records()
        span_dicts = [r.pop("spans") for r in records]
        tokenizer = dataset.tokenizer
        if schema is not None:   # a new schema for an annotated dataset: spans kept by name
            span_dicts = [{k: v for k, v in d.items() if k in names} for d in span_dicts]
    else:
        if isinstance(dataset, Mapping) or isinstance(dataset, (str, bytes)) or \
                not isinstance(dataset, Sequence):
            raise DatasetError("SchemaEditor needs a pw.Dataset or a list of records "
                               f"(dicts with 'clean', ...), got {type(dataset).__name__}")
        if model is None:
            raise DatasetError("records need model= (a pw Model or a tokenizer) to be tokenized; "
                               "or pass a pw.Dataset")
        if not dataset:
            raise DatasetError("the dataset is empty: give at least one record")
        tokenizer = tokenizer_of(model)
        tokens, records, span_dicts = [], [], []
        for i, rec in enumerate(dataset):
            if not isinstance(rec, Mapping):
                raise DatasetError(f"a record is a mapping, got {type(rec).__name__}", example=i)
            if not isinstance(rec.get("clean"), str):
                raise DatasetError("needs the clean prompt as a string", example=i, field="clean")
            spans = rec.get("spans") or {}
            if not isinstance(spans, Mapping):
                raise DatasetError("spans must be a mapping {name: [start, end)}", example=i,
                                   field="spans")
            ids = encode_text(tokenizer, rec["clean"])
            tokens.append([str(x) for x in tokenizer.convert_ids_to_tokens(ids)])
            records.append({k: v for k, v in rec.items() if k != "spans"})
            span_dicts.append(dict(spans))
        if schema is not None:
            names, required = schema_names(schema)
        else:
            names = list(dict.fromkeys(n for d in span_dicts for n in d)) or [DEFAULT_SPAN]
            required = set()
    span_types = [{"name": n, "color": PALETTE[k % len(PALETTE)],
                   "required": n in required and n != names[-1]} for k, n in enumerate(names)]
    annotations = []
    for i, (spans, toks) in enumerate(zip(span_dicts, tokens)):
        unknown = [n for n in spans if n not in names]
        if unknown:
            raise DatasetError(f"span {unknown[0]!r} is not in the schema {names}", example=i,
                               field="spans")
        row = [None if spans.get(n) is None else span_pair(spans[n], i, n) for n in names]
        if not spans and toks:
            row[-1] = [len(toks) - 1, len(toks)]
        annotations.append(row)
    return {"dataset": dataset if isinstance(dataset, Dataset) else None, "tokenizer": tokenizer,
            "tokens": tokens, "examples": records, "span_types": span_types,
            "annotations": annotations}


def schema_names(schema) -> tuple[list[str], set[str]]:
    if not isinstance(schema, Schema):
        if isinstance(schema, str):
            raise SchemaError(f"schema is a pw.Schema or a list of span names, got the string "
                              f"{schema!r}", rule="format")
        schema = Schema(list(schema))
    return list(schema.spans), set(schema.required)


def read_annotation_file(path, examples: list[dict], tokens: list[list[str]]) -> dict:
    """The span types and annotations saved in ``path`` for these examples (their prompts and
    token counts must match). Raises `DatasetError` and leaves the file alone otherwise."""
    path = Path(path)
    keep = "it was left untouched; fix it, or move it away (or pass another path) to start afresh"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DatasetError(f"the annotation file {path} is not valid JSON ({err}); {keep}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"cannot read the annotation file {path}: {err}") from None
    if not isinstance(doc, Mapping) or not isinstance(doc.get("examples"), list) \
            or not isinstance(doc.get("schema"), Mapping):
        raise DatasetError(f"{path} is not a SchemaEditor annotation file (it needs 'schema' and "
                           f"'examples'); {keep}")
    saved = doc["examples"]
    if len(saved) != len(examples):
        raise DatasetError(f"the annotation file {path} holds {len(saved)} examples but the dataset "
                           f"has {len(examples)}: it belongs to other data; {keep}")
    for i, (rec, fields) in enumerate(zip(saved, examples)):
        clean = rec.get("clean") if isinstance(rec, Mapping) else None
        if clean != fields.get("clean"):
            raise DatasetError(f"the annotation file {path} does not match the dataset: its prompt "
                               f"is {clean!r}, the dataset's {fields.get('clean')!r}; {keep}",
                               example=i)
    lengths = doc.get("lengths")
    if isinstance(lengths, list):
        for i, (n, toks) in enumerate(zip(lengths, tokens)):
            if n != len(toks):
                raise DatasetError(f"the annotation file {path} was made with another tokenizer: "
                                   f"{n} tokens there, {len(toks)} here; {keep}", example=i)
    try:
        schema = Schema.from_dict(doc["schema"])
    except SchemaError as err:
        raise DatasetError(f"the schema in {path} is invalid: {err}; {keep}") from None
    colors = doc.get("span_colors") if isinstance(doc.get("span_colors"), Mapping) else {}
    names = list(schema.spans)
    marks = doc["schema"].get("required", ()) if isinstance(doc["schema"], Mapping) else ()
    explicit = set(schema.to_dict()["required"]) | ({names[-1]} & set(marks))
    span_types = []
    for k, n in enumerate(names):
        c = colors.get(n)
        color = hex_color(c) if isinstance(c, str) and HEX_COLOR.match(c) else PALETTE[k % len(PALETTE)]
        span_types.append({"name": n, "color": color, "required": n in explicit})
    annotations = []
    for i, rec in enumerate(saved):
        spans = rec.get("spans") or {}
        if not isinstance(spans, Mapping) or any(n not in names for n in spans):
            raise DatasetError(f"the spans in {path} name span types outside its schema {names} "
                               f"(or are not a mapping); {keep}", example=i)
        try:
            annotations.append([None if spans.get(n) is None else span_pair(spans[n], i, n) for n in names])
        except SchemaError as err:
            raise DatasetError(f"{path}: {err}; {keep}") from None
    state = {"span_types": span_types, "annotations": annotations}
    if doc.get("suggestion"):         # files written before suggestions have none
        state["suggestion"] = read_suggestion(doc["suggestion"], len(saved), f"{path}: ", keep)
    return state


def read_suggestion(sug, n, where, keep) -> dict:
    """A saved pending layer, checked: one proposal (``{name: [start, end)}`` or None) and one
    status (None, "accepted", "rejected") per example."""
    if not isinstance(sug, Mapping) or not isinstance(sug.get("spans"), list) \
            or not isinstance(sug.get("span_names"), list):
        raise DatasetError(f"{where}its 'suggestion' needs 'span_names' and 'spans'; {keep}")
    status = sug.get("status") if isinstance(sug.get("status"), list) else [None] * n
    if len(sug["spans"]) != n or len(status) != n:
        raise DatasetError(f"{where}its 'suggestion' holds {len(sug['spans'])} proposals and "
                           f"{len(status)} statuses for {n} examples; {keep}")
    spans = []
    for i, (p, st) in enumerate(zip(sug["spans"], status)):
        if st not in (None, "accepted", "rejected"):
            raise DatasetError(f"{where}suggestion status {st!r} is not null, 'accepted' or "
                               f"'rejected'; {keep}", example=i)
        if p is not None and not isinstance(p, Mapping):
            raise DatasetError(f"{where}a suggested annotation is {{name: [start, end)}} or null; "
                               f"{keep}", example=i)
        try:
            spans.append(None if p is None else {str(k): span_pair(v, i, k) for k, v in p.items()})
        except SchemaError as err:
            raise DatasetError(f"{where}suggestion: {err}; {keep}") from None
    failed = sug.get("failed") if isinstance(sug.get("failed"), Mapping) else {}
    return {"id": str(sug.get("id") or os.urandom(6).hex()), "name": str(sug.get("name", "")),
            "source": str(sug.get("source", "")), "span_names": [str(x) for x in sug["span_names"]],
            "spans": spans, "failed": {str(k): str(v) for k, v in failed.items()},
            "info": plain_json(sug.get("info") or {}), "status": status}


def plain_json(value):
    """A suggester's ``info`` as JSON values (numbers, strings, lists, dicts; NaN as None)."""
    if isinstance(value, Mapping):
        return {str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_json(v) for v in value]
    if isinstance(value, (str, bool)) or value is None:
        return value
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(x):
        return None
    return int(x) if x == int(x) and abs(x) < 2 ** 53 and not isinstance(value, float) else x


def span_pair(value, example, name) -> list[int]:
    """``[start, end]`` as two ints, else a `SchemaError` (rule ``format``)."""
    try:
        start, end = value
        if any(isinstance(x, bool) or int(x) != x for x in (start, end)):
            raise TypeError
        return [int(start), int(end)]
    except (TypeError, ValueError):
        raise SchemaError(f"a span is a [start, end) pair of token indices, got {value!r}",
                          example=example, span=name, rule="format") from None


def padded_row(ranges, n) -> list:
    """A copy of one example's ranges, padded with None to ``n`` span types."""
    row = [None if r is None else list(r) for r in list(ranges)[:n]]
    return row + [None] * (n - len(row))


def place_empty(row) -> list:
    """Empty spans sit at the end of the nearest earlier annotated span (0 if none), as in
    ``logic.js`` ``placeEmpty``."""
    k, out = 0, []
    for r in row:
        if r is not None and r[0] == r[1]:
            r = [k, k]
        elif r is not None:
            k = r[1]
        out.append(r)
    return out


def hex_color(color) -> str:
    if not isinstance(color, str) or not HEX_COLOR.match(color):
        raise PeapError(f"a colour is '#rrggbb' (or '#rgb'), got {color!r}")
    c = color.lower()
    return c if len(c) == 7 else "#" + "".join(ch * 2 for ch in c[1:])


def bare_message(err: SchemaError) -> str:
    """A SchemaError's message without its "example i, span 'x': " prefix and rule suffix."""
    msg = str(err)
    prefix, suffix = where_prefix(err.example, "span", err.span), f" [rule: {err.rule}]"
    msg = msg[len(prefix):] if msg.startswith(prefix) else msg
    return msg[: -len(suffix)] if msg.endswith(suffix) else msg

