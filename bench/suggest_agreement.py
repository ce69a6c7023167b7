"""How close the rule and saliency suggesters come to the built-in human schemas (issue 16).

1. Agreement (`Suggestion.agreement`: fraction of examples whose spans are all identical) of the
   rule taggers `rules.IOI` (ABBA, BABA, both) and `rules.GREATER_THAN` with the task generators'
   own spans, on 200 prompts each (toy-ioi / toy-greater-than tokenizers).
2. The saliency suggester (`SaliencySuggester`, ranking by ``resid_atp``) writes its own schema
   (``gap0, key1, ..., END``), so whole-schema agreement with a 9- or 12-span human schema is 0
   by construction; reported instead: how often its key spans and END coincide exactly with the
   human spans they map to (each key mapped to the human span it lands on most often, printed).
3. On toy-ioi (ABBA and BABA) and toy-greater-than (100 prompts to find circuits, 100 others to
   evaluate them): normalized faithfulness of the greedy 500-edge PEAP circuit found with the
   rules schema, the built-in schema and the saliency schema.

Usage: python bench/suggest_agreement.py [--n 200]. Writes bench/out/suggest_agreement.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from report import write_report  # noqa: E402


def human_and_tokens(ds):
    records = ds.to_records()
    return records, [r["spans"] for r in records], [ds.tokens(i) for i in range(len(ds))]


def key_agreement(sug, human, human_names):
    """Map each span of ``sug`` other than the gaps to the human span it most often equals
    exactly; return (mapping, fraction of examples where every mapped span is identical)."""
    from peap_widget.suggest import Suggestion

    mapping = {}
    for name in sug.span_names:
        if name.startswith("gap"):
            continue
        votes = Counter(h for s, ref in zip(sug.spans, human) if s is not None
                        for h in human_names if tuple(ref[h]) == tuple(s[name]))
        if votes:
            mapping[name] = votes.most_common(1)[0][0]
    mapped = Suggestion(list(mapping.values()),
                        [None if s is None else {mapping[k]: s[k] for k in mapping}
                         for s in sug.spans])
    return mapping, mapped.agreement(human)


def main():
    import torch

    import peap_widget as pw
    from peap_widget.suggest import rules
    from peap_widget.suggest.saliency import SaliencySuggester

    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--edges", type=int, default=500)
    args = p.parse_args()
    torch.manual_seed(0)
    t0 = time.perf_counter()
    out = {"n": args.n, "rules": {}, "saliency": {}, "faithfulness": {}}

    models = {m: pw.models.load(m) for m in ("toy-ioi", "toy-greater-than")}
    tasks = [("ioi ABBA", "toy-ioi", pw.tasks.get("ioi", n=args.n, order="ABBA", seed=1),
              rules.IOI, {"order": "ABBA"}, 3),
             ("ioi BABA", "toy-ioi", pw.tasks.get("ioi", n=args.n, order="BABA", seed=1),
              rules.IOI, {"order": "BABA"}, 3),
             ("ioi both", "toy-ioi", pw.tasks.get("ioi", n=args.n, order="both", seed=1),
              rules.IOI, {"order": "both"}, 3),
             ("greater-than", "toy-greater-than", pw.tasks.get("greater-than", n=args.n, seed=1),
              lambda tok: rules.GREATER_THAN(tok), {}, 1)]
    print(f"Agreement with the built-in human schemas ({args.n} prompts each)")
    print(f"{'task':14s} {'rules':>7s} {'saliency keys':>14s}  saliency key -> human span")
    for label, mname, task, make, kw, k in tasks:
        model = models[mname]
        ds = task.dataset(model)
        records, human, tokens = human_and_tokens(ds)
        sug = make(model, **kw)(records, tokens)
        agree = sug.agreement(human)
        sal = SaliencySuggester(model, k=k, metric=task.metric_for(model), batch_size=32)
        ssug = sal([{f: r[f] for f in ("clean", "corrupted", "correct", "incorrect")}
                    for r in records], tokens)
        mapping, kagree = key_agreement(ssug, human, list(ds.schema.spans))
        out["rules"][label] = {"agreement": agree, "failed": len(sug.failed)}
        out["saliency"][label] = {"k": k, "schema": ssug.span_names, "mapping": mapping,
                                  "key_agreement": kagree, "whole_schema_agreement": 0.0,
                                  "failed": len(ssug.failed)}
        print(f"{label:14s} {agree:7.3f} {kagree:14.3f}  {mapping}")

    # --- faithfulness at a fixed circuit size ------------------------------------------------
    runs = [("toy-ioi ABBA", "toy-ioi", pw.tasks.get("ioi", n=200, order="ABBA", seed=2),
             lambda m: rules.IOI(m, "ABBA"), 3),
            ("toy-ioi BABA", "toy-ioi", pw.tasks.get("ioi", n=200, order="BABA", seed=2),
             lambda m: rules.IOI(m, "BABA"), 3),
            ("toy-greater-than", "toy-greater-than", pw.tasks.get("greater-than", n=200, seed=2),
             rules.GREATER_THAN, 1)]
    print(f"\nGreedy PEAP circuit of {args.edges} edges found on 100 prompts, normalized "
          "faithfulness on 100 others (counterfactual ablation, the task's metric)")
    for run, mname, task, make, k in runs:
        model = models[mname]
        metric = task.metric_for(model)
        schemas = {}
        for part, sub in zip(("disc", "eval"), task.split(100)):
            ds = sub.dataset(model)
            records, human, tokens = human_and_tokens(ds)
            base = [{f: r[f] for f in ("clean", "corrupted", "correct", "incorrect")}
                    for r in records]
            schemas.setdefault("built-in", {})[part] = ds
            sal = SaliencySuggester(model, k=k, metric=metric, batch_size=32)
            for label, sug in (("rules", make(model)(records, tokens)),
                               ("saliency", sal(base, tokens))):
                recs = [dict(base[i], spans=sug.spans[i]) for i in sug.annotated()]
                schemas.setdefault(label, {})[part] = pw.Dataset.from_records(
                    recs, model, schema=sug.span_names)
        out["faithfulness"][run] = {}
        for label, d in schemas.items():
            res = pw.attribute(model, d["disc"], method="peap", metric=metric, progress=False)
            circ = res.circuit(n_edges=args.edges)
            ev = pw.evaluate(model, d["eval"], circ, metric=metric)
            out["faithfulness"][run][label] = {
                "spans": len(d["disc"].schema), "edges": circ.n_edges,
                "graph_edges": len(res.scores),
                "faithfulness": ev.faithfulness, "disc_examples": len(d["disc"]),
                "eval_examples": len(d["eval"])}
            print(f"  {run:17s} {label:9s} schema ({len(d['disc'].schema):2d} spans, "
                  f"{len(d['disc'])}/{len(d['eval'])} examples, {circ.n_edges} of "
                  f"{len(res.scores)} edges): {ev.faithfulness:.4f}")
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"\n{out['seconds']} s; written to {write_report('suggest_agreement', out)}")


if __name__ == "__main__":
    main()
