"""Checks of lab 1 (what is a circuit). Expected values come from `reference.Reference`, a
node-by-node plain-PyTorch GPT-2, never from the evaluator the students call."""

from __future__ import annotations

from .core import as_float, close, correct, fmt, register, wrong
from .shared import corrupted_metric, edge_label, mean_metric, reference, residual_edge


@register("lab1.clean_logit_diff")
def clean_logit_diff(answer, model, ds):
    """The mean over ``ds`` of logit[correct] - logit[incorrect] at the last token (clean)."""
    got = as_float(answer)
    exp = mean_metric(model, ds)
    if close(got, exp):
        correct(f"the model prefers the right name by {fmt(exp)} logits on average over "
                f"{len(ds)} prompts.")
    per = -exp if close(got, -exp) else None
    hint = (" You have the sign flipped: it is logit[correct] minus logit[incorrect]." if per
            else " Take the logits at the LAST position ([0, -1]) and average over every example.")
    wrong(f"expected about {fmt(exp)}, got {fmt(got)}.{hint}")


@register("lab1.counterfactual_logit_diff")
def counterfactual_logit_diff(answer, model, ds):
    """The same logit difference (same answer tokens) on the corrupted prompts."""
    got = as_float(answer)
    exp = corrupted_metric(model, ds)
    if close(got, exp, atol=2e-3):
        correct(f"on the corrupted prompts the two names are about equally likely ({fmt(exp)}): "
                "the information that picks the answer is gone.")
    clean = mean_metric(model, ds)
    hint = (" That is the clean value: run the model on ex.corrupted_ids." if close(got, clean)
            else " Use the corrupted prompt but keep the clean answers (correct, incorrect).")
    wrong(f"expected about {fmt(exp)}, got {fmt(got)}.{hint}")


@register("lab1.edges_into_slot")
def edges_into_slot(answer, model, slot: str = "a2.h1<q>"):
    """How many edges end in ``slot``: ``input`` plus every head and MLP of earlier layers."""
    got = as_float(answer)
    ups = reference(model).upstream(slot)
    if got == len(ups):
        correct(f"{slot} reads {len(ups)} upstream outputs: {', '.join(ups[:4])}, ..., {ups[-1]}.")
    ref = reference(model)
    wrong(f"expected {len(ups)}, got {answer}. Count `input` once, then for every layer before "
          f"this one its {ref.H} heads and its MLP.")


@register("lab1.n_edges")
def n_edges(answer, model):
    """Residual edges of the whole graph without positions."""
    got = as_float(answer)
    exp = len(reference(model).edges())
    if got == exp:
        correct(f"{exp} edges: every (upstream component, slot) pair.")
    wrong(f"expected {exp}, got {answer}. Sum, over every slot (each head's q, k and v input, "
          "each MLP, the logits), the number of components upstream of it.")


def _without(model, ds, edge):
    u, v, span = residual_edge(edge)
    ref = reference(model)
    if u not in ref.upstream(v):
        wrong(f"{edge_label(u, v)} is not an edge of this model's graph.")
    return u, v, mean_metric(model, ds, {(u, v): 1.0 if span is None else {span: 1.0}})


@register("lab1.evaluator_without_edge")
def evaluator_without_edge(answer, model, ds, edge: str = "a3.h2->logits"):
    """Mean logit difference of the full circuit minus ``edge`` (counterfactual ablation)."""
    got = as_float(answer)
    u, v, exp = _without(model, ds, edge)
    full = mean_metric(model, ds)
    if close(got, exp):
        correct(f"without {edge_label(u, v)} the logit difference falls from {fmt(full)} to "
                f"{fmt(exp)}.")
    hint = (" That is the clean value: did you remove the edge from the circuit before running it?"
            if close(got, full) else "")
    wrong(f"expected about {fmt(exp)}, got {fmt(got)}.{hint}")


@register("lab1.hand_patch")
def hand_patch(answer, model, ds, edge: str = "a3.h2->logits"):
    """The same number, from the hooks written by hand."""
    got = as_float(answer)
    _, _, exp = _without(model, ds, edge)
    full = mean_metric(model, ds)
    if close(got, exp):
        correct(f"your hand patch gives {fmt(got)}, exactly what the evaluator says: removing "
                "an edge = giving its destination the counterfactual value of its source.")
    if close(got, full):
        wrong(f"you got the clean value {fmt(full)}: the hook did not change anything "
              "(is delta zero, or added somewhere else?).")
    if close(got, 2 * full - exp, rtol=1e-2):
        wrong("the effect has the wrong sign: delta = z_cf - z_clean (the counterfactual "
              "replaces the clean value).")
    wrong(f"expected about {fmt(exp)}, got {fmt(got)}. delta must be the head's output on the "
          "corrupted prompt minus its output on the clean prompt, added to ln_f's input only.")


@register("lab1.faithfulness")
def faithfulness(answer, model, ds, edge: str = "a3.h2->logits"):
    """Normalized faithfulness of the full circuit minus ``edge``."""
    got = as_float(answer)
    _, _, m_c = _without(model, ds, edge)
    full, empty = mean_metric(model, ds), corrupted_metric(model, ds)
    exp = (m_c - empty) / (full - empty)
    if close(got, exp):
        correct(f"f = ({fmt(m_c)} - {fmt(empty)}) / ({fmt(full)} - {fmt(empty)}) = {fmt(exp)}: "
                f"this circuit keeps {exp:.0%} of the model's behaviour.")
    if close(got, m_c / full):
        wrong(f"{fmt(got)} is m(C) / m(full) (the 'soft' ratio); normalized faithfulness also "
              "subtracts the empty circuit: (m(C) - m(empty)) / (m(full) - m(empty)).")
    wrong(f"expected {fmt(exp)}, got {fmt(got)}: (m(C) - m(empty)) / (m(full) - m(empty)), "
          "with m(empty) the counterfactual logit difference.")


@register("lab1.empty_circuit")
def empty_circuit(answer, model, ds):
    """Multiple choice: the empty circuit's metric is (a) the clean logit difference, (b) the
    counterfactual one, (c) zero."""
    choice = str(answer).strip().lower().strip("()")
    clean, cf = mean_metric(model, ds), corrupted_metric(model, ds)
    if choice in ("b", "counterfactual", "corrupted"):
        correct(f"the empty circuit gives {fmt(cf)}, the counterfactual logit difference: with no "
                "edge kept, every slot reads the counterfactual run, so the whole run is the "
                "counterfactual run.")
    if choice not in ("a", "c", "clean", "zero", "0"):
        wrong(f"answer with one letter, 'a', 'b' or 'c' (got {answer!r}).")
    wrong(f"compare m_empty with your numbers: clean {fmt(clean)}, counterfactual {fmt(cf)}.")


@register("lab1.most_important_logit_edge")
def most_important_logit_edge(answer, model, ds):
    """The edge into ``logits`` whose removal lowers the mean logit difference the most."""
    u, v, _ = residual_edge(answer, "your answer")
    ref = reference(model)
    drops = {w: mean_metric(model, ds, {(w, "logits"): 1.0}) for w in ref.upstream("logits")}
    best = min(drops, key=drops.get)
    if v != "logits":
        wrong(f"{edge_label(u, v)} does not end in the logits; compare the edges '<source>->logits'.")
    if u == best:
        second = sorted(drops, key=drops.get)[1]
        correct(f"{best}->logits: removing it leaves {fmt(drops[best])} (next: {second}->logits, "
                f"{fmt(drops[second])}).")
    if u not in drops:
        wrong(f"{u!r} is not a component upstream of the logits.")
    wrong(f"removing {u}->logits leaves {fmt(drops[u])}, but another edge into the logits "
          "hurts more. Evaluate all of them and take the lowest metric.")
