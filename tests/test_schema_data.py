"""Schema validation, dataset construction and their file formats (DESIGN.md section 7)."""

import copy
import json

import pytest

import peap_widget as pw
from peap_widget import DatasetError, Schema, SchemaError
from tiny import SCHEMA, tiny_records, tiny_tokenizer


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def records_with(i, **changes):
    recs = tiny_records()
    recs[i] = {**recs[i], **changes}
    return recs


def spans_with(i, **span_changes):
    recs = tiny_records()
    recs[i] = copy.deepcopy(recs[i])
    for name, value in span_changes.items():
        if value is None:
            del recs[i]["spans"][name]
        else:
            recs[i]["spans"][name] = value
    return recs


def test_valid_dataset_builds(tok):
    ds = pw.Dataset.from_records(tiny_records(), tok)
    assert list(ds.schema) == SCHEMA
    assert len(ds) == 5
    assert ds.examples[1].spans[0] == (0, 0)          # empty prefix allowed
    assert ds.tokens(0)[:3] == ["When", "Mary", "and"]
    assert ds.examples[0].correct_id == tok.convert_tokens_to_ids("Mary")




def expect_schema_error(recs, tok, example, span, rule):
    with pytest.raises(SchemaError) as info:
        pw.Dataset.from_records(recs, tok)
    err = info.value
    assert (err.example, err.span, err.rule) == (example, span, rule), str(err)
    assert f"example {example}" in str(err)
    if span is not None:
        assert repr(span) in str(err)
    return err


def test_unknown_span(tok):
    recs = spans_with(3, bogus=[0, 0])
    expect_schema_error(recs, tok, 3, "bogus", "unknown_span")


def test_missing_span(tok):
    expect_schema_error(spans_with(2, S2=None), tok, 2, "S2", "missing_span")


def test_out_of_range(tok):
    # example 3 has 10 tokens; 'to' claims [9, 11)
    expect_schema_error(spans_with(3, to=[9, 11]), tok, 3, "to", "out_of_range")


def test_negative_start(tok):
    expect_schema_error(spans_with(0, prefix=[-1, 1]), tok, 0, "prefix", "out_of_range")


def test_reversed_range(tok):
    expect_schema_error(spans_with(0, IO=[2, 1]), tok, 0, "IO", "reversed")


def test_gap_between_spans(tok):
    # 'and' is [2, 3); start S1 at 4 instead of 3 -> gap
    err = expect_schema_error(spans_with(0, S1=[4, 4]), tok, 0, "S1", "contiguous")
    assert "gap" in str(err)


def test_overlap_between_spans(tok):
    err = expect_schema_error(spans_with(0, S1=[2, 4]), tok, 0, "S1", "contiguous")
    assert "overlap" in str(err)


def test_first_span_must_start_at_zero(tok):
    expect_schema_error(spans_with(0, prefix=[1, 1]), tok, 0, "prefix", "contiguous")


def test_last_token_alone(tok):
    # example 0 has 14 tokens: put the last two tokens in the last span
    err = expect_schema_error(spans_with(0, action2=[10, 12], to=[12, 14]), tok, 0, "to",
                              "last_token_alone")
    assert "[13, 14)" in str(err)


def test_spans_must_cover_every_token(tok):
    # spans stop one token short of the prompt's end
    expect_schema_error(spans_with(0, action2=[10, 12], to=[12, 13]), tok, 0, "to",
                        "last_token_alone")


def test_required_span_empty(tok):
    with pytest.raises(SchemaError) as info:
        pw.Dataset.from_records(tiny_records(), tok, schema=Schema(SCHEMA, required=["prefix"]))
    assert (info.value.example, info.value.span, info.value.rule) == (1, "prefix", "nonempty")


def test_non_integer_range(tok):
    expect_schema_error(spans_with(4, IO=["a", 2]), tok, 4, "IO", "format")
    expect_schema_error(spans_with(4, IO=[1.5, 2]), tok, 4, "IO", "format")


def test_schema_name_rules():
    with pytest.raises(SchemaError, match="unique"):
        Schema(["A", "B", "A"])
    with pytest.raises(SchemaError, match="at least one span"):
        Schema([])
    with pytest.raises(SchemaError, match="not in the schema"):
        Schema(["A", "B"], required=["C"])


def test_counterfactual_length_mismatch_names_example(tok):
    recs = records_with(2, corrupted=tiny_records()[2]["corrupted"] + " to")
    with pytest.raises(DatasetError) as info:
        pw.Dataset.from_records(recs, tok)
    assert info.value.example == 2 and "same length" in str(info.value)
    assert "18 tokens" in str(info.value) and "17" in str(info.value)


def test_answer_must_be_one_token(tok):
    with pytest.raises(DatasetError) as info:
        pw.Dataset.from_records(records_with(1, correct="Mary John"), tok)
    assert info.value.example == 1 and info.value.field == "correct"
    assert "2 tokens" in str(info.value)


def test_missing_field(tok):
    recs = tiny_records()
    del recs[4]["incorrect"]
    with pytest.raises(DatasetError) as info:
        pw.Dataset.from_records(recs, tok)
    assert (info.value.example, info.value.field) == (4, "incorrect")


def test_empty_dataset(tok):
    with pytest.raises(DatasetError, match="empty"):
        pw.Dataset.from_records([], tok)


def test_counterfactual_ablation_needs_corrupted_prompts(tok):
    recs = tiny_records()
    del recs[3]["corrupted"]
    ds = pw.Dataset.from_records(recs, tok)
    assert not ds.has_counterfactuals
    with pytest.raises(DatasetError) as info:
        ds.require_counterfactuals()
    assert info.value.example == 3


def test_json_round_trip(tok, tmp_path):
    ds = pw.Dataset.from_records(tiny_records(), tok, schema=Schema(SCHEMA, required=["IO"]))
    path = tmp_path / "ds.json"
    ds.to_json(path)
    back = pw.Dataset.from_json(path, tok)
    assert back.schema == ds.schema
    assert back.to_records() == ds.to_records() == json.loads(path.read_text())["examples"]
    assert [e.spans for e in back.examples] == [e.spans for e in ds.examples]


def test_bad_json_is_a_clear_error(tok, tmp_path):
    p = tmp_path / "bad.json"
    p.write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        pw.Dataset.from_json(p, tok)
    p.write_text(json.dumps({"examples": []}))
    with pytest.raises(DatasetError, match="needs 'schema' and 'examples'"):
        pw.Dataset.from_json(p, tok)


def test_schema_json_round_trip(tmp_path):
    s = Schema(SCHEMA, required=["IO", "S2"])
    assert Schema.from_json(s.to_json()) == s
    s.to_json(tmp_path / "s.json")
    assert Schema.from_json(tmp_path / "s.json") == s


def test_peap_csv_round_trip(tok, tmp_path):
    ds = pw.Dataset.from_records(tiny_records(), tok)
    path = tmp_path / "ds.csv"
    df = ds.to_peap_csv(path)
    assert list(df.columns) == ["prompt", "corrupted", "correct", "incorrect", *SCHEMA, "length"]
    assert df.loc[0, "S2"] == 9 and df.loc[0, "length"] == 14 and df.loc[1, "prefix"] == 0
    back = pw.Dataset.from_peap_csv(path, tok)
    assert list(back.schema) == SCHEMA
    assert back.to_records() == ds.to_records()


def test_peap_csv_errors(tok, tmp_path):
    ds = pw.Dataset.from_records(tiny_records(), tok)
    df = ds.to_peap_csv()
    with pytest.raises(DatasetError, match=r"lacks the column\(s\) \['length'\]"):
        pw.Dataset.from_peap_csv(df.drop(columns=["length"]), tok)
    bad = df.copy()
    bad.loc[2, "length"] = 99
    with pytest.raises(DatasetError) as info:
        pw.Dataset.from_peap_csv(bad.astype(str), tok)
    assert info.value.example == 2 and "length 99" in str(info.value)
    bad = df.copy().astype(str)
    bad.loc[1, "S1"] = "x"
    with pytest.raises(SchemaError) as info:
        pw.Dataset.from_peap_csv(bad, tok)
    assert info.value.example == 1


def test_batches_are_right_padded(tok):
    import torch

    ds = pw.Dataset.from_records(tiny_records(), tok)
    (b,) = list(ds.batches(None))
    assert b.clean_ids.shape == (5, 17)
    assert b.lengths.tolist() == [14, 13, 17, 10, 14]
    assert (b.span_ids[3, 10:] == -1).all() and (b.clean_ids[3, 10:] == tok.pad_token_id).all()
    assert b.span_ids[0, :14].tolist() == [0, 1, 2, 3, 4, 4, 4, 4, 4, 5, 6, 6, 6, 7]
    onehot = b.span_onehot(torch.float64)
    assert onehot.sum().item() == sum(b.lengths.tolist())
    sizes = [x.size for x in ds.batches(2)]
    assert sizes == [2, 2, 1]
