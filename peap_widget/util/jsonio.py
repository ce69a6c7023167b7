"""JSON text in and out, and reading files: the one way every object here writes itself and
the one way files are read, so a bad file always gives a `PeapError` naming it."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

from ..errors import PeapError


def dump_json(obj, path: str | Path | None = None, indent: int | None = None) -> str:
    """``obj`` as JSON text; also written to ``path`` when given."""
    text = json.dumps(obj, indent=indent)
    if path is not None:
        Path(path).write_text(text)
    return text


def read_text(path: str | Path, what: str = "file", error=PeapError) -> str:
    """The UTF-8 text of ``path``; a missing, unreadable or non-UTF-8 file raises ``error``
    (a `PeapError` subclass) naming it."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise error(f"{path} is not UTF-8 text ({what}): byte {err.start} is "
                    f"{err.object[err.start:err.start + 1]!r}") from None
    except OSError as err:
        raise error(f"cannot read {what} {path}: {err.strerror or err}") from None


def load_json(text: str, where: str, error=PeapError):
    """Parse JSON ``text`` read from ``where``; invalid JSON raises ``error`` naming it with the
    line and column."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise error(f"{where} is not valid JSON: {err.msg} at line {err.lineno}, column "
                    f"{err.colno}") from None
    except RecursionError:
        raise error(f"{where} is nested too deeply to be read") from None


def finite_or_none(value):
    """``value`` as strict JSON values: every NaN or infinite float replaced by None (JSON has
    no NaN), numpy scalars and arrays as numbers and lists."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):   # numpy
        value = value.tolist()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def file_mode(path: Path) -> int:
    """The mode a new file gets under the umask, or the existing file's own mode."""
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` all at once: a temporary file beside it, synced, then renamed
    over it (with the old file's mode, or the umask's), so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = file_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)          # mkstemp makes 0600; follow the umask / the old file
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
