"""PEAP on a Llama-3-8B-shaped model: wall time, peak memory and the ratio to a bare run.

Random bf16 weights in Llama-3-8B's shape (32 layers, 32 query / 8 key-value heads, d 4096, MLP
14336, vocab 128,256, Llama-3 rope scaling), 500 IOI-length prompts (16-24 tokens, 6 spans) with
counterfactuals, ``batch_size="auto"``. Reports the PEAP wall time for all prompts, the bare
counterfactual forward + clean forward + backward over the same batches, their ratio, the batch
size picked, and peak device memory. Meant for one GPU (the H200 the device tool lends); the
shape options let it run small on a CPU as a check of the script itself:

    python bench/bench_llama8b.py                                 # on cuda, the 8B shape
    python bench/bench_llama8b.py --device cpu --layers 2 --d-model 256 --heads 8 --kv-heads 2 \\
        --d-mlp 512 --vocab 4096 --n 16                           # a CPU smoke run

Writes bench/out/llama8b.json. Not a test.
"""

from __future__ import annotations

import argparse
import os
import time

from report import write_report


def build(args):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    import peap_widget as pw
    from peap_widget.data.tokenizer import word_level_tokenizer

    tok = word_level_tokenizer(f"w{i}" for i in range(args.vocab - 4))
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=args.d_model, intermediate_size=args.d_mlp,
        num_hidden_layers=args.layers, num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads, max_position_embeddings=131072,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192},
        tie_word_embeddings=False)
    torch.manual_seed(0)
    with torch.device(args.device):
        hf = LlamaForCausalLM(cfg).to(getattr(torch, args.dtype)).eval()
    model = pw.load_model(hf, tokenizer=tok)
    g = torch.Generator().manual_seed(1)
    records = []
    for _ in range(args.n):
        n = int(torch.randint(16, 25, (1,), generator=g))
        words = torch.randint(0, args.vocab - 4, (2, n), generator=g)
        cuts = sorted(torch.randperm(n - 2, generator=g)[:4].add(1).tolist())
        bounds = [0, *cuts, n - 1, n]
        records.append({"clean": " ".join(f"w{i}" for i in words[0].tolist()),
                        "corrupted": " ".join(f"w{i}" for i in words[1].tolist()),
                        "correct": "w1", "incorrect": "w2",
                        "spans": {f"s{i}": [bounds[i], bounds[i + 1]]
                                  for i in range(len(bounds) - 1)}})
    return model, pw.Dataset.from_records(records, model)


def bare(model, ds, batch_size: int) -> None:
    """Counterfactual forward (no grad) + clean forward + backward to the embeddings, per batch."""
    import torch

    from peap_widget.runtime.grad import frozen_parameters
    from peap_widget.engine.metrics import last_token_logits, logit_diff

    hf = model.hf
    with frozen_parameters(hf):
        for batch in ds.batches(batch_size, device=model.device):
            with torch.no_grad():
                hf(batch.corrupted_ids)
            emb = hf.get_input_embeddings()(batch.clean_ids).detach().requires_grad_(True)
            logits = hf(inputs_embeds=emb).logits
            logit_diff(last_token_logits(logits, batch.lengths), batch.correct,
                       batch.incorrect).sum().backward()


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--d-model", type=int, default=4096)
    p.add_argument("--d-mlp", type=int, default=14336)
    p.add_argument("--vocab", type=int, default=128256)
    args = p.parse_args()

    import torch

    import peap_widget as pw

    cuda = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    t0 = time.perf_counter()
    model, ds = build(args)
    load_s = time.perf_counter() - t0
    print(f"built {model} and {len(ds)} prompts in {load_s:.1f} s", flush=True)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    sync()
    t = time.perf_counter()
    res = pw.attribute(model, ds, method="peap", progress=True)
    sync()
    peap_s = time.perf_counter() - t
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    size = res.settings["batch_size"]
    sync()
    t = time.perf_counter()
    bare(model, ds, size)
    sync()
    bare_s = time.perf_counter() - t
    out = {"shape": vars(args), "prompts": len(ds), "batch_size": size, "build_s": load_s,
           "peap_s": peap_s, "bare_s": bare_s, "ratio": peap_s / bare_s,
           "peak_cuda_gib": peak, "edges": len(res.scores), "cpus": os.cpu_count(),
           "device_name": torch.cuda.get_device_name() if cuda else "cpu"}
    print(f"PEAP {peap_s:.1f} s for {len(ds)} prompts (batch {size}); bare {bare_s:.1f} s; "
          f"ratio {out['ratio']:.2f}x" + (f"; peak {peak:.1f} GiB" if peak else ""))
    write_report("llama8b", out)


if __name__ == "__main__":
    main()
