"""Running the package's traces where the model is: here, or on NDIF, one request per job.

Every piece of work that touches a model (attribution of a batch, its ablation source, the span
sums of mean ablation, an evaluation batch, the clean logits...) is a *job*: a plain function of
the model and small inputs that runs its own nnsight traces and returns small results. `run`
calls a job directly for a local model; for a remote one (``pw.load_model(name, remote=True)``)
it wraps the call in one ``nn.session(remote=...)``, so the whole job (every trace in it, the
gradients and the closed forms) runs on the NDIF server next to the weights, and only what the
job returns, `nnsight.save`\\ d, comes back.

What makes that work (see docs/ndif.md):

- the package's code ships with the request: `prepare` registers ``peap_widget`` with
  ``nnsight.register`` (pickled by value, the server does not have it installed);
- the model travels as references: every module of the HF model is tagged with nnsight's
  persistent id (``Module:<path>``), so the adapter's reads of weights (``W_O``, q/k/v rows,
  norm gains) resolve to the server's real modules inside the job, never the client's meta
  copies; a `Model` arrives with ``remote=False`` (on the far side it is local), so a job's
  traces run there and never go remote again;
- results are moved to the CPU on the server before they are saved, and only aggregates are
  returned (the jobs are written so);
- a backward pass needs a tensor that requires grad on a frozen server model: the attribution
  job sets it on the residual entering block 0.

``model.remote_log`` records each request: the job, seconds, and the bytes that came back.

Example:
    >>> model = pw.load_model("meta-llama/Llama-3.1-70B", remote=True)   # doctest: +SKIP
    >>> res = pw.attribute(model, ds, batch_size=8)                       # doctest: +SKIP
    >>> model.remote_log[-1]            # {'job': ..., 'seconds': ..., 'bytes_back': ...}  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch

from ..errors import PeapError
from ..data.dataset import Batch

if TYPE_CHECKING:
    from .model import Model

_REGISTERED: list[bool] = []


class RemoteError(PeapError):
    """A remote request failed: the server is down, refused the key, does not serve the
    model, or the job failed there. The message names the host and what to do."""


def host() -> str:
    from nnsight import CONFIG

    return str(CONFIG.API.HOST)


def prepare(model: Model) -> None:
    """Register the package for shipping by value and tag the model's modules with their
    persistent ids (both once)."""
    if not _REGISTERED:
        import nnsight

        import peap_widget

        nnsight.register(peap_widget)
        _REGISTERED.append(True)
    if not getattr(model, "modules_tagged", False):
        for envoy in model.nn.modules():
            envoy._module._persistent_id = f"Module:{envoy.path}"
        model.modules_tagged = True


def run(model: Model, job: Callable, *args: Any, **kwargs: Any) -> Any:
    """``job(*args, **kwargs)`` where ``model`` runs: directly for a local model, else as one
    NDIF request. Returns what the job returns (tensors on the CPU for a remote model)."""
    if not getattr(model, "remote", False):
        return job(*args, **kwargs)
    prepare(model)
    t0 = time.perf_counter()
    try:
        with model.lock, _as_a_fresh_process(), model.nn.session(remote=model.remote):
            result = on_host(job(*args, **kwargs))
            import nnsight

            nnsight.save(result)
    except PeapError:
        raise
    except Exception as err:  # noqa: BLE001 (every failure of a request gets the host named)
        raise remote_error(err, model) from None
    model.remote_log.append({"job": getattr(job, "__name__", str(job)),
                             "seconds": time.perf_counter() - t0,
                             "bytes_back": nbytes(result)})
    return result


@contextmanager
def _as_a_fresh_process():
    """Unpickle classes shipped by value as a new process would, while a request runs.

    cloudpickle tracks classes pickled by value by an id within one process; unpickling one in
    the process that pickled it finds the real class by that id and *overwrites its methods*
    with the shipped copies (whose globals lack ``__name__``, so any later relative import in
    them fails). That happens in the ``remote="local"`` dry run (serialized and deserialized
    here), and would happen to a result holding such a class coming back from a server; with
    the tracking off, the package's own classes stay untouched."""
    import cloudpickle.cloudpickle as cp

    # (No lock of its own: this module travels by value, and a lock does not pickle. Dry runs
    # are for tests and checks; two at once in threads would only both switch tracking off.)
    tracked = cp._lookup_class_or_track
    cp._lookup_class_or_track = lambda _tracker_id, class_def: class_def
    try:
        yield
    finally:
        cp._lookup_class_or_track = tracked


def on_host(value: Any) -> Any:
    """``value`` with every tensor in it (dicts, lists, tuples, dataclasses' fields stay as
    they are) moved to the CPU: what comes back from a server."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: on_host(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(on_host(v) for v in value)
    return value


def nbytes(value: Any) -> int:
    """Bytes of the tensors and arrays in ``value`` (nested dicts, lists, tuples)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if hasattr(value, "nbytes") and not isinstance(value, (str, bytes)):
        return int(value.nbytes)
    if isinstance(value, dict):
        return sum(nbytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(nbytes(v) for v in value)
    return 0


def remote_error(err: Exception, model: Model) -> RemoteError:
    """A `RemoteError` naming the host, the model and what to do, for an exception a remote
    request raised."""
    lines = [ln for ln in str(err).strip().splitlines() if ln.strip()]
    text = f"{type(err).__name__}: {lines[0] if lines else ''}"
    if len(lines) > 1:   # a server traceback: its first line and the exception it ends in
        text += f"\n   ... ({len(lines) - 2} lines of the server's traceback) ...\n   {lines[-1].strip()}"
    where = (f"nnsight's remote='local' dry run (model {model.name!r})" if model.remote == "local"
             else f"NDIF at {host()} (model {model.name!r})")
    low = text.lower()
    if any(s in low for s in ("connection refused", "failed to establish", "max retries",
                              "name or service not known", "connecterror", "timed out",
                              "cannot connect", "connection error")):
        advice = ("the server does not answer: check the host (nnsight.CONFIG.API.HOST or "
                  "NDIF_HOST) and that it is up (nnsight.ndif.status())")
    elif any(s in low for s in ("api key", "apikey", "unauthorized", "401", "403", "forbidden")):
        advice = ("the server refused the API key: set NDIF_API_KEY (or "
                  "nnsight.CONFIG.set_default_api_key(key)) to a key from https://login.ndif.us")
    elif any(s in low for s in ("could not deploy", "not deployed", "not found", "no model", "not running",
                                "does not exist", "unknown model", "404")):
        advice = ("the server does not serve this model: see nnsight.ndif.status() for the "
                  "models it runs, or load it locally (remote=False)")
    else:
        advice = "the request failed there; the server's message is above"
    return RemoteError(f"{where}: {text}\n-> {advice}")


def batch_on(batch: Batch, device: torch.device | str) -> Batch:
    """``batch`` (a `peap_widget.data.dataset.Batch`) with its tensors on ``device``: batches are made
    where results are kept and moved, inside a job, to where the model is."""
    import dataclasses

    moved = {f.name: getattr(batch, f.name).to(device) for f in dataclasses.fields(batch)
             if isinstance(getattr(batch, f.name), torch.Tensor)}
    if all(v is getattr(batch, k) for k, v in moved.items()):
        return batch
    return dataclasses.replace(batch, **moved)
