"""Reading the PEAP paper's released data form (github.com/technion-cs-nlp/PEAP, data/<model>/
<task>/{human_baseline,agent,agent_with_mask}/*.csv), on files this test writes in that form for
the shipped toy tokenizers: span indices and ``length`` count a prepended BOS token, answers are
``correct_token`` / ``wrong_token`` (greater-than: ``label``), metadata columns sit among the
span columns."""

from __future__ import annotations

import csv

import pytest
from transformers import AutoTokenizer

import peap_widget as pw
from peap_widget.data.dataset import Dataset
from peap_widget.errors import DatasetError, PeapError, SchemaError

IOI_HUMAN = ["prompt", "prompt_id", "prefix", "IO", "and", "S1", "S1+1", "action1", "S2",
             "action2", "to", "length", "wrong_token", "correct_token", "S1_token", "S2_token",
             "IO_token", "label", "split", "top_answer", "top_answer_prob", "correct_prob",
             "wrong_prob"]
IOI_SPANS = ["prefix", "IO", "and", "S1", "S1+1", "action1", "S2", "action2", "to"]
AGENT_META = ["prompt", "prompt_id", "length", "wrong_token", "correct_token", "S1_token",
              "S2_token", "IO_token", "label", "split", "top_answer", "top_answer_prob",
              "correct_prob", "wrong_prob"]
AGENT_SPANS = ["Initial_Context", "First_Person", "Conjunction", "Second_Person",
               "Primary_Event", "Active_Person", "Final_Action", "Ending_Preposition"]
GT_HUMAN = ["", "prompt", "The", "NOUN", "lasted", "from", "the_1", "year_1", "XX1", "YY", "to",
            "the_2", "year_2", "XX2", "length", "label", "split"]
SPLITS = ["circuit", "eval", "circuit", "ablation", "circuit", "eval"]


def _tok(name):
    return AutoTokenizer.from_pretrained(str(pw.models.path(name)))


@pytest.fixture(scope="module")
def tok():
    return _tok("toy-ioi")


def _write(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def _ioi_rows(tok, n=6, seed=5):
    """The paper's generator's way: positions looked up in the BOS-prefixed token list."""
    task = pw.tasks.get("ioi", n=n, seed=seed)
    clean, counter = [], []
    for pid, r in enumerate(task.records):
        toks = ["<BOS>"] + tok.convert_ids_to_tokens(tok(r["clean"])["input_ids"])
        io, s = r["correct"], r["incorrect"]
        i_io = toks.index(io)
        i_s1 = toks.index(s)
        i_s2 = toks[i_s1 + 1:].index(s) + i_s1 + 1
        starts = [1, i_io, i_io + 1, i_s1, i_s1 + 1, i_s1 + 2, i_s2, i_s2 + 1, len(toks) - 1]
        meta = [len(toks), " " + s, " " + io, " " + s, " " + s, " " + io, " " + io,
                SPLITS[pid % len(SPLITS)], " " + io, "0.91", "0.91", "0.01"]
        clean.append([r["clean"], 100 + pid, *starts, *meta])
        counter.append([r["corrupted"], 100 + pid, *starts, *meta])
    return task, clean, counter


def _expected_ioi(tok, prompt, io, s):
    """Our ranges, from the tokenizer's own tokens (no BOS), found by a different route: S2 is
    the last occurrence of S, 'to' the last token."""
    t = tok.convert_ids_to_tokens(tok(prompt)["input_ids"])
    n, a, b = len(t), t.index(io), t.index(s)
    c = n - 1 - t[::-1].index(s)
    return [(0, a), (a, a + 1), (a + 1, b), (b, b + 1), (b + 1, b + 2), (b + 2, c), (c, c + 1),
            (c + 1, n - 1), (n - 1, n)]


def test_ioi_human_baseline_form(tmp_path, tok):
    task, clean, counter = _ioi_rows(tok)
    c = _write(tmp_path / "IOI_data_clean.csv", IOI_HUMAN, clean)
    k = _write(tmp_path / "IOI_data_counter_abc.csv", IOI_HUMAN, counter)
    ds = Dataset.from_peap_paper(c, k, tok)
    assert list(ds.schema.spans) == IOI_SPANS
    for e, r in zip(ds.examples, task.records):
        assert e.spans == _expected_ioi(tok, r["clean"], r["correct"], r["incorrect"])
        assert e.clean == r["clean"] and e.corrupted == r["corrupted"]
        assert e.correct == " " + r["correct"] and e.incorrect == " " + r["incorrect"]
        assert e.correct_id == tok(r["correct"], add_special_tokens=False)["input_ids"][0]
    # the same spans as the built-in task's character-mapped ones
    builtin = task.dataset(tok)
    assert [e.spans for e in ds.examples] == [e.spans for e in builtin.examples]
    rep = ds.paper_report
    assert rep.bos_offset == 1 and rep.spans == IOI_SPANS and rep.rows == rep.kept == 6
    assert rep.roles == {"prompt": "prompt", "length": "length", "correct": "correct_token",
                         "incorrect": "wrong_token"}
    assert "prompt_id" in rep.metadata and "split" in rep.metadata and "label" in rep.metadata
    assert "BOS offset 1" in str(rep) and "no BOS token in the spans" in str(rep)
    assert ds.examples[2].extra["prompt_id"] == "102" and ds.examples[2].extra["split"] == "circuit"
    # split= keeps the paper's circuit rows only
    sub = Dataset.from_peap_paper(c, k, tok, split="circuit")
    assert len(sub) == 3 and sub.paper_report.kept == 3
    assert [e.clean for e in sub.examples] == [task.records[i]["clean"] for i in (0, 2, 4)]


def test_ioi_agent_form_with_an_empty_span(tmp_path, tok):
    task, clean, counter = _ioi_rows(tok, n=8, seed=11)
    rows_c, rows_k, want = [], [], []
    for row_c, row_k, r in zip(clean, counter, task.records):
        st = dict(zip(IOI_SPANS, row_c[2:11]))
        starts = [1, st["IO"], st["and"], st["S1"], st["S1+1"], st["S2"], st["action2"], st["to"]]
        meta = [row_c[0], row_c[1], *row_c[11:]]
        rows_c.append(meta + starts)
        rows_k.append([row_k[0], *meta[1:]] + starts)
        ex = dict(zip(IOI_SPANS, _expected_ioi(tok, r["clean"], r["correct"], r["incorrect"])))
        want.append([(0, ex["prefix"][1]), ex["IO"], ex["and"], ex["S1"],
                     (ex["S1+1"][0], ex["action1"][1]), ex["S2"], ex["action2"], ex["to"]])
    assert any(w[0] == (0, 0) for w in want)          # a prompt without prefix: empty span
    c = _write(tmp_path / "agent_clean.csv", AGENT_META + AGENT_SPANS, rows_c)
    k = _write(tmp_path / "agent_counter.csv", AGENT_META + AGENT_SPANS, rows_k)
    ds = Dataset.from_peap_paper(c, k, tok)
    assert list(ds.schema.spans) == AGENT_SPANS
    assert [e.spans for e in ds.examples] == want


def test_tokenizer_with_its_own_bos(tmp_path):
    from tokenizers import processors

    tb = _tok("toy-ioi")
    tb._tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", tb.bos_token_id)])
    plain = _tok("toy-ioi")
    task, clean, counter = _ioi_rows(plain, n=4, seed=2)
    c = _write(tmp_path / "c.csv", IOI_HUMAN, clean)
    k = _write(tmp_path / "k.csv", IOI_HUMAN, counter)
    ds = Dataset.from_peap_paper(c, k, tb)
    assert list(ds.schema.spans) == ["BOS"] + IOI_SPANS and ds.paper_report.bos_offset == 0
    for e, r in zip(ds.examples, task.records):
        assert e.clean_ids[0] == tb.bos_token_id
        shifted = [(a + 1, b + 1) for a, b in _expected_ioi(plain, r["clean"], r["correct"],
                                                            r["incorrect"])]
        assert e.spans == [(0, 1)] + shifted
    assert "span 'BOS'" in str(ds.paper_report)
    merged = Dataset.from_peap_paper(c, k, tb, bos_span=None)
    assert list(merged.schema.spans) == IOI_SPANS
    assert [e.spans[0][0] for e in merged.examples] == [0] * 4
    assert [e.spans[1:] for e in merged.examples] == [e.spans[2:] for e in ds.examples]
    with pytest.raises(DatasetError, match=r"c\.csv, line 2, column 'length'.*BOS offset 1"):
        Dataset.from_peap_paper(c, k, tb, bos_offset=1)


def test_greater_than_human_and_agent_forms(tmp_path):
    gt_tok = _tok("toy-greater-than")
    task = pw.tasks.get("greater-than", n=5, seed=4)
    clean, counter, agent_c, agent_k = [], [], [], []
    for i, r in enumerate(task.records):
        yy = r["clean"].split(" ")[-5][2:]                  # "1453" -> "53"
        pos = list(range(1, 13))                            # the paper's fixed positions
        clean.append([i, r["clean"], *pos, 13, yy, SPLITS[i]])
        counter.append([i, r["corrupted"], *pos, 13, "01", SPLITS[i]])
        agent = [1, 3, 4, 5, 7, 9, 10, 12]
        agent_c.append([r["clean"], 13, yy, SPLITS[i], *agent])
        agent_k.append([r["corrupted"], 13, "01", SPLITS[i], *agent])
    c = _write(tmp_path / "greater_than_data_clean.csv", GT_HUMAN, clean)
    k = _write(tmp_path / "greater_than_data_counter_vanila.csv", GT_HUMAN, counter)
    ds = Dataset.from_peap_paper(c, k, gt_tok)
    assert list(ds.schema.spans) == GT_HUMAN[2:14]
    assert ds.paper_report.answers == "label (greater-than)" and ds.paper_report.bos_offset == 1
    for e, r in zip(ds.examples, task.records):
        assert e.spans == [(j, j + 1) for j in range(12)]
        assert (e.correct, e.incorrect) == (r["correct"], r["incorrect"])
        assert e.corrupted == r["corrupted"]
    # the task's own dataset agrees token for token
    assert [e.clean_ids for e in ds.examples] == [e.clean_ids for e in task.dataset(gt_tok).examples]
    names = ["Subject", "Duration_Verb", "Time_Preposition", "Start_Year_Marker", "Start_Year",
             "Time_Connector", "End_Year_Marker", "End_Year"]
    hc = ["prompt", "length", "label", "split"] + names
    a = Dataset.from_peap_paper(_write(tmp_path / "a.csv", hc, agent_c),
                                _write(tmp_path / "b.csv", hc, agent_k), gt_tok)
    assert list(a.schema.spans) == names
    assert a.examples[0].spans == [(0, 2), (2, 3), (3, 4), (4, 6), (6, 8), (8, 9), (9, 11),
                                   (11, 12)]


# --- malformed files: the error names the file, the line and the column ---------------------

def _ioi_files(tmp_path, tok, edit_clean=None, edit_counter=None, header=IOI_HUMAN):
    _, clean, counter = _ioi_rows(tok, n=4, seed=7)
    if edit_clean:
        edit_clean(clean)
    if edit_counter:
        edit_counter(counter)
    return (_write(tmp_path / "clean.csv", header, clean),
            _write(tmp_path / "counter.csv", header, counter))


def _col(name):
    return IOI_HUMAN.index(name)


@pytest.mark.parametrize("edit_clean, edit_counter, error, match", [
    (lambda rows: rows[1].__setitem__(_col("S2"), "x7"), None, DatasetError,
     r"clean\.csv, line 3, column 'S2': 'x7' is not a token index"),
    (lambda rows: rows[2].__setitem__(_col("length"), "99"),
     lambda rows: rows[2].__setitem__(_col("length"), "99"), DatasetError,
     r"clean\.csv, line 4, column 'length': the file says 99 tokens"),
    (lambda rows: rows[0].__setitem__(_col("action1"), int(rows[0][_col("S2")]) + 1), None,
     SchemaError, r"clean\.csv, line 2, column 'action1': .*ends before it starts"),
    (lambda rows: rows[0].__setitem__(_col("prefix"), 3), None, DatasetError,
     r"clean\.csv, line 2, column 'prefix': the first span starts at token 3"),
    (lambda rows: rows[3].__setitem__(_col("correct_token"), " Mary Anne"), None, DatasetError,
     r"clean\.csv, line 5, column 'correct_token': .*exactly one token"),
    (None, lambda rows: rows[1].__setitem__(_col("prompt_id"), "555"), DatasetError,
     r"counter\.csv, line 3, column 'prompt_id': '555' but .*clean\.csv line 3"),
    (None, lambda rows: rows[2].__setitem__(0, rows[2][0] + " and Mary"), DatasetError,
     r"counter\.csv, line 4, column 'prompt': .*same length"),
    (None, lambda rows: rows.pop(), DatasetError, r"clean\.csv has 4 rows but .*counter\.csv has 3"),
    (lambda rows: rows[1].pop(), None, DatasetError, r"clean\.csv, line 3: 22 fields but the header"),
])
def test_malformed_files(tmp_path, tok, edit_clean, edit_counter, error, match):
    c, k = _ioi_files(tmp_path, tok, edit_clean, edit_counter)
    with pytest.raises(error, match=match):
        Dataset.from_peap_paper(c, k, tok)


def test_missing_and_unknown_columns(tmp_path, tok):
    header = [h if h != "wrong_token" else "other_token" for h in IOI_HUMAN]
    c, k = _ioi_files(tmp_path, tok, header=header)
    with pytest.raises(DatasetError, match=r"clean\.csv: no column 'wrong_token' \(incorrect\)"):
        Dataset.from_peap_paper(c, k, tok, answers="tokens")
    # an unknown text column is not taken for a span: it is named, with the way out
    with pytest.raises(DatasetError, match=r"clean\.csv, line 2, column 'other_token': ' \w+' is "
                                           r"not a token index.*ignore=\['other_token'\]"):
        Dataset.from_peap_paper(c, k, tok, columns={"incorrect": "S1_token"})
    ds = Dataset.from_peap_paper(c, k, tok, columns={"incorrect": "S1_token"}, ignore=["other_token"])
    assert list(ds.schema.spans) == IOI_SPANS and "other_token" in ds.paper_report.metadata
    ds = Dataset.from_peap_paper(c, None, tok, columns={"incorrect": "S1_token"},
                                 spans=IOI_SPANS)
    assert ds.examples[0].corrupted is None and not ds.has_counterfactuals


def test_greater_than_bad_label_and_split(tmp_path):
    gt_tok = _tok("toy-greater-than")
    r = pw.tasks.get("greater-than", n=1, seed=0).records[0]
    c = _write(tmp_path / "gt.csv", GT_HUMAN, [[0, r["clean"], *range(1, 13), 13, "99", "eval"]])
    with pytest.raises(DatasetError, match=r"gt\.csv, line 2, column 'label': .*'99'"):
        Dataset.from_peap_paper(c, None, gt_tok)
    with pytest.raises(DatasetError, match=r"gt\.csv: no row has split in \['circuit'\]"):
        Dataset.from_peap_paper(c, None, gt_tok, split="circuit")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(PeapError, match="empty.csv is empty"):
        Dataset.from_peap_paper(empty, None, gt_tok)
