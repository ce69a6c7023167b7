"""Architecture adapters: one shared `Adapter` over a `Family` declaration per model family,
chosen by the HF config's ``model_type`` (so checkpoints of a family under other class names
load too).

Example:
    >>> supported_families()["llama"]
    ('llama',)
"""

from __future__ import annotations

import torch

from ..errors import UnsupportedArchitectureError
from .base import Adapter, AttentionRead, FinalRead, MlpRead
from .families import FAMILIES
from .family import Family


def supported_families() -> dict[str, tuple[str, ...]]:
    """{family name: the HF ``model_type`` values it serves}."""
    return {f.name: f.model_types for f in FAMILIES}


def supported_architectures() -> list[str]:
    """The supported ``model_type`` values."""
    return [t for f in FAMILIES for t in f.model_types]


def family_for(hf_model: torch.nn.Module) -> Family:
    model_type = getattr(getattr(hf_model, "config", None), "model_type", None)
    for f in FAMILIES:
        if model_type in f.model_types:
            return f
    known = ", ".join(f"{f.name} ({'/'.join(f.model_types)})" for f in FAMILIES)
    raise UnsupportedArchitectureError(
        f"no adapter for {type(hf_model).__name__} (model_type {model_type!r}); supported "
        f"families (model_type): {known}")


def adapter_for(hf_model: torch.nn.Module) -> Adapter:
    """The adapter for ``hf_model``; raises `UnsupportedArchitectureError` naming its type and
    the supported families."""
    return Adapter(hf_model, family_for(hf_model))


__all__ = ["Adapter", "AttentionRead", "FinalRead", "Family", "MlpRead", "adapter_for",
           "family_for", "supported_architectures", "supported_families"]
