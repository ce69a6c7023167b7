"""Batch sizing, out-of-memory retries and non-finite values in attribution."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from tiny import tiny_gpt2, tiny_records

import peap_widget as pw
from peap_widget.engine.attribution import NonFiniteError
from peap_widget.runtime.memory import attribution_bytes, auto_batch_size, chunk_bytes, is_out_of_memory

HERE = os.path.dirname(os.path.abspath(__file__))


def _setup(**kw):
    hf, tok = tiny_gpt2(**kw)
    model = pw.load_model(hf, tokenizer=tok)
    return model, pw.Dataset.from_records(tiny_records(), model)


def test_auto_batch_size_follows_the_budget_and_the_estimate():
    model, ds = _setup()
    T = max(ex.length for ex in ds.examples)
    per = attribution_bytes(model, T)
    assert auto_batch_size(model, ds, budget=3 * per + 1) == 3
    assert auto_batch_size(model, ds, budget=1) == 1                 # never below one example
    assert auto_batch_size(model, ds, budget=10**15) == len(ds)      # never above the data
    # the estimate grows with the prompt, and PEAP's crossing temporaries cost extra
    assert attribution_bytes(model, 2 * T) > 2 * per
    assert attribution_bytes(model, T, positional=False) < per
    assert chunk_bytes("cpu") == 16 * 2**20


def test_auto_batches_give_the_same_scores():
    model, ds = _setup()
    auto = pw.attribute(model, ds, progress=False)                   # batch_size="auto" default
    whole = pw.attribute(model, ds, batch_size=None, progress=False)
    assert isinstance(auto.settings["batch_size"], int) and auto.settings["batch_size"] >= 1
    assert np.abs(auto.scores - whole.scores).max() <= 1e-12 * np.abs(whole.scores).max()
    with pytest.raises(pw.PeapError, match="batch_size"):
        pw.attribute(model, ds, batch_size=0, progress=False)


def test_out_of_memory_halves_the_batch_and_retries():
    """A real allocator failure: the child lowers its address-space limit so that the whole
    dataset cannot be one batch (tests/oom_child.py)."""
    proc = subprocess.run([sys.executable, os.path.join(HERE, "oom_child.py")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["error"] is None, report
    assert report["warnings"] and "retrying with 32" in report["warnings"][0], report
    assert report["batch_size"] < 65
    # float32: another batch shape rounds differently (measured up to 8e-6 of the scale)
    assert report["max_abs_diff"] <= 1e-4 * report["scale"], report


def test_is_out_of_memory_recognises_allocator_errors():
    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))


def test_a_nan_weight_is_named_not_scored():
    model, ds = _setup()
    hf = model.hf
    d, dh = hf.config.n_embd, hf.config.n_embd // hf.config.n_head
    with torch.no_grad():                       # one entry of head 1's W_V in layer 0
        hf.transformer.h[0].attn.c_attn.weight[3, 2 * d + dh + 1] = float("nan")
    with pytest.raises(NonFiniteError) as err:
        pw.attribute(model, ds, batch_size=2, progress=False)
    msg = str(err.value)
    assert "examples 0-1" in msg and "a0.h1 in the clean run" in msg, msg
    assert isinstance(err.value, pw.PeapError)


def test_an_inf_only_in_the_counterfactual_is_named():
    model, ds = _setup()
    tok = model.tokenizer
    # 'Kate' is in example 0's corrupted prompt but not in its clean one
    assert "Kate" in tiny_records()[0]["corrupted"] and "Kate" not in tiny_records()[0]["clean"]
    with torch.no_grad():
        model.hf.transformer.wte.weight[tok.convert_tokens_to_ids("Kate")] = float("inf")
    with pytest.raises(NonFiniteError, match=r"examples 0-0: NaN or inf in input in the ablation source"):
        pw.attribute(model, ds, batch_size=1, progress=False)
