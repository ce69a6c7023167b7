"""The ``peap`` command line (also ``python -m peap_widget``)."""

from __future__ import annotations

import argparse
import sys
import tempfile


def _demo(args) -> int:
    import torch

    import peap_widget as pw
    from peap_widget.examples import tiny_gpt2, tiny_records

    hf, tok = tiny_gpt2(n_layer=args.layers, n_head=args.heads, d_model=args.d_model,
                        dtype=torch.float32, seed=args.seed)
    with tempfile.TemporaryDirectory() as d:
        # Round trip through disk so the demo uses the real loading code.
        hf.save_pretrained(d)
        tok.save_pretrained(d)
        model = pw.load_model(d)
    ds = pw.Dataset.from_records(tiny_records(), model)
    print(f"model: {model}")
    print(f"data:  {ds}")
    res = pw.attribute(model, ds, method=args.method, ablation=args.ablation,
                       progress=not args.quiet)
    print(res)
    import pandas as pd

    with pd.option_context("display.width", 120, "display.max_columns", 10):
        print(f"\ntop {args.top} edges by |score|:")
        print(res.top(args.top).to_string(index=False))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from peap_widget import __version__

    p = argparse.ArgumentParser(prog="peap", description="Position-aware circuit discovery.")
    p.add_argument("--version", action="version", version=f"peap_widget {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="PEAP on the small built-in example; prints the top edges")
    demo.add_argument("--method", default="peap", choices=["peap", "eap"])
    demo.add_argument("--ablation", default="counterfactual", choices=["counterfactual", "mean", "zero"])
    demo.add_argument("--top", type=int, default=15)
    demo.add_argument("--layers", type=int, default=2)
    demo.add_argument("--heads", type=int, default=4)
    demo.add_argument("--d-model", type=int, default=32)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(run=_demo)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
