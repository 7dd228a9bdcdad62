"""Set before any benchmark module imports: models load offline (nothing can be downloaded here;
the shipped model is on disk), tokenizers keep to one thread (the engine's threads are what is
measured), and the tests' helpers (``tests/``: ``ray_support``, ``cluster``, ``fakes``) import.
Not ``peers/st_worker.py``: it runs in a venv of its own and sets its own."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TESTS_DIR = str(Path(__file__).resolve().parents[1] / "tests")
if TESTS_DIR not in sys.path:
    sys.path.append(TESTS_DIR)  # after benchmarks/: tests/test_corpus.py must not shadow ours
