"""ACDC vs greedy PEAP, and how well PEAP / EAP rank edges against exact patching, on toy-ioi.

- toy-ioi (shipped, 4 layers x 4 heads, d=64), ``n`` IOI prompts (default 50, order "both"),
  counterfactual ablation, logit difference.
- Exact single-edge patching scores (`pw.exact_scores`) on the positional graph and on the EAP
  graph (every edge, no subset needed at this size); Spearman correlation of PEAP with the
  positional exact scores and of EAP with the EAP-graph exact scores, over every row (and over
  the rows whose receiver reaches the last token, where exact scores are not 0 by structure).
- ACDC (`pw.acdc`, KL criterion and logit-difference criterion) at a few taus: circuit size
  (rows, q/k/v apart), faithfulness, seconds; greedy PEAP (q/k/v apart too) at the smallest
  size reaching the same faithfulness, with its seconds (attribution + the evaluations of the
  size search).
- Edges each ranking needs for faithfulness 0.8 (greedy, q/k/v apart).

Run: ``python bench/bench_acdc.py [--n 50]``; writes bench/out/bench_acdc.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def spearman(a, b) -> float:
    import pandas as pd

    ra = pd.Series(np.asarray(a, dtype=float)).rank().to_numpy()
    rb = pd.Series(np.asarray(b, dtype=float)).rank().to_numpy()
    return float(np.corrcoef(ra, rb)[0, 1])


def smallest_size(ev, res, target, hi=None):
    """Smallest greedy size (rows, q/k/v apart) whose faithfulness reaches ``target`` (a
    doubling search, then bisection; faithfulness is nearly monotone in size), and the
    evaluations it took."""
    runs = []

    def f(n):
        circ = res.circuit(n_edges=n, merge_qkv=False)
        out = ev.run(circ)
        runs.append((n, circ.n_rows, out.faithfulness))
        return out.faithfulness, circ

    n, total = 1, hi or len(res.scores)
    while n < total and f(n)[0] < target:
        n *= 2
    lo, hi = max(1, n // 2), min(n, total)
    while lo < hi:
        mid = (lo + hi) // 2
        if f(mid)[0] >= target:
            hi = mid
        else:
            lo = mid + 1
    fa, circ = f(lo)
    return circ, fa, runs


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--taus-kl", type=float, nargs="*", default=[1e-3, 1e-2])
    ap.add_argument("--taus-ld", type=float, nargs="*", default=[0.05, 0.2])
    ap.add_argument("--no-exact", action="store_true",
                    help="skip exact patching (the ACDC comparison only)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "out" / "bench_acdc.json"))
    args = ap.parse_args(argv)

    import torch

    import peap_widget as pw
    from peap_widget.analysis.acdc import acdc
    from peap_widget.analysis.exact import exact_scores

    torch.manual_seed(0)
    model = pw.models.load("toy-ioi")
    ds = pw.tasks.get("ioi", n=args.n, order="both", seed=0).dataset(model)
    ev = pw.Evaluator(model, ds)
    out = {"model": "toy-ioi", "n_examples": len(ds), "clean_metric": ev.clean_metric,
           "empty_metric": ev.empty_metric, "threads": torch.get_num_threads()}

    t = time.perf_counter()
    peap = pw.attribute(model, ds, method="peap", progress=False)
    t_peap = time.perf_counter() - t
    t = time.perf_counter()
    eap = pw.attribute(model, ds, method="eap", progress=False)
    t_eap = time.perf_counter() - t
    if not args.no_exact:
        ex_pos = exact_scores(model, ds, positional=True, evaluator=ev)
        ex_eap = exact_scores(model, ds, positional=False, evaluator=ev)
        sp = ex_pos.space
        live = sp.root_reachable[sp.child]
        out["seconds"] = {"peap": t_peap, "eap": t_eap,
                          "exact_positional": ex_pos.settings["seconds"],
                          "exact_positional_estimate": ex_pos.settings["estimated_seconds"],
                          "exact_eap": ex_eap.settings["seconds"]}
        out["rows"] = {"positional": len(sp), "positional_live": int(live.sum()),
                       "eap": len(ex_eap.space)}
        out["spearman"] = {
            "peap_vs_exact_positional": spearman(peap.scores, ex_pos.scores),
            "peap_vs_exact_positional_live_rows": spearman(peap.scores[live], ex_pos.scores[live]),
            "abs_peap_vs_abs_exact_positional": spearman(np.abs(peap.scores),
                                                         np.abs(ex_pos.scores)),
            "eap_vs_exact_eap_graph": spearman(eap.scores, ex_eap.scores),
            "abs_eap_vs_abs_exact_eap_graph": spearman(np.abs(eap.scores), np.abs(ex_eap.scores)),
        }
        print(json.dumps({k: out[k] for k in ("seconds", "rows", "spearman")}, indent=1),
              flush=True)

        need = {}
        for name, res in [("peap", peap), ("eap", eap), ("exact_positional", ex_pos),
                          ("exact_eap", ex_eap)]:
            circ, fa, runs = smallest_size(ev, res, 0.8)
            need[name] = {"rows": circ.n_rows, "faithfulness": fa, "evaluations": len(runs)}
        out["rows_for_faithfulness_0.8"] = need
        print(json.dumps(need, indent=1), flush=True)

    acdc_rows = []
    for metric, taus in (("kl", args.taus_kl), ("logit_diff", args.taus_ld)):
        for tau in taus:
            circ = acdc(model, ds, tau=tau, metric=metric, progress=False, evaluator=ev)
            fa = ev.run(circ).faithfulness
            t = time.perf_counter()
            g, gfa, runs = smallest_size(ev, peap, fa)
            t_greedy = t_peap + time.perf_counter() - t
            row = {"criterion": metric, "tau": tau, "acdc_rows": circ.n_rows,
                   "acdc_faithfulness": fa, "acdc_seconds": circ.settings["seconds"],
                   "acdc_passes": circ.settings["passes"], "greedy_peap_rows": g.n_rows,
                   "greedy_peap_faithfulness": gfa, "greedy_peap_seconds": t_greedy,
                   "greedy_evaluations": len(runs)}
            acdc_rows.append(row)
            print(json.dumps(row), flush=True)
    out["acdc_vs_greedy_peap"] = acdc_rows
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print("wrote", args.out)


if __name__ == "__main__":
    sys.exit(main())
