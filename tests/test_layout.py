"""The package's layout is its design: folders are layers, imports go one way (down), and no
private name (``_x``) crosses a module boundary. This reads every module's source with `ast`, so
lazy imports inside functions count as much as the ones at the top. See docs/architecture.md."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "peap_widget"

#: bottom -> top. A module may import its own layer and any layer of a lower rank; layers of
#: the same rank (analysis, suggest) are siblings and never import each other.
LAYERS = {
    "errors": 0,
    "util": 1,
    "data": 2,
    "graph": 3,
    "circuits": 4,
    "arch": 5,
    "runtime": 6,
    "engine": 7,
    "models": 8,
    "analysis": 9, "suggest": 9,
    "lab": 10,
    "widgets": 11,
    "app": 12,
}
#: the package's own __init__ (the public surface) and __main__ sit above every layer
TOP = {"peap_widget", "peap_widget.__main__"}
#: layers that may use the public surface (``import peap_widget as pw``) as a user would: the
#: course labs, the widgets and the command line sit above everything it imports eagerly
USES_PUBLIC_SURFACE = {"lab", "widgets", "app"}
#: the one lower module that needs the package object itself, and why
NEEDS_PACKAGE_OBJECT = {
    "peap_widget.runtime.remote": "ships the whole package to NDIF by value (nnsight.register)",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str | None:
    """'peap_widget.engine.attribution' -> 'engine'; the root package -> None (the top)."""
    if module in TOP:
        return None
    return module.split(".")[1]


def resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def all_modules() -> dict[str, tuple[Path, ast.Module]]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        out[module_name(path)] = (path, ast.parse(path.read_text(encoding="utf-8")))
    return out


MODULES = all_modules()


def imports_of(module: str) -> list[tuple[str, list[str], int]]:
    """(imported module, names, line) for every import of a peap_widget module in ``module``."""
    path, tree = MODULES[module]
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = resolve(module, is_package, node)
            if not target.startswith("peap_widget"):
                continue
            names = [a.name for a in node.names]
            # `from . import x` may import the submodule x
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
            if subs:
                found += [(s, [], node.lineno) for s in subs]
                rest = [n for n in names if f"{target}.{n}" not in MODULES]
                if rest:
                    found.append((target, rest, node.lineno))
            else:
                found.append((target, names, node.lineno))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("peap_widget"):
                    found.append((a.name, [], node.lineno))
    return found


def test_every_module_is_in_a_known_layer():
    unknown = sorted({layer_of(m) for m in MODULES if layer_of(m) is not None} - set(LAYERS))
    assert not unknown, f"folders that are not in LAYERS (add them to the layer table): {unknown}"


def test_imports_go_one_way():
    wrong = []
    for module in MODULES:
        here = layer_of(module)
        if here is None:
            continue
        for target, _, line in imports_of(module):
            there = layer_of(target)
            if there is None:
                if here in USES_PUBLIC_SURFACE or module in NEEDS_PACKAGE_OBJECT:
                    continue
                wrong.append(f"{module}:{line} imports the top package {target} (import the module "
                             "that defines the name)")
            elif there != here and LAYERS[there] >= LAYERS[here]:
                wrong.append(f"{module}:{line} ({here}, rank {LAYERS[here]}) imports {target} "
                             f"({there}, rank {LAYERS[there]})")
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)


def test_no_private_name_is_imported_from_another_module():
    wrong = []
    for module in MODULES:
        for target, names, line in imports_of(module):
            for name in names:
                if name.startswith("_") and not name.startswith("__"):
                    wrong.append(f"{module}:{line} imports {name} from {target}")
    assert not wrong, "private names crossing a module boundary:\n" + "\n".join(wrong)


def _private_attributes_defined() -> dict[str, set[str]]:
    """module -> private attribute / method names its classes and functions define."""
    out = defaultdict(set)
    for module, (_, tree) in MODULES.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if node.name.startswith("_") and not node.name.startswith("__"):
                    out[module].add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                if node.attr.startswith("_") and not node.attr.startswith("__"):
                    out[module].add(node.attr)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    if isinstance(t, ast.Name) and t.id.startswith("_") and not t.id.startswith("__"):
                        out[module].add(t.id)
    return out


def test_no_private_attribute_of_another_module_is_used():
    """``obj._x`` where ``_x`` belongs to another of the package's modules (an adapter's
    ``_attn``, a module's ``_helper``): give it a public name instead. Private names that only
    third-party objects have (e.g. a tokenizer's) are not this test's business."""
    defined = _private_attributes_defined()
    everywhere = defaultdict(set)
    for module, names in defined.items():
        for n in names:
            everywhere[n].add(module)
    wrong = []
    for module, (_, tree) in MODULES.items():
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load)):
                continue
            attr = node.attr
            if not attr.startswith("_") or attr.startswith("__"):
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            owners = everywhere.get(attr, set())
            if owners and module not in owners:
                wrong.append(f"{module}:{node.lineno} uses .{attr} (defined in "
                             f"{', '.join(sorted(owners))})")
    assert not wrong, "private attributes used across modules:\n" + "\n".join(wrong)


def test_training_scripts_are_out_of_the_import_path():
    assert not any("train" in m.rsplit(".", 1)[-1] for m in MODULES), \
        "training scripts belong in training/, not in the package"


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_each_layer_says_what_it_holds(layer):
    init = PKG / layer / "__init__.py"
    if layer in ("errors",):
        init = PKG / "errors.py"
    assert init.is_file() and ast.get_docstring(ast.parse(init.read_text())), \
        f"{init} needs a docstring saying what the layer holds"


def import_graph() -> dict[str, set[str]]:
    """layer -> the layers it imports (for docs/architecture.md and the issue's report)."""
    graph = defaultdict(set)
    for module in MODULES:
        here = layer_of(module) or "peap_widget"
        for target, _, _ in imports_of(module):
            there = layer_of(target) or "peap_widget"
            if there != here:
                graph[here].add(there)
    return graph


if __name__ == "__main__":
    order = sorted(LAYERS, key=lambda name: (LAYERS[name], name))
    graph = import_graph()
    for layer in order:
        print(f"{layer:9s} -> {', '.join(sorted(graph.get(layer, set()), key=lambda n: LAYERS.get(n, 99))) or '(nothing)'}")
