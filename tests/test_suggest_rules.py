"""The rule tagger reproduces the built-in task schemas exactly, and says why when it cannot.

The reference spans come from the task generators' own character spans (built while the prompt is
assembled) mapped by the loader; the rules find the same boundaries from the finished text alone.
"""

import pytest

import peap_widget as pw
from peap_widget.suggest import Suggestion
from peap_widget.suggest import rules as R

N = 200


@pytest.fixture(scope="module")
def tokenizers():
    from transformers import AutoTokenizer

    return {m: AutoTokenizer.from_pretrained(pw.models.path(m))
            for m in ("toy-ioi", "toy-greater-than")}


def bos_tokenizer(tok):
    """``tok`` with a <bos> token prepended to every prompt (special tokens in the spans)."""
    import copy

    from tokenizers.processors import TemplateProcessing

    tok = copy.deepcopy(tok)
    tok._tokenizer.post_processor = TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", tok.convert_tokens_to_ids("<bos>"))])
    return tok


def reproduce(task, tok, tagger):
    ds = task.dataset(tok)
    records = ds.to_records()
    tokens = [ds.tokens(i) for i in range(len(ds))]
    sug = tagger(records, tokens)
    assert isinstance(sug, Suggestion) and len(sug) == len(ds) == N
    assert sug.failed == {}
    assert sug.span_names == list(ds.schema.spans)
    for i, ex in enumerate(ds.examples):
        want = dict(zip(ds.schema.spans, ex.spans))
        assert sug.spans[i] == want, (i, ex.clean, sug.spans[i], want)
    assert sug.agreement([r["spans"] for r in records]) == 1.0
    return ds, records, tokens


@pytest.mark.parametrize("order", ["ABBA", "BABA", "both"])
@pytest.mark.parametrize("bos", [False, True])
def test_ioi_rules_reproduce_builtin(tokenizers, order, bos):
    tok = tokenizers["toy-ioi"]
    tok = bos_tokenizer(tok) if bos else tok
    task = pw.tasks.get("ioi", n=N, order=order, seed=7)
    ds, records, tokens = reproduce(task, tok, R.IOI(tok, order))
    if bos:
        assert tokens[0][0] == "<bos>" and ds.examples[0].spans[0][0] == 0
    # the same from token strings alone (no tokenizer: characters matched to the tokens)
    if not bos:
        assert R.IOI(None, order)(records, tokens).spans == R.IOI(tok, order)(records, tokens).spans
    if order != "both":      # the other order's prompts break the S1 = S2 check
        other = "BABA" if order == "ABBA" else "ABBA"
        sug = R.IOI(tok, other)(records, tokens)
        assert sug.annotated() == [] and len(sug.failed) == N
        assert "should be the same" in sug.failed[0]


def test_greater_than_rules_reproduce_builtin(tokenizers):
    tok = tokenizers["toy-greater-than"]
    task = pw.tasks.get("greater-than", n=N, seed=7)
    _, records, tokens = reproduce(task, tok, R.GREATER_THAN(tok))
    assert R.GREATER_THAN(None)(records, tokens).spans == R.GREATER_THAN(tok)(records, tokens).spans


def test_written_by_hand_in_a_few_lines(tokenizers):
    """The module docstring's way of writing a schema (here greater-than with an explicit
    pattern instead of word lists) gives the same spans."""
    tok = tokenizers["toy-greater-than"]
    gt = R.RuleTagger([
        R.start("The"), R.word("NOUN", pattern=r"[a-z]+"), R.word("lasted", "lasted"),
        R.next_word("from"), R.next_word("the1"), R.next_word("year1"),
        R.regex("XX1", r"(\d\d)\d\d", group=1), R.regex("YY", r"\d\d"), R.next_word("to"),
        R.next_word("the2"), R.next_word("year2"), R.last_token("XX2"),
    ], tok)
    reproduce(pw.tasks.get("greater-than", n=N, seed=3), tok, gt)


def test_unmatched_examples_are_left_out_with_reasons(tokenizers):
    tok = tokenizers["toy-ioi"]
    recs = [{"clean": "When Mary and John went to the store , John gave a book to"},
            {"clean": "When Mary and John went to the store , Tom gave a book to"},  # S2 != S1
            {"clean": "When Mary went to the store , Mary gave a book to"},          # no "and"
            {"clean": "When Mary and John went to the store"},                     # no third name
            {"clean": ""}]
    sug = R.IOI(tok, "ABBA")(recs, None)
    assert sug.annotated() == [0]
    assert sug.spans[0]["S2"] == (9, 10) and sug.spans[0]["to"] == (13, 14)
    assert "'S1' matched 'John' and 'S2' matched 'Tom'" in sug.failed[1]
    assert "span 'and'" in sug.failed[2] and "no 1st 'and'" in sug.failed[2]
    assert "span 'S2'" in sug.failed[3] and "found 0" in sug.failed[3]
    assert "empty" in sug.failed[4]
    done = []
    R.IOI(tok)(recs, None, progress=lambda d, t, info: done.append((d, t, info["failed"])))
    assert done[-1] == (5, 5, 4)


def test_tokens_from_another_tokenizer_are_refused(tokenizers):
    tok = tokenizers["toy-ioi"]
    rec = {"clean": "When Mary and John went to the store , John gave a book to"}
    sug = R.IOI(tok)([rec], [["When", "Mary"]])
    assert sug.spans == [None]
    assert "14 tokens" in sug.failed[0] and "2 token strings" in sug.failed[0]


def test_a_span_out_of_order_is_reported(tokenizers):
    tagger = R.RuleTagger([R.start("a"), R.word("late", "book"),
                           R.word("early", "Mary", after=False), R.last_token("end")],
                          tokenizers["toy-ioi"])
    sug = tagger([{"clean": "When Mary and John went to the store , John gave a book to"}], None)
    assert "span 'early' would start at character 5, before span 'late'" in sug.failed[0]


@pytest.mark.parametrize("make, message", [
    (lambda: R.RuleTagger([R.start("a"), R.word("b", "x")]), "must be last_token"),
    (lambda: R.RuleTagger([R.last_token("a"), R.last_token("b")]), "and only it"),
    (lambda: R.RuleTagger([R.start("a"), R.start("a"), R.last_token("b")]), "unique"),
    (lambda: R.RuleTagger([R.start("length"), R.last_token("b")]), "reserved"),
    (lambda: R.RuleTagger(["prefix", R.last_token("b")]), "got str"),
    (lambda: R.RuleTagger([R.start("a"), R.last_token("b")], checks=[R.same("a", "zz")]),
     "['zz']"),
    (lambda: R.regex("YY", r"\d(\d"), "bad regular expression"),
    (lambda: R.regex("YY", r"\d\d", group=2), "no group 2"),
    (lambda: R.word("IO", []), "non-empty list"),
    (lambda: R.word("prefix", ["When", "Later that day"]), "'Later that day' is not one word"),
    (lambda: R.word("IO"), "either words"),
    (lambda: R.word("IO", "Mary", pattern="M.*"), "either words"),
    (lambda: R.word("IO", pattern="(["), "bad regular expression"),
    (lambda: R.word("IO", "Mary", n=0), "from 1"),
    (lambda: R.next_word("x", n=True), "from 1"),
])
def test_bad_rules_raise(make, message):
    with pytest.raises(R.RuleError, match=None) as err:
        make()
    assert isinstance(err.value, pw.PeapError)
    assert message in str(err.value)


def test_token_count_mismatch_between_arguments_raises(tokenizers):
    with pytest.raises(R.RuleError, match="2 token lists for 1 examples"):
        R.IOI(tokenizers["toy-ioi"])([{"clean": "a"}], [["a"], ["b"]])
