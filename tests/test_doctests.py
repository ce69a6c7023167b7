"""Every ``>>>`` example in the package's docstrings runs, with ``pw`` (the package) in scope
besides the module's own names. Examples that need a hub model, the network or a browser say
``# doctest: +SKIP`` on that line; everything else runs on the shipped toy models."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import peap_widget

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _modules() -> list[str]:
    names = ["peap_widget"]
    for info in pkgutil.walk_packages(peap_widget.__path__, "peap_widget."):
        if not info.name.endswith("__main__"):
            names.append(info.name)
    return names


def _tests(module_name: str) -> list[doctest.DocTest]:
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    found = finder.find(module, module_name, globs={"pw": peap_widget, **vars(module)})
    # a re-exported object is found again under each module that imports it: keep its home's
    return [t for t in found if t.examples and t.name.startswith(module_name)]


MODULES = _modules()


def test_the_docstrings_have_examples():
    """The walk finds the package's examples (a broken walk would pass every test below)."""
    assert sum(len(_tests(m)) for m in MODULES) >= 40


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples_run(module_name, tmp_path, monkeypatch, one_thread):
    monkeypatch.chdir(tmp_path)          # examples that write files write them here
    failures = []
    for test in _tests(module_name):
        out = []
        runner = doctest.DocTestRunner(optionflags=FLAGS)
        result = runner.run(test, out=out.append)
        if result.failed:
            failures.append("".join(out))
    assert not failures, "\n".join(failures)
