"""The README's promises that code can check."""

from __future__ import annotations

from pathlib import Path

import atoma_lab.services.proxy  # noqa: F401
from atoma_lab.errors import error_table

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_error_table_lists_every_error_code() -> None:
    for status, code, name, _ in error_table():
        assert f"| {status} | `{code}` | `{name}` |" in README, f"README lacks {status} {code}"


def test_readme_shows_the_two_commands() -> None:
    assert "make demo" in README and "make test" in README


def test_environment_yml_installs_what_the_makefile_installs() -> None:
    """The conda file adds no dependency list of its own: Python 3.11, then this package with
    every extra under the same constraints as the Makefile."""
    root = Path(__file__).resolve().parent.parent
    env = (root / "environment.yml").read_text()
    makefile = (root / "Makefile").read_text()
    assert "python=3.11" in env
    assert "- -e .[all]" in env and "- -c constraints.txt" in env
    assert "-c constraints.txt -e '.[all]'" in makefile
