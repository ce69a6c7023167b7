"""The main job: attribute, search circuits, measure faithfulness, and write everything to a
folder (edge tables, circuits, curves, an offline HTML report).

    >>> summary = run_discovery(model, task, out="ioi_run", methods=("peap", "eap"))  # doctest: +SKIP

Files in ``out``: ``edges_<method>.csv`` (or ``.parquet``), ``result_<method>.json.gz`` (or
``.npz``, the compact binary form for big graphs; reload either with `AttributionResult.load`), ``circuit_<method>.json``, ``faithfulness.csv``,
``faithfulness.png``, ``report.html`` and ``summary.json``. They are written to a temporary folder
beside ``out`` and moved in only when everything succeeded, so a failed run leaves ``out`` as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from ..engine.attribution import attribute
from ..analysis.curves import DISCOVERY_SIZES, faithfulness_curve, mib_scores
from ..errors import PeapError
from ..util.jsonio import finite_or_none
from ..engine.evaluate import Evaluator
from ..errors import NormalisationError
from .report import write_report

#: how `run_discovery` can write each `AttributionResult` (`AttributionResult.save` by suffix)
RESULT_FORMATS = ("json.gz", "npz")

#: the demo's and CLI's default sizes: MIB's fractions plus a few in between
DEFAULT_SIZES = DISCOVERY_SIZES


def parse_sizes(text: str) -> list:
    """``"0.01,0.1,1.0"``, ``"1%,10%,100%"`` or ``"10,100,1000"`` -> sizes; a clear error for
    anything else. A size with a decimal point or a ``%`` is a fraction of the graph's edges,
    a whole number an edge count; a bare ``1`` is refused as ambiguous (one edge, or the whole
    graph?): write ``1.0`` or ``100%`` for the whole graph."""
    out = []
    for item in str(text).split(","):
        item = item.strip()
        try:
            if item.endswith("%"):
                v = float(item[:-1]) / 100
            else:
                v = int(item) if item.isdigit() else float(item)
        except ValueError:
            raise PeapError(f"bad size {item!r}: sizes are edge counts (whole numbers) or "
                            "fractions of the graph (0.5, 50%), comma-separated") from None
        if v == 1 and isinstance(v, int):
            raise PeapError("bad size '1': ambiguous; write 1.0 or 100% for the whole graph "
                            "(sizes with a point or % are fractions, whole numbers edge counts)")
        if isinstance(v, float) and not 0 < v <= 1:
            raise PeapError(f"bad size {item!r}: a fraction must lie in (0, 1] (0-100%)")
        out.append(v)
    if not out:
        raise PeapError("no sizes given")
    return out


def run_discovery(model, task, out, methods=("peap",), ablation: str = "counterfactual",
                  sizes=DEFAULT_SIZES, n_discovery: int | None = None, n_edges: int | None = None,
                  table_format: str = "csv", batch_size: int | None = 64, progress: bool = True,
                  title: str | None = None, result_format: str = "json.gz") -> dict:
    """Run the whole job on a `peap_widget.data.tasks.Task` (split into discovery and evaluation
    halves, or the first ``n_discovery`` records for discovery) and write the files to ``out``.

    The written circuit has ``n_edges`` edges, or by default is the smallest curve point whose
    normalized faithfulness reaches 0.8 (the largest curve size when none does or when
    normalized faithfulness is refused). Returns the summary (also in ``summary.json``, strict
    JSON: a number that cannot be formed is null, with the reason in ``faithfulness_refused``;
    ``task_warning`` says when the model does not do the task)."""
    _check_formats(table_format, result_format)
    if len(task) < 2:
        raise PeapError(f"the task has {len(task)} records; discovery and evaluation need at least 2")
    out = Path(out)
    t0 = time.perf_counter()
    n_disc = n_discovery or len(task) // 2
    disc_task, eval_task = task.split(n_disc)
    if len(eval_task) == 0:
        eval_task = disc_task
    disc, evald = disc_task.dataset(model), eval_task.dataset(model)
    metric = task.metric_for(model)
    _check_output_folder(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_partials(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    (tmp / ".pid").write_text(str(os.getpid()))
    try:
        results = {method.upper(): attribute(model, disc, method=method, ablation=ablation,
                                             metric=metric, batch_size=batch_size,
                                             progress=progress)
                   for method in methods}
        evaluator = Evaluator(model, evald, ablation, metric, batch_size)
        curve = faithfulness_curve(model, evald, results, sizes=sizes, evaluator=evaluator,
                                   progress=progress)
        summary = _baseline_summary(model, task, ablation, disc, evald, evaluator, metric)
        start_sizes, evals = {}, {}
        for label, res in results.items():
            _write_tables(res, tmp, label.lower(), table_format, result_format)
            circ, size = _written_circuit(res, curve, label, n_edges)
            circ.save(tmp / f"circuit_{label.lower()}.json")
            start_sizes[label], evals[label] = size, evaluator.run(circ)
            summary.update(_method_summary(model, evald, res, label, curve, circ, evals[label],
                                           evaluator, progress))
        curve.table.to_csv(tmp / "faithfulness.csv", index=False)
        curve.overview().savefig(tmp / "faithfulness.png", dpi=110)
        summary["seconds"] = round(time.perf_counter() - t0, 2)
        write_report(tmp / "report.html", title or f"peap_widget: {task.name} on {model.name}",
                     summary, results, start_sizes, curve, evals)
        summary = finite_or_none(summary)   # strict JSON: reasons are in faithfulness_refused
        (tmp / "summary.json").write_text(json.dumps(summary, indent=1, allow_nan=False))
        (tmp / ".pid").unlink()
        _replace_folder(tmp, out)
        return summary
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check_formats(table_format: str, result_format: str) -> None:
    if table_format not in ("csv", "parquet"):
        raise PeapError(f"table format must be csv or parquet, got {table_format!r}")
    if result_format not in RESULT_FORMATS:
        raise PeapError(f"result format must be one of {RESULT_FORMATS}, got {result_format!r}")
    if table_format == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise PeapError("--format parquet needs pyarrow (pip install pyarrow); or use csv") from None


def _baseline_summary(model, task, ablation, disc, evald, evaluator, metric) -> dict:
    """What the run was and how the model does the task (clean, ablated, accuracy)."""
    summary = {"model": model.name, "task": task.name, "ablation": ablation,
               "discovery_examples": len(disc), "evaluation_examples": len(evald),
               "clean_metric": float(evaluator.clean_per_example.mean()),
               "ablated_metric": float(evaluator.empty_per_example.mean())}
    if not callable(metric) and metric == "logit_diff":
        summary["clean_accuracy"] = float((evaluator.clean_per_example > 0).mean())
    summary["faithfulness_refused"] = evaluator.refusal
    summary["task_warning"] = evaluator.warning
    return summary


def _write_tables(res, folder: Path, m: str, table_format: str, result_format: str) -> None:
    """The edge table (csv / parquet) and the result file of one method."""
    table_path = folder / f"edges_{m}.{table_format}"
    if table_format == "csv":
        res.edges.to_csv(table_path, index=False)
    else:
        res.edges.to_parquet(table_path, index=False)
    res.save(folder / f"result_{m}.{result_format}")


def _written_circuit(res, curve, label: str, n_edges: int | None):
    """The circuit written for one method: ``n_edges`` edges, else the smallest curve size
    reaching faithfulness 0.8, else (none does, or normalising is refused) the largest."""
    if n_edges is None:
        point = curve.point(0.8, label)
        size = (int(point["requested"]) if point is not None
                else int(curve.table[curve.table.result == label].requested.max()))
    else:
        size = n_edges
    circ = res.circuit(n_edges=size)
    circ.name = f"{label} greedy, {circ.n_edges} edges"
    return circ, size


def _method_summary(model, evald, res, label, curve, circ, ev, evaluator, progress) -> dict:
    """One method's lines of the summary: edges for f >= 0.8 and 0.95, CPR / CMD, the written
    circuit's size and faithfulness."""
    m = label.lower()
    try:
        scores = mib_scores(model, evald, res, evaluator=evaluator, progress=progress,
                            desc=f"{label} CPR/CMD")
    except NormalisationError:   # the reason is in summary["faithfulness_refused"]
        scores = {"cpr": None, "cmd": None}
    out = {}
    for level in (0.8, 0.95):
        point = curve.point(level, label)
        out[f"{m}_edges_for_{level}"] = None if point is None else int(point["n_edges"])
        out[f"{m}_real_edges_for_{level}"] = None if point is None else float(point["n_real_edges"])
    out[f"{m}_cpr"], out[f"{m}_cmd"] = scores["cpr"], scores["cmd"]
    out[f"{m}_circuit_edges"] = circ.n_edges
    out[f"{m}_circuit_faithfulness"] = ev.faithfulness
    return out


#: the files a run writes (what an output folder may hold for a rerun to replace it)
OUTPUT_PATTERNS = ("summary.json", "report.html", "faithfulness.csv", "faithfulness.png",
                   "edges_*.csv", "edges_*.parquet", "circuit_*.json", "result_*.json.gz",
                   "result_*.npz", "result_*.json")


def _check_output_folder(out: Path) -> None:
    """``out`` must be new, empty, or a previous run's output: the run replaces it as a whole,
    so nothing else may be in it."""
    if not out.exists():
        return
    if not out.is_dir():
        raise PeapError(f"--out {out} is a file, not a folder")
    ours = {p for pattern in OUTPUT_PATTERNS for p in out.glob(pattern)}
    others = sorted(p.name for p in out.iterdir() if p not in ours)
    if others:
        raise PeapError(f"--out {out} holds files that are not a peap discover output "
                        f"({', '.join(others[:5])}{'...' if len(others) > 5 else ''}); the run "
                        "replaces the folder as a whole, so give a new or empty folder")


def _remove_abandoned_partials(out: Path) -> None:
    """Remove ``.OUT.partial-*`` folders left by killed runs (their process is gone)."""
    for partial in out.parent.glob(f".{out.name}.partial-*"):
        try:
            pid = int((partial / ".pid").read_text())
            os.kill(pid, 0)
            continue                          # a run still going: leave it alone
        except ProcessLookupError:
            pass
        except (OSError, ValueError):
            pass                              # no pid file: an old-style or broken leftover
        shutil.rmtree(partial, ignore_errors=True)


def _replace_folder(new: Path, out: Path) -> None:
    """Put the finished folder ``new`` in place of ``out`` as a whole: no stale files of an
    earlier run (another method, another format) stay beside the new summary."""
    if not out.exists():
        os.replace(new, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.replace(out, old / out.name)
    try:
        os.replace(new, out)
    except OSError:
        os.replace(old / out.name, out)      # put the old folder back
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


