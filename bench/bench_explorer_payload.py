"""What a CircuitExplorer sends to the page, on an 8B model's graph shape without the model.

Builds an `AttributionResult` for a (layers x heads x spans) positional graph from random dense
scores (default 32 x 32 x 8, Llama-3-8B's graph: about 13 million edge-table rows), then

- constructs `pw.CircuitExplorer(res)` and reports the bytes of every synced trait (binary
  traits and JSON) and the construction time;
- answers the page's "more" requests: the next 250,000 units of the greedy order, and a
  |score| threshold below what the page holds, reporting the bytes and time of each answer.

Usage: python bench/bench_explorer_payload.py [--layers 32 --heads 32 --spans 8 --max-units N].
Writes bench/out/explorer_payload.json.
"""

from __future__ import annotations

import argparse
import json
import time

from report import write_report



def synced_bytes(widget) -> tuple[int, int]:
    """(bytes of the binary traits, bytes of the others as JSON) the page receives."""
    state = widget.get_state()
    binary = sum(len(v) for v in state.values() if isinstance(v, (bytes, bytearray, memoryview)))
    rest = {k: v for k, v in state.items() if not isinstance(v, (bytes, bytearray, memoryview))}
    return binary, len(json.dumps(rest, separators=(",", ":")))


def main():
    import peap_widget as pw

    p = argparse.ArgumentParser()
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--spans", type=int, default=8)
    p.add_argument("--max-units", type=int, default=None)
    args = p.parse_args()

    t = time.perf_counter()
    from peap_widget.models.examples import random_result

    res = random_result(args.layers, args.heads, args.spans)
    t_result = time.perf_counter() - t
    kw = {} if args.max_units is None else {"max_units": args.max_units}
    t = time.perf_counter()
    ex = pw.CircuitExplorer(res, **kw)
    t_explorer = time.perf_counter() - t
    binary, js = synced_bytes(ex)
    rows = len(res.space)
    report = {"graph": f"{args.layers} layers x {args.heads} heads x {args.spans} spans",
              "rows": rows, "units": ex.info["n_units"], "greedy_order_length": ex.info["n_order"],
              "result_seconds": round(t_result, 2), "explorer_seconds": round(t_explorer, 2),
              "shipped": ex.shipped, "sent_bytes": binary + js, "binary_bytes": binary,
              "json_bytes": js, "bytes_per_shipped_unit": round(binary / ex.shipped["units"], 2),
              # before: every row (29 bytes: ids, kind, score, src/dst and spans) plus the whole
              # greedy order (4 bytes a unit), as the explorer sent until the page held a part
              "bytes_if_everything_sent": 29 * rows + 4 * ex.info["n_order"] + js}

    sent = []
    ex.send = lambda content, buffers=None: sent.append((content, buffers or []))
    sh = ex.shipped
    have = {"order": sh["order"], "top": sh["top"], "units": sh["units"]}
    for name, ask in [("next_250k_of_the_greedy_order", {"order": sh["order"] + 250_000}),
                      ("threshold_below_the_page", {"threshold": 0.5 * (sh["key_floor"] or 0)})]:
        t = time.perf_counter()
        ex._on_message(ex, {"type": "more", "req": name, "have": have, "units": [], **ask}, [])
        content, buffers = sent.pop()
        report[name] = {"seconds": round(time.perf_counter() - t, 2),
                        "bytes": sum(len(b) for b in buffers) + len(json.dumps(content)),
                        "units": content["n_units"], "to": content["to"],
                        "limited": content["limited"]}
    print(json.dumps(report, indent=1))
    write_report("explorer_payload", report)


if __name__ == "__main__":
    main()
