"""PEAP / EAP cost relative to a bare forward + forward + backward, measured in one run.

A GPT-2-small-shaped model (12 layers, 12 heads, d=768, vocab 50,257, random weights; with
``--arch llama`` a Llama-architecture model of the same size: 12 query / 4 key-value heads, RoPE,
RMSNorm, SwiGLU with width 2048, untied unembedding) on IOI-length prompts (16-24 tokens, 6 spans) with counterfactuals, one batch. For each mode a fresh
subprocess loads the model, warms up once, times ``--reps`` runs (median) and reports its peak
resident memory, so the memory figures don't mix:

    baseline  plain PyTorch: counterfactual forward (no grad) + clean forward + backward of the
              logit difference to the embeddings (parameters frozen: no weight gradients, the
              same work attribution needs)
    peap      pw.attribute(method="peap") on the same batch
    eap       pw.attribute(method="eap")  on the same batch

Usage: python bench/bench_attribution.py [--arch gpt2|llama] [--batch 32] [--reps 3]
                                         [--device cpu|cuda] [--dtype float32]
Prints a table and writes bench/out/attribution.json (attribution-llama.json for Llama). Not a test: the ratios are what to read.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from report import write_report

N_WORDS = 50257 - 4  # with the 4 special tokens: GPT-2's vocabulary size


def build(args):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    import peap_widget as pw
    from peap_widget.data.tokenizer import word_level_tokenizer

    torch.manual_seed(0)
    tok = word_level_tokenizer(f"w{i}" for i in range(N_WORDS))
    if args.arch == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=768, intermediate_size=2048,
                          num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=4,
                          max_position_embeddings=128, tie_word_embeddings=False)
        hf = LlamaForCausalLM(cfg)
    else:
        cfg = GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=768, n_layer=12, n_head=12)
        hf = GPT2LMHeadModel(cfg)
    hf = hf.eval().to(getattr(torch, args.dtype)).to(args.device)
    model = pw.load_model(hf, tokenizer=tok)
    g = torch.Generator().manual_seed(1)
    records = []
    for _ in range(args.batch):
        n = int(torch.randint(16, 25, (1,), generator=g))
        words = torch.randint(0, N_WORDS, (2, n), generator=g)
        cuts = sorted(torch.randperm(n - 2, generator=g)[:4].add(1).tolist())  # 5 spans + END
        bounds = [0, *cuts, n - 1, n]
        spans = {f"s{i}": [bounds[i], bounds[i + 1]] for i in range(len(bounds) - 1)}
        records.append({"clean": " ".join(f"w{i}" for i in words[0].tolist()),
                        "corrupted": " ".join(f"w{i}" for i in words[1].tolist()),
                        "correct": "w1", "incorrect": "w2", "spans": spans})
    ds = pw.Dataset.from_records(records, model)
    return model, ds


def baseline_step(model, ds):
    import torch

    from peap_widget.engine.metrics import last_token_logits, logit_diff

    (batch,) = list(ds.batches(None, device=model.device))
    hf = model.hf
    with torch.no_grad():
        hf(batch.corrupted_ids)
    emb = hf.get_input_embeddings()(batch.clean_ids).detach().requires_grad_(True)
    logits = hf(inputs_embeds=emb).logits
    m = logit_diff(last_token_logits(logits, batch.lengths), batch.correct, batch.incorrect)
    m.sum().backward()
    return emb.grad


def run_mode(args) -> dict:
    import torch

    import peap_widget as pw
    from peap_widget.runtime.grad import frozen_parameters

    model, ds = build(args)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    if args.mode == "baseline":
        def step():
            with frozen_parameters(model.hf):
                baseline_step(model, ds)
    else:
        def step():
            pw.attribute(model, ds, method=args.mode, batch_size=args.batch, progress=False)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    step()  # warm-up
    times = []
    for _ in range(args.reps):
        sync()
        t = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t)
    out = {"mode": args.mode, "median_s": statistics.median(times), "times_s": times,
           "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "rss_before_mib": rss0 / 1024}
    if args.device.startswith("cuda"):
        out["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="gpt2", choices=("gpt2", "llama"))
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--mode", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.mode:
        print(json.dumps(run_mode(args)))
        return
    import torch

    results = {}
    for mode in ("baseline", "peap", "eap"):
        cmd = [sys.executable, __file__, "--mode", mode, "--arch", args.arch, "--batch", str(args.batch),
               "--reps", str(args.reps), "--device", args.device, "--dtype", args.dtype]
        line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        results[mode] = json.loads(line)
        print(f"  {mode:8s} median {results[mode]['median_s']:.3f} s  peak RSS "
              f"{results[mode]['peak_rss_mib']:.0f} MiB", flush=True)
    base = results["baseline"]["median_s"]
    summary = {
        "arch": args.arch, "device": args.device, "dtype": args.dtype, "batch": args.batch,
        "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "peap_ratio": results["peap"]["median_s"] / base,
        "eap_ratio": results["eap"]["median_s"] / base,
        "results": results,
    }
    print(f"PEAP / bare fwd+fwd+bwd = {summary['peap_ratio']:.2f}x   "
          f"EAP / bare = {summary['eap_ratio']:.2f}x   ({args.arch}, batch {args.batch}, "
          f"{args.device}, {args.dtype})")
    for mode in ("peap", "eap"):
        extra = results[mode]["peak_rss_mib"] - results["baseline"]["peak_rss_mib"]
        print(f"{mode.upper()} peak RSS {results[mode]['peak_rss_mib']:.0f} MiB "
              f"({extra:+.0f} MiB over the baseline process)"
              + (f", peak CUDA {results[mode]['peak_cuda_mib']:.0f} MiB vs "
                 f"{results['baseline']['peak_cuda_mib']:.0f}" if "peak_cuda_mib" in results[mode] else ""))
    write_report("attribution" if args.arch == "gpt2" else f"attribution-{args.arch}", summary)


if __name__ == "__main__":
    main()
