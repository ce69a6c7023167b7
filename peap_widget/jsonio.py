"""JSON text out, optionally to a file: the one way every object here writes itself."""

from __future__ import annotations

import json
from pathlib import Path


def dump_json(obj, path: str | Path | None = None, indent: int | None = None) -> str:
    """``obj`` as JSON text; also written to ``path`` when given."""
    text = json.dumps(obj, indent=indent)
    if path is not None:
        Path(path).write_text(text)
    return text
