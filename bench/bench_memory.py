"""batch_size="auto" on long prompts: the batch it picks, its estimate against the measured peak.

A GPT-2-small-shaped model (12 layers, 12 heads, d=768, vocab 50,257, random weights) on
``--n`` prompts of ``--tokens`` tokens (64 x 128 asked for 3.7 GiB in one tensor and died with a
raw torch error when everything went in one batch). In a fresh subprocess: the batch
`auto_batch_size` picks, `attribution_bytes` per example, and the peak resident memory and time
of ``pw.attribute(batch_size="auto")``; then the same with ``--budget-gib`` forcing a smaller
batch, to compare the estimate with what one more example really costs.

Usage: python bench/bench_memory.py [--n 64] [--tokens 128] [--method peap]
Prints a table and writes bench/out/memory.json. Not a test.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

from report import write_report

N_WORDS = 50257 - 4


def run(args) -> dict:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    import peap_widget as pw
    from peap_widget.runtime.memory import attribution_bytes, auto_batch_size, free_bytes
    from peap_widget.data.tokenizer import word_level_tokenizer

    torch.manual_seed(0)
    tok = word_level_tokenizer(f"w{i}" for i in range(N_WORDS))
    cfg = GPT2Config(vocab_size=len(tok), n_positions=max(128, args.tokens), n_embd=768,
                     n_layer=12, n_head=12)
    model = pw.load_model(GPT2LMHeadModel(cfg).eval(), tokenizer=tok)
    g = torch.Generator().manual_seed(1)
    n, T = args.n, args.tokens
    records = []
    for _ in range(n):
        words = torch.randint(0, N_WORDS, (2, T), generator=g)
        cuts = sorted(torch.randperm(T - 2, generator=g)[:4].add(1).tolist())
        bounds = [0, *cuts, T - 1, T]
        records.append({"clean": " ".join(f"w{i}" for i in words[0].tolist()),
                        "corrupted": " ".join(f"w{i}" for i in words[1].tolist()),
                        "correct": "w1", "incorrect": "w2",
                        "spans": {f"s{i}": [bounds[i], bounds[i + 1]] for i in range(len(bounds) - 1)}})
    ds = pw.Dataset.from_records(records, model)
    positional = args.method == "peap"
    budget = None if args.budget_gib is None else int(args.budget_gib * 2**30)
    batch = auto_batch_size(model, ds, positional, budget=budget)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t = time.perf_counter()
    res = pw.attribute(model, ds, method=args.method,
                       batch_size="auto" if budget is None else batch, progress=False)
    return {"n": n, "tokens": T, "method": args.method, "free_bytes": free_bytes("cpu"),
            "budget_bytes": budget, "batch": batch, "used_batch": res.settings["batch_size"],
            "estimate_per_example": attribution_bytes(model, T, positional),
            "rss_before": rss0, "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "seconds": time.perf_counter() - t}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--method", default="peap")
    p.add_argument("--budget-gib", type=float, default=None)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(run(args)))
        return
    rows = []
    for budget in (None, 1.0):
        cmd = [sys.executable, __file__, "--child", "--n", str(args.n), "--tokens", str(args.tokens),
               "--method", args.method] + ([] if budget is None else ["--budget-gib", str(budget)])
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    gib = 2**30
    for r in rows:
        over = r["peak_rss"] - r["rss_before"]
        print(f"budget {'auto (half of free)' if r['budget_bytes'] is None else r['budget_bytes'] / gib:>20}"
              f"  batch {r['used_batch']:3d}  estimate {r['estimate_per_example'] / 2**20:6.0f} MiB/example"
              f" = {r['used_batch'] * r['estimate_per_example'] / gib:5.2f} GiB per batch;"
              f"  measured peak over the model {over / gib:5.2f} GiB;  {r['seconds']:.1f} s")
    a, b = rows
    if a["used_batch"] != b["used_batch"]:
        per = ((a["peak_rss"] - a["rss_before"]) - (b["peak_rss"] - b["rss_before"])) / (
            a["used_batch"] - b["used_batch"])
        print(f"measured cost of one more example: {per / 2**20:.0f} MiB "
              f"(estimate {a['estimate_per_example'] / 2**20:.0f} MiB)")
    write_report("memory", rows, indent=2)


if __name__ == "__main__":
    main()
