"""Fixtures for the service tests: networks of a proxy and nodes serving the fake embedder."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fakes import network

from atoma_lab.lab.network import Network

MODES = ["inprocess", pytest.param("http", marks=pytest.mark.integration)]


@pytest.fixture
def make_net() -> Iterator[Callable[..., Network]]:
    """Build networks (``fakes.network`` options); every one is closed after the test."""
    nets: list[Network] = []

    def make(**options: Any) -> Network:
        net = network(**options)
        nets.append(net)
        return net

    yield make
    for net in nets:
        net.close()


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def net(make_net: Callable[..., Network], mode: str) -> Network:
    """Two nodes, in-process and over loopback HTTP."""
    return make_net(nodes=2, mode=mode)
