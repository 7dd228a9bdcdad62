"""Fixtures for the service tests (``make_net`` and ``mode`` come from tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from atoma_lab.lab.network import Network


@pytest.fixture
def net(make_net: Callable[..., Network], mode: str) -> Network:
    """Two nodes, in-process and over loopback HTTP."""
    return make_net(nodes=2, mode=mode)
