"""The golden envelope files of ``tests/vectors``: loading one, and checking that it is what its
generator script writes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

VECTORS_DIR = Path(__file__).resolve().parents[1] / "vectors"


def load_golden(name: str) -> dict[str, Any]:
    """``tests/vectors/NAME.json``, parsed."""
    loaded: dict[str, Any] = json.loads((VECTORS_DIR / f"{name}.json").read_text(encoding="utf-8"))
    return loaded


def assert_generator_writes(name: str) -> None:
    """``tests/vectors/NAME.json`` is what ``make_NAME.py`` renders (neither was edited alone),
    and the generator's code does not use atoma_lab (it stays an independent reference)."""
    path = VECTORS_DIR / f"make_{name}.py"
    spec = importlib.util.spec_from_file_location(f"make_{name}", path)
    assert spec is not None and spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    assert "atoma_lab" not in path.read_text(encoding="utf-8").split('"""', 2)[2]
    assert generator.render() == (VECTORS_DIR / f"{name}.json").read_text(encoding="utf-8")
