"""Loading a model for attribution: the HF model, its tokenizer, an nnsight wrapper, an adapter."""

from __future__ import annotations

import threading
import warnings
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch

from ..arch import Adapter, adapter_for
from ..errors import PeapError
from ..graph.space import Graph

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

    def __init__(self, nn: Any, hf: torch.nn.Module, tokenizer: Any, adapter: Adapter,
                 remote: bool = False, name: str = ""):
        self.nn = nn
        self.hf = hf
        self.tokenizer = tokenizer
        self.adapter = adapter
        self.remote = remote
        self.name = name or getattr(hf.config, "_name_or_path", "") or type(hf).__name__
        self.graph = Graph(adapter.config)
        self.lock = threading.RLock()
        #: one entry per remote request: job, seconds, bytes that came back (peap_widget.runtime.remote)
        self.remote_log: list[dict] = []
        #: whether `peap_widget.runtime.remote.prepare` has tagged the modules with their ids
        self.modules_tagged = False

    def __getstate__(self) -> dict:
        # A model travels with every remote request (its modules by nnsight's persistent ids,
        # see peap_widget.runtime.remote); a lock does not pickle, and the far side gets its own.
        # On the far side the model is local: its jobs' traces run there, never remote again.
        state = self.__dict__.copy()
        del state["lock"]
        state["remote"], state["remote_log"] = False, []
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.lock = threading.RLock()

    @property
    def device(self) -> torch.device:
        """Where the model's tensors are, and so where batches and results are kept: the CPU
        for a remote model (its local copy holds no weights; results come back here)."""
        if self.remote:
            return torch.device("cpu")
        return next(self.hf.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.hf.parameters()).dtype

    def __repr__(self) -> str:
        c = self.adapter.config
        return (f"Model({self.name!r}, family={self.adapter.family}, layers={c.n_layers}, "
                f"heads={c.n_heads}, d_model={c.d_model}, device={self.device}, dtype={self.dtype}"
                f"{', remote' if self.remote else ''})")


def model_lock(model: Model) -> AbstractContextManager:
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


def load_model(name_or_hf_model: str | torch.nn.Module, tokenizer: Any | None = None,
               device: torch.device | str | None = None, dtype: torch.dtype | str | None = None,
               remote: bool | str = False, device_map: str | dict | None = None) -> Model:
    """Load a causal LM for attribution.

    Args:
        name_or_hf_model: a Hugging Face model name, a local directory saved with
            ``save_pretrained`` (loaded with the real ``from_pretrained``), or an in-memory
            ``transformers`` model (then ``tokenizer`` is required).
        tokenizer: a tokenizer object, or None to load the one saved with the model.
        device: where to put the weights (``"cpu"``, ``"cuda:0"``...); None keeps them where
            they are (CPU for a fresh load).
        dtype: ``torch.float32``, ``"bfloat16"``... None keeps the checkpoint's / model's dtype.
        remote: ``True``: run every job on NDIF (nnsight ``remote=True``; the weights stay
            there, see `peap_widget.runtime.remote` and docs/ndif.md); set
            ``NDIF_API_KEY`` first. ``"local"``: load the model here but send every job through
            nnsight's serialization as a remote request would be (a dry run that needs no
            server). ``False`` (default): run here.
        device_map: passed to ``from_pretrained`` (``"auto"``: accelerate splits the layers
            over the GPUs, the CPU and disk); the engine keeps each layer's tensors where the
            layer is.

    The model is put in eval mode (no dropout). Raises `UnsupportedArchitectureError` for an
    architecture without an adapter, naming the supported ones.

    Example:
        >>> model = load_model("gpt2")                                # doctest: +SKIP
        >>> model = load_model("./my_model_dir", dtype="float64")     # doctest: +SKIP
        >>> from peap_widget.models.examples import tiny_gpt2
        >>> hf_model, tok = tiny_gpt2()
        >>> load_model(hf_model, tokenizer=tok)
        Model('GPT2LMHeadModel', family=gpt2, layers=2, heads=4, d_model=16, device=cpu,
              dtype=torch.float64)
        >>> model = load_model("meta-llama/Llama-3.1-70B", remote=True)  # doctest: +SKIP
    """
    from nnsight.modeling.transformers import TransformersModel

    if remote not in (False, True, "local"):
        raise PeapError(f"remote must be False, True or 'local', got {remote!r}")
    dtype = _resolve_dtype(dtype)
    if isinstance(name_or_hf_model, (str, Path)):
        name = str(name_or_hf_model)
        if tokenizer is None:
            from transformers import AutoTokenizer

            tokenizer = _declared_tokenizer(name) or AutoTokenizer.from_pretrained(name)
        if remote is True:
            return _load_remote(name, tokenizer, dtype, device, device_map)
        from transformers import AutoModelForCausalLM

        kwargs = {} if dtype is None else {"dtype": dtype}
        if device_map is not None:
            kwargs["device_map"] = device_map
        hf = AutoModelForCausalLM.from_pretrained(name, **kwargs)
    else:
        hf = name_or_hf_model
        name = getattr(getattr(hf, "config", None), "_name_or_path", "") or type(hf).__name__
        if not isinstance(hf, torch.nn.Module):
            raise PeapError(f"load_model takes a model name, a directory or a transformers model, "
                            f"got {type(hf).__name__}")
        if tokenizer is None:
            raise PeapError("an in-memory model needs its tokenizer: load_model(model, tokenizer=tok)")
        if remote is True:
            raise PeapError("remote=True needs a model name that NDIF serves, not an in-memory model")
        if device_map is not None:
            raise PeapError("device_map applies when loading by name; an in-memory model stays "
                            "where its layers are")
        if dtype is not None:
            hf = hf.to(dtype)
    adapter = adapter_for(hf)
    if device is not None:
        if device_map is not None:
            raise PeapError("give device or device_map, not both")
        hf = hf.to(device)
    hf.eval()
    nn = TransformersModel(hf, tokenizer=tokenizer)
    return Model(nn, hf, tokenizer, adapter, remote=remote, name=name)


#: The pipeline task NDIF deploys causal LMs under (part of nnsight's model key).
REMOTE_TASK = "text-generation"


def _load_remote(name: str, tokenizer, dtype, device, device_map) -> Model:
    """A model whose jobs run on NDIF: the client holds its meta skeleton (no weights)."""
    from nnsight.modeling.transformers import TransformersModel

    from . import remote as remote_jobs

    if device is not None or device_map is not None:
        warnings.warn("device and device_map are ignored with remote=True: NDIF places the model",
                      stacklevel=3)
    kwargs = {} if dtype is None else {"dtype": dtype}
    try:
        nn = TransformersModel(name, task=REMOTE_TASK, tokenizer=tokenizer, **kwargs)
    except Exception as err:  # noqa: BLE001 (a config that cannot be read names the model)
        raise PeapError(f"cannot read the configuration of {name!r} for a remote run: "
                        f"{type(err).__name__}: {err}") from None
    hf = nn._module
    model = Model(nn, hf, tokenizer, adapter_for(hf), remote=True, name=name)
    # The closed-form norm backward is checked against the norm modules' real weights: there.
    model.adapter.closed_form_norms = remote_jobs.run(model, _norms_match, model)
    return model


def _norms_match(model) -> bool:
    """Job: whether the family's closed-form norms reproduce the model's own norm modules."""
    return model.adapter.closed_form_norms_match()
