"""Faithfulness of a circuit by ablation (DESIGN.md section 5).

Evaluating circuit C runs the clean input once with every slot input rebuilt: slot v at t gets
this run's z_u[t] for each upstream u with (u -> v, span(t)) in C and the ablation source's
z*_u[t] otherwise (biases always kept); head h at query t attends to key t' with this run's q, k,
v where the crossing edge of that kind (span(t'), span(t)) is in C, else with q*_t, k*_t', v*_t'.
So the full circuit reproduces the clean run and the empty one the ablation source.

Example:
    >>> ev = pw.evaluate(model, ds, res.circuit(n_edges=200))          # doctest: +SKIP
    >>> ev.faithfulness, ev.soft, ev.hard, ev.kl                       # doctest: +SKIP
    >>> lab = pw.Evaluator(model, ds); lab.run(circ); lab.run(circ2)  # reuse the cached runs
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from .ablation import SourceValues, ablation_sources, head_deltas
from .attribution import frozen_parameters
from .circuit import Circuit
from .data import Batch, Dataset
from .errors import PeapError
from .metrics import METRICS, last_token_logits, resolve_metric
from .scores import mixed_attention


@dataclass
class EvalResult:
    """One circuit's evaluation. Metrics are dataset means; ``per_example`` arrays per example."""

    metric: float                 # m(C)
    clean_metric: float           # m(full model)
    empty_metric: float           # m(empty circuit) = the ablation source
    faithfulness: float           # (m(C) - m(empty)) / (m(full) - m(empty))
    soft: float                   # m(C) / m(full)
    hard: float                   # fraction of examples whose last-token argmax matches the full model's
    kl: float                     # mean KL(full model || circuit) of the last-token distribution
    per_example: np.ndarray
    last_logits: np.ndarray       # [N, vocab]
    n_edges: int | None = None
    fraction: float | None = None
    n_real_edges: float | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict:
        keys = ("metric", "clean_metric", "empty_metric", "faithfulness", "soft", "hard", "kl",
                "n_edges", "fraction", "n_real_edges", "seconds")
        return {k: getattr(self, k) for k in keys}

    def __repr__(self) -> str:
        return (f"EvalResult(faithfulness={self.faithfulness:.4f}, metric={self.metric:.4g}, "
                f"clean={self.clean_metric:.4g}, empty={self.empty_metric:.4g}, soft={self.soft:.4f}, "
                f"hard={self.hard:.3f}, kl={self.kl:.4g}, edges={self.n_edges})")


class Evaluator:
    """Evaluates many circuits on one dataset, running the clean model and the ablation source
    once and caching them (what the widget uses for live re-evaluation).

    Args:
        model, ds: as for `attribute`.
        ablation: ``"counterfactual"``, ``"mean"`` (per span type over ``reference``) or ``"zero"``.
        metric: ``"logit_diff"``, ``"prob_diff"`` or a callable.
        batch_size: examples per trace (None: all at once).
    """

    def __init__(self, model, ds: Dataset, ablation: str = "counterfactual", metric="logit_diff",
                 batch_size: int | None = None, reference: Dataset | None = None):
        self.model, self.ds, self.ablation = model, ds, ablation
        self.metric_name, self.metric_fn = resolve_metric(metric)
        self.batches = list(ds.batches(batch_size, device=model.device))
        source = ablation_sources(model, ds, ablation, batch_size, reference)
        with torch.no_grad(), frozen_parameters(model.hf):
            self.sources = [source(b) for b in self.batches]
            self.clean_last = torch.cat([self._clean_logits(b) for b in self.batches])
        self.clean_per_example = self._metric(self.clean_last).cpu().double().numpy()
        self._empty: np.ndarray | None = None

    def _clean_logits(self, batch: Batch) -> torch.Tensor:
        ad, nn = self.model.adapter, self.model.nn
        out = {}
        with nn.trace(batch.clean_ids, remote=self.model.remote):
            out["last"] = last_token_logits(ad.read_logits(nn), batch.lengths).detach()
        return out["last"]

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
        not_in = (~resid_in) & sp.graph.edge_mask[None]
        cd = self.model.adapter.compute_dtype()
        dev = self.model.device
        cross = None if cross_in is None else torch.as_tensor(cross_in, device=dev)
        return torch.as_tensor(not_in, dtype=cd, device=dev), cross

    # --- runs ------------------------------------------------------------------------------------

    def logits(self, circuit: Circuit) -> torch.Tensor:
        """[N, vocab] last-token logits of the circuit run."""
        not_in, cross = self._masks(circuit)
        with torch.no_grad(), frozen_parameters(self.model.hf):
            return torch.cat([_circuit_batch(self.model, b, s, not_in, cross)
                              for b, s in zip(self.batches, self.sources)])

    @property
    def empty_per_example(self) -> np.ndarray:
        if self._empty is None:
            space = _any_space(self)
            empty = Circuit(space, np.zeros(len(space), dtype=bool))
            self._empty = self._metric(self.logits(empty)).cpu().double().numpy()
        return self._empty

    def run(self, circuit: Circuit) -> EvalResult:
        """Evaluate ``circuit``; see `EvalResult`."""
        t0 = time.perf_counter()
        last = self.logits(circuit)
        per = self._metric(last).cpu().double().numpy()
        m, full, empty = per.mean(), self.clean_per_example.mean(), self.empty_per_example.mean()
        logp_c = torch.log_softmax(last.double(), -1)
        logp_f = torch.log_softmax(self.clean_last.double(), -1)
        kl = (logp_f.exp() * (logp_f - logp_c)).sum(-1).mean().item()
        hard = (last.argmax(-1) == self.clean_last.argmax(-1)).double().mean().item()
        return EvalResult(
            metric=float(m), clean_metric=float(full), empty_metric=float(empty),
            faithfulness=float((m - empty) / (full - empty)) if full != empty else float("nan"),
            soft=float(m / full) if full != 0 else float("nan"), hard=hard, kl=kl,
            per_example=per, last_logits=last.cpu().double().numpy(),
            n_edges=circuit.n_edges, fraction=circuit.fraction, n_real_edges=circuit.n_real_edges,
            seconds=time.perf_counter() - t0)


def _any_space(ev: Evaluator):
    from .circuit import _space

    return _space(ev.model.adapter.config, tuple(ev.ds.schema.spans), True)


def _circuit_batch(model, batch: Batch, src: SourceValues, not_in: torch.Tensor,
                   cross_in: torch.Tensor | None) -> torch.Tensor:
    """One patched clean run; returns last-token logits [B, vocab]."""
    ad, nn, graph = model.adapter, model.nn, model.graph
    cfg, dh = ad.config, ad.d_head
    L, H, D = cfg.n_layers, cfg.n_heads, cfg.d_model
    B, T = batch.clean_ids.shape
    cd = not_in.dtype
    sid = batch.span_ids.clamp_min(0)                   # pads: any span (they never matter)
    pos_not_in = not_in[sid]                            # [B, T, Nf, Nb] out-of-circuit per position
    W_O = [ad.W_O(layer).to(cd) for layer in range(L)]
    out = {}
    with nn.trace(batch.clean_ids, remote=model.remote):
        inp = ad.read_input(nn)
        delta = torch.empty(B, T, graph.n_forward, D, dtype=cd, device=inp.device)  # z* - z
        delta[:, :, 0] = src.input.to(cd) - inp.to(cd)
        for layer in range(L):
            x = ad.read_residual(nn, layer, "attn").to(cd)
            U, first = graph.attn_upstream(layer), graph.qkv_slot(layer, 0, 0)
            W = pos_not_in[:, :, :U, first: first + 3 * H]                        # [B, T, U, 3H]
            slots = x[:, :, None] + torch.einsum("btuk,btud->btkd", W, delta[:, :, :U])
            normed = ad.norm(nn, layer, "attn")(slots.to(model.dtype)).to(cd).reshape(B, T, 3, H, D)
            q, k, v = ad.qkv_from_slots(nn, layer, normed)
            if cross_in is None:
                Cq = Ck = Cv = None
            else:
                C = cross_in[:, layer][:, :, sid[:, :, None], sid[:, None, :]]    # [3, H, B, T, T]
                Cq, Ck, Cv = C.transpose(1, 2)
            o = mixed_attention(q, k, v, src.q[layer].to(cd), src.k[layer].to(cd),
                                src.v[layer].to(cd), Cq, Ck, Cv,
                                lambda qq, kk, _l=layer: ad.attention_logits(qq, kk, _l),
                                lambda s, _l=layer: ad.pattern_from_logits(s, _l))
            o = o.transpose(1, 2).reshape(B, T, H * dh)
            ad.replace_attention(nn, layer, o.to(model.dtype))
            first = graph.head_node(layer, 0)
            delta[:, :, first: first + H] = head_deltas(ad, src, layer, o, W_O[layer])
            xm = ad.read_residual(nn, layer, "mlp").to(cd)
            Um = graph.mlp_upstream(layer)
            Wm = pos_not_in[:, :, :Um, graph.mlp_slot(layer)]
            ad.set_norm_input(nn, layer, "mlp",
                              (xm + torch.einsum("btu,btud->btd", Wm, delta[:, :, :Um])).to(model.dtype))
            delta[:, :, graph.mlp_node(layer)] = src.mlp[layer].to(cd) - ad.read_mlp_output(nn, layer).to(cd)
        xf = ad.read_residual(nn, None, "final").to(cd)
        Wf = pos_not_in[:, :, :, graph.logits_slot]
        ad.set_norm_input(nn, None, "final",
                          (xf + torch.einsum("btu,btud->btd", Wf, delta)).to(model.dtype))
        out["last"] = last_token_logits(ad.read_logits(nn), batch.lengths).detach()
    return out["last"]


def evaluate(model, ds: Dataset, circuit: Circuit, ablation: str | None = None, metric=None,
             batch_size: int | None = None, reference: Dataset | None = None) -> EvalResult:
    """Evaluate one circuit (see the module docstring). ``ablation`` and ``metric`` default to
    the settings of the attribution the circuit came from, else counterfactual / logit_diff.

    Example:
        >>> ev = pw.evaluate(model, ds, res.circuit(n_edges=100))   # doctest: +SKIP
        >>> ev.faithfulness                                         # doctest: +SKIP
    """
    ablation = ablation or circuit.settings.get("ablation", "counterfactual")
    if metric is None:
        name = circuit.settings.get("metric", "logit_diff")
        if name not in METRICS:
            raise PeapError(f"the circuit was found with a custom metric {name!r}: pass metric=")
        metric = name
    return Evaluator(model, ds, ablation, metric, batch_size, reference).run(circuit)
