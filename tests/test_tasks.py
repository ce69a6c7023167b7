"""Built-in tasks and the file loader; spans from character offsets for any tokenizer."""

import json

import pytest
import torch

import peap_widget as pw
from peap_widget import DatasetError
from peap_widget.data.tokenizer import pieces, word_level_tokenizer


def toy_tokenizer(*tasks):
    words = [p for t in tasks for tx in t.texts() for p in pieces(tx)]
    return word_level_tokenizer(words + [f"{y:02d}" for y in range(100)], text_mode=True)


def bpe_tokenizer(texts):
    """A byte-level BPE trained here on the texts: GPT-2-style tokens with leading spaces."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>"]))
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>")


def span_text(ds, i, name):
    s, e = ds.examples[i].spans[list(ds.schema).index(name)]
    return ds.tokenizer.decode(ds.examples[i].clean_ids[s:e]).strip()


@pytest.mark.parametrize("order", ["ABBA", "BABA", "both"])
def test_ioi_spans_roles_and_counterfactuals(order):
    task = pw.tasks.get("ioi", n=40, order=order, seed=3)
    ds = task.dataset(toy_tokenizer(task))
    lengths = {e.length for e in ds.examples}
    assert len(lengths) > 4  # variable-length templates
    first, second = list(ds.schema)[1], list(ds.schema)[3]
    for i, (r, ex) in enumerate(zip(task.records, ds.examples)):
        io, s = r["correct"], r["incorrect"]
        assert span_text(ds, i, "S2") == s and span_text(ds, i, "to") == "to"
        names = (span_text(ds, i, first), span_text(ds, i, second))
        abba = r["template"] == "ABBA"
        assert names == ((io, s) if abba else (s, io))
        if order != "both":
            assert (order == "ABBA") == abba
        cf = r["corrupted"].split()
        assert len(set(cf) & {io, s}) == 0 or io not in cf  # fresh names
        assert len(ex.corrupted_ids) == ex.length
    assert list(ds.schema)[0] == "prefix" and ds.schema.spans[-1] == "to"
    if order == "ABBA":
        assert list(ds.schema) == ["prefix", "IO", "and", "S1", "S1+1", "action1", "S2", "action2", "to"]


def test_ioi_with_a_bpe_tokenizer():
    task = pw.tasks.get("ioi", n=30, seed=1, names="Mary John Anna Tom Kate Bob Lisa Mark".split())
    tok = bpe_tokenizer(task.texts() * 20)
    ds = task.dataset(tok)
    for i, r in enumerate(task.records):
        assert span_text(ds, i, "IO") == r["correct"].strip()
        assert span_text(ds, i, "S1") == r["incorrect"].strip()
        assert span_text(ds, i, "to") == "to"
        # answers follow a space in running text: the BPE's " Name" token
        assert ds.examples[i].correct == " " + r["correct"]
        assert ds.examples[i].incorrect_id in ds.examples[i].clean_ids  # " S2" occurs in the prompt
        # the spans hold every token, in order, and each piece of text stays in its span
        assert tok.decode(ds.examples[i].clean_ids) == r["clean"]


def test_greater_than_spans_and_metric():
    task = pw.tasks.get("greater-than", n=20, seed=2)
    tok = toy_tokenizer(task)
    ds = task.dataset(tok)
    for i, r in enumerate(task.records):
        yy = int(r["incorrect"])
        assert span_text(ds, i, "YY") == f"{yy:02d}" and span_text(ds, i, "XX2") == span_text(ds, i, "XX1")
        assert int(r["correct"]) == yy + 1 and "01 to" in r["corrupted"]
    metric = task.metric(tok)
    logits = torch.randn(3, len(tok), dtype=torch.float64)
    inc = torch.tensor([ds.examples[i].incorrect_id for i in range(3)])
    got = metric(logits, inc, inc)
    p = logits.softmax(-1)
    for b in range(3):
        yy = int(task.records[b]["incorrect"])
        above = sum(p[b, tok.convert_tokens_to_ids(f"{y:02d}")] for y in range(yy + 1, 100))
        below = sum(p[b, tok.convert_tokens_to_ids(f"{y:02d}")] for y in range(0, yy + 1))
        assert got[b].item() == pytest.approx((above - below).item(), rel=1e-12)


def test_from_file_jsonl_and_csv(tmp_path):
    task = pw.tasks.get("ioi", n=8, seed=4)
    tok = toy_tokenizer(task)
    path = task.to_jsonl(tmp_path / "mine.jsonl")  # char spans
    back = pw.tasks.from_file(path)
    assert back.dataset(tok).to_records() == task.dataset(tok).to_records()
    ds = task.dataset(tok)
    with (tmp_path / "tok.jsonl").open("w") as f:  # token spans
        for r in ds.to_records():
            f.write(json.dumps(r) + "\n")
    assert pw.tasks.from_file(tmp_path / "tok.jsonl").dataset(tok).to_records() == ds.to_records()
    ds.to_peap_csv(tmp_path / "mine.csv")
    core = ("clean", "corrupted", "correct", "incorrect", "spans")  # CSV carries no extra fields
    got = pw.tasks.from_file(tmp_path / "mine.csv").dataset(tok).to_records()
    assert [{k: r[k] for k in core} for r in got] == [{k: r[k] for k in core} for r in ds.to_records()]


def test_task_errors(tmp_path):
    with pytest.raises(DatasetError, match="unknown task 'ioj'"):
        pw.tasks.get("ioj")
    with pytest.raises(DatasetError, match="no such file"):
        pw.tasks.from_file(tmp_path / "none.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"clean": "a", "spans": {"a": [0, 1]}}\n{oops\n')
    with pytest.raises(DatasetError, match="bad.jsonl line 2 is not valid JSON"):
        pw.tasks.from_file(tmp_path / "bad.jsonl")
    (tmp_path / "nospans.jsonl").write_text('{"clean": "a", "correct": "a", "incorrect": "b"}\n')
    with pytest.raises(DatasetError, match="spans"):
        pw.tasks.from_file(tmp_path / "nospans.jsonl")
    (tmp_path / "bad.csv").write_text("prompt,correct\nhello,a\n")
    with pytest.raises(DatasetError, match=r"lacks the column\(s\) \['incorrect', 'length'\]"):
        pw.tasks.from_file(tmp_path / "bad.csv")
    (tmp_path / "bad.txt").write_text("x")
    with pytest.raises(DatasetError, match="unknown file type"):
        pw.tasks.from_file(tmp_path / "bad.txt")
    task = pw.tasks.get("ioi", n=3, seed=0)
    tok = toy_tokenizer(task)
    task.records[1]["correct"] = "Mary Ann"
    with pytest.raises(DatasetError, match="exactly one token") as info:
        task.dataset(tok)
    assert info.value.example == 1
    task = pw.tasks.get("ioi", n=3, names=["Mary Ann", "John", "Tom", "Kate", "Bob"], seed=0)
    with pytest.raises(DatasetError, match="same length"):
        task.dataset(toy_tokenizer(task))
