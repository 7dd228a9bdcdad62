"""Packaging a user can trust: one version, the declared licence shipped, types marked, and
dependency minimums that match what the code and tests use."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

import cryptography
from packaging.requirements import Requirement
from packaging.version import Version

import atoma_lab
from atoma_lab.services.openapi import openapi_document, package_version

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]


def _requirement(name: str) -> Requirement:
    reqs = [Requirement(r) for r in PROJECT["dependencies"]]
    for group in PROJECT["optional-dependencies"].values():
        reqs += [Requirement(r) for r in group if not r.startswith("atoma-lab[")]
    return next(r for r in reqs if r.name == name)


def test_the_version_lives_in_one_place() -> None:
    assert "version" not in PROJECT and PROJECT["dynamic"] == ["version"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "atoma_lab.__version__"}
    assert metadata.version("atoma-lab") == atoma_lab.__version__ == package_version()
    assert openapi_document()["info"]["version"] == atoma_lab.__version__


def test_the_declared_licence_is_shipped() -> None:
    assert PROJECT["license"] == "Apache-2.0" and PROJECT["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    build = [Requirement(r) for r in PYPROJECT["build-system"]["requires"]]
    setuptools = next(r for r in build if r.name == "setuptools")
    assert all(Version("77") >= Version(s.version) for s in setuptools.specifier)  # PEP 639
    assert metadata.metadata("atoma-lab")["License-Expression"] == "Apache-2.0"


def test_types_are_marked_and_shipped() -> None:
    assert (Path(atoma_lab.__file__).parent / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["atoma_lab"]
    assert "Typing :: Typed" in PROJECT["classifiers"]


def test_the_attention_kernel_source_is_shipped() -> None:
    """The C source the engine compiles on first use is package data (a wheel without it would
    fall back to SDPA on every AMX machine)."""
    from atoma_lab.inference.native_attention import SOURCE

    assert SOURCE.is_file()
    patterns = PYPROJECT["tool"]["setuptools"]["package-data"]["atoma_lab"]
    relative = SOURCE.relative_to(Path(atoma_lab.__file__).parent).as_posix()
    assert any(Path(relative).match(p) for p in patterns)


def test_project_urls_and_classifiers_are_declared() -> None:
    assert PROJECT["urls"] and all(u.startswith("https://") for u in PROJECT["urls"].values())
    assert "Programming Language :: Python :: 3.11" in PROJECT["classifiers"]
    assert PROJECT["requires-python"] == ">=3.11"


def test_cryptography_minimum_has_the_hpke_the_tests_compare_against() -> None:
    minimum = next(iter(_requirement("cryptography").specifier)).version
    assert Version(minimum) >= Version("47")  # cryptography's hazmat HPKE module came in 47.0
    from cryptography.hazmat.primitives import hpke  # noqa: F401  (tests/crypto/test_hpke.py)

    assert Version(cryptography.__version__) in _requirement("cryptography").specifier
