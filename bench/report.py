"""Where the benchmarks write their figures: bench/out/<name>.json (gitignored)."""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).parent / "out"


def write_report(name: str, data, indent: int = 1) -> Path:
    """Write ``data`` as bench/out/``name``.json and return the path."""
    OUT.mkdir(exist_ok=True)
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(data, indent=indent))
    return path
