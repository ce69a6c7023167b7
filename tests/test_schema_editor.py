"""SchemaEditor without a browser or kernel: traits, autosave/restore, Python editing, and the
JS validation (js/schema_editor/logic.js, run by node) checked against `Schema.validate`."""

import json
import pydoc
import shutil
import subprocess
from pathlib import Path

import pytest
from tiny import SCHEMA, tiny_records, tiny_tokenizer

import peap_widget as pw
from peap_widget.errors import DatasetError, PeapError, SchemaError

ROOT = Path(__file__).resolve().parent.parent
LOGIC = ROOT / "js" / "schema_editor" / "logic.js"


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture
def ds(tok):
    return pw.Dataset.from_records(tiny_records(), tok)


def bare(records):
    return [{k: v for k, v in r.items() if k != "spans"} for r in records]


# --- construction and traits ---------------------------------------------------------------


def test_from_dataset_traits(ds):
    ed = pw.SchemaEditor(ds)
    assert ed.span_names == SCHEMA and ed.schema == ds.schema
    assert ed.tokens[0] == ds.tokens(0)
    assert ed.annotations == [[list(r) for r in e.spans] for e in ds.examples]
    assert ed.examples[0] == {k: v for k, v in ds.to_records()[0].items() if k != "spans"}
    assert len({st["color"] for st in ed.span_types}) == len(SCHEMA)
    assert ed.validation().empty
    assert [e.spans for e in ed.dataset.examples] == [e.spans for e in ds.examples]
    assert "5 valid / 0 invalid" in repr(ed)


def test_front_end_edits_round_trip(ds):
    """Traits set as the front end sets them give the expected Schema and Dataset."""
    ed = pw.SchemaEditor(ds)
    ann = json.loads(json.dumps(ed.annotations))
    # example 0 ("When Mary and John went to the store , John gave a book to"):
    # move "When" into IO, the prefix becomes empty; rename a span type, make one required
    ann[0][0], ann[0][1] = [0, 0], [0, 2]
    types = json.loads(json.dumps(ed.span_types))
    types[4]["name"] = "act1"
    types[2]["required"] = True
    ed.annotations, ed.span_types = ann, types
    assert ed.schema == pw.Schema(["prefix", "IO", "and", "S1", "act1", "S2", "action2", "to"],
                                  required=["and"])
    out = ed.dataset
    assert out.schema == ed.schema
    assert out.examples[0].spans == [(0, 0), (0, 2), (2, 3), (3, 4), (4, 9), (9, 10), (10, 13), (13, 14)]
    assert out.examples[1].spans == ds.examples[1].spans
    assert out.examples[0].clean_ids == ds.examples[0].clean_ids
    assert out.to_records()[0]["spans"]["IO"] == [0, 2]


def test_records_without_spans_start_with_the_last_token(tok):
    ed = pw.SchemaEditor(bare(tiny_records()), model=tok)
    assert ed.span_names == ["END"] and ed.span_types[0]["required"] is False
    assert ed.schema.required == {"END"}
    assert ed.annotations[0] == [[13, 14]]
    v = ed.validation()
    assert list(v.columns) == ["example", "span", "rule", "message"]
    assert list(v.rule) == ["contiguous"] * 5


def test_records_schema_inferred_or_given(tok):
    recs = tiny_records()
    recs[1] = dict(recs[1], spans={"IO": [0, 1], "extra": [1, 2]})
    ed = pw.SchemaEditor(recs, model=tok)
    assert ed.span_names == SCHEMA + ["extra"]   # union, first seen first
    assert ed.annotations[1][1] == [0, 1] and ed.annotations[1][0] is None
    ed = pw.SchemaEditor(bare(recs), model=tok, schema=pw.Schema(["A", "B"], required=["A"]))
    assert ed.span_types == [{"name": "A", "color": "#4e79a7", "required": True},
                             {"name": "B", "color": "#f28e2b", "required": False}]
    assert ed.annotations[0] == [None, [13, 14]]
    with pytest.raises(DatasetError, match="span 'extra' is not in the schema"):
        pw.SchemaEditor(recs, model=tok, schema=SCHEMA)
    with pytest.raises(DatasetError, match="model="):
        pw.SchemaEditor(bare(recs))
    with pytest.raises(DatasetError, match="pw.Dataset or a list of records"):
        pw.SchemaEditor({"clean": "x"}, model=tok)
    bad = dict(recs[0], spans={"IO": [1, "x"]})
    with pytest.raises(SchemaError, match=r"example 0, span 'IO'.*pair of token indices.*format"):
        pw.SchemaEditor([bad], model=tok)


def test_dataset_with_a_new_schema_keeps_spans_by_name(ds):
    ed = pw.SchemaEditor(ds, schema=["IO", "S1", "name3", "to"])
    assert ed.annotations[0] == [[1, 2], [3, 4], None, [13, 14]]
    assert set(ed.validation().rule) == {"contiguous"}


# --- validation and the dataset ---------------------------------------------------------------


def test_dataset_raises_naming_the_first_invalid_example(ds):
    ed = pw.SchemaEditor(ds)
    ed.set_spans(3, {"S2": [6, 8]})
    ed.set_spans(4, {"IO": None})
    with pytest.raises(SchemaError) as info:
        ed.dataset
    err = info.value
    assert (err.example, err.span, err.rule) == (3, "S2", "contiguous")
    assert "2 of 5 examples are invalid" in str(err)
    v = ed.validation()
    assert v.to_dict("records")[1] == {
        "example": 4, "span": "IO", "rule": "missing_span",
        "message": "span is missing (give an empty range [k, k] for an empty span)"}


def test_records_editor_builds_a_dataset(tok):
    recs = tiny_records()
    ed = pw.SchemaEditor(bare(recs), model=tok, schema=SCHEMA)
    for i, r in enumerate(recs):
        ed.set_spans(i, r["spans"])
    out = ed.dataset
    ref = pw.Dataset.from_records(recs, tok)
    assert [e.spans for e in out.examples] == [e.spans for e in ref.examples]
    assert out.to_records() == ref.to_records()


# --- editing from Python ---------------------------------------------------------------------


def test_editing_methods(ds):
    ed = pw.SchemaEditor(ds)
    ed.add_span_type("S1+1", color="#ABC")
    assert ed.span_names[-2:] == ["S1+1", "to"] and ed.span_types[-2]["color"] == "#aabbcc"
    assert ed.annotations[0][-2] == [13, 13] and ed.validation().empty   # empty, so still valid
    ed.move_span_type("S1+1", 4)
    assert ed.span_names[3:6] == ["S1", "S1+1", "action1"]
    assert ed.annotations[0][4] == [4, 4]    # an empty span takes its new place
    assert ed.validation().empty
    ed.rename_span_type("S1+1", "S1_next")
    ed.set_color("S1_next", "#112233")
    ed.set_required("S1_next")
    assert ed.span_types[4] == {"name": "S1_next", "color": "#112233", "required": True}
    assert ed.validation().rule.tolist() == ["nonempty"] * 5
    ed.set_required("S1_next", False)
    ed.remove_span_type("S1_next")
    assert ed.span_names == SCHEMA and ed.annotations[0] == [list(r) for r in ds.examples[0].spans]
    c = ed.span_types[-1]["color"]
    ed.add_span_type("first", index=0, required=True)
    assert ed.span_types[0]["color"] not in {c} and ed.annotations[0][0] == [0, 0]
    assert ed.validation().rule.tolist() == ["nonempty"] * 5


def test_editing_errors(ds):
    ed = pw.SchemaEditor(ds)
    with pytest.raises(SchemaError, match="already a span type 'IO'"):
        ed.add_span_type("IO")
    with pytest.raises(SchemaError, match="non-empty string"):
        ed.rename_span_type("IO", " ")
    with pytest.raises(SchemaError, match="no span type 'nope'"):
        ed.set_color("nope", "#000000")
    with pytest.raises(PeapError, match="colour"):
        ed.set_color("IO", "red")
    with pytest.raises(SchemaError, match="not in the schema"):
        ed.set_spans(0, {"nope": [0, 1]})
    with pytest.raises(SchemaError, match="pair of token indices"):
        ed.set_spans(0, {"IO": [0, 1, 2]})
    ed.set_spans(-1, {"prefix": [0, 2]})
    assert ed.annotations[4][0] == [0, 2] and ed.spans(-1)["prefix"] == [0, 2]
    with pytest.raises(PeapError, match="no example 9"):
        ed.set_spans(9, {})
    one = pw.SchemaEditor(ds, schema=["to"])
    with pytest.raises(SchemaError, match="at least one span"):
        one.remove_span_type("to")


# --- autosave and restore ----------------------------------------------------------------------


def test_autosave_on_every_change_and_restore(ds, tmp_path, tok):
    path = tmp_path / "ann.json"
    ed = pw.SchemaEditor(ds, path=path)
    assert json.loads(path.read_text())["schema"]["spans"] == SCHEMA   # written at once
    before = path.read_text()
    ann = json.loads(json.dumps(ed.annotations))
    ann[2][0] = [0, 3]                       # as the front end would send it
    ed.annotations = ann
    assert path.read_text() != before
    assert json.loads(path.read_text())["examples"][2]["spans"]["prefix"] == [0, 3]
    types = json.loads(json.dumps(ed.span_types))
    types[1].update(name="io", color="#123456", required=True)
    ed.span_types = types
    assert json.loads(path.read_text())["span_colors"]["io"] == "#123456"
    ed.set_spans(1, {"prefix": None})
    ed.add_span_type("new", color="#654321")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ann.json"]   # no temp files left

    again = pw.SchemaEditor(ds, path=path)
    assert again.span_types == ed.span_types and again.annotations == ed.annotations
    assert again.save_path == str(path)
    # the file is a Dataset JSON document: valid annotations load with Dataset.from_json
    ed.set_spans(1, {"prefix": [0, 0]})
    ed.set_spans(2, {"prefix": [0, 4]})
    loaded = pw.Dataset.from_json(path, tok)
    assert loaded.schema == ed.schema and loaded.to_records() == ed.dataset.to_records()


def test_restore_from_records_editor(tmp_path, tok):
    path = tmp_path / "a.json"
    ed = pw.SchemaEditor(bare(tiny_records()), model=tok, path=path)
    ed.add_span_type("rest")
    ed.set_spans(0, {"rest": [0, 13]})
    again = pw.SchemaEditor(bare(tiny_records()), model=tok, path=path)
    assert again.span_names == ["rest", "END"] and again.annotations[0] == [[0, 13], [13, 14]]
    assert again.validation().example.tolist() == [1, 2, 3, 4]


@pytest.mark.parametrize("change, match", [
    (lambda recs: recs[:4], "holds 5 examples but the dataset has 4"),
    (lambda recs: [dict(r, clean=r["clean"].replace("Mary", "Kate")) if i == 0 else r
                   for i, r in enumerate(recs)], "example 0: .*does not match the dataset"),
])
def test_mismatched_file_is_refused_and_kept(tmp_path, tok, change, match):
    path = tmp_path / "a.json"
    pw.SchemaEditor(tiny_records(), model=tok, path=path)
    original = path.read_bytes()
    with pytest.raises(DatasetError, match=match):
        pw.SchemaEditor(change(tiny_records()), model=tok, path=path)
    assert path.read_bytes() == original


def test_bad_files_are_refused_and_kept(tmp_path, tok):
    path = tmp_path / "a.json"
    path.write_text('{"schema": {"spans": ["END"]}, "examples": [')
    with pytest.raises(DatasetError, match=rf"{path.name} is not valid JSON.*left untouched"):
        pw.SchemaEditor(tiny_records(), model=tok, path=path)
    assert path.read_text().endswith("[")
    path.write_text("[1, 2]")
    with pytest.raises(DatasetError, match="not a SchemaEditor annotation file"):
        pw.SchemaEditor(tiny_records(), model=tok, path=path)
    assert path.read_text() == "[1, 2]"
    good = tmp_path / "b.json"
    pw.SchemaEditor(tiny_records(), model=tok, path=good)
    doc = json.loads(good.read_text())
    doc["lengths"][2] += 1
    good.write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match="example 2: .*another tokenizer"):
        pw.SchemaEditor(tiny_records(), model=tok, path=good)


def test_help_explains_usage():
    text = pydoc.render_doc(pw.SchemaEditor, renderer=pydoc.plaintext)
    for words in ("path", "autosave", "set_spans", "add_span_type", "validation", "Ctrl+Z",
                  "shift-click", "to_html"):
        assert words.lower() in text.lower(), words


# --- JS and Python agree -------------------------------------------------------------------------


def node(script: str, payload) -> object:
    if shutil.which("node") is None:
        pytest.fail("node is needed for the JS cross-checks (./dev installs the front-end tools)")
    code = (f"import * as L from {json.dumps(LOGIC.as_uri())};\n"
            "import { readFileSync } from 'node:fs';\n"
            "const input = JSON.parse(readFileSync(0, 'utf8'));\n" + script)
    proc = subprocess.run(["node", "--input-type=module", "-e", code], input=json.dumps(payload),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


OK = {"IO": [0, 2], "S1": [2, 2], "S2": [2, 5], "END": [5, 6]}
CASES = [  # (spans, length, required)
    (OK, 6, []),
    ({"IO": [0, 6], "END": [5, 6], "S1": [6, 6], "S2": [6, 6]}, 6, []),
    (OK, 0, []),
    ([[0, 1]], 6, []),
    ("IO", 6, []),
    ({**OK, "X": [0, 1]}, 6, []),
    ({**OK, "it's": [0, 1]}, 6, []),
    ({"IO": [0, 2], "S2": [2, 5], "END": [5, 6]}, 6, []),
    ({**OK, "S1": [2]}, 6, []),
    ({**OK, "S1": [2, 2.5]}, 6, []),
    ({**OK, "S1": [True, 2]}, 6, []),
    ({**OK, "S1": None}, 6, []),
    ({**OK, "S1": "ab"}, 6, []),
    ({**OK, "S1": {"a": 1}}, 6, []),
    ({**OK, "END": [5, 7]}, 6, []),
    ({**OK, "IO": [-1, 2]}, 6, []),
    ({**OK, "S2": [5, 2]}, 6, []),
    ({**OK, "S2": [3, 5]}, 6, []),
    ({**OK, "S2": [1, 5]}, 6, []),
    (OK, 6, ["S1"]),
    ({"IO": [0, 2], "S1": [2, 3], "S2": [3, 6], "END": [6, 6]}, 6, []),
    ({"IO": [0, 2], "S1": [2, 2], "S2": [2, 4], "END": [4, 6]}, 6, []),
    ({"IO": [0, 2], "S1": [2, 2], "S2": [2, 4], "END": [4, 5]}, 6, []),
    ({"IO": [0, 1], "S1": [1, 2], "S2": [2, 3], "END": [3, 4]}, 4, ["IO", "S1", "S2"]),
]


def test_js_validation_matches_python():
    names = ["IO", "S1", "S2", "END"]
    js = node("""
      const out = input.map(([spans, length, required]) =>
        L.validate({ spans: %s, required }, spans, length));
      console.log(JSON.stringify(out));""" % json.dumps(names), CASES)
    rules = set()
    for (spans, length, required), got in zip(CASES, js):
        try:
            pw.Schema(names, required).validate(spans, length)
            expected = None
        except SchemaError as err:
            msg = str(err).removesuffix(f" [rule: {err.rule}]")
            if err.span is not None:
                msg = msg.removeprefix(f"span {err.span!r}: ")
            expected = {"rule": err.rule, "span": err.span, "message": msg}
        got = got and {k: got[k] for k in ("rule", "span", "message")}
        assert got == expected, (spans, length, required)
        rules.add(expected and expected["rule"])
    assert rules == {None, "empty_prompt", "format", "unknown_span", "missing_span", "out_of_range",
                     "reversed", "contiguous", "nonempty", "last_token_alone"}


def test_js_file_content_matches_python_autosave(ds, tmp_path):
    ed = pw.SchemaEditor(ds, path=tmp_path / "a.json")
    ed.set_spans(1, {"IO": None})
    ed.set_required("IO")
    js = node("""
      const [t, a, e, n] = input;
      console.log(JSON.stringify(L.fileContent(t, a, e, n)));""",
              [ed.span_types, ed.annotations, ed.examples, [len(t) for t in ed.tokens]])
    assert js == json.loads((tmp_path / "a.json").read_text()) == ed.to_dict()
