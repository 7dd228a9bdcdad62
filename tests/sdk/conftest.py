"""Fixtures for the interoperability tests with the official atoma-sdk (in its own venv)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .sdk_runner import SdkClient, ensure_sdk_python


@pytest.fixture(scope="session")
def sdk_python() -> Path:
    """The interpreter of the SDK's venv; created from tests/sdk_requirements.txt if missing."""
    return ensure_sdk_python()


@pytest.fixture(scope="module")
def sdk(sdk_python: Path) -> Iterator[SdkClient]:
    """One SDK process for the module (importing the SDK takes about half a second)."""
    with SdkClient(sdk_python) as client:
        yield client
