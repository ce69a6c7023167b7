"""Circuit search and evaluation cost, measured in one run.

- toy-ioi (the shipped model, 4 layers, 4 heads, d=64) on 200 IOI prompts: seconds per
  re-evaluation of an edited circuit through a cached `Evaluator` (what the widget does live).
- gpt2-small shape (12 layers, 12 heads, d=768, random weights) on 32 IOI-length prompts:
  greedy search time over the positional graph, and one circuit evaluation divided by a bare
  clean forward of the same batch.

Usage: python bench/bench_evaluate.py [--reps 5]. Writes bench/out/evaluate.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from report import write_report

sys.path.insert(0, str(Path(__file__).parent))


def timed(fn, reps):
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    import torch

    import peap_widget as pw

    p = argparse.ArgumentParser()
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args()
    out = {}

    model = pw.models.load("toy-ioi")
    ds = pw.tasks.get("ioi", n=200, order="both", seed=7).dataset(model)
    res = pw.attribute(model, ds, progress=False)
    ev = pw.Evaluator(model, ds)
    circ = res.circuit(n_edges=1000)

    def edit_and_run():
        circ.remove_edge(int(circ.edges.index[0]))
        ev.run(circ)
        circ.undo()

    out["toy_ioi_edit_eval_s"] = timed(edit_and_run, args.reps)
    print(f"toy-ioi, 200 prompts: edit + re-evaluate one circuit {out['toy_ioi_edit_eval_s'] * 1e3:.1f} ms")

    from bench_attribution import build

    model, ds = build(argparse.Namespace(batch=32, device="cpu", dtype="float32"))
    res = pw.attribute(model, ds, progress=False)
    t = time.perf_counter()
    circ = res.circuit(n_edges=1000)
    out["gpt2_greedy_first_s"] = time.perf_counter() - t
    out["gpt2_greedy_cached_s"] = timed(lambda: res.circuit(n_edges=2000), args.reps)
    out["gpt2_edges"] = len(res.edges)
    ev = pw.Evaluator(model, ds)
    out["gpt2_eval_s"] = timed(lambda: ev.run(circ), args.reps)
    (batch,) = list(ds.batches(None))
    with torch.no_grad():
        out["gpt2_forward_s"] = timed(lambda: model.hf(batch.clean_ids), args.reps)
    out["gpt2_eval_ratio"] = out["gpt2_eval_s"] / out["gpt2_forward_s"]
    print(f"gpt2-small shape, {out['gpt2_edges']} positional edges: greedy order "
          f"{out['gpt2_greedy_first_s']:.2f} s first, {out['gpt2_greedy_cached_s'] * 1e3:.0f} ms after; "
          f"evaluation {out['gpt2_eval_s']:.2f} s = {out['gpt2_eval_ratio']:.2f}x a bare forward")
    write_report("evaluate", out)


if __name__ == "__main__":
    main()
