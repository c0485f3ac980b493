"""The package's modules import one another only downwards, in the order of the layers
below (type-only imports and imports inside functions included), and only the public names
(``__all__``) of the modules they import. A new module must take its place here."""

from __future__ import annotations

import ast
import importlib
import pathlib

import dask_anyio

#: Lowest first; a module may import only modules before it.
LAYERS = {
    # what the whole package may use; imports nothing of it
    "foundation": ["_errors", "_logs", "_diagnose", "_client"],
    # worker side: runs in Dask's workers and their children
    "worker": ["_child", "_warm", "_running", "_remote"],
    # scheduler side: handlers that a plugin adds to the scheduler
    "scheduler": ["_on_scheduler"],
    # asyncio core: one distributed.Client on one asyncio loop; no anyio
    "core": [
        "_forget",
        "_transfer",
        "_leases",
        "_exchange",
        "_actors",
        "_connect",
        "_core",
        "_owned",
    ],
    # the thread bridge: the one primitive that crosses threads
    "bridge": ["_token", "_bridge"],
    # anyio front end, on the caller's loop: state, then its parts, then the façade
    "front end": [
        "_signal",
        "_pace",
        "_handle",
        "_options",
        "_gate",
        "_host",
        "_watch",
        "_tasks",
        "_fetch",
        "_parts",
        "_completed",
        "_streams",
        "_scope",
        "_work",
        "_primitives",
        "_shared",
        "_actor",
        "_reports",
        "_show",
        "_lifetime",
        "_coordination",
        "_executor",
        "_subtasks",
        "__init__",
    ],
    # the `dask anyio` command line, over the public API
    "command line": ["_demo", "_cli", "__main__"],
    # the pytest plugin for users' tests, over the public API (and the leak checks)
    "pytest plugin": ["_orphaned", "_leaks", "_spawned", "_testcluster", "pytest_plugin"],
}
ORDER = [module for layer in LAYERS.values() for module in layer]
PACKAGE = pathlib.Path(dask_anyio.__file__).parent


def _imports(module: str) -> list[tuple[str, list[str]]]:
    return _imports_in((PACKAGE / f"{module}.py").read_text())


def _imports_in(source: str) -> list[tuple[str, list[str]]]:
    """(imported module, names taken from it) for every import of the package in
    ``source``, wherever it is (under TYPE_CHECKING, in a function)."""
    tree = ast.parse(source)
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            names = [alias.name for alias in node.names]
            if node.level == 1 and node.module is None:  # from . import _x
                found.extend((name, []) for name in names)
            elif node.level == 1 and node.module is not None:
                found.append((node.module, names))
            elif node.module == "dask_anyio":
                found.append(("__init__", names))
            elif node.module and node.module.startswith("dask_anyio."):
                found.append((node.module.split(".", 1)[1], names))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "dask_anyio" or alias.name.startswith("dask_anyio."):
                    found.append((alias.name.partition(".")[2] or "__init__", []))
    return found


def test_every_module_has_its_layer() -> None:
    modules = sorted(path.stem for path in PACKAGE.glob("*.py"))
    assert sorted(ORDER) == modules


def test_every_module_says_what_it_offers() -> None:
    for module in ORDER:
        if module != "__main__":
            assert hasattr(importlib.import_module(f"dask_anyio.{module}"), "__all__"), module


def test_imports_point_down_the_layers() -> None:
    upward = [
        f"{module} imports {imported}"
        for module in ORDER
        for imported, _ in _imports(module)
        if ORDER.index(imported) >= ORDER.index(module)
    ]
    assert upward == []


def test_modules_use_only_public_names_of_the_modules_below() -> None:
    private = []
    for module in ORDER:
        for imported, names in _imports(module):
            public = (
                dask_anyio.__all__
                if imported == "__init__"
                else importlib.import_module(f"dask_anyio.{imported}").__all__
            )
            private.extend(f"{module} uses {imported}.{n}" for n in names if n not in public)
    assert private == []


def test_the_check_sees_every_spelling_of_an_import() -> None:
    """Also where only a type checker looks, and inside functions."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from ._executor import DaskExecutor\n"
        "def f():\n    from . import _scope\n    import dask_anyio._tasks\n"
        "    from dask_anyio import TaskHandle\n"
    )
    assert _imports_in(source) == [
        ("_executor", ["DaskExecutor"]),
        ("_scope", []),
        ("_tasks", []),
        ("__init__", ["TaskHandle"]),
    ]
