"""Where the side benchmarks (offload, plugin) put what they measured: the machine's load
around the run, and ``results.json`` and ``results.md`` in the output folder."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["load_around", "save"]


def load_around(before: tuple[float, float, float]) -> dict[str, list[float]]:
    """The load averages taken ``before`` the run and now, rounded, for results.json."""
    return {
        "load_before": [round(x, 2) for x in before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
    }


def save(output: Path, data: dict[str, Any], text: str) -> None:
    """Write ``data`` as results.json and ``text`` as results.md in ``output``; print ``text``."""
    output.mkdir(parents=True, exist_ok=True)
    (output / "results.json").write_text(json.dumps(data, indent=1))
    (output / "results.md").write_text(text)
    print(text)
