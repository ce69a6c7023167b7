"""IPython magics: ``%load_ext peap_widget`` opens the widgets on variables of the notebook.

    %load_ext peap_widget
    %peap_lab model ds                  # pw.CircuitLab(model, ds)
    %peap_explore res                   # pw.CircuitExplorer(res)   (no live evaluation)
    %peap_explore res model ds n_edges=80
    %peap_schema ds                     # pw.SchemaEditor(ds)
    %peap_schema records model path=spans.json
    %peap_curves curve                  # pw.FaithfulnessCurves(curve)
    %peap_check                         # pw.lab.summary(): the lab checks run so far
    %peap_check lab1                    # one lab's
    %peap_check lab1.clean_logit_diff clean_ld model=model ds=ds   # run one check

Arguments are names of notebook variables (``lab.explorer`` works too); ``key=value`` options
take a variable name or a literal (``n_edges=80``, ``path=spans.json``). A name that is not
defined, or a variable of the wrong kind, gives a short error saying what to do instead of a
traceback. Each magic returns the widget, so it is displayed.
"""

from __future__ import annotations

import ast
import shlex

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class

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

    def _parse(self, magic: str, line: str):
        try:
            parts = shlex.split(line)
        except ValueError as err:
            raise UsageError(f"%{magic}: cannot read the arguments ({err})") from None
        args, opts = [], {}
        for p in parts:
            if "=" in p and not p.startswith("="):
                key, value = p.split("=", 1)
                opts[key] = value
            else:
                args.append(p)
        return args, opts

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

    def _options(self, magic: str, opts: dict, allowed: tuple[str, ...]) -> dict:
        unknown = sorted(set(opts) - set(allowed))
        if unknown:
            raise UsageError(f"%{magic}: unknown option(s) {', '.join(unknown)}; "
                             f"options: {', '.join(allowed) or 'none'}")
        return {k: self._value(magic, v) for k, v in opts.items()}

    @staticmethod
    def _usage(magic: str, usage: str, args, lo: int, hi: int):
        if not lo <= len(args) <= hi:
            raise UsageError(f"usage: %{magic} {usage}")

    # --- magics ------------------------------------------------------------------------------

    @line_magic
    def peap_lab(self, line: str = ""):
        """``%peap_lab model ds [path=FILE]``: open `pw.CircuitLab` (schema, attribution,
        explorer, curves) on the notebook's model and dataset."""
        import peap_widget as pw

        args, opts = self._parse("peap_lab", line)
        self._usage("peap_lab", "model ds [path=FILE] [curve_sizes=...]", args, 2, 2)
        model = self._var("peap_lab", args[0], "model")
        ds = self._var("peap_lab", args[1], "data")
        kw = self._options("peap_lab", opts, ("path", "curve_sizes", "batch_size", "ablation"))
        return pw.CircuitLab(model, ds, **kw)

    @line_magic
    def peap_explore(self, line: str = ""):
        """``%peap_explore res [model ds] [n_edges=N] [merge_qkv=False]``: open
        `pw.CircuitExplorer` on an attribution result (live faithfulness with model and ds)."""
        import peap_widget as pw

        args, opts = self._parse("peap_explore", line)
        usage = "res [model ds] [n_edges=N] [merge_qkv=False]"
        self._usage("peap_explore", usage, args, 1, 3)
        if len(args) == 2:
            raise UsageError(f"%peap_explore: give both a model and a dataset (to evaluate edits) "
                             f"or neither; usage: %peap_explore {usage}")
        res = self._var("peap_explore", args[0], "res")
        kw = self._options("peap_explore", opts, ("n_edges", "merge_qkv", "curves", "curve_sizes"))
        if len(args) == 3:
            kw["model"] = self._var("peap_explore", args[1], "model")
            kw["dataset"] = self._var("peap_explore", args[2], "ds")
        return pw.CircuitExplorer(res, **kw)

    @line_magic
    def peap_schema(self, line: str = ""):
        """``%peap_schema ds`` or ``%peap_schema records model [schema=...] [path=FILE]``: open
        `pw.SchemaEditor`."""
        import peap_widget as pw

        args, opts = self._parse("peap_schema", line)
        self._usage("peap_schema", "ds_or_records [model] [schema=...] [path=FILE]", args, 1, 2)
        data = self._var("peap_schema", args[0], "data")
        kw = self._options("peap_schema", opts, ("schema", "path"))
        if len(args) == 2:
            kw["model"] = self._var("peap_schema", args[1], "model")
        elif not isinstance(data, pw.Dataset):
            raise UsageError("%peap_schema: records need a model (or tokenizer) to be tokenized: "
                             f"%peap_schema {args[0]} model")
        return pw.SchemaEditor(data, **kw)

    @line_magic
    def peap_curves(self, line: str = ""):
        """``%peap_curves curve [x=n_real_edges] [measure=hard]``: open `pw.FaithfulnessCurves`."""
        import peap_widget as pw

        args, opts = self._parse("peap_curves", line)
        self._usage("peap_curves", "curve [x=...] [measure=...] [title=...]", args, 1, 1)
        curve = self._var("peap_curves", args[0], "curve")
        kw = self._options("peap_curves", opts, ("x", "measure", "title"))
        return pw.FaithfulnessCurves(curve, **kw)

    @line_magic
    def peap_check(self, line: str = ""):
        """``%peap_check [labN]``: the lab checks run so far (`pw.lab.summary`);
        ``%peap_check labN.name answer [key=var ...]``: run one check on notebook variables."""
        from .. import lab

        args, opts = self._parse("peap_check", line)
        if not args or (len(args) == 1 and "." not in args[0] and not opts):
            if args and not lab.checks(args[0]):
                raise UsageError(f"%peap_check: no lab named {args[0]!r}; labs: "
                                 f"{', '.join(sorted({n.split('.')[0] for n in lab.checks()}))}")
            return lab.summary(args[0] if args else None)
        if len(args) != 2:
            raise UsageError("usage: %peap_check [labN] | %peap_check labN.check answer [key=var ...]")
        name = args[0]
        if name not in lab.checks():
            raise UsageError(f"%peap_check: no check named {name!r}; "
                             f"checks: {', '.join(lab.checks(name.split('.')[0]) or lab.checks())}")
        answer = self._var("peap_check", args[1])
        context = {k: self._value("peap_check", v) for k, v in opts.items()}
        lab.check(name, answer, **context)


def register(ipython) -> None:
    """Register the magics with an IPython shell (what ``%load_ext peap_widget`` calls)."""
    ipython.register_magics(PeapMagics)
