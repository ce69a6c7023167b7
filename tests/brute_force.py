"""Independent brute-force reference for (P)EAP edge scores on HF GPT-2 models.

Written only from the contract (definitions), in plain PyTorch, one example at a time and with
explicit loops. Nothing here imports the engine (only ``transformers`` models are used, and the
families' brute force, `brute_families`, for the forward itself).

Overview
--------
* :func:`run_gpt2` is the hand-written float64 GPT-2 forward for ONE prompt (the oracles' one
  forward, `brute_families.run`, on the GPT-2's description). Every input slot
  (``a{L}.h{H}<q|k|v>``, ``m{L}``, ``logits``) gets its own copy of the residual stream plus a
  zero tensor ``eps`` that requires grad, so one backward pass gives ``g_v`` for every slot. Each
  head's result (o_h @ W_O^h, no c_proj bias) also gets a zero ``eps``, giving ``g_out``.
* :func:`residual_values` / :func:`crossing_values` give per-position (resp. per (t, t'))
  edge values for one example.
* :func:`brute_force_scores` aggregates those over spans and averages over examples, returning a
  dict keyed like the rows of the engine's edge table:
  ``(kind, src, dst, src_span, dst_span) -> score``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

import brute_families as bfam

KINDS = ("q", "k", "v")


# ----------------------------------------------------------------------------------------------
# Model structure helpers
# ----------------------------------------------------------------------------------------------


def dims(hf):
    cfg = hf.config
    n_layer, n_head, d_model = cfg.n_layer, cfg.n_head, cfg.n_embd
    return n_layer, n_head, d_model, d_model // n_head


def head_name(layer, head):
    return f"a{layer}.h{head}"


def components(hf):
    """All components in order: input, then per layer its heads and its MLP."""
    n_layer, n_head, _, _ = dims(hf)
    out = ["input"]
    for L in range(n_layer):
        out += [head_name(L, h) for h in range(n_head)]
        out.append(f"m{L}")
    return out


def heads(hf):
    n_layer, n_head, _, _ = dims(hf)
    return [(L, h) for L in range(n_layer) for h in range(n_head)]


def slots(hf):
    n_layer, n_head, _, _ = dims(hf)
    out = []
    for L in range(n_layer):
        for h in range(n_head):
            out += [f"{head_name(L, h)}<{k}>" for k in KINDS]
        out.append(f"m{L}")
    out.append("logits")
    return out


def upstream(hf, slot):
    """Components whose output reaches ``slot`` through the residual stream."""
    n_layer, n_head, _, _ = dims(hf)
    if slot == "logits":
        return components(hf)
    if slot.startswith("m"):
        L = int(slot[1:])
        ups = ["input"]
        for l in range(L):
            ups += [head_name(l, h) for h in range(n_head)] + [f"m{l}"]
        ups += [head_name(L, h) for h in range(n_head)]
        return ups
    L = int(slot[1:slot.index(".")])
    ups = ["input"]
    for l in range(L):
        ups += [head_name(l, h) for h in range(n_head)] + [f"m{l}"]
    return ups


def residual_edges(hf):
    return [(u, v) for v in slots(hf) for u in upstream(hf, v)]


# ----------------------------------------------------------------------------------------------
# Manual forward
# ----------------------------------------------------------------------------------------------

#: one prompt's forward: ``logits``, per component ``z``, per head ``q``, ``k``, ``v``, ``attn``
#: and, with a metric, per slot ``g`` and per head ``g_out`` (brute_families' hand-written
#: forward, which covers GPT-2 with the other families)
Trace = bfam.Trace


def _ln(module, x):
    """LayerNorm written out, with the HF module's weight, bias and eps."""
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + module.eps) * module.weight + module.bias


def attn_scale(hf, layer):
    """Multiplier applied to q.k, GPT-2's own scaling."""
    cfg = hf.config
    _, _, _, d_head = dims(hf)
    s = 1.0
    if getattr(cfg, "scale_attn_weights", True):
        s = 1.0 / math.sqrt(d_head)
    if getattr(cfg, "scale_attn_by_inverse_layer_idx", False):
        s = s / float(layer + 1)
    return s


def head_weights(hf, layer, head):
    """(W_Q, b_Q, W_K, b_K, W_V, b_V, W_O) of one head; c_attn/c_proj are HF Conv1D (x @ W + b)."""
    _, _, d_model, d_head = dims(hf)
    attn = hf.transformer.h[layer].attn
    W, b = attn.c_attn.weight, attn.c_attn.bias            # (d_model, 3 d_model)
    cols = slice(head * d_head, (head + 1) * d_head)
    Wq, Wk, Wv = W[:, :d_model][:, cols], W[:, d_model:2 * d_model][:, cols], W[:, 2 * d_model:][:, cols]
    bq, bk, bv = b[:d_model][cols], b[d_model:2 * d_model][cols], b[2 * d_model:][cols]
    Wo = attn.c_proj.weight[cols, :]                        # (d_head, d_model)
    return Wq, bq, Wk, bk, Wv, bv, Wo


def run_gpt2(hf, ids, correct=None, incorrect=None, slot_delta=None, head_delta=None):
    """Manual forward of one prompt ``ids`` (1-D LongTensor): `brute_families.run` on the GPT-2's
    description, read from its weights at this call.

    If ``correct``/``incorrect`` token ids are given, the metric
    logit[correct] - logit[incorrect] at the last token is back-propagated and the trace gets
    ``g`` (per slot) and ``g_out`` (per head).
    ``slot_delta``: optional {slot: (T, d_model)} added to that slot's own input copy (pre-LN).
    ``head_delta``: optional {(L, h): (T, d_model)} added to that head's result.
    """
    return bfam.run(bfam.describe(hf), ids, correct, incorrect, slot_delta, head_delta)


# ----------------------------------------------------------------------------------------------
# Records
# ----------------------------------------------------------------------------------------------


def encode(tok, text):
    return torch.tensor(tok(text, add_special_tokens=False)["input_ids"], dtype=torch.long)


def answer_id(tok, word):
    ids = tok(word, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1, (word, ids)
    return ids[0]


def span_of_positions(record, T, schema):
    """List of the span name for every position (each position must lie in exactly one span)."""
    out = [None] * T
    for s in schema:
        a, b = record["spans"][s]
        for t in range(a, b):
            assert out[t] is None, "overlapping spans"
            out[t] = s
    assert all(x is not None for x in out), "spans must cover the prompt"
    return out


@dataclass
class Example:
    record: dict
    clean: Trace
    corrupted_ids: torch.Tensor
    span_at: list


def prepare(hf, tok, records, schema):
    exs = []
    for r in records:
        ids = encode(tok, r["clean"])
        cids = encode(tok, r["corrupted"])
        assert ids.shape == cids.shape
        tr = run_gpt2(hf, ids, answer_id(tok, r["correct"]), answer_id(tok, r["incorrect"]))
        exs.append(Example(r, tr, cids, span_of_positions(r, ids.shape[0], schema)))
    return exs


# ----------------------------------------------------------------------------------------------
# Ablation sources
# ----------------------------------------------------------------------------------------------


@dataclass
class Source:
    """Per example: z*_u (component -> (T, d)) and q*, k*, v* ((L, h) -> (T, d_head))."""
    z: dict
    q: dict
    k: dict
    v: dict


def ablation_sources(hf, examples, ablation, schema):
    if ablation == "counterfactual":
        out = []
        for ex in examples:
            c = run_gpt2(hf, ex.corrupted_ids)
            out.append(Source(c.z, c.q, c.k, c.v))
        return out
    if ablation == "zero":
        out = []
        for ex in examples:
            c = ex.clean
            out.append(Source({u: torch.zeros_like(x) for u, x in c.z.items()},
                              {k: torch.zeros_like(x) for k, x in c.q.items()},
                              {k: torch.zeros_like(x) for k, x in c.k.items()},
                              {k: torch.zeros_like(x) for k, x in c.v.items()}))
        return out
    if ablation == "mean":
        # Pooled mean over all examples and all tokens of each span type, from clean runs.
        def span_means(get):
            means = {}
            keys = get(examples[0].clean).keys()
            for key in keys:
                means[key] = {}
                for s in schema:
                    total, count = None, 0
                    for ex in examples:
                        x = get(ex.clean)[key]
                        for t in range(x.shape[0]):
                            if ex.span_at[t] == s:
                                total = x[t].clone() if total is None else total + x[t]
                                count += 1
                    means[key][s] = None if count == 0 else total / count
            return means

        mz, mq, mk, mv = (span_means(lambda tr: tr.z), span_means(lambda tr: tr.q),
                          span_means(lambda tr: tr.k), span_means(lambda tr: tr.v))

        def per_pos(means, ex):
            return {key: torch.stack([means[key][ex.span_at[t]] for t in range(len(ex.span_at))])
                    for key in means}

        return [Source(per_pos(mz, ex), per_pos(mq, ex), per_pos(mk, ex), per_pos(mv, ex))
                for ex in examples]
    raise ValueError(ablation)


# ----------------------------------------------------------------------------------------------
# Per-example edge values
# ----------------------------------------------------------------------------------------------


def residual_values(hf, ex, src):
    """(u, v) -> (T,) tensor of (z*_u[t] - z_u[t]) . g_v[t] for every position t."""
    c = ex.clean
    T = c.ids.shape[0]
    out = {}
    for u, v in residual_edges(hf):
        vals = torch.empty(T, dtype=torch.float64)
        for t in range(T):
            vals[t] = torch.dot(src.z[u][t] - c.z[u][t], c.g[v][t])
        out[(u, v)] = vals
    return out


def head_result_at(q_row_scores, v, Wo):
    """Head result at one query from its (masked) score row and the value vectors."""
    a = torch.softmax(q_row_scores, dim=-1)
    return (a[:, None] * v).sum(0) @ Wo


def crossing_values(hf, ex, src):
    """((L, h), kind) -> (T, T) tensor, entry [t, t'] = (zhat[t, t'] - z_h[t]) . g_out[t]
    for t' <= t (NaN above the diagonal). zhat is recomputed explicitly with ONE change."""
    c = ex.clean
    T = c.ids.shape[0]
    out = {}
    for (L, h) in heads(hf):
        Wo = head_weights(hf, L, h)[-1]
        scale = attn_scale(hf, L)
        q, k, v = c.q[(L, h)], c.k[(L, h)], c.v[(L, h)]
        qs, ks, vs = src.q[(L, h)], src.k[(L, h)], src.v[(L, h)]
        z = c.z[head_name(L, h)]
        g = c.g_out[(L, h)]
        vals = {kind: torch.full((T, T), float("nan"), dtype=torch.float64) for kind in KINDS}
        for t in range(T):
            keys = list(range(t + 1))  # causal mask: only keys t' <= t take part
            base_scores = torch.stack([torch.dot(q[t], k[j]) * scale for j in keys])
            base_v = v[: t + 1]
            for tp in keys:
                # v: the value vector of key t' replaced, only in query t's weighted sum
                v_mod = base_v.clone()
                v_mod[tp] = vs[tp]
                zhat_v = head_result_at(base_scores, v_mod, Wo)
                # k: only the score (t, t') uses k*_{t'}
                s_mod = base_scores.clone()
                s_mod[tp] = torch.dot(q[t], ks[tp]) * scale
                zhat_k = head_result_at(s_mod, base_v, Wo)
                # q: only the score (t, t') uses q*_t
                s_mod = base_scores.clone()
                s_mod[tp] = torch.dot(qs[t], k[tp]) * scale
                zhat_q = head_result_at(s_mod, base_v, Wo)
                for kind, zhat in (("q", zhat_q), ("k", zhat_k), ("v", zhat_v)):
                    vals[kind][t, tp] = torch.dot(zhat - z[t], g[t])
        for kind in KINDS:
            out[((L, h), kind)] = vals[kind]
    return out


# ----------------------------------------------------------------------------------------------
# Aggregation
# ----------------------------------------------------------------------------------------------


def aggregate(values, aggregation):
    """values: list of python floats (the real edges inside one span / span pair)."""
    if len(values) == 0:
        return 0.0
    if aggregation == "sum":
        return float(sum(values))
    if aggregation == "mean":
        return float(sum(values)) / len(values)
    if aggregation == "max_abs":
        best = values[0]
        for x in values[1:]:
            if abs(x) > abs(best):
                best = x
        return float(best)
    raise ValueError(aggregation)


def schema_pairs(schema):
    """(key span, query span) with key span not after query span in schema order."""
    return [(schema[i], schema[j]) for j in range(len(schema)) for i in range(j + 1)]


def brute_force_scores(hf, tok, records, schema, ablation="counterfactual",
                       aggregations=("sum",), method="peap", examples=None):
    """{aggregation: {(kind, src, dst, src_span, dst_span): score}}.

    ``method="eap"``: residual edges only, aggregated over one span "all" covering the whole
    prompt. The ablation source is the same as for PEAP (for ``mean``: the per-span-type means of
    the dataset's spans), so that EAP == the sum over spans of PEAP residual scores.
    """
    if examples is None:
        examples = prepare(hf, tok, records, schema)
    sources = ablation_sources(hf, examples, ablation, schema)
    if method == "eap":
        examples = [Example(dict(ex.record, spans={"all": [0, len(ex.span_at)]}), ex.clean,
                            ex.corrupted_ids, ["all"] * len(ex.span_at)) for ex in examples]
        schema = ["all"]
    n = len(examples)
    results = {agg: {} for agg in aggregations}

    def add(agg, key, value):
        results[agg][key] = results[agg].get(key, 0.0) + value / n

    for ex, src in zip(examples, sources):
        rv = residual_values(hf, ex, src)
        for (u, v), vals in rv.items():
            for s in schema:
                a, b = ex.record["spans"][s]
                reals = [vals[t].item() for t in range(a, b)]
                for agg in aggregations:
                    add(agg, ("resid", u, v, s, s), aggregate(reals, agg))
        if method == "eap":
            continue
        cv = crossing_values(hf, ex, src)
        for ((L, h), kind), mat in cv.items():
            name = head_name(L, h)
            for sk, sq in schema_pairs(schema):
                ka, kb = ex.record["spans"][sk]
                qa, qb = ex.record["spans"][sq]
                reals = [mat[t, tp].item() for t in range(qa, qb) for tp in range(ka, kb) if tp <= t]
                for agg in aggregations:
                    add(agg, (kind, name, name, sk, sq), aggregate(reals, agg))
    return results


def expected_row_count(hf, schema, method="peap"):
    n_layer, n_head, _, _ = dims(hf)
    n_resid = len(residual_edges(hf))
    if method == "eap":
        return n_resid
    n_pairs = len(schema) * (len(schema) + 1) // 2
    return n_resid * len(schema) + n_layer * n_head * 3 * n_pairs
