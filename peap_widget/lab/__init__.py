"""Course labs: answer checks for the notebooks in ``notebooks/`` and their HTML export.

Each check compares a student's answer with an independent computation (mostly
`peap_widget.lab.reference`, a node-by-node plain-PyTorch GPT-2), prints one friendly message
and returns True or False; it never raises. A blank answer (``...``) reads "Not answered yet".

    import peap_widget as pw
    pw.lab.lab1.clean_logit_diff(my_value, model=model, ds=ds)     # one lab's check
    pw.lab.check("lab1.clean_logit_diff", my_value, model=model, ds=ds)   # the same, by name
    pw.lab.summary("lab1")                                         # which checks passed

``python -m peap_widget.lab.export NOTEBOOK OUT_DIR`` runs a notebook and writes an offline HTML
page with its widgets live (see `peap_widget.lab.export`).
"""

from . import lab1, lab2, lab3, lab4, lab5, lab6
from .core import Summary, check, checks, is_blank, records, reset, summary

__all__ = ["Summary", "check", "checks", "is_blank", "lab1", "lab2", "lab3", "lab4", "lab5",
           "lab6", "records", "reset", "summary"]
