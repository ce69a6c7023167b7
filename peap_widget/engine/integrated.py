"""The integration path of EAP-IG: which rows of one trace sit at which point of the path.

EAP-IG averages the metric's gradients over ``steps`` points between the ablation source and the
clean run (Hanna et al. 2024; MIB's ``EAP-IG-inputs`` and ``EAP-IG-activations``). The engine runs
all points of a batch in one trace: the clean prompts repeated ``blocks`` times, block ``j`` of
``B`` rows holding one point. For point k = 1..steps the weight of the clean value is
alpha_k = k / steps (as MIB's code), so the last point is the clean run itself and ``steps=1``
is plain EAP / PEAP. A value x at alpha is written

    x(alpha) = x - (1 - alpha) (x - x*)

so that at alpha = 1 it is x bit for bit (the factor is exactly 0).

- ``inputs`` (``eap-ig``, ``peap-ig``): one group of ``steps`` blocks; the residual entering
  block 0 is interpolated.
- ``activations`` (``eap-ig-activations``): one group per interpolated node group, in forward
  order: ``input``, then per layer its heads (all heads of the layer at once, before the output
  projection) and its MLP; group g's ``steps`` blocks interpolate only that group's output.

Example:
    >>> plan = Path("inputs", steps=4, n_layers=2)
    >>> plan.blocks, plan.clean_block
    (4, 3)
    >>> plan.coefficients("input").tolist()
    [0.75, 0.5, 0.25, 0.0]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MODES = {"eap-ig": "inputs", "peap-ig": "inputs", "eap-ig-activations": "activations"}


@dataclass(frozen=True)
class Path:
    mode: str          # "inputs" or "activations"
    steps: int
    n_layers: int

    @property
    def groups(self) -> list[str]:
        """The node groups interpolated one at a time: ``input``, ``a0``, ``m0``, ``a1``, ..."""
        if self.mode == "inputs":
            return ["input"]
        return ["input"] + [f"{kind}{layer}" for layer in range(self.n_layers) for kind in "am"]

    @property
    def blocks(self) -> int:
        """Row blocks per batch: one per (group, point)."""
        return len(self.groups) * self.steps

    @property
    def clean_block(self) -> int:
        """A block that is the clean run exactly: the first group's last point (alpha = 1)."""
        return self.steps - 1

    def coefficients(self, group: str, dtype: torch.dtype = torch.float64,
                     device: torch.device | str | None = None) -> torch.Tensor:
        """[blocks] the factor 1 - alpha of ``group``'s value in each block (0 where the block
        leaves it clean)."""
        c = torch.zeros(self.blocks, dtype=dtype, device=device)
        if group in self.groups:
            g = self.groups.index(group)
            k = torch.arange(self.steps, dtype=dtype, device=device)
            c[g * self.steps: (g + 1) * self.steps] = (self.steps - 1 - k) / self.steps
        return c

    def row_factors(self, group: str, B: int, dtype: torch.dtype,
                    device: torch.device | str | None = None) -> torch.Tensor | None:
        """[blocks * B, 1, 1] per-row 1 - alpha of ``group`` (None where no row moves it)."""
        if group not in self.groups:
            return None
        c = self.coefficients(group, torch.float64, device).to(dtype)
        return c.repeat_interleave(B)[:, None, None]


def interpolate(x: torch.Tensor, x_src: torch.Tensor,
                factors: torch.Tensor | None) -> torch.Tensor:
    """x(alpha) = x - (1 - alpha) (x - x*) per row: ``x`` [R, T, D] this run's values (rows
    still clean there), ``x_src`` [B, T, D] the ablation source's, ``factors`` [R, 1, 1]."""
    if factors is None:
        return x
    blocks = x.shape[0] // x_src.shape[0]
    src = x_src.to(x.dtype).repeat(blocks, *([1] * (x.dim() - 1)))
    return x - factors * (x.detach() - src)


def average_blocks(x: torch.Tensor, blocks: int) -> torch.Tensor:
    """[blocks * B, ...] -> [B, ...]: the mean over the blocks (a path-averaged gradient)."""
    if blocks == 1:
        return x
    return x.reshape(blocks, x.shape[0] // blocks, *x.shape[1:]).mean(0)
