"""Architecture adapters: one per model family, chosen by the HF model's class name."""

from __future__ import annotations

from ..errors import UnsupportedArchitectureError
from .base import Adapter, AttentionRead, FinalRead, MlpRead
from .gpt2 import GPT2Adapter

ADAPTERS: tuple[type[Adapter], ...] = (GPT2Adapter,)


def supported_architectures() -> list[str]:
    return [name for a in ADAPTERS for name in a.hf_classes]


def adapter_for(hf_model) -> Adapter:
    """The adapter for ``hf_model``; raises `UnsupportedArchitectureError` naming it and the
    supported ones."""
    name = type(hf_model).__name__
    for a in ADAPTERS:
        if name in a.hf_classes:
            return a(hf_model)
    raise UnsupportedArchitectureError(
        f"no adapter for architecture {name!r}; supported: {', '.join(supported_architectures())}")


__all__ = ["Adapter", "AttentionRead", "FinalRead", "MlpRead", "GPT2Adapter", "adapter_for",
           "supported_architectures"]
