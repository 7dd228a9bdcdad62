"""The one loader of the known-answer vector files under ``tests/vectors/``.

Each file is ``{"source": ..., "hex_fields": [...], "vectors": [{...}, ...]}``. Every vector field
named in ``hex_fields`` is lower-case hex in the file and comes back as ``bytes``; the other fields
(``name``, ``kind``, ``result``, ``length``, ...) come back as they are. Pattern after pyca's
``load_vectors_from_file``: data in files, one loader, tests parametrised over the result.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

VECTORS_DIR = Path(__file__).resolve().parent.parent / "vectors"


def load_vectors(name: str, *, kind: str | None = None) -> list[dict[str, Any]]:
    """The vectors of ``tests/vectors/NAME.json``, hex fields decoded; only ``kind`` if given."""
    doc = json.loads((VECTORS_DIR / f"{name}.json").read_text(encoding="utf-8"))
    if not doc.get("source"):
        raise ValueError(f"{name}.json names no source")
    hex_fields = set(doc["hex_fields"])
    out = []
    for raw in doc["vectors"]:
        if kind is not None and raw.get("kind") != kind:
            continue
        vector = {
            key: bytes.fromhex(value) if key in hex_fields else value for key, value in raw.items()
        }
        out.append(vector)
    if not out:
        raise ValueError(f"{name}.json has no vectors of kind {kind!r}")
    return out


def vector_id(vector: dict[str, Any]) -> str:
    """A pytest id for a vector."""
    return str(vector["name"])
