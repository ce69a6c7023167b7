import sys
from pathlib import Path

# tests/ helpers (tiny.py, brute_force.py) are imported as plain modules.
sys.path.insert(0, str(Path(__file__).parent))

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_results():
    """(model, dataset, PEAP result, EAP result) on the tiny float64 GPT-2 and its 5 records."""
    import peap_widget as pw
    from tiny import tiny_gpt2, tiny_records

    hf, tok = tiny_gpt2()
    model = pw.load_model(hf, tokenizer=tok)
    ds = pw.Dataset.from_records(tiny_records(), model)
    return (model, ds, pw.attribute(model, ds, progress=False),
            pw.attribute(model, ds, method="eap", progress=False))


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module of tiny tensors: intra-op threads only cost time, and
    a lot of it when other jobs share the CPU (spinning threads). Restored after the module."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def chromium():
    """One headless system Chromium for the session's browser tests (see tests/browser.py)."""
    from browser import launch

    with launch() as b:
        yield b


@pytest.fixture(scope="session")
def ndif_server(tmp_path_factory):
    """A real NDIF server on loopback serving a tiny GPT-2 and a tiny Llama (tests/ndif_local.py);
    about a minute to start, stopped after the session."""
    from ndif_local import serve

    with serve(tmp_path_factory.mktemp("ndif_models")) as server:
        yield server


def pytest_configure(config):
    config.addinivalue_line("markers", "ndif: runs against the local NDIF server (ndif_server)")
    config.addinivalue_line("markers", "benchmark: a measurement run by a bench/ script, not a "
                                       "test (collected only with PEAP_BENCH_LIVE=1)")


def pytest_collection_modifyitems(config, items):
    """Benchmarks live in bench/ scripts; the test run deselects them (they are not skipped
    tests: nothing is left unchecked under CI=true)."""
    import os

    if os.environ.get("PEAP_BENCH_LIVE"):
        return
    bench = [item for item in items if item.get_closest_marker("benchmark")]
    if bench:
        config.hook.pytest_deselected(items=bench)
        items[:] = [item for item in items if not item.get_closest_marker("benchmark")]
