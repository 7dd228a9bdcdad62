"""Shared fixtures: the local Ray instance of the tests marked ``ray``, and networks of a proxy and
nodes serving the fake embedder, in-process and over loopback HTTP."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fakes import networks
from ray_support import local_ray

from atoma_lab.lab.network import Network

MODES = ["inprocess", pytest.param("http", marks=pytest.mark.integration)]


@pytest.fixture(scope="session")
def ray_local() -> Iterator[Any]:
    """A local Ray instance on loopback for the whole session (skips where none can run)."""
    with local_ray() as ray:
        yield ray


@pytest.fixture
def make_net() -> Iterator[Callable[..., Network]]:
    """Build networks (``fakes.network`` options); every one is closed after the test."""
    with networks() as make:
        yield make


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)
