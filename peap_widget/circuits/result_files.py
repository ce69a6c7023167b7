"""An `AttributionResult`'s files: the JSON document (``.json``, ``.json.gz``; version 1, the
whole edge table as columns) and the binary form (``.npz``, version 2: the scores in row order
and JSON metadata, the table's keys follow from graph and spans). `load_result` tells them apart
by their first bytes. The result's ``save`` / ``load`` / ``to_dict`` / ``from_dict`` call these.

Example:
    >>> from peap_widget.circuits.result import AttributionResult
    >>> from peap_widget.models.examples import random_result
    >>> res = random_result(layers=2, heads=2, spans=2)
    >>> for name in ("r.npz", "r.json", "r.json.gz", "r.bin"):
    ...     again = load_result(AttributionResult, save_result(res, name))
    ...     assert (again.scores == res.scores).all() and again.spans == res.spans
    >>> result_to_dict(res)["format"]
    'peap_widget.attribution'
"""

from __future__ import annotations

import gzip
import json
import os
import zipfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..data.schema import Schema
from ..errors import PeapError
from ..graph.config import KEY_COLUMNS, GraphConfig

if TYPE_CHECKING:
    from .result import AttributionResult

FORMAT = "peap_widget.attribution"
#: version of the binary (.npz) format; JSON documents are version 1
NPZ_VERSION = 2


def result_meta(res: AttributionResult) -> dict:
    """Everything but the arrays, JSON-ready."""
    return {
        "format": FORMAT, "settings": res.settings, "spans": res.spans,
        "schema": None if res.schema is None else res.schema.to_dict(),
        "graph": res.graph_config.to_dict(),
    }


def result_to_dict(res: AttributionResult) -> dict:
    """The JSON document (version 1): metadata plus the edge table column by column."""
    table = res.space.frame().astype(object)
    cols = {c: table[c].tolist() for c in KEY_COLUMNS}
    cols["score"] = res.scores.tolist()
    return {
        **result_meta(res), "version": 1,
        "clean_metric": res.clean_metric.tolist(),
        "counterfactual_metric": (None if res.counterfactual_metric is None
                                  else res.counterfactual_metric.tolist()),
        "span_lengths": None if res.span_lengths is None else res.span_lengths.tolist(),
        "edges": cols,
    }


def result_from_dict(cls: type[AttributionResult], d: dict) -> AttributionResult:
    """A ``cls`` from `result_to_dict`'s document; `PeapError` for anything malformed."""
    import pandas as pd

    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise PeapError(f"not a {FORMAT} document (missing or wrong 'format' field)")
    try:
        edges = pd.DataFrame({c: d["edges"][c] for c in (*KEY_COLUMNS, "score")})
        edges["score"] = edges["score"].astype(np.float64)
        schema = None if d.get("schema") is None else Schema.from_dict(d["schema"])
        return cls(edges, d["spans"], d["settings"], d["clean_metric"],
                   d.get("counterfactual_metric"), schema,
                   GraphConfig.from_dict(d["graph"], len(d["spans"])),
                   d.get("span_lengths"))
    except (KeyError, TypeError, ValueError) as err:
        raise PeapError(f"malformed {FORMAT} document: {err!r}") from None


def save_result(res: AttributionResult, path: str | Path) -> Path:
    """Write ``res``; the format follows the file name:

    - ``.npz`` (use this for big graphs): NumPy's zip of arrays, uncompressed: the float64
      scores in row order, the metrics and span lengths, and a JSON ``meta`` entry (format,
      version 2, settings, spans, schema, graph). The edge table is not stored; its rows
      follow from the graph and spans. Written without pickles, read back bit for bit.
    - ``.json`` / ``.json.gz`` (gzip when the name ends in ``.gz``): the whole edge table as
      JSON columns, an export other tools can read; floats round-trip exactly.

    Any other name is written as JSON. The file is written next to ``path`` and moved in
    place when complete.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        if path.suffix == ".npz":
            save_npz(res, tmp)
        else:
            text = json.dumps(result_to_dict(res))
            if path.suffix == ".gz":
                with gzip.open(tmp, "wt") as f:
                    f.write(text)
            else:
                tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save_npz(res: AttributionResult, path: Path) -> None:
    """The ``.npz`` form (version `NPZ_VERSION`), written to ``path`` as it is."""
    meta = json.dumps({**result_meta(res), "version": NPZ_VERSION, "crossing": res.space.crossing})
    arrays = {"meta": np.frombuffer(meta.encode(), dtype=np.uint8), "scores": res.scores,
              "clean_metric": res.clean_metric}
    if res.counterfactual_metric is not None:
        arrays["counterfactual_metric"] = res.counterfactual_metric
    if res.span_lengths is not None:
        arrays["span_lengths"] = res.span_lengths
    with open(path, "wb") as f:  # a file object: numpy adds no suffix of its own
        np.savez(f, **arrays)


def load_result(cls: type[AttributionResult], path: str | Path) -> AttributionResult:
    """Read a file written by `save_result`, whichever format (told apart by its first bytes, so a
    renamed file still loads). Anything else raises `PeapError` naming the file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
        if magic.startswith(b"PK"):
            return load_npz(cls, path)
        if magic.startswith(b"\x1f\x8b"):
            with gzip.open(path, "rt") as f:
                d = json.load(f)
        else:
            d = json.loads(path.read_text())
    except (ValueError, OSError, EOFError, zlib.error) as err:  # JSONDecodeError: ValueError
        raise PeapError(f"cannot read an attribution result from {path}: {err}") from None
    except PeapError as err:
        raise PeapError(f"cannot read an attribution result from {path}: {err}") from None
    try:
        return result_from_dict(cls, d)
    except PeapError as err:
        raise PeapError(f"{path}: {err}") from None


def load_npz(cls: type[AttributionResult], path: Path) -> AttributionResult:
    """Read the ``.npz`` form; `PeapError` for anything malformed."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes().decode())
            if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                raise PeapError(f"not a {FORMAT} file (missing or wrong 'format' field)")
            if meta.get("version") != NPZ_VERSION:
                raise PeapError(f"unsupported {FORMAT} file version {meta.get('version')!r}")
            arrays = {k: z[k] for k in ("scores", "clean_metric", "counterfactual_metric",
                                        "span_lengths") if k in z.files}
        scores = arrays["scores"]
        if scores.dtype != np.float64 or scores.ndim != 1:
            raise PeapError(f"scores must be a float64 vector, got {scores.dtype} "
                            f"{scores.shape}")
        schema = None if meta.get("schema") is None else Schema.from_dict(meta["schema"])
        res = cls(scores, meta["spans"], meta["settings"], arrays["clean_metric"],
                  arrays.get("counterfactual_metric"), schema,
                  GraphConfig.from_dict(meta["graph"], len(meta["spans"])),
                  arrays.get("span_lengths"))
    except (KeyError, TypeError, ValueError, OSError, zipfile.BadZipFile) as err:
        raise PeapError(f"malformed {FORMAT} file: {err!r}") from None
    if res.space.crossing != bool(meta.get("crossing", res.space.crossing)):
        raise PeapError(f"malformed {FORMAT} file: the scores do not match 'crossing'")
    return res
