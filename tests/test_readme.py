"""The README's promises that code can check."""

from __future__ import annotations

from pathlib import Path

import atoma_lab.services.http
import atoma_lab.services.proxy  # noqa: F401
from atoma_lab.errors import error_table

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_error_table_lists_every_error_code() -> None:
    for status, code, name, _ in error_table():
        assert f"| {status} | `{code}` | `{name}` |" in README, f"README lacks {status} {code}"


def test_readme_shows_the_two_commands() -> None:
    assert "make demo" in README and "make test" in README
