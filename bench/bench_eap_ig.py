"""EAP-IG on the shipped toy-ioi model: its cost relative to EAP and how the methods agree.

On 200 IOI prompts (``pw.tasks.get("ioi", n=200)``, counterfactual ablation, logit difference),
one run times ``eap`` and ``eap-ig`` (``--steps``, default 5), both after a warm-up on a few
examples, and prints the ratio; then the Spearman rank correlations between PEAP, EAP, EAP-IG and
PEAP-IG scores. PEAP-family tables have more rows than EAP's, so they are compared on the
residual edges summed over spans (their EAP-shaped form, which for PEAP equals EAP exactly) and,
PEAP vs PEAP-IG, on the full positional table too.

Usage: python bench/bench_eap_ig.py [--n 200] [--steps 5] [--batch auto]
Not a test: the numbers are what to read.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = pd.Series(a).rank().to_numpy(), pd.Series(b).rank().to_numpy()
    return float(np.corrcoef(ra, rb)[0, 1])


def eap_shaped(edges: pd.DataFrame) -> pd.Series:
    """Residual edges summed over spans, indexed by (src, dst)."""
    r = edges[edges.kind == "resid"]
    return r.groupby(["src", "dst"])["score"].sum()


def main() -> None:
    import peap_widget as pw

    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch", default="auto")
    args = p.parse_args()
    batch = args.batch if args.batch == "auto" else int(args.batch)

    model = pw.models.load("toy-ioi")
    ds = pw.tasks.get("ioi", n=args.n).dataset(model)
    warm = pw.tasks.get("ioi", n=4, seed=1).dataset(model)
    runs, seconds = {}, {}
    for method in ("eap", "eap-ig", "peap", "peap-ig"):
        pw.attribute(model, warm, method=method, steps=args.steps, progress=False)
        t0 = time.perf_counter()
        runs[method] = pw.attribute(model, ds, method=method, steps=args.steps,
                                    batch_size=batch, progress=False)
        seconds[method] = time.perf_counter() - t0
    print(f"toy-ioi, {len(ds)} IOI prompts, steps={args.steps}, batch={batch}")
    for m, s in seconds.items():
        print(f"  {m:8s} {s:7.2f} s")
    print(f"  time eap-ig / eap   = {seconds['eap-ig'] / seconds['eap']:.2f}")
    print(f"  time peap-ig / peap = {seconds['peap-ig'] / seconds['peap']:.2f}")

    flat = {m: eap_shaped(r.edges) for m, r in runs.items()}
    names = list(flat)
    idx = flat["eap"].index
    print("Spearman, residual edges summed over spans (n = %d):" % len(idx))
    print("          " + " ".join(f"{m:>8s}" for m in names))
    for a in names:
        print(f"  {a:8s}" + " ".join(f"{spearman(flat[a][idx].to_numpy(), flat[b][idx].to_numpy()):8.3f}"
                                  for b in names))
    print("Spearman of |score| (the ranking circuit search uses):")
    for a in names:
        print(f"  {a:8s}" + " ".join(
            f"{spearman(flat[a][idx].abs().to_numpy(), flat[b][idx].abs().to_numpy()):8.3f}"
            for b in names))
    key = ["kind", "src", "dst", "src_span", "dst_span"]
    both = runs["peap"].edges.merge(runs["peap-ig"].edges, on=key)
    print(f"Spearman PEAP vs PEAP-IG, full positional table ({len(both)} edges): "
          f"{spearman(both.score_x.to_numpy(), both.score_y.to_numpy()):.3f}, of |score| "
          f"{spearman(both.score_x.abs().to_numpy(), both.score_y.abs().to_numpy()):.3f}")
    for kind in ("resid", "q", "k", "v"):
        part = both[both.kind == kind]
        print(f"  {kind:5s} ({len(part):6d} edges): "
              f"{spearman(part.score_x.to_numpy(), part.score_y.to_numpy()):.3f}")


if __name__ == "__main__":
    main()
