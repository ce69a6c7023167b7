"""The check machinery shared by every lab: verdicts, friendly messages, the session's record.

A check compares a student's answer with an independent computation, prints one message and
returns True or False. It never raises: a blank answer (``...`` or None, also inside a list or
dict) gives "Not answered yet", a wrong one "Not yet: ..." with what was expected and why, and a
check that cannot run (a missing variable, a broken object) says so instead of a traceback.

Checks are plain functions registered with `register` under ``"lab<N>.<name>"``; call them as
``pw.lab.lab1.clean_logit_diff(answer, model=model, ds=ds)`` or
``pw.lab.check("lab1.clean_logit_diff", answer, model=model, ds=ds)``.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np

#: status -> the first words of the message
CORRECT, WRONG, BLANK, ERROR = "correct", "wrong", "blank", "error"
PREFIX = {CORRECT: "Correct:", WRONG: "Not yet:", BLANK: "Not answered yet:",
          ERROR: "Could not check:"}
BLANK_MESSAGE = "fill in the cell above (replace each ... with your answer), then run it and this check again."

REGISTRY: dict = {}


@dataclass
class Attempt:
    """The latest attempt at one check."""

    name: str
    status: str
    message: str
    time: float

    @property
    def passed(self) -> bool:
        return self.status == CORRECT


_RECORD: dict[str, Attempt] = {}


class Verdict(Exception):
    """Raised inside a check body to end it with a status and a message."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def correct(message: str):
    raise Verdict(CORRECT, message)


def wrong(message: str):
    raise Verdict(WRONG, message)


def blank(message: str = BLANK_MESSAGE):
    """End a check as "Not answered yet" (e.g. a widget nobody has edited)."""
    raise Verdict(BLANK, message)


def is_blank(value) -> bool:
    """True for ``...`` and None, and for lists, tuples, dicts and sets holding one."""
    if value is Ellipsis or value is None:
        return True
    if isinstance(value, str):
        return value.strip() in ("", "...")
    if isinstance(value, Mapping):
        return len(value) == 0 or any(is_blank(k) or is_blank(v) for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return len(value) == 0 or any(is_blank(v) for v in value)
    return False


def _emit(name: str, status: str, message: str) -> bool:
    _RECORD[name] = Attempt(name, status, message, time.time())
    print(f"[{name}] {PREFIX[status]} {message}")
    return status == CORRECT


def register(name: str, blank_ok: tuple[str, ...] = ()):
    """Decorator: turn ``body(answer, **context)`` into a check named ``name``.

    The body returns nothing and ends with `correct` or `wrong` (or returns a message string,
    taken as correct). Blank answers are caught before it runs; so are blank context values
    unless listed in ``blank_ok``; any exception inside becomes "Could not check".
    """

    def wrap(body):
        @functools.wraps(body)
        def check(answer=Ellipsis, *args, **context) -> bool:
            if is_blank(answer):
                return _emit(name, BLANK, BLANK_MESSAGE)
            named = {f"argument {i + 2}": v for i, v in enumerate(args)} | context
            for key, value in named.items():
                if key not in blank_ok and (value is Ellipsis or value is None):
                    return _emit(name, BLANK, f"`{key}` is not set yet: run (and fill in) the "
                                              "cells above first, then this check again.")
            try:
                msg = body(answer, *args, **context)
            except Verdict as v:
                return _emit(name, v.status, v.message)
            except Exception as err:  # noqa: BLE001  (a check never raises at the student)
                return _emit(name, ERROR, f"{type(err).__name__}: {err}. Is your answer the "
                                          "kind of value the exercise asks for?")
            return _emit(name, CORRECT, msg or "well done.")

        check.check_name = name
        REGISTRY[name] = check
        return check

    return wrap


def check(name: str, answer=Ellipsis, *args, **context) -> bool:
    """Run the check ``name`` (``"lab1.clean_logit_diff"``) on ``answer``; see the lab modules
    for the context each one needs. Prints a message, returns True when the answer is right."""
    if name not in REGISTRY:
        _load_labs()
    if name not in REGISTRY:
        near = [n for n in REGISTRY if n.split(".")[-1] == name.split(".")[-1]]
        hint = f" Did you mean {near[0]!r}?" if near else f" Known checks: {', '.join(sorted(REGISTRY))}."
        print(f"[{name}] {PREFIX[ERROR]} there is no check named {name!r}.{hint}")
        return False
    return REGISTRY[name](answer, *args, **context)


def _load_labs():
    from . import lab1, lab2, lab3, lab4, lab5, lab6  # noqa: F401  (registers their checks)


def checks(lab: str | None = None) -> list[str]:
    """Names of every registered check (of one lab: ``"lab2"``)."""
    _load_labs()
    return sorted(n for n in REGISTRY if lab is None or n.startswith(lab + "."))


# --- comparisons used by the checks ----------------------------------------------------------

def as_float(value, what: str = "the answer") -> float:
    """A plain float from a number, a 0-d array or tensor; `wrong` otherwise."""
    try:
        if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
            value = value.item()
        if isinstance(value, bool):
            raise TypeError
        out = float(value)
    except (TypeError, ValueError):
        wrong(f"{what} should be a number, got {type(value).__name__} {_short(value)}.")
    if math.isnan(out):
        wrong(f"{what} is NaN: something in the computation divided by zero or used a blank.")
    return out


def close(got: float, expected: float, rtol: float = 1e-3, atol: float = 1e-3) -> bool:
    return abs(got - expected) <= atol + rtol * abs(expected)


def _short(value, n: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."


def fmt(x: float) -> str:
    return f"{x:.4g}"


# --- the session's record ----------------------------------------------------------------------

class Summary:
    """Which checks passed, failed or were not answered, in the order they were run.

    ``summary.passed`` / ``.total`` / ``.all_passed``; ``to_dict()`` for JSON.
    """

    def __init__(self, attempts: list[Attempt], expected: list[str]):
        self.attempts = attempts
        self.expected = expected

    @property
    def passed(self) -> int:
        return sum(a.passed for a in self.attempts)

    @property
    def total(self) -> int:
        names = {a.name for a in self.attempts} | set(self.expected)
        return len(names)

    @property
    def all_passed(self) -> bool:
        return self.total > 0 and self.passed == self.total

    def missing(self) -> list[str]:
        seen = {a.name for a in self.attempts}
        return [n for n in self.expected if n not in seen]

    def to_dict(self) -> dict:
        return {"passed": self.passed, "total": self.total, "all_passed": self.all_passed,
                "checks": [asdict(a) | {"passed": a.passed} for a in self.attempts],
                "not_run": self.missing()}

    def _rows(self):
        mark = {CORRECT: "passed", WRONG: "not yet", BLANK: "not answered", ERROR: "could not check"}
        rows = [(a.name, mark[a.status]) for a in self.attempts]
        rows += [(n, "not run") for n in self.missing()]
        return rows

    def __repr__(self) -> str:
        width = max([len(n) for n, _ in self._rows()] + [5])
        lines = [f"{n:<{width}}  {s}" for n, s in self._rows()]
        head = f"{self.passed} of {self.total} checks passed" + (" - all done!" if self.all_passed else "")
        return "\n".join([head, *lines])

    def _repr_html_(self) -> str:
        import html

        colour = {"passed": "#1a7f37", "not yet": "#b35900", "not answered": "#777",
                  "could not check": "#b00", "not run": "#777"}
        rows = "".join(f"<tr><td><code>{html.escape(n)}</code></td>"
                       f"<td style='color:{colour[s]}'>{s}</td></tr>" for n, s in self._rows())
        head = f"{self.passed} of {self.total} checks passed" + (" - all done!" if self.all_passed else "")
        return f"<b>{head}</b><table>{rows}</table>"


def summary(lab: str | None = None) -> Summary:
    """The checks run in this session (of one lab, e.g. ``"lab1"``): latest attempt of each.
    Checks of that lab not run at all are listed as "not run"."""
    attempts = [a for a in _RECORD.values() if lab is None or a.name.startswith(lab + ".")]
    expected = checks(lab) if lab is not None else []
    return Summary(attempts, expected)


def reset() -> None:
    """Forget every attempt of this session."""
    _RECORD.clear()


def records() -> list[dict]:
    """Every attempt of this session as plain dicts (for tests and tools)."""
    return [asdict(a) | {"passed": a.passed} for a in _RECORD.values()]


def to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)
