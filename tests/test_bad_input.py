"""Bad input never gives a raw traceback or a silently wrong dataset: every malformed file or
record raises a `PeapError` naming the file, line or example (issue 13)."""

from __future__ import annotations

import gzip
import json
import random

import numpy as np
import pytest

import peap_widget as pw
from peap_widget.errors import PeapError
from peap_widget.models.examples import SCHEMA, WORDS, tiny_gpt2, tiny_records


@pytest.fixture(scope="module")
def model():
    hf, tok = tiny_gpt2()
    return pw.load_model(hf, tokenizer=tok)


# --- 1. character spans out of text order --------------------------------------------------------

def test_char_spans_in_any_key_order_attach_to_their_own_text(tmp_path, model):
    """A .jsonl written with sort_keys=True lists char_spans alphabetically; spans must follow
    their character ranges, not the order of the keys."""
    text = "When Mary and John went to the store , John gave a book to"
    a, b = text.index(" went"), text.index(" to", len(text) - 4)
    rec = {"clean": text, "corrupted": text.replace("Mary", "Anna").replace("John", "Tom"),
           "correct": "Mary", "incorrect": "John",
           "char_spans": {"late": [a, b], "early": [0, a], "to": [b, len(text)]}}
    path = tmp_path / "sorted.jsonl"
    path.write_text(json.dumps(rec, sort_keys=True) + "\n")
    task = pw.tasks.from_file(path)
    assert list(task.schema) == ["early", "late", "to"]          # text order, not key order
    ds = task.dataset(model)
    ex = ds.examples[0]
    toks = model.tokenizer.convert_ids_to_tokens(ex.clean_ids)
    spans = ex.span_dict(ds.schema)
    assert [t.strip() for t in toks[slice(*spans["early"])]] == ["When", "Mary", "and", "John"]
    assert toks[slice(*spans["to"])] == [toks[-1]]


def test_overlapping_char_spans_are_refused(model):
    from peap_widget.data.tasks import token_spans

    with pytest.raises(PeapError, match="overlap"):
        token_spans(model.tokenizer, "Mary and John", {"a": [0, 8], "b": [4, 13]}, example=3)


# --- 3. a dataset for one tokenizer run on another --------------------------------------------

def test_dataset_remembers_its_tokenizer_and_refuses_another_model(model):
    from transformers import GPT2Config, GPT2LMHeadModel

    from peap_widget.data.tokenizer import word_level_tokenizer

    ds = pw.Dataset.from_records(tiny_records(), model)
    other_tok = word_level_tokenizer(["x", "y", "z"] + list(reversed(WORDS)))
    other = pw.load_model(GPT2LMHeadModel(GPT2Config(vocab_size=len(other_tok), n_embd=16,
                                                     n_layer=1, n_head=2)),
                          tokenizer=other_tok)
    with pytest.raises(PeapError, match="tokenized for another"):
        pw.attribute(other, ds, progress=False)
    with pytest.raises(PeapError, match="tokenized for another"):
        pw.Evaluator(other, ds)


def test_ids_beyond_the_vocabulary_and_overlong_prompts_name_the_example(model):
    recs = tiny_records()
    ds = pw.Dataset.from_records(recs, model)
    ds.examples[2].clean_ids = [*ds.examples[2].clean_ids[:-1], 10_000]
    with pytest.raises(PeapError, match="example 2.*vocabulary"):
        pw.attribute(model, ds, progress=False)
    ds = pw.Dataset.from_records(recs, model)
    n_pos = model.hf.config.n_positions
    long = dict(recs[0])
    long["clean"] = " ".join(["When"] * (n_pos + 5) + recs[0]["clean"].split()[1:])
    long["corrupted"] = " ".join(["When"] * (n_pos + 5) + recs[0]["corrupted"].split()[1:])
    shift = n_pos + 4
    long["spans"] = {k: [s + (shift if s else 0), e + shift] for k, (s, e) in recs[0]["spans"].items()}
    with pytest.raises(PeapError, match="example 0.*positions"):
        pw.Dataset.from_records([long], model)


# --- 5. malformed files ------------------------------------------------------------------------

GOOD_LINE = json.dumps(tiny_records()[0])

JSONL_CASES = {
    "not an object": "[1, 2, 3]\n",
    "a number": "3\n",
    "no clean": json.dumps({"correct": "Mary", "incorrect": "John", "spans": {"a": [0, 1]}}) + "\n",
    "spans not a dict": json.dumps({**tiny_records()[0], "spans": [0, 1]}) + "\n",
    "infinite bound": GOOD_LINE.replace("[0, 1]", "[0, Infinity]", 1) + "\n",
    "nan bound": GOOD_LINE.replace("[0, 1]", "[NaN, 1]", 1) + "\n",
    "string bound": GOOD_LINE.replace("[0, 1]", '["0", 1]', 1) + "\n",
    "answer not a string": json.dumps({**tiny_records()[0], "correct": 3}) + "\n",
    "second line broken": GOOD_LINE + "\n{\"clean\": \n",
    "latin-1 bytes": None,
    "empty": "",
}


@pytest.mark.parametrize("case", sorted(JSONL_CASES))
def test_malformed_jsonl_names_the_file(tmp_path, model, case):
    path = tmp_path / "data.jsonl"
    if JSONL_CASES[case] is None:
        path.write_bytes(GOOD_LINE.encode().replace(b"Mary", b"M\xe9ry") + b"\n")
    else:
        path.write_text(JSONL_CASES[case])
    with pytest.raises(PeapError) as info:
        pw.tasks.from_file(path).dataset(model)
    msg = str(info.value)
    assert "data.jsonl" in msg or "example" in msg, msg


CSV_CASES = {
    "empty file": "",
    "ragged rows": 'prompt,correct,incorrect,a,length\n"x",a,b,0,1,7,8\n"y\n',
    "bad start": "prompt,correct,incorrect,a,length\nWhen Mary,Mary,John,zero,2\n",
    "latin-1": None,
    "span named like a column": "prompt,correct,incorrect,prompt,length\nMary,Mary,John,0,1\n",
}


@pytest.mark.parametrize("case", sorted(CSV_CASES))
def test_malformed_csv_names_the_file(tmp_path, model, case):
    path = tmp_path / "data.csv"
    if CSV_CASES[case] is None:
        path.write_bytes(b"prompt,correct,incorrect,a,length\nM\xe9ry,Mary,John,0,1\n")
    else:
        path.write_text(CSV_CASES[case])
    with pytest.raises(PeapError) as info:
        pw.tasks.from_file(path).dataset(model)
    assert "data.csv" in str(info.value) or "example" in str(info.value)


@pytest.mark.parametrize("text", ["", "[", "{\"spans\": 3}", "{\"spans\": [1, 2]}", "null",
                                  "{\"spans\": [\"a\", \"a\"]}", "\"a string\""])
def test_malformed_schema_json(tmp_path, text):
    path = tmp_path / "schema.json"
    path.write_text(text)
    with pytest.raises(PeapError):
        pw.Schema.from_json(path)


@pytest.mark.parametrize("doc", [None, [], {"schema": ["a"]}, {"schema": ["a"], "examples": 3},
                                 {"schema": ["a"], "examples": [3]},
                                 {"schema": 3, "examples": []}])
def test_malformed_dataset_json(tmp_path, model, doc):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(PeapError) as info:
        pw.Dataset.from_json(path, model)
    assert "ds.json" in str(info.value)


def test_corrupted_result_files_all_raise_peap_errors(tmp_path, model):
    """Every single-byte corruption of a saved .json.gz result either loads (the byte did not
    matter) or raises PeapError naming the file: never zlib.error, EOFError or KeyError."""
    ds = pw.Dataset.from_records(tiny_records(), model)
    res = pw.attribute(model, ds, method="eap", progress=False)
    good = res.save(tmp_path / "res.json.gz").read_bytes()
    rng = random.Random(0)
    bad = tmp_path / "bad.json.gz"
    raised = 0
    for _ in range(120):
        data = bytearray(good)
        i = rng.randrange(len(data))
        data[i] = (data[i] + rng.randrange(1, 256)) % 256
        bad.write_bytes(bytes(data))
        try:
            pw.AttributionResult.load(bad)
        except PeapError as err:
            assert "bad.json.gz" in str(err)
            raised += 1
    assert raised > 0


# --- 6. a tiny circuit file demanding a huge graph --------------------------------------------

def test_circuit_json_is_checked_before_building_its_graph():
    doc = {"format": "peap_widget.circuit", "graph": {"n_layers": 4000, "n_heads": 4000,
                                                      "d_model": 8}, "spans": ["a", "b"],
           "crossing": True, "merge_qkv": True, "edges": []}
    with pytest.raises(PeapError, match="too large|at most"):
        pw.Circuit.from_json(json.dumps(doc))
    doc["graph"] = {"n_layers": -1, "n_heads": 2, "d_model": 8}
    with pytest.raises(PeapError):
        pw.Circuit.from_json(json.dumps(doc))


# --- 7. span names colliding with PEAP CSV columns ----------------------------------------

@pytest.mark.parametrize("name", ["prompt", "correct", "incorrect", "corrupted", "length"])
def test_span_names_that_are_csv_columns_are_refused(name):
    with pytest.raises(PeapError, match="reserved"):
        pw.Schema(["a", name, "end"])


# --- 12. exported pages --------------------------------------------------------------------------

def test_to_html_rejects_a_non_widget_clearly(tmp_path):
    with pytest.raises(PeapError, match="widget"):
        pw.to_html(tmp_path / "x.html", object())


def test_exported_state_cannot_open_a_comment_or_script(tmp_path, model):
    """"<!--" then "<script" in widget state would blank the page; NaN and numpy values in
    extra record fields must export (as null / numbers)."""
    import re

    recs = tiny_records()
    recs[0]["note"] = "<!-- <script>alert(1)</script>"
    recs[1]["score"] = float("nan")
    recs[2]["weight"] = np.float32(0.5)
    ds = pw.Dataset.from_records(recs, model)
    editor = pw.SchemaEditor(ds)
    page = pw.to_html(tmp_path / "page.html", editor).read_text()
    states = re.findall(r'<script type="application/json" id="peap-state-\d+">(.*?)</script>',
                        page, flags=re.S)
    assert states
    for text in states:
        assert "<" not in text and "NaN" not in text
        state = json.loads(text)
        assert "<!-- <script>" in json.dumps(state)        # the text itself survives


# --- 13. loading is linear ------------------------------------------------------------------------

def test_file_task_tokenizes_each_record_once(tmp_path, model):
    recs = pw.tasks.get("ioi", n=40, seed=1).records
    path = tmp_path / "ioi.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    calls = {"n": 0}
    tok = model.tokenizer

    class Counting:
        def __getattr__(self, name):
            return getattr(tok, name)

        def __call__(self, *a, **k):
            calls["n"] += 1
            return tok(*a, **k)

    pw.tasks.from_file(path).token_records(Counting())
    assert calls["n"] <= 4 * len(recs)      # offsets + answers, not n^2


# --- 4. NaN scores cannot make a circuit ------------------------------------------------------

def test_nan_scores_are_refused_by_search_naming_an_edge(tmp_path):
    from peap_widget.models.examples import random_result

    d = random_result(2, 3, 4).to_dict()
    d["edges"]["score"][5] = d["edges"]["score"][17] = None     # NaN on the way in
    res = pw.AttributionResult.from_dict(d)
    res.save(tmp_path / "r.json.gz")
    back = pw.AttributionResult.load(tmp_path / "r.json.gz")
    for r in (res, back):
        with pytest.raises(PeapError, match=r"2 edge scores are NaN.*->"):
            r.circuit(n_edges=5)
        with pytest.raises(PeapError, match="NaN"):
            r.circuit(method="topn", n_edges=5)
        with pytest.raises(PeapError, match="NaN"):
            r.greedy_order(n=10)


# --- 9 and 11. the autosave: failures shown, edits kept, modes and marks kept --------------

def test_a_failing_autosave_is_shown_and_the_edit_kept(tmp_path, model):
    ds = pw.Dataset.from_records(tiny_records(), model)
    folder = tmp_path / "work"
    folder.mkdir()
    path = folder / "ann.json"
    ed = pw.SchemaEditor(ds, path=path)
    assert ed.save_error == ""
    folder.rename(tmp_path / "away")            # the folder vanishes (a disk unmounted...)
    folder.write_text("not a folder")           # and nothing can be written there
    ed.add_span_type("extra", required=False, index=0)
    assert ed.save_error.startswith("Not saved:") and "ann.json" in ed.save_error
    assert "extra" in ed.span_names              # the edit is kept in memory
    folder.unlink()
    (tmp_path / "away").rename(folder)
    ed.set_color("extra", "#123456")              # the next change saves every edit
    assert ed.save_error == ""
    saved = json.loads(path.read_text())
    assert saved["schema"]["spans"][0] == "extra" and saved["span_colors"]["extra"] == "#123456"


def test_autosave_file_mode_follows_the_umask(tmp_path, model):
    import os

    ds = pw.Dataset.from_records(tiny_records(), model)
    old = os.umask(0o022)
    try:
        path = tmp_path / "ann.json"
        pw.SchemaEditor(ds, path=path)
        assert path.stat().st_mode & 0o777 == 0o644
        path.chmod(0o640)                          # a mode the user chose is kept
        ed = pw.SchemaEditor(ds, path=path)
        ed.set_color(ed.span_names[0], "#abcdef")
        assert path.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)


def test_required_mark_on_the_last_span_type_survives_a_restart(tmp_path, model):
    ds = pw.Dataset.from_records(tiny_records(), model)
    path = tmp_path / "ann.json"
    ed = pw.SchemaEditor(ds, path=path)
    last = ed.span_names[-1]
    ed.set_required(last, True)
    again = pw.SchemaEditor(ds, path=path)
    assert again.span_types[-1]["required"] is True
    again.add_span_type("after", index=len(again.span_names))   # the marked type is no longer last
    assert again.schema.required >= {last}


def test_numpy_and_nan_extra_fields_autosave(tmp_path, model):
    recs = tiny_records()
    recs[0]["weight"] = np.float32(0.25)
    recs[1]["score"] = float("nan")
    ds = pw.Dataset.from_records(recs, model)
    path = tmp_path / "ann.json"
    ed = pw.SchemaEditor(ds, path=path)
    assert ed.save_error == ""
    rows = json.loads(path.read_text())["examples"]
    assert rows[0]["weight"] == 0.25 and rows[1]["score"] is None


def test_a_nan_weight_stops_evaluation_naming_examples(model):
    """One NaN weight: attribution already refuses (NonFiniteError); evaluation must too, not
    report 'hard = 1.0' from NaN logits."""
    import torch

    hf, tok = tiny_gpt2()
    with torch.no_grad():
        hf.transformer.h[1].mlp.c_proj.weight[3, 5] = float("nan")
    broken = pw.load_model(hf, tokenizer=tok)
    ds = pw.Dataset.from_records(tiny_records(), broken)
    with pytest.raises(pw.NonFiniteError, match="clean run's logits for examples 0, 1, 2, 3, 4"):
        pw.Evaluator(broken, ds)
    with pytest.raises(pw.NonFiniteError):
        pw.attribute(broken, ds, progress=False)
