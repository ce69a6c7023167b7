"""How many examples fit in one attribution batch, and what to do when they did not.

`auto_batch_size` sizes a batch from a documented per-example estimate (`attribution_bytes`)
and the memory free on the model's device; `is_out_of_memory` recognises an allocation failure
(CUDA's `OutOfMemoryError`, the CPU allocator's error, `MemoryError`) so that attribution can
halve the batch and retry instead of killing the kernel.

Example:
    >>> model = pw.models.load("toy-ioi")
    >>> ds = pw.tasks.get("ioi", n=4, seed=0).dataset(model)
    >>> auto_batch_size(model, ds, positional=True)          # at most the dataset's size
    4
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch

from ..data.dataset import Dataset

if TYPE_CHECKING:
    from .model import Model

# Fraction of the free memory one batch may plan for: the estimate is rough, the allocator
# fragments, and the rest of the process (the notebook, other tensors) needs room too.
BUDGET_FRACTION = 0.5
# Slot gradients and per-position edge values are formed a few examples at a time. On CPU,
# chunks of this size stay in the allocator's reused heap and in cache (whole-batch tensors were
# fresh pages on every call, and page faults cost more than the arithmetic). On a GPU a chunk is
# a share of free memory, so an 8B-model example (about 32 MB of slot gradients) is not alone.
CPU_CHUNK_BYTES = 16 * 2**20
GPU_CHUNK_SHARE = 1 / 16
GPU_CHUNK_BYTES = (64 * 2**20, 2 * 2**30)


def free_bytes(device: torch.device | str) -> int:
    """Memory free for new tensors on ``device``: CUDA's free memory plus what PyTorch's cache
    holds unused; on CPU the available physical memory (Linux), else 4 GiB."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 4 * 2**30


def chunk_bytes(device: torch.device | str) -> int:
    """Size of the chunks slot gradients and per-position edge values are formed in."""
    device = torch.device(device)
    if device.type != "cuda":
        return CPU_CHUNK_BYTES
    lo, hi = GPU_CHUNK_BYTES
    return int(min(hi, max(lo, free_bytes(device) * GPU_CHUNK_SHARE)))


def attribution_bytes(model: Model, T: int, positional: bool = True) -> int:
    """Estimated peak bytes one example of ``T`` tokens adds to an attribution batch.

    Per token: the z* - z differences of every forward node (n_forward x d_model, compute
    dtype); per layer the activations the model keeps for its backward pass (about 8 d_model
    plus 3 MLP widths), the values the engine reads and their gradients (about 18 d_model:
    norm inputs, q/k/v, head outputs, MLP output, in the clean and the ablation run); the
    logits and their gradient. Per query-key pair and head: the attention scores and pattern
    kept for backward and, for PEAP, about 20 [T, T] temporaries of the crossing closed form
    (one layer at a time).
    """
    ad = model.adapter
    cfg = ad.config
    L, H, D = cfg.n_layers, cfg.n_heads, cfg.d_model
    m = torch.finfo(model.dtype).bits // 8
    c = 8 if model.dtype == torch.float64 else 4
    hf_cfg = model.hf.config
    d_mlp = (getattr(hf_cfg, "intermediate_size", None) or getattr(hf_cfg, "n_inner", None)
             or 4 * D)
    vocab = getattr(hf_cfg, "vocab_size", 0) or 0
    n_forward = model.graph.n_forward
    per_token = n_forward * D * c + L * (8 * D + 3 * d_mlp) * m + L * 18 * D * c + 2 * vocab * c
    per_pair = L * 2 * H * m + (20 * H * c if positional else 0)
    return int(T * per_token + T * T * per_pair)


#: The memory a remote (NDIF) request may plan for: the server's free memory is not known here,
#: so half of an 80 GB card, on top of the weights, is assumed.
REMOTE_BUDGET = 40 * 2 ** 30


def auto_batch_size(model: Model, ds: Dataset, positional: bool = True,
                    budget: int | None = None) -> int:
    """The largest batch whose estimated peak (`attribution_bytes` at the dataset's longest
    prompt) fits in ``budget`` bytes (default: half the memory free on the model's device);
    at least 1, at most the dataset."""
    if budget is None:
        budget = (REMOTE_BUDGET if getattr(model, "remote", False)
                  else int(free_bytes(model.device) * BUDGET_FRACTION))
    T = max((ex.length for ex in ds.examples), default=1)
    per_example = max(1, attribution_bytes(model, T, positional))
    return int(max(1, min(len(ds), budget // per_example)))


def is_out_of_memory(err: BaseException) -> bool:
    """True for an allocation failure on any device."""
    if isinstance(err, MemoryError):
        return True
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(err, oom):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("out of memory" in text.lower()
                                              or "can't allocate memory" in text)
