"""The import picture: every import names the module that defines the name, imports go one way, shims warn.

The levels below are docs/architecture.md's layers, lowest first; a module imports only from its
own level or below, and the graph has no circle. Run this file to print the picture:

    python tests/test_imports.py
"""

from __future__ import annotations

import ast
import importlib
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "modelsurgery"
MAX_LINES = 400

# Lowest first. A module's level is that of the longest prefix listed; every module needs one.
LEVELS = [
    ("ground: errors, shared choices, deprecation shims' helper",
     ["modelsurgery", "modelsurgery.errors", "modelsurgery.constants", "modelsurgery.deprecation"]),
    ("pure converters, replacement layers, small helpers",
     ["modelsurgery.resize", "modelsurgery.layers", "modelsurgery.progress", "modelsurgery.paths",
      "modelsurgery.statedict", "modelsurgery.momentum"]),
    ("the contract, fx tracing, images from disk",
     ["modelsurgery.plan", "modelsurgery.tracing", "modelsurgery.images"]),
    ("read-only analyses, model zoo, kernel policy, cost, channel groups and blocks",
     ["modelsurgery.analysis", "modelsurgery.trace", "modelsurgery.zoo", "modelsurgery.policy", "modelsurgery.cost",
      "modelsurgery.nets", "modelsurgery.width", "modelsurgery.depth", "modelsurgery.channel_groups"]),
    ("passes: shrink, grow, calibration, low mode",
     ["modelsurgery.shrink", "modelsurgery.grow", "modelsurgery.calibrate", "modelsurgery.lowmode",
      "modelsurgery.slimming"]),
    ("files: checkpoints, .pt reading, ONNX, the file operations",
     ["modelsurgery.torchfile", "modelsurgery.checkpoint", "modelsurgery.describe", "modelsurgery.export",
      "modelsurgery.files", "modelsurgery.convert"]),
    ("the CLI", ["modelsurgery.cli"]),
    ("training methods", ["modelsurgery.methods"]),
    ("the training loop", ["modelsurgery.train"]),
    ("the recipes' runs and reports", ["modelsurgery.recipes_kit"]),
]
PROJECT = [PACKAGE, ROOT / "recipes", ROOT / "bench", ROOT / "tests", ROOT / "fixtures"]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def level(name: str) -> int:
    """The level of module `name`: that of the longest listed prefix."""
    best = (-1, None)
    for i, (_, prefixes) in enumerate(LEVELS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best[0]:
                best = (len(prefix), i)
    if best[1] is None:
        raise KeyError(f"{name} has no level. Hint: add it to LEVELS in tests/test_imports.py")
    return best[1]


def absolute(node: ast.ImportFrom, importer: str | None, is_package: bool) -> str | None:
    """The absolute module an ImportFrom reads from (None for a relative import outside the package)."""
    if not node.level:
        return node.module
    if importer is None:
        return None
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[:len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def defined_names(name: str) -> set[str]:
    """Names a module defines itself: top-level functions, classes and assignments, and its submodules."""
    tree = ast.parse(MODULES[name].read_text())
    names = {f"{name}.{sub}".rsplit(".", 1)[1] for sub in MODULES if sub.rsplit(".", 1)[0] == name}
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.If, ast.Try)):
            stack.extend([*node.body, *node.orelse, *getattr(node, "finalbody", []),
                          *(s for h in getattr(node, "handlers", []) for s in h.body)])
    return names


def project_imports():
    """(file, line, module, name) for every `from modelsurgery... import name` in the project."""
    for folder in PROJECT:
        for path in sorted(folder.rglob("*.py")):
            importer = module_name(path) if path.is_relative_to(PACKAGE) else None
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom):
                    source = absolute(node, importer, path.name == "__init__.py")
                    if source is not None and (source == "modelsurgery" or source.startswith("modelsurgery.")):
                        for alias in node.names:
                            yield path.relative_to(ROOT), node.lineno, source, alias.name


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (at the top or inside functions)."""
    graph = {}
    for name, path in MODULES.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                edges.update(a.name for a in node.names if a.name.startswith("modelsurgery"))
            elif isinstance(node, ast.ImportFrom):
                source = absolute(node, name, path.name == "__init__.py")
                if source and source.startswith("modelsurgery"):
                    edges.add(source)
                    edges.update(f"{source}.{a.name}" for a in node.names if f"{source}.{a.name}" in MODULES)
        graph[name] = {e for e in edges if e in MODULES and e != name}
    return graph


def upward_edges(graph: dict[str, set[str]]) -> list[str]:
    return [f"{a} (level {level(a)}) -> {b} (level {level(b)})"
            for a, targets in sorted(graph.items()) for b in sorted(targets) if level(b) > level(a)]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def shims() -> dict[str, dict[str, str]]:
    """Module -> its deprecated names (`deprecation.moved`) and where each lives now."""
    out = {}
    for name in MODULES:
        module = importlib.import_module(name)
        getter = module.__dict__.get("__getattr__")
        if getter is not None and hasattr(getter, "moved"):
            out[name] = getter.moved
    return out


def test_every_import_names_the_module_that_defines_it():
    bad = [f"{path}:{line}: {source}.{name}" for path, line, source, name in project_imports()
           if source in MODULES and name != "*" and name not in defined_names(source)]
    assert not bad, "imported through a module that does not define the name:\n" + "\n".join(bad)


def test_every_module_has_a_level_and_imports_only_downwards():
    graph = import_graph()
    for name in graph:
        level(name)
    assert not upward_edges(graph), "\n".join(upward_edges(graph))


def test_no_import_circle():
    assert not cycles(import_graph())


def test_the_level_check_sees_an_upward_edge_and_a_circle():
    graph = {"modelsurgery.errors": {"modelsurgery.cli"}, "modelsurgery.cli": {"modelsurgery.errors"}}
    assert upward_edges(graph) == ["modelsurgery.errors (level 0) -> modelsurgery.cli (level 6)"]
    assert cycles(graph) == [["modelsurgery.cli", "modelsurgery.errors"]]


def test_a_module_lists_in_all_only_what_it_defines():
    bad = {}
    for name, path in MODULES.items():
        if path.name != "__init__.py":
            listed = getattr(importlib.import_module(name), "__all__", [])
            bad.update({name: extra} if (extra := sorted(set(listed) - defined_names(name))) else {})
    assert not bad, f"__all__ names a module does not define (a package's __init__ may): {bad}"


def test_modules_stay_small():
    big = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines: {big}"


@pytest.mark.parametrize("module", sorted(shims()))
def test_shims_warn_and_give_the_moved_object(module):
    moved = shims()[module]
    assert moved, f"{module} has a shim without names"
    for old, new in moved.items():
        target, _, new_name = new.partition(":")
        with pytest.warns(DeprecationWarning, match=f"{module}.{old} is deprecated: import {new_name or old} from"):
            value = getattr(importlib.import_module(module), old)
        assert value is getattr(importlib.import_module(target), new_name or old)


OLD_MODULES = ("modelsurgery.trace", "modelsurgery.convert", "modelsurgery.methods.momentum",
               *(f"modelsurgery.train.{m}" for m in ("data", "datasets", "config", "recipe", "runs", "results", "plots",
                                                      "machine")))


def test_old_module_paths_are_shims_that_nothing_imports():
    for old in OLD_MODULES:
        assert old in shims(), old
        assert defined_names(old) <= {"__getattr__", "_NAMES"}, f"{old} should hold nothing but its shim"
    used = [f"{path}:{line}" for path, line, source, name in project_imports()
            if source in OLD_MODULES or f"{source}.{name}" in OLD_MODULES]
    for folder in PROJECT:
        for path in sorted(folder.rglob("*.py")):
            used += [f"{path.relative_to(ROOT)}:{node.lineno}" for node in ast.walk(ast.parse(path.read_text()))
                     if isinstance(node, ast.Import) and any(a.name in OLD_MODULES for a in node.names)]
    assert not used, f"the project imports an old module path: {used}"


@pytest.mark.parametrize("package", ["modelsurgery", "modelsurgery.resize", "modelsurgery.lowmode",
                                     "modelsurgery.methods", "modelsurgery.train"])
def test_public_names_resolve_without_a_warning(package):
    module = importlib.import_module(package)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        missing = [name for name in module.__all__ if getattr(module, name, None) is None]
    assert not missing, f"{package}.__all__ names what it does not have: {missing}"


def main() -> None:
    """Print the levels, each module's imports of the package, and any upward edge or circle."""
    graph = import_graph()
    for i, (title, _) in enumerate(LEVELS):
        print(f"level {i}: {title}")
        for name in sorted(n for n in graph if level(n) == i):
            below = ", ".join(sorted(t.removeprefix("modelsurgery.") for t in graph[name])) or "-"
            print(f"    {name.removeprefix('modelsurgery.') or 'modelsurgery'}  <-  {below}")
    edges = sum(map(len, graph.values()))
    print(f"{len(graph)} modules on {len(LEVELS)} levels, {edges} import edges; "
          f"upward: {upward_edges(graph) or 'none'}; circles: {cycles(graph) or 'none'}")
    sys.exit(1 if upward_edges(graph) or cycles(graph) else 0)


if __name__ == "__main__":
    main()


# What `modelsurgery.train` exported before its reporting moved to `recipes_kit` (all still found there).
OLD_TRAIN_NAMES = """Trainer param_groups TensorLoader DatasetError DEFAULT_ROOT FASHION_MNIST_CLASSES fixture_path
load_fashion_mnist load_fixture_fashion_mnist load_idx load_image_folder read_idx resize_images SOURCES Dataset
data_source load_images load_dataset make_loaders MultiStep Cosine Hold Rewarm WarmupStableDecay LRSchedule
ScheduleError ramp_size CheckpointInfo save_training_checkpoint load_training_checkpoint read_checkpoint_info DistInfo
setup_distributed cleanup_distributed dist_info barrier pick_device seed_everything parse_config RecipeConfig
NetworkConfig run_recipe default_out prepare_out make_trainer fit train_method train_baseline TOLERANCE
time_to_accuracy loss_jump summarize compare format_table write_results git_revision machine_info finish FRONTIER
frontier_reading plot_runs plot_panels""".split()


def test_every_name_train_exported_is_still_found_there():
    import modelsurgery.train as train

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        missing = [name for name in OLD_TRAIN_NAMES if getattr(train, name, None) is None]
    assert not missing
    with pytest.warns(DeprecationWarning, match="modelsurgery.train.run_recipe is deprecated: import run_recipe "
                                                "from modelsurgery.recipes_kit.recipe"):
        train.run_recipe  # noqa: B018  (the old path, on purpose)
