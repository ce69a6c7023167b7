"""SchemaEditor's Suggest panel, from Python: suggesters run in the kernel, the pending layer
(``suggestion``), accept / reject, the examples that disagree and those left out, span types
added for a suggestion's new names, the autosave round trip, a failing suggester, and the
saliency shading (``saliency``). The suggester is a small real one written here: it reads the
IOI roles off each prompt's text and maps them to tokens through the tokenizer's offsets."""

import json
import re

import pandas as pd
import pytest

import peap_widget as pw
from peap_widget.errors import DatasetError, PeapError, SchemaError
from peap_widget.suggest.base import Suggestion

IOI = ["prefix", "IO", "and", "S1", "S1+1", "action1", "S2", "action2", "to"]


@pytest.fixture(scope="module")
def toy():
    model = pw.models.load("toy-ioi")
    ds = pw.tasks.ioi(n=12, seed=1).dataset(model)
    return model, ds


class IOIFromText:
    """IOI spans from the prompt's text: IO is the answer's first mention, S1 and S2 the
    other name's, "and" and "to" the words; action1 runs up to the comma before S2. Prompts
    without that comma are left out (the rule does not know where action1 ends)."""

    name = "ioi from text"

    def __init__(self, tokenizer, fail=False):
        self.tokenizer, self.fail, self.calls = tokenizer, fail, []

    def __call__(self, examples, tokens, *, progress=None):
        spans, failed = [], {}
        for i, (ex, toks) in enumerate(zip(examples, tokens)):
            if self.fail and i == 3:
                raise RuntimeError("the model server went away")
            enc = self.tokenizer(ex["clean"], return_offsets_mapping=True, add_special_tokens=False)
            starts = [a for a, _ in enc["offset_mapping"]]
            assert len(starts) == len(toks)
            tok_at = lambda ch: starts.index(ch)  # noqa: E731
            text, io, s = ex["clean"], ex["correct"].strip(), ex["incorrect"].strip()
            io1 = tok_at(re.search(rf"\b{io}\b", text).start())
            s1, s2 = [tok_at(m.start()) for m in re.finditer(rf"\b{s}\b", text)][:2]
            comma = text.rfind(",", 0, starts[s2])
            if comma < starts[s1]:
                failed[i] = "no comma between S1 and S2: where action1 ends is unknown"
                spans.append(None)
            else:
                n = len(toks)
                spans.append({"prefix": (0, io1), "IO": (io1, io1 + 1), "and": (io1 + 1, s1),
                              "S1": (s1, s1 + 1), "S1+1": (s1 + 1, s1 + 2), "action1": (s1 + 2, s2),
                              "S2": (s2, s2 + 1), "action2": (s2 + 1, n - 1), "to": (n - 1, n)})
            if progress:
                progress(i + 1, len(examples), {"tokens": 10 * (i + 1), "cost": 0.001 * (i + 1)})
        return Suggestion(IOI, spans, source="rules", failed=failed,
                          info={"tokens": 10 * len(examples), "cost": 0.001 * len(examples)})


def builtin(ds):
    return [[list(r) for r in e.spans] for e in ds.examples]


def merged(row):
    """A valid but different annotation: S1+1 folded into action1 (S1+1 empty)."""
    row = [list(r) for r in row]
    row[5] = [row[4][0], row[5][1]]
    row[4] = [row[4][0], row[4][0]]
    return row


def editor_with_changes(ds, model, changed, **kw):
    ed = pw.SchemaEditor(ds, suggesters=[IOIFromText(model.tokenizer)], **kw)
    ed.annotations = [merged(r) if i in changed else r for i, r in enumerate(builtin(ds))]
    return ed


def test_suggester_matches_the_builtin_schema(toy):
    model, ds = toy
    s = IOIFromText(model.tokenizer)(ds.to_records(), [ds.tokens(i) for i in range(len(ds))])
    assert s.failed == {10: "no comma between S1 and S2: where action1 ends is unknown"}
    ref = [r["spans"] for r in ds.to_records()]
    assert s.agreement(ref) == 11 / 12


def test_pending_layer_disagreements_accept_reject(toy):
    model, ds = toy
    changed = {0, 2, 4, 6, 8, 10}
    ed = editor_with_changes(ds, model, changed)
    assert ed.suggesters == ["ioi from text"]
    seen = []
    ed.observe(lambda c: seen.append(dict(c["new"])), names="suggest_status")
    before = json.loads(json.dumps(ed.annotations))
    result = ed.suggest("ioi from text")
    assert isinstance(result, Suggestion)
    # the run reported progress to the page, then its counts
    assert seen[0]["running"] is True and seen[0]["done"] == 0 and seen[0]["total"] == 12
    assert [s["done"] for s in seen if s["running"]][1:] == list(range(1, 13))
    assert seen[-1]["running"] is False and seen[-1]["info"] == {"tokens": 120, "cost": pytest.approx(0.012)}
    assert seen[-1]["message"] == "11 proposed, 1 left out"
    # nothing changed yet: the suggestion is a layer over the annotations
    assert ed.annotations == before
    sug = ed.suggestion
    assert sug["name"] == "ioi from text" and sug["source"] == "rules" and sug["span_names"] == IOI
    assert sug["status"] == [None] * 12 and sug["spans"][10] is None
    assert ed.left_out() == {10: "no comma between S1 and S2: where action1 ends is unknown"}
    assert ed.disagreements() == [0, 2, 4, 6, 8]        # 10 differs too but was left out
    assert ed.pending() == [i for i in range(12) if i != 10]
    assert ed.proposed_spans(0) == dict(zip(IOI, builtin(ds)[0]))
    rep = ed.suggestion_report()
    assert list(rep.columns) == ["example", "status", "differs", "reason"]
    assert rep.status.tolist() == ["disagrees", "agrees"] * 5 + ["left out", "agrees"]
    assert rep.differs[0] == ["S1+1", "action1"] and rep.reason[10].startswith("no comma")

    assert ed.accept_suggestion([0, 2, 1, 10]) == [0, 2, 1]        # 10 has nothing to accept
    assert ed.reject_suggestion(4) == [4]
    want = [builtin(ds)[i] if i in (0, 1, 2) or i not in changed else merged(builtin(ds)[i])
            for i in range(12)]
    assert ed.annotations == want
    assert ed.disagreements() == [6, 8]
    assert ed.suggestion["status"][:5] == ["accepted", "accepted", "accepted", None, "rejected"]
    assert ed.accept_suggestion() == [3, 5, 6, 7, 8, 9, 11]
    assert ed.pending() == [] and ed.disagreements() == []
    out = ed.dataset
    assert [list(map(list, e.spans)) for e in out.examples] == \
        [builtin(ds)[i] if i not in (4, 10) else merged(builtin(ds)[i]) for i in range(12)]
    with pytest.raises(PeapError, match="no suggestion is pending"):
        pw.SchemaEditor(ds).accept_suggestion()


def test_autosave_carries_the_pending_layer(toy, tmp_path):
    model, ds = toy
    path = tmp_path / "spans.json"
    ed = editor_with_changes(ds, model, {0, 2, 4}, path=path)
    ed.suggest(0)
    ed.accept_suggestion([0])
    ed.reject_suggestion([2])
    doc = json.loads(path.read_text())
    assert doc["suggestion"]["status"][:3] == ["accepted", None, "rejected"]
    assert doc["suggestion"]["spans"][4] == dict(zip(IOI, builtin(ds)[4]))
    # a "kernel restart": a new editor on the same file has the pending layer back
    again = pw.SchemaEditor(ds, path=path)
    assert again.suggestion == ed.suggestion
    assert again.annotations == ed.annotations
    assert again.disagreements() == [4]
    assert again.accept_suggestion() == [1, 3, 4, 5, 6, 7, 8, 9, 11]
    want = builtin(ds)
    want[2] = merged(want[2])                                # rejected: keeps its own
    assert again.annotations == want
    # the dataset file still loads as a plain Dataset
    assert pw.Dataset.from_json(path, model).to_records()[4]["spans"] == ds.to_records()[4]["spans"]
    # older files (no "suggestion") load as before; a broken one is refused, untouched
    doc.pop("suggestion")
    old = tmp_path / "old.json"
    old.write_text(json.dumps(doc))
    assert pw.SchemaEditor(ds, path=old).suggestion == {}
    doc["suggestion"] = {"span_names": IOI, "spans": [None] * 3}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    text = bad.read_text()
    with pytest.raises(DatasetError, match="3 proposals .* for 12 examples"):
        pw.SchemaEditor(ds, path=bad)
    assert bad.read_text() == text


def test_new_span_names_are_added_or_refused(toy):
    model, ds = toy
    recs = [{k: v for k, v in r.items() if k != "spans"} for r in ds.to_records()]
    ed = pw.SchemaEditor(recs, model=model, schema=["IO", "S1", "S2", "to"],
                         suggesters=[IOIFromText(model.tokenizer)])
    with pytest.raises(SchemaError, match="names spans the editor lacks"):
        ed.suggest(0, new_spans="refuse")
    assert ed.span_names == ["IO", "S1", "S2", "to"] and ed.suggestion == {}
    assert "lacks" in ed.suggest_status["error"]
    ed.suggest(0)
    assert ed.span_names == IOI
    ed.accept_suggestion()
    assert ed.validation().example.tolist() == [10]           # left out: still to annotate
    # a suggestion in another order is refused with the reason
    swapped = IOI[:]
    swapped[1], swapped[3] = swapped[3], swapped[1]
    with pytest.raises(SchemaError, match="orders its spans"):
        ed.set_suggestion(Suggestion(swapped, [None] * 12))


def test_invalid_proposals_are_left_out_with_the_reason(toy):
    model, ds = toy
    ed = pw.SchemaEditor(ds)
    spans = [dict(zip(IOI, r)) for r in builtin(ds)]
    spans[1] = {**spans[1], "IO": (1, 3)}                      # overlaps "and"
    spans[2] = {**spans[2], "S9": (0, 1)}
    spans[3] = "IO"
    ed.set_suggestion(Suggestion(IOI, spans, failed={5: "timed out"}), name="hand")
    lo = ed.left_out()
    assert sorted(lo) == [1, 2, 3]                             # 5 had a proposal after all
    assert "contiguous" in lo[1] and "unknown_span" in lo[2] and "format" in lo[3]
    with pytest.raises(PeapError, match="has 3 examples, the editor 12"):
        ed.set_suggestion(Suggestion(IOI, spans[:3]))
    with pytest.raises(PeapError, match="returns a peap_widget.suggest.Suggestion"):
        ed.set_suggestion({"spans": spans})


def test_a_failing_suggester_is_reported_and_changes_nothing(toy, tmp_path):
    model, ds = toy
    ed = editor_with_changes(ds, model, {0}, path=tmp_path / "a.json")
    ed.suggest(0)
    ed.accept_suggestion([0])
    keep = (json.loads(json.dumps(ed.annotations)), json.loads(json.dumps(ed.suggestion)))
    ed.add_suggester(IOIFromText(model.tokenizer, fail=True))
    assert ed.suggesters == ["ioi from text", "ioi from text (2)"]
    # from the page: the message runs it, the error lands in the panel, nothing raises
    ed._on_message(ed, {"type": "suggest", "name": "ioi from text (2)"}, [])
    st = ed.suggest_status
    assert st["running"] is False
    assert st["error"] == "ioi from text (2) failed: RuntimeError: the model server went away"
    assert (ed.annotations, ed.suggestion) == keep
    assert json.loads((tmp_path / "a.json").read_text())["suggestion"] == keep[1]
    with pytest.raises(RuntimeError, match="went away"):
        ed.suggest(1)
    ed._on_message(ed, {"type": "suggest", "name": "nope"}, [])
    assert "no suggester 'nope'" in ed.suggest_status["error"]
    with pytest.raises(PeapError, match="a suggester is a callable"):
        ed.add_suggester(42)


def test_saliency_from_lists_and_frames(toy):
    model, ds = toy
    ed = pw.SchemaEditor(ds)
    n = [len(ds.tokens(i)) for i in range(12)]
    lists = [[float(k == 1) for k in range(m)] for m in n]
    ed.show_saliency(lists)
    assert ed.saliency == {"label": "saliency", "scores": lists}
    frame = pd.DataFrame([{"example": i, "position": k, "score": 0.5 * k, "grad": -k}
                          for i in range(12) for k in range(n[i])])
    ed.show_saliency(frame)
    assert ed.saliency["label"] == "score" and ed.saliency["scores"][3] == [0.5 * k for k in range(n[3])]
    ed.show_saliency(frame, column="grad", label="gradient")
    assert ed.saliency["label"] == "gradient" and ed.saliency["scores"][0][2] == -2
    partial = frame[frame.position != 0].assign(score=[float("nan")] + [1.0] * (len(frame[frame.position != 0]) - 1))
    ed.show_saliency(partial)
    assert ed.saliency["scores"][0][:2] == [None, None]       # missing and NaN: no shade
    with pytest.raises(PeapError, match="example 2: 3 saliency scores for its 16 tokens"):
        ed.show_saliency(lists[:2] + [[0, 0, 0]] + lists[3:])
    ed.show_saliency(frame.drop(columns="score"))             # the only other numeric column
    assert ed.saliency["label"] == "grad"
    with pytest.raises(PeapError, match=r"which column .* \['a', 'grad'\]"):
        ed.show_saliency(frame.rename(columns={"score": "a"}))
    with pytest.raises(PeapError, match="position 40 is outside"):
        ed.show_saliency(pd.DataFrame({"example": [0], "position": [40], "score": [1.0]}))
    ed.show_saliency(None)
    assert ed.saliency == {}
