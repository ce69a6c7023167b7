"""``induction-groundtruth``: a hand-built 2-layer GPT-2 whose induction circuit is known exactly.

Every weight is set by the code below (nothing is trained), so that position-aware circuit
discovery can be checked against a known answer.

Task
----
Prompts follow the span schema ``["pre", "A1", "B", "mid", "A2"]``::

    pre: 0-5 filler words | A1: word A | B: word B | mid: 0-5 filler words | A2: word A again

and the model must predict ``B`` after the second ``A`` (``[...] A B [...] A -> B``). ``A`` and
``B`` are two different *content* words, fillers come from a disjoint *filler* vocabulary, so ``A``
occurs exactly twice and ``B`` exactly once. The counterfactual replaces both copies of ``A`` by
``A'`` and ``B`` by ``B'`` (``A, B, A', B'`` all different), so its answer is ``B'``;
``correct = B``, ``incorrect = B'``, the metric is logit[B] - logit[B'] at the last token.
Lengths vary from 3 to 13 tokens and ``pre`` and ``mid`` may be empty.

Residual stream (``d_model = 128``; named subspaces, basis vectors ``e_...``)
--------------------------------------------------------------------------------
=========  ===================  ==================================================================
name       size                 holds
=========  ===================  ==================================================================
TOK        vocab (20)           one-hot identity of the token at this position (``wte``)
POS        n_positions (16)     one-hot position (``wpe``)
PREV       vocab                identity of the *previous* token, written by ``a0.h0``
OUT        vocab                the token to predict, written by ``a1.h0``; the only thing
                                ``lm_head`` reads
DECOY      vocab                written by the decoy heads ``a0.h1``, ``a1.h1``; read by nobody
                                downstream that matters (``a1.h1`` only)
BAL        1                    balance: every write ``e_X`` comes as ``e_X - e_BAL``
ANC        2                    anchor ``+M, -M`` (``M = 100``) in every position (from ``wpe``)
=========  ===================  ==================================================================

LayerNorm is neutralised by construction: every write is zero-sum (the ``-e_BAL`` term), so the
mean LayerNorm subtracts is exactly 0, and the constant anchor dominates the norm, so the scale
LayerNorm divides by is the same in every position and run up to a relative 1e-3 (the signal
norm is ~5 against ``sqrt(2) M``). All LN weights are set to that expected scale, biases to 0, so
each LN is the identity up to that relative error, and its radial Jacobian term (the part through
which a change could leak into an unrelated edge's gradient) is O(|signal|^2 / M^2).

Weights (GPT-2 ``Conv1D`` convention ``y = x W``; head size 64; all biases 0)
------------------------------------------------------------------------------
- ``wte[i] = e_TOK[i] - e_BAL``; ``wpe[t] = e_POS[t] - e_BAL + M e_ANC0 - M e_ANC1``.
- ``a0.h0``, previous-token head: ``W_Q: e_POS[t] -> b u_{t-1}`` (t >= 1), ``W_K: e_POS[t] -> b
  u_t`` with ``b^2 / sqrt(64) = 30``: the query at t scores 30 on key t-1 and 0 elsewhere, so it
  attends to t-1 with weight 1 - O(t e^-30) (position 0 attends to itself). ``W_V: e_TOK[i] ->
  u_i``, ``W_O: u_i -> e_PREV[i] - e_BAL``: it writes "previous token = i".
- ``a0.h1``, decoy: q = k = 0 (uniform causal attention), ``W_V: e_TOK[i] -> u_i``, ``W_O: u_i ->
  e_DECOY[i] - e_BAL`` (a bag of the tokens so far).
- ``a1.h0``, induction head: ``W_Q: e_TOK[i] -> a u_i``, ``W_K: e_PREV[i] -> a u_i`` with
  ``a^2 / 8 = 4``: the query at the last ``A`` scores 4 on the key whose previous token is ``A``
  (the ``B`` position) and 0 on the others; the weight on ``B`` is 0.83-0.98 depending on length.
  It is deliberately *not* saturated, so that gradients through its attention are informative for
  first-order attribution. Position 0 would match too when ``pre`` is empty (``a0.h0`` there
  attends to itself and writes its own token), so an extra query/key dimension scores -30 on key
  0: ``W_Q: e_ANC0 -> (c/M) u_20``, ``W_K: e_POS[0] -> -c u_20``, ``c^2 / 8 = 30``.
  ``W_V: e_TOK[i] -> u_i``, ``W_O: u_i -> e_OUT[i] - e_BAL``: it copies the attended token.
- ``a1.h1``, decoy: q = k = 0, ``W_V: e_DECOY[i] -> u_i``, ``W_O: u_i -> e_DECOY[i] - e_BAL``.
- MLPs: ``c_fc``, ``c_proj`` weights and biases 0, so ``m0``, ``m1`` output exactly 0.
- ``lm_head`` (untied): ``logit[i] = 10 * OUT[i]``. Clean logit difference = 10 x (attention on B),
  8.3-9.8; counterfactual: its negative. Accuracy is 100% (B gets >= 0.83 of the attention, any
  other token at most 0.17).

The circuit (`TRUE_EDGES`)
--------------------------
Edges whose counterfactual patching changes the metric, in the edge-table's keys
``(kind, src, dst, src_span, dst_span)`` (crossing edges: key span -> query span)::

    k path  input@A1 -> a0.h0<v>@A1 -v-> a0.h0@B -> a1.h0<k>@B -k-> a1.h0@A2
    q path  input@A2 -> a1.h0<q>@A2 -q(key span B)-> a1.h0@A2
    v path  input@B  -> a1.h0<v>@B  -v-> a1.h0@A2
            a1.h0@A2 -> logits@A2

The q and k crossing edges count only for the key span ``B``: the query ``A'`` of the
counterfactual matches no key of the clean run, and the key at ``B`` is the only one whose previous
token is ``A``. The positional machinery (``a0.h0``'s q and k, the position-0 penalty) is used
but identical in both runs (same positions), so it carries no counterfactual effect and its
edges are listed apart in `POSITIONAL_EDGES`, not in `TRUE_EDGES`.

Example:
    >>> model = pw.models.load("induction-groundtruth")                 # doctest: +SKIP
    >>> ds = pw.Dataset.from_records(make_records(64), model)           # doctest: +SKIP
    >>> res = pw.attribute(model, ds, method="peap")                    # doctest: +SKIP
    >>> res.edges[true_edge_mask(res.edges)]                             # doctest: +SKIP
"""

from __future__ import annotations

import math
import random

import numpy as np
import torch

from ..data.tokenizer import word_level_tokenizer

SCHEMA = ["pre", "A1", "B", "mid", "A2"]
FILLERS = ["so", "then", "well", "oh", "um", "and"]
CONTENT = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]
MAX_FILLER = 5                 # pre and mid have 0..MAX_FILLER words
N_POSITIONS = 16
D_MODEL = 128
N_HEAD = 2
D_HEAD = D_MODEL // N_HEAD
ANCHOR = 100.0                 # M
PREV_SCORE = 30.0              # a0.h0's attention logit on t-1
MATCH_SCORE = 4.0              # a1.h0's attention logit on the matching key
POS0_PENALTY = 30.0            # a1.h0's attention logit penalty on key 0
LOGIT_SCALE = 10.0             # lambda

#: The circuit under the counterfactual of `make_records` (see the module docstring).
TRUE_EDGES = [
    ("resid", "input", "a0.h0<v>", "A1", "A1"),
    ("v", "a0.h0", "a0.h0", "A1", "B"),
    ("resid", "a0.h0", "a1.h0<k>", "B", "B"),
    ("k", "a1.h0", "a1.h0", "B", "A2"),
    ("resid", "input", "a1.h0<q>", "A2", "A2"),
    ("q", "a1.h0", "a1.h0", "B", "A2"),
    ("resid", "input", "a1.h0<v>", "B", "B"),
    ("v", "a1.h0", "a1.h0", "B", "A2"),
    ("resid", "a1.h0", "logits", "A2", "A2"),
]

#: Used by the mechanism but identical in the clean and counterfactual runs (they depend on
#: positions only), so their counterfactual effect is exactly zero; not part of `TRUE_EDGES`.
#: (The position-0 penalty uses input -> a1.h0<k> at whichever span holds position 0.)
POSITIONAL_EDGES = [
    ("resid", "input", "a0.h0<q>", "B", "B"),
    ("resid", "input", "a0.h0<k>", "A1", "A1"),
    ("q", "a0.h0", "a0.h0", "A1", "B"),
    ("k", "a0.h0", "a0.h0", "A1", "B"),
]

KEY_COLUMNS = ["kind", "src", "dst", "src_span", "dst_span"]


def vocabulary() -> list[str]:
    return FILLERS + CONTENT


def tokenizer():
    """The word-level tokenizer (ids 0-3 special, then fillers, then content words)."""
    return word_level_tokenizer(vocabulary())


class _Layout:
    """Offsets of the named residual subspaces."""

    def __init__(self, vocab_size: int):
        V = self.V = vocab_size
        self.TOK = 0
        self.POS = V
        self.PREV = self.POS + N_POSITIONS
        self.OUT = self.PREV + V
        self.DECOY = self.OUT + V
        self.BAL = self.DECOY + V
        self.ANC = self.BAL + 1
        self.used = self.ANC + 2
        if self.used > D_MODEL or V + 1 > D_HEAD or N_POSITIONS > D_HEAD:
            raise ValueError("the vocabulary or positions do not fit the hand-built layout")


def _ln_scale(signal_sq: float) -> float:
    """The scale LayerNorm divides by for a zero-mean vector of squared signal norm
    ``signal_sq`` on top of the anchor."""
    return math.sqrt((2 * ANCHOR ** 2 + signal_sq) / D_MODEL)


def build_hf(dtype=torch.float32):
    """The ``GPT2LMHeadModel`` (eval mode) and its tokenizer, weights set as documented above."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = tokenizer()
    V = len(tok)
    lay = _Layout(V)
    cfg = GPT2Config(
        vocab_size=V, n_positions=N_POSITIONS, n_embd=D_MODEL, n_layer=2, n_head=N_HEAD,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, tie_word_embeddings=False,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )
    model = GPT2LMHeadModel(cfg)
    sq8 = math.sqrt(D_HEAD)  # GPT-2 divides attention logits by sqrt(d_head)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        tr = model.transformer
        # embeddings
        for i in range(V):
            tr.wte.weight[i, lay.TOK + i] = 1.0
            tr.wte.weight[i, lay.BAL] = -1.0
        for t in range(N_POSITIONS):
            tr.wpe.weight[t, lay.POS + t] = 1.0
            tr.wpe.weight[t, lay.BAL] = -1.0
            tr.wpe.weight[t, lay.ANC] = ANCHOR
            tr.wpe.weight[t, lay.ANC + 1] = -ANCHOR
        # LayerNorms: weight = expected scale (identity on the signal), bias 0.
        # squared signal norms: embeddings 1 + 1 + 2^2; after layer 0 about 1 + 1 + 1 + 0.5 + 4^2
        tr.h[0].ln_1.weight.fill_(_ln_scale(6.0))
        tr.h[1].ln_1.weight.fill_(_ln_scale(20.0))
        for blk in tr.h:
            blk.ln_2.weight.fill_(1.0)           # feeds a zeroed MLP: irrelevant
        tr.ln_f.weight.fill_(_ln_scale(40.0))

        def head(layer, h, Wq, Wk, Wv, Wo):
            """Write head h's [D, D_HEAD] q/k/v and [D_HEAD, D] output blocks."""
            attn = tr.h[layer].attn
            w = attn.c_attn.weight.view(D_MODEL, 3, N_HEAD, D_HEAD)
            w[:, 0, h], w[:, 1, h], w[:, 2, h] = Wq, Wk, Wv
            attn.c_proj.weight.view(N_HEAD, D_HEAD, D_MODEL)[h] = Wo

        def z(*shape):
            return torch.zeros(*shape, dtype=model.dtype)

        def copier(src, dst):
            """W_V, W_O moving token identity i from subspace ``src`` to ``dst`` (zero-sum write)."""
            Wv, Wo = z(D_MODEL, D_HEAD), z(D_HEAD, D_MODEL)
            for i in range(V):
                Wv[src + i, i] = 1.0
                Wo[i, dst + i] = 1.0
                Wo[i, lay.BAL] = -1.0
            return Wv, Wo

        # a0.h0: previous-token head
        b = math.sqrt(PREV_SCORE * sq8)
        Wq, Wk = z(D_MODEL, D_HEAD), z(D_MODEL, D_HEAD)
        for t in range(N_POSITIONS):
            if t >= 1:
                Wq[lay.POS + t, t - 1] = b
            Wk[lay.POS + t, t] = b
        head(0, 0, Wq, Wk, *copier(lay.TOK, lay.PREV))

        # a0.h1: decoy, uniform bag of tokens -> DECOY
        head(0, 1, z(D_MODEL, D_HEAD), z(D_MODEL, D_HEAD), *copier(lay.TOK, lay.DECOY))

        # a1.h0: induction head
        a = math.sqrt(MATCH_SCORE * sq8)
        c = math.sqrt(POS0_PENALTY * sq8)
        Wq, Wk = z(D_MODEL, D_HEAD), z(D_MODEL, D_HEAD)
        for i in range(V):
            Wq[lay.TOK + i, i] = a
            Wk[lay.PREV + i, i] = a
        Wq[lay.ANC, V] = c / ANCHOR
        Wk[lay.POS + 0, V] = -c
        head(1, 0, Wq, Wk, *copier(lay.TOK, lay.OUT))

        # a1.h1: decoy, uniform average of DECOY -> DECOY
        head(1, 1, z(D_MODEL, D_HEAD), z(D_MODEL, D_HEAD), *copier(lay.DECOY, lay.DECOY))

        # unembedding: reads OUT only
        for i in range(V):
            model.lm_head.weight[i, lay.OUT + i] = LOGIT_SCALE
    return model.to(dtype).eval(), tok


def build(device=None, dtype=None):
    """The registry entry: the hand-built model as a `peap_widget.Model` (float32 unless
    ``dtype`` says otherwise)."""
    from ..runtime.model import load_model

    hf, tok = build_hf()
    return load_model(hf, tokenizer=tok, device=device, dtype=dtype)


def make_record(pre, a, b, mid, a_cf, b_cf) -> dict:
    """One record: clean ``pre a b mid a``, counterfactual ``pre a' b' mid a'``."""
    if len({a, b, a_cf, b_cf}) != 4 or not {a, b, a_cf, b_cf} <= set(CONTENT):
        raise ValueError("A, B, A', B' must be four different content words")
    if not set(pre) | set(mid) <= set(FILLERS):
        raise ValueError("pre and mid must be filler words")
    clean = list(pre) + [a, b] + list(mid) + [a]
    corrupted = list(pre) + [a_cf, b_cf] + list(mid) + [a_cf]
    n_pre, n_mid = len(pre), len(mid)
    spans = {
        "pre": [0, n_pre],
        "A1": [n_pre, n_pre + 1],
        "B": [n_pre + 1, n_pre + 2],
        "mid": [n_pre + 2, n_pre + 2 + n_mid],
        "A2": [n_pre + 2 + n_mid, n_pre + 3 + n_mid],
    }
    return {"clean": " ".join(clean), "corrupted": " ".join(corrupted), "correct": b,
            "incorrect": b_cf, "spans": spans}


def make_records(n: int = 64, seed: int = 0) -> list[dict]:
    """``n`` random records; filler lengths cycle so that every (len(pre), len(mid)) pair of
    0..MAX_FILLER turns up (both spans empty included)."""
    rng = random.Random(seed)
    pairs = [(p, m) for p in range(MAX_FILLER + 1) for m in range(MAX_FILLER + 1)]
    rng.shuffle(pairs)
    out = []
    for j in range(n):
        n_pre, n_mid = pairs[j % len(pairs)]
        a, b, a_cf, b_cf = rng.sample(CONTENT, 4)
        pre = [rng.choice(FILLERS) for _ in range(n_pre)]
        mid = [rng.choice(FILLERS) for _ in range(n_mid)]
        out.append(make_record(pre, a, b, mid, a_cf, b_cf))
    return out


def true_edge_mask(edges, which=None) -> np.ndarray:
    """Boolean mask over an edge table's rows: True at the rows listed in ``which``
    (default `TRUE_EDGES`)."""
    keys = set(map(tuple, TRUE_EDGES if which is None else which))
    rows = edges[KEY_COLUMNS].itertuples(index=False, name=None)
    mask = np.fromiter((r in keys for r in rows), dtype=bool, count=len(edges))
    if which is None and mask.sum() != len(TRUE_EDGES):
        raise ValueError("the edge table does not hold every true edge (wrong model or schema?)")
    return mask
