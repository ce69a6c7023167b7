"""Loading a model for attribution: the HF model, its tokenizer, an nnsight wrapper, an adapter."""

from __future__ import annotations

import threading
import warnings
from contextlib import nullcontext
from pathlib import Path

import torch

from .arch import Adapter, adapter_for
from .errors import PeapError
from .graph import Graph

_DTYPES = {"float32": torch.float32, "float": torch.float32, "fp32": torch.float32,
           "float64": torch.float64, "double": torch.float64, "fp64": torch.float64,
           "float16": torch.float16, "half": torch.float16, "fp16": torch.float16,
           "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


class Model:
    """A model ready for `attribute`: ``nn`` (nnsight ``TransformersModel``), ``hf`` (the HF
    module), ``tokenizer``, ``adapter`` (architecture access), ``graph`` (node/edge names) and
    ``remote`` (run traces on NDIF) and ``lock``.

    ``lock`` (a `threading.RLock`) is held by every nnsight trace the package runs on this model
    (attribution per batch, ablation source runs, an `Evaluator`'s construction and each of its
    runs, the heads' span attention), so a notebook cell and a widget's evaluation in another
    thread never interleave inside the model; hold it yourself around your own traces
    (``with model.lock: ...``). It is re-entrant: the package's own nested uses are fine."""

    def __init__(self, nn, hf, tokenizer, adapter: Adapter, remote: bool = False, name: str = ""):
        self.nn = nn
        self.hf = hf
        self.tokenizer = tokenizer
        self.adapter = adapter
        self.remote = remote
        self.name = name or getattr(hf.config, "_name_or_path", "") or type(hf).__name__
        self.graph = Graph(adapter.config)
        self.lock = threading.RLock()

    @property
    def device(self) -> torch.device:
        return next(self.hf.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.hf.parameters()).dtype

    def __repr__(self) -> str:
        c = self.adapter.config
        return (f"Model({self.name!r}, family={self.adapter.family}, layers={c.n_layers}, "
                f"heads={c.n_heads}, d_model={c.d_model}, device={self.device}, dtype={self.dtype}"
                f"{', remote' if self.remote else ''})")


def model_lock(model):
    """``model.lock``, or a no-op context for a model-like object without one."""
    lock = getattr(model, "lock", None)
    return nullcontext() if lock is None else lock


def _resolve_dtype(dtype):
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype.removeprefix("torch.") in _DTYPES:
        return _DTYPES[dtype.removeprefix("torch.")]
    raise PeapError(f"unknown dtype {dtype!r}; use a torch.dtype or one of {sorted(_DTYPES)}")


_GENERIC_TOKENIZERS = ("TokenizersBackend", "PreTrainedTokenizerFast")


def _declared_tokenizer(name: str):
    """A local directory whose tokenizer_config.json declares the generic tokenizers backend
    gets exactly that: AutoTokenizer otherwise maps some model types (qwen2...) to their own
    tokenizer class whatever the checkpoint declares, which would encode every prompt wrong."""
    import json

    config = Path(name) / "tokenizer_config.json"
    if not config.is_file():
        return None
    try:
        declared = json.loads(config.read_text()).get("tokenizer_class")
    except (OSError, ValueError):
        return None
    if declared not in _GENERIC_TOKENIZERS:
        return None
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(name)


def load_model(name_or_hf_model, tokenizer=None, device=None, dtype=None, remote: bool = False) -> Model:
    """Load a causal LM for attribution.

    Args:
        name_or_hf_model: a Hugging Face model name, a local directory saved with
            ``save_pretrained`` (loaded with the real ``from_pretrained``), or an in-memory
            ``transformers`` model (then ``tokenizer`` is required).
        tokenizer: a tokenizer object, or None to load the one saved with the model.
        device: where to put the weights (``"cpu"``, ``"cuda:0"``...); None keeps them where
            they are (CPU for a fresh load).
        dtype: ``torch.float32``, ``"bfloat16"``... None keeps the checkpoint's / model's dtype.
        remote: run every trace on NDIF (nnsight ``remote=True``); weights stay remote.

    The model is put in eval mode (no dropout). Raises `UnsupportedArchitectureError` for an
    architecture without an adapter, naming the supported ones.

    Example:
        >>> model = load_model("gpt2")                                # doctest: +SKIP
        >>> model = load_model("./my_model_dir", dtype="float64")     # doctest: +SKIP
        >>> model = load_model(hf_model, tokenizer=tok)               # doctest: +SKIP
    """
    from nnsight.modeling.transformers import TransformersModel

    dtype = _resolve_dtype(dtype)
    if isinstance(name_or_hf_model, (str, Path)):
        name = str(name_or_hf_model)
        if remote:
            if device is not None:
                warnings.warn("device is ignored with remote=True: NDIF places the model",
                              stacklevel=2)
            kwargs = {} if dtype is None else {"dtype": dtype}
            nn = TransformersModel(name, tokenizer=tokenizer, **kwargs)
            hf = nn._module
            adapter = adapter_for(hf)
            return Model(nn, hf, nn.tokenizer, adapter, remote=True, name=name)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        kwargs = {} if dtype is None else {"dtype": dtype}
        hf = AutoModelForCausalLM.from_pretrained(name, **kwargs)
        if tokenizer is None:
            tokenizer = _declared_tokenizer(name) or AutoTokenizer.from_pretrained(name)
    else:
        hf = name_or_hf_model
        name = getattr(getattr(hf, "config", None), "_name_or_path", "") or type(hf).__name__
        if not isinstance(hf, torch.nn.Module):
            raise PeapError(f"load_model takes a model name, a directory or a transformers model, "
                            f"got {type(hf).__name__}")
        if tokenizer is None:
            raise PeapError("an in-memory model needs its tokenizer: load_model(model, tokenizer=tok)")
        if remote:
            raise PeapError("remote=True needs a model name that NDIF serves, not an in-memory model")
        if dtype is not None:
            hf = hf.to(dtype)
    adapter = adapter_for(hf)
    if device is not None:
        hf = hf.to(device)
    hf.eval()
    nn = TransformersModel(hf, tokenizer=tokenizer)
    return Model(nn, hf, tokenizer, adapter, remote=False, name=name)
