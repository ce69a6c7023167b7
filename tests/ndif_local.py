"""A real NDIF server on loopback for the remote tests, run by the kit in ../shared/ndif-local
(its README has the rules): installed into its cache folder (~/.cache/ndif-local, a rerun
takes seconds), started with tiny models saved here, stopped after the session."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest


def kit_dir() -> Path | None:
    """The kit: $PEAP_NDIF_KIT, else ../shared/ndif-local beside the repository (or beside the
    working tree this clone was made from, /work/shared/ndif-local)."""
    candidates = [os.environ.get("PEAP_NDIF_KIT"),
                  Path(__file__).resolve().parents[2] / "shared" / "ndif-local",
                  "/work/shared/ndif-local"]
    for c in candidates:
        if c and (Path(c) / "start.sh").is_file():
            return Path(c)
    return None


def _unavailable(reason: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"the local NDIF server is required under CI=true: {reason}")
    pytest.skip(reason)


class LocalNdif:
    def __init__(self, kit: Path, models: dict[str, str]):
        self.kit, self.models = kit, models
        if str(kit) not in sys.path:
            sys.path.insert(0, str(kit))
        import client   # the kit's client helper

        self.client = client
        client.connect()
        for path in models.values():
            client.register_local_model(path)

    def register(self, path) -> str:
        """Key a model directory by its real path, as the kit's server does (README rule 1)."""
        return self.client.register_local_model(path)


def _save_tiny_models(root: Path) -> dict[str, str]:
    import torch

    from peap_widget.examples import tiny_model

    out = {}
    for family in ("gpt2", "llama"):
        hf, tok = tiny_model(family, dtype=torch.float32)
        path = root / f"tiny-{family}"
        hf.save_pretrained(path)
        tok.save_pretrained(path)
        out[family] = str(path.resolve())
    return out


def _run(cmd: list[str], timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@contextmanager
def serve(root: Path):
    kit = kit_dir()
    if kit is None:
        _unavailable("no ndif-local kit (set PEAP_NDIF_KIT or put it at ../shared/ndif-local)")
    try:
        done = _run(["bash", str(kit / "install.sh")], timeout=1200)
    except subprocess.TimeoutExpired:
        _unavailable("ndif-local install.sh did not finish in 20 minutes")
    if done.returncode:
        _unavailable(f"ndif-local install.sh failed: {done.stderr[-2000:]}")
    models = _save_tiny_models(root)
    _run(["bash", str(kit / "stop.sh")], timeout=120)   # a session left by an earlier run
    started = _run(["bash", str(kit / "start.sh"), *models.values()], timeout=600)
    if started.returncode:
        _run(["bash", str(kit / "stop.sh")], timeout=120)
        pytest.fail(f"ndif-local start.sh failed:\n{started.stdout[-3000:]}\n{started.stderr[-3000:]}")
    try:
        yield LocalNdif(kit, models)
    finally:
        _run(["bash", str(kit / "stop.sh")], timeout=120)
