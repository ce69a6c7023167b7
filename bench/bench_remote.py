"""What a remote (NDIF) attribution sends back per request, against a per-position transfer.

Two parts, in one run:

1. Measured: PEAP on the shipped toy-ioi model (counterfactual ablation, batches of 8) through
   nnsight's remote serialization (``remote="local"``: each job pickled, shipped by value with
   the package's modules hidden, run, and its result returned as from a server). Reports the
   requests, the bytes each returned (``model.remote_log``), seconds per request, and the ratio
   to the plain local run's time.
2. Computed from the graph's shape, for GPT-2 small, Llama-3-8B and Llama-3.1-70B with an
   8-span schema, 8 prompts of 20 tokens per request: the bytes one request returns (the float32
   residual scores over the edge mask [S, edges] + crossing table [3, L, H, S, S]) against what a
   client would need to form the same scores itself from per-position values (every forward
   node's z* - z and every slot's input gradient, [B, T, (nodes + slots), d_model] in bf16).

    python bench/bench_remote.py            # writes bench/out/remote.json

Not a test.
"""

from __future__ import annotations

import time

from report import write_report

SHAPES = {   # name: (layers, query heads, d_model)
    "gpt2-small": (12, 12, 768),
    "llama-3-8b": (32, 32, 4096),
    "llama-3.1-70b": (80, 64, 8192),
}


def measured(n: int = 64, batch: int = 8) -> dict:
    import peap_widget as pw

    model = pw.models.load("toy-ioi")
    ds = pw.tasks.get("ioi", n=n, seed=0).dataset(model)
    t0 = time.perf_counter()
    local = pw.attribute(model, ds, batch_size=batch, progress=False)
    t_local = time.perf_counter() - t0
    model.remote = "local"
    t0 = time.perf_counter()
    far = pw.attribute(model, ds, batch_size=batch, progress=False)
    t_far = time.perf_counter() - t0
    log = [e for e in model.remote_log if e["job"] == "attribute_batches"]
    diff = float(abs(far.edges.score.to_numpy() - local.edges.score.to_numpy()).max())
    return {"model": "toy-ioi", "examples": n, "batch_size": batch, "requests": len(log),
            "bytes_back_per_request": [e["bytes_back"] for e in log],
            "seconds_per_request": [round(e["seconds"], 4) for e in log],
            "dry_run_over_local_time": round(t_far / t_local, 3),
            "max_abs_score_difference": diff}


def computed(spans: int = 8, batch: int = 8, tokens: int = 20) -> dict:
    from peap_widget.graph.space import Graph, GraphConfig

    out = {}
    for name, (L, H, D) in SHAPES.items():
        g = Graph(GraphConfig(n_layers=L, n_heads=H, d_model=D))
        edges = int(g.edge_mask.sum())
        back = 4 * (spans * edges + 3 * L * H * spans * spans)   # float32: a bf16 model's compute dtype
        per_position = 2 * batch * tokens * (g.n_forward + g.n_backward) * D
        out[name] = {"edges_per_span": edges, "bytes_back_per_request": back,
                     "per_position_bytes": per_position,
                     "ratio": round(per_position / back, 1)}
    return out


def main() -> None:
    result = {"measured": measured(), "computed": computed()}
    m = result["measured"]
    print(f"toy-ioi, {m['examples']} prompts in {m['requests']} requests: "
          f"{m['bytes_back_per_request'][0]:,} bytes back per request, dry run / local time "
          f"{m['dry_run_over_local_time']}x, max |score difference| {m['max_abs_score_difference']:.2g}")
    for name, row in result["computed"].items():
        print(f"{name:>14}: {row['bytes_back_per_request'] / 2**20:10.1f} MiB back per request vs "
              f"{row['per_position_bytes'] / 2**20:10.1f} MiB per position ({row['ratio']}x less)")
    write_report("remote", result)


if __name__ == "__main__":
    main()
