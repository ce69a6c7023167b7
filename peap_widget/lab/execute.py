"""Run a lab notebook top to bottom in a fresh kernel of *this* Python (nbclient).

The kernel is started from a throwaway kernelspec whose ``argv`` is ``sys.executable``, so a
notebook always runs against the interpreter (and installed package) that runs the tests or
the exporter, never whatever ``python3`` kernel happens to be installed elsewhere.

Example:
    >>> nb, seconds = execute("notebooks/solutions/lab1_circuits.ipynb")   # doctest: +SKIP
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

KERNEL_NAME = "peap-lab-python"


def kernel_manager(spec_dir: Path):
    """A jupyter_client KernelManager for ``sys.executable`` (spec written under ``spec_dir``)."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    kdir = Path(spec_dir) / "kernels" / KERNEL_NAME
    kdir.mkdir(parents=True, exist_ok=True)
    (kdir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"Python ({sys.executable})", "language": "python",
    }))
    ksm = KernelSpecManager(kernel_dirs=[str(Path(spec_dir) / "kernels")])
    return KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=ksm)


def read(path_or_nb):
    import nbformat

    if isinstance(path_or_nb, (str, Path)):
        return nbformat.read(str(path_or_nb), as_version=4)
    return path_or_nb


def execute(path_or_nb, cwd: str | Path | None = None, timeout: int = 600,
            allow_errors: bool = False, extra_cells: list[str] = (), on_done=None):
    """Execute a notebook (a path or an nbformat node) in a fresh kernel; returns
    ``(executed notebook, seconds)``. ``extra_cells`` are code run after the last cell (their
    outputs are kept in the returned notebook). ``on_done(client)`` runs while the kernel is
    still up, after the last cell. Raises nbclient's ``CellExecutionError`` on an error unless
    ``allow_errors``."""
    import nbformat
    from nbclient import NotebookClient

    nb = read(path_or_nb)
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))   # never modify the caller's copy
    for code in extra_cells:
        nb.cells.append(nbformat.v4.new_code_cell(code))
    with tempfile.TemporaryDirectory(prefix="peap-lab-kernel-") as spec_dir:
        km = kernel_manager(Path(spec_dir))
        workdir = str(cwd) if cwd is not None else tempfile.gettempdir()
        client = NotebookClient(nb, km=km, timeout=timeout, allow_errors=allow_errors,
                                store_widget_state=True,
                                resources={"metadata": {"path": workdir}})
        t0 = time.perf_counter()
        with client.setup_kernel():
            for index, cell in enumerate(nb.cells):
                client.execute_cell(cell, index)
            if on_done is not None:
                on_done(client)
            client.set_widgets_metadata()
        seconds = time.perf_counter() - t0
    return nb, seconds


def run_code(client, code: str, timeout: int = 600) -> list:
    """Run ``code`` in an executing client's kernel (see `execute`'s ``on_done``); its outputs."""
    import nbformat

    cell = nbformat.v4.new_code_cell(code)
    client.nb.cells.append(cell)            # nbclient writes the cell back at its index
    try:
        client.execute_cell(cell, len(client.nb.cells) - 1)
    finally:
        client.nb.cells.pop()
    return cell.outputs


def cell_text(cell) -> str:
    """Everything a code cell printed or displayed as text."""
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out.get("text", ""))
        elif out.get("output_type") in ("execute_result", "display_data"):
            parts.append(out.get("data", {}).get("text/plain", ""))
        elif out.get("output_type") == "error":
            parts.append("\n".join(out.get("traceback", [])))
    return "".join(parts)


def main(argv=None) -> int:
    """``python -m peap_widget.lab.execute NOTEBOOK...``: run each, print its time and checks."""
    import argparse

    ap = argparse.ArgumentParser(description="run lab notebooks and report their checks")
    ap.add_argument("notebooks", nargs="+")
    args = ap.parse_args(argv)
    worst = 0
    for path in args.notebooks:
        nb, secs = execute(path, cwd=Path(path).resolve().parent, allow_errors=True)
        errors = [c for c in nb.cells if c.cell_type == "code"
                  and any(o.get("output_type") == "error" for o in c.outputs)]
        text = "\n".join(cell_text(c) for c in nb.cells if c.cell_type == "code")
        lines = [ln for ln in text.splitlines() if ln.startswith("[lab")]
        print(f"{path}: {secs:.1f} s, {len(errors)} cell error(s)")
        for ln in lines:
            print("   ", ln[:160])
        for c in errors:
            print("    ERROR in cell:", c.source.splitlines()[0][:80])
            print("   ", cell_text(c)[-2000:])
        worst = worst or (1 if errors else 0)
    return worst


if __name__ == "__main__":
    sys.exit(main())
