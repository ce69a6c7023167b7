"""Faithfulness of a circuit by ablation (docs/numbers.md).

Evaluating circuit C runs the clean input once with every slot input rebuilt: slot v at t gets
this run's z_u[t] for each upstream u with (u -> v, span(t)) in C and the ablation source's
z*_u[t] otherwise (biases always kept); head h at query t attends to key t' with this run's q, k,
v where the crossing edge of that kind (span(t'), span(t)) is in C, else with q*_t, k*_t', v*_t'.
So the full circuit reproduces the clean run and the empty one the ablation source.

Example:
    >>> model = pw.models.load("toy-ioi")
    >>> ds = pw.tasks.get("ioi", n=4, seed=0).dataset(model)
    >>> res = pw.attribute(model, ds, progress=False)
    >>> ev = pw.evaluate(model, ds, res.circuit(n_edges=20))
    >>> ev.faithfulness, ev.soft, ev.hard, ev.kl                       # doctest: +ELLIPSIS
    (0.35..., 0.41..., 0.0, 12.4...)
    >>> lab = pw.Evaluator(model, ds)                    # the clean and ablated runs, cached
    >>> [lab.run(res.circuit(n_edges=n)).n_edges for n in (10, 40)]
    [3, 22]
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..runtime import remote
from .ablation import SourceValues, ablation_sources
from ..circuits.circuit import Circuit
from ..data.dataset import Batch, Dataset
from ..graph.space import Graph, edge_space
from ..errors import NonFiniteError, PeapError
from .metrics import Metric, METRICS, last_token_logits, resolve_metric
from ..runtime.grad import frozen_parameters
from ..runtime.model import model_lock
from .scores import mixed_attention
from .walk import walk_layers

if TYPE_CHECKING:
    from ..runtime.model import Model


#: Relative tolerance, by the model's dtype, below which m(full) - m(empty) counts as zero:
#: |m(full) - m(empty)| <= rtol * max(1, |m(full)|, |m(empty)|) refuses to normalise (see
#: `normalisation_refusal`). The full circuit reproduces the clean run to ~1e-15 in float64 and
#: to a few 1e-7 relative in float32 (toy-ioi: 7e-6 on a logit difference of 17); 16-bit models
#: compute with an 8-bit mantissa.
NORMALISE_RTOL = {torch.float64: 1e-6, torch.float32: 1e-4}
NORMALISE_RTOL_16BIT = 1e-2


def normalisation_refusal(full: float, empty: float, rtol: float = 1e-6) -> str | None:
    """Why (m(C) - m(empty)) / (m(full) - m(empty)) must not be formed, or None when it may:
    a non-finite metric, or |m(full) - m(empty)| <= rtol * max(1, |m(full)|, |m(empty)|)."""
    full, empty = float(full), float(empty)
    if not (np.isfinite(full) and np.isfinite(empty)):
        return (f"normalized faithfulness refused: the metric is not finite "
                f"(full model {full}, empty circuit {empty})")
    tol = rtol * max(1.0, abs(full), abs(empty))
    gap = abs(full - empty)
    if gap <= tol:
        return (f"normalized faithfulness refused: the full model's metric ({full:.6g}) and the "
                f"empty circuit's ({empty:.6g}) differ by {gap:.3g}, within the tolerance "
                f"{tol:.3g} ({rtol:g} x max(1, |m(full)|, |m(empty)|)); the ablation does not move "
                "the metric (are the corrupted prompts the clean ones?), so any ratio would be "
                "noise over noise")
    return None


def task_warning(full: float, empty: float, accuracy: float | None = None,
                 rtol: float = 1e-6) -> str | None:
    """A warning when the model does not do the task on this data: its metric is below the
    ablated one (the empty circuit) by more than the normalisation tolerance, or it gets no
    example right (``accuracy`` 0)."""
    notes = []
    if accuracy is not None and accuracy == 0:
        notes.append("the model gets no example right (accuracy 0)")
    if (np.isfinite(full) and np.isfinite(empty)
            and empty - full > rtol * max(1.0, abs(full), abs(empty))):
        notes.append(f"the full model's metric ({full:.4g}) is below the ablated one ({empty:.4g})")
    if not notes:
        return None
    return ("the model does not do this task: " + " and ".join(notes)
            + "; circuits and faithfulness explain nothing here")


@dataclass
class EvalResult:
    """One circuit's evaluation. Metrics are dataset means; ``per_example`` arrays per example."""

    metric: float                 # m(C)
    clean_metric: float           # m(full model)
    empty_metric: float           # m(empty circuit) = the ablation source
    faithfulness: float | None    # (m(C) - m(empty)) / (m(full) - m(empty)); None if refused
    soft: float                   # m(C) / m(full)
    hard: float                   # fraction of examples whose last-token argmax matches the full model's
    kl: float                     # mean KL(full model || circuit) of the last-token distribution
    per_example: np.ndarray
    last_logits: np.ndarray       # [N, vocab]
    n_edges: int | None = None
    fraction: float | None = None
    n_real_edges: float | None = None
    seconds: float = 0.0
    refusal: str | None = None    # why ``faithfulness`` is None (see `normalisation_refusal`)
    warning: str | None = None    # the model does not do the task (see `task_warning`)

    def as_dict(self) -> dict:
        keys = ("metric", "clean_metric", "empty_metric", "faithfulness", "soft", "hard", "kl",
                "n_edges", "fraction", "n_real_edges", "seconds", "refusal", "warning")
        return {k: getattr(self, k) for k in keys}

    def __repr__(self) -> str:
        f = "None (refused)" if self.faithfulness is None else f"{self.faithfulness:.4f}"
        return (f"EvalResult(faithfulness={f}, metric={self.metric:.4g}, "
                f"clean={self.clean_metric:.4g}, empty={self.empty_metric:.4g}, soft={self.soft:.4f}, "
                f"hard={self.hard:.3f}, kl={self.kl:.4g}, edges={self.n_edges})")


class Evaluator:
    """Evaluates many circuits on one dataset, running the clean model and the ablation source
    once and caching them (what the widget uses for live re-evaluation).

    Args:
        model: as for `attribute`.
        ds: as for `attribute`.
        ablation: ``"counterfactual"``, ``"mean"`` (per span type over ``reference``) or ``"zero"``.
        metric: ``"logit_diff"``, ``"prob_diff"`` or a callable.
        batch_size: examples per trace (None: all at once).

    Every trace holds ``model.lock`` (construction as a whole, and each `run`), so evaluations
    from a widget's thread and a notebook cell never interleave inside the model.
    ``refusal`` says why normalized faithfulness is not formed on this data (None when it is),
    ``warning`` when the model does not do the task.
    """

    def __init__(self, model: Model, ds: Dataset, ablation: str = "counterfactual",
                 metric: str | Metric = "logit_diff", batch_size: int | None = None,
                 reference: Dataset | None = None):
        self.model, self.ds, self.ablation = model, ds, ablation
        self.metric, self.batch_size, self.reference = metric, batch_size, reference
        #: for a `subsample`: the examples of the parent's dataset it holds, and its size
        self.indices: list[int] | None = None
        self.sample_of: int | None = None
        self.metric_name, self.metric_fn = resolve_metric(metric)
        self.batches = list(ds.batches(batch_size, device=model.device))
        with model_lock(model):
            source = ablation_sources(model, ds, ablation, batch_size, reference)
            with torch.no_grad(), frozen_parameters(model.hf):
                if model.remote:
                    # Per-position sources stay on the server: each request recomputes its
                    # batch's source (one more forward) instead of shipping them both ways.
                    self.sources = [source] * len(self.batches)
                else:
                    self.sources = [source(b) for b in self.batches]
                self.clean_last = torch.cat([remote.run(model, clean_logits, model, b)
                                             for b in self.batches])
        _require_finite(self.clean_last, "the clean run's logits")
        self.clean_per_example = self._metric(self.clean_last).cpu().double().numpy()
        self._empty: np.ndarray | None = None
        self.rtol = NORMALISE_RTOL.get(model.dtype, NORMALISE_RTOL_16BIT)

    def _metric(self, last_logits: torch.Tensor) -> torch.Tensor:
        correct = torch.cat([b.correct for b in self.batches])
        incorrect = torch.cat([b.incorrect for b in self.batches])
        return self.metric_fn(last_logits, correct, incorrect)

    # --- masks -----------------------------------------------------------------------------------

    def _masks(self, circuit: Circuit):
        """(out-of-circuit residual edges [S, Nf, Nb] float, crossing edges in [3, L, H, S, S]
        bool or None) on the dataset's spans."""
        sp, schema = circuit.space, list(self.ds.schema.spans)
        if sp.graph.cfg != self.model.adapter.config:
            raise PeapError(f"the circuit's graph {sp.graph.cfg} is not this model's "
                            f"{self.model.adapter.config}")
        resid_in, cross_in = sp.dense(circuit.in_rows, False)
        if sp.spans == schema:
            pass
        elif len(sp.spans) == 1 and not sp.crossing:  # position-free (EAP, MIB): every span
            resid_in = np.repeat(resid_in, len(schema), axis=0)
        else:
            raise PeapError(f"the circuit's spans {sp.spans} do not match the dataset's schema "
                            f"{schema}")
        # In-circuit residual edges as coordinates (small; the dense mask is built per batch
        # where the model runs, see `circuit_batch`).
        dev = self.model.device
        cross = None if cross_in is None else torch.as_tensor(cross_in, device=dev)
        return torch.as_tensor(np.stack(np.nonzero(resid_in)), dtype=torch.int64), cross

    # --- runs ------------------------------------------------------------------------------------

    def logits(self, circuit: Circuit, progress: bool | Callable = None) -> torch.Tensor:
        """[N, vocab] last-token logits of the circuit run (``progress(done, total)`` in
        examples after each batch)."""
        in_circuit, cross = self._masks(circuit)
        out, done, total = [], 0, len(self.ds)
        with model_lock(self.model), torch.no_grad(), frozen_parameters(self.model.hf):
            for b, s in zip(self.batches, self.sources):
                out.append(remote.run(self.model, circuit_batch, self.model, b, s, in_circuit,
                                      cross))
                done += len(b.lengths)
                if progress is not None:
                    progress(done, total)
        out = torch.cat(out)
        _require_finite(out, f"the logits of the circuit run ({circuit.n_edges} edges)")
        return out

    @property
    def empty_per_example(self) -> np.ndarray:
        if self._empty is None:
            self._empty_run()
        return self._empty

    def _empty_run(self, progress=None) -> None:
        with model_lock(self.model):
            if self._empty is None:
                space = _any_space(self)
                empty = Circuit(space, np.zeros(len(space), dtype=bool))
                self._empty = self._metric(self.logits(empty, progress)).cpu().double().numpy()

    def subsample(self, n: int, seed: int = 0) -> "Evaluator":
        """An `Evaluator` on ``n`` of this one's examples (drawn without replacement with
        ``seed``, kept in dataset order), for quick interactive evaluations of big models; the
        same ablation and metric, and mean ablation keeps this evaluator's reference (default
        its whole dataset), so every example's numbers equal this evaluator's for it.
        ``indices`` and ``sample_of`` say which examples of how many. ``n`` at least the size
        gives this evaluator itself."""
        N = len(self.ds)
        if n >= N:
            return self
        if n < 1:
            raise PeapError(f"a subsample needs at least one example, got {n}")
        idx = sorted(np.random.default_rng(seed).choice(N, size=int(n), replace=False).tolist())
        from ..data.dataset import Dataset as _Dataset

        sub_ds = _Dataset(self.ds.schema, [self.ds.examples[i] for i in idx], self.ds.tokenizer)
        reference = self.reference if self.reference is not None else (
            self.ds if self.ablation == "mean" else None)
        sub = Evaluator(self.model, sub_ds, self.ablation, self.metric, self.batch_size, reference)
        sub.indices, sub.sample_of = idx, N
        return sub

    def removal_runs(self, base: Circuit, removals: list, copies: int | None = None,
                     progress: bool | Callable = None) -> tuple[np.ndarray, np.ndarray]:
        """Evaluate many circuits that are ``base`` minus a few rows each, several per
        forward pass (``copies`` circuits as stacked copies of a batch; default: as many as
        make about `EXAMPLES_PER_PASS` examples). ``removals``: a list of K row lists of
        ``base.space``. Returns (metric [K, N], KL(clean || circuit) [K, N]) per circuit and
        example. ``progress(done)`` is called with the circuits finished so far."""
        K = len(removals)
        N = len(self.ds)
        metric, kl = np.empty((K, N)), np.empty((K, N))
        if K == 0:
            return metric, kl
        in_circuit, cross = self._masks(base)
        sp = base.space
        B = max(len(b.lengths) for b in self.batches)
        per_pass = max(1, copies or EXAMPLES_PER_PASS // B)
        coords = [_removal_coords(sp, rows, len(self.ds.schema.spans)) for rows in removals]
        with model_lock(self.model), torch.no_grad(), frozen_parameters(self.model.hf):
            for start in range(0, K, per_pass):
                chunk = coords[start: start + per_pass]
                resid = _stack_coords([c[0] for c in chunk], 4)
                crossing = _stack_coords([c[1] for c in chunk], 6)
                col = 0
                for b, s in zip(self.batches, self.sources):
                    n = len(b.lengths)
                    out = remote.run(self.model, circuits_batch, self.model, b, s, in_circuit,
                                     cross, resid, crossing, len(chunk),
                                     self.clean_last[col: col + n], self.metric_fn)
                    if not bool(out["finite"].all()):
                        raise NonFiniteError("NaN or inf in the logits of a circuit run "
                                             f"(circuits {start}-{start + len(chunk) - 1})")
                    rows = slice(start, start + len(chunk))
                    metric[rows, col: col + n] = out["metric"].cpu().double().numpy()
                    kl[rows, col: col + n] = out["kl"].cpu().double().numpy()
                    col += n
                if progress is not None:
                    progress(start + len(chunk))
        return metric, kl

    @property
    def clean_metric(self) -> float:
        return float(self.clean_per_example.mean())

    @property
    def empty_metric(self) -> float:
        return float(self.empty_per_example.mean())

    @property
    def refusal(self) -> str | None:
        """Why normalized faithfulness is refused on this data (`normalisation_refusal` with
        this evaluation's tolerance ``rtol``), or None."""
        return normalisation_refusal(self.clean_metric, self.empty_metric, self.rtol)

    @property
    def accuracy(self) -> float | None:
        """Fraction of examples with a positive metric (for the logit or probability
        difference: the correct answer ahead), None for a custom metric."""
        if self.metric_name not in METRICS:
            return None
        return float((self.clean_per_example > 0).mean())

    @property
    def warning(self) -> str | None:
        """`task_warning` for this data: the model does not do the task, or None."""
        return task_warning(self.clean_metric, self.empty_metric, self.accuracy, self.rtol)

    def run(self, circuit: Circuit, progress: bool | Callable = None) -> EvalResult:
        """Evaluate ``circuit``; see `EvalResult`. ``progress(done, total)`` is called with
        example counts after each batch (the first run also computes the empty circuit's
        metric: its batches count in ``total``)."""
        t0 = time.perf_counter()
        with model_lock(self.model):
            if self._empty is None and progress is not None:
                n = len(self.ds)
                self._empty_run(lambda d, _t: progress(d, 2 * n))
                last = self.logits(circuit, lambda d, _t: progress(n + d, 2 * n))
            else:
                last = self.logits(circuit, progress)
            empty_per = self.empty_per_example
        per = self._metric(last).cpu().double().numpy()
        m, full, empty = per.mean(), self.clean_per_example.mean(), empty_per.mean()
        refusal = normalisation_refusal(full, empty, self.rtol)
        logp_c = torch.log_softmax(last.double(), -1)
        logp_f = torch.log_softmax(self.clean_last.double(), -1)
        kl = (logp_f.exp() * (logp_f - logp_c)).sum(-1).mean().item()
        hard = (last.argmax(-1) == self.clean_last.argmax(-1)).double().mean().item()
        return EvalResult(
            metric=float(m), clean_metric=float(full), empty_metric=float(empty),
            faithfulness=None if refusal else float((m - empty) / (full - empty)),
            soft=float(m / full) if full != 0 else float("nan"), hard=hard, kl=kl,
            per_example=per, last_logits=last.cpu().double().numpy(),
            n_edges=circuit.n_edges, fraction=circuit.fraction, n_real_edges=circuit.n_real_edges,
            seconds=time.perf_counter() - t0, refusal=refusal, warning=self.warning)


#: Examples (circuits x batch size) one `Evaluator.removal_runs` pass stacks by default.
EXAMPLES_PER_PASS = 256


def _removal_coords(space, rows, n_spans: int) -> tuple[np.ndarray, np.ndarray]:
    """(residual [3, n] (span, fwd, bwd), crossing [5, n] (kind, layer, head, qspan, kspan))
    coordinates of ``rows``; a position-free row (one span ``all``) stands for every span."""
    rows = np.asarray(rows, dtype=np.int64)
    res = rows[rows < space.n_resid]
    s, u, b = space.resid_coords(res)
    if space.n_spans == 1 and not space.crossing and n_spans > 1:
        s = np.repeat(np.arange(n_spans), len(res))
        u, b = np.tile(u, n_spans), np.tile(b, n_spans)
    c = rows[rows >= space.n_resid] - space.n_resid
    cross = np.stack([space.kind[c], space.layer[c], space.head[c], space.qspan[c], space.kspan[c]])
    return np.stack([s, u, b]).astype(np.int64), cross.astype(np.int64)


def _stack_coords(parts: list, width: int) -> torch.Tensor:
    """Per-copy coordinate arrays -> [width, n] with the copy index in front."""
    cols = [np.concatenate([np.full((1, p.shape[1]), k), p]) for k, p in enumerate(parts)]
    return torch.as_tensor(np.concatenate(cols, axis=1) if cols else np.zeros((width, 0)),
                           dtype=torch.int64)


def _require_finite(logits: torch.Tensor, what: str) -> None:
    """NaN or inf logits make every number of an evaluation meaningless (argmax agreement of
    NaN rows is 1.0): refuse, naming the examples."""
    bad = (~torch.isfinite(logits)).any(-1).nonzero().flatten().tolist()
    if bad:
        shown = ", ".join(map(str, bad[:5])) + (" ..." if len(bad) > 5 else "")
        raise NonFiniteError(f"NaN or inf in {what} for examples {shown}; check the model's "
                             "weights and dtype (float16 overflows easily)")


def _any_space(ev: Evaluator):
    return edge_space(ev.model.adapter.config, tuple(ev.ds.schema.spans), True)


def clean_logits(model: Model, batch: Batch) -> torch.Tensor:
    """Job: [B, vocab] last-token logits of the clean run."""
    ad, nn = model.adapter, model.nn
    batch = remote.batch_on(batch, model.device)
    out = {}
    with torch.no_grad(), nn.trace(batch.clean_ids):
        out["last"] = last_token_logits(ad.read_logits(nn).to(batch.lengths.device),
                                        batch.lengths).detach()
    return out["last"]


def out_of_circuit(graph: Graph, n_spans: int, in_circuit: torch.Tensor, dtype: torch.dtype,
                   device: torch.device | str | None) -> torch.Tensor:
    """[S, Nf, Nb] 1.0 for each residual edge not in the circuit (its (span, node, slot)
    coordinates ``in_circuit`` [3, n]), 0.0 elsewhere and off the edge mask."""
    mask = torch.as_tensor(graph.edge_mask, device=device)[None].repeat(n_spans, 1, 1)
    mask[tuple(in_circuit.to(device))] = False
    return mask.to(dtype)


def circuit_batch(model: Model, batch: Batch, src: SourceValues | Callable[[Batch], SourceValues],
                  in_circuit: torch.Tensor, cross_in: torch.Tensor | None) -> torch.Tensor:
    """Job: one patched clean run; returns last-token logits [B, vocab]. ``src`` is the batch's
    `SourceValues`, or the ablation source function to compute them with here."""
    batch = remote.batch_on(batch, model.device)
    if not isinstance(src, SourceValues):
        src = src(batch)
    cd = model.adapter.compute_dtype()
    not_in = out_of_circuit(model.graph, batch.n_spans, in_circuit, cd, model.device)
    cross_in = None if cross_in is None else cross_in.to(model.device)
    return _circuit_batch(model, batch, src, not_in, cross_in)


def _circuit_batch(model, batch: Batch, src: SourceValues, not_in: torch.Tensor,
                   cross_in: torch.Tensor | None) -> torch.Tensor:
    """One patched clean run; returns last-token logits [B, vocab]."""
    ad, nn = model.adapter, model.nn
    sid = batch.span_ids.clamp_min(0)                   # pads: any span (they never matter)
    patch = _PatchSteps(model, nn, src, _per_position(not_in, sid), cross_in, sid)
    out = {}
    with nn.trace(batch.clean_ids):
        inp = ad.read_input(nn)
        delta = walk_layers(model, src, inp, patch, inp.device)
        patch.final(delta)
        out["last"] = last_token_logits(ad.read_logits(nn).to(batch.lengths.device),
                                        batch.lengths).detach()
    return out["last"]


def _per_position(not_in: torch.Tensor, sid: torch.Tensor) -> torch.Tensor:
    """[B, T, Nf, Nb] the out-of-circuit mask at each position, from per-span masks
    [S, Nf, Nb] (one circuit) or [B, S, Nf, Nb] (one per example, `circuits_batch`)."""
    if not_in.dim() == 4:
        return not_in[torch.arange(sid.shape[0], device=sid.device)[:, None], sid]
    return not_in[sid]


class _PatchSteps:
    """`walk_layers` steps of a circuit run: every slot's input is this run's residual plus,
    for each upstream node out of the circuit at that position, its z* - z (``pos_not_in``
    [B, T, Nf, Nb]); each head attends with this run's or the source's q, k, v per crossing
    edge (``cross_in``, or None: this run's for all)."""

    def __init__(self, model, nn, src: SourceValues, pos_not_in: torch.Tensor,
                 cross_in: torch.Tensor | None, sid: torch.Tensor):
        self.model, self.nn, self.src = model, nn, src
        self.pos_not_in, self.cross_in, self.sid = pos_not_in, cross_in, sid
        self.cd = pos_not_in.dtype

    def _patched(self, x: torch.Tensor, weights: torch.Tensor, delta: torch.Tensor,
                 pattern: str) -> torch.Tensor:
        """``x`` plus the out-of-circuit differences ``weights`` selects (on x's device)."""
        return x + torch.einsum(pattern, weights, delta).to(x.device)

    def attention(self, layer: int, delta: torch.Tensor) -> torch.Tensor:
        ad, nn, graph, cd = self.model.adapter, self.nn, self.model.graph, self.cd
        B, T, _, D = delta.shape
        H, dh = ad.config.n_heads, ad.d_head
        x = ad.read_residual(nn, layer, "attn").to(cd)
        U, first = graph.attn_upstream(layer), graph.qkv_slot(layer, 0, 0)
        W = self.pos_not_in[:, :, :U, first: first + 3 * H]                       # [B, T, U, 3H]
        slots = self._patched(x[:, :, None], W, delta[:, :, :U], "btuk,btud->btkd")
        normed = ad.norm(nn, layer, "attn")(slots.to(self.model.dtype)).to(cd)
        q, k, v = ad.qkv_from_slots(nn, layer, normed.reshape(B, T, 3, H, D))
        if self.cross_in is None:
            Cq = Ck = Cv = None
        else:
            Cq, Ck, Cv = _crossing_at(self.cross_in, layer, self.sid).to(x.device)
        src = self.src
        o = mixed_attention(q, k, v, src.q[layer].to(cd), src.k[layer].to(cd),
                            src.v[layer].to(cd), Cq, Ck, Cv,
                            partial(ad.attention_logits, layer=layer),
                            partial(ad.pattern_from_logits, layer=layer))
        o = o.transpose(1, 2).reshape(B, T, H * dh)
        ad.replace_attention(nn, layer, o.to(self.model.dtype))
        return o

    def mlp(self, layer: int, delta: torch.Tensor) -> torch.Tensor:
        ad, nn, graph = self.model.adapter, self.nn, self.model.graph
        x = ad.read_residual(nn, layer, "mlp").to(self.cd)
        U = graph.mlp_upstream(layer)
        W = self.pos_not_in[:, :, :U, graph.mlp_slot(layer)]
        patched = self._patched(x, W, delta[:, :, :U], "btu,btud->btd")
        ad.set_norm_input(nn, layer, "mlp", patched.to(self.model.dtype))
        return ad.read_mlp_output(nn, layer).to(self.cd)

    def final(self, delta: torch.Tensor) -> None:
        """The logits slot's input, after the last layer."""
        ad, nn = self.model.adapter, self.nn
        x = ad.read_residual(nn, None, "final").to(self.cd)
        W = self.pos_not_in[:, :, :, self.model.graph.logits_slot]
        ad.set_norm_input(nn, None, "final",
                          self._patched(x, W, delta, "btu,btud->btd").to(self.model.dtype))


def _crossing_at(cross_in: torch.Tensor, layer: int, sid: torch.Tensor) -> torch.Tensor:
    """[3, B, H, T, T] whether each (query t, key t') pair of ``layer``'s heads uses this run's
    q / k / v, from crossing masks [3, L, H, S, S] (one circuit) or [B, 3, L, H, S, S] (one
    circuit per example, `circuits_batch`)."""
    if cross_in.dim() == 5:
        return cross_in[:, layer][:, :, sid[:, :, None], sid[:, None, :]].transpose(1, 2)
    b = torch.arange(sid.shape[0], device=sid.device)[:, None, None]
    # advanced indices split by slices go first: [B, T, T, 3, H]
    return cross_in[:, :, layer][b, :, :, sid[:, :, None], sid[:, None, :]].permute(3, 0, 4, 1, 2)


def repeat_batch(batch: Batch, k: int) -> Batch:
    """``batch`` stacked ``k`` times (copy-major: example i of copy c is row c * B + i)."""
    import dataclasses

    rep = {f.name: getattr(batch, f.name) for f in dataclasses.fields(batch)}
    for name, x in rep.items():
        if isinstance(x, torch.Tensor):
            rep[name] = x.repeat(k, *([1] * (x.dim() - 1)))
    rep["indices"] = list(batch.indices) * k
    return dataclasses.replace(batch, **rep)


class _RepeatedHeads:
    """Per-layer heads' outputs of a source, stacked ``k`` times on first use."""

    def __init__(self, heads, k: int):
        self.heads, self.k = heads, k

    def __getitem__(self, layer: int) -> torch.Tensor:
        x = self.heads[layer]
        return x.repeat(self.k, *([1] * (x.dim() - 1)))


def repeat_source(src: SourceValues, k: int) -> SourceValues:
    """A batch's `SourceValues` stacked ``k`` times, matching `repeat_batch`."""
    def rep(x):
        return None if x is None else x.repeat(k, *([1] * (x.dim() - 1)))

    return SourceValues(rep(src.input), [rep(x) for x in src.o], [rep(x) for x in src.mlp],
                        [rep(x) for x in src.q], [rep(x) for x in src.k], [rep(x) for x in src.v],
                        rep(src.metric),
                        None if src.heads is None else _RepeatedHeads(src.heads, k))


def circuits_batch(model: Model, batch: Batch, src: SourceValues | Callable[[Batch], SourceValues],
                   in_circuit: torch.Tensor, cross_in: torch.Tensor | None, removed: torch.Tensor,
                   removed_cross: torch.Tensor, n_copies: int, clean_last: torch.Tensor,
                   metric_fn: Metric) -> dict:
    """Job: ``n_copies`` circuits in one patched clean run of ``n_copies`` stacked copies of
    ``batch``. Copy c is the base circuit (``in_circuit`` coordinates and ``cross_in`` as for
    `circuit_batch`) with the residual edges ``removed`` [4, n] (copy, span, forward node,
    backward slot) and crossing edges ``removed_cross`` [6, n] (copy, kind, layer, head, query
    span, key span) taken out. Returns small aggregates: ``metric`` [K, B] per copy and example,
    ``kl`` [K, B] KL(clean || copy) of the last-token distribution (``clean_last`` [B, vocab]).
    """
    batch = remote.batch_on(batch, model.device)
    if not isinstance(src, SourceValues):
        src = src(batch)
    dev, K, B = model.device, int(n_copies), batch.clean_ids.shape[0]
    cd = model.adapter.compute_dtype()
    not_in = out_of_circuit(model.graph, batch.n_spans, in_circuit, cd, dev)
    not_in = not_in[None].repeat(K, 1, 1, 1)
    if removed.numel():
        not_in[tuple(removed.to(dev))] = 1.0
    cross = None
    if cross_in is not None:
        cross = cross_in.to(dev)[None].repeat(K, 1, 1, 1, 1, 1)
        if removed_cross.numel():
            cross[tuple(removed_cross.to(dev))] = False
        cross = cross.repeat_interleave(B, dim=0)
    elif removed_cross.numel():
        raise PeapError("crossing edges can only be removed from a positional circuit")
    rb = repeat_batch(batch, K)
    last = _circuit_batch(model, rb, repeat_source(src, K), not_in.repeat_interleave(B, dim=0),
                          cross)
    metric = metric_fn(last, rb.correct, rb.incorrect).reshape(K, B)
    logp_c = torch.log_softmax(last.double(), -1).reshape(K, B, -1)
    logp_f = torch.log_softmax(clean_last.to(last.device).double(), -1)[None]
    kl = (logp_f.exp() * (logp_f - logp_c)).sum(-1)
    return {"metric": metric.detach(), "kl": kl.detach(),
            "finite": torch.isfinite(last).all(-1).reshape(K, B)}


def evaluate(model: Model, ds: Dataset, circuit: Circuit, ablation: str | None = None,
             metric: str | Metric | None = None, batch_size: int | None = None,
             reference: Dataset | None = None) -> EvalResult:
    """Evaluate one circuit (see the module docstring). ``ablation`` and ``metric`` default to
    the settings of the attribution the circuit came from, else counterfactual / logit_diff.

    Example:
        >>> model = pw.models.load("toy-ioi")
        >>> ds = pw.tasks.get("ioi", n=4, seed=0).dataset(model)
        >>> circuit = pw.attribute(model, ds, progress=False).circuit(n_edges=20)
        >>> round(evaluate(model, ds, circuit).faithfulness, 2)   # its attribution's ablation
        0.35
    """
    ablation = ablation or circuit.settings.get("ablation", "counterfactual")
    if metric is None:
        name = circuit.settings.get("metric", "logit_diff")
        if name not in METRICS:
            raise PeapError(f"the circuit was found with a custom metric {name!r}: pass metric=")
        metric = name
    return Evaluator(model, ds, ablation, metric, batch_size, reference).run(circuit)
