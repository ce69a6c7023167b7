"""The ``peap`` command line (also ``python -m peap_widget``).

    peap demo [--model toy-ioi-llama] [--out DIR]  a shipped IOI model, PEAP and EAP side by side
    peap discover --model M --task T --out DIR  the main job on any model and task
    peap models | peap tasks                    what ships with the package
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _load_model(name: str, device=None, dtype=None, remote: bool = False):
    import peap_widget as pw
    from peap_widget.errors import PeapError

    if name in pw.models.names() and not remote:
        return pw.models.load(name, device=device, dtype=dtype)
    try:
        return pw.load_model(name, device=device, dtype=dtype, remote=remote)
    except PeapError:
        raise
    except Exception as err:  # a hub miss, a broken folder...
        where = "a local directory" if Path(name).exists() else "a Hugging Face name (offline?)"
        raise PeapError(f"cannot load model {name!r} as {where}: {type(err).__name__}: {err}. "
                        f"Shipped models: {pw.models.names()}") from None


def _load_task(name: str, n: int, seed: int):
    import peap_widget as pw

    if Path(name).suffix in (".jsonl", ".csv"):
        return pw.tasks.from_file(name)
    return pw.tasks.get(name, n=n, seed=seed)


def _discover(args) -> int:
    from peap_widget.app.discover import parse_sizes, run_discovery

    sizes = parse_sizes(args.sizes)
    methods = ["peap", "eap"] if args.method == "both" else [args.method]
    model = _load_model(args.model, args.device, args.dtype, args.remote)
    task = _load_task(args.task, args.n * 2, args.seed)
    summary = run_discovery(model, task, args.out, methods=methods, ablation=args.ablation,
                            sizes=sizes, n_discovery=args.n if Path(args.task).suffix == "" else None,
                            n_edges=args.edges, table_format=args.format, batch_size=args.batch_size,
                            progress=not args.quiet, result_format=args.result_format)
    _print_summary(summary, methods, args.out)
    return 0


def _print_summary(summary: dict, methods, out) -> None:
    print(f"\n{summary['task']} on {summary['model']} ({summary['ablation']} ablation, "
          f"{summary['discovery_examples']} discovery / {summary['evaluation_examples']} evaluation examples)")
    if "clean_accuracy" in summary:
        print(f"  model accuracy (logit diff > 0): {summary['clean_accuracy']:.3f}, "
              f"clean metric {summary['clean_metric']:.3f}, ablated {summary['ablated_metric']:.3f}")
    if summary.get("task_warning"):
        print(f"  WARNING: {summary['task_warning']}")
    refused = summary.get("faithfulness_refused")
    if refused:
        print(f"  {refused}")
    num = lambda v, f=".3f": "-" if v is None else format(v, f)  # noqa: E731
    for m in methods:
        edges = f"{summary[f'{m}_circuit_edges']} edges"
        if refused:
            print(f"  {m.upper():5s} faithfulness, CPR and CMD not computed; circuit written: "
                  f"{edges} (the largest curve size)")
            continue
        e8, e95 = summary[f"{m}_edges_for_0.8"], summary[f"{m}_edges_for_0.95"]
        r8, r95 = summary[f"{m}_real_edges_for_0.8"], summary[f"{m}_real_edges_for_0.95"]
        reach = lambda e, r: ("not reached" if e is None  # noqa: E731
                              else f"{e} ({num(r, '.0f')} real per example)")
        print(f"  {m.upper():5s} edges for f>=0.8: {reach(e8, r8)}, f>=0.95: {reach(e95, r95)}; "
              f"CPR {num(summary[f'{m}_cpr'])}, CMD {num(summary[f'{m}_cmd'])}; "
              f"circuit written: {edges}, f={num(summary[f'{m}_circuit_faithfulness'])}")
    print(f"  wrote {out}/: report.html, faithfulness.png/.csv, edges_*, circuit_*, result_*, "
          f"summary.json ({summary['seconds']:.1f} s)")


DEMO_MODELS = ("toy-ioi", "toy-ioi-llama")


def _demo(args) -> int:
    import peap_widget as pw
    from peap_widget.analysis.curves import DISCOVERY_SIZES
    from peap_widget.app.discover import run_discovery

    model = pw.models.load(args.model)
    task = pw.tasks.get("ioi", n=2 * args.n, order="both", seed=12345)
    summary = run_discovery(model, task, args.out, methods=("peap", "eap"), sizes=DISCOVERY_SIZES,
                            n_discovery=args.n, progress=not args.quiet,
                            title=f"peap demo: {args.model}, PEAP vs EAP")
    _print_summary(summary, ["peap", "eap"], args.out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from peap_widget import __version__
    from peap_widget.analysis.curves import DISCOVERY_SIZES

    p = argparse.ArgumentParser(prog="peap", description="Position-aware circuit discovery.")
    p.add_argument("--version", action="version", version=f"peap_widget {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="the whole job on a shipped IOI model, PEAP vs EAP")
    demo.add_argument("--model", default="toy-ioi", choices=DEMO_MODELS,
                      help="toy-ioi (GPT-2 architecture, default) or toy-ioi-llama (Llama: GQA, RoPE)")
    demo.add_argument("--out", default="peap_demo", help="output folder (default ./peap_demo)")
    demo.add_argument("--n", type=int, default=200, help="discovery examples (as many for evaluation)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(run=_demo)

    d = sub.add_parser("discover", help="attribute, find circuits, measure faithfulness, write a report")
    d.add_argument("--model", required=True, help="shipped model name, HF name or local directory")
    d.add_argument("--task", required=True, help="built-in task (ioi, greater-than) or a .jsonl/.csv file")
    d.add_argument("--method", default="peap",
                   choices=["peap", "eap", "both", "eap-ig", "peap-ig", "eap-ig-activations"],
                   help="both = peap and eap; the *-ig methods integrate over 5 path points")
    d.add_argument("--ablation", default="counterfactual", choices=["counterfactual", "mean", "zero"])
    d.add_argument("--sizes", default=",".join(str(s) for s in DISCOVERY_SIZES),
                   help="circuit sizes, comma-separated: fractions of the graph with a point or %% "
                        "(0.5, 50%%, 1.0 = the whole graph) or whole edge counts (200)")
    d.add_argument("--edges", type=int, default=None,
                   help="size of the written circuit (default: smallest with faithfulness >= 0.8)")
    d.add_argument("--n", type=int, default=200, help="discovery examples for a built-in task (as many for evaluation)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", required=True, help="output folder")
    d.add_argument("--format", default="csv", choices=["csv", "parquet"], help="edge table format")
    d.add_argument("--result-format", default="json.gz", choices=["json.gz", "npz"],
                   help="result file format (npz: compact binary, for big graphs)")
    d.add_argument("--batch-size", type=int, default=64)
    d.add_argument("--device", default=None)
    d.add_argument("--remote", action="store_true",
                   help="run on NDIF (nnsight remote=True): set NDIF_API_KEY; the host is "
                        "nnsight's configured one (see docs/ndif.md)")
    d.add_argument("--dtype", default=None)
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    d.set_defaults(run=_discover)

    m = sub.add_parser("models", help="list the shipped models")
    m.set_defaults(run=lambda a: print("\n".join(__import__("peap_widget").models.names())) or 0)
    t = sub.add_parser("tasks", help="list the built-in tasks")
    t.set_defaults(run=lambda a: print("\n".join(__import__("peap_widget").tasks.names())) or 0)
    return p


def main(argv=None) -> int:
    from peap_widget.errors import PeapError

    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except PeapError as err:
        print(f"peap: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
