"""peap_widget: position-aware circuit discovery (PEAP, EAP) on nnsight, with notebook widgets.

    import peap_widget as pw
    model = pw.load_model("gpt2")                       # or a local directory / in-memory model
    ds = pw.Dataset.from_records(records, model)        # clean, corrupted, correct, incorrect, spans
    res = pw.attribute(model, ds, method="peap")        # res.edges: the edge table
    res.top(10)

See docs/numbers.md (what every number means) and docs/getting-started.md.
"""

from . import models
from .data import tasks
from .engine.attribution import attribute
from .circuits.circuit import Circuit
from .analysis.curves import MIB_FRACTIONS, FaithfulnessCurve, faithfulness_curve, mib_scores
from .data.dataset import Dataset, Example
from .engine.evaluate import EvalResult, Evaluator, evaluate
from .errors import (DatasetError, NonFiniteError, NormalisationError, PeapError, SchemaError,
                     UnsupportedArchitectureError)
from .graph import Graph, GraphConfig
from .analysis.head_functions import (HeadFunctions, Relation, RelationError, head_functions,
                             head_functions_figure, relations)
from .runtime.model import Model, load_model
from .analysis.acdc import acdc
from .analysis.exact import exact_scores
from .analysis.path_patching import path_patch
from .data.paper_data import load_peap_paper
from .analysis.quality import (Completeness, RocCurve, completeness, minimality, overlap, roc_curve,
                      roc_curves, truth_mask)
from .runtime.remote import RemoteError
from .circuits.result import AttributionResult
from .data.schema import Schema
from . import suggest
from .suggest.llm import LLMSuggester, propose_schema
from .suggest.llm_backends import OpenAIBackend, TransformersBackend
from .suggest.rules import RuleError, RuleTagger
from .suggest.saliency import SaliencySuggester, TokenSaliency, token_saliency

__version__ = "0.1.0"

_WIDGETS = ("SchemaEditor", "CircuitExplorer", "FaithfulnessCurves", "CircuitLab", "to_html")


def __getattr__(name):
    # widgets (anywidget, ipywidgets) and the lab checks are imported on first use only
    if name == "lab":
        import importlib

        return importlib.import_module(".lab", __name__)
    if name in _WIDGETS or name == "widgets":
        import importlib

        widgets = importlib.import_module(".widgets", __name__)
        return widgets if name == "widgets" else getattr(widgets, name)
    raise AttributeError(f"module 'peap_widget' has no attribute {name!r}")

__all__ = ["models", "tasks", "attribute", "AttributionResult", "Circuit", "EvalResult", "Evaluator", "evaluate", "FaithfulnessCurve",
           "faithfulness_curve", "mib_scores", "MIB_FRACTIONS", "Dataset", "DatasetError", "Example", "Graph",
           "GraphConfig", "load_model", "Model", "NonFiniteError", "NormalisationError", "PeapError", "Schema", "SchemaError",
           "UnsupportedArchitectureError", "RemoteError", "suggest", "LLMSuggester",
           "propose_schema", "OpenAIBackend", "TransformersBackend", "RuleError", "RuleTagger",
           "SaliencySuggester", "TokenSaliency", "token_saliency", "load_peap_paper", "HeadFunctions", "Relation", "RelationError",
           "head_functions", "head_functions_figure", "relations", "Completeness", "RocCurve",
           "completeness", "minimality", "overlap", "roc_curve", "roc_curves", "truth_mask",
           "acdc", "exact_scores", "path_patch", *_WIDGETS]


def load_ipython_extension(ipython):
    """``%load_ext peap_widget``: the ``%peap_lab``, ``%peap_explore``, ``%peap_schema``,
    ``%peap_curves`` and ``%peap_check`` magics (see `peap_widget.widgets.magics`)."""
    from .widgets.magics import register

    register(ipython)
