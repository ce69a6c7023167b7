"""Input saliency: how much each token position matters to the task metric, and a schema
suggested from the most salient positions.

`token_saliency(model, ds)` scores every position of every example with the metric the
attribution uses (``"logit_diff"``, ``"prob_diff"``, a task's own callable) at each example's last
token. With x the residual stream entering block 0 (the `input` node: token embeddings, plus
position embeddings where the model has them), x* the same in the counterfactual run, g = dm/dx in
the clean run, and r_l, r*_l, g_l the same for the residual stream entering block l (l = n_layers:
entering the final norm):

- ``grad_x_delta`` = g[t] . (x[t] - x*[t]): the first-order estimate of how much of the metric's
  change clean -> counterfactual comes through the token at t. It is *minus* the
  attribution-patching score of the ``input`` node at t (docs/numbers.md: the input's edge
  scores into every downstream slot, summed, are (x* - x) . sum_v g_v, and sum_v g_v = g because
  the input reaches every slot only additively through the residual stream), so the two are one
  column. It is 0 wherever the counterfactual keeps the token (an IOI prompt's final "to").
- ``input_x_grad`` = || x[t] * g[t] || (elementwise product, L2 norm over the model dimension):
  the PEAP paper's saliency for its LLM schema mask (no counterfactual needed).
- ``resid_atp`` = sum_l | g_l[t] . (r_l[t] - r*_l[t]) |: attribution patching of position t's
  whole residual stream at every depth (l = 0 is ``grad_x_delta``), so positions whose
  *information* changes later on (the final token, where name movers write) count too.

Ranks order positions within an example by ``rank_by`` (by absolute value; 1 = most salient);
the mask keeps the top ``k`` (positions scoring exactly 0 never), or with ``k=None`` the paper's
rule: softmax over the example's positions > 1 / length.

Inside each nnsight trace only module values are read and saved (the metric and its backward
pass are the one exception: a gradient needs them); every product and norm is taken after the
trace, so the same code can run remotely.

Example:
    >>> import peap_widget as pw
    >>> model = pw.models.load("toy-ioi")
    >>> ds = pw.tasks.get("ioi", n=8, seed=0).dataset(model)
    >>> sal = token_saliency(model, ds, k=4)   # sal.table: one row per example and position
    >>> ds.tokens(0)[:4], [ds.tokens(0)[t] for t in sal.positions(0)]
    (['Max', 'and', 'Chris', 'had'], ['Max', 'Chris', 'Chris', 'to'])
    >>> sal.by_span().salient.tolist()        # per span: how often its tokens are salient
    [0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0]
    >>> sug = SaliencySuggester(model, k=3)(ds.to_records())
    >>> sug.span_names
    ['gap0', 'key1', 'gap1', 'key2', 'gap2', 'key3', 'gap3', 'END']
    >>> sug.spans[0]["key3"], sug.spans[0]["END"]
    ((11, 12), (15, 16))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import torch

from ..runtime import remote
from ..runtime.grad import frozen_parameters
from ..data.dataset import Batch, Dataset
from ..errors import PeapError
from ..engine.metrics import Metric, last_token_logits, resolve_metric
from ..runtime.model import model_lock
from ..data.schema import Schema
from .base import Progress, Suggestion

if TYPE_CHECKING:
    import pandas

    from ..runtime.model import Model

SCORES = ("grad_x_delta", "input_x_grad", "resid_atp")
_SIGNED = {"grad_x_delta"}
_NEEDS_COUNTERFACTUAL = {"grad_x_delta", "resid_atp"}
_PLACEHOLDER = Schema(["body", "END"])   # the suggester's datasets carry no spans of note


class TokenSaliency(NamedTuple):
    """``table``: one row per example and position (``example, position, token, span``, the
    `SCORES` columns, ``score`` (the ranking key: ``|rank_by|``), ``rank`` (1 = most salient),
    ``salient``); ``mask``: per example, one bool per position (the ``salient`` column).
    Unpacks as ``table, mask = token_saliency(...)``; ``table.attrs`` holds ``rank_by``, ``k``."""

    table: pandas.DataFrame
    mask: list[list[bool]]

    def positions(self, example: int) -> list[int]:
        """The salient positions of ``example``, in text order."""
        return [t for t, on in enumerate(self.mask[example]) if on]

    def by_span(self, score: str | None = None) -> pandas.DataFrame:
        """Aggregated over the dataset, per span in schema order: mean |score| per token, mean
        summed |score| per example, and the fraction of the span's tokens that are salient."""
        t = self.table
        score = score or t.attrs["rank_by"]
        g = t.assign(abs_score=t[score].abs()).groupby("span", observed=True, sort=True)
        out = g.agg(tokens=("abs_score", "size"), mean_abs=("abs_score", "mean"),
                    salient=("salient", "mean"))
        per_example = t.assign(abs_score=t[score].abs()).groupby(["span", "example"],
                                                                 observed=True)["abs_score"].sum()
        out["mean_abs_per_example"] = per_example.groupby("span", observed=True).mean()
        return out


def token_saliency(model: Model, ds: Dataset, k: int | None = 3, rank_by: str | None = None,
                   metric: str | Metric = "logit_diff", batch_size: int | None = 8,
                   progress: Progress | None = None) -> TokenSaliency:
    """Per-position saliency of ``ds`` on ``model`` (see the module docstring).

    Args:
        model: a `peap_widget.Model`.
        ds: a `Dataset` for this model; counterfactuals needed for ``grad_x_delta`` and
            ``resid_atp`` (without them those columns are NaN).
        k: the mask keeps each example's top ``k`` positions; None: softmax(score) > 1/length.
        rank_by: one of `SCORES`; default ``"resid_atp"`` with counterfactuals, else
            ``"input_x_grad"``.
        metric: as `peap_widget.attribute`'s.
        batch_size: examples per trace (right-padded as `Dataset.batches`); None: all at once.
        progress: ``progress(done, total, info)`` after each batch.

    Returns:
        `TokenSaliency` (``table``, ``mask``).
    """
    import pandas as pd

    has_cf = ds.has_counterfactuals
    rank_by = rank_by or ("resid_atp" if has_cf else "input_x_grad")
    if rank_by not in SCORES:
        raise PeapError(f"unknown saliency score {rank_by!r}; use one of {SCORES}")
    if rank_by in _NEEDS_COUNTERFACTUAL and not has_cf:
        ds.require_counterfactuals()     # names the first example without one
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise PeapError(f"k must be a positive integer or None, got {k!r}")
    _, metric_fn = resolve_metric(metric)
    ds.require_model(model)

    columns = {name: [] for name in SCORES}
    with frozen_parameters(model.hf):
        done = 0
        for batch in ds.batches(batch_size, device=model.device):
            scores = remote.run(model, batch_scores, model, batch, metric_fn)
            for b, e in enumerate(batch.lengths.tolist()):
                for name in SCORES:
                    columns[name].append(scores[name][b, :e])
            done += batch.size
            if progress is not None:
                progress(done, len(ds), {})

    rows, mask = [], []
    spans = list(ds.schema.spans)
    for i, ex in enumerate(ds.examples):
        tokens = ds.tokens(i)
        span_of = [name for name, (s, e) in zip(spans, ex.spans) for _ in range(s, e)]
        key = columns[rank_by][i]
        key = key.abs() if rank_by in _SIGNED else key
        order = sorted(range(ex.length), key=lambda t: (-float(key[t]), t))
        rank = [0] * ex.length
        for r, t in enumerate(order):
            rank[t] = r + 1
        if k is None:
            on = (key.softmax(0) > 1.0 / ex.length).tolist()
        else:
            on = [rank[t] <= k and float(key[t]) != 0.0 for t in range(ex.length)]
        mask.append(on)
        for t in range(ex.length):
            rows.append((i, t, tokens[t], span_of[t],
                         *(float(columns[name][i][t]) for name in SCORES), float(key[t]), rank[t],
                         on[t]))
    table = pd.DataFrame(rows, columns=["example", "position", "token", "span", *SCORES,
                                        "score", "rank", "salient"])
    table["span"] = pd.Categorical(table["span"], categories=spans, ordered=True)
    table.attrs.update(rank_by=rank_by, k=k)
    return TokenSaliency(table, mask)


def batch_scores(model: Model, batch: Batch, metric_fn: Metric) -> dict[str, torch.Tensor]:
    """Job (`peap_widget.runtime.remote`): [B, T] float64 scores of one batch: two traces that only
    read and save, then arithmetic (on a remote model only the [B, T] scores come back)."""
    ad, nn = model.adapter, model.nn
    batch = remote.batch_on(batch, model.device)
    L = ad.config.n_layers
    clean, grads, source = [], [], []
    with model_lock(model):
        if batch.corrupted_ids is not None:
            with torch.no_grad(), nn.trace(batch.corrupted_ids):
                source.append(ad.read_input(nn).save())
                for layer in range(1, L):
                    source.append(ad.block(nn, layer).input.save())
                source.append(ad.read_residual(nn, None, "final").save())
        with nn.trace(batch.clean_ids):
            inp = ad.read_input(nn)      # the residual stream entering block 0
            inp.requires_grad_(True)     # parameters are frozen: the gradient starts here
            clean.append(inp.save())
            for layer in range(1, L):
                clean.append(ad.block(nn, layer).input.save())
            clean.append(ad.read_residual(nn, None, "final").save())
            logits = last_token_logits(ad.read_logits(nn), batch.lengths)
            values = metric_fn(logits, batch.correct, batch.incorrect)
            with values.sum().backward():
                for r in reversed(clean):
                    grads.append(r.grad.save())
    grads.reverse()
    x = [c.detach().to(torch.float64) for c in clean]
    g = [d.detach().to(torch.float64) for d in grads]
    out = {"input_x_grad": (x[0] * g[0]).norm(dim=-1)}
    if source:
        xs = [s.detach().to(torch.float64) for s in source]
        per_layer = [((a - b) * d).sum(-1) for a, b, d in zip(x, xs, g)]
        out["grad_x_delta"] = per_layer[0]
        out["resid_atp"] = torch.stack(per_layer).abs().sum(0)
    else:
        nan = torch.full_like(out["input_x_grad"], float("nan"))
        out["grad_x_delta"] = out["resid_atp"] = nan
    return {name: v.cpu() for name, v in out.items()}


# --- a schema from the salient positions -------------------------------------------------------


def saliency_schema(k: int) -> list[str]:
    """The span names `spans_from_positions` writes: ``gap0, key1, gap1, ..., keyk, gapk, END``
    (``key<i>``: the i-th salient token in text order; ``gap<i>``: the tokens between, possibly
    none; ``END``: the last token)."""
    names = ["gap0"]
    for i in range(1, k + 1):
        names += [f"key{i}", f"gap{i}"]
    return names + ["END"]


def spans_from_positions(positions: Sequence[int], length: int) -> dict[str, tuple[int, int]]:
    """Token spans in `saliency_schema` form (``k = len(positions)``): each salient position its
    own one-token span, the gaps between them spans, the last token ``END``.

    >>> spans_from_positions([1, 3], 6)["key2"], spans_from_positions([1, 3], 6)["gap2"]
    ((3, 4), (4, 5))
    """
    pos = sorted(int(p) for p in positions)
    if len(set(pos)) != len(pos) or any(not 0 <= p < length - 1 for p in pos):
        raise PeapError(f"salient positions must be distinct and before the last token "
                        f"({length - 1}); got {list(positions)}")
    spans, cursor = {}, 0
    for i, p in enumerate(pos):
        spans[f"gap{i}"] = (cursor, p)
        spans[f"key{i + 1}"] = (p, p + 1)
        cursor = p + 1
    spans[f"gap{len(pos)}"] = (cursor, length - 1)
    spans["END"] = (length - 1, length)
    return spans


def suggest_from_saliency(sal: TokenSaliency, k: int, source: str = "saliency") -> Suggestion:
    """A `Suggestion` in `saliency_schema(k)` form from a `token_saliency` table: per example
    its ``k`` best-ranked positions before the last token (the last token is always ``END``).
    Examples with fewer than ``k`` such positions scoring above 0 are left out, with the reason."""
    names = saliency_schema(k)
    spans, failed = [], {}
    for i, rows in sal.table.groupby("example", sort=True):
        length = len(rows)
        score = sal.table.attrs["rank_by"]
        cand = rows[(rows["position"] < length - 1) & (rows["score"] > 0)].sort_values("rank")
        if len(cand) < k:
            spans.append(None)
            failed[int(i)] = (f"only {len(cand)} positions before the last token have a nonzero "
                              f"{score}; the schema needs {k}")
            continue
        spans.append(spans_from_positions(cand["position"].iloc[:k].tolist(), length))
    return Suggestion(names, spans, source=source, failed=failed,
                      info={"rank_by": sal.table.attrs["rank_by"], "k": k})


@dataclass
class SaliencySuggester:
    """A suggester (`peap_widget.suggest.base`): runs `token_saliency` on the examples (their
    ``clean``, ``corrupted``, ``correct``, ``incorrect``; no spans needed) and proposes
    `saliency_schema(k)` spans. Examples the model cannot take (an answer not one token, a
    corrupted prompt of another length...) are left out with the reason."""

    model: object
    k: int = 3
    rank_by: str | None = None
    metric: object = "logit_diff"
    batch_size: int | None = 8
    name: str = "saliency"

    def __call__(self, examples: Sequence[Mapping], tokens: Sequence[Sequence[str]] | None = None,
                 *, progress: Progress | None = None) -> Suggestion:
        tok = self.model.tokenizer
        good, kept, failed = [], [], {}
        for i, ex in enumerate(examples):
            try:
                if not isinstance(ex, Mapping) or not isinstance(ex.get("clean"), str):
                    raise PeapError("needs a 'clean' prompt")
                n = len(tok(ex["clean"])["input_ids"])
                if tokens is not None and len(tokens[i]) != n:
                    raise PeapError(f"the model's tokenizer makes {n} tokens of the prompt but "
                                    f"{len(tokens[i])} token strings were given")
                rec = {f: ex[f] for f in ("clean", "corrupted", "correct", "incorrect") if f in ex}
                # a placeholder schema: the dataset only carries the tokens and answers here
                rec["spans"] = {"body": [0, n - 1], "END": [n - 1, n]}
                good.append(Dataset.from_records([rec], self.model)[0])
                kept.append(i)
            except PeapError as err:
                failed[i] = str(err)
        spans: list = [None] * len(examples)
        info: dict = {}
        names = saliency_schema(self.k)
        if good:
            ds = Dataset(_PLACEHOLDER, good, tok)
            sal = token_saliency(self.model, ds, k=self.k, rank_by=self.rank_by,
                                 metric=self.metric, batch_size=self.batch_size,
                                 progress=progress)
            sug = suggest_from_saliency(sal, self.k, self.name)
            for j, i in enumerate(kept):
                spans[i] = sug.spans[j]
                if j in sug.failed:
                    failed[i] = sug.failed[j]
            info = sug.info
        return Suggestion(names, spans, source=self.name, failed=dict(sorted(failed.items())),
                          info=info)
