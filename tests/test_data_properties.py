"""Property-based tests of the data layer (hypothesis): random valid datasets round-trip through
JSON, the PEAP CSV form and the SchemaEditor exactly; random invalid ones raise `SchemaError` /
`PeapError` and nothing else."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import peap_widget as pw
from peap_widget.errors import PeapError
from peap_widget.models.examples import NAMES, WORDS, tiny_tokenizer
from peap_widget.data.schema import RESERVED_NAMES

TOK = tiny_tokenizer()
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

span_name = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJ_0123456789-", min_size=1,
                    max_size=8).filter(lambda n: n not in RESERVED_NAMES)


@st.composite
def schemas(draw):
    names = draw(st.lists(span_name, min_size=1, max_size=5, unique=True))
    required = draw(st.lists(st.sampled_from(names), unique=True, max_size=len(names)))
    return pw.Schema(names, required)


@st.composite
def records_for(draw, schema: pw.Schema):
    """One valid record of ``schema``: words from the tiny vocabulary, a contiguous covering
    partition with the last token alone in the last span, required spans non-empty."""
    names = list(schema.spans)
    sizes = []
    for n in names[:-1]:
        low = 1 if n in schema.required else 0
        sizes.append(draw(st.integers(low, 3)))
    sizes.append(1)
    length = sum(sizes)
    words = draw(st.lists(st.sampled_from(WORDS), min_size=length, max_size=length))
    corrupted = draw(st.lists(st.sampled_from(WORDS), min_size=length, max_size=length))
    spans, pos = {}, 0
    for n, k in zip(names, sizes):
        spans[n] = [pos, pos + k]
        pos += k
    rec = {"clean": " ".join(words), "correct": draw(st.sampled_from(NAMES)),
           "incorrect": draw(st.sampled_from(NAMES)), "spans": spans}
    if draw(st.booleans()):
        rec["corrupted"] = " ".join(corrupted)
    if draw(st.booleans()):
        rec["note"] = draw(st.text(max_size=12))       # extra fields travel along
    return rec


@st.composite
def datasets(draw):
    schema = draw(schemas())
    recs = draw(st.lists(records_for(schema), min_size=1, max_size=4))
    return schema, recs


@SETTINGS
@given(datasets())
def test_valid_datasets_round_trip_through_json(tmp_path_factory, case):
    schema, recs = case
    ds = pw.Dataset.from_records(recs, TOK, schema=schema)
    path = tmp_path_factory.mktemp("json") / "ds.json"
    ds.to_json(path)
    back = pw.Dataset.from_json(path, TOK)
    assert back.schema == ds.schema and back.to_records() == ds.to_records()
    assert [e.clean_ids for e in back.examples] == [e.clean_ids for e in ds.examples]


@SETTINGS
@given(datasets())
def test_valid_datasets_round_trip_through_peap_csv(tmp_path_factory, case):
    schema, recs = case
    ds = pw.Dataset.from_records(recs, TOK, schema=schema)
    path = tmp_path_factory.mktemp("csv") / "ds.csv"
    ds.to_peap_csv(path)
    back = pw.Dataset.from_peap_csv(path, TOK, schema=list(schema.spans))
    strip = lambda rs: [{k: v for k, v in r.items() if k != "note"} for r in rs]  # noqa: E731
    assert strip(back.to_records()) == strip(ds.to_records())


@SETTINGS
@given(datasets())
def test_valid_datasets_round_trip_through_the_editor(case):
    schema, recs = case
    ds = pw.Dataset.from_records(recs, TOK, schema=schema)
    editor = pw.SchemaEditor(ds)
    assert editor.dataset.to_records() == ds.to_records()
    assert editor.schema.spans == ds.schema.spans


def _break(draw, rec: dict) -> dict:
    """One random way to make a valid record invalid (or at least strange)."""
    rec = json.loads(json.dumps(rec))
    names = list(rec["spans"])
    how = draw(st.sampled_from(["shift", "overlap", "past_end", "type", "float", "missing",
                                "not_a_pair", "drop_span", "swap_answer", "corrupt_length"]))
    n = draw(st.sampled_from(names))
    if how == "shift":
        rec["spans"][n] = [x + draw(st.integers(-3, 3)) for x in rec["spans"][n]]
    elif how == "overlap" and len(names) > 1:
        rec["spans"][names[0]][1] += 1
    elif how == "past_end":
        rec["spans"][names[-1]][1] += draw(st.integers(1, 100))
    elif how == "type":
        rec["spans"][n] = draw(st.sampled_from([None, "0-1", {"a": 1}, [True, False], 3]))
    elif how == "float":
        rec["spans"][n] = [draw(st.sampled_from([math.inf, -math.inf, math.nan, 0.5])), 1]
    elif how == "missing":
        rec.pop(draw(st.sampled_from(["clean", "correct", "incorrect", "spans"])))
    elif how == "not_a_pair":
        rec["spans"][n] = [0, 1, 2]
    elif how == "drop_span" and len(names) > 1:
        rec["spans"].pop(n)
    elif how == "swap_answer":
        rec["correct"] = draw(st.sampled_from(["", "Mary John", 7, "unknownword"]))
    elif how == "corrupt_length":
        rec["corrupted"] = rec["clean"] + " and"
    return rec


@SETTINGS
@given(st.data())
def test_invalid_records_raise_peap_errors_only(data):
    schema, recs = data.draw(datasets())
    i = data.draw(st.integers(0, len(recs) - 1))
    recs = list(recs)
    recs[i] = _break(data.draw, recs[i])
    try:
        pw.Dataset.from_records(recs, TOK, schema=schema)
    except PeapError:
        pass                       # SchemaError / DatasetError: what is wrong, where


@SETTINGS
@given(st.data())
def test_invalid_files_raise_peap_errors_only(tmp_path_factory, data):
    """Random bytes spliced into a valid .jsonl file: loading and tokenizing either works or
    raises a PeapError naming the file, line or example."""
    schema, recs = data.draw(datasets())
    text = "".join(json.dumps(r) + "\n" for r in recs).encode()
    pos = data.draw(st.integers(0, len(text)))
    junk = data.draw(st.binary(min_size=1, max_size=4))
    path = tmp_path_factory.mktemp("fuzz") / "data.jsonl"
    path.write_bytes(text[:pos] + junk + text[pos:])
    try:
        pw.tasks.from_file(path, schema=list(schema.spans)).dataset(TOK)
    except PeapError as err:
        assert "data.jsonl" in str(err) or "example" in str(err), str(err)


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, 1e300])
def test_non_finite_span_bounds_are_schema_errors(value):
    rec = {"clean": "Mary and John", "correct": "Mary", "incorrect": "John",
           "spans": {"a": [0, value], "b": [2, 3]}}
    with pytest.raises(PeapError):
        pw.Dataset.from_records([rec], TOK)
