"""Time from an edit in the CircuitExplorer to current numbers, in JupyterLab for real (Chromium
through Playwright, anywidget's front end, the kernel evaluating), on toy-ioi with 200 prompts
and on a GPT-2-small-shaped model with random weights (few prompts; edits are evaluated on a
subsample of 16 once a full evaluation takes over 1 s, the panel saying "on 16 of N prompts").

It runs the JupyterLab tests in tests/test_circuit_explorer_jupyterlab.py that drag the size slider
quickly and then type a size + Enter, and collects what they measured
(test-artifacts/explorer_live_*.json): the time from releasing the slider, and from the Enter,
to the panel showing numbers for the circuit shown.

Usage: python bench/bench_explorer_live.py [--prompts 48]   writes bench/out/explorer_live.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=48)
    args = ap.parse_args()
    env = {**os.environ, "PEAP_BENCH_LIVE": "1", "PEAP_BENCH_PROMPTS": str(args.prompts)}
    tests = ["tests/test_circuit_explorer_jupyterlab.py::test_fast_slider_drag_ends_with_numbers_for_the_final_circuit",
             "tests/test_circuit_explorer_jupyterlab.py::test_live_numbers_on_a_gpt2_small_shaped_model"]
    subprocess.run([sys.executable, "-m", "pytest", "-q", *tests], cwd=ROOT, env=env, check=True)
    art = Path(os.environ.get("PEAP_TEST_ARTIFACTS", ROOT / "test-artifacts"))
    out = {name: json.loads((art / f"explorer_live_{name}.json").read_text())
           for name in ("toy_ioi_200", "gpt2_shaped")}
    out["gpt2_shaped"]["prompts"] = args.prompts
    (ROOT / "bench" / "out").mkdir(exist_ok=True)
    (ROOT / "bench" / "out" / "explorer_live.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
