"""The front end's unit tests (vitest, js/**/*.test.js) run as part of the README's test command."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_vitest_suite_passes():
    if shutil.which("npx") is None or not (ROOT / "node_modules" / "vitest").is_dir():
        pytest.fail("node/npm and the dev dependencies are needed: npm install (./dev does it)")
    proc = subprocess.run(["npx", "vitest", "run", "--root", "js", "--reporter=dot"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
