"""Head functions from the weights (MAPS, Elhelo & Geva 2024): what each attention head maps
tokens to, read in vocabulary space without running any data.

For head ``h`` of layer ``L`` the OV map is a [vocab, vocab] matrix, one row per source token s::

    M_h[s, :] = cap( U . final_norm( post_norm( (attn_norm_L(E[s]) W_V^h + b_V^h) W_O^h ) ) + b_U )

- ``E[s]``: the token's input embedding alone, as the model's embedding module gives it (Gemma's
  sqrt(d) scale included; no position embedding, no other component of the residual);
- ``attn_norm_L``: the head's own attention-input norm module (LayerNorm / RMSNorm as the
  model applies it, on that embedding alone);
- ``W_V^h, b_V^h``: the head's value rows (under grouped-query attention those of its KV group:
  every *query* head gets its own row of scores), ``W_O^h`` its slice of the output projection
  (the projection's bias is shared by all heads and left out);
- ``post_norm``: only where the family has a norm after the attention (Gemma-2), applied to this
  head's output alone; ``final_norm`` (``final_norm=True``, the default) the model's final norm
  applied to this head's output alone; ``U, b_U`` the unembedding; ``cap`` the final logit
  soft-capping where the model has one (Gemma-2; monotone, so ranks do not depend on it).

The QK view (``circuit="qk"``) scores query token s against key token t with the same inputs:
``M_h[s, t] = scaling * qn(attn_norm(E[s]) W_Q^h + b_Q^h) . kn(attn_norm(E[t]) W_K^h + b_K^h)``
(``qn``/``kn`` the per-head q/k norms where the family has them, Qwen3), with attention
soft-capping where the model has it, and **without** positions: no position embedding and no
rotary embedding (rotary at relative distance 0 is the identity).

Relation score (MAPS). A relation R is a set of (source, target) token pairs with a sign (+1:
the head should promote the target, -1: suppress it, scored on -M). For each source s, with
T(s) its targets and C the candidate columns (``among="relation"``: the relation's own tokens,
sources and targets; ``among="vocab"``: the whole vocabulary)::

    best(s) = max_{t in T(s)} sign * M[s, t]
    rank(s) = #{ c in C \\ T(s) : sign * M[s, c] >= best(s) }      (ties count against s)
    score_k(R) = (1 / |S|) * sum_s [ rank(s) < k ]

i.e. the fraction of source tokens for which at least one of their targets is among the head's
top-k mapped tokens (bottom-k for suppression). A head that maps everything to 0 scores 0.

Relations: `relations.copying` (a token to itself), `relations.suppression` (a token to itself,
scored on -M, as MAPS), `relations.greater_than`
(a two-digit year to every later one), `relations.from_pairs` (your own, e.g. country -> capital),
`relations.from_task` (built from a task's or dataset's own answer tokens).

Example:
    >>> model = pw.models.load("toy-ioi")
    >>> rels = pw.relations.from_task(pw.tasks.get("ioi"), model)
    >>> scores, top, ranks = pw.head_functions(model, rels, k=1)
    >>> round(float(scores.loc["a3.h0", "copying"]), 3)
    0.383
    >>> capitals = pw.relations.from_pairs("capital", [("France", "Paris"), ("Italy", "Rome")])
    >>> fig = pw.head_functions_figure(scores)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd
import torch

from ..runtime import remote
from ..arch.base import tensor_of
from ..errors import PeapError
from ..graph.names import head_name, parse_component
from .heads import ov_outputs, token_rows

if TYPE_CHECKING:
    import matplotlib.figure

    from ..runtime.model import Model

#: elements of one [heads, rows, columns] score block: bounds memory whatever the vocabulary
BLOCK_ELEMENTS = 1 << 24


class RelationError(PeapError):
    """A relation cannot be used: a token the tokenizer does not know, a string that is several
    tokens, an id outside the vocabulary, no pairs. The message names the relation and token."""


@dataclass(frozen=True)
class Relation:
    """A named set of (source, target) token pairs; tokens are strings (one token each under the
    model's tokenizer, or a vocabulary entry such as ``"ĠMary"``) or token ids. ``sign`` +1: the
    head should promote the target; -1: suppress it (scored on -M)."""

    name: str
    pairs: tuple = ()
    sign: int = 1
    description: str = field(default="", compare=False)

    def __post_init__(self):
        object.__setattr__(self, "pairs", tuple(tuple(p) for p in self.pairs))
        if self.sign not in (1, -1):
            raise RelationError(f"relation {self.name!r}: sign must be +1 or -1, got {self.sign!r}")
        for i, p in enumerate(self.pairs):
            if len(p) != 2:
                raise RelationError(f"relation {self.name!r}, pair {i}: a pair is (source, "
                                    f"target), got {p!r}")

    def __len__(self) -> int:
        return len(self.pairs)


def copying(tokens: Iterable, name: str = "copying") -> Relation:
    """Each token to itself (a copying head promotes the token it attends to)."""
    return Relation(name, [(t, t) for t in tokens], 1, "token -> itself")


def suppression(tokens: Iterable, name: str = "suppression") -> Relation:
    """Each token to itself, scored on -M (MAPS's suppression: the head lowers the logit of the
    token it attends to, as IOI's negative name movers do)."""
    return Relation(name, [(t, t) for t in tokens], -1, "token -> itself, suppressed")


def greater_than(years: Iterable[str] | None = None, name: str = "greater-than") -> Relation:
    """Each two-digit year ``"00".."98"`` to every later one (the greater-than task's tokens);
    ``years``: the year strings in increasing order (default ``f"{y:02d}"`` for y in 0..99)."""
    years = [f"{y:02d}" for y in range(100)] if years is None else list(years)
    return Relation(name, [(a, b) for i, a in enumerate(years) for b in years[i + 1:]], 1,
                    "year -> later years")


def from_pairs(name: str, pairs: Iterable[tuple], sign: int = 1) -> Relation:
    """Your own relation, e.g. ``from_pairs("capital", [("France", "Paris"), ...])``."""
    return Relation(name, pairs, sign, "user-given pairs")


def from_task(task: Any, model: Model | None = None) -> list[Relation]:
    """Relations built from a task's (or a `Dataset`'s) own answer tokens: for answers that are
    two-digit numbers (greater-than) the year relation; otherwise (IOI names) copying and
    suppression over the set of answer tokens. ``model`` (or a tokenizer) is needed for a
    `Task`, whose answers are text (``" Mary"`` for a BPE tokenizer when the task says so)."""
    examples = getattr(task, "examples", None)
    if examples is not None:                                 # a Dataset: ids already
        tokens = sorted({e.correct_id for e in examples} | {e.incorrect_id for e in examples})
        tok = getattr(task, "tokenizer", None)
        texts = [str(t) for t in tok.convert_ids_to_tokens(tokens)] if tok is not None else []
    else:
        from ..data.tasks.base import answer_form

        records = getattr(task, "records", None)
        if records is None:
            raise RelationError(f"from_task needs a Task or a Dataset, got {type(task).__name__}")
        tok = getattr(model, "tokenizer", model)
        if tok is None:
            raise RelationError("from_task(task, model): a Task's answers are text; give the "
                                "model (or its tokenizer) to turn them into tokens")
        spaced = bool(getattr(task, "answer_space", False))
        texts = sorted({answer_form(tok, r[f], spaced) for r in records
                        for f in ("correct", "incorrect")})
        tokens = texts
    if not tokens:
        raise RelationError("from_task: the task has no answers to build relations from")
    if texts and all(t.strip().lstrip("Ġ▁").isdigit() and len(t.strip().lstrip("Ġ▁")) == 2
                     for t in texts):
        return [greater_than()]
    return [copying(tokens), suppression(tokens)]


relations = SimpleNamespace(Relation=Relation, copying=copying, suppression=suppression,
                            greater_than=greater_than, from_pairs=from_pairs, from_task=from_task)


# --- token resolution -----------------------------------------------------------------------------

def token_id(tokenizer: Any, token: str | int, relation: str, vocab_size: int,
             vocab: dict | None = None) -> int:
    """The id of one token of ``relation``: an int id, a vocabulary entry, or a string the
    tokenizer makes exactly one known token of; anything else raises `RelationError`.
    ``vocab``: the tokenizer's ``get_vocab()``, when resolving many tokens."""
    if isinstance(token, (int, np.integer)) and not isinstance(token, bool):
        if not 0 <= int(token) < vocab_size:
            raise RelationError(f"relation {relation!r}: token id {int(token)} is outside the "
                                f"vocabulary (0..{vocab_size - 1})")
        return int(token)
    if not isinstance(token, str) or not token:
        raise RelationError(f"relation {relation!r}: a token is a non-empty string or an id, "
                            f"got {token!r}")
    if tokenizer is None:
        raise RelationError(f"relation {relation!r}: {token!r} is text but the model has no "
                            "tokenizer; give token ids")
    vocab = tokenizer.get_vocab() if vocab is None else vocab
    if token in vocab:
        return int(vocab[token])
    ids = tokenizer(token, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        pieces = tokenizer.convert_ids_to_tokens(ids)
        hint = "" if token.startswith(" ") else f" (with a BPE tokenizer try {' ' + token!r})"
        raise RelationError(f"relation {relation!r}: {token!r} is {len(ids)} tokens {pieces} "
                            f"under the model's tokenizer; relations pair single tokens{hint}")
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is not None and ids[0] == unk:
        raise RelationError(f"relation {relation!r}: {token!r} is not in the tokenizer's "
                            "vocabulary (it becomes the unknown token)")
    if not 0 <= ids[0] < vocab_size:
        raise RelationError(f"relation {relation!r}: {token!r} is token id {ids[0]}, outside "
                            f"the model's {vocab_size} unembedding rows")
    return int(ids[0])


def _as_relations(rels) -> list[Relation]:
    if isinstance(rels, Relation):
        rels = [rels]
    elif isinstance(rels, dict):                       # {name: [(s, t), ...]}
        rels = [r if isinstance(r, Relation) else from_pairs(n, r) for n, r in rels.items()]
    rels = list(rels)
    if not rels:
        raise RelationError("no relations given")
    for r in rels:
        if not isinstance(r, Relation):
            raise RelationError(f"relations are Relation objects (pw.relations.copying(...), "
                                f"from_pairs(name, pairs)...) or a dict name -> pairs, got {r!r}")
        if not r.pairs:
            raise RelationError(f"relation {r.name!r} has no pairs")
    names = [r.name for r in rels]
    if len(set(names)) != len(names):
        raise RelationError(f"relation names must differ, got {names}")
    return rels


# --- the job -------------------------------------------------------------------------------------

def chunk_size(block: int, heads: int, rows: int, d_model: int) -> int:
    """Vocabulary columns per chunk: the [heads, rows, columns] scores and the [columns,
    d_model] unembedding (or key) rows each stay within ``block`` elements."""
    return max(1, min(block // (heads * max(rows, 1)), block // d_model))


def _chunks(n: int, size: int):
    for a in range(0, n, size):
        yield a, min(n, a + size)


@torch.no_grad()
def head_function_ranks(model: Model, circuit: str, rows: torch.Tensor, rels: list,
                        top_rows: torch.Tensor, final_norm: bool = True,
                        block: int = BLOCK_ELEMENTS) -> dict:
    """Job: per relation, every head's rank of each source's best target ([L, H, n_sources],
    see the module docstring), and over the whole vocabulary each ``top_rows`` token's best and
    worst mapped token and its row mean ([L, H, n] each). ``rows`` [n] token ids whose rows of M
    are built; each relation is ``{"rows": index into rows [n_r], "pair_row": [p] index into
    the relation's rows, "pair_tgt": [p] target ids, "sign": +-1, "cand": sorted candidate ids
    or None (the vocabulary)}``. Never builds more than ``block`` scores at once."""
    ad = model.adapter
    L, H, cd = ad.config.n_layers, ad.config.n_heads, ad.compute_dtype()
    out = {"ranks": [torch.zeros(L, H, len(r["rows"]), dtype=torch.long) for r in rels]}
    stats = {k: torch.zeros(L, H, len(top_rows), dtype=torch.long if k.endswith("_at") else cd)
             for k in SALIENT}
    for layer in range(L):
        head_map = (OvMap(model, layer, final_norm) if circuit == "ov"
                    else QkMap(model, layer))
        R_all = head_map.rows(rows.to(head_map.device))
        for i, rel in enumerate(rels):
            out["ranks"][i][layer] = _relation_ranks(head_map, R_all, rel, block).cpu()
        for k, v in _salient_mappings(head_map, R_all[:, top_rows.to(head_map.device)],
                                      block).items():
            stats[k][layer] = v.cpu()
    out.update(stats)
    return out


#: what `head_function_ranks` keeps of each ``top_rows`` token's row over the vocabulary
SALIENT = ("best", "best_at", "worst", "worst_at", "mean")


class OvMap:
    """The OV map of ``layer``'s heads (module docstring): ``rows(ids)`` [H, n, D] the heads'
    outputs for source tokens ``ids`` (`peap_widget.analysis.heads.ov_outputs`),
    ``scores(R, ids)`` [H, n, c] their logits for the columns ``ids``."""

    def __init__(self, model: Model, layer: int, final_norm: bool = True):
        self.model, self.layer, self.final_norm = model, layer, final_norm
        hf = model.hf
        self.cd = model.adapter.compute_dtype()
        unembed = hf.get_output_embeddings()
        self.U, self.U_bias = tensor_of(unembed, "weight"), tensor_of(unembed, "bias")
        self.device, self.vocab = self.U.device, self.U.shape[0]
        self.cap = getattr(hf.config, "final_logit_softcapping", None)
        self.weights = model.adapter.qkv_weights(layer, self.cd)

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        return ov_outputs(self.model, self.layer, ids, self.final_norm,
                          self.weights).to(self.device)

    def scores(self, R: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        ids = ids.to(self.device)
        s = torch.einsum("hnD,cD->hnc", R, self.U[ids].to(self.cd))
        if self.U_bias is not None:
            s = s + self.U_bias[ids].to(self.cd)
        return torch.tanh(s / self.cap) * self.cap if self.cap else s


class QkMap(OvMap):
    """The QK map of ``layer``'s heads: ``rows(ids)`` [H, n, dh] the scaled queries of source
    tokens ``ids``, ``scores(R, ids)`` [H, n, c] their attention scores against the keys of
    ``ids`` (no positions)."""

    def __init__(self, model: Model, layer: int):
        super().__init__(model, layer)
        ad, hf = model.adapter, model.hf
        self.qk_norms = ad.qk_norm_modules(hf, layer)
        self.scaling = ad.attention_module(hf, layer).scaling
        self.cap = getattr(hf.config, "attn_logit_softcapping", None)

    def _qk(self, ids: torch.Tensor, which: int) -> torch.Tensor:
        y = token_rows(self.model, self.layer, ids, which, self.weights)
        if self.qk_norms:
            y = self.qk_norms[which](y.to(self.model.adapter.model_dtype)).to(self.cd)
        return y.to(self.device)

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        return self._qk(ids, 0) * self.scaling

    def scores(self, R: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        s = torch.einsum("hnd,hcd->hnc", R, self._qk(ids, 1))
        return torch.tanh(s / self.cap) * self.cap if self.cap else s


def _targets_mask(pair_row: torch.Tensor, pos: torch.Tensor, n_rows: int, a: int,
                  z: int) -> torch.Tensor:
    """[n_rows, z - a] whether column a + j is a target of row i (pairs at columns ``pos``)."""
    sel = (pos >= a) & (pos < z)
    is_t = torch.zeros(n_rows, z - a, dtype=torch.bool, device=pos.device)
    is_t[pair_row[sel], pos[sel] - a] = True
    return is_t


def _relation_ranks(head_map: OvMap, R_all: torch.Tensor, rel: dict, block: int) -> torch.Tensor:
    """[H, n_r] each head's rank of each of the relation's sources' best target: the non-target
    candidates scoring at least as high (module docstring), chunk by chunk of columns."""
    dev, cd = head_map.device, head_map.cd
    R = R_all[:, rel["rows"].to(dev)]
    H, n_r, sign = R.shape[0], R.shape[1], rel["sign"]
    pair_row, pair_tgt = rel["pair_row"].to(dev), rel["pair_tgt"].to(dev)
    size = chunk_size(block, H, n_r, head_map.model.adapter.config.d_model)
    # best target per source, over the relation's (few) distinct targets
    tgts = torch.unique(pair_tgt)
    best = torch.full((H, n_r), float("-inf"), dtype=cd, device=dev)
    pos = torch.searchsorted(tgts, pair_tgt)
    for a, z in _chunks(len(tgts), size):
        is_t = _targets_mask(pair_row, pos, n_r, a, z)
        s = sign * head_map.scores(R, tgts[a:z])
        best = torch.maximum(best, s.masked_fill(~is_t, float("-inf")).amax(-1))
    # non-target candidates scoring at least as high
    cand = rel["cand"]
    n_c = head_map.vocab if cand is None else len(cand)
    cand = None if cand is None else cand.to(dev)
    pos = pair_tgt if cand is None else torch.searchsorted(cand, pair_tgt)
    count = torch.zeros(H, n_r, dtype=torch.long, device=dev)
    for a, z in _chunks(n_c, size):
        ids = torch.arange(a, z, device=dev) if cand is None else cand[a:z]
        is_t = _targets_mask(pair_row, pos, n_r, a, z)
        s = sign * head_map.scores(R, ids)
        count += ((s >= best[..., None]) & ~is_t).sum(-1)
    return count


def _salient_mappings(head_map: OvMap, R: torch.Tensor, block: int) -> dict:
    """Over the whole vocabulary, for each row of ``R`` [H, n, .]: its best and worst mapped
    token (``best``, ``best_at``, ``worst``, ``worst_at``) and its mean (``mean``), [H, n]."""
    dev, cd, V = head_map.device, head_map.cd, head_map.vocab
    H, n_t = R.shape[:2]
    size = chunk_size(block, H, n_t, head_map.model.adapter.config.d_model)
    hi = torch.full((H, n_t), float("-inf"), dtype=cd, device=dev)
    lo = torch.full((H, n_t), float("inf"), dtype=cd, device=dev)
    hi_at = torch.zeros(H, n_t, dtype=torch.long, device=dev)
    lo_at = torch.zeros_like(hi_at)
    total = torch.zeros(H, n_t, dtype=cd, device=dev)
    for a, z in _chunks(V, size):
        s = head_map.scores(R, torch.arange(a, z, device=dev))
        total += s.sum(-1)
        m, at = s.max(-1)
        up = m > hi
        hi, hi_at = torch.where(up, m, hi), torch.where(up, at + a, hi_at)
        m, at = s.min(-1)
        down = m < lo
        lo, lo_at = torch.where(down, m, lo), torch.where(down, at + a, lo_at)
    return dict(zip(SALIENT, (hi, hi_at, lo, lo_at, total / V)))


# --- the API -------------------------------------------------------------------------------------

class HeadFunctions(NamedTuple):
    """``scores``: DataFrame, index head names ``a{L}.h{H}``, columns relation names, the MAPS
    relation score in [0, 1] (``scores.attrs`` holds k, among, circuit, final_norm);
    ``top``: DataFrame of each head's most salient mappings, indexed by head name (``top.loc[
    "a1.h0"]``), columns kind ("promotes" / "suppresses"), source, target, score (the mapped
    logit minus the source row's mean over the vocabulary); ``ranks``: {relation: [L, H,
    n_sources] array of each source's rank} (`score_at` scores any k from it)."""

    scores: pd.DataFrame
    top: pd.DataFrame
    ranks: dict

    def plot(self, **kwargs: Any) -> matplotlib.figure.Figure:
        return head_functions_figure(self.scores, **kwargs)

    def score_at(self, k: int) -> pd.DataFrame:
        """The scores for another k, from the same ranks (no model run)."""
        return _scores_frame(self.ranks, k, self.scores.index, self.scores.attrs)


def _scores_frame(ranks: dict, k: int, index, attrs) -> pd.DataFrame:
    df = pd.DataFrame({name: (r < k).mean(-1).reshape(-1) for name, r in ranks.items()},
                      index=index)
    df.index.name = "head"
    df.attrs.update({**attrs, "k": k})
    return df


def head_functions(model: Model, relations: Any | None = None, k: int = 1, among: str = "relation",
                   circuit: str = "ov", final_norm: bool = True, tokens: Iterable | None = None,
                   top: int = 5, block: int = BLOCK_ELEMENTS) -> HeadFunctions:
    """MAPS scores of every head for every relation, from the weights (see the module docstring
    for the exact definitions). Returns `HeadFunctions` ``(scores, top, ranks)``.

    Args:
        model: a `peap_widget.Model` (any supported family; local or on NDIF: one job).
        relations: `Relation` objects (``pw.relations.copying(names)``...), a dict name ->
            pairs, or a Task / Dataset (then `relations.from_task`).
        k: a source counts when one of its targets is in the head's top-k (bottom-k for sign -1).
        among: the candidate columns: ``"relation"`` (the relation's own tokens, sources and
            targets: MAPS's submatrix) or ``"vocab"`` (the whole vocabulary).
        circuit: ``"ov"`` (what a head writes when attending to s) or ``"qk"`` (which key
            tokens query token s attends to, without positions).
        final_norm: apply the final norm to each head's output (OV only).
        tokens: the sources of the salient mappings (default: every token of the relations).
        top: salient mappings per head and direction.
        block: the most scores held at once (heads x rows x vocabulary columns per chunk), so
            memory stays bounded for a 50k-256k vocabulary; results do not depend on it.

    Example:
        >>> model = pw.models.load("toy-ioi")
        >>> names = ["Mary", "John"]
        >>> rels = [pw.relations.copying(names), pw.relations.suppression(names)]
        >>> scores, top, _ = pw.head_functions(model, rels, k=1)
        >>> scores.columns.tolist(), top.columns.tolist()
        (['copying', 'suppression'], ['kind', 'source', 'target', 'score'])
    """
    if circuit not in ("ov", "qk"):
        raise PeapError(f"circuit must be 'ov' or 'qk', got {circuit!r}")
    if among not in ("relation", "vocab"):
        raise PeapError(f"among must be 'relation' or 'vocab', got {among!r}")
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise PeapError(f"k must be a positive integer, got {k!r}")
    if relations is None:
        raise RelationError("give relations: pw.relations.copying(tokens), from_pairs(name, "
                            "pairs), a dict name -> pairs, or a task / dataset")
    if hasattr(relations, "records") or hasattr(relations, "examples"):
        relations = from_task(relations, model)
    rels = _as_relations(relations)
    tok, hf = model.tokenizer, model.hf
    V = hf.get_output_embeddings().weight.shape[0]
    vocab = tok.get_vocab() if tok is not None else None
    resolved = []
    for r in rels:
        pairs = [(token_id(tok, s, r.name, V, vocab), token_id(tok, t, r.name, V, vocab))
                 for s, t in r.pairs]
        resolved.append((r, sorted(set(pairs))))
    row_ids = sorted({s for _, ps in resolved for s, _ in ps})
    if tokens is None:
        top_ids = sorted({i for _, ps in resolved for p in ps for i in p})
    else:
        top_ids = sorted({token_id(tok, t, "tokens", V, vocab) for t in tokens})
    all_rows = sorted(set(row_ids) | set(top_ids))
    where = {t: i for i, t in enumerate(all_rows)}
    jobs = []
    for r, ps in resolved:
        srcs = sorted({s for s, _ in ps})
        at = {s: i for i, s in enumerate(srcs)}
        cand = None if among == "vocab" else torch.tensor(sorted({i for p in ps for i in p}))
        jobs.append({"rows": torch.tensor([where[s] for s in srcs]),
                     "pair_row": torch.tensor([at[s] for s, _ in ps]),
                     "pair_tgt": torch.tensor([t for _, t in ps]), "sign": r.sign, "cand": cand})
    out = remote.run(model, head_function_ranks, model, circuit, torch.tensor(all_rows), jobs,
                     torch.tensor([where[t] for t in top_ids]), final_norm, int(block))
    L, H = model.adapter.config.n_layers, model.adapter.config.n_heads
    heads = [head_name(layer, h) for layer in range(L) for h in range(H)]
    ranks = {r.name: out["ranks"][i].numpy() for i, (r, _) in enumerate(resolved)}
    attrs = {"among": among, "circuit": circuit, "final_norm": final_norm}
    scores = _scores_frame(ranks, int(k), pd.Index(heads, name="head"), attrs)
    return HeadFunctions(scores, _top_frame(out, top_ids, tok, heads, top), ranks)


def _top_frame(out: dict, top_ids: list, tok, heads: list, top: int) -> pd.DataFrame:
    """Each head's ``top`` sources with the highest (promotes) and lowest (suppresses) mapped
    logit relative to the source row's mean over the vocabulary."""
    def name(i):
        return tok.convert_ids_to_tokens(int(i)) if tok is not None else str(int(i))

    mean = out["mean"].reshape(len(heads), -1).double()
    rows = []
    for kind, val, at, sgn in (("promotes", "best", "best_at", 1),
                               ("suppresses", "worst", "worst_at", -1)):
        centred = (out[val].reshape(len(heads), -1).double() - mean) * sgn
        idx = out[at].reshape(len(heads), -1)
        order = torch.argsort(centred, dim=1, descending=True)[:, :top]
        for hi, head in enumerate(heads):
            for j in order[hi].tolist():
                rows.append((head, kind, name(top_ids[j]), name(idx[hi, j]),
                             float(sgn * centred[hi, j])))
    frame = pd.DataFrame(rows, columns=["head", "kind", "source", "target", "score"])
    return frame.set_index("head")


def head_functions_figure(scores: pd.DataFrame, layout: str = "grid", cmap: str = "viridis",
                          annotate: bool | None = None,
                          title: str | None = None) -> matplotlib.figure.Figure:
    """A matplotlib heat map of `head_functions` scores: ``layout="grid"`` one [layer x head]
    panel per relation; ``"table"`` heads as rows, relations as columns. Returns the Figure.

    Example:
        >>> model = pw.models.load("toy-ioi")
        >>> scores = pw.head_functions(model, pw.relations.copying(["Mary", "John"])).scores
        >>> fig = pw.head_functions_figure(scores, layout="table")
        >>> fig.savefig("head_functions.pdf")
    """
    import matplotlib.pyplot as plt

    if layout not in ("grid", "table"):
        raise PeapError(f"layout must be 'grid' or 'table', got {layout!r}")
    parsed = [parse_component(h)[1:] for h in scores.index]
    L, H = max(p[0] for p in parsed) + 1, max(p[1] for p in parsed) + 1
    attrs = scores.attrs
    sub = f"{attrs.get('circuit', 'ov').upper()} circuit, top-{attrs.get('k', '?')} among " \
          f"{attrs.get('among', '?')}"
    if layout == "table":
        fig, ax = plt.subplots(figsize=(1.2 + 0.9 * scores.shape[1], 0.8 + 0.22 * len(scores)))
        im = ax.imshow(scores.to_numpy(float), cmap=cmap, vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(scores.shape[1]), scores.columns, rotation=45, ha="right")
        ax.set_yticks(range(len(scores)), scores.index)
        if annotate or (annotate is None and scores.size <= 200):
            for (i, j), v in np.ndenumerate(scores.to_numpy(float)):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if v < 0.6 else "black")
        fig.colorbar(im, ax=ax, label="relation score")
    else:
        n = scores.shape[1]
        fig, axes = plt.subplots(1, n, figsize=(0.5 + (1.2 + 0.35 * H) * n, 0.8 + 0.35 * L),
                                 squeeze=False)
        for ax, rel in zip(axes[0], scores.columns):
            grid = np.full((L, H), np.nan)
            for (layer, h), v in zip(parsed, scores[rel].to_numpy(float)):
                grid[layer, h] = v
            im = ax.imshow(grid, cmap=cmap, vmin=0, vmax=1, origin="lower")
            ax.set_title(rel)
            ax.set_xlabel("head")
            ax.set_ylabel("layer")
            if annotate or (annotate is None and L * H <= 64):
                for (i, j), v in np.ndenumerate(grid):
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if v < 0.6 else "black")
        fig.colorbar(im, ax=list(axes[0]), label="relation score")
    fig.suptitle(title or f"Head functions ({sub})")
    return fig
