"""Scale check for an 8B-sized graph: everything after the model runs, on a CPU.

Llama-3-8B's graph (32 layers x 32 heads) over an 8-span schema has about 13 million positional
edge rows. A random GPT-2 with n_layer=32, n_head=32 and a tiny n_embd has exactly that graph and
runs here, so this times what the edge table costs at that size, offline:

    attribute      pw.attribute on 4 prompts of 16-22 tokens (the 8-span tiny IOI schema);
                   table_build is the part of it spent in AttributionResult.from_arrays
    circuit        res.circuit(1000), the first call on a result (greedy search + pruning)
    greedy_200k    res.greedy_order(True, n=200_000), what the circuit explorer asks for first
    greedy_all     then the whole greedy order (12.5 million units)
    circuit_half   on the reloaded result: res.circuit(half the units), as a curve at 0.5 does
    edges_frame    the first access of res.edges (the pandas table)
    save / load    res.save(path) and AttributionResult.load(path), size on disk
    peak_rss       the process's peak resident memory over the whole run

Targets (2-core CPU): attribute <= 120 s, circuit <= 2 s, save + load <= 15 s and <= 400 MB,
peak RSS <= 8 GB. Each stage runs under a timeout (``--timeout``, seconds; SIGALRM, so a stage
stuck inside one numpy call overruns it until that call returns).

Usage: python bench/bench_scale.py [--layers 32] [--heads 32] [--batch 2] [--suffix .npz]
Prints a table and writes bench/out/scale.json (or ``--out``). Not a test.
"""

from __future__ import annotations

import argparse
import json
import resource
import signal
import sys
import tempfile
import time
from pathlib import Path

TARGETS = {"attribute_s": 120, "circuit_s": 2, "save_load_s": 15, "file_mb": 400,
           "peak_rss_mb": 8192}


class StageTimeout(Exception):
    pass


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def records():
    """Four IOI-shaped prompts of 16-22 tokens over the tiny vocabulary (8 spans)."""
    from peap_widget.models.examples import _ioi

    act = ["went", "to", "the", "store", ","]
    return [
        _ioi(["When"], "Mary", "John", act, ["gave", "a", "book", "and", "a", "ball"],
             ("Anna", "Tom", "Kate")),                                              # 16
        _ioi(["Then", "later"], "Tom", "Anna", act + ["and", "the", "shop"],
             ["gave", "a", "ball"], ("Bob", "Kate", "Mary")),                       # 18
        _ioi(["Then", "later", "that", "day"], "Kate", "Bob", act + ["the", "shop"],
             ["gave", "a", "book", "later"], ("John", "Mary", "Anna")),             # 20
        _ioi(["Then", "later", "that", "day"], "John", "Mary", act + ["and", "the", "shop", ","],
             ["gave", "a", "ball", "later"], ("Tom", "Bob", "Kate")),               # 22
    ]


def build(layers: int, heads: int, d_model: int):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    import peap_widget as pw
    from peap_widget.models.examples import tiny_tokenizer

    tok = tiny_tokenizer()
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=d_model, n_layer=layers,
                     n_head=heads, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                     pad_token_id=tok.pad_token_id)
    hf = GPT2LMHeadModel(cfg).eval()
    model = pw.load_model(hf, tokenizer=tok)
    return model, pw.Dataset.from_records(records(), model)


class Stages:
    """Times named stages, each under a SIGALRM timeout; a stage that fails or times out is
    recorded and the ones depending on it are skipped."""

    def __init__(self, timeout: int):
        self.timeout, self.out = timeout, {}

    def __call__(self, name, fn):
        def alarm(*_):
            raise StageTimeout

        old = signal.signal(signal.SIGALRM, alarm)
        signal.alarm(self.timeout)
        t0 = time.perf_counter()
        try:
            value = fn()
            self.out[name] = round(time.perf_counter() - t0, 3)
            return value
        except StageTimeout:
            self.out[name] = f"> {self.timeout} s (timed out)"
        except Exception as err:  # noqa: BLE001 -- a bench reports and goes on
            self.out[name] = f"failed after {time.perf_counter() - t0:.1f} s: {err!r}"[:300]
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)
            self.out[f"{name}_peak_rss_mb"] = round(peak_rss_mb())
            print(f"  {name}: {self.out[name]}  (peak RSS {self.out[name + '_peak_rss_mb']} MB)",
                  flush=True)
        return None


def run(args) -> dict:
    import peap_widget as pw
    from peap_widget.circuits import result as result_mod

    st = Stages(args.timeout)
    model, ds = st("build", lambda: build(args.layers, args.heads, args.d_model))
    info = {"layers": args.layers, "heads": args.heads, "d_model": args.d_model,
            "prompts": len(ds), "tokens": [len(ex.clean_ids) for ex in ds.examples],
            "spans": len(ds.schema.spans), "batch_size": args.batch}

    table_s = []
    from_arrays = result_mod.AttributionResult.from_arrays.__func__

    def timed_from_arrays(cls, *a, **k):  # how much of attribute is the table
        t0 = time.perf_counter()
        try:
            return from_arrays(cls, *a, **k)
        finally:
            table_s.append(time.perf_counter() - t0)

    result_mod.AttributionResult.from_arrays = classmethod(timed_from_arrays)
    res = st("attribute", lambda: pw.attribute(model, ds, batch_size=args.batch, progress=False))
    result_mod.AttributionResult.from_arrays = classmethod(from_arrays)
    st.out["table_build"] = round(table_s[0], 3) if table_s else None
    if res is None:
        return {**info, **st.out}
    info["rows"] = len(res.space)
    st("circuit", lambda: res.circuit(1000))
    st("circuit_again", lambda: res.circuit(1000))
    st("greedy_200k", lambda: res.greedy_order(True, n=200_000))
    st("greedy_all", lambda: res.greedy_order(True))
    st("edges_frame", lambda: res.edges)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"result{args.suffix}"
        if st("save", lambda: res.save(path)) is not None:
            info["file_mb"] = round(path.stat().st_size / 2**20, 1)
            back = st("load", lambda: pw.AttributionResult.load(path))
            if back is not None:
                import numpy as np

                info["load_scores_equal"] = bool(np.array_equal(back.scores, res.scores,
                                                                equal_nan=True))
                st("circuit_after_load", lambda: back.circuit(1000))
                half = back.circuit(0, method="topn").units.n // 2
                st("circuit_half", lambda: back.circuit(half))
    out = {**info, **st.out}
    if isinstance(out.get("save"), float) and isinstance(out.get("load"), float):
        out["save_load"] = round(out["save"] + out["load"], 3)
    out["peak_rss_mb"] = round(peak_rss_mb())
    return out


def report(out: dict) -> None:
    rows = [("attribute (s)", out.get("attribute"), TARGETS["attribute_s"]),
            ("  of which table build (s)", out.get("table_build"), None),
            ("circuit(1000), first (s)", out.get("circuit"), TARGETS["circuit_s"]),
            ("circuit(1000), again (s)", out.get("circuit_again"), None),
            ("greedy_order n=200k (s)", out.get("greedy_200k"), None),
            ("  then the whole order (s)", out.get("greedy_all"), None),
            ("circuit(half), reloaded (s)", out.get("circuit_half"), None),
            ("res.edges first access (s)", out.get("edges_frame"), None),
            ("save (s)", out.get("save"), None),
            ("load (s)", out.get("load"), None),
            ("save + load (s)", out.get("save_load"), TARGETS["save_load_s"]),
            ("file (MB)", out.get("file_mb"), TARGETS["file_mb"]),
            ("peak RSS (MB)", out.get("peak_rss_mb"), TARGETS["peak_rss_mb"])]
    print(f"\n{out.get('layers')}x{out.get('heads')} graph, {out.get('rows')} rows, "
          f"{out.get('spans')} spans, {out.get('prompts')} prompts")
    print(f"{'figure':<30}{'value':>28}{'target':>10}")
    for name, value, target in rows:
        print(f"{name:<30}{str(value):>28}{'' if target is None else '<= ' + str(target):>10}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--suffix", default=".npz", help="result file format by suffix")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per stage")
    ap.add_argument("--out", default=str(Path(__file__).parent / "out" / "scale.json"))
    args = ap.parse_args(argv)
    out = run(args)
    report(out)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
