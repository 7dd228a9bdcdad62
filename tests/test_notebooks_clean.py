"""The notebooks as committed: valid, stripped of outputs and execution counts, and quick by
default through a first code cell tagged ``parameters`` that reads ``ATOMA_LAB_QUICK``
(ARCHITECTURE.md, "Notebooks"); one that builds a network closes it in its last code cell.
Executing them is nbmake's job (``pytest --nbmake notebooks``).

The checker is tried on synthetic notebooks first, so that a checker that finds nothing cannot pass.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED = {"00_quickstart.ipynb", "01_handshake.ipynb", "02_aead_latency.ipynb",
            "03_embedding_latency.ipynb", "04_end_to_end_correctness.ipynb", "05_attacks.ipynb",
            "07_attestation.ipynb"}
READS_QUICK = re.compile(r"""QUICK\s*=\s*os\.environ\.get\(\s*["']ATOMA_LAB_QUICK["']""")


def problems(nb: Any) -> list[str]:
    """Everything wrong with a notebook as committed (empty when it is clean)."""
    found = []
    try:
        nbformat.validate(nb)
    except nbformat.ValidationError as exc:
        found.append(f"invalid notebook: {exc.message}")
    code = [c for c in nb.cells if c.cell_type == "code"]
    for i, cell in enumerate(code):
        if cell.get("outputs"):
            found.append(f"code cell {i} has outputs")
        if cell.get("execution_count") is not None:
            found.append(f"code cell {i} has an execution count")
    if not code:
        return [*found, "no code cells"]
    first = code[0]
    if "parameters" not in first.metadata.get("tags", []):
        found.append("the first code cell is not tagged 'parameters'")
    if not READS_QUICK.search(first.source):
        found.append("the first code cell does not read QUICK from ATOMA_LAB_QUICK")
    if any("build_network(" in c.source for c in code) and "close()" not in code[-1].source:
        found.append("builds a network but its last code cell closes nothing (net.close())")
    return found


def _clean() -> Any:
    nb = new_notebook(cells=[
        new_markdown_cell("# title"),
        new_code_cell('import os\nQUICK = os.environ.get("ATOMA_LAB_QUICK", "1") == "1"'),
        new_code_cell("net = build_network()"),
        new_code_cell("net.close()"),
    ])
    nb.cells[1].metadata["tags"] = ["parameters"]
    return nb


def test_checker_accepts_a_clean_notebook() -> None:
    assert problems(_clean()) == []


@pytest.mark.parametrize("spoil,expected", [
    (lambda nb: nb.cells[2].outputs.append(new_output("stream", name="stdout", text="x")),
     "code cell 1 has outputs"),
    (lambda nb: setattr(nb.cells[2], "execution_count", 3), "code cell 1 has an execution count"),
    (lambda nb: nb.cells[1].metadata.pop("tags"), "not tagged 'parameters'"),
    (lambda nb: setattr(nb.cells[1], "source", "QUICK = True"), "does not read QUICK"),
    (lambda nb: nb.cells.pop(3), "closes nothing"),
    (lambda nb: nb.cells.insert(1, new_code_cell("import os")), "not tagged 'parameters'"),
])
def test_checker_finds_each_problem(spoil: Any, expected: str) -> None:
    nb = _clean()
    spoil(nb)
    found = problems(nb)
    assert any(expected in p for p in found), found


def test_the_numbered_notebooks_exist() -> None:
    assert {p.name for p in NOTEBOOKS} >= EXPECTED
    assert all(re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", p.name) for p in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_clean(path: Path) -> None:
    assert problems(nbformat.read(path, as_version=4)) == []
