"""atoma-lab: a research toolkit for confidential embeddings, wire-compatible with Atoma.

Importing the package is cheap (no torch): the names below load their modules on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "AsyncAtomaLabClient": "atoma_lab.client",
    "AtomaLabClient": "atoma_lab.client",
    "AtomaLabError": "atoma_lab.errors",
    "Network": "atoma_lab.lab.network",
    "Trace": "atoma_lab.services.trace",
    "build_network": "atoma_lab.lab.network",
}

__all__ = sorted([*_LAZY, "__version__"])


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'atoma_lab' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
