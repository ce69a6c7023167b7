"""The layer walk both engine traces share: inside a running nnsight trace, in forward order,
every forward node's difference z* - z from the ablation source.

Attribution (`peap_widget.engine.attribution`) reads the clean run's heads' and MLPs' outputs
(and, for EAP-IG-activations, moves them along the path); circuit evaluation
(`peap_widget.engine.evaluate`) rebuilds each slot's input from the differences so far and
patches the run. Each passes its per-layer steps as an object with two methods,

    attention(layer, delta) -> o    # this run's heads' outputs [B, T, H*dh], compute dtype
    mlp(layer, delta) -> out        # this run's MLP node output [B, T, D], compute dtype

called in forward order with the differences of the nodes upstream filled in, and the walk fills
in theirs: the heads' z*_h - z_h through each head's slice of the output projection
(`peap_widget.engine.ablation.head_deltas`), the MLP's z* - z.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import torch

from .ablation import SourceValues, head_deltas

if TYPE_CHECKING:
    from ..runtime.model import Model


class LayerSteps(Protocol):
    def attention(self, layer: int, delta: torch.Tensor) -> torch.Tensor: ...

    def mlp(self, layer: int, delta: torch.Tensor) -> torch.Tensor: ...


def walk_layers(model: Model, src: SourceValues, inp: torch.Tensor, steps: LayerSteps,
                device: torch.device | str, rows: slice = slice(None)) -> torch.Tensor:
    """[B, T, N_forward, D] the z* - z of every forward node (compute dtype, on ``device``),
    filled while ``steps`` walks the layers of the trace in forward order. ``inp`` is the
    trace's ``input`` node (rows ``rows`` of it are this batch's: an EAP-IG trace holds several
    copies); ``src`` the batch's ablation source."""
    ad, graph = model.adapter, model.graph
    cd, H = ad.compute_dtype(), ad.config.n_heads
    clean_input = inp[rows].detach().to(cd)
    B, T, D = clean_input.shape
    delta = torch.empty(B, T, graph.n_forward, D, dtype=cd, device=device)
    delta[:, :, 0] = src.input.to(cd) - clean_input
    for layer in range(ad.config.n_layers):
        o = steps.attention(layer, delta)
        first = graph.head_node(layer, 0)
        delta[:, :, first: first + H] = head_deltas(ad, src, layer, o, ad.W_O(layer).to(cd))
        out = steps.mlp(layer, delta)
        delta[:, :, graph.mlp_node(layer)] = src.mlp[layer].to(cd) - out
    return delta
