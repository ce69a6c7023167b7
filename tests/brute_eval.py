"""Independent brute-force reference for evaluating a circuit (DESIGN.md section 5) on HF GPT-2.

Written only from the contract, in plain PyTorch, one example at a time with explicit loops.
Nothing here imports the engine; the model structure helpers, ablation sources (z*, q*, k*, v*)
and the records come from tests/brute_force.py (itself written from the contract), the circuit
forward from tests/brute_families.py (the one forward of every family, GPT-2 included).

A circuit is a set of row keys ``(kind, src, dst, src_span, dst_span)``:

* ``("resid", u, v, s, s)``: slot ``v`` at every position t with span(t) == s receives the output
  z_u[t] of component u from THIS (patched) run; every other upstream u' of v at t contributes
  z*_u'[t] (the ablation source). Biases (attention c_proj biases of earlier layers, which are not
  nodes) are always kept.
* ``(kind, h, h, s_k, s_q)`` with kind in q/k/v: head h, at a query t of span s_q and a key t' of
  span s_k, uses this run's q_t (resp. k_t', v_t') computed from its own rebuilt slot input, else
  the ablation source's q*_t (k*_t', v*_t').

:func:`run_circuit` returns the (T, vocab) logits of one example's circuit run.
"""

from __future__ import annotations

import torch

import brute_families as bfam
import brute_force as bf

KINDS = bf.KINDS


def all_keys(hf, schema):
    """Every PEAP row key for ``schema``, from the contract (same order is irrelevant)."""
    n_layer, n_head, _, _ = bf.dims(hf)
    keys = []
    for u, v in bf.residual_edges(hf):
        for s in schema:
            keys.append(("resid", u, v, s, s))
    for L in range(n_layer):
        for h in range(n_head):
            name = bf.head_name(L, h)
            for kind in KINDS:
                for sk, sq in bf.schema_pairs(schema):
                    keys.append((kind, name, name, sk, sq))
    return keys


def expand_eap(hf, eap_keys, schema):
    """An EAP circuit (span "all", resid rows only) as a PEAP key set on the real spans: each of
    its resid edges at every span, and every crossing edge in."""
    out = set()
    for kind, u, v, s1, s2 in eap_keys:
        assert kind == "resid" and s1 == "all" and s2 == "all", (kind, u, v, s1, s2)
        for s in schema:
            out.add(("resid", u, v, s, s))
    out |= {k for k in all_keys(hf, schema) if k[0] != "resid"}
    return out


def run_circuit(hf, ids, span_at, circuit, src, _break=None):
    """Circuit run of one example: the (T, vocab) logits of `brute_families.run_circuit` (the
    oracles' one circuit forward) on the GPT-2's description, read from its weights now.

    ids: 1-D LongTensor (clean prompt); span_at: span name of every position; circuit: set of row
    keys; src: ``bf.Source`` with per-position z* (component -> (T, d_model)) and q*/k*/v*
    ((L, h) -> (T, d_head)).

    ``_break`` deliberately breaks the reference (only used to show that the comparison can fail):
    ``"crossing_all_in"`` ignores crossing rows (all attention from this run),
    ``"crossing_swapped"`` looks crossing rows up with (query span, key span) swapped,
    ``"qk_swapped"`` uses the k rows for q and the q rows for k, ``"drop_bias"`` forgets the
    attention c_proj biases.
    """
    assert len(span_at) == ids.shape[0]
    return bfam.run_circuit(bfam.describe(hf), ids, span_at, circuit, src, _break=_break)


def run_dataset(hf, tok, examples, sources, circuit, _break=None):
    """(per-example metric [N], last-token logits [N, vocab]) of the circuit run, float64."""
    metrics, lasts = [], []
    for ex, src in zip(examples, sources):
        logits = run_circuit(hf, ex.clean.ids, ex.span_at, circuit, src, _break=_break)
        r = ex.record
        c, i = bf.answer_id(tok, r["correct"]), bf.answer_id(tok, r["incorrect"])
        metrics.append((logits[-1, c] - logits[-1, i]).item())
        lasts.append(logits[-1])
    return torch.tensor(metrics, dtype=torch.float64), torch.stack(lasts)


def summary(per_ex, last, full_per_ex, full_last, empty_per_ex):
    """Faithfulness, soft, hard and KL of a circuit from the contract's formulas."""
    m, m_full, m_empty = per_ex.mean().item(), full_per_ex.mean().item(), empty_per_ex.mean().item()
    hard = (last.argmax(-1) == full_last.argmax(-1)).double().mean().item()
    lp_full = torch.log_softmax(full_last, -1)
    lp = torch.log_softmax(last, -1)
    kl = (lp_full.exp() * (lp_full - lp)).sum(-1).mean().item()
    return {
        "metric": m,
        "clean_metric": m_full,
        "empty_metric": m_empty,
        "faithfulness": (m - m_empty) / (m_full - m_empty),
        "soft": m / m_full,
        "hard": hard,
        "kl": kl,
    }
