"""Run in a subprocess by test_batching.py: attribution under a real address-space limit.

Computes a reference with no limit, then lowers the soft RLIMIT_AS so that the requested batch
cannot be allocated (a real allocator failure, no mock), runs again and prints a JSON report."""

import json
import resource
import sys
import warnings

import torch

import peap_widget as pw
from peap_widget.models.examples import tiny_gpt2, tiny_records
from peap_widget.runtime.memory import attribution_bytes


def vm_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize")


def main():
    torch.set_num_threads(1)
    hf, tok = tiny_gpt2(n_layer=6, n_head=8, d_model=256, dtype=torch.float32)
    model = pw.load_model(hf, tokenizer=tok)
    ds = pw.Dataset.from_records(tiny_records() * 13, model)
    ref = pw.attribute(model, ds, batch_size=4, progress=False).scores
    T = max(ex.length for ex in ds.examples)
    per_example = attribution_bytes(model, T)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    # room for about 12 examples: the whole batch (65) cannot be allocated, a few halvings can
    resource.setrlimit(resource.RLIMIT_AS, (vm_bytes() + 12 * per_example, hard))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            res = pw.attribute(model, ds, batch_size=len(ds), progress=False)
            error = None
        except Exception as e:  # reported, the test fails on it
            res, error = None, f"{type(e).__name__}: {e}"
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    out = {"error": error, "per_example": per_example,
           "warnings": [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]}
    if res is not None:
        out["batch_size"] = res.settings["batch_size"]
        out["max_abs_diff"] = float(abs(res.scores - ref).max())
        out["scale"] = float(abs(ref).max())
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
