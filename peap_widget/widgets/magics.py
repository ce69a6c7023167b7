"""IPython magics: ``%load_ext peap_widget`` opens the widgets on variables of the notebook.

    %load_ext peap_widget
    %peap_lab model ds                  # pw.CircuitLab(model, ds)
    %peap_explore res                   # pw.CircuitExplorer(res)   (no live evaluation)
    %peap_explore res model ds --n-edges 80
    %peap_schema ds                     # pw.SchemaEditor(ds)
    %peap_schema records model --path spans.json
    %peap_curves curve --x n_real_edges # pw.FaithfulnessCurves(curve, x="n_real_edges")
    %peap_check                         # pw.lab.summary(): the lab checks run so far
    %peap_check lab1                    # one lab's
    %peap_check lab1.clean_logit_diff clean_ld model=model ds=ds   # run one check

Arguments are parsed by IPython's `magic_arguments` (so ``%peap_lab?`` shows the usage).
Positional arguments are names of notebook variables (``lab.explorer`` works too); an option's
value is a variable name or a Python literal (``--n-edges 80``, ``--path spans.json``,
``--curves []``). A check's context is ``key=variable`` pairs, passed to the check as keywords.
A name that is not defined, or a variable of the wrong kind, gives a short error saying what to
do instead of a traceback. Each magic returns the widget, so it is displayed.
"""

from __future__ import annotations

import ast

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

#: what each argument should be, for the error messages
KINDS = {
    "model": ("a model", "model = pw.models.load('toy-ioi') or pw.load_model('gpt2')"),
    "ds": ("a pw.Dataset", "ds = task.dataset(model) or pw.Dataset.from_records(records, model)"),
    "res": ("an attribution result", "res = pw.attribute(model, ds)"),
    "curve": ("a faithfulness curve", "curve = pw.faithfulness_curve(model, ds, {'PEAP': res})"),
    "data": ("a pw.Dataset or a list of records",
             "ds = task.dataset(model), or records = [{'clean': ..., 'correct': ..., ...}]"),
}


def _kind_ok(kind: str, obj) -> bool:
    import peap_widget as pw

    if kind == "model":
        return isinstance(obj, pw.Model)
    if kind == "ds":
        return isinstance(obj, pw.Dataset)
    if kind == "res":
        return isinstance(obj, pw.AttributionResult)
    if kind == "curve":
        return isinstance(obj, pw.FaithfulnessCurve) or hasattr(obj, "to_dict") or isinstance(obj, (list, dict))
    if kind == "data":
        return isinstance(obj, pw.Dataset) or (
            isinstance(obj, (list, tuple)) and len(obj) > 0
            and all(isinstance(r, dict) and "clean" in r for r in obj))
    return True


@magics_class
class PeapMagics(Magics):
    """The ``%peap_*`` line magics (see the module docstring)."""

    # --- arguments ---------------------------------------------------------------------------

    def _args(self, magic, line: str):
        """``line`` parsed by the magic's `magic_arguments` parser; a usage error names the magic
        and shows its usage line."""
        try:
            return parse_argstring(magic, line)
        except UsageError as err:
            # IPython formats the usage as reST ("::" and an indented block): one plain line here
            usage = " ".join(magic.parser.format_usage().replace("::", "").split())
            raise UsageError(f"usage: {usage}\n%{magic.__name__}: {err}") from None

    def _var(self, magic: str, name: str, kind: str | None = None):
        ns = self.shell.user_ns
        head, *attrs = name.split(".")
        if not head.isidentifier():
            raise UsageError(f"%{magic}: {name!r} is not a variable name")
        if head not in ns:
            hidden = getattr(self.shell, "user_ns_hidden", {})
            defined = sorted(k for k, v in ns.items() if not k.startswith("_") and k not in hidden
                             and kind is not None and not callable(v) and _kind_ok(kind, v))
            what, how = KINDS.get(kind, ("a value", f"{head} = ..."))
            hint = (f" Variables that are {what}: {', '.join(defined)}." if defined
                    else f" Make {what} first, e.g. {how}.")
            raise UsageError(f"%{magic}: there is no variable named {head!r} in the notebook.{hint}")
        obj = ns[head]
        for i, attr in enumerate(attrs):
            if not hasattr(obj, attr):
                raise UsageError(f"%{magic}: {'.'.join([head, *attrs[:i]])} has no attribute {attr!r}")
            obj = getattr(obj, attr)
        if kind is not None and not _kind_ok(kind, obj):
            what, how = KINDS[kind]
            raise UsageError(f"%{magic}: {name} is of type {type(obj).__name__}, not {what} "
                             f"(e.g. {how}).")
        return obj

    def _value(self, magic: str, text: str):
        """An option's value: a notebook variable, else a Python literal, else the text."""
        head = text.split(".")[0]
        if head.isidentifier() and head in self.shell.user_ns:
            return self._var(magic, text)
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text

    def _options(self, magic: str, args, names: tuple[str, ...]) -> dict:
        """The options given (not None), each a notebook variable or a literal."""
        return {k: self._value(magic, getattr(args, k)) for k in names
                if getattr(args, k) is not None}

    # --- magics ------------------------------------------------------------------------------

    @magic_arguments()
    @argument("model", help="a notebook variable holding a pw.Model")
    @argument("ds", help="a pw.Dataset (or a list of records)")
    @argument("--path", help="autosave file of the schema editor")
    @argument("--curve-sizes", dest="curve_sizes", help="circuit sizes of the curves tab")
    @argument("--batch-size", dest="batch_size", help="batch size of attribution")
    @argument("--ablation", help="counterfactual, mean or zero")
    @line_magic
    def peap_lab(self, line: str = ""):
        """Open `pw.CircuitLab` (schema, attribution, explorer, curves) on the notebook's
        model and dataset."""
        from .lab import CircuitLab

        args = self._args(self.peap_lab, line)
        model = self._var("peap_lab", args.model, "model")
        ds = self._var("peap_lab", args.ds, "data")
        kw = self._options("peap_lab", args, ("path", "curve_sizes", "batch_size", "ablation"))
        return CircuitLab(model, ds, **kw)

    @magic_arguments()
    @argument("res", help="a notebook variable holding an attribution result")
    @argument("model", nargs="?", help="a pw.Model, to evaluate edits live (with ds)")
    @argument("ds", nargs="?", help="a pw.Dataset, to evaluate edits live (with model)")
    @argument("--n-edges", dest="n_edges", help="circuit size shown first")
    @argument("--merge-qkv", dest="merge_qkv", help="True or False")
    @argument("--curves", help="faithfulness curves to show beside the diagram")
    @argument("--curve-sizes", dest="curve_sizes", help="sizes of those curves")
    @line_magic
    def peap_explore(self, line: str = ""):
        """Open `pw.CircuitExplorer` on an attribution result (live faithfulness with a model
        and a dataset)."""
        from .circuit_explorer import CircuitExplorer

        args = self._args(self.peap_explore, line)
        if (args.model is None) != (args.ds is None):
            raise UsageError("%peap_explore: give both a model and a dataset (to evaluate edits) "
                             "or neither; usage: %peap_explore res [model ds] [--n-edges N]")
        res = self._var("peap_explore", args.res, "res")
        kw = self._options("peap_explore", args, ("n_edges", "merge_qkv", "curves", "curve_sizes"))
        if args.model is not None:
            kw["model"] = self._var("peap_explore", args.model, "model")
            kw["dataset"] = self._var("peap_explore", args.ds, "ds")
        return CircuitExplorer(res, **kw)

    @magic_arguments()
    @argument("data", help="a pw.Dataset, or a list of records (then give a model)")
    @argument("model", nargs="?", help="a pw.Model (or tokenizer) to tokenize records")
    @argument("--schema", help="the span types (a pw.Schema or a list of names)")
    @argument("--path", help="autosave file (resumed when it exists)")
    @line_magic
    def peap_schema(self, line: str = ""):
        """Open `pw.SchemaEditor` on a dataset, or on records with a model."""
        from ..data.dataset import Dataset
        from .schema_editor import SchemaEditor

        args = self._args(self.peap_schema, line)
        data = self._var("peap_schema", args.data, "data")
        kw = self._options("peap_schema", args, ("schema", "path"))
        if args.model is not None:
            kw["model"] = self._var("peap_schema", args.model, "model")
        elif not isinstance(data, Dataset):
            raise UsageError("%peap_schema: records need a model (or tokenizer) to be tokenized: "
                             f"%peap_schema {args.data} model")
        return SchemaEditor(data, **kw)

    @magic_arguments()
    @argument("curve", help="a faithfulness curve (pw.faithfulness_curve)")
    @argument("--x", help="x axis: n_edges, n_real_edges, fraction, ...")
    @argument("--measure", help="which faithfulness measure to draw")
    @argument("--title", help="the chart's title")
    @line_magic
    def peap_curves(self, line: str = ""):
        """Open `pw.FaithfulnessCurves` on a faithfulness curve."""
        from .curves import FaithfulnessCurves

        args = self._args(self.peap_curves, line)
        curve = self._var("peap_curves", args.curve, "curve")
        kw = self._options("peap_curves", args, ("x", "measure", "title"))
        return FaithfulnessCurves(curve, **kw)

    @magic_arguments()
    @argument("name", nargs="?", help="a lab (lab1) for its summary, or a check (lab1.n_edges)")
    @argument("answer", nargs="?", help="the variable holding the answer to check")
    @argument("context", nargs="*", help="key=variable pairs the check needs (model=model)")
    @line_magic
    def peap_check(self, line: str = ""):
        """``%peap_check [labN]``: the lab checks run so far (`pw.lab.summary`);
        ``%peap_check labN.name answer [key=var ...]``: run one check on notebook variables."""
        from .. import lab

        args = self._args(self.peap_check, line)
        if args.answer is None:
            if args.name and "." in args.name:
                raise UsageError("usage: %peap_check [labN] | %peap_check labN.check answer "
                                 "[key=var ...]")
            if args.name and not lab.checks(args.name):
                raise UsageError(f"%peap_check: no lab named {args.name!r}; labs: "
                                 f"{', '.join(sorted({n.split('.')[0] for n in lab.checks()}))}")
            return lab.summary(args.name)
        if args.name not in lab.checks():
            raise UsageError(f"%peap_check: no check named {args.name!r}; checks: "
                             f"{', '.join(lab.checks(args.name.split('.')[0]) or lab.checks())}")
        context = {}
        for pair in args.context:
            key, eq, value = pair.partition("=")
            if not eq or not key.isidentifier():
                raise UsageError(f"%peap_check: {pair!r} is not key=variable (e.g. model=model)")
            context[key] = self._value("peap_check", value)
        answer = self._var("peap_check", args.answer)
        lab.check(args.name, answer, **context)


def register(ipython) -> None:
    """Register the magics with an IPython shell (what ``%load_ext peap_widget`` calls)."""
    ipython.register_magics(PeapMagics)
