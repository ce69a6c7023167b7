"""Small models that ship with the package, so everything runs offline on a laptop.

    >>> model = pw.models.load("toy-ioi")      # a trained GPT-2-architecture model + tokenizer
    >>> pw.models.names()
    ['induction-groundtruth', 'toy-greater-than', 'toy-ioi', 'toy-ioi-llama']

Trained models are directories saved with ``save_pretrained`` (safetensors weights, config,
tokenizer, ``training_log.json``) and load through the same real code path as any HF model
(`peap_widget.load_model` -> ``AutoModelForCausalLM.from_pretrained``). Hand-built models are
constructed by code (their module documents the weights).
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path

from ..errors import PeapError

HERE = Path(__file__).parent

#: name -> (kind, what): "dir" models live in a folder here, "code" models are built by a function
REGISTRY = {
    "toy-ioi": ("dir", "toy-ioi"),
    "toy-ioi-llama": ("dir", "toy-ioi-llama"),
    "toy-greater-than": ("dir", "toy-greater-than"),
    "induction-groundtruth": ("code", "peap_widget.models.groundtruth:build"),
}


def names() -> list[str]:
    return sorted(REGISTRY)


def path(name: str) -> Path:
    """The directory of a shipped trained model (loadable with ``from_pretrained``)."""
    kind, what = _entry(name)
    if kind != "dir":
        raise PeapError(f"{name!r} is built by code and has no directory")
    d = HERE / what
    if not (d / "config.json").exists():
        raise PeapError(f"the weights of {name!r} are missing from {d}; rebuild them with "
                        f"python training/train_toy_models.py {name}")
    return d


def load(name: str, device=None, dtype=None):
    """A shipped model by name, ready for `peap_widget.attribute` (a `peap_widget.Model`)."""
    from ..runtime.model import load_model

    kind, what = _entry(name)
    if kind == "dir":
        model = load_model(str(path(name)), device=device, dtype=dtype)
    else:
        module, func = what.split(":")
        model = getattr(import_module(module), func)(device=device, dtype=dtype)
    model.name = name
    return model


def _entry(name: str):
    if name not in REGISTRY:
        raise PeapError(f"unknown model {name!r}; shipped models: {names()} "
                        "(or give a Hugging Face name or a local directory)")
    return REGISTRY[name]
