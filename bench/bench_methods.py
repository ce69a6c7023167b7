"""Every circuit-discovery method of peap_widget against each other, in one run (issue 15's note).

Measures, and prints as one compact table (also bench/out/methods.json):

1. **Agreement with exact patching** on toy-ioi (shipped, 4 layers x 4 heads; ``--n`` IOI prompts,
   order "both", seed 0; counterfactual ablation; logit difference). Spearman correlation, of the
   signed scores and of |score|, of PEAP, EAP, EAP-IG and PEAP-IG (``--steps``, default 5) with
   exact single-edge patching (`pw.exact_scores`); also Pearson, and the signed Spearman over
   the 200 rows of largest |exact score| (the thousands of near-zero rows dominate the
   all-rows rank correlation):
   - PEAP, PEAP-IG: against exact *positional* patching, every row of the positional table.
   - EAP, EAP-IG (position-free graph, one span ``all``): (a) against exact patching on the EAP
     graph (``positional=False``), row for row; (b) against the exact positional scores summed
     over spans: EAP row ``resid src -> dst`` <-> the sum over spans s of the positional rows
     ``resid src@s -> dst@s`` (`bench_eap_ig.eap_shaped`). Crossing q/k/v rows have no EAP row
     (in the EAP graph a head's q/k/v -> output step is inside the node) and are left out.
   The exact scores take minutes: they are cached in bench/out/methods_exact_*.npz (``--fresh``
   recomputes them).
2. **Edges needed for faithfulness 0.8**: for each ranking (PEAP, EAP, EAP-IG, PEAP-IG, exact
   positional, scored on the prompts above), the smallest greedy circuit, q/k/v merged as
   ``res.circuit(n_edges=...)`` counts them, whose faithfulness on *held-out* prompts (``--n``
   IOI prompts, seed 1, one `pw.Evaluator`) reaches 0.8: doubling from 1, then bisection
   (faithfulness is nearly, not strictly, monotone in size, so this is the bisection's answer).
3. **ACDC vs greedy PEAP** (logit-difference criterion, ``--tau``, default 0.1, on the scoring
   prompts): ACDC's circuit size and seconds; greedy PEAP's smallest size reaching ACDC's
   faithfulness (q/k/v apart, `bench_acdc.smallest_size`, as bench_acdc measures it) and its
   seconds (attribution + the evaluations of the size search). Sizes are given both as rows
   (q/k/v apart) and q/k/v merged.
4. **AUROC on induction-groundtruth** (the hand-built model, 64 records of `make_records`,
   counterfactual ablation): `pw.roc_curve` of |score| against the true edges
   (`groundtruth.true_edge_mask`) for PEAP, PEAP-IG, exact positional on the positional table,
   and for EAP, EAP-IG, exact EAP-graph on the EAP table against the truth collapsed over
   positions (`collapsed_truth`). ACDC (same tau, positional) gives one point: its precision and
   recall (`pw.overlap`).

Run: ``OMP_NUM_THREADS=1 python bench/bench_methods.py [--n 50] [--steps 5] [--tau 0.1] [--fresh]``.
Not a test: no number here is asserted; the printed table is what to read.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_acdc import smallest_size, spearman  # noqa: E402
from bench_eap_ig import eap_shaped  # noqa: E402
from report import OUT, write_report  # noqa: E402

TARGET = 0.8


# --- scores -----------------------------------------------------------------------------------

def attribute_all(pw, model, ds, steps: int) -> tuple[dict, dict]:
    """PEAP, EAP, EAP-IG, PEAP-IG results on ``ds`` and their seconds."""
    res, secs = {}, {}
    for name, method in (("PEAP", "peap"), ("EAP", "eap"), ("EAP-IG", "eap-ig"),
                         ("PEAP-IG", "peap-ig")):
        t = time.perf_counter()
        res[name] = pw.attribute(model, ds, method=method, steps=steps, progress=False)
        secs[name] = time.perf_counter() - t
    return res, secs


def cached_exact(pw, model, ds, ev, positional: bool, tag: str, fresh: bool):
    """`pw.exact_scores` on ``ds``, read from bench/out/methods_exact_<tag>.npz unless ``fresh``."""
    path = OUT / f"methods_exact_{tag}.npz"
    if path.exists() and not fresh:
        res = pw.AttributionResult.load(path)
        print(f"exact {tag}: cached ({res.settings.get('seconds', float('nan')):.0f} s when computed)",
              flush=True)
        return res
    res = pw.exact_scores(model, ds, positional=positional, evaluator=ev, progress=False)
    OUT.mkdir(exist_ok=True)
    res.save(path)
    return res


# --- 1. agreement with exact patching ---------------------------------------------------------

TOP = 200   # rows with the largest |exact score|: where the ranking that matters lives


def compare(s: np.ndarray, e: np.ndarray) -> dict:
    """Spearman of signed scores and of |score| over all rows; Pearson; Spearman of the signed
    scores over the `TOP` rows with the largest |exact score| ``e``."""
    top = np.argsort(-np.abs(e), kind="stable")[:TOP]
    return {"signed": spearman(s, e), "abs": spearman(np.abs(s), np.abs(e)),
            "pearson": float(np.corrcoef(s, e)[0, 1]), f"top{TOP}": spearman(s[top], e[top])}


def agreement(res: dict, ex_pos, ex_eap) -> dict:
    """Each method against the exact scores (see the module docstring), as `compare` gives."""
    out = {}
    for name in ("PEAP", "PEAP-IG"):
        out[name] = {"vs exact positional": compare(res[name].scores, ex_pos.scores)}
    summed = eap_shaped(ex_pos.edges)
    for name in ("EAP", "EAP-IG"):
        flat = eap_shaped(res[name].edges)
        if len(flat) != len(res[name].scores):
            raise RuntimeError(f"{name}: EAP table has non-residual rows; the mapping assumes none")
        ref = summed.reindex(flat.index)
        if ref.isna().any():
            raise RuntimeError(f"{name}: {int(ref.isna().sum())} EAP rows have no positional rows")
        out[name] = {"vs exact EAP graph": compare(res[name].scores, ex_eap.scores),
                     "vs exact positional summed": compare(flat.to_numpy(), ref.to_numpy())}
    return out


# --- 2. edges for faithfulness 0.8 ------------------------------------------------------------

def smallest_merged(ev, res, target: float) -> dict:
    """Smallest greedy size, q/k/v merged (``res.circuit(n_edges=n)``), whose faithfulness on
    ``ev`` reaches ``target``: doubling from 1, then bisection. None when the full order does
    not reach it."""
    total = res.greedy_order_length(True)
    seen = {}

    def f(n):
        if n not in seen:
            seen[n] = ev.run(res.circuit(n_edges=n)).faithfulness
        return seen[n]

    n = 1
    while n < total and f(n) < target:
        n *= 2
    n = min(n, total)
    if f(n) < target:
        return {"edges": None, "faithfulness": f(n), "evaluations": len(seen), "of": total}
    lo, hi = max(1, n // 2), n
    while lo < hi:
        mid = (lo + hi) // 2
        if f(mid) >= target:
            hi = mid
        else:
            lo = mid + 1
    return {"edges": lo, "rows": res.circuit(n_edges=lo).n_rows, "faithfulness": f(lo),
            "evaluations": len(seen), "of": total}


# --- 3. ACDC vs greedy PEAP -------------------------------------------------------------------

def acdc_vs_greedy(pw, model, ds, ev, ev_held, peap, t_peap: float, tau: float) -> dict:
    """ACDC (logit difference, ``tau``) and greedy PEAP at ACDC's faithfulness on ``ds``."""
    circ = pw.acdc(model, ds, tau=tau, metric="logit_diff", progress=False, evaluator=ev)
    fa = ev.run(circ).faithfulness
    t = time.perf_counter()
    g, gfa, runs = smallest_size(ev, peap, fa)
    t_greedy = t_peap + time.perf_counter() - t
    merged = lambda c: peap.circuit_from(c.in_rows, merge_qkv=True).n_edges  # noqa: E731
    return {"tau": tau, "acdc_rows": circ.n_rows, "acdc_edges": merged(circ),
            "acdc_faithfulness": fa, "acdc_faithfulness_held_out": ev_held.run(circ).faithfulness,
            "acdc_seconds": circ.settings["seconds"], "acdc_passes": circ.settings["passes"],
            "greedy_rows": g.n_rows, "greedy_edges": merged(g), "greedy_faithfulness": gfa,
            "greedy_seconds": t_greedy, "greedy_evaluations": len(runs)}


# --- 4. AUROC on induction-groundtruth --------------------------------------------------------

def collapsed_truth(eap_edges, gt) -> np.ndarray:
    """Truth on the position-free (EAP) table: row ``resid src -> dst`` (span ``all``) is true
    iff some true positional edge is ``resid src@s -> dst@s`` at any span s. True crossing edges
    (a head's q/k/v at key span -> its output at query span) have no EAP row: in the EAP graph
    that step is inside the head, and the residual edges into its q/k/v slots carry it."""
    pairs = {(src, dst) for kind, src, dst, _, _ in gt.TRUE_EDGES if kind == "resid"}
    return np.array([(k == "resid" and (s, d) in pairs)
                     for k, s, d in zip(eap_edges.kind, eap_edges.src, eap_edges.dst)])


def groundtruth_auroc(pw, steps: int, tau: float, fresh: bool) -> dict:
    """AUROC of every ranking and ACDC's precision / recall on induction-groundtruth."""
    from peap_widget.models import groundtruth as gt

    model = pw.models.load("induction-groundtruth")
    ds = pw.Dataset.from_records(gt.make_records(64), model)
    ev = pw.Evaluator(model, ds)
    res, _ = attribute_all(pw, model, ds, steps)
    res["exact positional"] = cached_exact(pw, model, ds, ev, True, "gt_positional", fresh)
    res["exact EAP graph"] = cached_exact(pw, model, ds, ev, False, "gt_eap", fresh)
    pos_truth = gt.true_edge_mask(res["PEAP"].edges)
    flat_truth = collapsed_truth(res["EAP"].edges, gt)
    example = res["EAP"].edges[flat_truth][["src", "dst"]].values.tolist()
    print(f"groundtruth: {pos_truth.sum()} true of {len(pos_truth)} positional rows; collapsed: "
          f"{flat_truth.sum()} true of {len(flat_truth)} EAP rows: {example}", flush=True)
    out = {}
    for name, r in res.items():
        positional = len(r.scores) == len(pos_truth)
        truth = pos_truth if positional else flat_truth
        roc = pw.roc_curve(r, truth)
        out[name] = {"auroc": roc.auroc, "table": "positional" if positional else "EAP (collapsed)",
                     "n_true": int(truth.sum()), "n_rows": len(truth),
                     **{f"top{int(truth.sum())}_" + k: v
                        for k, v in roc.precision_recall(int(truth.sum())).items()}}
    circ = pw.acdc(model, ds, tau=tau, metric="logit_diff", progress=False, evaluator=ev)
    out["ACDC"] = {"table": "positional", **pw.overlap(circ, pos_truth), "rows": circ.n_rows,
                   "tau": tau, "n_true": int(pos_truth.sum())}
    return out


# --- table ------------------------------------------------------------------------------------

def fmt(x, spec=".3f") -> str:
    return "-" if x is None else format(x, spec)


def pair(v) -> str:
    """Spearman signed, of |.|; Pearson; Spearman over the top rows (see `compare`)."""
    return "-" if v is None else f"{v['signed']:.3f} {v['abs']:.3f} {v['pearson']:.3f} {v[f'top{TOP}']:.3f}"


def print_table(out: dict) -> None:
    """The compact table the note quotes."""
    a, need, gtr = out["spearman"], out["faithfulness_0.8"], out["groundtruth"]
    print(f"\ntoy-ioi, {out['n']} scoring + {out['n']} held-out IOI prompts, steps={out['steps']}; "
          f"clean logit diff {out['clean_metric']:.2f}, empty {out['empty_metric']:.3f}")
    print(f"vs exact patching: Spearman signed, Spearman |.|, Pearson, Spearman over the {TOP} "
          "rows of largest |exact|")
    print(f"{'method':17s} {'same graph':>23s}  {'positional, summed':>23s}  {'edges@0.8':>9s} "
          f"{'rows':>5s} {'faith':>6s}  {'AUROC gt':>8s}")
    for name in ("PEAP", "EAP", "EAP-IG", "PEAP-IG", "exact positional", "exact EAP graph"):
        same = a.get(name, {}).get("vs exact positional") or a.get(name, {}).get("vs exact EAP graph")
        summed = a.get(name, {}).get("vs exact positional summed")
        n = need.get(name, {})
        print(f"{name:17s} {pair(same):>23s}  {pair(summed):>23s}  {fmt(n.get('edges'), 'd'):>9s} "
              f"{fmt(n.get('rows'), 'd'):>5s} {fmt(n.get('faithfulness')):>6s}  "
              f"{gtr[name]['auroc']:8.3f}")
    c = out["acdc_vs_greedy"]
    print(f"\nACDC (logit diff, tau={c['tau']}): {c['acdc_edges']} edges ({c['acdc_rows']} rows), "
          f"faithfulness {c['acdc_faithfulness']:.3f} (held-out {c['acdc_faithfulness_held_out']:.3f}), "
          f"{c['acdc_seconds']:.0f} s, {c['acdc_passes']} passes")
    print(f"greedy PEAP at that faithfulness: {c['greedy_edges']} edges ({c['greedy_rows']} rows), "
          f"faithfulness {c['greedy_faithfulness']:.3f}, {c['greedy_seconds']:.1f} s "
          f"({c['greedy_evaluations']} evaluations)")
    g = gtr["ACDC"]
    print(f"ACDC on induction-groundtruth (tau={g['tau']}): {g['rows']} rows, precision "
          f"{g['precision']:.3f}, recall {g['recall']:.3f} ({g['n_true']} true edges)")
    print(f"exact scores: positional {out['seconds']['exact positional']:.0f} s, EAP graph "
          f"{out['seconds']['exact EAP graph']:.0f} s (as computed, possibly cached); "
          f"this run {out['seconds']['total']:.0f} s")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--tau", type=float, default=0.1, help="ACDC's logit-difference tau")
    ap.add_argument("--fresh", action="store_true", help="recompute the cached exact scores")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()

    import torch

    import peap_widget as pw

    torch.manual_seed(0)
    model = pw.models.load("toy-ioi")
    ds = pw.tasks.get("ioi", n=args.n, order="both", seed=0).dataset(model)
    held = pw.tasks.get("ioi", n=args.n, order="both", seed=1).dataset(model)
    ev, ev_held = pw.Evaluator(model, ds), pw.Evaluator(model, held)
    res, secs = attribute_all(pw, model, ds, args.steps)
    tag = f"ioi{args.n}"
    ex_pos = cached_exact(pw, model, ds, ev, True, f"{tag}_positional", args.fresh)
    ex_eap = cached_exact(pw, model, ds, ev, False, f"{tag}_eap", args.fresh)
    secs["exact positional"] = ex_pos.settings.get("seconds")
    secs["exact EAP graph"] = ex_eap.settings.get("seconds")
    out = {"model": "toy-ioi", "n": len(ds), "steps": args.steps,
           "clean_metric": ev.clean_metric, "empty_metric": ev.empty_metric,
           "held_out_clean_metric": ev_held.clean_metric, "threads": torch.get_num_threads()}
    out["spearman"] = agreement(res, ex_pos, ex_eap)
    print("spearman done", flush=True)
    out["faithfulness_0.8"] = {name: smallest_merged(ev_held, r, TARGET)
                               for name, r in {**res, "exact positional": ex_pos}.items()}
    print("faithfulness search done", flush=True)
    out["acdc_vs_greedy"] = acdc_vs_greedy(pw, model, ds, ev, ev_held, res["PEAP"],
                                           secs["PEAP"], args.tau)
    print("acdc done", flush=True)
    out["groundtruth"] = groundtruth_auroc(pw, args.steps, args.tau, args.fresh)
    secs["total"] = time.perf_counter() - t0
    out["seconds"] = secs
    path = write_report("methods", out)
    print_table(out)
    print("wrote", path)


if __name__ == "__main__":
    sys.exit(main())
