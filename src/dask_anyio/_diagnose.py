"""Telling why the embedded LocalCluster did not start, when the reason is a newcomer's.

The embedded cluster's workers are processes that ``multiprocessing`` starts with *spawn*
(Dask's ``distributed.worker.multiprocessing-method``): each re-runs the script's main
module before it can run a worker. A script that starts the executor at its top level,
without ``if __name__ == "__main__":``, starts it again in every worker process there;
multiprocessing refuses to spawn from a process that is still importing, the workers die,
and Dask says ``RuntimeError: Nanny failed to start.``, the reason far above.
"""

from __future__ import annotations

import ast
import multiprocessing
import sys
from pathlib import Path

import dask.config

__all__ = ["missing_main_guard", "refuse_while_importing_main_for_a_child", "unguarded_main_script"]


def missing_main_guard(script: str) -> str:
    """The reason and the remedy, in one line: the last line the user reads."""
    return (
        f"{script} starts a DaskExecutor with an embedded LocalCluster when it is imported, "
        "and the cluster's worker processes import it (they start the executor again): put "
        'the code that runs the executor under `if __name__ == "__main__":`'
    )


def refuse_while_importing_main_for_a_child() -> None:
    """Raise :exc:`RuntimeError` if this process is a child that multiprocessing is
    starting, running its parent's main module: there, starting processes fails (and a
    cluster would start clusters)."""
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        # (multiprocessing runs the parent's script as __mp_main__ in the child)
        script = getattr(sys.modules.get("__mp_main__"), "__file__", None)
        raise RuntimeError(missing_main_guard(str(script or "the main module")))


def unguarded_main_script() -> str | None:
    """The main module's file, if spawned worker processes re-run it and it has no
    ``if __name__ == "__main__":`` block at its top level; else ``None``."""
    method = dask.config.get("distributed.worker.multiprocessing-method", "spawn")
    if method not in ("spawn", "forkserver"):  # fork does not re-run the main module
        return None
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    name = getattr(spec, "name", None)
    if name is not None and (name == "__main__" or name.endswith(".__main__")):
        return None  # multiprocessing does not re-run a package's __main__
    path = getattr(spec, "origin", None) if name is not None else getattr(main, "__file__", None)
    if not path:
        return None  # python -c, an interactive session: nothing is re-run
    try:
        tree = ast.parse(Path(path).read_bytes())
    except (OSError, SyntaxError, ValueError):
        return None
    if any(_is_main_guard(node) for node in tree.body):
        return None
    return str(path)


def _is_main_guard(node: ast.stmt) -> bool:
    """``if __name__ == "__main__":`` (either way round)."""
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
        return False
    test = node.test
    if len(test.ops) != 1 or not isinstance(test.ops[0], ast.Eq):
        return False
    sides = [test.left, *test.comparators]
    return any(isinstance(s, ast.Name) and s.id == "__name__" for s in sides) and any(
        isinstance(s, ast.Constant) and s.value == "__main__" for s in sides
    )
