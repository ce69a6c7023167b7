"""Gradients without parameter gradients: the attribution engine and the saliency suggester
only need activation gradients, so a model's parameters are frozen while they run."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

_FROZEN_LOCK = threading.Lock()
_FROZEN: dict[int, list] = {}   # id(module) -> [users, saved flags]


@contextmanager
def frozen_parameters(module: torch.nn.Module) -> Iterator[None]:
    """No parameter gradients (we only need activation gradients); flags restored after.

    Counted per module, so overlapping uses (threads sharing a model, nested calls) freeze once
    and restore the flags from before the first only when the last one ends.

    >>> layer = torch.nn.Linear(2, 2)
    >>> with frozen_parameters(layer), frozen_parameters(layer):
    ...     layer.weight.requires_grad
    False
    >>> layer.weight.requires_grad
    True
    """
    key = id(module)
    with _FROZEN_LOCK:
        entry = _FROZEN.get(key)
        if entry is None:
            flags = [(p, p.requires_grad) for p in module.parameters()]
            for p, _ in flags:
                p.requires_grad_(False)
            entry = _FROZEN[key] = [0, flags]
        entry[0] += 1
    try:
        yield
    finally:
        with _FROZEN_LOCK:
            entry[0] -= 1
            if entry[0] == 0:
                del _FROZEN[key]
                for p, flag in entry[1]:
                    p.requires_grad_(flag)
